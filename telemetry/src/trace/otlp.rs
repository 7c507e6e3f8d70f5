//! The OpenTelemetry protocol's trace export request (field numbers from
//! `opentelemetry/proto/collector/trace/v1`): written straight from the
//! spans, and as JSON; the messages below read it back (collectors, tests).

use prost::encoding::{encoded_len_varint, key_len};
use serde_json::{Value, json};

use super::{SpanData, SpanKind, context::hex};

/// The gRPC method collectors serve.
pub const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The path OTLP over HTTP posts to.
pub const HTTP_PATH: &str = "/v1/traces";

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// 0 unset, 1 ok, 2 error.
    #[prost(int32, tag = "3")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(string, tag = "1")]
    pub string_value: String,
}

impl KeyValue {
    pub fn text(&self) -> &str {
        self.value.as_ref().map_or("", |v| v.string_value.as_str())
    }
}

fn kind_number(kind: SpanKind) -> i32 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

const SCOPE: &str = "daprs";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Protobuf's wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// A varint, a byte at a time: the values written here are small, and
/// pushing to the `Vec` directly is several times cheaper than a generic
/// buffer.
fn encode_varint(mut v: u64, buf: &mut Vec<u8>) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn encode_key(tag: u32, wire_type: u32, buf: &mut Vec<u8>) {
    encode_varint(u64::from(tag << 3 | wire_type), buf);
}

/// Length of a length-delimited field of `len` bytes under `tag`.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Length of a string field, which proto3 leaves out when empty.
fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(tag, s.len()) }
}

fn put_head(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, LEN, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
    if !b.is_empty() {
        put_head(buf, tag, b.len());
        buf.extend_from_slice(b);
    }
}

/// A `KeyValue` with a string value: key 1, value 2 (`AnyValue`, string 1).
fn kv_len(k: &str, v: &str) -> usize {
    str_len(1, k) + field_len(2, str_len(1, v))
}

fn put_kv(buf: &mut Vec<u8>, tag: u32, k: &str, v: &str) {
    put_head(buf, tag, kv_len(k, v));
    put_bytes(buf, 1, k.as_bytes());
    put_head(buf, 2, str_len(1, v));
    put_bytes(buf, 1, v.as_bytes());
}

fn status_len(message: &str) -> usize {
    str_len(2, message) + key_len(3) + encoded_len_varint(2)
}

fn span_len(s: &SpanData) -> usize {
    let parent = s.parent.map_or(0, |_| field_len(4, 8));
    let attributes: usize = s.attributes().map(|(k, v)| field_len(9, kv_len(k, v))).sum();
    let status = s.error().map_or(0, |m| field_len(15, status_len(m)));
    field_len(1, 16)
        + field_len(2, 8)
        + parent
        + str_len(5, s.name())
        + key_len(6)
        + 1
        + 2 * (key_len(7) + 8)
        + attributes
        + status
        + key_len(16)
        + 4
}

fn put_span(buf: &mut Vec<u8>, s: &SpanData) {
    put_bytes(buf, 1, &s.context.trace_id);
    put_bytes(buf, 2, &s.context.span_id);
    if let Some(p) = &s.parent {
        put_bytes(buf, 4, p);
    }
    put_bytes(buf, 5, s.name().as_bytes());
    encode_key(6, VARINT, buf);
    encode_varint(kind_number(s.kind) as u64, buf);
    for (tag, t) in [(7, s.start), (8, s.end)] {
        encode_key(tag, FIXED64, buf);
        buf.extend_from_slice(&t.to_le_bytes());
    }
    for (k, v) in s.attributes() {
        put_kv(buf, 9, k, v);
    }
    if let Some(m) = s.error() {
        put_head(buf, 15, status_len(m));
        put_bytes(buf, 2, m.as_bytes());
        encode_key(3, VARINT, buf);
        encode_varint(2, buf);
    }
    encode_key(16, FIXED32, buf);
    buf.extend_from_slice(&u32::from(s.context.flags).to_le_bytes());
}

