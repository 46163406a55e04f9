//! Input parsed into types at the edge: once a value has one of these types it is valid.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The `Idempotency-Key` header: 1-128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyKey(String);

impl IdempotencyKey {
    pub(crate) const HEADER: &'static str = "idempotency-key";
    pub(crate) const MAX_LEN: usize = 128;

    /// `None` when the header is absent; 400 when it is malformed or sent twice.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, ApiError> {
        let mut values = headers.get_all(Self::HEADER).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "send one Idempotency-Key header, not several",
            ));
        }
        Self::parse(value.as_bytes()).map(Some)
    }

    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        // An empty header is not "no key": a client that meant one but sent nothing would get a
        // second order on its retry. Said apart, since curl's `-H 'Idempotency-Key:'` sends no
        // header at all and `-H 'Idempotency-Key;'` an empty one.
        if raw.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key is empty: send 1 to {} visible ASCII characters, or no Idempotency-Key header",
                    Self::MAX_LEN
                ),
            ));
        }
        if raw.len() > Self::MAX_LEN || !raw.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {} visible ASCII characters", Self::MAX_LEN),
            ));
        }
        // All bytes are ASCII, so this cannot fail.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an order asks for: products and quantities, merged per product and sorted by product id.
/// Prices are not part of it: they come from the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OrderLines(Vec<(i64, i64)>);

impl OrderLines {
    pub(crate) const MAX_ITEMS: usize = 100;
    /// Per product, after merging: splitting a product over several lines does not raise it.
    pub(crate) const MAX_QUANTITY: i64 = 1000;
    /// Units in the whole order.
    pub(crate) const MAX_UNITS: i64 = 10_000;
    /// The order's total (the store checks it once prices are known): $10,000,000.
    pub(crate) const MAX_TOTAL_CENTS: i64 = 1_000_000_000;

    /// `items` as sent: (product_id, quantity). 1-100 items, each quantity 1-1000; a product
    /// listed twice is one line with the quantities added, and that sum is held to the same 1000;
    /// the order as a whole to [`OrderLines::MAX_UNITS`].
    pub fn parse(items: impl IntoIterator<Item = (i64, i64)>) -> Result<Self, ApiError> {
        let items: Vec<(i64, i64)> = items.into_iter().collect();
        if items.is_empty() || items.len() > Self::MAX_ITEMS {
            return Err(ApiError::unprocessable(
                "invalid_items",
                format!("an order needs 1 to {} items, got {}", Self::MAX_ITEMS, items.len()),
            ));
        }
        let mut merged: BTreeMap<i64, i64> = BTreeMap::new();
        for (product_id, quantity) in items {
            if !(1..=Self::MAX_QUANTITY).contains(&quantity) {
                return Err(ApiError::unprocessable(
                    "invalid_quantity",
                    format!("quantity of product {product_id} must be 1 to {}, got {quantity}", Self::MAX_QUANTITY),
                ));
            }
            if product_id < 1 {
                return Err(unknown_product(product_id));
            }
            // At most 100 * 1000: no overflow.
            *merged.entry(product_id).or_default() += quantity;
        }
        if let Some((product_id, quantity)) = merged.iter().find(|(_, q)| **q > Self::MAX_QUANTITY) {
            return Err(ApiError::unprocessable(
                "invalid_quantity",
                format!(
                    "quantity of product {product_id} must be at most {} in all, got {quantity}",
                    Self::MAX_QUANTITY
                ),
            ));
        }
        let units: i64 = merged.values().sum();
        if units > Self::MAX_UNITS {
            return Err(ApiError::unprocessable(
                "too_many_units",
                format!("an order may hold at most {} units in all, got {units}", Self::MAX_UNITS),
            ));
        }
        Ok(Self(merged.into_iter().collect()))
    }

    pub(crate) fn lines(&self) -> &[(i64, i64)] {
        &self.0
    }

    pub(crate) fn product_ids(&self) -> Vec<i64> {
        self.0.iter().map(|(p, _)| *p).collect()
    }

    /// A digest of the merged request: a retry under the same Idempotency-Key must have the same.
    pub(crate) fn fingerprint(&self) -> String {
        let mut canonical = String::from("v1");
        for (p, q) in &self.0 {
            let _ = write!(canonical, ";{p}x{q}");
        }
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

pub(crate) fn unknown_product(product_id: i64) -> ApiError {
    ApiError::unprocessable("unknown_product", format!("product {product_id} does not exist"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys() {
        assert_eq!(IdempotencyKey::parse(b"abc-123_~!").unwrap().as_str(), "abc-123_~!");
        assert!(IdempotencyKey::parse(&[b'k'; 128]).is_ok());
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", b"tab\t", &[b'k'; 129]] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lines_merge_and_fingerprint_ignores_order_and_splitting() {
        let a = OrderLines::parse([(2, 1), (1, 3), (2, 2)]).unwrap();
        assert_eq!(a.lines(), &[(1, 3), (2, 3)]);
        let b = OrderLines::parse([(1, 3), (2, 3)]).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), OrderLines::parse([(1, 3), (2, 4)]).unwrap().fingerprint());
        assert_eq!(a.fingerprint().len(), 64);
    }

    #[test]
    fn lines_limits() {
        assert!(OrderLines::parse([]).is_err());
        assert!(OrderLines::parse([(1, 0)]).is_err());
        assert!(OrderLines::parse([(1, -1)]).is_err());
        assert!(OrderLines::parse([(1, 1001)]).is_err());
        assert!(OrderLines::parse([(0, 1)]).is_err());
        assert!(OrderLines::parse((1..=101).map(|p| (p, 1))).is_err());
        assert!(OrderLines::parse((1..=100).map(|p| (p, 100))).is_ok());
        assert!(OrderLines::parse((1..=10).map(|p| (p, 1000))).is_ok());
        // Split lines are capped once merged, and the order as a whole.
        assert!(OrderLines::parse([(1, 600), (1, 400)]).is_ok());
        assert!(OrderLines::parse([(1, 600), (1, 401)]).is_err());
        assert!(OrderLines::parse((1..=100).map(|_| (7, 1000))).is_err());
        assert!(OrderLines::parse((1..=11).map(|p| (p, 1000))).is_err());
    }
}
