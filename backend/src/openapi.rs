//! The shop API's OpenAPI 3 description, generated from the handlers' `#[utoipa::path]`
//! attributes and the request and response types. `shopctl openapi` merges it with the auth
//! API's (`shopgate_verifier::openapi`) into the one document nginx serves at `/openapi.json`.
//!
//! Statuses are the ones a client of the gateway can get: the handler's own, plus nginx's in front
//! of it (401 from the token check, 413 over 1 MiB, 503 when the verifier or the shard is down).

use serde::Serialize;
use shopgate_core::openapi::{
    BadRequest, BearerScheme, Misdirected, NotFound, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use shopgate_core::ErrorBody;
use utoipa::{OpenApi, ToSchema};

use crate::routes::{catalog, orders, users};
use crate::store::catalog::{Category, Product};
use crate::store::orders::Order;

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
    modifiers(&BearerScheme),
    tags(
        (name = "catalog", description = "Products and categories, the same on every shard."),
        (name = "orders", description = "The caller's own orders."),
        (name = "users", description = "The caller's profile on their shard."),
    ),
)]
pub struct ApiDoc;

/// `GET /api/products`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProductList {
    pub(crate) products: Vec<Product>,
}

/// `GET /api/categories`.
#[derive(Serialize, ToSchema)]
pub(crate) struct CategoryList {
    pub(crate) categories: Vec<Category>,
}

/// `GET /api/orders`: newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrderPage {
    pub orders: Vec<Order>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub(crate) next_before: Option<i64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
