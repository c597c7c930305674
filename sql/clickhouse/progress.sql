-- A thin copy of the newest events' positions, so the high-water mark and the
-- recent unique_ids are read from a few hours of rows instead of all events.
-- Hourly partitions let old hours be dropped cheaply (never the newest one).
CREATE TABLE IF NOT EXISTS ${progress}
(
    unique_id    String,
    commit_lsn   UInt64,
    commit_seq   UInt32,
    committed_at ${timestamp},
    inserted_at  DateTime('UTC')
)
ENGINE = MergeTree()
PARTITION BY toStartOfHour(inserted_at)
ORDER BY (commit_lsn, commit_seq)
