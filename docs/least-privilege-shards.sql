-- What a `cdc run` worker of a sharded outbox needs besides docs/least-privilege.sql.
--
-- Run as the outbox's owner (or a superuser) after `cdc migrate --shards N` (which
-- makes these two tables and the shards' publications and slots), in the
-- application's database, for the role of docs/least-privilege.sql. The worker
-- reads the generations, and records its liveness (a row it inserts, beats in
-- and deletes); its advisory locks need no privilege at all.
--
-- tests/workers/test_sharded_privileges.py runs exactly this file.

GRANT SELECT ON public.cdc_shard_generations TO cdc_replicator;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.cdc_workers TO cdc_replicator;
