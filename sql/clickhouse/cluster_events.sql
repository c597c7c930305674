-- The events table of a replicated cluster (--clickhouse-cluster): one
-- replica per {replica} macro of each {shard}, kept in step through
-- ZooKeeper. Replicated tables also drop an inserted block identical to one
-- of the last ones (replicated_deduplication_window): a batch re-sent after a
-- lost answer, byte for byte, is stored once. Columns and keys as events.sql.
CREATE TABLE IF NOT EXISTS ${events} ON CLUSTER ${cluster}
(
    unique_id        String,
    event_type       ${label},
    occurred_at      ${timestamp},
    environment      ${label},
    payload          String,
    metadata_version Int32,
    outbox_id        Int64,
    commit_lsn       UInt64,
    commit_seq       UInt32,
    committed_at     ${timestamp},
    inserted_at      DateTime('UTC'),
    stream           UInt32 DEFAULT 0
)
ENGINE = ReplicatedReplacingMergeTree('${zk_events}', '{replica}')
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (event_type, occurred_at, unique_id)
