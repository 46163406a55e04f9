//! The auth API under `/auth/`: one file per action.

pub(crate) mod change_password;
pub mod jwks;
pub(crate) mod logout;
pub mod me;
pub mod register;
pub mod token;

use serde::Serialize;
use shopgate_core::time::rfc3339;

use crate::error::ApiError;
use crate::users::User;

/// A user as the API shows it: never the hash.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": 12, "email": "ann@example.com", "is_active": true, "is_admin": false, "created_at": "2026-01-02T03:04:05Z"}))]
pub(crate) struct UserView {
    /// 1 to 2^53-1; the same id on the user's shard.
    #[schema(minimum = 1, maximum = 9007199254740991_u64)]
    pub id: u64,
    #[schema(format = Email)]
    pub email: String,
    pub is_active: bool,
    pub(crate) is_admin: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.get(),
            email: u.email.clone(),
            is_active: u.is_active,
            is_admin: u.is_admin,
            created_at: rfc3339(u.created_at),
        }
    }
}

/// Parses a JSON body, which must be an object: syntax errors are 400 `malformed_json`; wrong
/// types (an array for the object too) and missing fields 400 `invalid_body`.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map(|shopgate_core::json::ObjectOnly(v)| v).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::Invalid { code: "invalid_body", message: format!("invalid request body: {e}") }
        }
        _ => ApiError::Invalid { code: "malformed_json", message: format!("request body is not valid JSON: {e}") },
    })
}
