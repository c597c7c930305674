-- Fills the progress table inside the same INSERT as the events, on the server:
-- no client crash can make the two disagree. The server writes the events
-- first, so a server crash in between can only leave the high-water mark
-- behind (the rows are then delivered again and collapse), never ahead.
CREATE MATERIALIZED VIEW IF NOT EXISTS ${progress_mv} TO ${progress}
AS SELECT unique_id, commit_lsn, commit_seq, committed_at, inserted_at, stream
FROM ${events}
