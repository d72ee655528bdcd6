"""Behind a TLS-terminating proxy, as docs/reverse-proxy.md sets it up."""

import http.client
from urllib.parse import urlsplit

from tests.conftest import base_sections, write_config
from tests.servers import CREATE_ALPHA, run_cli
from tests.smtp_sink import free_port

PUBLIC = "https://help.example.test"
HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options")


def test_https_base_url_behind_a_trusted_proxy_gives_secure_cookies_and_hsts(tmp_path, servers):
    port = free_port()
    sections = base_sections(tmp_path, server={"base_url": PUBLIC, "trusted_proxy": "127.0.0.1"})
    cfg = write_config(tmp_path / "config.toml", sections)
    run_cli(cfg, *CREATE_ALPHA)
    link = run_cli(cfg, "accounts", "login-link", "alpha").strip()
    assert link.startswith(PUBLIC + "/auth/")
    servers(tmp_path, "--config", str(cfg), port=port)
    # what the proxy adds to each request it passes on
    proxy = {
        "Host": "help.example.test",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.9",
    }

    def call(method, path, **extra):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request(
            method, path, body="" if method == "POST" else None, headers=proxy | extra
        )
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    page = call("GET", "/login")
    assert page.status == 200
    assert page.getheader("Strict-Transport-Security") == "max-age=31536000"
    assert all(page.getheader(name) for name in HEADERS)

    signed_in = call(
        "POST",
        urlsplit(link).path,
        **{"Origin": PUBLIC, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert signed_in.status == 303 and signed_in.getheader("Location") == "/dashboard"
    cookie = signed_in.getheader("Set-Cookie")
    assert cookie.startswith("__Host-oop_session=")
    assert "; Secure" in cookie and "; HttpOnly" in cookie and "; SameSite=Lax" in cookie
    assert signed_in.getheader("Strict-Transport-Security") == "max-age=31536000"

    # a name that is not ours, even through the proxy, is refused
    assert call("GET", "/login", Host="help.example.test.evil.example").status == 400
