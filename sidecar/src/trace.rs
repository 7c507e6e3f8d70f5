//! Distributed tracing in the sidecar: the tracer the Configuration's
//! `spec.tracing` (or the `OTEL_EXPORTER_OTLP_*` environment) asks for, and
//! the trace context read from and written to requests, invocation metadata
//! and events. Each hop that makes a span writes the span's own context
//! onwards, so whatever copies the request's headers downstream carries it.

use std::collections::HashMap;

use base64::Engine;
use daprs_api::v1alpha1::TracingSpec;
use daprs_telemetry::trace::{
    Sampler, Span, SpanContext, Tracer,
    context::{GRPC_TRACE_BIN, TRACEPARENT},
    export::{self, OtelSpec, Otlp, Settings},
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::invoke::Metadata;

/// The header names, known once rather than parsed on every request.
pub const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
pub const TRACESTATE_HEADER: HeaderName = HeaderName::from_static("tracestate");
const GRPC_TRACE_BIN_HEADER: HeaderName = HeaderName::from_static(GRPC_TRACE_BIN);

/// The tracer for `spec`. Tracing is on when the Configuration has a
/// `tracing` section or the environment names an OTLP collector, and off
/// when `samplingRate` is `"0"`.
pub fn tracer(
    app_id: &str,
    spec: Option<&TracingSpec>,
    env: &HashMap<String, String>,
) -> Result<Tracer, String> {
    let env = |k: &str| env.get(k).cloned();
    let otel = spec.and_then(|s| s.otel.as_ref()).map(|o| OtelSpec {
        endpoint_address: o.endpoint_address.clone(),
        is_secure: o.is_secure,
        protocol: o.protocol.clone(),
        // A header's value is given inline or names a variable of the sidecar.
        headers: o
            .headers
            .iter()
            .filter_map(|h| {
                let value = h.inline_value().or_else(|| h.env_ref.as_deref().and_then(env))?;
                Some((h.name.clone(), value))
            })
            .collect(),
        timeout: o.timeout.as_deref().and_then(daprs_api::contract::parse_duration),
    });
    let otlp = Otlp::resolve(otel.as_ref(), &env).map_err(|e| format!("spec.tracing.otel: {e}"))?;
    if spec.is_none() && otlp.is_none() {
        return Ok(Tracer::off());
    }
    let rate = Sampler::rate_of(spec.map_or("", |s| s.sampling_rate.as_str()));
    if rate == 0.0 {
        return Ok(Tracer::off());
    }
    let mut settings = Settings::new(app_id, &env);
    settings.otlp = otlp;
    settings.zipkin = spec
        .and_then(|s| s.zipkin.as_ref())
        .map(|z| z.endpoint_address.trim().to_string())
        .filter(|a| !a.is_empty());
    settings.stdout = spec.is_some_and(|s| s.stdout);
    Ok(export::start(Sampler::new(rate), settings))
}

/// Checks what `tracer` would refuse, for start-up validation.
pub fn validate(spec: &TracingSpec) -> Result<(), String> {
    if let Some(o) = &spec.otel
        && !o.protocol.trim().is_empty()
    {
        export::Protocol::parse(&o.protocol).map_err(|e| format!("spec.tracing.otel.protocol: {e}"))?;
    }
    if let Some(t) = spec.otel.as_ref().and_then(|o| o.timeout.as_deref())
        && daprs_api::contract::parse_duration(t).is_none()
    {
        return Err(format!("spec.tracing.otel.timeout: {t:?} is not a duration"));
    }
    Ok(())
}

fn binary_of(value: &[u8]) -> Option<SpanContext> {
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let trimmed = value
        .strip_suffix(b"==")
        .or_else(|| value.strip_suffix(b"="))
        .unwrap_or(value);
    SpanContext::from_binary(&engine.decode(trimmed).ok()?)
}

/// The parent a request names: `grpc-trace-bin` first on gRPC, as Dapr
/// reads it, else `traceparent`.
pub fn parent_of(headers: &HeaderMap, grpc: bool) -> Option<SpanContext> {
    if grpc
        && let Some(ctx) = headers
            .get(&GRPC_TRACE_BIN_HEADER)
            .and_then(|v| binary_of(v.as_bytes()))
    {
        return Some(ctx);
    }
    SpanContext::parse(headers.get(&TRACEPARENT_HEADER)?.to_str().ok()?)
}

fn traceparent_value(ctx: &SpanContext) -> HeaderValue {
    HeaderValue::from_bytes(&ctx.traceparent_bytes()).unwrap_or(HeaderValue::from_static(""))
}

/// The `grpc-trace-bin` header: 29 bytes are 40 characters of base64,
/// written on the stack and copied once into the header.
fn binary_header(ctx: &SpanContext) -> Option<HeaderValue> {
    let mut text = [0u8; 40];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(ctx.to_binary(), &mut text)
        .ok()?;
    HeaderValue::from_bytes(&text[..n]).ok()
}

/// Writes `ctx` over the request's trace headers, on gRPC the binary form
/// too; returns the value the answer carries (`traceparent` on HTTP,
/// `grpc-trace-bin` on gRPC), so it is written once.
pub fn set_headers(headers: &mut HeaderMap, ctx: &SpanContext, grpc: bool) -> HeaderValue {
    let text = traceparent_value(ctx);
    headers.insert(TRACEPARENT_HEADER, text.clone());
    if grpc && let Some(v) = binary_header(ctx) {
        headers.insert(GRPC_TRACE_BIN_HEADER, v.clone());
        return v;
    }
    text
}

/// Adds the call's trace header (from [`set_headers`]) to an answer that has none.
pub fn answer_headers(headers: &mut HeaderMap, value: &HeaderValue, grpc: bool) {
    let name = if grpc {
        GRPC_TRACE_BIN_HEADER
    } else {
        TRACEPARENT_HEADER
    };
    headers.entry(name).or_insert_with(|| value.clone());
}

/// The parent invocation metadata names: the caller sidecar's span.
pub fn parent_in_metadata(meta: &Metadata) -> Option<SpanContext> {
    crate::invoke::get(meta, TRACEPARENT)
        .and_then(SpanContext::parse)
        .or_else(|| crate::invoke::get(meta, GRPC_TRACE_BIN).and_then(|v| binary_of(v.as_bytes())))
}

/// Writes `ctx` into invocation metadata, as the app will receive it; the
/// binary form the caller may also have sent would contradict it.
pub fn set_metadata(meta: &mut Metadata, ctx: &SpanContext) {
    if meta.keys().any(|k| k.eq_ignore_ascii_case(GRPC_TRACE_BIN)) {
        meta.retain(|k, _| !k.eq_ignore_ascii_case(GRPC_TRACE_BIN));
    }
    let text = ctx.traceparent_bytes();
    crate::invoke::set(meta, TRACEPARENT, std::str::from_utf8(&text).unwrap_or_default());
}

/// Adds the trace context to a gRPC call to the app: `traceparent` and the
/// binary form Dapr's gRPC apps read.
pub fn set_grpc_metadata(meta: &mut tonic::metadata::MetadataMap, ctx: &SpanContext) {
    if let Ok(v) = tonic::metadata::AsciiMetadataValue::try_from(ctx.traceparent_bytes().as_slice()) {
        meta.insert(TRACEPARENT, v);
    }
    meta.insert_bin(
        "grpc-trace-bin",
        tonic::metadata::BinaryMetadataValue::from_bytes(&ctx.to_binary()),
    );
}

/// Dapr's name and attributes for an HTTP API call, from its path: the
/// building block, the component or app named, and the API itself. A span
/// is named by its path, an invocation `CallLocal/<app>/<method>`, as
/// Dapr names them. The status is added when the call ends ([`http_status`]).
pub fn describe_http(span: &mut Span, method: &str, path: &str) {
    let (_version, tail) = segment(path.strip_prefix('/').unwrap_or(path));
    let (api, tail) = segment(tail);
    let (name, rest) = segment(tail);
    let db = match api {
        "state" => Some("state"),
        "secrets" => Some("secrets"),
        "bindings" => Some("bindings"),
        _ => None,
    };
    let api_text = [method, " ", path];
    if let Some(system) = db {
        span.set_attribute("db.system", system);
        span.set_attribute("db.name", name);
        span.set_attribute_parts("db.statement", &api_text);
        span.set_attribute("db.connection_string", system);
    }
    match api {
        "invoke" => {
            let method = rest.strip_prefix("method/").unwrap_or("");
            span.set_attribute("rpc.service", "ServiceInvocation");
            span.set_attribute("net.peer.name", name);
            span.set_name_parts(&["CallLocal/", name, "/", method]);
        }
        "publish" => {
            span.set_attribute("messaging.system", "pubsub");
            span.set_attribute("messaging.destination", rest);
            span.set_attribute("messaging.destination_kind", "topic");
            span.set_name(path);
        }
        _ => span.set_name(path),
    }
    span.set_attribute("dapr.protocol", "http");
    span.set_attribute_parts("dapr.api", &api_text);
}

/// The text before the first `/` and the text after it: a byte scan, which
/// on paths this short costs a fraction of a `str` pattern search.
fn segment(s: &str) -> (&str, &str) {
    match s.bytes().position(|b| b == b'/') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// The answer's status on an HTTP API call's span, and its error when it failed.
pub fn http_status(span: &mut Span, status: u16) {
    // A status code is three digits.
    let digits = [status / 100 % 10, status / 10 % 10, status % 10].map(|d| b'0' + d as u8);
    span.set_attribute(
        "dapr.status_code",
        std::str::from_utf8(&digits).unwrap_or_default(),
    );
    if let Some(e) = daprs_telemetry::trace::http_error(status) {
        span.set_error(e);
    }
}

/// Dapr's attributes for a gRPC call on the API port.
pub fn describe_grpc(span: &mut Span, path: &str) {
    let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let method = path.rsplit('/').next().unwrap_or("");
    if service == "dapr.proto.runtime.v1.Dapr" {
        let db = if method.contains("State") {
            Some("state")
        } else if method.contains("Secret") {
            Some("secrets")
        } else if method.contains("Binding") {
            Some("bindings")
        } else {
            None
        };
        if let Some(system) = db {
            span.set_attribute("db.system", system);
            span.set_attribute("db.statement", path);
            span.set_attribute("db.connection_string", system);
        }
        if method.starts_with("Publish") || method.starts_with("BulkPublish") {
            span.set_attribute("messaging.system", "pubsub");
            span.set_attribute("messaging.destination_kind", "topic");
        }
        let rpc = if method == "InvokeService" {
            "ServiceInvocation"
        } else {
            "Dapr"
        };
        span.set_attribute("rpc.service", rpc);
    } else {
        span.set_attribute("rpc.service", service);
    }
    span.set_attribute("dapr.protocol", "grpc");
    span.set_attribute("dapr.api", path);
}

/// The span of a call into the app that begins in this sidecar (an event
/// delivered, an input binding's trigger), under the trace the event
/// carries; Dapr makes these server spans.
pub fn callback(tracer: &Tracer, parent: Option<SpanContext>, name: &[&str]) -> Option<Span> {
    let mut span = tracer.start(daprs_telemetry::trace::SpanKind::Server, parent)?;
    span.set_name_parts(name);
    Some(span)
}

/// Passes a call's trace context to an output binding in its metadata, as
/// Dapr does: `traceparent` and `tracestate` (the call's own span, once the
/// API layer has written it), and `baggage`, which must be well formed.
pub fn into_binding_metadata<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    metadata: &mut std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    use daprs_telemetry::trace::context::{BAGGAGE, TRACESTATE, valid_baggage};
    for key in [TRACEPARENT, TRACESTATE] {
        if let Some(v) = header(key).filter(|v| !v.is_empty()) {
            metadata.insert(key.to_string(), v.to_string());
        }
    }
    if let Some(b) = header(BAGGAGE) {
        if !valid_baggage(b) {
            return Err(format!("the baggage header {b:?} is not valid W3C baggage"));
        }
        metadata.insert(BAGGAGE.to_string(), b.to_string());
    }
    Ok(())
}

/// A name a handler gives its call's span once it has read the request
/// (the gRPC `InvokeService` target), present only when the span records.
#[derive(Clone, Default)]
pub struct Rename(std::sync::Arc<std::sync::Mutex<Option<String>>>);

impl Rename {
    pub fn set(&self, name: String) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(name);
        }
    }

    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daprs_telemetry::trace::SpanKind;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn grpc_reads_the_binary_form_first_and_http_only_the_text() {
        let ctx = SpanContext::parse(PARENT).expect("valid in the test");
        let mut other = ctx;
        other.span_id = [7; 8];
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.insert(GRPC_TRACE_BIN, binary_header(&other).expect("valid in the test"));
        assert_eq!(parent_of(&h, true), Some(other));
        assert_eq!(parent_of(&h, false), Some(ctx));
        // Unpadded base64, as some gRPC libraries send it.
        let header = binary_header(&other).expect("valid in the test");
        let unpadded = header.to_str().expect("ASCII").trim_end_matches('=').to_string();
        h.insert(
            GRPC_TRACE_BIN,
            HeaderValue::from_str(&unpadded).expect("valid in the test"),
        );
        assert_eq!(parent_of(&h, true), Some(other));
    }

    #[test]
    fn metadata_carries_the_new_span_and_drops_the_old_binary_form() {
        let mut meta = Metadata::new();
        let list = |v: &str| daprs_proto::internals::ListStringValue {
            values: vec![v.to_string()],
        };
        meta.insert("Traceparent".into(), list(PARENT));
        meta.insert("grpc-trace-bin".into(), list("AAAA"));
        let parent = parent_in_metadata(&meta).expect("valid in the test");
        let mut next = parent;
        next.span_id = [9; 8];
        set_metadata(&mut meta, &next);
        assert_eq!(meta.len(), 1);
        assert_eq!(parent_in_metadata(&meta), Some(next));
    }

    #[tokio::test]
    async fn http_calls_are_named_and_described_as_dapr_does() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let tracer = Tracer::new(Sampler::new(1.0), Some(tx));
        let mut span = tracer.start(SpanKind::Client, None).expect("valid in the test");
        describe_http(&mut span, "POST", "/v1.0/invoke/orders/method/new/item");
        http_status(&mut span, 200);
        span.end();
        let got = rx.recv().await.expect("valid in the test");
        assert_eq!(got.name(), "CallLocal/orders/new/item");
        assert_eq!(got.error(), None);
        let attr = |k: &str| got.attributes().find(|(n, _)| *n == k).map(|(_, v)| v);
        assert_eq!(attr("net.peer.name"), Some("orders"));
        assert_eq!(attr("dapr.api"), Some("POST /v1.0/invoke/orders/method/new/item"));
        assert_eq!(attr("dapr.status_code"), Some("200"));

        let mut span = tracer.start(SpanKind::Client, None).expect("valid in the test");
        describe_http(&mut span, "GET", "/v1.0/state/store/k1");
        http_status(&mut span, 404);
        span.end();
        let got = rx.recv().await.expect("valid in the test");
        assert_eq!(got.name(), "/v1.0/state/store/k1");
        assert_eq!(got.error(), Some("NotFound"));
        let attrs: Vec<_> = got.attributes().collect();
        assert!(attrs.contains(&("db.name", "store")), "{attrs:?}");
        assert!(attrs.contains(&("db.statement", "GET /v1.0/state/store/k1")));
        assert!(attrs.contains(&("dapr.status_code", "404")));
    }

    #[test]
    fn tracing_is_off_without_a_section_or_a_collector_and_at_rate_zero() {
        let env = HashMap::new();
        assert!(!tracer("a", None, &env).expect("valid in the test").enabled());
        let zero = TracingSpec {
            sampling_rate: "0".into(),
            ..Default::default()
        };
        assert!(
            !tracer("a", Some(&zero), &env)
                .expect("valid in the test")
                .enabled()
        );
    }
}
