-- Rows the pipeline could not turn into events, with why. Keyed by the row's
-- place in the WAL, as its slot (``stream``) saw it, so a dead letter delivered
-- twice collapses and two shards' rows of one transaction never do.
CREATE TABLE IF NOT EXISTS ${dead_letter}
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
ENGINE = ReplacingMergeTree()
ORDER BY (commit_lsn, commit_seq, stream)
