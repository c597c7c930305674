"""Django integration: the outbox as an app, and ``emit()`` for use inside ``transaction.atomic()``.

    INSTALLED_APPS = [..., "cdc.contrib.django"]     # then: manage.py migrate

    from django.db import transaction
    from cdc.contrib.django import emit

    with transaction.atomic():
        order = Order.objects.create(...)
        emit("order_placed", {"order_id": order.pk})

The migration creates the outbox exactly as ``cdc migrate`` does (same SQL,
same ledger), so either can run first. ``OutboxEvent`` (cdc.contrib.django.models)
reads the outbox through the ORM; it refuses to change or delete rows.
"""

from __future__ import annotations

from ...app.row import EmitError, Event, OutsideTransactionError
from .api import emit, emit_many

__all__ = ["EmitError", "Event", "OutsideTransactionError", "emit", "emit_many"]
