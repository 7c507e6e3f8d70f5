//! Start-up, flags, components that fail, health, metadata, tokens and shutdown.

use std::{process::Command, time::Duration};

use super::{
    flags::daprd_exit,
    harness::{Daprd, Spec, free_port, free_ports, resources, temp_dir},
};

const BROKEN_REDIS: &str = "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: broken
spec:
  type: state.redis
  version: v1
  initTimeout: 2s
  ignoreErrors: IGNORE
  metadata:
  - name: redisHost
    value: 127.0.0.1:PORT
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: good
spec:
  type: state.in-memory
  version: v1
";

#[tokio::test]
async fn failing_components_stop_startup_unless_errors_are_ignored() {
    let home = temp_dir("broken");
    let closed = free_port().to_string();
    let fatal = resources(
        &home,
        &BROKEN_REDIS.replace("IGNORE", "false").replace("PORT", &closed),
    );
    let [http, grpc, metrics] = free_ports();
    let out = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args([
            "--app-id",
            "broken",
            "--dapr-http-port",
            &http.to_string(),
            "--dapr-grpc-port",
            &grpc.to_string(),
        ])
        .args(["--metrics-port", &metrics.to_string()])
        .arg("--resources-path")
        .arg(&fatal)
        .env("DAPRS_HOME", &home)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("component broken (state.redis) failed to initialise"),
        "{err}"
    );

    let lenient = resources(
        &home,
        &BROKEN_REDIS.replace("IGNORE", "true").replace("PORT", &closed),
    );
    let d = Daprd::start(Spec {
        resources: Some(&lenient),
        ..Spec::new("lenient", &home)
    })
    .await;
    let meta = d.send("GET", "/v1.0/metadata", &[], "").await.json();
    let names: Vec<&str> = meta["components"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["good"]);
    let r = d.send("GET", "/v1.0/state/broken/k", &[], "").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_STATE_STORE_NOT_FOUND")
    );
    assert_eq!(d.send("GET", "/v1.0/state/good/k", &[], "").await.status, 204);
}

#[tokio::test]
async fn no_state_store_configured() {
    let home = temp_dir("nostores");
    let empty = resources(&home, "# nothing here\n");
    let d = Daprd::start(Spec {
        resources: Some(&empty),
        ..Spec::new("bare", &home)
    })
    .await;
    let r = d.send("GET", "/v1.0/state/any/k", &[], "").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_STATE_STORE_NOT_CONFIGURED")
    );
}

#[tokio::test]
async fn healthz_waits_for_the_app_port() {
    let home = temp_dir("health");
    let app_port = free_port();
    let d = Daprd::start(Spec {
        app_port: Some(app_port),
        ..Spec::new("waiting", &home)
    })
    .await;
    assert_eq!(
        d.get("/v1.0/healthz/outbound").await.expect("outbound").status,
        204
    );
    let r = d.get("/v1.0/healthz").await.expect("healthz");
    assert_eq!(r.status, 500);
    assert_eq!(r.error_code(), "ERR_HEALTH_NOT_READY");
    // An app with no routes: GET /dapr/subscribe finds none.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", app_port))
        .await
        .expect("app port");
    let app = tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
    let mut ready = false;
    for _ in 0..100 {
        if d.get("/v1.0/healthz").await.expect("healthz").status == 204 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "healthz turns 204 once the app listens");
    assert_eq!(
        d.get("/v1.0/healthz?appid=someone-else")
            .await
            .expect("h")
            .error_code(),
        "ERR_HEALTH_APPID_NOT_MATCH"
    );
    app.abort();
}

