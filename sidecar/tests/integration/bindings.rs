//! Bindings through daprd: output calls over HTTP and gRPC (local storage,
//! Redis, HTTP), input events to an HTTP app (after its OPTIONS answer) and
//! to a gRPC app (after ListInputBindings), a refused event delivered again
//! from a RabbitMQ queue, and Dapr's errors.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::any};
use daprs_proto::runtime::InvokeBindingRequest;
use serde_json::json;

use super::{
    harness::{Daprd, Spec, resources, temp_dir},
    pubsub_grpc::GrpcSubscriber,
};

fn components(home: &std::path::Path, queue: &str) -> String {
    format!(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: files}}
spec:
  type: bindings.localstorage
  version: v1
  metadata: [{{name: rootPath, value: "{root}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: cache}}
spec:
  type: bindings.redis
  version: v1
  metadata: [{{name: redisHost, value: "127.0.0.1:6379"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: ticker}}
spec:
  type: bindings.cron
  version: v1
  metadata:
  - {{name: schedule, value: "@every 200ms"}}
  - {{name: route, value: /ticks}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: unwanted}}
spec:
  type: bindings.cron
  version: v1
  metadata: [{{name: schedule, value: "@every 100ms"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: orders}}
spec:
  type: bindings.rabbitmq
  version: v1
  metadata:
  - {{name: host, value: "amqp://guest:guest@127.0.0.1:5672"}}
  - {{name: queueName, value: "{queue}"}}
  - {{name: durable, value: "false"}}
  - {{name: deleteWhenUnused, value: "true"}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: statestore}}
spec: {{type: state.in-memory, version: v1}}
"#,
        root = home.join("files").display()
    )
}

/// An HTTP app taking `/ticks` and `/orders` events; it refuses the first order.
#[derive(Clone, Default)]
struct App {
    got: Arc<Mutex<Vec<(String, String, String)>>>,
}

async fn app() -> (App, u16) {
    let app = App::default();
    async fn handle(State(app): State<App>, req: axum::extract::Request) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
        if path == "/unwanted" {
            return StatusCode::NOT_FOUND.into_response();
        }
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let mut got = app.got.lock().expect("lock");
        got.push((
            method.clone(),
            path.clone(),
            String::from_utf8_lossy(&body).into_owned(),
        ));
        let orders = got
            .iter()
            .filter(|(m, p, _)| m == "POST" && p == "/orders")
            .count();
        if method == "POST" && path == "/orders" && orders == 1 {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if method == "POST" && path == "/ticks" {
            // An answer that saves a state and sends data on to another binding.
            return axum::Json(json!({
                "storeName": "statestore",
                "state": [{"key": "last-tick", "value": {"seen": true}}],
                "to": ["files"],
                "data": {"from": "ticks"},
            }))
            .into_response();
        }
        StatusCode::OK.into_response()
    }
    let router = Router::new().fallback(any(handle)).with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, port)
}

impl App {
    fn posts(&self, path: &str) -> Vec<String> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(m, p, _)| m == "POST" && p == path)
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    async fn wait(&self, path: &str, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let got = self.posts(path);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{path}: {} of {n} events", self.posts(path).len());
    }
}

