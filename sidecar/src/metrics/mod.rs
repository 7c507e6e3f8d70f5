//! Dapr's metrics, with Dapr's names, labels and buckets, served as
//! Prometheus text on `--metrics-port`.
//!
//! [`Metrics`] holds every family this sidecar records. The HTTP and gRPC
//! servers record through the tower layers in [`crate::observe`]; service
//! invocation and components record through the methods here. When metrics
//! are off the layers are not installed and the methods return at once.

mod components;
pub mod paths;
pub mod resiliency;

use std::time::Instant;

use daprs_api::v1alpha1::MetricSpec;

use daprs_telemetry::registry::{Family, LATENCY_MS, SIZE_BYTES};

use self::{paths::PathLabels, resiliency::ResiliencyFamilies};

const APP: &[&str] = &["app_id"];
const HTTP: &[&str] = &["app_id", "method", "path", "status"];
const HTTP_SENT: &[&str] = &["app_id", "method", "path"];
const GRPC_SERVER: &[&str] = &["app_id", "grpc_server_method", "grpc_server_status"];
const GRPC_SERVER_BYTES: &[&str] = &["app_id", "grpc_server_method"];
const GRPC_CLIENT: &[&str] = &["app_id", "grpc_client_method", "grpc_client_status"];
const COMPONENT_OP: &[&str] = &["app_id", "component", "namespace", "operation", "success"];
const PUBSUB_EGRESS: &[&str] = &["app_id", "component", "namespace", "success", "topic"];
const INPUT_BINDING: &[&str] = &["app_id", "component", "namespace", "success"];
const PUBSUB_INGRESS: &[&str] = &["app_id", "component", "namespace", "process_status", "topic"];

/// The latency family of one building block, with its call count beside it.
fn block(
    count: &'static [(&'static str, &'static str)],
    latencies: (&'static str, &'static str),
    buckets: &[f64],
) -> Family {
    Family::histogram(latencies.0, latencies.1, COMPONENT_OP, buckets).with_counts(count)
}

/// Every family the sidecar records.
pub struct Metrics {
    enabled: bool,
    app_id: String,
    namespace: String,
    /// How HTTP paths and methods become labels.
    pub paths: PathLabels,
    http_server_latency: Family,
    http_server_request_bytes: Family,
    http_server_response_bytes: Family,
    http_client_roundtrip_latency: Family,
    http_client_sent_bytes: Family,
    http_client_received_bytes: Family,
    grpc_server_latency: Family,
    grpc_server_received_bytes: Family,
    grpc_server_sent_bytes: Family,
    grpc_client_roundtrip_latency: Family,
    invocation_req_sent: Family,
    invocation_req_recv: Family,
    invocation_res_sent: Family,
    invocation_res_recv: Family,
    invocation_res_recv_latency: Family,
    component_loaded: Family,
    component_init: Family,
    component_init_fail: Family,
    mtls_init: Family,
    cert_rotated: Family,
    cert_rotation_failed: Family,
    resiliency: ResiliencyFamilies,
    /// Latencies (and counts) per [`Block`].
    blocks: [Family; 4],
    pubsub_egress_latencies: Family,
    pubsub_ingress_latencies: Family,
    input_binding_latencies: Family,
}

/// The building blocks whose calls are counted alike.
#[derive(Clone, Copy, Debug)]
pub enum Block {
    State = 0,
    OutputBinding = 1,
    Configuration = 2,
    Secret = 3,
}

/// Every family outside `blocks`, borrowed as `$r` (`&` or `&mut`).
macro_rules! every_family {
    ($m:ident, $($r:tt)+) => {
        [
            $($r)+ $m.http_server_latency,
            $($r)+ $m.http_server_request_bytes,
            $($r)+ $m.http_server_response_bytes,
            $($r)+ $m.http_client_roundtrip_latency,
            $($r)+ $m.http_client_sent_bytes,
            $($r)+ $m.http_client_received_bytes,
            $($r)+ $m.grpc_server_latency,
            $($r)+ $m.grpc_server_received_bytes,
            $($r)+ $m.grpc_server_sent_bytes,
            $($r)+ $m.grpc_client_roundtrip_latency,
            $($r)+ $m.invocation_req_sent,
            $($r)+ $m.invocation_req_recv,
            $($r)+ $m.invocation_res_sent,
            $($r)+ $m.invocation_res_recv,
            $($r)+ $m.invocation_res_recv_latency,
            $($r)+ $m.component_loaded,
            $($r)+ $m.component_init,
            $($r)+ $m.component_init_fail,
            $($r)+ $m.mtls_init,
            $($r)+ $m.cert_rotated,
            $($r)+ $m.cert_rotation_failed,
            $($r)+ $m.resiliency.loaded,
            $($r)+ $m.resiliency.count,
            $($r)+ $m.resiliency.activations,
            $($r)+ $m.pubsub_egress_latencies,
            $($r)+ $m.pubsub_ingress_latencies,
            $($r)+ $m.input_binding_latencies,
        ]
    };
}

