-- dead_letter.sql, replicated (see cluster_events.sql).
CREATE TABLE IF NOT EXISTS ${dead_letter} ON CLUSTER ${cluster}
(
    commit_lsn   UInt64,
    commit_seq   UInt32,
    committed_at ${timestamp},
    relation     String,
    reason       String,
    row_json     String,
    inserted_at  DateTime('UTC'),
    stream       UInt32
)
ENGINE = ReplicatedReplacingMergeTree('${zk_dead_letter}', '{replica}')
ORDER BY (commit_lsn, commit_seq, stream)
