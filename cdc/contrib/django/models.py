"""``OutboxEvent``: the outbox, read through the ORM (unmanaged: the migration owns the table).

Outbox rows are written with emit() and never changed: the publication sends
inserts only, so an UPDATE or DELETE would silently not reach ClickHouse, and
retention is cdc's job (``cdc outbox prune`` drops whole partitions). The model
and its QuerySet refuse save(), update() and delete() rather than let that
happen by accident.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models

from . import conf

_APPEND_ONLY = (
    "the outbox is append-only: write events with cdc.contrib.django.emit() inside transaction.atomic(), "
    "and leave retention to `cdc outbox prune`"
)


class OutboxIsAppendOnly(RuntimeError):
    pass


class OutboxQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        raise OutboxIsAppendOnly(_APPEND_ONLY)

    def delete(self) -> NoReturn:
        raise OutboxIsAppendOnly(_APPEND_ONLY)

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise OutboxIsAppendOnly(_APPEND_ONLY)

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise OutboxIsAppendOnly(_APPEND_ONLY)


class OutboxEvent(models.Model):
    id = models.BigAutoField(primary_key=True)  # the table's key is (id, created_at); id alone is unique
    unique_id = models.TextField()
    event_type = models.TextField()
    occurred_at = models.DateTimeField()
    environment = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict)
    metadata_version = models.IntegerField(default=1)
    created_at = models.DateTimeField()

    objects = OutboxQuerySet.as_manager()

    class Meta:
        managed = False
        db_table = conf.qualified_table()
        verbose_name = "outbox event"

    def save(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise OutboxIsAppendOnly(_APPEND_ONLY)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise OutboxIsAppendOnly(_APPEND_ONLY)

    def __str__(self) -> str:
        return f"{self.event_type} {self.unique_id}"
