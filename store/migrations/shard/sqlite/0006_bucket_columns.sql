-- Every per-user row carries its bucket (user id mod 1000), indexed with the row's key, so that a
-- bucket move finds a bucket's rows by an index range instead of scanning the whole shard
-- (backend/src/store/per_user.rs declares these tables and columns). The backends write the column
-- on every insert from now on; rows written before are filled in the background, a few thousand
-- at a time (store::per_user::fill_buckets), and a move waits for that to finish.
ALTER TABLE users ADD COLUMN bucket INTEGER;
ALTER TABLE orders ADD COLUMN bucket INTEGER;
ALTER TABLE order_items ADD COLUMN bucket INTEGER;
ALTER TABLE idempotency_keys ADD COLUMN bucket INTEGER;

CREATE INDEX users_bucket ON users (bucket, id);
CREATE INDEX orders_bucket ON orders (bucket, id);
CREATE INDEX order_items_bucket ON order_items (bucket, order_id, product_id);
CREATE INDEX idempotency_keys_bucket ON idempotency_keys (bucket, user_id, idem_key);
