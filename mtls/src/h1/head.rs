//! What the client and the server read and write alike in an HTTP/1.1
//! head: its fields as slices of the head's bytes, its declared length,
//! whether the connection is kept, and its fields written out.

use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Version, header::CONNECTION};

/// A field that is not HTTP.
pub(crate) enum BadField {
    /// The name, as it came.
    Name(String),
    /// The field whose value is invalid.
    Value(HeaderName),
}

/// Where each field's value lies in the parsed bytes starting at `start`,
/// so that the values can be sliced off the head once it is taken.
pub(crate) fn spans(
    start: *const u8,
    fields: &[httparse::Header<'_>],
) -> Result<Vec<(HeaderName, Range<usize>)>, BadField> {
    let start = start as usize;
    let mut spans = Vec::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| BadField::Name(field.name.to_string()))?;
        let at = field.value.as_ptr() as usize - start;
        spans.push((name, at..at + field.value.len()));
    }
    Ok(spans)
}

/// The fields, their values slices of `head` rather than copies.
pub(crate) fn sliced(head: &Bytes, spans: Vec<(HeaderName, Range<usize>)>) -> Result<HeaderMap, BadField> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, range) in spans {
        match HeaderValue::from_maybe_shared(head.slice(range)) {
            Ok(value) => {
                headers.append(name, value);
            }
            Err(_) => return Err(BadField::Value(name)),
        }
    }
    Ok(headers)
}

/// Whether a comma-separated header value lists `token`.
pub(crate) fn lists(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the other end lets the connection be kept after this message.
pub(crate) fn keeps_alive(headers: &HeaderMap, version: Version) -> bool {
    match headers.get(CONNECTION) {
        Some(c) if lists(c, "close") => false,
        Some(c) if lists(c, "keep-alive") => true,
        _ => version == Version::HTTP_11,
    }
}

/// Why a declared length is refused.
pub(crate) enum BadLength {
    /// A value that is not a length, as it came.
    Invalid(String),
    /// Several values that differ.
    Conflicting,
}

/// The `content-length` declared, if any: every value the same number.
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, BadLength> {
    let mut lengths = headers.get_all(http::header::CONTENT_LENGTH).iter();
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    let n = length_of(first.as_bytes())
        .ok_or_else(|| BadLength::Invalid(String::from_utf8_lossy(first.as_bytes()).into_owned()))?;
    if lengths.any(|v| length_of(v.as_bytes()) != Some(n)) {
        return Err(BadLength::Conflicting);
    }
    Ok(Some(n))
}

fn length_of(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
}

/// Writes each field of `map` but those named in `skip` (framing the
/// writer sets itself).
pub(crate) fn write_fields(out: &mut Vec<u8>, map: &HeaderMap, skip: &[HeaderName]) {
    for (name, value) in map {
        if skip.contains(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}
