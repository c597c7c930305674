"""The per-row path: committed rows become events, deduplicated, buffered, stored, acknowledged."""
