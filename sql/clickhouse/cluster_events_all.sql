-- For queries across the cluster: reads one healthy replica of each shard.
-- cdc itself never writes through it (it inserts into a replica's own table).
CREATE TABLE IF NOT EXISTS ${events_all} ON CLUSTER ${cluster} AS ${events}
ENGINE = Distributed(${cluster}, ${database}, ${events_local})
