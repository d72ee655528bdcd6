"""A base_url left out follows where `serve` listens: the links every process prints or
emails open on the port actually served; a base_url that is set always wins."""

import pytest

from outofoffice import clock, config, db, heartbeat
from outofoffice.instance import Instance
from tests.conftest import base_sections, write_config


def load(tmp_path, **server):
    sections = base_sections(tmp_path)
    sections["server"] = server
    return config.load(write_config(tmp_path / "config.toml", sections))


@pytest.mark.no_database
def test_a_base_url_left_out_is_the_configured_host_and_port(tmp_path):
    assert load(tmp_path).base_url == config.default("server", "base_url")
    assert load(tmp_path, port=18501).base_url == "http://127.0.0.1:18501"
    assert load(tmp_path, host="localhost", port=9000).base_url == "http://localhost:9000"
    assert load(tmp_path, host="::1").base_url == "http://[::1]:8080"
    # every address: reached on this machine's loopback
    assert load(tmp_path, host="0.0.0.0").base_url == "http://127.0.0.1:8080"  # noqa: S104


@pytest.mark.no_database
def test_serve_options_move_a_default_base_url_but_never_a_set_one(tmp_path):
    served = load(tmp_path).serving("127.0.0.1", 18501)
    assert served.base_url == "http://127.0.0.1:18501" and served.server.port == 18501
    assert not served.follows_serve  # the serving process knows where it is
    pinned = load(tmp_path, base_url="https://help.example.com").serving("127.0.0.1", 18501)
    assert pinned.base_url == "https://help.example.com" and pinned.server.port == 18501
    with pytest.raises(ValueError, match="host name"):
        load(tmp_path).serving("no such host", 18501)


@pytest.mark.no_database
def test_a_host_no_url_can_name_is_refused_when_base_url_is_left_out(tmp_path):
    with pytest.raises(config.ConfigError, match=r"\[server\] host: .*or set base_url"):
        load(tmp_path, host="my box")


def test_commands_print_links_to_the_port_a_live_serve_listens_on(tmp_path):
    cli_side = Instance.open(load(tmp_path), migrate=True)
    assert cli_side.url("/x") == "http://127.0.0.1:8080/x"  # no serve runs
    with db.connection():
        heartbeat.beat("web+scheduler", clock.now(), url="http://127.0.0.1:18501")
    second = Instance.open(load(tmp_path))  # a command run meanwhile
    assert second.url("/auth/t") == "http://127.0.0.1:18501/auth/t"
    assert second.routing_url("alpha") == "http://127.0.0.1:18501/r/alpha"
    pinned = Instance.open(load(tmp_path, base_url="https://help.example.com"))
    assert pinned.url("/x") == "https://help.example.com/x"  # a set base_url wins
    clock.advance(heartbeat.ALIVE)  # that serve stopped beating: it is gone
    assert Instance.open(load(tmp_path)).url("/x") == "http://127.0.0.1:8080/x"


def test_a_serve_that_stops_takes_its_address_along(tmp_path):
    Instance.open(load(tmp_path), migrate=True)
    with db.connection():
        heartbeat.beat("web", clock.now(), url="http://127.0.0.1:18501")
        heartbeat.leave()
    assert Instance.open(load(tmp_path)).url("/x") == "http://127.0.0.1:8080/x"
    with db.connection():  # a worker beats without an address: not a place to link to
        heartbeat.beat("scheduler", clock.now())
    assert Instance.open(load(tmp_path)).url("/x") == "http://127.0.0.1:8080/x"


def test_a_killed_serves_address_is_forgotten_with_its_heartbeat(tmp_path):
    from datetime import timedelta

    from outofoffice.models import Setting

    Instance.open(load(tmp_path), migrate=True)
    with db.connection():
        heartbeat.beat("web", clock.now(), url="http://127.0.0.1:18501")  # then kill -9
        clock.advance(heartbeat.FORGET + timedelta(seconds=1))
        assert heartbeat.forget_dead() == 1
        names = [s.name for s in Setting.select()]
    assert not [n for n in names if n.startswith(heartbeat.URL_PREFIX)]
