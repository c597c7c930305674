"""Helpers for the application side of the outbox: write events in your own transactions.

``cdc.emit`` / ``cdc.emit_many`` (psycopg 3, in ``cdc.app.emit``) and
``cdc.contrib.django`` (Django). Nothing here is imported by ``import cdc``.
"""
