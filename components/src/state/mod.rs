//! State stores: one trait, four implementations, and the key-prefix rules that
//! Dapr applies before a key reaches a store.
//!
//! Semantics every store honours:
//! - a write or delete carrying an ETag succeeds only if the stored ETag matches
//!   (a missing key never matches);
//! - a write without an ETag under `first-write` only creates the key;
//! - `ttlInSeconds` > 0 expires the key; -1 (or 0) keeps it forever; expired keys
//!   read as absent;
//! - a transaction applies all of its operations or none.

pub mod memory;
pub mod postgres;
pub mod query;
pub mod redis;
pub mod sqlite;

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;

/// A capability a store reports in the metadata API.
pub const ETAG: &str = "ETAG";
/// Multi-operation transactions.
pub const TRANSACTIONAL: &str = "TRANSACTIONAL";
/// `ttlInSeconds` support.
pub const TTL: &str = "TTL";
/// The state query API.
pub const QUERY_API: &str = "QUERY_API";

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The bytes as written.
    pub data: Bytes,
    /// The current ETag.
    pub etag: String,
    /// When the key expires, if it does.
    pub expires_at: Option<SystemTime>,
}

/// Write concurrency mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// Last writer wins (the default).
    #[default]
    LastWrite,
    /// Writers without the current ETag cannot overwrite an existing key.
    FirstWrite,
}

/// One key to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRequest {
    /// The full (prefixed) key.
    pub key: String,
    /// The bytes to store.
    pub value: Bytes,
    /// Expected current ETag, if any.
    pub etag: Option<String>,
    /// Concurrency mode.
    pub concurrency: Concurrency,
    /// Time to live; None keeps the key forever.
    pub ttl: Option<Duration>,
}

/// One key to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    /// The full (prefixed) key.
    pub key: String,
    /// Expected current ETag, if any.
    pub etag: Option<String>,
}

/// One step of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Create or replace a key.
    Upsert(SetRequest),
    /// Remove a key.
    Delete(DeleteRequest),
}

pub use crate::Error as StoreError;

/// Result of store calls.
pub type StoreResult<T> = crate::Result<T>;

/// A state store implementation.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Capabilities, as reported by the metadata API.
    fn features(&self) -> &'static [&'static str];

    /// Reads one key; None when absent or expired.
    async fn get(&self, key: &str) -> StoreResult<Option<Item>>;

    /// Writes one key.
    async fn set(&self, req: SetRequest) -> StoreResult<()>;

    /// Deletes one key; deleting an absent key without an ETag succeeds.
    async fn delete(&self, req: DeleteRequest) -> StoreResult<()>;

    /// Applies all operations atomically.
    async fn transact(&self, ops: Vec<Operation>) -> StoreResult<()>;

    /// Every live item whose key starts with `prefix`, for queries; None
    /// when the store cannot list its keys (it has no `QUERY_API`). A store
    /// may leave out items that cannot match `filter`, and may return
    /// others: the query engine applies the filter itself.
    async fn scan(
        &self,
        prefix: &str,
        filter: Option<&query::Filter>,
    ) -> StoreResult<Option<Vec<(String, Item)>>> {
        let _ = (prefix, filter);
        Ok(None)
    }

    /// Reads many keys; the default reads them one by one.
    async fn bulk_get(&self, keys: &[String]) -> Vec<StoreResult<Option<Item>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await);
        }
        out
    }
}

/// How keys are prefixed before they reach the store (component metadata `keyPrefix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPrefix {
    /// `<app-id>||key` (the default).
    AppId,
    /// `<component name>||key`.
    Name,
    /// `<namespace>.<app-id>||key`.
    Namespace,
    /// The key as given.
    None,
    /// `<literal>||key`.
    Custom(String),
}

/// Dapr's separator between prefix and key; not allowed inside user keys.
pub const SEPARATOR: &str = "||";

impl KeyPrefix {
    /// Reads the `keyPrefix` metadata value.
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") => Self::AppId,
            Some(v) if v.eq_ignore_ascii_case("appid") => Self::AppId,
            Some(v) if v.eq_ignore_ascii_case("name") => Self::Name,
            Some(v) if v.eq_ignore_ascii_case("namespace") => Self::Namespace,
            Some(v) if v.eq_ignore_ascii_case("none") => Self::None,
            Some(v) => Self::Custom(v.to_string()),
        }
    }

    /// The prefix string for a given app, store and namespace (None for `none`).
    pub fn prefix(&self, app_id: &str, store: &str, namespace: Option<&str>) -> Option<String> {
        match self {
            Self::AppId => Some(app_id.to_string()),
            Self::Name => Some(store.to_string()),
            Self::Namespace => Some(match namespace {
                Some(ns) => format!("{ns}.{app_id}"),
                None => app_id.to_string(),
            }),
            Self::None => None,
            Self::Custom(p) => Some(p.clone()),
        }
    }
}

/// Strips everything up to the first separator, as Dapr does when returning keys.
pub fn original_key(stored: &str) -> &str {
    stored.split_once(SEPARATOR).map_or(stored, |(_, k)| k)
}

