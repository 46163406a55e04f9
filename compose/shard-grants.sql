-- Run once by the image's entrypoint on a new shard primary, after it has made the `shop` user.
-- A bucket move (`shopctl shards move`) follows the source primary's binlog with the shard's own
-- URL, as a replica reads it: where the binlog is (BINLOG MONITOR) and its events (REPLICATION
-- SLAVE). The server holds this shard's database alone.
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'shop'@'%';
