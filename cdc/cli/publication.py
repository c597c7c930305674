"""``cdc publication create | show | add-table | drop``: the publication ``cdc run`` reads the outbox through."""

from __future__ import annotations

import click

from ..admin import AdminError
from ..pg import publications as admin
from ..pg.connect import connect
from ..settings import Settings
from ._output import cell, confirm, emit_json, ident_arg, json_option, table, table_arg, yes_option
from .options import require_pg, shared_options


@click.group()
def publication() -> None:
    """The publication of the outbox (--publication)."""


def _name(settings: Settings, name: str | None) -> str:
    return ident_arg(name or settings.publication, "publication")


@publication.command()
@shared_options
@click.argument("name", required=False)
@json_option
def create(settings: Settings, name: str | None, as_json: bool) -> None:
    """Create publication NAME (default: --publication) for the outbox: inserts only, as the outbox itself
    (publish_via_partition_root). Does nothing if it exists and covers the outbox."""
    pub = _name(settings, name)
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        created = admin.create_publication(conn, pub, settings.outbox_schema, settings.outbox_table)
    outbox = f"{settings.outbox_schema}.{settings.outbox_table}"
    if as_json:
        emit_json({"publication": pub, "created": created, "outbox": outbox})
    else:
        click.echo(f"publication {pub} {'created' if created else 'exists'}: publishes inserts into {outbox}")


@publication.command()
@shared_options
@click.argument("name", required=False)
@json_option
def show(settings: Settings, name: str | None, as_json: bool) -> None:
    """Show publication NAME (default: --publication): options, tables, row filters, whether it covers the outbox.
    Exits 1 when it does not cover the outbox."""
    pub_name = _name(settings, name)
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        pub = admin.get_publication(conn, pub_name, settings.outbox_schema, settings.outbox_table)
    if pub is None:
        raise AdminError(f"publication {pub_name} does not exist: create it with `cdc publication create`")
    if as_json:
        emit_json(pub.as_dict())
    else:
        click.echo(f"publication {pub.name} (owner {pub.owner})")
        click.echo(f"  publishes:                  {', '.join(pub.publish) or 'nothing'}")
        click.echo(f"  publish_via_partition_root: {cell(pub.via_partition_root) or 'n/a (before PostgreSQL 13)'}")
        click.echo(f"  all tables:                 {cell(pub.all_tables)}")
        click.echo(f"  covers {pub.outbox}: {pub.covers_outbox}")
        if pub.tables:
            click.echo("")
            table(["table", "row filter"], [[f"{t.schema}.{t.table}", t.row_filter] for t in pub.tables])
    if pub.covers_outbox != admin.COVERS:
        fix = admin.fix_for(pub.name, pub.covers_outbox, settings.outbox_schema, settings.outbox_table)
        raise AdminError(f"publication {pub.name} does not deliver {pub.outbox}'s rows as the outbox: {fix}")


@publication.command("add-table")
@shared_options
@click.argument("table_name", metavar="[SCHEMA.]TABLE", required=False)
@click.option("--to", "name", metavar="PUBLICATION", help="Publication to change (default: --publication).")
@json_option
def add_table(settings: Settings, table_name: str | None, name: str | None, as_json: bool) -> None:
    """Add [SCHEMA.]TABLE (default: the outbox) to the publication. cdc only delivers the outbox's rows."""
    pub = _name(settings, name)
    schema, table_ = (table_arg(table_name, settings.outbox_schema) if table_name
                      else (settings.outbox_schema, settings.outbox_table))
    outbox = (settings.outbox_schema, settings.outbox_table)
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        added = admin.add_table(conn, pub, schema, table_, outbox)
        state = admin.get_publication(conn, pub, *outbox)
    note = None
    if (schema, table_) != outbox:
        note = f"cdc run delivers only {outbox[0]}.{outbox[1]}; rows of {schema}.{table_} are ignored"
    elif state is not None and state.covers_outbox != admin.COVERS:
        note = (f"the outbox's rows still arrive under its partitions' names: "
                f"{admin.fix_for(pub, state.covers_outbox, *outbox)}")
    if as_json:
        emit_json({"publication": pub, "table": f"{schema}.{table_}", "added": added, "note": note})
        return
    click.echo(f"{schema}.{table_} {'added to' if added else 'is already in'} publication {pub}")
    if note:
        click.echo(f"note: {note}")


@publication.command()
@shared_options
@click.argument("name", required=False)
@yes_option
@json_option
def drop(settings: Settings, name: str | None, yes: bool, as_json: bool) -> None:
    """Drop publication NAME (default: --publication). A running `cdc run` fails without it."""
    pub = _name(settings, name)
    with connect(require_pg(settings), application_name="cdc-admin") as conn:
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,)).fetchone() is None:
            raise AdminError(f"publication {pub} does not exist: nothing to drop")
        confirm(f"Drop publication {pub}? `cdc run` cannot stream without it.", yes=yes,
                refusal=f"dropping publication {pub}")
        admin.drop_publication(conn, pub)
    if as_json:
        emit_json({"publication": pub, "dropped": True})
    else:
        click.echo(f"publication {pub} dropped")