/// The largest `ttlInSeconds` accepted (about 68 years), as Dapr bounds it. Every
/// store can add it to the current time and keep the result in milliseconds.
pub const MAX_TTL_SECONDS: i64 = i32::MAX as i64;

/// Parses `ttlInSeconds` metadata.
pub fn parse_ttl(metadata: &BTreeMap<String, String>) -> Result<Option<Duration>, String> {
    let Some(raw) = metadata.get("ttlInSeconds") else {
        return Ok(None);
    };
    let secs: i64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("ttlInSeconds {raw:?} is not a whole number of seconds"))?;
    match secs {
        s if s < -1 => Err(format!("ttlInSeconds must be -1 or more, got {s}")),
        s if s > MAX_TTL_SECONDS => Err(format!("ttlInSeconds must be at most {MAX_TTL_SECONDS}, got {s}")),
        s => Ok(u64::try_from(s).ok().filter(|&s| s > 0).map(Duration::from_secs)),
    }
}

/// When a key written at `now` with `ttl` expires. Saturates instead of
/// overflowing, so no TTL can make a store's arithmetic panic.
pub fn expiry(now: SystemTime, ttl: Duration) -> SystemTime {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(MAX_TTL_SECONDS as u64)))
        .unwrap_or(now)
}

/// Milliseconds since the Unix epoch, saturating at the ends of `i64`.
pub fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh opaque ETag (random 128 bits, hex).
pub fn new_etag() -> String {
    let mut out = String::with_capacity(32);
    crate::push_hex(&mut out, crate::random_u128(), 32);
    out
}

/// Formats a time as RFC 3339 in UTC (`2024-01-02T03:04:05Z`), as Dapr reports `ttlExpireTime`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::civil_from_days(days);
    // Written digit by digit: events carry one each, and `format!` is slow.
    let mut out = String::with_capacity(20);
    let mut digits = |n: i64, width: u32, sep: char| {
        for i in (0..width).rev() {
            let d = (n / 10i64.pow(i)).rem_euclid(10) as u8;
            out.push(char::from(b'0' + d));
        }
        out.push(sep);
    };
    // Past year 9999 (a huge TTL) every digit is written, as `{:04}` would.
    digits(year, year.max(1).ilog10().max(3) + 1, '-');
    digits(i64::from(month), 2, '-');
    digits(i64::from(day), 2, 'T');
    digits(rem / 3600, 2, ':');
    digits((rem % 3600) / 60, 2, ':');
    digits(rem % 60, 2, 'Z');
    out
}

pub(crate) use crate::lock;
pub use crate::{meta, parse_duration};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_strategies() {
        assert_eq!(
            KeyPrefix::parse(None).prefix("app", "store", None).as_deref(),
            Some("app")
        );
        assert_eq!(
            KeyPrefix::parse(Some("name"))
                .prefix("app", "store", None)
                .as_deref(),
            Some("store")
        );
        assert_eq!(
            KeyPrefix::parse(Some("namespace"))
                .prefix("app", "s", Some("ns"))
                .as_deref(),
            Some("ns.app")
        );
        assert_eq!(
            KeyPrefix::parse(Some("namespace"))
                .prefix("app", "s", None)
                .as_deref(),
            Some("app")
        );
        assert_eq!(KeyPrefix::parse(Some("none")).prefix("app", "s", None), None);
        assert_eq!(
            KeyPrefix::parse(Some("shared"))
                .prefix("app", "s", None)
                .as_deref(),
            Some("shared")
        );
        assert_eq!(original_key("app||k||x"), "k||x");
        assert_eq!(original_key("plain"), "plain");
    }

    #[test]
    fn ttl_metadata() {
        let m = |v: &str| BTreeMap::from([("ttlInSeconds".to_string(), v.to_string())]);
        assert_eq!(parse_ttl(&m("10")), Ok(Some(Duration::from_secs(10))));
        assert_eq!(parse_ttl(&m("-1")), Ok(None));
        assert_eq!(parse_ttl(&m("0")), Ok(None));
        assert!(parse_ttl(&m("-5")).is_err());
        assert!(parse_ttl(&m("ten")).is_err());
        assert_eq!(
            parse_ttl(&m("2147483647")),
            Ok(Some(Duration::from_secs(2_147_483_647)))
        );
        for huge in ["2147483648", "10000000000000000", "9223372036854775807"] {
            assert!(parse_ttl(&m(huge)).is_err(), "{huge}");
        }
        assert!(parse_ttl(&m("9223372036854775808")).is_err());
        assert_eq!(parse_ttl(&BTreeMap::new()), Ok(None));
    }

    #[test]
    fn time_arithmetic_saturates() {
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        assert!(expiry(far, Duration::MAX) >= far);
        let now = SystemTime::now();
        let max = Duration::from_secs(MAX_TTL_SECONDS as u64);
        assert_eq!(expiry(now, max), now + max);
        assert!(unix_millis(expiry(now, max)) > unix_millis(now));
        assert_eq!(unix_millis(UNIX_EPOCH), 0);
    }

    #[test]
    fn etags_are_unique_and_times_format() {
        let a = new_etag();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_etag());
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let far = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000_000);
        assert_eq!(rfc3339(far), "33658-09-27T01:46:40Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_251_199)),
            "2024-02-29T23:59:59Z"
        );
    }
}
