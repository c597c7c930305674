"""Create the outbox the way ``cdc migrate`` does: the packaged migrations/*.sql, through the same ledger.

RunPython rather than RunSQL because the SQL must be skipped when ``cdc migrate``
already applied it (its ledger says so), and recorded in that ledger when
applied here, so that ``cdc migrate`` skips it afterwards. The SQL itself is
read from the installed package, never copied. Reversing drops the outbox
with whatever rows it still holds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations, models

from ....pg import outbox_ddl
from .. import conf


def create_outbox(apps: Any, schema_editor: Any) -> None:
    conf.require_postgresql(schema_editor.connection)
    with schema_editor.connection.cursor() as cursor:
        outbox_ddl.apply_pending(cursor, conf.outbox_schema(), conf.outbox_table())


def drop_outbox(apps: Any, schema_editor: Any) -> None:
    conf.require_postgresql(schema_editor.connection)
    with schema_editor.connection.cursor() as cursor:
        outbox_ddl.revert(cursor, conf.outbox_schema(), conf.outbox_table())


class Migration(migrations.Migration):
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []
    operations: ClassVar[list[Any]] = [
        migrations.RunPython(create_outbox, drop_outbox),
        # State only (managed=False): the table above is the real one.
        migrations.CreateModel(
            name="OutboxEvent",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("unique_id", models.TextField()),
                ("event_type", models.TextField()),
                ("occurred_at", models.DateTimeField()),
                ("environment", models.TextField(blank=True, default="")),
                ("payload", models.JSONField(default=dict)),
                ("metadata_version", models.IntegerField(default=1)),
                ("created_at", models.DateTimeField()),
            ],
            options={"db_table": conf.qualified_table(), "verbose_name": "outbox event", "managed": False},
        ),
    ]
