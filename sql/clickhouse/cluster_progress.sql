-- progress.sql, replicated (see cluster_events.sql). The materialized view
-- writes into it on the replica that took the insert. ClickHouse 18.16 skips
-- the view for an events block dropped as a repeat, so after a retry the sink
-- inserts the batch's rows here itself (docs/ha.md): a position may be here
-- twice, never missing.
CREATE TABLE IF NOT EXISTS ${progress} ON CLUSTER ${cluster}
(
    unique_id    String,
    commit_lsn   UInt64,
    commit_seq   UInt32,
    committed_at ${timestamp},
    inserted_at  DateTime('UTC'),
    stream       UInt32 DEFAULT 0
)
ENGINE = ReplicatedMergeTree('${zk_progress}', '{replica}')
PARTITION BY toStartOfHour(inserted_at)
ORDER BY (stream, commit_lsn, commit_seq)
