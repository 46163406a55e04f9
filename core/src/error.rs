//! The one error body every service answers with: `{"error": code, "message": text}`.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable `error` code and a human `message`. Never carries internals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"error": "not_found", "message": "no such resource"})))]
pub struct ErrorBody {
    /// A stable, machine-readable code, e.g. `invalid_token`, `not_found`, `invalid_body`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error: error.into(), message: message.into() }
    }
}
