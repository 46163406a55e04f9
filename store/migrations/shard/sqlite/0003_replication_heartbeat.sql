-- The primary stamps this row every second; a replica's copy tells how far behind it is, the same
-- way on every engine (the pt-heartbeat approach) and without replication-admin privileges.
CREATE TABLE replication_heartbeat (
    id      INTEGER PRIMARY KEY,
    beat_ms INTEGER NOT NULL
);

INSERT INTO replication_heartbeat (id, beat_ms) VALUES (1, 0);
