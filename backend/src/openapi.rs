//! The shop API's OpenAPI 3 description, generated from the handlers' `#[utoipa::path]`
//! attributes and the request and response types, and committed as `backend/openapi.json` (a test
//! here fails when the file is not what the handlers say; `SHOPGATE_BLESS=1 cargo test -p
//! shopgate-backend openapi` rewrites it). `shopctl openapi` merges that file with the auth API's
//! (`shopgate_verifier::openapi`) into the one document nginx serves at `/openapi.json`, without
//! depending on the backend.
//!
//! Statuses are the ones a client of the gateway can get: the handler's own, plus nginx's in front
//! of it (401 from the token check, 413 over 1 MiB, 503 when the verifier or the shard is down).

use shopgate_core::openapi::{
    BadRequest, BearerScheme, DoorLimits, Misdirected, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
    UnsupportedMediaType,
};
use shopgate_core::ErrorBody;
use utoipa::OpenApi;

use crate::routes::catalog::{self, CategoryList, ProductList};
use crate::routes::orders::{self, OrderPage};
use crate::routes::users;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shopgate shop API",
        description = "The catalog, orders and profile (one backend per shard, behind nginx), under `/api/` (also `/backend/api/`).",
    ),
    paths(
        catalog::list_products,
        catalog::show_product,
        catalog::list_categories,
        orders::create,
        orders::list,
        orders::show,
        orders::cancel,
        users::me,
        users::create,
    ),
    components(
        schemas(ErrorBody, ProductList, CategoryList, OrderPage),
        responses(BadRequest, Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType, Misdirected, Unavailable),
    ),
    modifiers(&BearerScheme, &DoorLimits),
    tags(
        (name = "catalog", description = "Products and categories, the same on every shard."),
        (name = "orders", description = "The caller's own orders."),
        (name = "users", description = "The caller's profile on their shard."),
    ),
)]
pub struct ApiDoc;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The committed description, as pretty JSON with a final newline.
    fn generated() -> String {
        serde_json::to_string_pretty(&ApiDoc::openapi()).unwrap() + "\n"
    }

    #[test]
    fn the_committed_description_is_what_the_handlers_say() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
        let now = generated();
        if std::env::var_os("SHOPGATE_BLESS").is_some() {
            std::fs::write(&path, &now).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == now,
            "backend/openapi.json differs from the handlers' description: run \
             `SHOPGATE_BLESS=1 cargo test -p shopgate-backend openapi` and commit the file"
        );
    }

    #[test]
    fn every_shop_operation_is_described() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        // The catalog is public (CONTRACT §4): no token, so no 401.
        for (path, method) in [("/api/products", "get"), ("/api/products/{id}", "get"), ("/api/categories", "get")] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(op["security"].is_null() && op["responses"]["401"].is_null(), "{method} {path}: public");
        }
        for (path, method) in [
            ("/api/orders", "post"),
            ("/api/orders", "get"),
            ("/api/orders/{id}", "get"),
            ("/api/orders/{id}/cancel", "post"),
            ("/api/users/me", "get"),
            ("/api/users", "post"),
        ] {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(op["responses"]["401"].is_object(), "{method} {path}: no 401");
            assert_eq!(
                op["security"][0][shopgate_core::openapi::BEARER],
                serde_json::json!([]),
                "{method} {path}: no bearer"
            );
        }
    }
}
