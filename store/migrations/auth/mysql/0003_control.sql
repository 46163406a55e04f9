-- The shard map and bucket moves (`shopgate_core::control`), until now made at run time by
-- whichever part needed them first: `IF NOT EXISTS`, so a database that part made is kept as it is.
-- Text columns are VARCHAR, not TEXT: sqlx's Any driver reads MariaDB's TEXT as bytes.
CREATE TABLE IF NOT EXISTS shard_map (
    version    BIGINT         NOT NULL PRIMARY KEY,
    map        VARCHAR(16000) NOT NULL,
    note       VARCHAR(255)   NOT NULL,
    created_at BIGINT         NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS shard_moves (
    id               BIGINT        NOT NULL PRIMARY KEY,
    source           VARCHAR(32)   NOT NULL,
    target           VARCHAR(32)   NOT NULL,
    buckets          VARCHAR(4000) NOT NULL,
    kind             VARCHAR(8)    NOT NULL,
    step             VARCHAR(16)   NOT NULL,
    rows_copied      BIGINT        NOT NULL,
    pause_started_ms BIGINT        NOT NULL,
    pause_ms         BIGINT        NOT NULL,
    started_at       BIGINT        NOT NULL,
    updated_at       BIGINT        NOT NULL,
    binlog_pos       VARCHAR(1000) NOT NULL DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
-- A table an older release made before the column existed.
ALTER TABLE shard_moves ADD COLUMN IF NOT EXISTS binlog_pos VARCHAR(1000) NOT NULL DEFAULT '';
