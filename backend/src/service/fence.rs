//! A request's write transaction, started behind its user's write fence
//! ([`shopgate_store::fence`] says what the fence is and why every write reads it first).

use sqlx::{Any, Transaction};

use super::Shard;
use crate::auth::AuthUser;
use crate::error::ApiError;

/// A write transaction for `user`'s rows, started behind their bucket's fence: 503 `moving`, with
/// nothing written, if the map pauses their writes or this shard's fence is closed for them.
pub(crate) async fn begin(shard: &Shard<'_>, user: &AuthUser) -> Result<Transaction<'static, Any>, ApiError> {
    user.may_write()?;
    let mut tx = shard.db.begin_write().await?;
    if shopgate_store::fence::is_open(&mut tx, shard.db.dialect(), user.id).await? {
        Ok(tx)
    } else {
        Err(ApiError::Moving)
    }
}
