-- The catalog: the same rows on every shard (seeded at start when empty, imported by shopctl).
-- Money is integer cents; ids are explicit so every shard agrees on them.
CREATE TABLE categories (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL
);

CREATE TABLE products (
    id          INTEGER PRIMARY KEY,
    sku         TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    category_id INTEGER NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    description TEXT    NOT NULL DEFAULT ''
);

CREATE INDEX products_category_id ON products (category_id, id);
