"""An application-like load for the demo: orders written with ``cdc.emit`` in real transactions.

Each transaction inserts an order (business data) and a few events about it.
Some transactions fail after writing and roll back; some are retried by the
"application" with the same unique_ids, either because the first attempt
rolled back or because it never heard that its commit succeeded. So the
outbox holds rows that never became events and several rows for one event,
and the exactly-once check is: distinct committed unique_ids = events stored.

``run_load`` returns what it committed (``LoadReport.committed_ids``).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ..app.emit import emit

BUSINESS_TABLE = "demo_orders"
_RETRY_CANDIDATES = 1000


@dataclass(frozen=True)
class LoadSettings:
    events: int | None = 1000  # stop after exactly this many distinct committed events (None: until stopped)
    rate: float | None = 500.0  # outbox rows per second, about (None: as fast as the database goes)
    duration: float | None = None  # seconds, at most
    rollback_ratio: float = 0.1  # transactions that fail after writing
    retry_ratio: float = 0.05  # transactions that are application retries of earlier events
    max_events_per_transaction: int = 5
    environment: str = "demo"
    schema: str = "public"
    table: str = "outbox"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.events is not None and self.events < 0:
            raise ValueError(f"events must be 0 or more, got {self.events}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive (or None for no limit), got {self.rate}")
        for name in ("rollback_ratio", "retry_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.max_events_per_transaction < 2:
            raise ValueError("max_events_per_transaction must be at least 2 (an order and an item)")


@dataclass(frozen=True)
class LoadReport:
    committed_ids: frozenset[str]  # every distinct unique_id that committed: the events ClickHouse must hold
    events_by_type: dict[str, int]  # distinct committed events per type
    outbox_rows: int  # committed outbox rows, retried duplicates included
    transactions_committed: int
    transactions_rolled_back: int
    retries_of_committed: int  # duplicates: same unique_id committed again
    retries_of_rolled_back: int  # second attempts that committed what the first rolled back
    events_rolled_back: int  # outbox rows written by transactions that rolled back


class Pacer:
    """Spaces out work to ``rate`` units per second, catching up after a slow stretch rather than bursting forever."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = clock()

    def wait(self, units: int) -> None:
        if not self._interval:
            return
        now = self._clock()
        # Behind by more than a second: forget the backlog instead of bursting to make it up.
        self._next = max(self._next, now - 1.0)
        if self._next > now:
            self._sleep(self._next - now)
        self._next += units * self._interval


class _Rollback(Exception):
    """The simulated failure (a declined payment) that makes a transaction roll back."""


@dataclass(frozen=True)
class _Order:
    """What one order transaction writes; a retry carries the unique_ids of the attempt it repeats."""

    customer: int
    items: tuple[int, ...]  # prices in cents, one item_added event each
    payment: bool  # a payment_captured event
    unique_ids: tuple[str, ...] | None = None

    @property
    def size(self) -> int:
        return 1 + len(self.items) + self.payment


@dataclass
class _Tally:
    committed: set[str] = field(default_factory=set)
    failed: dict[str, _Order] = field(default_factory=dict)  # rolled back, by first unique_id: may be retried
    recent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # committed, may be duplicated
    by_type: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    rolled_back_rows: int = 0
    committed_tx: int = 0
    rolled_back_tx: int = 0
    dup_retries: int = 0
    rollback_retries: int = 0

    def report(self) -> LoadReport:
        return LoadReport(
            committed_ids=frozenset(self.committed), events_by_type=dict(self.by_type), outbox_rows=self.rows,
            transactions_committed=self.committed_tx, transactions_rolled_back=self.rolled_back_tx,
            retries_of_committed=self.dup_retries, retries_of_rolled_back=self.rollback_retries,
            events_rolled_back=self.rolled_back_rows,
        )


def ensure_business_table(conn: psycopg.Connection[Any], schema: str = "public") -> None:
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, customer_id integer NOT NULL, "
        "total_cents bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    ).format(sql.Identifier(schema, BUSINESS_TABLE)))


