//! `/metrics` after real traffic, read with a Prometheus text parser: the
//! names, labels and counts Dapr's dashboards query.

use daprs_proto::{
    common::{HttpExtension, InvokeRequest},
    runtime::InvokeServiceRequest,
};
use prometheus_parse::{Scrape, Value};

use super::{
    apps::http_app,
    harness::{Daprd, Spec, resources, temp_dir},
};

pub async fn scrape(d: &Daprd) -> Scrape {
    let url = format!("http://127.0.0.1:{}/metrics", d.metrics_port);
    let r = super::harness::send("GET", &url, &[], Default::default())
        .await
        .expect("scrape");
    assert_eq!(r.status, 200);
    let text = r.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map_or(0.0, |c| c.count),
            Value::Summary(_) => f64::NAN,
        })
}

fn series(s: &Scrape, name: &str) -> usize {
    s.samples.iter().filter(|x| x.metric == name).count()
}

const RESOURCES: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
  metadata: []
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
  metadata: []
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: env
spec:
  type: secretstores.local.env
  version: v1
  metadata: []
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: patient
spec:
  policies:
    timeouts:
      general: 5s
  targets:
    apps:
      metrics-target:
        timeout: general
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: broken
spec:
  type: state.postgresql
  version: v1
  ignoreErrors: true
  metadata: []
"#;

