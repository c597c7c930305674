"""Workers sharing a sharded outbox: advisory locks say who owns which shard, a table says who is alive.

``session`` is the lock connection, ``shares`` the arithmetic, ``runner`` where
shards stream (child processes or threads), ``group`` the loop that ties them.
"""