/// A gRPC app that accepts connections but never answers is given up on
/// when it does not list its subscriptions in time: the sidecar still
/// becomes ready.
#[tokio::test]
async fn an_app_that_never_answers_does_not_hold_readiness_back() {
    let home = temp_dir("mute-app");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_port = listener.local_addr().expect("addr").port();
    let app = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let d = Daprd::start(Spec {
        app_port: Some(app_port),
        protocol: "grpc",
        ..Spec::new("mute", &home)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while d.get("/v1.0/healthz").await.map(|r| r.status) != Ok(204) {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.abort();
}

#[tokio::test]
async fn metadata_api_over_http_and_grpc() {
    let home = temp_dir("metadata");
    let d = Daprd::start(Spec::new("meta-app", &home)).await;
    let r = d.send("PUT", "/v1.0/metadata/team", &[], "payments").await;
    assert_eq!(r.status, 204);
    let v = d.send("GET", "/v1.0/metadata", &[], "").await.json();
    assert_eq!(v["id"], "meta-app");
    assert_eq!(v["extended"]["team"], "payments");
    assert!(v["extended"]["daprRuntimeVersion"].is_string());
    let comps = v["components"].as_array().expect("components");
    assert!(
        comps.iter().any(|c| c["name"] == "statestore"
            && c["type"] == "state.sqlite"
            && c["capabilities"][0] == "ETAG")
    );
    let mut c = d.grpc().await;
    c.set_metadata(daprs_proto::runtime::SetMetadataRequest {
        key: "k".into(),
        value: "v".into(),
    })
    .await
    .expect("set");
    let m = c
        .get_metadata(daprs_proto::runtime::GetMetadataRequest {})
        .await
        .expect("get")
        .into_inner();
    assert_eq!(m.id, "meta-app");
    assert_eq!(m.extended_metadata.get("k").map(String::as_str), Some("v"));
    assert_eq!(
        m.extended_metadata.get("team").map(String::as_str),
        Some("payments")
    );
}

#[tokio::test]
async fn api_token_is_required_except_for_health() {
    let home = temp_dir("token");
    let d = Daprd::start(Spec {
        env: vec![("DAPR_API_TOKEN", "s3cret".into())],
        ..Spec::new("guarded", &home)
    })
    .await;
    let r = d.send("GET", "/v1.0/metadata", &[], "").await;
    assert_eq!((r.status, r.text().as_str()), (401, "invalid api token"));
    assert_eq!(
        d.send("GET", "/v1.0/metadata", &[("dapr-api-token", "wrong")], "")
            .await
            .status,
        401
    );
    assert_eq!(
        d.send("GET", "/v1.0/metadata", &[("dapr-api-token", "s3cret")], "")
            .await
            .status,
        200
    );
    assert_eq!(d.send("GET", "/v1.0/healthz", &[], "").await.status, 204);
    let mut c = d.grpc().await;
    let err = c
        .get_metadata(daprs_proto::runtime::GetMetadataRequest {})
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(daprs_proto::runtime::GetMetadataRequest {});
    req.metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().expect("value"));
    assert!(c.get_metadata(req).await.is_ok());
}

#[tokio::test]
async fn shutdown_api_stops_the_process_cleanly() {
    let home = temp_dir("shutdown");
    let mut d = Daprd::start(Spec::new("stopper", &home)).await;
    let registry = home.join("registry/default/stopper");
    assert_eq!(
        std::fs::read_dir(&registry).map(|d| d.count()).unwrap_or(0),
        1,
        "registered while running"
    );
    assert_eq!(d.send("POST", "/v1.0/shutdown", &[], "").await.status, 204);
    let status = d.wait_exit(Duration::from_secs(10)).await.expect("exited");
    assert!(status.success());
    assert_eq!(
        std::fs::read_dir(&registry).map(|d| d.count()).unwrap_or(0),
        0,
        "unregistered on exit"
    );
}

#[tokio::test]
async fn grpc_reflection_and_health_are_served() {
    let home = temp_dir("reflection");
    let d = Daprd::start(Spec::new("reflect", &home)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", d.grpc_port))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    // grpc.health.v1.Health/Check with an empty service name.
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let res = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            }),
            path,
            codec,
        )
        .await
        .expect("health");
    assert_eq!(res.into_inner().status, 1, "SERVING");
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

#[tokio::test]
async fn sidecars_started_together_share_the_default_store() {
    let home = temp_dir("together");
    let ids = ["one", "two", "three", "four"];
    let started =
        futures_util::future::join_all(ids.iter().map(|id| Daprd::start(Spec::new(id, &home)))).await;
    // All four opened one fresh sqlite file at the same moment. Keys are
    // prefixed by app-id, so the same key holds four separate values.
    for (d, id) in started.iter().zip(ids) {
        let saved = d
            .send(
                "POST",
                "/v1.0/state/statestore",
                &[("content-type", "application/json")],
                format!(r#"[{{"key":"k","value":"{id}"}}]"#),
            )
            .await;
        assert_eq!(saved.status, 204, "{}", saved.text());
    }
    for (d, id) in started.iter().zip(ids) {
        let got = d.get("/v1.0/state/statestore/k").await.expect("get");
        assert_eq!(got.json(), serde_json::json!(id));
    }
}

#[tokio::test]
async fn worker_threads_come_from_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args(["--app-id", "x"])
        .env("DAPRS_WORKER_THREADS", "zero")
        .output()
        .expect("run daprd");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DAPRS_WORKER_THREADS"));

    let home = temp_dir("threads");
    let mut spec = Spec::new("threaded", &home);
    spec.env.push(("DAPRS_WORKER_THREADS", "2".into()));
    let d = Daprd::start(spec).await;
    assert_eq!(d.get("/v1.0/healthz").await.expect("healthz").status, 204);
}

const CONFIG: &str = "apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: locked-down
spec:
  metric:
    enabled: false
  components:
    deny:
      - state.in-memory
  api:
    allowed:
      - name: state
        version: v1.0
        protocol: http
      - name: metadata
        version: v1
        protocol: grpc
";

const TWO_STORES: &str = "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: disk
spec:
  type: state.sqlite
  version: v1
  metadata:
  - name: connectionString
    value: \":memory:\"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mem
spec:
  type: state.in-memory
  version: v1
  ignoreErrors: true
";

#[tokio::test]
async fn config_file_limits_apis_components_and_metrics() {
    let home = temp_dir("config");
    let config = home.join("config.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let d = Daprd::start(Spec {
        resources: Some(&resources(&home, TWO_STORES)),
        extra: vec!["--config".into(), config.display().to_string()],
        ..Spec::new("configured", &home)
    })
    .await;

    // HTTP: state is enabled; everything else behaves as a route that does
    // not exist, and with invocation disabled too that is a bare 404.
    let saved = d
        .send(
            "POST",
            "/v1.0/state/disk",
            &[("content-type", "application/json")],
            r#"[{"key":"k","value":1}]"#,
        )
        .await;
    assert_eq!(saved.status, 204, "{}", saved.text());
    let meta = d.get("/v1.0/metadata").await.expect("metadata");
    assert_eq!(meta.status, 404);
    assert_eq!(meta.text(), "404 page not found");
    let invoke = d.send("POST", "/v1.0/invoke/other/method/x", &[], "").await;
    assert_eq!(invoke.status, 404);
    assert_eq!(d.get("/v1.0/healthz").await.expect("healthz").status, 204);

    // The denied component type was not loaded; ignoreErrors kept the sidecar up.
    let missing = d.get("/v1.0/state/mem/k").await.expect("get");
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert_eq!(missing.error_code(), "ERR_STATE_STORE_NOT_FOUND");
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(log.contains("denied by the Configuration"), "{log}");

    // gRPC: only metadata is enabled.
    let mut client = d.grpc().await;
    let md = client
        .get_metadata(daprs_proto::runtime::GetMetadataRequest {})
        .await
        .expect("metadata");
    assert_eq!(md.into_inner().id, "configured");
    let err = client
        .get_state(daprs_proto::runtime::GetStateRequest {
            store_name: "disk".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("state is not enabled over gRPC");
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    // spec.metric.enabled: false turns the metrics endpoint off.
    assert!(std::net::TcpStream::connect(("127.0.0.1", d.metrics_port)).is_err());

    // A denylist: the denied route falls through to header-form invocation,
    // which answers as Dapr does for a request without a target app.
    let deny = home.join("deny.yaml");
    std::fs::write(
        &deny,
        "kind: Configuration\napiVersion: dapr.io/v1alpha1\nmetadata:\n  name: d\nspec:\n  api:\n    denied:\n    - name: state\n      version: v1.0\n",
    )
    .expect("write config");
    let d2 = Daprd::start(Spec {
        extra: vec!["--config".into(), deny.display().to_string()],
        ..Spec::new("configured-deny", &home)
    })
    .await;
    let r = d2.get("/v1.0/state/statestore/k").await.expect("get");
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
    assert_eq!(d2.get("/v1.0/metadata").await.expect("metadata").status, 200);
    assert!(std::net::TcpStream::connect(("127.0.0.1", d2.metrics_port)).is_ok());
}

#[test]
fn config_file_errors_stop_startup() {
    let home = temp_dir("config-bad");
    let missing = home.join("nope.yaml");
    let (code, err) = daprd_exit(&["--app-id", "x", "--config", &missing.display().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read --config"), "{err}");
    let not_config = home.join("component.yaml");
    std::fs::write(&not_config, TWO_STORES).expect("write");
    let (code, err) = daprd_exit(&["--app-id", "x", "--config", &not_config.display().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("no document of kind Configuration"), "{err}");
}

#[tokio::test]
async fn kubernetes_mode_loads_no_embedded_defaults() {
    let home = temp_dir("k8s-mode");
    let d = Daprd::start(Spec {
        extra: vec![
            "--mode".into(),
            "kubernetes".into(),
            "--dapr-internal-grpc-port".into(),
            free_port().to_string(),
        ],
        env: vec![("NAMESPACE", "shop".into())],
        ..Spec::new("in-cluster", &home)
    })
    .await;
    // Only the built-in Kubernetes secret store.
    let meta = d.get("/v1.0/metadata").await.expect("metadata").json();
    assert_eq!(
        meta["components"],
        serde_json::json!([{"name": "kubernetes", "type": "secretstores.kubernetes", "version": "v1", "capabilities": []}]),
        "{meta}"
    );
    assert!(
        !home.join("state.db").exists(),
        "nothing written to the data folder"
    );
    let r = d.get("/v1.0/state/statestore/k").await.expect("get");
    assert_eq!(r.error_code(), "ERR_STATE_STORE_NOT_CONFIGURED");
}

#[tokio::test]
async fn listen_addresses_that_cannot_be_bound_are_skipped() {
    let home = temp_dir("listen");
    // 192.0.2.1 (TEST-NET-1) is on no interface here; 127.0.0.1 is.
    let d = Daprd::start(Spec {
        extra: vec!["--dapr-listen-addresses".into(), "127.0.0.1,192.0.2.1".into()],
        ..Spec::new("listen", &home)
    })
    .await;
    assert_eq!(d.get("/v1.0/healthz").await.expect("healthz").status, 204);
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(
        log.contains("192.0.2.1") && log.contains("continuing without it"),
        "{log}"
    );

    // When no address can be bound, start-up fails.
    let (code, err) = daprd_exit(&["--app-id", "x", "--dapr-listen-addresses", "192.0.2.1"]);
    assert_eq!(code, 1);
    assert!(err.contains("192.0.2.1"), "{err}");
}

/// One HTTP/1.1 request over a Unix domain socket.
async fn uds_request(path: &std::path::Path, method: &str, uri: &str, body: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .expect("connect socket");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn apis_listen_on_unix_domain_sockets_when_asked() {
    let home = temp_dir("uds");
    let sockets = home.join("sockets");
    let [http_port, metrics_port] = free_ports();
    let mut child = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args(["--app-id", "uds", "--dapr-http-port", &http_port.to_string()])
        .args(["--metrics-port", &metrics_port.to_string()])
        .arg("--unix-domain-socket")
        .arg(&sockets)
        .env("DAPRS_HOME", &home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn daprd");
    let http_sock = sockets.join("dapr-uds-http.socket");
    let grpc_sock = sockets.join("dapr-uds-grpc.socket");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(http_sock.exists() && grpc_sock.exists()) {
        assert!(std::time::Instant::now() < deadline, "sockets never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(
        uds_request(&http_sock, "GET", "/v1.0/healthz/outbound", "")
            .await
            .0,
        204
    );
    let saved = uds_request(
        &http_sock,
        "POST",
        "/v1.0/state/statestore",
        r#"[{"key":"k","value":"over uds"}]"#,
    )
    .await;
    assert_eq!(saved.0, 204, "{}", saved.1);
    assert_eq!(
        uds_request(&http_sock, "GET", "/v1.0/state/statestore/k", "").await,
        (200, "\"over uds\"".to_string())
    );
    // The HTTP API is not on TCP.
    assert!(std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err());

    // gRPC over the other socket.
    let path = grpc_sock.clone();
    let channel = tonic::transport::Endpoint::from_static("http://uds")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .expect("grpc over uds");
    let mut client = daprs_proto::runtime::dapr_client::DaprClient::new(channel);
    let md = client
        .get_metadata(daprs_proto::runtime::GetMetadataRequest {})
        .await
        .expect("metadata");
    assert_eq!(md.into_inner().id, "uds");

    // A clean stop is prompt even with the client's connection still open,
    // and removes the socket files.
    let stopping = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "took {:?}",
        stopping.elapsed()
    );
    drop(client);
    assert!(!http_sock.exists() && !grpc_sock.exists());
}

#[tokio::test]
async fn request_heads_over_the_read_buffer_size_get_431() {
    let home = temp_dir("readbuf");
    let d = Daprd::start(Spec {
        extra: vec!["--read-buffer-size".into(), "16Ki".into()],
        ..Spec::new("readbuf", &home)
    })
    .await;
    let fits = "a".repeat(10 << 10);
    let r = d.send("GET", "/v1.0/healthz", &[("x-fits", &fits)], "").await;
    assert_eq!(r.status, 204);
    let too_big = "a".repeat(20 << 10);
    let r = super::harness::send(
        "GET",
        &d.url("/v1.0/healthz"),
        &[("x-big", &too_big)],
        Default::default(),
    )
    .await;
    assert!(
        matches!(r, Ok(ref reply) if reply.status == 431),
        "a 20 KiB head with a 16 KiB limit: {:?}",
        r.map(|r| r.status)
    );
    // The sidecar still serves.
    assert_eq!(d.get("/v1.0/healthz").await.expect("health").status, 204);
}
