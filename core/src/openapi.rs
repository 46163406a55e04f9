//! The answers every part of the shop gives the same way, as reusable OpenAPI responses: the
//! verifier's and each backend's API descriptions refer to these by name, and nginx, in front of
//! both, gives the same bodies (`nginx/shopgate.conf.in`). Both descriptions register the same
//! definitions, so merging them keeps one copy.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, ToResponse};

use crate::ErrorBody;

/// Every public operation (method, path), as the contract and the README list them: the merged
/// description must describe exactly these (checked by shopctl's unit test and, as nginx serves
/// it, by the e2e test).
pub const PUBLIC_OPERATIONS: &[(&str, &str)] = &[
    ("post", "/auth/register"),
    ("post", "/auth/token"),
    ("get", "/auth/me"),
    ("post", "/auth/logout"),
    ("post", "/auth/change-password"),
    ("get", "/auth/jwks.json"),
    ("get", "/api/products"),
    ("get", "/api/products/{id}"),
    ("get", "/api/categories"),
    ("post", "/api/orders"),
    ("get", "/api/orders"),
    ("get", "/api/orders/{id}"),
    ("post", "/api/orders/{id}/cancel"),
    ("get", "/api/users/me"),
    ("post", "/api/users"),
];

/// The name of the bearer security scheme, as operations refer to it (`security(("bearer" = []))`).
pub const BEARER: &str = "bearer";

/// Adds the bearer (JWT) security scheme operations refer to as [`BEARER`].
pub struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `access_token` from `POST /auth/token`, as `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the 429 of the limits at the door (nginx's `limit_req` and `limit_conn`, per client
/// address) to every operation: any request through nginx may get it. Registers
/// [`TooManyRequests`] as the response it refers to.
pub struct DoorLimits;

impl Modify for DoorLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, RefOr};
        let (name, response) = TooManyRequests::response();
        openapi.components.get_or_insert_with(Default::default).responses.insert(name.to_owned(), response);
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .entry("429".to_owned())
                    .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

/// 400: the request does not fit the operation (malformed JSON, a wrong type, a missing or
/// unknown field, a bad query or header value), or nginx could not parse it.
#[derive(ToResponse)]
#[response(
    description = "The request does not fit the operation: malformed JSON (`malformed_json`), a wrong type, a missing or unknown field (`invalid_body`), a bad query parameter (`invalid_query`) or header value; also nginx's answer to a request it cannot parse (`bad_request`).",
    example = json!({"error": "invalid_body", "message": "items: invalid type: string \"x\", expected a sequence"})
)]
pub struct BadRequest(pub ErrorBody);

/// 401 with one `WWW-Authenticate`.
#[derive(ToResponse)]
#[response(
    description = "No bearer token, or one that is malformed, forged, expired or revoked. Always carries exactly one `WWW-Authenticate: Bearer error=\"invalid_token\"`.",
    headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"`")),
    example = json!({"error": "invalid_token", "message": "missing, malformed, expired or revoked bearer token"})
)]
pub struct Unauthorized(pub ErrorBody);

/// 404.
#[derive(ToResponse)]
#[response(
    description = "No such resource, or not the caller's (someone else's order is 404 too).",
    example = json!({"error": "not_found", "message": "no such resource"})
)]
pub struct NotFound(pub ErrorBody);

/// 413 (nginx's `client_max_body_size`, and each service's own limit).
#[derive(ToResponse)]
#[response(
    description = "The request body is over 1 MiB.",
    example = json!({"error": "payload_too_large", "message": "request body is over 1 MiB"})
)]
pub struct PayloadTooLarge(pub ErrorBody);

/// 415.
#[derive(ToResponse)]
#[response(
    description = "The body is not sent as `application/json`.",
    example = json!({"error": "unsupported_media_type", "message": "send the body as JSON with Content-Type: application/json"})
)]
pub struct UnsupportedMediaType(pub ErrorBody);

/// 421 (a backend reached for a user of another shard; nginx's routing never does this).
#[derive(ToResponse)]
#[response(
    description = "This backend does not serve the caller's shard; nothing was read or written. nginx routes by the same shard map, so through the gateway this means the map changed under the request.",
    example = json!({"error": "misdirected", "message": "this shard does not serve user 12; the request was routed to the wrong backend"})
)]
pub struct Misdirected(pub ErrorBody);

/// 429 with `Retry-After`.
#[derive(ToResponse)]
#[response(
    description = "Too many requests: from this client address at the door (`too_many_requests`, nginx's limits), failed logins for this account or address or registrations from this address (the verifier's), or this user's share of a shard's backend in use (`too_many_requests`); wait `Retry-After` seconds.",
    headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
    example = json!({"error": "too_many_requests", "message": "too many failed attempts; wait and try again"})
)]
pub struct TooManyRequests(pub ErrorBody);

/// 503.
#[derive(ToResponse)]
#[response(
    description = "A service or database behind the gateway is unavailable or saturated; retry shortly. Every 503 carries `Retry-After`: nginx's own answer and the auth database unavailable (`unavailable`), a saturated password pool (`busy`), a shard's database unavailable (`shard_unavailable`) or the shard at capacity (`overloaded`).",
    headers(("Retry-After" = u64, description = "Seconds to wait before trying again")),
    example = json!({"error": "unavailable", "message": "a service behind the gateway is unavailable; retry shortly"})
)]
pub struct Unavailable(pub ErrorBody);
