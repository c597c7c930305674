"""A role that may not read the shards' generations table is told the GRANT, by every command that needs it."""

from __future__ import annotations

import orjson
from servers import PgServer
from support import Target, checked

ROLE, PASSWORD = "shard_reader", "shard-reader-pw-1"


def test_a_role_that_cannot_read_the_generations_is_given_the_grant_by_doctor_and_verify(
    pg_dsn: str, clickhouse_url: str, pg_server: PgServer,
) -> None:
    t = Target(pg_dsn, clickhouse_url)
    checked(t.cdc("migrate", "--shards", "2"))
    with t.pg() as conn:
        conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f"GRANT SELECT ON outbox TO {ROLE}")
        dbname = conn.info.dbname
    try:
        as_role = {"CDC_PG_DSN": pg_server.dsn(dbname, ROLE, PASSWORD)}
        doctor = t.cdc("doctor", "--json", **as_role)
        assert doctor.returncode == 1, doctor.stderr
        checks = {c["check"]: c for c in orjson.loads(doctor.stdout)["checks"]}
        grant = f'GRANT SELECT ON "public"."cdc_shard_generations", "public"."cdc_workers" TO "{ROLE}";'
        assert checks["shards"]["status"] == "FAIL" and checks["shards"]["fix"] == grant
        assert checks["role REPLICATION"]["status"] == "FAIL", "the other checks still run"
        verify = t.cdc("verify", "--wait", "0", **as_role)
        assert verify.returncode == 2
        assert verify.stderr.strip().splitlines()[-1] == (
            f"cdc: error: role {ROLE} may not read public.cdc_shard_generations, which lists the outbox's "
            f"shards: {grant}")
        assert PASSWORD not in doctor.stdout + doctor.stderr + verify.stdout + verify.stderr
        with t.pg() as conn:
            conn.execute(grant)
        checks = {c["check"]: c for c in orjson.loads(t.cdc("doctor", "--json", **as_role).stdout)["checks"]}
        assert checks["shards"]["status"] == "PASS"
    finally:
        with t.pg() as conn:
            conn.execute(f"DROP OWNED BY {ROLE}")
            conn.execute(f"DROP ROLE {ROLE}")
