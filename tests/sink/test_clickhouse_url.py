"""CDC_CLICKHOUSE_URL parsing and redaction: no server needed, and no password ever shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.sink.base import SinkConfigError
from cdc.sink.clickhouse.connection import is_loopback
from cdc.sink.clickhouse.url import PASSWORD_ENV, PASSWORD_FILE_ENV, parse_clickhouse_url, redact_url, scrub

SECRET = "Pa55-w0rd!"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("clickhouse://bob:Pa55-w0rd!@db:9000/x", "clickhouse://bob:***@db:9000/x"),
        ("clickhouse://bob:Pa55%40w0rd@db/x", "clickhouse://bob:***@db/x"),
        ("clickhouse://bob:p@ss@db/x", "clickhouse://bob:***@db/x"),
        ("clickhouses://bob:@db/x?secure=1", "clickhouses://bob:***@db/x?secure=1"),
        ("clickhouse://bob@db/x", "clickhouse://bob@db/x"),
        ("clickhouse://db:9000", "clickhouse://db:9000"),
        ("clickhouses://u:pw@db/x?keyfile=k.pem&keypass=Pa55-w0rd!", "clickhouses://u:***@db/x?keyfile=k.pem&keypass=***"),
        ("clickhouse://db/x?password=Pa55-w0rd!", "clickhouse://db/x?password=***"),
    ],
)
def test_redact_url_replaces_every_password_with_stars(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_shows_nothing_of_an_unparsable_url() -> None:
    assert redact_url("clickhouse://u:Pa55-w0rd!@[::1/x") == "***"


def test_url_defaults_to_default_user_database_and_port() -> None:
    target = parse_clickhouse_url("clickhouse://db.example", environ={})
    assert (target.host, target.port, target.database, target.user, target.password) == (
        "db.example", 9000, "default", "default", ""
    )
    assert target.secure is False
    assert target.compression == "auto"


def test_clickhouses_scheme_turns_on_tls_and_its_port() -> None:
    target = parse_clickhouse_url("clickhouses://u@db/analytics", environ={})
    assert target.secure is True
    assert target.port == 9440
    assert target.database == "analytics"


def test_tls_and_timeout_parameters_reach_the_driver_typed() -> None:
    target = parse_clickhouse_url(
        "clickhouse://u@db:9440/x?secure=1&verify=0&ca_certs=/etc/ca.pem&server_hostname=ch"
        "&connect_timeout=2.5&compression=none",
        environ={},
    )
    assert target.secure is True
    assert target.compression == "none"
    assert dict(target.options) == {
        "verify": False, "ca_certs": "/etc/ca.pem", "server_hostname": "ch", "connect_timeout": 2.5,
    }


def test_ipv6_address_is_bracketed_in_messages() -> None:
    target = parse_clickhouse_url("clickhouse://u@[::1]:9001/x", environ={})
    assert target.host == "::1"
    assert target.address == "[::1]:9001"


def test_replicas_after_the_first_host_become_the_drivers_alt_hosts_in_order() -> None:
    target = parse_clickhouse_url(f"clickhouse://u:{SECRET}@h1:9001,h2,[::1]:9003/x", environ={})
    assert (target.host, target.port, target.user, target.password, target.database) == ("h1", 9001, "u", SECRET, "x")
    assert target.alt_hosts == (("h2", 9000), ("::1", 9003))
    assert target.alt_hosts_option == "h2:9000,[::1]:9003"
    assert target.address == "h1:9001,h2:9000,[::1]:9003"
    assert parse_clickhouse_url("clickhouses://u@h1,h2/x", environ={}).alt_hosts == (("h2", 9440),)
    assert parse_clickhouse_url("clickhouse://u@h1/x", environ={}).alt_hosts_option is None


@pytest.mark.parametrize("hosts", ["h1,,h2", "h1,h2:port", "h1,", "h1,h2/y"])
def test_a_malformed_replica_list_is_refused_without_the_password(hosts: str) -> None:
    with pytest.raises(SinkConfigError) as caught:
        parse_clickhouse_url(f"clickhouse://u:{SECRET}@{hosts}/x", environ={})
    assert SECRET not in str(caught.value) and "CDC_CLICKHOUSE_URL" in str(caught.value)


def test_percent_encoded_user_and_password_are_decoded() -> None:
    target = parse_clickhouse_url("clickhouse://b%40b:p%40ss%2Fw@db/x", environ={})
    assert (target.user, target.password) == ("b@b", "p@ss/w")


def test_unknown_parameter_is_refused_without_showing_the_password() -> None:
    with pytest.raises(SinkConfigError) as caught:
        parse_clickhouse_url(f"clickhouse://u:{SECRET}@db/x?verfy=0", environ={})
    assert "verfy" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        f"postgres://u:{SECRET}@db/x",
        f"clickhouse://u:{SECRET}@db:notaport/x",
        f"clickhouse://u:{SECRET}@db/x?secure=maybe",
        f"clickhouse://u:{SECRET}@db/x?connect_timeout=-1",
        f"clickhouse://u:{SECRET}@db/x?compression=snappy",
        f"clickhouse://u@db/x?password={SECRET}",
    ],
)
def test_bad_urls_are_refused_without_showing_the_password(url: str) -> None:
    with pytest.raises(SinkConfigError) as caught:
        parse_clickhouse_url(url, environ={})
    assert SECRET not in str(caught.value)
    assert "CDC_CLICKHOUSE_URL" in str(caught.value)


def test_target_repr_hides_password_and_keypass() -> None:
    target = parse_clickhouse_url(f"clickhouses://u:{SECRET}@db/x?keypass={SECRET}x", environ={})
    assert SECRET not in repr(target)


def test_password_argument_beats_url_and_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    env = {PASSWORD_ENV: "from-env", PASSWORD_FILE_ENV: str(secret_file)}
    assert parse_clickhouse_url("clickhouse://u:from-url@db/x", password="explicit", environ=env).password == "explicit"
    assert parse_clickhouse_url("clickhouse://u:from-url@db/x", environ=env).password == "from-url"
    assert parse_clickhouse_url("clickhouse://u@db/x", environ=env).password == "from-env"
    del env[PASSWORD_ENV]
    assert parse_clickhouse_url("clickhouse://u@db/x", environ=env).password == "from-file"


def test_explicit_empty_password_beats_the_environment() -> None:
    target = parse_clickhouse_url("clickhouse://u:x@db/x", password="", environ={PASSWORD_ENV: "env"})
    assert target.password == ""


def test_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    env = {PASSWORD_FILE_ENV: str(tmp_path / "missing")}
    with pytest.raises(SinkConfigError, match=PASSWORD_FILE_ENV):
        parse_clickhouse_url("clickhouse://u@db/x", environ=env)


def test_scrub_removes_plain_and_percent_encoded_password() -> None:
    target = parse_clickhouse_url("clickhouse://u:p%40ss%20word@db/x", environ={})
    text = "login p@ss word failed; url had p%40ss%20word"
    assert scrub(text, *target.secrets) == "login *** failed; url had ***"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("LOCALHOST.", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
     ("[::1]", True), ("10.0.0.5", False), ("ch.internal", False), ("localhost.example.com", False)],
)
def test_auto_compression_is_off_only_for_a_server_on_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
