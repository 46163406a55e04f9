-- MariaDB's migration of this number grants the backends' reader what it may read. SQLite has no
-- users: a file's readers are whoever its mode lets in.
SELECT 1;
