//! Zipkin's v2 JSON span format, written straight from the spans.

use std::io::Write;

use super::{SpanData, SpanKind, context::hex};

/// A JSON string; the writer is a `Vec`, which cannot fail.
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The spans as one Zipkin v2 upload.
pub fn spans(service: &str, spans: &[Box<SpanData>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len() * 400);
    out.push(b'[');
    for (i, s) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            r#"{{"traceId":"{}","id":"{}","timestamp":{},"duration":{},"name":"#,
            hex(&s.context.trace_id),
            hex(&s.context.span_id),
            s.start / 1000,
            // Zipkin reads zero as "unknown".
            (s.end.saturating_sub(s.start) / 1000).max(1),
        );
        string(&mut out, s.name());
        if let Some(p) = s.parent {
            let _ = write!(out, r#","parentId":"{}""#, hex(&p));
        }
        let kind = match s.kind {
            SpanKind::Server => Some("SERVER"),
            SpanKind::Client => Some("CLIENT"),
            SpanKind::Producer => Some("PRODUCER"),
            SpanKind::Consumer => Some("CONSUMER"),
            SpanKind::Internal => None,
        };
        if let Some(k) = kind {
            let _ = write!(out, r#","kind":"{k}""#);
        }
        out.extend_from_slice(br#","localEndpoint":{"serviceName":"#);
        string(&mut out, service);
        out.extend_from_slice(br#"},"tags":{"#);
        let error = s.error().map(|m| [("otel.status_code", "ERROR"), ("error", m)]);
        let tags = s.attributes().chain(error.into_iter().flatten());
        for (j, (k, v)) in tags.enumerate() {
            if j > 0 {
                out.push(b',');
            }
            string(&mut out, k);
            out.push(b':');
            string(&mut out, v);
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::SpanContext;

    #[test]
    fn spans_are_zipkin_v2_json() {
        let ctx = SpanContext {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            flags: 1,
        };
        let mut span = SpanData::new(SpanKind::Server, ctx, Some([1; 8]), 5_000_000);
        span.end = 5_000_100;
        span.set_name(&["pubsub/\"orders\""]);
        span.add_attribute("messaging.system", &["pubsub"]);
        span.set_error("Internal");
        let mut internal = span.without_error();
        internal.kind = SpanKind::Internal;
        internal.parent = None;
        let text = spans("orders-app", &[Box::new(span), Box::new(internal)]);
        let v: serde_json::Value = serde_json::from_slice(&text).expect("JSON");
        let first = &v[0];
        assert_eq!(first["traceId"], "ab".repeat(16));
        assert_eq!(first["id"], "cd".repeat(8));
        assert_eq!(first["parentId"], "01".repeat(8));
        assert_eq!(first["name"], "pubsub/\"orders\"");
        assert_eq!(
            (first["timestamp"].as_u64(), first["duration"].as_u64()),
            (Some(5000), Some(1))
        );
        assert_eq!(first["kind"], "SERVER");
        assert_eq!(first["localEndpoint"]["serviceName"], "orders-app");
        assert_eq!(first["tags"]["messaging.system"], "pubsub");
        assert_eq!(first["tags"]["error"], "Internal");
        assert!(v[1].get("kind").is_none() && v[1].get("parentId").is_none());
        assert!(v[1]["tags"].get("error").is_none());
    }
}
