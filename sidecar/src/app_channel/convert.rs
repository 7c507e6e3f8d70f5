//! Between the shapes one invocation takes on its way: HTTP methods and the
//! wire contract's verbs, HTTP headers and gRPC metadata and the metadata
//! map sidecars pass between them.

use daprs_proto::{
    common::{HttpExtension, http_extension::Verb},
    internals::ListStringValue,
};
use http::Method;
use tonic::metadata::MetadataMap;

use crate::{error::ApiError, invoke::Metadata};
/// Headers that describe one connection and are never forwarded.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];

/// Maps a verb of the wire contract to an HTTP method (NONE means POST).
pub fn method_of(verb: i32) -> Result<Method, ApiError> {
    Ok(match Verb::try_from(verb).unwrap_or(Verb::None) {
        Verb::None | Verb::Post => Method::POST,
        Verb::Get => Method::GET,
        Verb::Head => Method::HEAD,
        Verb::Put => Method::PUT,
        Verb::Delete => Method::DELETE,
        Verb::Options => Method::OPTIONS,
        Verb::Trace => Method::TRACE,
        Verb::Patch => Method::PATCH,
        Verb::Connect => return Err(ApiError::bad_request("CONNECT cannot be invoked")),
    })
}

/// Maps an HTTP method to a verb of the wire contract.
pub fn verb_of(method: &Method) -> Verb {
    match *method {
        Method::GET => Verb::Get,
        Method::HEAD => Verb::Head,
        Method::POST => Verb::Post,
        Method::PUT => Verb::Put,
        Method::DELETE => Verb::Delete,
        Method::CONNECT => Verb::Connect,
        Method::OPTIONS => Verb::Options,
        Method::TRACE => Verb::Trace,
        Method::PATCH => Verb::Patch,
        _ => Verb::None,
    }
}

/// Request headers Dapr renames to `dapr-<name>` when passing them to a gRPC app.
const PERMANENT_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-language",
    "accept-ranges",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "cache-control",
    "content-type",
    "content-length",
    "cookie",
    "date",
    "expect",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-schedule-tag-match",
    "if-unmodified-since",
    "max-forwards",
    "origin",
    "pragma",
    "referer",
    "via",
    "warning",
];

/// Converts invocation metadata into gRPC metadata for the app.
pub fn grpc_metadata(metadata: &Metadata) -> MetadataMap {
    let mut out = MetadataMap::new();
    for (key, list) in metadata {
        let lower = key.to_ascii_lowercase();
        if lower.starts_with(':')
            || lower.starts_with("grpc-")
            || lower == "destination-app-id"
            || lower == "te"
        {
            continue;
        }
        let name = if PERMANENT_HEADERS.contains(&lower.as_str()) {
            format!("dapr-{lower}")
        } else {
            lower
        };
        for v in &list.values {
            append_metadata(&mut out, &name, v);
        }
    }
    out
}

/// Adds one invocation metadata value to gRPC metadata: a `-bin` key's
/// value is base64 and is decoded; a value gRPC cannot carry is left out.
pub fn append_metadata(out: &mut MetadataMap, name: &str, v: &str) {
    use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue, MetadataKey};
    if name.ends_with("-bin") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(v)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(v));
        if let (Ok(k), Ok(bytes)) = (MetadataKey::from_bytes(name.as_bytes()), decoded) {
            out.append_bin(k, BinaryMetadataValue::from_bytes(&bytes));
        }
    } else if let (Ok(k), Ok(val)) = (
        MetadataKey::from_bytes(name.as_bytes()),
        AsciiMetadataValue::try_from(v),
    ) {
        out.append(k, val);
    }
}

/// Collects gRPC metadata into invocation metadata, leaving out the keys in
/// `skip`. Binary values travel base64-encoded, as Dapr's do: the header
/// already holds them so, and only padding is added where a client left it off.
pub fn from_grpc_metadata(map: &MetadataMap, skip: &[&str]) -> Metadata {
    let mut out = Metadata::new();
    use tonic::metadata::KeyAndValueRef;
    for kv in map.iter() {
        let key = match &kv {
            KeyAndValueRef::Ascii(k, _) => k.as_str(),
            KeyAndValueRef::Binary(k, _) => k.as_str(),
        };
        if skip.contains(&key) {
            continue;
        }
        let value = match kv {
            KeyAndValueRef::Ascii(_, v) => v.to_str().unwrap_or_default().to_string(),
            KeyAndValueRef::Binary(_, v) => {
                let mut text = String::from_utf8_lossy(v.as_encoded_bytes()).into_owned();
                while !text.len().is_multiple_of(4) {
                    text.push('=');
                }
                text
            }
        };
        out.entry(key.to_string())
            .or_insert_with(|| ListStringValue { values: vec![] })
            .values
            .push(value);
    }
    out
}

/// Collects HTTP headers into invocation metadata, leaving out hop-by-hop headers.
pub fn from_http_headers(headers: &http::HeaderMap, skip: &[&str]) -> Metadata {
    let mut out = Metadata::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || skip.contains(&n) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            out.entry(n.to_string())
                .or_insert_with(|| ListStringValue { values: vec![] })
                .values
                .push(v.to_string());
        }
    }
    out
}

/// An HTTP extension for an HTTP method and raw query string.
pub fn http_extension(method: &Method, query: &str) -> HttpExtension {
    HttpExtension {
        verb: verb_of(method) as i32,
        querystring: query.to_string(),
    }
}
