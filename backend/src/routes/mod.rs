//! HTTP handlers, one file per resource: extract, parse, call one store function, respond.
//! The router that ties them together is [`crate::router`].

pub mod catalog;
pub(crate) mod health;
pub mod orders;
pub mod users;

use crate::error::ApiError;

/// Any path we do not serve: 404 JSON.
pub(crate) async fn no_route() -> ApiError {
    ApiError::NotFound("no such route")
}

/// A path we serve, with a method we do not: 405 JSON.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
