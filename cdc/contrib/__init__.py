"""Integrations with application frameworks (each needs its own extra, e.g. ``cdc[django]``)."""
