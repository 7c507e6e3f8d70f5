//! Zipkin's v2 JSON span format.

use serde_json::{Map, Value, json};

use super::{SpanData, SpanKind, context::hex};

/// The spans as one Zipkin v2 upload.
pub fn spans(service: &str, spans: &[SpanData]) -> Value {
    spans
        .iter()
        .map(|s| {
            let mut tags: Map<String, Value> = s
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
                .collect();
            if let Some(m) = &s.error {
                tags.insert("otel.status_code".into(), "ERROR".into());
                tags.insert("error".into(), m.as_str().into());
            }
            let mut span = json!({
                "traceId": hex(&s.context.trace_id),
                "id": hex(&s.context.span_id),
                "name": s.name,
                "timestamp": s.start / 1000,
                // Zipkin reads zero as "unknown".
                "duration": ((s.end - s.start) / 1000).max(1),
                "localEndpoint": {"serviceName": service},
                "tags": tags,
            });
            let kind = match s.kind {
                SpanKind::Server => Some("SERVER"),
                SpanKind::Client => Some("CLIENT"),
                SpanKind::Producer => Some("PRODUCER"),
                SpanKind::Consumer => Some("CONSUMER"),
                SpanKind::Internal => None,
            };
            if let Some(k) = kind {
                span["kind"] = k.into();
            }
            if let Some(p) = s.parent {
                span["parentId"] = hex(&p).into();
            }
            span
        })
        .collect()
}
