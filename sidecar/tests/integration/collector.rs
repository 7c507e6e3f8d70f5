//! A trace collector on loopback that speaks the three protocols daprd
//! exports with: Zipkin v2 JSON, OTLP over HTTP (protobuf) and OTLP over
//! gRPC. Spans from all three are kept in one shape to assert on.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use daprs_telemetry::trace::otlp::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

/// One span as the collector received it.
#[derive(Clone, Debug, Default)]
pub struct Got {
    pub service: String,
    pub name: String,
    /// `SERVER`, `CLIENT`, ... (Zipkin's spelling; OTLP's numbers are mapped).
    pub kind: String,
    pub trace_id: String,
    pub id: String,
    pub parent: String,
    pub tags: Vec<(String, String)>,
    pub error: bool,
}

impl Got {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
pub struct Collector {
    pub spans: Arc<Mutex<Vec<Got>>>,
    pub port: u16,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn otlp_spans(req: ExportTraceServiceRequest) -> Vec<Got> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| a.text().to_string())
            .unwrap_or_default();
        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            let kind = ["", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]
                .get(s.kind as usize)
                .copied()
                .unwrap_or_default();
            out.push(Got {
                service: service.clone(),
                name: s.name,
                kind: kind.into(),
                trace_id: hex(&s.trace_id),
                id: hex(&s.span_id),
                parent: hex(&s.parent_span_id),
                tags: s
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), a.text().to_string()))
                    .collect(),
                error: s.status.is_some_and(|st| st.code == 2),
            });
        }
    }
    out
}

fn zipkin_spans(body: &[u8]) -> Vec<Got> {
    let spans: Vec<Value> = serde_json::from_slice(body).expect("Zipkin JSON");
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    spans
        .iter()
        .map(|s| Got {
            service: s["localEndpoint"]["serviceName"]
                .as_str()
                .unwrap_or_default()
                .into(),
            name: text(s, "name"),
            kind: text(s, "kind"),
            trace_id: text(s, "traceId"),
            id: text(s, "id"),
            parent: text(s, "parentId"),
            tags: s["tags"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            error: s["tags"].get("error").is_some(),
        })
        .collect()
}

async fn zipkin(State(c): State<Collector>, body: Bytes) -> StatusCode {
    c.spans.lock().expect("lock").extend(zipkin_spans(&body));
    StatusCode::ACCEPTED
}

async fn otlp_http(State(c): State<Collector>, body: Bytes) -> StatusCode {
    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    c.spans.lock().expect("lock").extend(otlp_spans(req));
    StatusCode::OK
}

async fn otlp_grpc(State(c): State<Collector>, body: Bytes) -> impl IntoResponse {
    // One framed, uncompressed message.
    let req = ExportTraceServiceRequest::decode(&body[5..]).expect("OTLP gRPC message");
    c.spans.lock().expect("lock").extend(otlp_spans(req));
    let empty: &[u8] = &[0, 0, 0, 0, 0];
    (
        [("content-type", "application/grpc"), ("grpc-status", "0")],
        Bytes::from_static(empty),
    )
}

impl Collector {
    /// Serves `/api/v2/spans`, `/v1/traces` and the OTLP gRPC method, over
    /// HTTP/1.1 and cleartext HTTP/2.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let c = Self {
            port: listener.local_addr().expect("addr").port(),
            ..Self::default()
        };
        let router = Router::new()
            .route("/api/v2/spans", post(zipkin))
            .route("/v1/traces", post(otlp_http))
            .route(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                post(otlp_grpc),
            )
            .with_state(c.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        c
    }

    /// Waits for a span that `matches`.
    pub async fn wait(&self, what: &str, matches: impl Fn(&Got) -> bool) -> Got {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.spans.lock().expect("lock").iter().find(|s| matches(s)) {
                return s.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what}; got {:#?}",
                self.spans.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
