-- One row per outbox row. A row delivered twice has the same sort key, so
-- ReplacingMergeTree collapses it at merge time (read with FINAL for exact
-- answers before then). The sort key serves queries by event type and time.
-- ${timestamp} is DateTime64(6, 'UTC') on ClickHouse >= 20.1; older servers get
-- DateTime('UTC'), which keeps whole seconds only. ``stream`` says which slot
-- delivered the row (0: the one slot of an unsharded outbox; see cdc/shards/layout.py).
CREATE TABLE IF NOT EXISTS ${events}
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
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (event_type, occurred_at, unique_id)
