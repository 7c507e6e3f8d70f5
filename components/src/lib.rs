//! The building blocks' implementations, as Dapr's components-contrib holds
//! them: one module per block, each with the block's trait (its contract)
//! and one file per implementation, and one [`registry`] that builds a
//! component from its `type`, `version` and metadata.
//!
//! - [`state`]: key/value stores with ETags, TTLs and transactions.
//! - [`secretstores`]: read-only secret sources.
//! - [`pubsub`]: brokers that publish and deliver messages at least once.
//! - [`lock`]: leases on named resources, held by one owner at a time.
//! - [`configuration`]: versioned items, read and watched for changes.
//!
//! Nothing here knows HTTP or gRPC: the sidecar maps [`Error`] to Dapr's
//! error codes once.

pub mod bindings;
pub mod configuration;
pub mod http_client;
mod https;
pub mod lock;
mod pg_conn;
mod pg_tls;
pub mod pubsub;
mod redis_conn;
pub mod registry;
pub mod secretstores;
pub mod state;

pub use https::native_roots;

use std::{
    collections::BTreeMap,
    hash::{BuildHasher, Hasher},
    time::{SystemTime, UNIX_EPOCH},
};

pub use daprs_api::contract::parse_duration;

/// Component metadata after templates, `envRef`s and `secretKeyRef`s are resolved.
pub type Metadata = BTreeMap<String, String>;

/// What went wrong inside a component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The ETag given does not match the stored one (or the key is absent).
    #[error("possible etag mismatch. error from state store: {0}")]
    EtagMismatch(String),
    /// The ETag given is not of this store's form.
    #[error("invalid etag value: {0}")]
    EtagInvalid(String),
    /// The request asks for something the component cannot do.
    #[error("{0}")]
    Invalid(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The backing server or file failed; the call may succeed if repeated.
    #[error("{0}")]
    Backend(String),
    /// The component is closed (shut down or replaced).
    #[error("component is closed")]
    Closed,
}

/// Result of component calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Looks a metadata key up case-insensitively, as Dapr's components do; an
/// empty value counts as absent.
pub fn meta<'a>(metadata: &'a Metadata, key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `a` and `b` (named `a_name` and `b_name`), which come together or not at
/// all, as a certificate and its key do.
pub fn both_or_neither<T>(
    a: Option<T>,
    b: Option<T>,
    a_name: &str,
    b_name: &str,
) -> Result<Option<(T, T)>, String> {
    match (a, b) {
        (None, None) => Ok(None),
        (Some(a), Some(b)) => Ok(Some((a, b))),
        _ => Err(format!("{a_name} and {b_name} go together: give both or neither")),
    }
}

/// Metadata keys `a` and `b`, which come together or not at all.
pub fn meta_pair<'a>(metadata: &'a Metadata, a: &str, b: &str) -> Result<Option<(&'a str, &'a str)>, String> {
    both_or_neither(meta(metadata, a), meta(metadata, b), a, b)
}

/// A metadata value parsed as a number, or the default when absent.
pub fn meta_num<T: std::str::FromStr>(metadata: &Metadata, key: &str, default: T) -> Result<T, String> {
    Ok(meta_opt_num(metadata, key)?.unwrap_or(default))
}

/// A metadata value parsed as a number, when it is there.
pub fn meta_opt_num<T: std::str::FromStr>(metadata: &Metadata, key: &str) -> Result<Option<T>, String> {
    meta(metadata, key)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("metadata {key}: {v:?} is not a number"))
        })
        .transpose()
}

/// A metadata value parsed as a duration (`10s`, `1m30s`, `500ms`), or the
/// default when absent.
pub fn meta_duration(
    metadata: &Metadata,
    key: &str,
    default: std::time::Duration,
) -> Result<std::time::Duration, String> {
    match meta(metadata, key) {
        None => Ok(default),
        Some(v) => parse_duration(v).ok_or_else(|| format!("metadata {key}: {v:?} is not a duration")),
    }
}

/// Takes a lock even if a panic once happened while it was held. Components
/// validate everything before they change anything, so the data behind a
/// poisoned lock is consistent (SQLite rolls back an unfinished transaction).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 128 fresh random bits: a per-thread splitmix64 stream, seeded once from
/// the OS (through `RandomState`). Each thread's stream never repeats within
/// 2^64 draws and seeds differ between threads, so values are unique within
/// the process; drawing costs a few multiplications, not a hash.
pub fn random_u128() -> u128 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    fn seed() -> u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    }
    STATE.with(|state| {
        let next = || {
            let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            state.set(s);
            let z = (s ^ (s >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (u128::from(next()) << 64) | u128::from(next())
    })
}

/// A random (version 4) UUID in its usual text form, as Dapr gives event ids.
pub fn uuid_v4() -> String {
    let r = random_u128();
    // Version 4 and the RFC 4122 variant.
    let r = (r & !(0xf << 76)) | (0x4 << 76);
    let r = (r & !(0x3 << 62)) | (0x2 << 62);
    let mut out = String::with_capacity(36);
    // Groups of 8, 4, 4, 4 and 12 digits, from the most significant.
    for (shift, digits) in [(96, 8), (80, 4), (64, 4), (48, 4), (0, 12)] {
        if shift < 96 {
            out.push('-');
        }
        push_hex(&mut out, r >> shift, digits);
    }
    out
}

/// Appends the `digits` lowest hex digits of `n`, lowercase and zero-padded:
/// ids and trace contexts are made per message, and `format!` costs several
/// times as much.
pub fn push_hex(out: &mut String, n: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((n >> (4 * i)) & 0xf) as usize]));
    }
}

/// `%XX` escapes of a URL part decoded (an invalid escape is kept as is).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Days since 1970-01-01 of a civil date.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of days since 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// An error with its causes (`client error (Connect): … invalid peer certificate: UnknownIssuer`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_version_and_variant() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, uuid_v4());
        let dashes: Vec<usize> = u.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert!(
            u.bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        let mut h = String::new();
        push_hex(&mut h, 0xab, 4);
        assert_eq!(h, "00ab");
    }

    #[test]
    fn metadata_lookups() {
        let m = Metadata::from([
            ("RedisHost".to_string(), "h".to_string()),
            ("empty".to_string(), String::new()),
            ("n".to_string(), "12".to_string()),
            ("d".to_string(), "2s".to_string()),
        ]);
        assert_eq!(meta(&m, "redishost"), Some("h"));
        assert_eq!(meta(&m, "empty"), None);
        assert_eq!(meta_num(&m, "n", 1u32), Ok(12));
        assert_eq!(meta_num(&m, "x", 7u32), Ok(7));
        assert!(meta_num::<u32>(&m, "RedisHost", 1).is_err());
        assert_eq!(
            meta_duration(&m, "d", std::time::Duration::ZERO),
            Ok(std::time::Duration::from_secs(2))
        );
    }
}
