-- Per bucket, whether this shard's primary takes writes for its users (backend/src/store/fence.rs).
-- Filled once from the current shard map when the shard is set up; moves open and close rows.
CREATE TABLE bucket_fence (
    bucket      BIGINT NOT NULL PRIMARY KEY,
    writes_open BIGINT NOT NULL
);
