-- The least a PostgreSQL role needs to run `cdc run` (and `cdc run --create-slot`).
--
-- Run as a superuser (or as the owner of the outbox table), in the application's
-- database, after the outbox table exists (`cdc migrate` as its owner, or your
-- own migration). Replace change-me, or set the password afterwards with
-- `\password cdc_replicator` in psql. Names are the defaults: the public.outbox
-- table and the publication cdc_outbox (--outbox-schema, --outbox-table,
-- --publication).
--
-- pg_hba.conf must let the role in for both kinds of connection cdc opens: an
-- ordinary one (database) and a logical replication one (database too, with
-- replication=database), for example:
--   host  app  cdc_replicator  10.0.0.0/8  scram-sha-256
--
-- tests/faults/test_fault_security.py runs exactly this file.

-- LOGIN and REPLICATION: enough to create, read and advance a logical slot. No
-- superuser, no CREATE anywhere, no write access to any table. (The slot's lag,
-- for cdc's metrics, comes from pg_replication_slots, which every role may read.)
CREATE ROLE cdc_replicator WITH LOGIN REPLICATION PASSWORD 'change-me';

-- Read the outbox: the first copy (`--create-slot`) selects from it.
GRANT USAGE ON SCHEMA public TO cdc_replicator;
GRANT SELECT ON public.outbox TO cdc_replicator;

-- The publication, made by its owner: the role only names it when streaming.
-- (`cdc migrate` makes the same one when run by the owner.)
CREATE PUBLICATION cdc_outbox FOR TABLE public.outbox
    WITH (publish = 'insert', publish_via_partition_root = true);

-- Heartbeats (`cdc run --heartbeat-interval`, every 10 s by default): cdc writes a
-- logical decoding message through pg_logical_emit_message and times it until
-- the batch holding it is stored (end-to-end latency, even when the outbox is
-- idle; acknowledging it also moves an idle slot's confirmed position). PUBLIC
-- may execute the function unless a hardened database revoked that: grant it
-- to the role in any case. Every overload, since PostgreSQL 17 added one with a
-- `flush` argument. Without it cdc says so once and runs without heartbeats.
DO $$
DECLARE f regprocedure;
BEGIN
  FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'pg_logical_emit_message' LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO cdc_replicator', f);
  END LOOP;
END $$;

-- A sharded outbox (`cdc migrate --shards N`) needs two grants more: docs/least-privilege-shards.sql.
