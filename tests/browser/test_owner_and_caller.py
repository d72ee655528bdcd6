"""An owner sets up a vendor and a route, and a caller sends a request, in Chromium."""

import email
import email.policy
import time

from tests.conftest import served_config
from tests.servers import CREATE_ALPHA
from tests.servers import run_cli as cli
from tests.smtp_sink import free_port


def test_owner_adds_a_vendor_and_a_route_then_a_caller_is_routed(tmp_path, servers, browser):
    port = free_port()
    cfg = served_config(tmp_path, port)
    cli(cfg, "migrate")
    cli(cfg, *CREATE_ALPHA, "--timezone", "Europe/London")
    server = servers(tmp_path, "--config", str(cfg), port=port)
    login = cli(cfg, "accounts", "login-link", "alpha").strip()

    owner = browser.new_context().new_page()
    owner.goto(login)
    owner.get_by_role("button", name="Sign in").click()
    owner.wait_for_url("**/dashboard")
    assert "Add a vendor" in owner.content()

    owner.locator("nav.areas").get_by_role("link", name="Vendors").click()
    owner.fill("#f-name", "Vera Plumb")
    owner.fill("#f-email", "vera@plumb.example")
    owner.fill("#f-phone", "+44 20 7946 0101")
    owner.get_by_role("button", name="Add").click()
    assert "vera@plumb.example" in owner.content()

    owner.locator("nav.areas").get_by_role("link", name="Routes").click()
    owner.select_option("#f-category", label="Plumbing")
    owner.select_option("#f-vendor0", label="Vera Plumb")
    owner.get_by_role("button", name="Add route").click()
    assert "Plumbing" in owner.inner_text("section.route h2")

    caller = browser.new_context().new_page()
    caller.goto(f"{server.url}/r/alpha")
    caller.get_by_text("Plumbing", exact=True).click()
    assert "Shut the water valve" in caller.content()
    caller.fill("#f-name", "Tina Tenant")
    caller.fill("#f-phone", "+44 7700 900123")
    caller.fill("#f-description", "Water through the ceiling")
    caller.get_by_role("button", name="Send request").click()
    caller.wait_for_url("**/s/**")
    reference = caller.inner_text("h1").removeprefix("Request ").strip()
    assert reference.startswith("ALP-")

    mail_dir = tmp_path / "data" / "mail"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not list(mail_dir.glob("*.eml")):
        time.sleep(0.1)
    messages = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in mail_dir.glob("*.eml")
    ]
    vendor_mail = [m for m in messages if m["To"] == "vera@plumb.example"]
    assert vendor_mail and reference in vendor_mail[0]["Subject"]

    owner.goto(f"{server.url}/dashboard/dispatches")
    assert reference in owner.content()
