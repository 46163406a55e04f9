//! The caller's profile on their shard, created on request behind the write fence.

use shopgate_store::users;

use super::Shard;
use crate::auth::AuthUser;
use crate::error::ApiError;

/// Creates `user`'s profile unless it exists (true if this call created it), in a write
/// transaction behind the user's write fence.
pub(crate) async fn create(shard: &Shard<'_>, user: &AuthUser, now: i64) -> Result<bool, ApiError> {
    let mut tx = super::fence::begin(shard, user).await?;
    let created = users::create(&mut tx, user.id, &user.email, now).await?;
    if created {
        tx.commit().await?;
    }
    Ok(created)
}
