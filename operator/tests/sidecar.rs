//! daprd against the operator on loopback, both real, over a fake API
//! server: the sidecar proves who it is with its pod's token, gets a SPIFFE
//! certificate, reads its components and Configuration from the operator
//! API over mutual TLS, and calls another sidecar over mutual TLS.

#[path = "support/daprd.rs"]
mod daprd;
#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/settings.rs"]
mod settings;

use std::{net::SocketAddr, time::Duration};

use daprd::{NS, Sidecar, control_plane, http, scratch, sidecar};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_reads_components_and_configuration_from_the_operator() {
    let cp = control_plane(|cp| {
        cp.pod("orders", "orders-token", json!({"dapr.io/config": "appconfig"}));
        cp.api.put(
            &format!("/api/v1/namespaces/{NS}/secrets/redis"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "namespace": NS},
            "data": {"host": "MTI3LjAuMC4xOjYzNzk="}}),
        );
        cp.put(
            "components",
            "statestore",
            json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "statestore", "namespace": NS, "uid": "c1", "resourceVersion": "1"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "redisHost", "secretKeyRef": {"name": "redis", "key": "host"}},
                {"name": "keyPrefix", "value": "name"}]}}),
        );
        cp.put(
            "components",
            "elsewhere",
            json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "elsewhere", "namespace": NS, "uid": "c2", "resourceVersion": "1"},
            "spec": {"type": "state.in-memory", "version": "v1", "metadata": []},
            "scopes": ["billing"]}),
        );
        cp.put(
            "configurations",
            "appconfig",
            json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "appconfig", "namespace": NS, "uid": "f1", "resourceVersion": "1"},
            "spec": {"metric": {"enabled": false}}}),
        );
    })
    .await;
    let dir = scratch("k8s");
    let k8s = cp.daprd_args(&["--config", "appconfig", "--disable-builtin-k8s-secret-store"]);
    // The operator's caches fill from its first list; start once they have.
    let mut attempt = 0;
    let d = loop {
        let d = match sidecar(&cp, "orders", "orders-token", &dir, &k8s).await {
            Err(e) if e.contains("does not exist") && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            started => started.expect("daprd starts"),
        };
        let (_, meta) = http(d.http, "GET", "/v1.0/metadata", "").await.expect("metadata");
        let meta: Value = serde_json::from_str(&meta).expect("json");
        let names: Vec<&str> = meta["components"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        if !names.is_empty() || attempt == 20 {
            // Only the component in the app's scope, none of the embedded defaults.
            assert_eq!(names, ["statestore"], "{meta}");
            assert_eq!(meta["components"][0]["type"], "state.redis");
            break d;
        }
        attempt += 1;
        drop(d);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The Redis host came from the Kubernetes Secret, through the operator.
    let key = format!("cp-test-{}", std::process::id());
    let (status, _) = http(
        d.http,
        "POST",
        "/v1.0/state/statestore",
        &json!([{"key": key, "value": {"n": 1}}]).to_string(),
    )
    .await
    .expect("save");
    assert_eq!(status, 204);
    let (status, body) = http(d.http, "GET", &format!("/v1.0/state/statestore/{key}"), "")
        .await
        .expect("get");
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));

    // Changes reach the running sidecar: a new component within 1 s...
    let names = |d: SocketAddr| async move {
        let (_, meta) = http(d, "GET", "/v1.0/metadata", "").await.expect("metadata");
        let meta: Value = serde_json::from_str(&meta).expect("json");
        let mut names: Vec<String> = meta["components"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let until = |want: &'static [&'static str]| async move {
        let started = std::time::Instant::now();
        while names(d.http).await != want {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "components stayed {:?}, expected {want:?}",
                names(d.http).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    };
    cp.put(
        "components",
        "cache",
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "cache", "namespace": NS, "uid": "c3", "resourceVersion": "1"},
            "spec": {"type": "state.in-memory", "version": "v1", "metadata": []}}),
    );
    let took = until(&["cache", "statestore"]).await;
    assert!(took < Duration::from_secs(1), "the new component took {took:?}");
    let (status, _) = http(
        d.http,
        "POST",
        "/v1.0/state/cache",
        &json!([{"key": "k", "value": "v"}]).to_string(),
    )
    .await
    .expect("save");
    assert_eq!(status, 204);
    // ...an edit that cannot initialise leaves the working store in place...
    cp.put(
        "components",
        "statestore",
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "statestore", "namespace": NS, "uid": "c1", "resourceVersion": "2"},
            "spec": {"type": "state.postgresql", "version": "v1", "metadata": []}}),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = http(d.http, "GET", &format!("/v1.0/state/statestore/{key}"), "")
        .await
        .expect("get");
    assert_eq!((status, body.as_str()), (200, r#"{"n":1}"#));
    // ...and a deleted one goes away.
    cp.api.remove(&format!(
        "/apis/dapr.io/v1alpha1/namespaces/{NS}/components/cache"
    ));
    until(&["statestore"]).await;
    let (status, _) = http(d.http, "GET", "/v1.0/state/cache/k", "").await.expect("get");
    assert_eq!(status, 400, "a removed store still answers");

    // The Configuration from the operator turned metrics off.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", d.metrics))
            .await
            .is_err(),
        "metrics are served although the Configuration disables them"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builtin_kubernetes_secret_store_is_there_unless_disabled() {
    let cp = control_plane(|cp| cp.pod("orders", "orders-token", json!({}))).await;
    let dir = scratch("builtin");
    let d = sidecar(&cp, "orders", "orders-token", &dir, &cp.daprd_args(&[]))
        .await
        .expect("daprd starts");
    let (_, meta) = http(d.http, "GET", "/v1.0/metadata", "").await.expect("metadata");
    let meta: Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(meta["components"][0]["name"], "kubernetes", "{meta}");
    assert_eq!(meta["components"][0]["type"], "secretstores.kubernetes");
    // Outside a pod the store is there but says why it cannot answer.
    let (status, body) = http(d.http, "GET", "/v1.0/secrets/kubernetes/db", "")
        .await
        .expect("get");
    assert_eq!(status, 500);
    assert!(
        body.contains("ERR_SECRET_GET") && body.contains("KUBERNETES_SERVICE_HOST"),
        "{body}"
    );
    drop(d);

    let d = sidecar(
        &cp,
        "orders",
        "orders-token",
        &dir,
        &cp.daprd_args(&["--disable-builtin-k8s-secret-store"]),
    )
    .await
    .expect("daprd starts");
    let (status, body) = http(d.http, "GET", "/v1.0/secrets/kubernetes/db", "")
        .await
        .expect("get");
    assert_eq!(status, 500);
    assert!(body.contains("ERR_SECRET_STORES_NOT_CONFIGURED"), "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_whose_token_is_refused_does_not_start() {
    let cp = control_plane(|cp| cp.pod("orders", "orders-token", json!({}))).await;
    let dir = scratch("refused");
    let extra = ["--enable-mtls".to_string()];
    // A token that does not pass review.
    let err = sidecar(&cp, "orders", "stolen", &dir, &extra)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("refused"), "{err}");
    // A valid token used for another app-id.
    let err = sidecar(&cp, "payments", "orders-token", &dir, &extra)
        .await
        .err()
        .expect("refused");
    assert!(err.contains("refused") && err.contains("payments"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An app that answers `POST /whoami` with the caller its sidecar reports.
async fn whoami_app() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let router = axum::Router::new().route(
        "/whoami",
        axum::routing::post(|headers: axum::http::HeaderMap| async move {
            let get = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            format!("{}/{}", get("dapr-caller-namespace"), get("dapr-caller-app-id"))
        }),
    );
    tokio::spawn(async move { axum::serve(l, router).await });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_call_each_other_over_mutual_tls() {
    let cp = control_plane(|cp| {
        cp.pod("orders", "orders-token", json!({}));
        cp.pod("cart", "cart-token", json!({}));
    })
    .await;
    let dir = scratch("mtls");
    let app = whoami_app().await;
    let mtls = ["--enable-mtls".to_string()];
    let cart = sidecar(
        &cp,
        "cart",
        "cart-token",
        &dir,
        &["--enable-mtls".to_string(), "--app-port".into(), app.to_string()],
    )
    .await
    .expect("cart starts");
    let orders = sidecar(&cp, "orders", "orders-token", &dir, &mtls)
        .await
        .expect("orders starts");

    let (status, body) = http(orders.http, "POST", "/v1.0/invoke/cart/method/whoami", "{}")
        .await
        .expect("invoke");
    assert_eq!((status, body.as_str()), (200, "prod/orders"));
    // Both counted their certificate under Dapr's name.
    let (status, text) = http(
        std::net::SocketAddr::from(([127, 0, 0, 1], orders.metrics)),
        "GET",
        "/metrics",
        "",
    )
    .await
    .expect("metrics");
    assert_eq!(status, 200);
    assert!(
        text.contains("dapr_runtime_mtls_init_total{app_id=\"orders\"} 1"),
        "{text}"
    );

    // The internal port speaks only TLS, and only to holders of a certificate
    // from the same CA.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", cart.internal))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => daprs_proto::internals::service_invocation_client::ServiceInvocationClient::new(ch)
            .call_local(daprs_proto::internals::InternalInvokeRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext caller reached the internal API");

    let roots = std::sync::Arc::new(daprs_mtls::tls::roots(&cp.anchors).expect("roots"));
    let anonymous = daprs_mtls::tls::client_config(
        roots,
        daprs_mtls::Authorize::App {
            namespace: NS.into(),
            app_id: "cart".into(),
        },
        None,
    )
    .expect("config");
    let ch = daprs_mtls::net::channel(
        &format!("127.0.0.1:{}", cart.internal),
        Some(std::sync::Arc::new(anonymous)),
    )
    .expect("channel");
    let res = daprs_proto::internals::service_invocation_client::ServiceInvocationClient::new(ch)
        .call_local(daprs_proto::internals::InternalInvokeRequest::default())
        .await;
    assert!(res.is_err(), "a caller without a certificate was served");

    drop(orders);
    drop(cart);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gRPC app whose `OnInvoke` answers with the caller its sidecar reports.
async fn whoami_grpc_app() -> u16 {
    use daprs_proto::{
        common::{InvokeRequest, InvokeResponse},
        runtime::{self as rt, app_callback_server::AppCallback},
    };
    use tonic::{Request, Response, Status};
    struct App;
    #[tonic::async_trait]
    impl AppCallback for App {
        async fn on_invoke(&self, req: Request<InvokeRequest>) -> Result<Response<InvokeResponse>, Status> {
            let get = |k: &str| {
                req.metadata()
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let who = format!("{}/{}", get("dapr-caller-namespace"), get("dapr-caller-app-id"));
            Ok(Response::new(InvokeResponse {
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: who.into_bytes(),
                }),
                content_type: "text/plain".into(),
            }))
        }
        async fn list_topic_subscriptions(
            &self,
            _: Request<()>,
        ) -> Result<Response<rt::ListTopicSubscriptionsResponse>, Status> {
            Ok(Response::new(Default::default()))
        }
        async fn on_topic_event(
            &self,
            _: Request<rt::TopicEventRequest>,
        ) -> Result<Response<rt::TopicEventResponse>, Status> {
            Err(Status::unimplemented("test app"))
        }
        async fn list_input_bindings(
            &self,
            _: Request<()>,
        ) -> Result<Response<rt::ListInputBindingsResponse>, Status> {
            Ok(Response::new(Default::default()))
        }
        async fn on_binding_event(
            &self,
            _: Request<rt::BindingEventRequest>,
        ) -> Result<Response<rt::BindingEventResponse>, Status> {
            Err(Status::unimplemented("test app"))
        }
        async fn on_bulk_topic_event(
            &self,
            _: Request<rt::TopicEventBulkRequest>,
        ) -> Result<Response<rt::TopicEventBulkResponse>, Status> {
            Err(Status::unimplemented("test app"))
        }
        async fn on_job_event(
            &self,
            _: Request<rt::JobEventRequest>,
        ) -> Result<Response<rt::JobEventResponse>, Status> {
            Err(Status::unimplemented("test app"))
        }
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(rt::app_callback_server::AppCallbackServer::new(App))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    port
}

/// Calls the app's `OnInvoke` through the sidecar's gRPC port as a proxied
/// call, claiming to be `claimed` in the caller metadata.
async fn proxied_whoami(s: &Sidecar, target: &str, claimed: &str) -> Result<String, tonic::Status> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", s.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut req = tonic::Request::new(daprs_proto::common::InvokeRequest {
        method: "whoami".into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("dapr-app-id", target.parse().expect("id"));
    req.metadata_mut()
        .insert("dapr-caller-app-id", claimed.parse().expect("id"));
    let res = daprs_proto::runtime::app_callback_client::AppCallbackClient::new(ch)
        .on_invoke(req)
        .await?;
    Ok(String::from_utf8_lossy(&res.into_inner().data.unwrap_or_default().value).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_grpc_over_mutual_tls_obeys_access_control_by_proven_identity() {
    let cp = control_plane(|cp| {
        cp.pod("inventory", "inventory-token", json!({}));
        cp.pod("orders", "orders-token", json!({}));
        cp.pod("billing", "billing-token", json!({}));
    })
    .await;
    let dir = scratch("mtls-acl");
    let config = dir.join("acl.yaml");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        &config,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: acl\nspec:\n  accessControl:\n    defaultAction: deny\n    trustDomain: public\n    policies:\n    - appId: orders\n      defaultAction: deny\n      trustDomain: public\n      namespace: {NS}\n      operations:\n      - name: /dapr.proto.runtime.v1.AppCallback/OnInvoke\n        action: allow\n"
        ),
    )
    .expect("config");
    let app = whoami_grpc_app().await;
    let mtls = ["--enable-mtls".to_string()];
    let _inventory = sidecar(
        &cp,
        "inventory",
        "inventory-token",
        &dir,
        &[
            "--enable-mtls".to_string(),
            "--app-port".into(),
            app.to_string(),
            "--app-protocol".into(),
            "grpc".into(),
            "--config".into(),
            config.display().to_string(),
        ],
    )
    .await
    .expect("inventory starts");
    let orders = sidecar(&cp, "orders", "orders-token", &dir, &mtls)
        .await
        .expect("orders starts");
    let billing = sidecar(&cp, "billing", "billing-token", &dir, &mtls)
        .await
        .expect("billing starts");

    // Allowed, and the app hears the caller its certificate proves.
    let who = proxied_whoami(&orders, "inventory", "someone-else")
        .await
        .expect("allowed");
    assert_eq!(who, format!("{NS}/orders"));
    // Denied: billing has no policy, and claiming to be orders changes nothing.
    let err = proxied_whoami(&billing, "inventory", "orders")
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("billing"), "{}", err.message());
    // Orders may not reach other operations (HTTP invocation of a method).
    let (status, body) = http(orders.http, "POST", "/v1.0/invoke/inventory/method/whoami", "{}")
        .await
        .expect("invoke");
    assert_eq!(status, 403, "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_loads_resiliency_from_the_operator_by_scope() {
    let resiliency = |name: &str, scopes: Value, trip: &str| {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Resiliency",
            "metadata": {"name": name, "namespace": NS, "uid": format!("r-{name}"), "resourceVersion": "1"},
            "spec": {"policies": {"circuitBreakers": {"cb": {"trip": trip}}},
                     "targets": {"apps": {"cart": {"circuitBreaker": "cb"}}}},
            "scopes": scopes})
    };
    let cp = control_plane(|cp| {
        cp.pod("orders", "orders-token", json!({}));
        cp.pod("billing", "billing-token", json!({}));
        // Valid for every app; invalid, but only for billing.
        cp.put(
            "resiliencies",
            "shared",
            resiliency("shared", json!([]), "consecutiveFailures > 2"),
        );
        cp.put(
            "resiliencies",
            "broken",
            resiliency("broken", json!(["billing"]), "failures > 2"),
        );
    })
    .await;
    let dir = scratch("k8s-resiliency");
    let k8s = cp.daprd_args(&["--disable-builtin-k8s-secret-store"]);
    // The operator's caches fill from its first list: billing's sidecar
    // refuses to start once the broken policy is there, naming its field.
    let mut refusal = String::new();
    for _ in 0..50 {
        match sidecar(&cp, "billing", "billing-token", &dir, &k8s).await {
            Err(e) if e.contains("Resiliency broken") => {
                refusal = e;
                break;
            }
            Err(_) => {}
            Ok(started) => drop(started),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        refusal.contains("circuitBreakers.cb.trip"),
        "billing started: {refusal:?}"
    );
    // orders is out of the broken policy's scope and starts with the shared one.
    let orders = sidecar(&cp, "orders", "orders-token", &dir, &k8s).await;
    assert!(orders.is_ok(), "{:?}", orders.err());
    let _ = std::fs::remove_dir_all(&dir);
}
