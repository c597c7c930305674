"""Benchmarks of the cdc pipeline against real servers: ``python -m bench.run --help``."""
