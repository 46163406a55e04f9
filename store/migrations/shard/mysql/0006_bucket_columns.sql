-- Every per-user row carries its bucket (user id mod 1000), indexed with the row's key, so that a
-- bucket move finds a bucket's rows by an index range instead of scanning the whole shard
-- (backend/src/store/per_user.rs declares these tables and columns). Online: adding a nullable
-- column is instant, and the indexes are built while writes go on (LOCK=NONE). The backends write
-- the column on every insert from now on; rows written before are filled in the background, a
-- few thousand at a time (store::per_user::fill_buckets), and a move waits for that to finish.
ALTER TABLE users ADD COLUMN bucket BIGINT NULL, ALGORITHM = INSTANT;
ALTER TABLE orders ADD COLUMN bucket BIGINT NULL, ALGORITHM = INSTANT;
ALTER TABLE order_items ADD COLUMN bucket BIGINT NULL, ALGORITHM = INSTANT;
ALTER TABLE idempotency_keys ADD COLUMN bucket BIGINT NULL, ALGORITHM = INSTANT;

ALTER TABLE users ADD INDEX users_bucket (bucket, id), ALGORITHM = INPLACE, LOCK = NONE;
ALTER TABLE orders ADD INDEX orders_bucket (bucket, id), ALGORITHM = INPLACE, LOCK = NONE;
ALTER TABLE order_items ADD INDEX order_items_bucket (bucket, order_id, product_id), ALGORITHM = INPLACE, LOCK = NONE;
ALTER TABLE idempotency_keys ADD INDEX idempotency_keys_bucket (bucket, user_id, idem_key), ALGORITHM = INPLACE, LOCK = NONE;
