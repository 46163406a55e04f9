//! TLS to the databases (issue 26): an instance of `scripts/mariadb` refuses a client without TLS
//! (`require_secure_transport`), its replica replicates over TLS with the primary's certificate
//! checked, and the stack's own connections, opened from its config the way the services open
//! them, are encrypted.

use std::time::Duration;

use shopgate_core::config::{ensure_dev_key, Config, ConfigBuilder, DEV_KEY_FILE};
use shopgate_core::db::{connect_options, prepare_connection, Open};
use shopgate_e2e::mariadb::Topology;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};
use sqlx::{AnyConnection, Connection as _, Row as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_refuse_plaintext_and_replicate_over_tls() {
    let topology = Topology::start_shards("a").await;
    // The app user's own URL, without TLS: refused by the server (MariaDB answers a client that
    // require_secure_transport turns away with "access denied"); the same with TLS is let in.
    let url: MySqlConnectOptions = topology.url("a-primary").parse().unwrap();
    let plain = url.clone().ssl_mode(MySqlSslMode::Disabled);
    let refused = sqlx::MySqlConnection::connect_with(&plain).await.map(|_| ()).unwrap_err();
    let code = refused.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("28000"), "{refused}");
    let mut tls = sqlx::MySqlConnection::connect_with(&url).await.unwrap();
    let cipher: (String, String) =
        sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetch_one(&mut tls).await.unwrap();
    assert!(!cipher.1.is_empty(), "{cipher:?}");
    tls.close().await.unwrap();

    // The replica is attached over TLS and checks its primary's certificate.
    let replica = topology.root_over_socket("a-replica").await;
    let status = sqlx::query("SHOW SLAVE STATUS").fetch_one(&replica).await.unwrap();
    let field = |name: &str| status.try_get::<String, _>(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(field("Master_SSL_Allowed"), "Yes");
    assert_eq!(field("Master_SSL_Verify_Server_Cert"), "Yes");
    assert_eq!((field("Slave_IO_Running"), field("Slave_SQL_Running")), ("Yes".into(), "Yes".into()));
    // ... and catches up over it.
    let primary = topology.admin("a-primary").await;
    sqlx::query("CREATE TABLE tls_probe (id INT PRIMARY KEY)").execute(&primary).await.unwrap();
    sqlx::query("INSERT INTO tls_probe VALUES (26)").execute(&primary).await.unwrap();
    topology.wait_replica_caught_up("a", Duration::from_secs(10)).await;
    let got: i32 = sqlx::query_scalar("SELECT id FROM shop_shard_a.tls_probe").fetch_one(&replica).await.unwrap();
    assert_eq!(got, 26);
}

/// The auth database and shard a's primary and replica, as a config with the topology's URLs
/// names them (checked at load) and opened as the services open them: `Ssl_cipher` on each
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stacks_connections_are_encrypted() {
    let topology = Topology::start_shards("a").await;
    let dir = tempfile::tempdir().unwrap();
    ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
    let addr = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let path = dir.path().join("shop.toml");
    ConfigBuilder::new(addr(1), &[addr(2)]).shard("a", 0, "all", addr(3)).write(&path).unwrap();
    let mut env = topology.shard_overrides(5);
    env.push(("SHOP__VERIFIER__DATABASE_URL".into(), topology.url("auth").into()));
    let config = Config::load_with_env(&path, env).unwrap();
    let a = config.shard("a").unwrap();
    for (what, url) in
        [("auth", &config.verifier.database_url), ("a-primary", &a.primary), ("a-replica", a.replica.as_ref().unwrap())]
    {
        let (dialect, options) = connect_options(url, Open::Existing).unwrap();
        let mut conn = AnyConnection::connect_with(&options).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        prepare_connection(&mut conn, dialect).await.unwrap();
        let cipher: String =
            sqlx::query("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetch_one(&mut conn).await.unwrap().get(1);
        assert!(!cipher.is_empty(), "{what}: no TLS");
        conn.close().await.unwrap();
    }
}
