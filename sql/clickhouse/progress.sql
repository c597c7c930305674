-- A thin copy of the newest events' positions, so the high-water mark and the
-- recent unique_ids are read from a few hours of rows instead of all events.
-- Hourly partitions let old hours be dropped cheaply (never a stream's newest
-- one). Each slot keeps its own positions under its ``stream``.
CREATE TABLE IF NOT EXISTS ${progress}
(
    unique_id    String,
    commit_lsn   UInt64,
    commit_seq   UInt32,
    committed_at ${timestamp},
    inserted_at  DateTime('UTC'),
    stream       UInt32 DEFAULT 0
)
ENGINE = MergeTree()
PARTITION BY toStartOfHour(inserted_at)
ORDER BY (stream, commit_lsn, commit_seq)