#[tokio::test]
async fn output_and_input_bindings_with_an_http_app() {
    let home = temp_dir("bindings");
    let queue = format!("daprs-it-orders-{}", std::process::id());
    let res = resources(&home, &components(&home, &queue));
    let (app, port) = app().await;
    let mut spec = Spec::new("binder", &home);
    spec.resources = Some(&res);
    spec.app_port = Some(port);
    let d = Daprd::start(spec).await;

    // Output over HTTP: data arrives as its JSON text.
    let r = d
        .send(
            "POST",
            "/v1.0/bindings/files",
            &[],
            json!({"operation": "create", "data": {"n": 1}, "metadata": {"fileName": "a.json"}}).to_string(),
        )
        .await;
    assert_eq!(
        (r.status, r.header("metadata.fileName")),
        (200, Some("a.json")),
        "{}",
        r.text()
    );
    let r = d
        .send(
            "PUT",
            "/v1.0/bindings/files",
            &[],
            json!({"operation": "get", "metadata": {"fileName": "a.json"}}).to_string(),
        )
        .await;
    assert_eq!((r.status, r.json()), (200, json!({"n": 1})));
    let key = format!("bind-{}", std::process::id());
    let r = d
        .send(
            "POST",
            "/v1.0/bindings/cache",
            &[],
            json!({"operation": "create", "data": "hi", "metadata": {"key": key}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 204);
    // Over gRPC the data is raw bytes; the quoted string written above reads back quoted.
    let mut grpc = d.grpc().await;
    let got = grpc
        .invoke_binding(InvokeBindingRequest {
            name: "cache".into(),
            data: Default::default(),
            metadata: [("key".to_string(), key.clone())].into(),
            operation: "get".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got.data[..], b"\"hi\"");

    // Input: the cron binding's events reach /ticks; `unwanted` answered 404 to OPTIONS.
    app.wait("/ticks", 2).await;
    assert!(
        app.got
            .lock()
            .expect("lock")
            .iter()
            .any(|(m, p, _)| m == "OPTIONS" && p == "/ticks")
    );
    assert!(app.posts("/unwanted").is_empty());
    // The app's answers were carried out: a state saved, data sent on.
    let r = d.get("/v1.0/state/statestore/last-tick").await.expect("state");
    assert_eq!((r.status, r.json()), (200, json!({"seen": true})));
    // Counted under Dapr's names, as the binding and the app saw them; an
    // event is counted once the app's answer has been carried out, a moment
    // after the app has seen it.
    let mut ticks = None;
    for _ in 0..50 {
        let m = super::metrics::scrape(&d).await;
        ticks = super::metrics::value(
            &m,
            "dapr_component_input_binding_count",
            &[("component", "ticker"), ("success", "true")],
        );
        if ticks >= Some(2.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ticks >= Some(2.0), "{ticks:?}");
    let r = d
        .send(
            "POST",
            "/v1.0/bindings/files",
            &[],
            json!({"operation": "list"}).to_string(),
        )
        .await;
    assert!(
        r.json().as_array().is_some_and(|files| files.len() >= 2),
        "{}",
        r.text()
    );
    // A queued order the app refused comes again.
    let r = d
        .send(
            "POST",
            "/v1.0/bindings/orders",
            &[],
            json!({"operation": "create", "data": {"order": 7}}).to_string(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let orders = app.wait("/orders", 2).await;
    assert_eq!(
        (orders[0].as_str(), orders[1].as_str()),
        (r#"{"order":7}"#, r#"{"order":7}"#)
    );

    // Errors.
    for (name, body, status) in [
        ("nobinding", json!({"operation": "create"}), 500),
        ("statestore", json!({"operation": "create"}), 500),
        ("ticker", json!({"operation": "create"}), 400),
        ("files", json!({"operation": "explode"}), 400),
        (
            "files",
            json!({"operation": "get", "metadata": {"fileName": "../../etc/passwd"}}),
            400,
        ),
        ("files", json!({"data": 1}), 400),
    ] {
        let r = d
            .send("POST", &format!("/v1.0/bindings/{name}"), &[], body.to_string())
            .await;
        let want = if status == 400 && body.get("operation").is_none() {
            "ERR_MALFORMED_REQUEST"
        } else {
            "ERR_INVOKE_OUTPUT_BINDING"
        };
        assert_eq!(
            (r.status, r.error_code()),
            (status, want.to_string()),
            "{name} {body}"
        );
    }
    let r = d
        .send(
            "POST",
            "/v1.0/bindings/statestore",
            &[],
            json!({"operation": "create"}).to_string(),
        )
        .await;
    assert!(r.text().contains("state.in-memory"), "{}", r.text());
    let s = grpc
        .invoke_binding(InvokeBindingRequest {
            name: "files".into(),
            operation: "explode".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad operation");
    assert_eq!(s.code(), tonic::Code::InvalidArgument);

    let meta = d.get("/v1.0/metadata").await.expect("metadata").json();
    let caps = |n: &str| {
        meta["components"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == n)
            .map(|c| c["capabilities"].clone())
    };
    assert_eq!(caps("ticker"), Some(json!(["INPUT_BINDING", "OUTPUT_BINDING"])));
    assert_eq!(caps("orders"), Some(json!(["INPUT_BINDING", "OUTPUT_BINDING"])));
    assert_eq!(caps("files"), Some(json!(["OUTPUT_BINDING"])));
}

#[tokio::test]
async fn grpc_apps_get_on_binding_event_for_the_bindings_they_list() {
    let home = temp_dir("bindings-grpc");
    let res = resources(
        &home,
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: ticker}
spec:
  type: bindings.cron
  version: v1
  metadata: [{name: schedule, value: "@every 200ms"}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: other}
spec:
  type: bindings.cron
  version: v1
  metadata: [{name: schedule, value: "@every 100ms"}]
"#,
    );
    let app = GrpcSubscriber::with_input_bindings(&["ticker"]);
    let port = app.serve().await;
    let mut spec = Spec::new("binder-grpc", &home);
    spec.resources = Some(&res);
    spec.app_port = Some(port);
    spec.protocol = "grpc";
    let _d = Daprd::start(spec).await;
    for _ in 0..100 {
        if app.binding_events.lock().expect("lock").len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = app.binding_events.lock().expect("lock").clone();
    assert!(events.len() >= 2, "{events:?}");
    assert!(
        events.iter().all(|e| e.name == "ticker"),
        "only the listed binding"
    );
    assert!(events[0].metadata.contains_key("readTimeUTC"));
}

/// `pem` indented as the body of a `value: |` block in component metadata.
fn yaml_block(pem: &str) -> String {
    pem.lines().map(|l| format!("      {l}\n")).collect()
}

#[tokio::test]
async fn the_http_binding_trusts_the_ca_it_is_given_and_sends_its_token() {
    let (port, ca) = super::apps::https_app_with_ca().await;
    let home = temp_dir("bindings-tls");
    let indented = yaml_block(&ca);
    let res = resources(
        &home,
        &format!(
            r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: secure}}
spec:
  type: bindings.http
  version: v1
  metadata:
  - name: url
    value: "https://127.0.0.1:{port}"
  - name: MTLSRootCA
    value: |
{indented}  - {{name: securityToken, value: "s3cret"}}
  - {{name: securityTokenHeader, value: "x-token"}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: untrusting}}
spec:
  type: bindings.http
  version: v1
  metadata: [{{name: url, value: "https://127.0.0.1:{port}"}}]
"#
        ),
    );
    let mut spec = Spec::new("tls-binder", &home);
    spec.resources = Some(&res);
    let d = Daprd::start(spec).await;
    let call = json!({"operation": "post", "data": "over tls", "metadata": {"path": "orders"}}).to_string();
    let r = d.send("POST", "/v1.0/bindings/secure", &[], call.clone()).await;
    assert_eq!(
        (r.status, r.header("metadata.statusCode")),
        (200, Some("200")),
        "{}",
        r.text()
    );
    let echo = r.json();
    assert_eq!(
        (echo["path"].as_str(), echo["body"].as_str()),
        (Some("/orders"), Some("\"over tls\""))
    );
    assert_eq!(echo["headers"]["x-token"], "s3cret");
    // Without the CA the server's certificate is not trusted.
    let r = d.send("POST", "/v1.0/bindings/untrusting", &[], call).await;
    assert_eq!(
        (r.status, r.error_code()),
        (500, "ERR_INVOKE_OUTPUT_BINDING".to_string())
    );
    assert!(r.text().to_lowercase().contains("certificate"), "{}", r.text());
}

#[tokio::test]
async fn the_http_binding_presents_its_client_certificate_to_a_server_that_requires_one() {
    let (port, server_ca, (cert, key)) = super::apps::mtls_app().await;
    let home = temp_dir("bindings-mtls");
    let (server_ca, cert, key) = (yaml_block(&server_ca), yaml_block(&cert), yaml_block(&key));
    let res = resources(
        &home,
        &format!(
            r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: identified}}
spec:
  type: bindings.http
  version: v1
  metadata:
  - name: url
    value: "https://127.0.0.1:{port}"
  - name: MTLSRootCA
    value: |
{server_ca}  - name: MTLSClientCert
    value: |
{cert}  - name: MTLSClientKey
    value: |
{key}---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: anonymous}}
spec:
  type: bindings.http
  version: v1
  metadata:
  - name: url
    value: "https://127.0.0.1:{port}"
  - name: MTLSRootCA
    value: |
{server_ca}"#
        ),
    );
    let mut spec = Spec::new("mtls-binder", &home);
    spec.resources = Some(&res);
    let d = Daprd::start(spec).await;
    let call = json!({"operation": "post", "data": "who am i", "metadata": {"path": "whoami"}}).to_string();
    let r = d
        .send("POST", "/v1.0/bindings/identified", &[], call.clone())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/whoami");
    // Without a certificate of its own the server refuses the handshake.
    let r = d.send("POST", "/v1.0/bindings/anonymous", &[], call).await;
    assert_eq!(
        (r.status, r.error_code()),
        (500, "ERR_INVOKE_OUTPUT_BINDING".to_string()),
        "{}",
        r.text()
    );
}
