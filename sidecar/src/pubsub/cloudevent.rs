//! CloudEvents 1.0 envelopes as Dapr builds them when an app publishes, and
//! as subscribers read them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use daprs_components::{Metadata, state::rfc3339};
use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::{Map, Value};

/// The content type of a CloudEvent in JSON.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// The `type` Dapr gives events it wraps.
pub const EVENT_TYPE: &str = "com.dapr.event.sent";

/// Where and by whom an event is published.
pub struct Origin<'a> {
    /// The publishing app (the envelope's `source`).
    pub app_id: &'a str,
    /// The pub/sub component.
    pub pubsub: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The caller's W3C trace context, when it sent one.
    pub traceparent: Option<&'a str>,
    /// The caller's `tracestate`.
    pub tracestate: Option<&'a str>,
}

/// Why an envelope could not be built.
#[derive(Debug, PartialEq, Eq)]
pub struct EnvelopeError(pub String);

/// The media type without parameters, lower-cased.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A request metadata value, looked up case-insensitively.
fn get<'a>(metadata: &'a Metadata, key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// A fresh W3C trace context for an event published without one.
fn new_traceparent() -> String {
    let r = daprs_components::random_u128();
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    daprs_components::push_hex(&mut out, r, 32);
    out.push('-');
    daprs_components::push_hex(&mut out, u128::from((r >> 17) as u64 | 1), 16);
    out.push_str("-00");
    out
}

/// Builds the envelope for a publish of `body` with `content_type` and the
/// request's metadata (`cloudevent.*` overrides, `ttlInSeconds`).
pub fn envelope(
    body: &[u8],
    content_type: Option<&str>,
    metadata: &Metadata,
    origin: &Origin<'_>,
    now: SystemTime,
) -> Result<Bytes, EnvelopeError> {
    let media = content_type.map(media_type).unwrap_or_default();
    let expiration = match get(metadata, "ttlInSeconds") {
        None => None,
        Some(ttl) => {
            let secs: u64 = ttl.trim().parse().map_err(|_| {
                EnvelopeError(format!("ttlInSeconds {ttl:?} is not a whole number of seconds"))
            })?;
            Some(rfc3339(daprs_components::state::expiry(
                now,
                Duration::from_secs(secs),
            )))
        }
    };
    let traceparent = origin.traceparent.map_or_else(new_traceparent, str::to_string);
    if media == CONTENT_TYPE {
        return complete(body, metadata, origin, now, &traceparent, expiration);
    }
    // Written in one pass, with no map or copy of the payload.
    let traceid = get(metadata, "cloudevent.traceid");
    let binary = matches!(
        media.as_str(),
        "application/octet-stream" | "application/cloudevents+protobuf" | "application/x-protobuf"
    );
    // JSON goes in as it came (numbers exact), text as a string, the rest
    // in base64.
    let json = media == "application/json" && serde_json::from_slice::<Readable>(body).is_ok();
    let text = if binary || json {
        None
    } else {
        std::str::from_utf8(body).ok()
    };
    let fresh;
    let id = match get(metadata, "cloudevent.id") {
        Some(id) => id,
        None => {
            fresh = daprs_components::uuid_v4();
            &fresh
        }
    };
    let mut out = Fields(Vec::with_capacity(body.len() + 512));
    out.string("id", id);
    out.string(
        "source",
        get(metadata, "cloudevent.source").unwrap_or(origin.app_id),
    );
    out.string("type", get(metadata, "cloudevent.type").unwrap_or(EVENT_TYPE));
    out.string("specversion", "1.0");
    out.string("datacontenttype", content_type.unwrap_or("text/plain"));
    out.string("topic", origin.topic);
    out.string("pubsubname", origin.pubsub);
    out.string("traceid", traceid.unwrap_or(&traceparent));
    let parent = get(metadata, "cloudevent.traceparent").or(traceid);
    out.string("traceparent", parent.unwrap_or(&traceparent));
    let state = get(metadata, "cloudevent.tracestate").or(origin.tracestate);
    out.string("tracestate", state.unwrap_or_default());
    out.string("time", &rfc3339(now));
    if let Some(subject) = get(metadata, "cloudevent.subject") {
        out.string("subject", subject);
    }
    if let Some(at) = &expiration {
        out.string("expiration", at);
    }
    match (json, text) {
        // Readable accepted it: one JSON value between optional whitespace.
        (true, _) => out.raw("data", body.trim_ascii()),
        (false, Some(t)) => out.string("data", t),
        (false, None) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(body);
            out.string("data_base64", &encoded);
        }
    }
    Ok(out.end())
}

/// Whether JSON must escape any byte of `s` (a control character, `"` or
/// `\\`), eight bytes at a time: each test below sets a byte's high bit
/// exactly when some byte of the word matches.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut words = s.chunks_exact(8);
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let w = u64::from_le_bytes(bytes);
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let found =
            control | (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash);
        if found & HIGH != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON object written field by field. Keys are literals that need no
/// escaping; values are escaped by serde_json.
struct Fields(Vec<u8>);