/// One `ExportTraceServiceRequest` for `spans` of `service`, encoded
/// straight from the spans: lengths are summed first, so every byte is
/// written once, into one buffer.
pub fn encode(service: &str, spans: &[Box<SpanData>]) -> Vec<u8> {
    let scope_len = str_len(1, SCOPE) + str_len(2, VERSION);
    let lens: Vec<usize> = spans.iter().map(|s| span_len(s)).collect();
    let spans_len: usize = lens.iter().map(|&l| field_len(2, l)).sum();
    let scope_spans_len = field_len(1, scope_len) + spans_len;
    let resource_len = field_len(1, kv_len("service.name", service));
    let resource_spans_len = field_len(1, resource_len) + field_len(2, scope_spans_len);
    let mut buf = Vec::with_capacity(field_len(1, resource_spans_len));
    put_head(&mut buf, 1, resource_spans_len);
    put_head(&mut buf, 1, resource_len);
    put_kv(&mut buf, 1, "service.name", service);
    put_head(&mut buf, 2, scope_spans_len);
    put_head(&mut buf, 1, scope_len);
    put_bytes(&mut buf, 1, SCOPE.as_bytes());
    put_bytes(&mut buf, 2, VERSION.as_bytes());
    for (s, &len) in spans.iter().zip(&lens) {
        put_head(&mut buf, 2, len);
        put_span(&mut buf, s);
    }
    buf
}

fn json_attributes<'k, 'v>(pairs: impl Iterator<Item = (&'k str, &'v str)>) -> Value {
    pairs
        .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
        .collect()
}

/// The same request in OTLP's JSON encoding (ids in hex, 64-bit numbers as
/// strings).
pub fn json_request(service: &str, spans: &[Box<SpanData>]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": hex(&s.context.trace_id),
                "spanId": hex(&s.context.span_id),
                "name": s.name(),
                "kind": kind_number(s.kind),
                "startTimeUnixNano": s.start.to_string(),
                "endTimeUnixNano": s.end.to_string(),
                "flags": s.context.flags,
                "attributes": json_attributes(s.attributes()),
            });
            if let Some(p) = s.parent {
                span["parentSpanId"] = hex(&p).into();
            }
            if let Some(m) = s.error() {
                span["status"] = json!({"code": 2, "message": m});
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": json_attributes([("service.name", service)].into_iter())},
        "scopeSpans": [{"scope": {"name": SCOPE, "version": VERSION}, "spans": spans}],
    }]})
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::trace::SpanContext;

    #[test]
    fn the_written_request_reads_back_as_otlp() {
        let span = |parent, error: Option<&str>| {
            let ctx = SpanContext {
                trace_id: [7; 16],
                span_id: [8; 8],
                flags: 1,
            };
            let mut s = SpanData::new(SpanKind::Server, ctx, parent, 1_700_000_000_000_000_000);
            s.end = 1_700_000_000_000_500_000;
            s.set_name(&["CallLocal/a/b"]);
            s.add_attribute("dapr.protocol", &["http"]);
            s.add_attribute("db.name", &[&"x".repeat(300)]);
            if let Some(e) = error {
                s.set_error(e);
            }
            s
        };
        let spans = [
            Box::new(span(Some([9; 8]), None)),
            Box::new(span(None, Some("NotFound"))),
        ];
        let read = ExportTraceServiceRequest::decode(encode("orders", &spans).as_slice()).expect("decodes");
        let rs = &read.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().map(|r| r.attributes[0].text()),
            Some("orders")
        );
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some(SCOPE));
        let [first, second] = ss.spans.as_slice() else {
            panic!("two spans: {:?}", ss.spans);
        };
        assert_eq!(first.trace_id, vec![7; 16]);
        assert_eq!(first.span_id, vec![8; 8]);
        assert_eq!(first.parent_span_id, vec![9; 8]);
        assert_eq!(
            (first.name.as_str(), first.kind, first.flags),
            ("CallLocal/a/b", 2, 1)
        );
        assert_eq!(first.end_time_unix_nano - first.start_time_unix_nano, 500_000);
        assert_eq!(first.attributes[1].text().len(), 300);
        assert_eq!(first.status, None);
        assert!(second.parent_span_id.is_empty());
        let status = second.status.as_ref().expect("status");
        assert_eq!((status.code, status.message.as_str()), (2, "NotFound"));
    }
}
