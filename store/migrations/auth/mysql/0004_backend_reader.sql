-- What a backend reads of the auth database, granted to the role `shop_auth_reader`: the shard
-- map, revocations and each account's cut-off, never a password hash or an email, never a write.
-- The role is the database set-up's (scripts/mariadb, compose/auth-users.sql), made before the
-- first `shopctl migrate` and given to the backends' user; the grants are the schema's, here,
-- because they name its tables and columns. The migrator grants them (it holds its database's
-- rights WITH GRANT OPTION).
GRANT SELECT ON shard_map TO shop_auth_reader;
GRANT SELECT (jti, user_id, expires_at, revoked_at) ON revoked_tokens TO shop_auth_reader;
GRANT SELECT (id, tokens_valid_after) ON users TO shop_auth_reader;
