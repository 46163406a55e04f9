-- The catalog: the same rows on every shard (seeded at start when empty, imported by shopctl).
-- Money is integer cents; ids are explicit so every shard agrees on them. Only BIGINT and VARCHAR:
-- the types sqlx's Any driver decodes the same way on MySQL/MariaDB and SQLite.
CREATE TABLE categories (
    id   BIGINT       NOT NULL PRIMARY KEY,
    name VARCHAR(200) NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE products (
    id          BIGINT        NOT NULL PRIMARY KEY,
    sku         VARCHAR(64)   NOT NULL UNIQUE,
    name        VARCHAR(200)  NOT NULL,
    category_id BIGINT        NOT NULL,
    price_cents BIGINT        NOT NULL CHECK (price_cents >= 0),
    description VARCHAR(2000) NOT NULL DEFAULT ''
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE INDEX products_category_id ON products (category_id, id);
