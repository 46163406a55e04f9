-- Per-user data. A row lives on the shard that owns its user (shard map, bucket = user_id mod 1000).
-- users.id is the auth database's id, never generated here; order ids are minted by the backend
-- (time * 64 + shard number) so they are unique across shards. Timestamps are unix seconds.
CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    email      TEXT    NOT NULL,
    is_active  INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('placed', 'cancelled')),
    total_cents INTEGER NOT NULL CHECK (total_cents >= 0),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX orders_user_id_id ON orders (user_id, id);

CREATE TABLE order_items (
    order_id         INTEGER NOT NULL REFERENCES orders (id),
    product_id       INTEGER NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0),
    unit_price_cents INTEGER NOT NULL,
    line_total_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- One row per (user, Idempotency-Key): a retry finds the order it already made.
CREATE TABLE idempotency_keys (
    user_id      INTEGER NOT NULL,
    idem_key     TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    order_id     INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
