//! The whole public API as one OpenAPI 3 document: the auth API (the verifier's
//! `shopgate_verifier::openapi`) and the shop API (each backend's, committed as
//! `backend/openapi.json`, which a backend test keeps equal to its handlers'), both generated
//! from the handlers with utoipa and merged here. `shopctl openapi` prints it;
//! `shopctl nginx render --output FILE` writes it beside the config, and nginx serves it at
//! `/openapi.json`.

use serde_json::Value;
use utoipa::openapi::{InfoBuilder, OpenApi as Document};
use utoipa::OpenApi as _;

/// The file name `shopctl nginx render --output` writes beside the config.
pub(crate) const FILE_NAME: &str = "openapi.json";

const DESCRIPTION: &str = "shopgate's public API, through its gateway (nginx).\n\n\
- **Auth** (`/auth/…`, also `/authentication/auth/…`): accounts and tokens, served by the verifier.\n\
- **Shop** (`/api/…`, also `/backend/api/…`): catalog, orders and profile, served by the user's shard. \
Every `/api` operation needs `Authorization: Bearer <token>` (from `POST /auth/token`); without a good one \
nginx answers 401 with one `WWW-Authenticate: Bearer error=\"invalid_token\"` before any backend sees it.\n\n\
Every error is JSON `{\"error\": code, \"message\": text}` (the token endpoint's also carry `error_description`). \
A path with a method it does not have answers 405 with `Allow`; an unknown path 404; a body over 1 MiB 413; \
a service that is down 503 with `Retry-After`. `POST /api/orders` takes an optional `Idempotency-Key`: \
a retry under the same key returns the same order, never a second one.";

/// The shop API's description, as the backend's handlers generate it.
const SHOP_API: &str = include_str!("../../backend/openapi.json");

/// The merged document.
pub fn document() -> Document {
    let mut doc = shopgate_verifier::openapi::ApiDoc::openapi();
    // The file is checked in the backend's tests to be a description utoipa wrote; one that does
    // not parse (a bad merge) leaves the shop's half out, and shopctl's own test fails.
    if let Ok(shop) = serde_json::from_str::<Document>(SHOP_API) {
        doc.merge(shop);
    }
    doc.info =
        InfoBuilder::new().title("shopgate").version(env!("CARGO_PKG_VERSION")).description(Some(DESCRIPTION)).build();
    doc
}

/// The merged document as pretty JSON, with what utoipa cannot say added: the headers every
/// 401 and 429 carries are marked required.
pub(crate) fn to_json() -> String {
    let mut doc = serde_json::to_value(document()).unwrap_or(Value::Null);
    for (response, header) in [("Unauthorized", "WWW-Authenticate"), ("TooManyRequests", "Retry-After")] {
        if let Some(h) = doc.pointer_mut(&format!("/components/responses/{response}/headers/{header}")) {
            h["required"] = Value::Bool(true);
        }
    }
    // Serialising a serde_json::Value cannot fail.
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use shopgate_core::openapi::PUBLIC_OPERATIONS;

    #[test]
    fn the_merged_document_has_every_operation_and_resolves_every_reference() {
        let text = to_json();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        let described: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(described, PUBLIC_OPERATIONS.len(), "{:?}", paths.keys().collect::<Vec<_>>());
        for (method, path) in PUBLIC_OPERATIONS {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            if op["security"].is_array() {
                assert!(op["responses"]["401"].is_object(), "{method} {path} needs a token but has no 401");
            }
        }
        // Every $ref points at something that exists.
        for (i, _) in text.match_indices("\"$ref\": \"#/") {
            let target = &text[i + 10..];
            let target = &target[..target.find('"').unwrap()];
            assert!(doc.pointer(target).is_some(), "dangling {target}");
        }
        assert_eq!(doc["components"]["responses"]["Unauthorized"]["headers"]["WWW-Authenticate"]["required"], true);
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    }
}
