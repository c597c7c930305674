"""The planted defects: for each guarantee, one named defect and the tests that must then fail.

Each defect is a textual patch of one file of the package (``file``: the exact
``old`` text, which must occur exactly once, becomes ``new``), applied to a
temporary copy of ``cdc/``; the product itself has no switch for any of them.
After a refactor moves code, re-point the entry: usually only ``file`` changes;
``pytest tests/mutation`` fails loudly while a snippet is not found.

``must_fail`` runs under ``pytest -m mutation`` (the full check); ``quick``, a
subset of it, runs in every CI run. Test ids are those of a run restricted to
PostgreSQL 18 (CDC_TEST_PG_KINDS=pg18). Only tests that catch their defect every
time belong here: the kill loop, whose kill moments are random (and which
stores nothing when the machine is too slow to start cdc within 3 s), checks
the acknowledgement order too but is not listed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    name: str
    guarantee: str
    file: str
    old: str
    new: str
    must_fail: tuple[str, ...]
    quick: tuple[str, ...] = ()


_CRASH = "tests/pipeline/test_crash.py::test_restart_after_kill_delivers_exactly_the_committed_rows"
_OUTAGE = "tests/faults/test_fault_clickhouse.py::test_clickhouse_down_retries_holds_back_and_catches_up[pg18-8s]"
_BACKPRESSURE = (
    "tests/test_reader_backpressure.py::"
    "test_held_back_by_a_failing_insert_the_reader_keeps_the_server_informed_and_acknowledges_nothing"
)
# The collector's tests run once per implementation of the conversion (tests/implementations.py);
# the pure-Python run exists whether or not the accelerator is built.
_COLLECTOR = "tests/test_collector.py::"

CATALOGUE: tuple[Mutant, ...] = (
    Mutant(
        "acknowledge-on-receipt", "nothing is acknowledged before ClickHouse holds it",
        "cdc/core/tracker.py",
        "            if batch_seq <= self._stored_seq:",
        "            if True:  # MUTANT: a commit is safe as soon as it is received",
        must_fail=(
            "tests/test_tracker.py::test_commit_becomes_safe_only_when_its_batch_is_stored",
            _BACKPRESSURE,
            _OUTAGE,
            f"{_CRASH}[pg18-clickhouse-mid-batch]",
            f"{_CRASH}[pg18-clickhouse-before-insert]",
            f"{_CRASH}[pg18-clickhouse-mid-insert]",
            f"{_CRASH}[pg18-clickhouse-between-insert-and-ack]",
            f"{_CRASH}[pg18-clickhouse-inside-large-transaction]",
        ),
        quick=("tests/test_tracker.py::test_commit_becomes_safe_only_when_its_batch_is_stored", _BACKPRESSURE),
    ),
    Mutant(
        "skip-the-high-water-mark-check", "nothing is delivered twice by a crash",
        "cdc/core/collector.py",
        "        if hwm is not None and (commit_lsn, first_seq) <= hwm:",
        "        if False:  # MUTANT: rows at or below the high-water mark are delivered again",
        must_fail=(
            f"{_COLLECTOR}test_rows_at_or_below_the_high_water_mark_are_skipped_even_inside_a_run[python]",
            f"{_CRASH}[pg18-clickhouse-between-insert-and-ack]",
            f"{_CRASH}[pg18-clickhouse-large-transaction-partly-stored]",
        ),
        quick=(f"{_COLLECTOR}test_rows_at_or_below_the_high_water_mark_are_skipped_even_inside_a_run[python]",),
    ),
    Mutant(
        "drop-the-dedup-admit", "application retries become one event",
        "cdc/core/collector.py",
        "        return self._dedup.admit_many([row[0] for row in rows], time.monotonic())",
        "        return [True] * len(rows)  # MUTANT: every row is new",
        must_fail=(
            f"{_COLLECTOR}test_duplicates_inside_a_run_and_across_runs_are_dropped_and_counted[python]",
            "tests/pipeline/test_end_to_end.py::test_concurrent_transactions_arrive_exactly_once_with_their_values[pg18-clickhouse]",
            "tests/pipeline/test_acknowledgement.py::"
            "test_retried_event_after_a_restart_is_still_recognised_as_a_duplicate[pg18-clickhouse]",
        ),
        quick=(f"{_COLLECTOR}test_duplicates_inside_a_run_and_across_runs_are_dropped_and_counted[python]",),
    ),
    Mutant(
        "never-send-status-during-an-outage", "the server is always answered, even while ClickHouse is down",
        "cdc/pipeline/acknowledge.py",
        "    def send_forced(self) -> None:\n        self.send(force=True)",
        "    def send_forced(self) -> None:\n        pass  # MUTANT: silent while held back",
        must_fail=(_BACKPRESSURE, _OUTAGE),
        quick=(_BACKPRESSURE,),
    ),
    Mutant(
        "store-only-part-of-a-batch", "nothing committed is lost",
        "cdc/sink/clickhouse/sink.py",
        "            self._conn.insert(self._sql.insert_events, events)",
        "            self._conn.insert(self._sql.insert_events, [c[:-1] for c in events])  # MUTANT: last row lost",
        must_fail=(
            "tests/sink/test_clickhouse_sink.py::test_written_rows_read_back_exactly",
            "tests/pipeline/test_end_to_end.py::test_concurrent_transactions_arrive_exactly_once_with_their_values[pg18-clickhouse]",
            "tests/pipeline/test_flush_log.py::test_every_flush_logs_rows_bytes_seconds_and_the_acknowledged_lsn[pg18]",
            f"{_CRASH}[pg18-clickhouse-mid-batch]",
        ),
        quick=("tests/sink/test_clickhouse_sink.py::test_written_rows_read_back_exactly",),
    ),
    Mutant(
        "drop-a-dead-letter", "bad rows are never dropped silently",
        "cdc/core/collector.py",
        "            self._builder.dead_letter(converter.dead_letter(values, commit_lsn, seq, commit_time, reason))",
        "            converter.dead_letter(values, commit_lsn, seq, commit_time, reason)  # MUTANT: not written",
        must_fail=(
            f"{_COLLECTOR}test_bad_rows_in_a_run_are_dead_lettered_at_their_position_and_the_rest_buffered[python]",
            f"{_COLLECTOR}test_rows_of_another_table_are_dead_lettered_not_dropped[python]",
            "tests/faults/test_fault_bad_input.py::"
            "test_bad_rows_are_dead_lettered_with_reason_and_lsn_and_the_stream_goes_on[pg18]",
            "tests/pipeline/test_other_tables.py::"
            "test_a_table_added_to_the_publication_while_running_is_dead_lettered_not_lost[pg18]",
        ),
        quick=(f"{_COLLECTOR}test_bad_rows_in_a_run_are_dead_lettered_at_their_position_and_the_rest_buffered[python]",),
    ),
    Mutant(
        "no-lag-seconds-check", "`cdc status` warns when the slot is longer behind than --max-lag-seconds",
        "cdc/admin/health.py",
        "    if lag_seconds is not None and lag_seconds > max_lag_seconds:",
        "    if False:  # MUTANT: --max-lag-seconds ignored",
        must_fail=(
            "tests/admin/test_status_doctor.py::test_lag_in_seconds_alone_is_graded_by_max_lag_seconds[pg18]",
        ),
    ),
    Mutant(
        "verify-replay-trusts-the-ledger", "the ledger never outranks the data: a replay restores what the events lost",
        "cdc/pipeline/pipeline.py",
        "            self.remember_recent_ids(held=restoring)",
        "            self.remember_recent_ids(held=False)  # MUTANT: the ledger's ids, lost or not, are skipped",
        must_fail=(
            "tests/pipeline/test_replay.py::test_replay_into_a_table_that_lost_rows_restores_them[pg18]",
            "tests/pipeline/test_replay.py::test_replay_from_a_checkpoint_restores_only_the_rows_the_table_lost[pg18]",
            "tests/pipeline/test_create_slot.py::"
            "test_a_new_slot_after_a_lost_one_copies_only_what_clickhouse_lacks[pg18]",
        ),
    ),
    Mutant(
        "verify-calls-missing-in-flight", "cdc verify reports a lost row as missing, not as in flight",
        "cdc/admin/verify.py",
        "            return lambda found: \"in_flight\" if found.h in in_flight else \"missing\"",
        "            return lambda found: \"in_flight\"  # MUTANT: whatever the slot holds",
        must_fail=(
            "tests/admin/test_verify.py::test_rows_the_slot_still_holds_are_in_flight_and_lost_rows_are_missing[pg18]",
        ),
    ),
    Mutant(
        "verify-calls-history-unexpected", "cdc verify never calls an event before the scope unexpected",
        "cdc/core/reconcile.py",
        "        while current is not None and current[0] < h:\n            last_ch = _check_order(current[0], last_ch)\n"
        "            if current[1]:",
        "        while current is not None and current[0] < h:\n            last_ch = _check_order(current[0], last_ch)\n"
        "            if True:  # MUTANT: out of scope too",
        must_fail=(
            "tests/reconcile/test_compare.py::"
            "test_an_id_clickhouse_holds_out_of_scope_accounts_for_the_outbox_row_but_is_never_unexpected",
            "tests/admin/test_verify.py::"
            "test_events_older_than_the_outbox_retention_are_never_unexpected_even_in_a_bucket_that_differs[pg18]",
        ),
        quick=(
            "tests/reconcile/test_compare.py::"
            "test_an_id_clickhouse_holds_out_of_scope_accounts_for_the_outbox_row_but_is_never_unexpected",
        ),
    ),
)
