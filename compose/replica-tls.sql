-- Run once by the image's entrypoint on a new replica, after it has attached the replica to its
-- primary (MARIADB_MASTER_HOST) without TLS: the primary refuses plaintext
-- (require_secure_transport), so the replica connects over TLS and checks that the primary's
-- certificate is the databases' CA's and names the host it dials.
STOP REPLICA;
CHANGE MASTER TO MASTER_SSL = 1, MASTER_SSL_CA = '/etc/mysql/tls/ca.crt', MASTER_SSL_VERIFY_SERVER_CERT = 1;
START REPLICA;
