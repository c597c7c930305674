"""``cdc publication``: create for the outbox, show what it covers, add a table, drop."""

from __future__ import annotations

import json

import pytest
from admin_support import Cli, ok, refused
from servers import PgServer
from support import Target


@pytest.mark.single_slot("the one publication, cdc_outbox, by name; doctor checks each shard's (tests/workers)")
def test_create_show_add_drop(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute("DROP PUBLICATION cdc_outbox")
    refused(run("publication", "show"), "does not exist", "cdc publication create")
    assert json.loads(ok(run("publication", "create", "--json")).stdout)["created"] is True
    assert json.loads(ok(run("publication", "create", "--json")).stdout)["created"] is False
    shown = json.loads(ok(run("publication", "show", "--json")).stdout)
    assert shown["publish"] == ["insert"] and shown["publish_via_partition_root"] is True
    assert shown["covers_outbox"] == "yes"
    assert [(t["schema"], t["table"]) for t in shown["tables"]] == [("public", "outbox")]

    with migrated.pg() as conn:
        conn.execute('CREATE TABLE "Mixed_Case" (x int)')
    out = ok(run("publication", "add-table", "public.Mixed_Case")).stdout
    assert "added to publication cdc_outbox" in out and "ignored" in out
    assert "already in" in ok(run("publication", "add-table", "Mixed_Case")).stdout
    refused(run("publication", "add-table", "no_such_table"), "does not exist")
    tables = {t["table"] for t in json.loads(ok(run("publication", "show", "--json")).stdout)["tables"]}
    assert tables == {"outbox", "Mixed_Case"}

    refused(run("publication", "drop"), "not a terminal", "--yes")
    ok(run("publication", "drop", "--yes"))
    with migrated.pg() as conn:
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
    refused(run("publication", "drop", "--yes"), "does not exist")


@pytest.mark.single_slot("the one publication, cdc_outbox, by name; doctor checks each shard's (tests/workers)")
def test_show_fails_when_the_outbox_is_not_covered(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute("DROP PUBLICATION cdc_outbox")
        conn.execute("CREATE TABLE other (x int)")
        conn.execute("CREATE PUBLICATION cdc_outbox FOR TABLE other")
    refused(run("publication", "show"), "does not deliver public.outbox", "ALTER PUBLICATION cdc_outbox ADD TABLE")
    refused(run("publication", "create"), "already exists but", "ADD TABLE public.outbox")
    assert "publish_via_partition_root = true" in ok(run("publication", "add-table")).stdout
    refused(run("publication", "show"), "SET (publish_via_partition_root = true)")
    with migrated.pg() as conn:
        conn.execute("ALTER PUBLICATION cdc_outbox SET (publish_via_partition_root = true)")
    ok(run("publication", "show"))


@pytest.mark.single_slot("the one publication, cdc_outbox, by name; doctor checks each shard's (tests/workers)")
def test_partitions_published_under_their_own_names_are_flagged(migrated: Target, run: Cli) -> None:
    with migrated.pg() as conn:
        conn.execute("ALTER PUBLICATION cdc_outbox SET (publish_via_partition_root = false)")
    line = refused(run("publication", "show"), "publish_via_partition_root = true")
    assert "SET (publish_via_partition_root" in line
    assert json.loads(run("publication", "show", "--json").stdout)["covers_outbox"] == "partitions only"


@pytest.mark.single_slot("the one publication, cdc_outbox, by name; doctor checks each shard's (tests/workers)")
def test_row_filters_are_shown(migrated: Target, run: Cli, pg_server: PgServer) -> None:
    if pg_server.major < 15:
        return  # row filters arrived in PostgreSQL 15
    with migrated.pg() as conn:
        conn.execute("ALTER PUBLICATION cdc_outbox SET TABLE outbox WHERE (event_type <> 'noise')")
    shown = json.loads(ok(run("publication", "show", "--json")).stdout)
    assert "noise" in shown["tables"][0]["row_filter"]
    assert "noise" in ok(run("publication", "show")).stdout