def run_load(
    dsn: str,
    settings: LoadSettings = LoadSettings(),
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Write orders and their events until ``settings.events`` distinct events committed, time ran out or ``stop``.

    ``progress`` is called after each transaction with the number of distinct
    committed events so far. Runs in the calling thread, on its own connection.
    """
    rng = random.Random(settings.seed)
    pacer = Pacer(settings.rate)
    deadline = None if settings.duration is None else time.monotonic() + settings.duration
    tally = _Tally()
    with psycopg.connect(dsn, autocommit=True, application_name="cdc-demo-load") as conn:
        with conn.transaction():
            ensure_business_table(conn, settings.schema)
        while True:
            remaining = None if settings.events is None else settings.events - len(tally.committed)
            if remaining == 0 or (stop is not None and stop.is_set()):
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            written = 0
            if rng.random() < settings.retry_ratio:
                written = _retry(conn, rng, tally, settings, remaining)
            if not written:
                order = _new_order(rng, settings, remaining)
                written = _write_order(conn, tally, settings, order, fail=rng.random() < settings.rollback_ratio)
            pacer.wait(written)
            if progress is not None:
                progress(len(tally.committed))
    return tally.report()


def _new_order(rng: random.Random, s: LoadSettings, remaining: int | None) -> _Order:
    items = tuple(rng.randrange(199, 99_999) for _ in range(rng.randrange(1, s.max_events_per_transaction)))
    order = _Order(customer=rng.randrange(1, 10_000), items=items, payment=True)
    if remaining is not None and order.size > remaining:
        # The last order is cut to the exact total asked for: the order and remaining - 1 items.
        order = _Order(order.customer, items[: remaining - 1], payment=False)
    return order


def _write_order(conn: psycopg.Connection[Any], tally: _Tally, s: LoadSettings, order: _Order, *, fail: bool) -> int:
    """One order and its events in one transaction, which rolls back after writing them when ``fail``."""
    written: list[tuple[str, str, dict[str, Any]]] = []
    try:
        with conn.transaction():
            order_id = conn.execute(
                sql.SQL("INSERT INTO {} (customer_id, total_cents) VALUES (%s, %s) RETURNING id").format(
                    sql.Identifier(s.schema, BUSINESS_TABLE)), (order.customer, sum(order.items)),
            ).fetchone()[0]  # type: ignore[index]
            stories: list[tuple[str, dict[str, Any]]] = [
                ("order_placed", {"order_id": order_id, "customer_id": order.customer}),
                *(("item_added", {"order_id": order_id, "line": n, "price_cents": p})
                  for n, p in enumerate(order.items)),
            ]
            if order.payment:
                stories.append(("payment_captured", {"order_id": order_id, "amount_cents": sum(order.items)}))
            ids = order.unique_ids or (None,) * len(stories)
            for (event_type, payload), unique_id in zip(stories, ids, strict=True):
                uid = emit(conn, event_type, payload, unique_id=unique_id, environment=s.environment,
                           schema=s.schema, table=s.table)
                written.append((uid, event_type, payload))
            if fail:
                raise _Rollback
    except _Rollback:
        tally.rolled_back_tx += 1
        tally.rolled_back_rows += len(written)
        tally.failed[written[0][0]] = _Order(order.customer, order.items, order.payment,
                                             tuple(uid for uid, _, _ in written))
        while len(tally.failed) > _RETRY_CANDIDATES:  # forget the oldest: a long run stays small
            del tally.failed[next(iter(tally.failed))]
        return len(written)
    tally.committed_tx += 1
    tally.rows += len(written)
    for uid, event_type, _payload in written:
        tally.committed.add(uid)
        tally.by_type[event_type] += 1
    tally.recent = (tally.recent + written)[-_RETRY_CANDIDATES:]
    return len(written)


def _retry(conn: psycopg.Connection[Any], rng: random.Random, tally: _Tally, s: LoadSettings,
           remaining: int | None) -> int:
    """An application retry, same unique_ids: of an order that rolled back, or of an event whose commit went unheard.

    Returns the rows written (0: nothing to retry).
    """
    retryable = [key for key, order in tally.failed.items() if remaining is None or order.size <= remaining]
    if retryable and (not tally.recent or rng.random() < 0.5):
        order = tally.failed.pop(rng.choice(retryable))
        tally.rollback_retries += 1
        return _write_order(conn, tally, s, order, fail=False)
    if not tally.recent:
        return 0
    uid, event_type, payload = rng.choice(tally.recent)
    with conn.transaction():
        emit(conn, event_type, payload, unique_id=uid, environment=s.environment, schema=s.schema, table=s.table)
    tally.committed_tx += 1
    tally.rows += 1
    tally.dup_retries += 1
    return 1