/// Milliseconds since `start`, as Dapr records latencies.
pub fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

impl Metrics {
    /// The families for `app_id`, shaped by `spec.metric`; `enabled: false`
    /// records nothing.
    pub fn new(enabled: bool, app_id: &str, namespace: &str, spec: Option<&MetricSpec>) -> Self {
        let custom: Vec<f64>;
        let latency: &[f64] = match spec.map(|s| &s.latency_distribution_buckets) {
            Some(b) if !b.is_empty() => {
                custom = b.iter().map(|v| *v as f64).collect();
                &custom
            }
            _ => LATENCY_MS,
        };
        let mut m = Self {
            enabled,
            app_id: app_id.to_string(),
            namespace: namespace.to_string(),
            paths: PathLabels::new(spec.and_then(|s| s.http.as_ref())),
            http_server_latency: Family::histogram(
                "dapr_http_server_latency",
                "HTTP request end-to-end latency in the server, in milliseconds.",
                HTTP,
                latency,
            )
            .with_counts(&[
                (
                    "dapr_http_server_request_count",
                    "The number of HTTP requests started in the server.",
                ),
                ("dapr_http_server_response_count", "The number of HTTP responses."),
            ]),
            http_server_request_bytes: Family::histogram(
                "dapr_http_server_request_bytes",
                "HTTP request body sizes in the server.",
                APP,
                SIZE_BYTES,
            ),
            http_server_response_bytes: Family::histogram(
                "dapr_http_server_response_bytes",
                "HTTP response body sizes in the server.",
                APP,
                SIZE_BYTES,
            ),
            http_client_roundtrip_latency: Family::histogram(
                "dapr_http_client_roundtrip_latency",
                "Time from sending an HTTP request to the app to its whole response, in milliseconds.",
                HTTP,
                latency,
            )
            .with_counts(&[(
                "dapr_http_client_completed_count",
                "Count of completed HTTP requests to the app.",
            )]),
            http_client_sent_bytes: Family::histogram(
                "dapr_http_client_sent_bytes",
                "Request body bytes sent to the app.",
                HTTP_SENT,
                SIZE_BYTES,
            ),
            http_client_received_bytes: Family::histogram(
                "dapr_http_client_received_bytes",
                "Response body bytes received from the app.",
                APP,
                SIZE_BYTES,
            ),
            grpc_server_latency: Family::histogram(
                "dapr_grpc_io_server_server_latency",
                "Time from the first byte of a request to the last byte of its response, in milliseconds.",
                GRPC_SERVER,
                latency,
            )
            .with_counts(&[(
                "dapr_grpc_io_server_completed_rpcs",
                "Count of RPCs completed by the server, by method and status.",
            )]),
            grpc_server_received_bytes: Family::histogram(
                "dapr_grpc_io_server_received_bytes_per_rpc",
                "Bytes received across all messages of an RPC.",
                GRPC_SERVER_BYTES,
                SIZE_BYTES,
            ),
            grpc_server_sent_bytes: Family::histogram(
                "dapr_grpc_io_server_sent_bytes_per_rpc",
                "Bytes sent across all response messages of an RPC.",
                GRPC_SERVER_BYTES,
                SIZE_BYTES,
            ),
            grpc_client_roundtrip_latency: Family::histogram(
                "dapr_grpc_io_client_roundtrip_latency",
                "Time from sending a request to receiving its whole response, in milliseconds.",
                GRPC_CLIENT,
                latency,
            )
            .with_counts(&[(
                "dapr_grpc_io_client_completed_rpcs",
                "Count of RPCs made, by method and status.",
            )]),
            invocation_req_sent: Family::counter(
                "dapr_runtime_service_invocation_req_sent_total",
                "The number of requests sent via service invocation.",
                &["app_id", "dst_app_id", "type"],
            ),
            invocation_req_recv: Family::counter(
                "dapr_runtime_service_invocation_req_recv_total",
                "The number of requests received via service invocation.",
                &["app_id", "src_app_id"],
            ),
            invocation_res_sent: Family::counter(
                "dapr_runtime_service_invocation_res_sent_total",
                "The number of responses sent via service invocation.",
                &["app_id", "dst_app_id", "status"],
            ),
            invocation_res_recv: Family::counter(
                "dapr_runtime_service_invocation_res_recv_total",
                "The number of responses received via service invocation.",
                &["app_id", "src_app_id", "status", "type"],
            ),
            invocation_res_recv_latency: Family::histogram(
                "dapr_runtime_service_invocation_res_recv_latency_ms",
                "The latency of service invocation responses, in milliseconds.",
                &["app_id", "src_app_id", "status"],
                latency,
            ),
            component_loaded: Family::counter(
                "dapr_runtime_component_loaded",
                "The number of successfully loaded components.",
                APP,
            ),
            component_init: Family::counter(
                "dapr_runtime_component_init_total",
                "The number of initialized components.",
                &["app_id", "component"],
            ),
            component_init_fail: Family::counter(
                "dapr_runtime_component_init_fail_total",
                "The number of component initialization failures.",
                &["app_id", "component", "reason", "componentName"],
            ),
            mtls_init: Family::counter(
                "dapr_runtime_mtls_init_total",
                "The number of successful mTLS initialisations.",
                APP,
            ),
            cert_rotated: Family::counter(
                "dapr_runtime_mtls_workload_cert_rotated_total",
                "The number of successful workload certificate rotations.",
                APP,
            ),
            cert_rotation_failed: Family::counter(
                "dapr_runtime_mtls_workload_cert_rotated_fail_total",
                "The number of failed workload certificate rotations.",
                &["app_id", "reason"],
            ),
            resiliency: ResiliencyFamilies::new(),
            blocks: [
                block(
                    &[(
                        "dapr_component_state_count",
                        "The number of operations performed on the state component.",
                    )],
                    (
                        "dapr_component_state_latencies",
                        "The latency of the response from the state component, in milliseconds.",
                    ),
                    latency,
                ),
                block(
                    &[(
                        "dapr_component_output_binding_count",
                        "The number of operations performed on the output binding component.",
                    )],
                    (
                        "dapr_component_output_binding_latencies",
                        "The latency of the response from the output binding component, in milliseconds.",
                    ),
                    latency,
                ),
                block(
                    &[(
                        "dapr_component_configuration_count",
                        "The number of operations performed on the configuration component.",
                    )],
                    (
                        "dapr_component_configuration_latencies",
                        "The latency of the response from the configuration component, in milliseconds.",
                    ),
                    latency,
                ),
                block(
                    &[(
                        "dapr_component_secret_count",
                        "The number of operations performed on the secret component.",
                    )],
                    (
                        "dapr_component_secret_latencies",
                        "The latency of the response from the secret component, in milliseconds.",
                    ),
                    latency,
                ),
            ],
            pubsub_egress_latencies: Family::histogram(
                "dapr_component_pubsub_egress_latencies",
                "The latency of the pub/sub component's answer to a publish, in milliseconds.",
                PUBSUB_EGRESS,
                latency,
            )
            .with_counts(&[(
                "dapr_component_pubsub_egress_count",
                "The number of messages published to the pub/sub component.",
            )]),
            pubsub_ingress_latencies: Family::histogram(
                "dapr_component_pubsub_ingress_latencies",
                "The time the subscriber took to process a message, in milliseconds.",
                PUBSUB_INGRESS,
                latency,
            )
            .with_counts(&[(
                "dapr_component_pubsub_ingress_count",
                "The number of messages arriving from the pub/sub component.",
            )]),
            input_binding_latencies: Family::histogram(
                "dapr_component_input_binding_latencies",
                "The time the app took to process an input binding event, in milliseconds.",
                INPUT_BINDING,
                latency,
            )
            .with_counts(&[(
                "dapr_component_input_binding_count",
                "The number of events arriving from the input binding component.",
            )]),
        };
        for rule in spec.map(|s| s.rules.as_slice()).unwrap_or_default() {
            for family in m.families_mut() {
                if !family.names().any(|n| n == rule.name) {
                    continue;
                }
                for label in &rule.labels {
                    // The Configuration was checked at start-up; a pattern
                    // that does not compile is not applied.
                    let rewrites = label
                        .regex
                        .iter()
                        .filter_map(|(to, p)| regex::Regex::new(p).ok().map(|re| (to.clone(), re)))
                        .collect();
                    family.rewrite(&label.name, rewrites);
                }
            }
        }
        m
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn families(&self) -> impl Iterator<Item = &Family> {
        every_family!(self, &).into_iter().chain(self.blocks.iter())
    }

    fn families_mut(&mut self) -> impl Iterator<Item = &mut Family> {
        every_family!(self, &mut)
            .into_iter()
            .chain(self.blocks.iter_mut())
    }

    /// Everything recorded, as Prometheus text.
    pub fn render(&self, out: &mut String) {
        for f in self.families() {
            f.render(out);
        }
    }

    /// One HTTP request the API server answered.
    pub fn http_served(
        &self,
        method: &str,
        path: &str,
        status: u16,
        req_bytes: u64,
        res_bytes: u64,
        ms: f64,
    ) {
        if !self.enabled {
            return;
        }
        let path = self.paths.path(path);
        let status = status_text(status);
        let labels = [
            self.app_id.as_str(),
            self.paths.method(method),
            &path,
            status.as_str(),
        ];
        self.http_server_latency.observe(&labels, ms);
        self.http_server_request_bytes
            .observe(&[&self.app_id], req_bytes as f64);
        self.http_server_response_bytes
            .observe(&[&self.app_id], res_bytes as f64);
    }

    /// One HTTP request to the app.
    pub fn http_client(&self, method: &str, path: &str, status: u16, sent: u64, received: u64, ms: f64) {
        if !self.enabled {
            return;
        }
        let path = self.paths.path(path);
        let status = status_text(status);
        let method = self.paths.method(method);
        let labels = [self.app_id.as_str(), method, &path, status.as_str()];
        self.http_client_roundtrip_latency.observe(&labels, ms);
        self.http_client_sent_bytes
            .observe(&[&self.app_id, method, &path], sent as f64);
        self.http_client_received_bytes
            .observe(&[&self.app_id], received as f64);
    }

    /// One RPC the gRPC server completed (`code` as gRPC names it, e.g. `OK`).
    pub fn grpc_served(&self, method: &str, code: &str, received: u64, sent: u64, ms: f64) {
        if !self.enabled {
            return;
        }
        let labels = [self.app_id.as_str(), method, code];
        self.grpc_server_latency.observe(&labels, ms);
        self.grpc_server_received_bytes
            .observe(&labels[..2], received as f64);
        self.grpc_server_sent_bytes.observe(&labels[..2], sent as f64);
    }

    /// One RPC made to the app or another sidecar.
    pub fn grpc_client(&self, method: &str, code: &str, ms: f64) {
        if !self.enabled {
            return;
        }
        let labels = [self.app_id.as_str(), method, code];
        self.grpc_client_roundtrip_latency.observe(&labels, ms);
    }

    /// A call this app made to `target`, and its answer (`status`: the
    /// app's HTTP status, or the gRPC code's number).
    pub fn invocation_sent(&self, target: &str, streaming: bool, status: i32, ms: f64) {
        if !self.enabled {
            return;
        }
        let kind = if streaming { "streaming" } else { "unary" };
        let mut buf = [0u8; 12];
        let status = int_label(status, &mut buf);
        self.invocation_req_sent.add(&[&self.app_id, target, kind], 1.0);
        self.invocation_res_recv
            .add(&[&self.app_id, target, status, kind], 1.0);
        self.invocation_res_recv_latency
            .observe(&[&self.app_id, target, status], ms);
    }

    /// A call `caller` made to this app, and the answer it got.
    pub fn invocation_received(&self, caller: &str, status: i32) {
        if !self.enabled {
            return;
        }
        let mut buf = [0u8; 12];
        let status = int_label(status, &mut buf);
        self.invocation_req_recv.add(&[&self.app_id, caller], 1.0);
        self.invocation_res_sent.add(&[&self.app_id, caller, status], 1.0);
    }

    /// The workload certificate was obtained at start-up.
    pub fn mtls_started(&self) {
        if self.enabled {
            self.mtls_init.add(&[&self.app_id], 1.0);
        }
    }

    /// A renewal of the workload certificate, and why it failed if it did.
    pub fn cert_renewal(&self, failure: Option<&str>) {
        if !self.enabled {
            return;
        }
        match failure {
            None => self.cert_rotated.add(&[&self.app_id], 1.0),
            Some(reason) => self.cert_rotation_failed.add(&[&self.app_id, reason], 1.0),
        }
    }
}

/// A boolean as a label.
fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// A number as a label, written into `buf` instead of a new string.
fn int_label(v: i32, buf: &mut [u8; 12]) -> &str {
    let mut n = i64::from(v).unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// An HTTP status as a label, without allocating.
fn status_text(status: u16) -> StatusText {
    let s = status.min(999);
    StatusText([
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ])
}

struct StatusText([u8; 3]);

impl StatusText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_become_labels_without_allocating() {
        let mut buf = [0u8; 12];
        assert_eq!(int_label(200, &mut buf), "200");
        assert_eq!(int_label(0, &mut buf), "0");
        assert_eq!(int_label(-1, &mut buf), "-1");
        assert_eq!(int_label(i32::MIN, &mut buf), "-2147483648");
        assert_eq!(status_text(404).as_str(), "404");
    }
}
