-- The outbox: the application's only write path for events, in its own transaction.
-- Partitioned by insert time so that retention drops whole partitions instead of
-- deleting rows; the default partition guarantees an insert never fails for lack
-- of one. (bigserial rather than an identity column: PostgreSQL < 17 has no
-- identity columns on partitioned tables.)
CREATE TABLE {table} (
    id               bigserial   NOT NULL,
    unique_id        text        NOT NULL,
    event_type       text        NOT NULL,
    occurred_at      timestamptz NOT NULL DEFAULT now(),
    environment      text        NOT NULL DEFAULT '',
    payload          jsonb       NOT NULL DEFAULT '{{}}'::jsonb,
    metadata_version integer     NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

CREATE TABLE {default_partition} PARTITION OF {table} DEFAULT;
