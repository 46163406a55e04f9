-- Per-user data. A row lives on the shard that owns its user (shard map, bucket = user_id mod 1000).
-- users.id is the auth database's id, never generated here; order ids are minted by the backend
-- (time * 64 + shard number) so they are unique across shards. Timestamps are unix seconds.
CREATE TABLE users (
    id         BIGINT       NOT NULL PRIMARY KEY,
    email      VARCHAR(320) NOT NULL,
    is_active  BIGINT       NOT NULL DEFAULT 1,
    created_at BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE orders (
    id          BIGINT      NOT NULL PRIMARY KEY,
    user_id     BIGINT      NOT NULL,
    status      VARCHAR(16) NOT NULL CHECK (status IN ('placed', 'cancelled')),
    total_cents BIGINT      NOT NULL CHECK (total_cents >= 0),
    created_at  BIGINT      NOT NULL,
    updated_at  BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE INDEX orders_user_id_id ON orders (user_id, id);

CREATE TABLE order_items (
    order_id         BIGINT NOT NULL,
    product_id       BIGINT NOT NULL,
    quantity         BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL,
    line_total_cents BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT order_items_order FOREIGN KEY (order_id) REFERENCES orders (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- One row per (user, Idempotency-Key): a retry finds the order it already made.
-- ascii_bin: keys compare byte for byte ("abc" and "ABC" are different keys).
CREATE TABLE idempotency_keys (
    user_id      BIGINT                                         NOT NULL,
    idem_key     VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    request_hash VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin  NOT NULL,
    order_id     BIGINT                                         NOT NULL,
    created_at   BIGINT                                         NOT NULL,
    PRIMARY KEY (user_id, idem_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