#[tokio::test]
async fn dapr_metrics_after_real_traffic() {
    let home = temp_dir("metrics");
    let app = http_app().await;
    let target = Daprd::start(Spec {
        app_port: Some(app),
        ..Spec::new("metrics-target", &home)
    })
    .await;
    let res = resources(&home, RESOURCES);
    let caller = Daprd::start(Spec {
        resources: Some(&res),
        ..Spec::new("metrics-caller", &home)
    })
    .await;

    for _ in 0..3 {
        let r = caller
            .get("/v1.0/invoke/metrics-target/method/echo")
            .await
            .expect("invoke");
        assert_eq!(r.status, 200);
    }
    let mut grpc = caller.grpc().await;
    grpc.invoke_service(InvokeServiceRequest {
        id: "metrics-target".into(),
        message: Some(InvokeRequest {
            method: "echo".into(),
            http_extension: Some(HttpExtension {
                verb: 1,
                querystring: String::new(),
            }),
            ..Default::default()
        }),
    })
    .await
    .expect("InvokeService");
    let r = caller
        .send(
            "POST",
            "/v1.0/state/statestore",
            &[],
            r#"[{"key":"k","value":1}]"#,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        caller.get("/v1.0/state/statestore/k").await.expect("get").status,
        200
    );
    let r = caller
        .send("POST", "/v1.0/publish/pubsub/orders", &[], r#"{"n":1}"#)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        caller.get("/v1.0/secrets/env/PATH").await.expect("secret").status,
        200
    );

    let s = scrape(&caller).await;
    let app_id = ("app_id", "metrics-caller");
    // Low cardinality by default: the path label is empty.
    assert!(
        value(
            &s,
            "dapr_http_server_request_count",
            &[app_id, ("method", "GET"), ("path", ""), ("status", "200")]
        ) >= Some(4.0)
    );
    assert!(
        value(
            &s,
            "dapr_http_server_latency_count",
            &[app_id, ("method", "POST"), ("status", "204")]
        )
        .is_some()
    );
    assert_eq!(
        value(
            &s,
            "dapr_runtime_service_invocation_req_sent_total",
            &[app_id, ("dst_app_id", "metrics-target"), ("type", "unary")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &s,
            "dapr_runtime_service_invocation_res_recv_total",
            &[
                app_id,
                ("src_app_id", "metrics-target"),
                ("status", "200"),
                ("type", "unary")
            ]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &s,
            "dapr_runtime_service_invocation_res_recv_latency_ms_count",
            &[app_id, ("src_app_id", "metrics-target"), ("status", "200")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &s,
            "dapr_grpc_io_server_completed_rpcs",
            &[
                app_id,
                ("grpc_server_method", "/dapr.proto.runtime.v1.Dapr/InvokeService"),
                ("grpc_server_status", "OK")
            ]
        ),
        Some(1.0)
    );
    for (op, n) in [("set", 1.0), ("get", 1.0)] {
        assert_eq!(
            value(
                &s,
                "dapr_component_state_count",
                &[
                    app_id,
                    ("component", "statestore"),
                    ("operation", op),
                    ("success", "true")
                ]
            ),
            Some(n),
            "{op}"
        );
    }
    assert_eq!(
        value(
            &s,
            "dapr_component_pubsub_egress_count",
            &[
                app_id,
                ("component", "pubsub"),
                ("topic", "orders"),
                ("success", "true")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "dapr_component_secret_count",
            &[
                app_id,
                ("component", "env"),
                ("operation", "get"),
                ("success", "true")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "dapr_resiliency_loaded", &[app_id, ("name", "patient")]),
        Some(1.0)
    );
    // The process's own figures, which dashboards chart a sidecar's CPU and memory from.
    assert!(value(&s, "process_resident_memory_bytes", &[]) > Some(1e6));
    // Counted in clock ticks of 10 ms, which a young sidecar may not have used up yet.
    assert!(value(&s, "process_cpu_seconds_total", &[]).is_some_and(|v| v >= 0.0));
    assert!(value(&s, "process_open_fds", &[]) > Some(3.0));
    assert_eq!(
        value(
            &s,
            "dapr_runtime_component_init_total",
            &[app_id, ("component", "state.in-memory")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "dapr_runtime_component_init_fail_total",
            &[
                app_id,
                ("component", "state.postgresql"),
                ("reason", "init"),
                ("componentName", "broken")
            ]
        ),
        Some(1.0)
    );

    // The callee counts what it received, from whom, and its internal RPCs.
    let t = scrape(&target).await;
    let app_id = ("app_id", "metrics-target");
    assert_eq!(
        value(
            &t,
            "dapr_runtime_service_invocation_req_recv_total",
            &[app_id, ("src_app_id", "metrics-caller")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &t,
            "dapr_runtime_service_invocation_res_sent_total",
            &[app_id, ("dst_app_id", "metrics-caller"), ("status", "200")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &t,
            "dapr_http_client_completed_count",
            &[app_id, ("method", "GET"), ("path", ""), ("status", "200")]
        ),
        Some(4.0)
    );
    assert!(
        value(
            &t,
            "dapr_grpc_io_server_completed_rpcs",
            &[app_id, ("grpc_server_status", "OK")]
        ) >= Some(4.0)
    );

    // 10,000 distinct paths leave one series per method and status.
    for i in 0..10_000 {
        let _ = caller.get(&format!("/v1.0/state/statestore/key-{i}")).await;
    }
    let s = scrape(&caller).await;
    assert!(
        series(&s, "dapr_http_server_request_count") <= 4,
        "{} series",
        series(&s, "dapr_http_server_request_count")
    );
    assert!(series(&s, "dapr_component_state_count") <= 4);
}

#[tokio::test]
async fn configuration_rules_rewrite_labels_and_bad_patterns_stop_start_up() {
    let home = temp_dir("metric-rules");
    let config = home.join("config.yaml");
    let rules = |pattern: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: rules\nspec:\n  metric:\n    enabled: true\n    rules:\n    - name: dapr_http_server_request_count\n      labels:\n      - name: method\n        regex:\n          READ: \"{pattern}\"\n"
        )
    };
    std::fs::write(&config, rules("^(GET|HEAD)$")).expect("config");
    let d = Daprd::start(Spec {
        extra: vec!["--config".into(), config.display().to_string()],
        ..Spec::new("metric-rules", &home)
    })
    .await;
    for _ in 0..2 {
        assert_eq!(d.get("/v1.0/metadata").await.expect("metadata").status, 200);
    }
    let s = scrape(&d).await;
    assert_eq!(
        value(
            &s,
            "dapr_http_server_request_count",
            &[("method", "READ"), ("status", "200")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "dapr_http_server_request_count", &[("method", "GET")]),
        None
    );

    std::fs::write(&config, rules("([unclosed")).expect("config");
    let out = super::harness::start_fails(
        &home,
        &["--app-id", "bad-rules", "--config", &config.display().to_string()],
    );
    assert!(out.contains("spec.metric.rules[0].labels[0].regex"), "{out}");
}
