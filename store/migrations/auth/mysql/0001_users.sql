-- Accounts. Ids are the user ids every shard and token uses.
CREATE TABLE users (
    id                 BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email              VARCHAR(254) NOT NULL UNIQUE,
    password_hash      VARCHAR(255) NOT NULL,
    is_active          BIGINT       NOT NULL DEFAULT 1,
    is_admin           BIGINT       NOT NULL DEFAULT 0,
    created_at         BIGINT       NOT NULL,
    -- Tokens issued before this unix time are revoked (password change, disable).
    tokens_valid_after BIGINT       NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Single revoked tokens (logout), kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        VARCHAR(64) NOT NULL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    expires_at BIGINT      NOT NULL,
    revoked_at BIGINT      NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE INDEX revoked_tokens_revoked_at ON revoked_tokens (revoked_at);
