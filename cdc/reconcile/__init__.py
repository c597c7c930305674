"""Reconciling the outbox with ClickHouse: ``cdc verify``, its repair, and the ledger check.

- hashing.py: the unique_id hash and buckets both servers compute alike;
- compare.py: bucket sums and the merge of sorted hashes (no I/O);
- outbox_side.py / events_side.py: what each server computes for its half;
- pending.py: what the slot still holds (rows in flight);
- verify.py: the comparison, step by step; report.py: its outcome;
- ledger.py: whether the progress ledger claims rows the events table lost.
"""
