-- progress_mv.sql on every replica of the cluster.
CREATE MATERIALIZED VIEW IF NOT EXISTS ${progress_mv} ON CLUSTER ${cluster} TO ${progress}
AS SELECT unique_id, commit_lsn, commit_seq, committed_at, inserted_at, stream
FROM ${events}
