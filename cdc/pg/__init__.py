"""Everything cdc asks PostgreSQL: one way to connect (``connect``), the preflight checks, slots, publications,
the outbox's partitions, migrations, the exported snapshot, and the replication connection itself.

Refusals are ``cdc.errors`` types (PreflightError, ConnectError, AdminError): one line each, saying what to do.
"""
