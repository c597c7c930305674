"""A worker's lock connection: one ordinary PostgreSQL session holding its advisory locks and its heartbeat.

A worker owns a shard exactly while this session holds the session-level
advisory lock of the shard's slot (``pg_try_advisory_lock``, key from the slot's
name: cdc/shards/layout.py). It is alive while the session holds its own member
lock; the ``cdc_workers`` row says who it is and when it last beat. When the
session ends (the process died, the connection broke, someone terminated it)
PostgreSQL drops every one of those locks at once: that is how the others learn
a worker is gone, and take its shards.

Every failure of the session raises ``LockLost``: from then on the worker owns
nothing and must stop streaming at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ..redact import dsn_password, redact_dsn, scrub
from ..shards.layout import lock_key, member_key, split_key
from . import shards as catalog
from .connect import Conn
from .shards import Sharding, Worker

# The server drops a dead client's session after ~15 s of silence instead of
# TCP's hours; a statement never waits longer than this either.
_CONNECT_OPTIONS: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "options": "-c statement_timeout=5000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=0",
}


class LockLost(Exception):
    """The lock connection failed: every lock it held is gone (or will be, when the server notices)."""


class LockSession:
    """Use from one thread only. ``open()`` connects and registers; every other call may raise LockLost."""

    def __init__(
        self, dsn: str, *, schema: str, slot: str, worker_id: str, host: str, pid: int, max_shards: int | None,
    ) -> None:
        self._dsn, self._schema, self._slot = dsn, schema, slot
        self.worker_id, self._host, self._pid, self._max_shards = worker_id, host, pid, max_shards
        self._member = member_key(worker_id)
        self._conn: Conn | None = None
        self.backend_pid: int | None = None
        self._previous_backend: int | None = None
        self._workers = catalog.table(schema, catalog.WORKERS)

    # -- lifetime ----------------------------------------------------------------------------

    def open(self) -> None:
        try:
            conn = psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=10, application_name=f"cdc-worker {self.worker_id}",
                **_CONNECT_OPTIONS,
            )
        except psycopg.Error as exc:
            raise LockLost(f"cannot connect to PostgreSQL at {redact_dsn(self._dsn)}: {self._text(exc)}") from None
        self._conn = conn
        self.backend_pid = conn.info.backend_pid
        with self._lost("register the worker"):
            if self._previous_backend is not None:
                # Our old session may outlive its broken connection and keep our
                # locks until the server notices; end it so the shards are free.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s "
                    "AND classid = %s AND objid = %s AND objsubid = 1",
                    (self._previous_backend, *split_key(self._member)),
                )
            if not catalog.try_lock(conn, self._member):
                raise LockLost(f"worker id {self.worker_id} is already in use by a live worker")
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (worker_id, slot, host, pid, backend_pid, member_key, max_shards) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (worker_id) DO UPDATE SET "
                    "backend_pid = excluded.backend_pid, heartbeat_at = now(), shards = '{{}}'"
                ).format(self._workers),
                (self.worker_id, self._slot, self._host, self._pid, self.backend_pid, self._member, self._max_shards),
            )
        self._previous_backend = self.backend_pid

    def close(self, *, deregister: bool = True) -> None:
        """End the session (every lock goes with it); forget the worker's row first when asked."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if deregister:
                conn.execute(sql.SQL("DELETE FROM {} WHERE worker_id = %s").format(self._workers), (self.worker_id,))
        except psycopg.Error:
            pass  # the session is going away anyway
        finally:
            conn.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # -- heartbeat and liveness -------------------------------------------------------------

    def heartbeat(self, owned: Iterable[int]) -> None:
        with self._lost("send a heartbeat") as conn:
            updated = conn.execute(
                sql.SQL("UPDATE {} SET heartbeat_at = now(), shards = %s WHERE worker_id = %s").format(self._workers),
                (sorted(owned), self.worker_id),
            ).rowcount
            if not updated:
                raise LockLost("this worker's row was deleted from cdc_workers")

    def workers(self) -> list[Worker]:
        """Every registered worker of this slot family, with whether its session is alive."""
        with self._lost("list the workers") as conn:
            return catalog.list_workers(conn, self._schema, self._slot)

    def forget_dead(self, older_than: float) -> int:
        """Delete rows of workers whose session is gone and whose last beat is older than ``older_than`` s."""
        dead = [w.worker_id for w in self.workers() if not w.alive and w.heartbeat_age > older_than]
        if dead:
            with self._lost("forget dead workers") as conn:
                conn.execute(sql.SQL("DELETE FROM {} WHERE worker_id = ANY(%s)").format(self._workers), (dead,))
        return len(dead)

    def end_hung(self, workers: Sequence[Worker], older_than: float) -> list[Worker]:
        """Terminate the lock sessions of live workers that stopped beating: their shards become free."""
        hung = [w for w in workers if w.alive and w.worker_id != self.worker_id and w.heartbeat_age > older_than]
        with self._lost("end a hung worker's session") as conn:
            for worker in hung:
                conn.execute("SELECT pg_terminate_backend(%s)", (worker.backend_pid,))
        return hung

    # -- shard locks -------------------------------------------------------------------------

    def holders(self, slots: Sequence[str]) -> dict[str, int]:
        """slot -> backend pid holding its lock, for the slots whose lock someone holds."""
        wanted = {split_key(lock_key(slot)): slot for slot in slots}
        with self._lost("read the shard locks") as conn:
            held = catalog.advisory_locks(conn)
        return {wanted[key]: pid for key, pid in held.items() if key in wanted}

    def key_holder(self, key: int) -> int | None:
        """The backend pid holding the advisory lock ``key`` (a bigint key), if any."""
        with self._lost("read the advisory locks") as conn:
            return catalog.key_holder(conn, key)

    def try_lock(self, slot: str) -> bool:
        with self._lost(f"lock shard slot {slot}") as conn:
            return catalog.try_lock(conn, lock_key(slot))

    def unlock(self, slot: str) -> None:
        with self._lost(f"unlock shard slot {slot}") as conn:
            catalog.unlock(conn, lock_key(slot))

    def acknowledged_all(self, slots: Sequence[str], lsn: int) -> bool:
        """Whether every one of ``slots`` exists and has confirmed ``lsn``."""
        with self._lost("read the slots' positions") as conn:
            return catalog.slots_confirmed(conn, list(slots), lsn)

    def sharding(self) -> Sharding | None:
        with self._lost("read the shard generations") as conn:
            return catalog.read_sharding(conn, self._schema, self._slot)

    # -- plumbing ----------------------------------------------------------------------------

    def _text(self, exc: BaseException) -> str:
        return scrub(" ".join(str(exc).split()), dsn_password(self._dsn))

    def _lost(self, what: str) -> _Guard:
        return _Guard(self, what)


class _Guard:
    """``with session._lost(what) as conn``: a psycopg error becomes LockLost and ends the session."""

    def __init__(self, session: LockSession, what: str) -> None:
        self._session, self._what = session, what

    def __enter__(self) -> Conn:
        if self._session._conn is None:
            raise LockLost(f"cannot {self._what}: the lock connection is closed")
        return self._session._conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, psycopg.Error):
            text = self._session._text(exc)
            self._session.close(deregister=False)
            raise LockLost(f"lost the lock connection (could not {self._what}): {text}") from None