impl Fields {
    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        if !needs_escape(value.as_bytes()) {
            // Nothing to escape: the common case, copied as it is.
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        } else {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.0, value);
        }
    }

    fn raw(&mut self, key: &str, json: &[u8]) {
        self.key(key);
        self.0.extend_from_slice(json);
    }

    fn end(mut self) -> Bytes {
        if self.0.is_empty() {
            self.0.push(b'{');
        }
        self.0.push(b'}');
        Bytes::from(self.0)
    }
}

/// JSON that subscribers can read back as JSON: well formed, and with every
/// number within range (`1e400` is valid syntax that parsers refuse). It is
/// checked without building anything; JSON that fails goes out as text.
struct Readable;

impl<'de> Deserialize<'de> for Readable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Readable)
    }
}

impl<'de> Visitor<'de> for Readable {
    type Value = Readable;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Readable, E> {
        if v.is_finite() {
            Ok(Readable)
        } else {
            Err(E::custom("number out of range"))
        }
    }

    fn visit_str<E>(self, _: &str) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_unit<E>(self) -> Result<Readable, E> {
        Ok(Readable)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Readable, A::Error> {
        while seq.next_element::<Readable>()?.is_some() {}
        Ok(Readable)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Readable, A::Error> {
        while map.next_entry::<IgnoredAny, Readable>()?.is_some() {}
        Ok(Readable)
    }
}

/// An app's own CloudEvent, completed with what Dapr adds.
fn complete(
    body: &[u8],
    metadata: &Metadata,
    origin: &Origin<'_>,
    now: SystemTime,
    traceparent: &str,
    expiration: Option<String>,
) -> Result<Bytes, EnvelopeError> {
    let Ok(Value::Object(mut ce)) = serde_json::from_slice::<Value>(body) else {
        return Err(EnvelopeError(
            "the body is not a CloudEvent: application/cloudevents+json needs a JSON object".into(),
        ));
    };
    let mut default = |k: &str, v: Value| {
        ce.entry(k.to_string()).or_insert(v);
    };
    default("source", "Dapr".into());
    default("type", EVENT_TYPE.into());
    default("specversion", "1.0".into());
    default("time", rfc3339(now).into());
    default("traceparent", traceparent.into());
    default("traceid", traceparent.into());
    default("tracestate", origin.tracestate.unwrap_or_default().into());
    ce.insert("topic".into(), origin.topic.into());
    ce.insert("pubsubname".into(), origin.pubsub.into());
    for (attr, key) in [
        ("id", "cloudevent.id"),
        ("source", "cloudevent.source"),
        ("type", "cloudevent.type"),
        ("subject", "cloudevent.subject"),
        ("traceid", "cloudevent.traceid"),
        ("traceparent", "cloudevent.traceid"),
        ("traceparent", "cloudevent.traceparent"),
        ("tracestate", "cloudevent.tracestate"),
    ] {
        if let Some(v) = get(metadata, key) {
            ce.insert(attr.into(), v.into());
        }
    }
    if let Some(at) = expiration {
        ce.insert("expiration".into(), at.into());
    }
    serde_json::to_vec(&ce)
        .map(Bytes::from)
        .map_err(|e| EnvelopeError(e.to_string()))
}

/// Parses an RFC 3339 time (`2024-01-02T03:04:05.123Z`, or with an offset).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || !matches!(s.get(10..11)?, "T" | "t" | " ") || !(1..=12).contains(&mo) {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let (oh, om) = (
                rest.get(1..3)?.parse::<i64>().ok()?,
                rest.get(4..6)?.parse::<i64>().ok()?,
            );
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from the civil date (proleptic Gregorian calendar).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Whether an event's `expiration` attribute, when it has one, has passed.
pub fn expired(expiration: Option<&str>, now: SystemTime) -> bool {
    expiration.and_then(parse_rfc3339).is_some_and(|t| t <= now)
}

/// Wraps bytes that are not a CloudEvent, for a subscription with
/// `rawPayload: true`: the app still receives an event.
pub fn wrap_raw(body: &[u8], pubsub: &str, topic: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), daprs_components::uuid_v4().into());
    m.insert("source".into(), "Dapr".into());
    m.insert("type".into(), EVENT_TYPE.into());
    m.insert("specversion".into(), "1.0".into());
    m.insert("datacontenttype".into(), "application/octet-stream".into());
    m.insert("topic".into(), topic.into());
    m.insert("pubsubname".into(), pubsub.into());
    m.insert(
        "data_base64".into(),
        base64::engine::general_purpose::STANDARD.encode(body).into(),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin<'static> {
        Origin {
            app_id: "pub",
            pubsub: "ps",
            topic: "orders",
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: None,
        }
    }

    fn build(body: &[u8], ct: Option<&str>, md: &[(&str, &str)]) -> Map<String, Value> {
        let md = md.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let bytes = envelope(body, ct, &md, &origin(), now).expect("envelope");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn plain_json_is_wrapped_with_every_attribute() {
        let ce = build(
            br#"{"n": 12345678901234567}"#,
            Some("application/json; charset=utf-8"),
            &[],
        );
        assert_eq!(ce["data"]["n"], 12_345_678_901_234_567u64);
        assert_eq!(ce["source"], "pub");
        assert_eq!(ce["type"], EVENT_TYPE);
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["datacontenttype"], "application/json; charset=utf-8");
        assert_eq!(
            (ce["topic"].as_str(), ce["pubsubname"].as_str()),
            (Some("orders"), Some("ps"))
        );
        assert_eq!(ce["traceparent"], ce["traceid"]);
        assert_eq!(ce["time"], "2023-11-14T22:13:20Z");
        assert_eq!(ce["id"].as_str().map(str::len), Some(36));
    }

    #[test]
    fn escapes_are_found_wherever_they_are() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut text = vec![b'a'; 20];
                text[at] = b;
                assert_eq!(needs_escape(&text), naive(&text), "byte {b:#04x} at {at}");
                // Neighbours that borrow in the word arithmetic.
                text[(at + 1) % 20] = 0x80;
                text[(at + 19) % 20] = 0xff;
                assert_eq!(
                    needs_escape(&text),
                    naive(&text),
                    "byte {b:#04x} at {at}, high neighbours"
                );
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape("caf\u{e9} \u{1f600} plain".as_bytes()));
    }

    #[test]
    fn text_binary_and_broken_json_payloads() {
        let ce = build(b"hello", None, &[]);
        assert_eq!(
            (ce["data"].as_str(), ce["datacontenttype"].as_str()),
            (Some("hello"), Some("text/plain"))
        );
        let ce = build(&[0, 159, 146], Some("application/octet-stream"), &[]);
        assert_eq!(ce["data_base64"], "AJ+S");
        assert!(ce.get("data").is_none());
        let ce = build(b"{not json", Some("application/json"), &[]);
        assert_eq!(ce["data"], "{not json");
        // Text that needs escaping comes back exactly.
        let text = "say \"hi\" \\ caf\u{e9}\n\t\u{1}";
        let ce = build(
            text.as_bytes(),
            Some("text/plain"),
            &[("cloudevent.subject", text)],
        );
        assert_eq!(
            (ce["data"].as_str(), ce["subject"].as_str()),
            (Some(text), Some(text))
        );
        // Valid syntax, but no parser reads it back as a number: text.
        let ce = build(b"[1e400]", Some("application/json"), &[]);
        assert_eq!(ce["data"], "[1e400]");
        let ce = build(
            br#"{"a": [1.5, "x\"y", null, true]}"#,
            Some("application/json"),
            &[],
        );
        assert_eq!(ce["data"]["a"][1], "x\"y");
    }

    #[test]
    fn an_apps_own_cloudevent_is_kept_and_completed() {
        let body = br#"{"id": "mine", "type": "order.created", "specversion": "1.0", "source": "shop", "data": {"a": 1}}"#;
        let ce = build(body, Some(CONTENT_TYPE), &[]);
        assert_eq!(
            (ce["id"].as_str(), ce["type"].as_str()),
            (Some("mine"), Some("order.created"))
        );
        assert_eq!(ce["source"], "shop");
        assert_eq!(ce["topic"], "orders");
        assert!(ce.contains_key("traceparent") && ce.contains_key("time"));
        let md = Metadata::new();
        let now = SystemTime::now();
        assert!(envelope(b"[1]", Some(CONTENT_TYPE), &md, &origin(), now).is_err());
    }

    #[test]
    fn metadata_overrides_and_ttl() {
        let ce = build(
            b"x",
            None,
            &[
                ("cloudevent.id", "id-1"),
                ("CloudEvent.Type", "t"),
                ("cloudevent.subject", "s"),
                ("ttlInSeconds", "60"),
            ],
        );
        assert_eq!(
            (ce["id"].as_str(), ce["type"].as_str()),
            (Some("id-1"), Some("t"))
        );
        assert_eq!(ce["subject"], "s");
        assert_eq!(ce["expiration"], "2023-11-14T22:14:20Z");
        let md = Metadata::from([("ttlInSeconds".to_string(), "soon".to_string())]);
        assert!(envelope(b"x", None, &md, &origin(), SystemTime::now()).is_err());
    }

    #[test]
    fn expiry_times_parse() {
        let t = |s| {
            parse_rfc3339(s)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        assert_eq!(t("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(t("2023-11-14T22:13:20.999Z"), Some(1_700_000_000));
        assert_eq!(t("2023-11-15T00:13:20+02:00"), Some(1_700_000_000));
        assert_eq!(t("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(t("yesterday"), None);
        assert_eq!(t("2023-13-01T00:00:00Z"), None);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
        assert!(!expired(None, now));
        assert!(!expired(Some("2023-11-14T22:13:22Z"), now));
        assert!(expired(Some("2023-11-14T22:13:20Z"), now));
        assert!(!expired(Some("not a time"), now));
    }

    #[test]
    fn raw_payloads_are_wrapped_for_subscribers() {
        let ce = wrap_raw(b"\x01\x02", "ps", "t");
        assert_eq!(ce["data_base64"], "AQI=");
        assert_eq!(ce["datacontenttype"], "application/octet-stream");
    }
}
