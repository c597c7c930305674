from __future__ import annotations

import pytest

from cdc import names
from cdc.lsn import LsnError, format_lsn, parse_lsn
from cdc.redact import redact_dsn, redact_url, scrub


def test_lsn_round_trips_through_text() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("0/16B3748")) == "0/16B3748"


@pytest.mark.parametrize("text", ["", "16B374D848", "1/2/3", "G/0", "0/123456789"])
def test_malformed_lsn_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(LsnError, match="for example"):
        parse_lsn(text)


@pytest.mark.parametrize("bad", ['x"; DROP TABLE outbox; --', "Upper", "", "a" * 64, "sp ace"])
def test_slot_names_that_could_inject_or_are_invalid_are_refused(bad: str) -> None:
    with pytest.raises(names.NameError_):
        names.slot_name(bad)


@pytest.mark.parametrize("bad", ['outbox"; DROP TABLE x; --', "1abc", "a-b", "a" * 64])
def test_identifiers_that_could_inject_are_refused(bad: str) -> None:
    with pytest.raises(names.NameError_):
        names.identifier(bad, "table")


def test_passwords_are_masked_in_every_dsn_and_url_form() -> None:
    assert "s3cret" not in redact_dsn("postgresql://app:s3cret@db:5432/app?sslmode=require")
    assert "s3cret" not in redact_dsn("host=db user=app password=s3cret dbname=app")
    assert "s3cret" not in redact_url("clickhouse://app:s3cret@ch:9000/db?secure=1")
    assert "s3cret" not in redact_url("clickhouse://ch:9000/db?password=s3cret")
    assert redact_dsn("postgresql://app@db/app") == "postgresql://app@db/app"
    assert scrub("login failed for s3cret", "s3cret") == "login failed for ***"
