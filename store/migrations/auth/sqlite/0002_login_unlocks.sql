-- Operator unlocks of the login throttle (`shopctl users unlock`): every verifier follows this
-- table and clears the account's failures. `unlocked_at` is the database's clock, moved forward
-- on each unlock of the same email.
CREATE TABLE login_unlocks (
    email       VARCHAR(255) NOT NULL PRIMARY KEY,
    unlocked_at BIGINT       NOT NULL
);
CREATE INDEX login_unlocks_unlocked_at ON login_unlocks (unlocked_at);
