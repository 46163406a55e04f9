//! What every shopgate part shares, kept in one place so the parts cannot drift apart:
//! the token format and its checks ([`token`]), the shard map and the routing function that
//! nginx's generated map must agree with ([`shardmap`]), the stack's typed config ([`config`]),
//! the newtypes input is parsed into at the edge ([`ids`]), the JSON error body ([`error`]) and the
//! times nginx's config and the services must agree on ([`timeouts`]).

#[cfg(feature = "auth-db")]
pub mod auth_db;
#[cfg(feature = "certs")]
pub mod certs;
pub mod config;
#[cfg(feature = "control")]
pub mod control;
#[cfg(feature = "db")]
pub mod db;
pub mod error;
pub mod files;
#[cfg(feature = "http")]
pub mod http;
pub mod ids;
pub mod json;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "openapi")]
pub mod openapi;
#[cfg(feature = "revocation")]
pub mod revocation;
#[cfg(feature = "service")]
pub mod service;
pub mod shardmap;
pub mod time;
pub mod timeouts;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;

pub use error::ErrorBody;
pub use ids::{Email, ShardName, UserId};
pub use shardmap::ShardMap;
