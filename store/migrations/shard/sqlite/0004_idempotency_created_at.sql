-- Idempotency keys are purged once older than the retention (backend.idempotency_retention_seconds),
-- a few hundred at a time by age: this index keeps each batch a short range scan, not a table scan
-- that would lock every row it passes on MariaDB.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
