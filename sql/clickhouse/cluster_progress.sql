-- progress.sql, replicated (see cluster_events.sql). The materialized view
-- writes into it on the replica that took the insert; a repeated identical
-- block of events yields a repeated identical block here, dropped the same way.
CREATE TABLE IF NOT EXISTS ${progress} ON CLUSTER ${cluster}
(
    unique_id    String,
    commit_lsn   UInt64,
    commit_seq   UInt32,
    committed_at ${timestamp},
    inserted_at  DateTime('UTC')
)
ENGINE = ReplicatedMergeTree('${zk_progress}', '{replica}')
PARTITION BY toStartOfHour(inserted_at)
ORDER BY (commit_lsn, commit_seq)
