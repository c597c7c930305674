"""``cdc verify`` and ``--repair`` on a sharded outbox: the whole outbox reconciled across its shards, and each
repaired row stored under its own shard's stream, so every shard's high-water mark and dedup window stay right."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from shard_support import RUN, CdcProcess, catch_up_all, stop_all
from support import Target, checked, insert_events, wait_until

DRAIN = ("run", "--until-lsn", "current")


def verify(t: Target, *args: str, code: int) -> dict[str, Any]:
    result = t.cdc("verify", "--json", "--wait", "2", "--samples", "100", *args)
    assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    report: dict[str, Any] = orjson.loads(result.stdout)
    return report


def streams_of(t: Target, table: str, ids: list[str]) -> dict[str, list[int]]:
    rows = t.ch().execute(f"SELECT unique_id, stream FROM {table} WHERE unique_id IN %(ids)s", {"ids": tuple(ids)})
    out: dict[str, list[int]] = {}
    for uid, stream in rows:
        out.setdefault(uid, []).append(int(stream))
    return out


def high_water_marks(t: Target) -> dict[int, tuple[int, int]]:
    rows = t.ch().execute("SELECT stream, max(tuple(commit_lsn, commit_seq)) FROM events_cdc_progress GROUP BY stream")
    return {int(s): tuple(hwm) for s, hwm in rows}  # type: ignore[misc]


def test_verify_finds_rows_lost_from_every_shard_and_repair_stores_them_under_their_own_shard(
    pg_dsn: str, clickhouse_url: str,
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "4"))
    ids = [f"v{i}" for i in range(400)]
    with t.pg() as conn:
        insert_events(conn, ids)
        shard = {str(u): int(k) for u, k in conn.execute(
            "SELECT unique_id, shard_hash %% 4 FROM outbox WHERE unique_id = ANY(%s)", (ids,)).fetchall()}
    checked(t.cdc(*DRAIN))
    clean = verify(t, code=0)
    assert clean["status"] == "agree" and clean["clickhouse_ids"] == 400
    assert [(s["slot"], s["stream"]) for s in clean["shards"]] == [(f"cdc_outbox_{k}", 100 + k) for k in range(4)]

    # Two rows of each shard lost from the events table.
    lost = [next(u for u in ids[start:] if shard[u] == k) for k in range(4) for start in (0, 200)]
    assert len(set(lost)) == 8
    ch = t.ch()
    quoted = ", ".join(f"'{u}'" for u in lost)
    ch.execute(f"ALTER TABLE events DELETE WHERE unique_id IN ({quoted})")
    wait_until(lambda: ch.execute(f"SELECT count() FROM events WHERE unique_id IN ({quoted})") == [(0,)], 60,
               "the delete to apply")
    marks = high_water_marks(t)

    found = verify(t, code=1)
    assert found["missing"]["count"] == 8
    assert {r["unique_id"] for r in found["missing"]["first"]} == set(lost)
    assert found["unexpected"]["count"] == found["in_flight"]["count"] == found["undetermined"]["count"] == 0

    repaired = verify(t, "--repair", code=0)
    assert repaired["repaired"] and repaired["repair"]["delivered"] == 8 and repaired["repair"]["events_stored"] == 8
    assert repaired["repair"]["shards"] == {f"cdc_outbox_{k}": 2 for k in range(4)}
    # Each repaired row under its shard's stream (generation 1: 100 + k), in the events table and the ledger;
    # nothing under stream 0, and no shard's high-water mark moved (repairs sort below every streamed position).
    for table in ("events", "events_cdc_progress"):
        got = streams_of(t, table, lost)
        assert all(100 + shard[u] in got[u] for u in lost), got
        assert not [u for u in lost if 0 in got[u]]
    assert high_water_marks(t) == marks and 0 not in marks
    assert verify(t, code=0)["status"] == "agree"

    # The worker group goes on from each shard's own mark: new rows once each, nothing stored again.
    new = [f"after-{i}" for i in range(200)]
    workers = [CdcProcess(t, *RUN) for _ in range(2)]
    try:
        with t.pg() as conn:
            insert_events(conn, new[:100])
            insert_events(conn, new[100:])
        catch_up_all(t)
    finally:
        stop_all(workers)
    ledger = Counter(u for (u,) in ch.execute("SELECT unique_id FROM events_cdc_progress WHERE unique_id != ''"))
    assert {u: n for u, n in ledger.items() if u.startswith("after-") and n != 1} == {}
    assert sorted(u for u in ledger if u.startswith("after-")) == sorted(new)
    assert {u: n for u, n in ledger.items() if not u.startswith("after-") and n != (2 if u in lost else 1)} == {}
    final = verify(t, code=0)
    assert final["clickhouse_ids"] == 600 and final["missing"]["count"] == 0


def test_from_lsn_is_refused_on_a_sharded_outbox_in_one_line(pg_dsn: str, clickhouse_url: str) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "2"))
    result = t.cdc("verify", "--from-lsn", "0/1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "cdc: error: --from-lsn reads one slot, and this outbox is split over 2 shard slots: use --since instead")
