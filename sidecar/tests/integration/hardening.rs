//! Requests from careless and hostile clients: slow and idle connections,
//! oversized declarations, path tricks, unbounded metadata, misaddressed
//! calls. Each answer is clear and the sidecar goes on serving.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use daprs_proto::{
    common::{HttpExtension, InvokeRequest},
    runtime::InvokeServiceRequest,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    apps::http_app,
    harness::{Daprd, Spec, free_port, raw_grpc, start_fails, temp_dir},
};

/// Reads until the server closes the connection; returns what came and how long it took.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "connection still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), started.elapsed())
}

async fn short_timeouts_daprd(home: &Path) -> Daprd {
    Daprd::start(Spec {
        env: vec![
            ("DAPRS_HTTP_READ_HEADER_TIMEOUT", "300ms".into()),
            ("DAPRS_HTTP_BODY_TIMEOUT", "300ms".into()),
            ("DAPRS_HTTP_IDLE_TIMEOUT", "600ms".into()),
        ],
        ..Spec::new("slow", home)
    })
    .await
}

#[tokio::test]
async fn slow_stalled_and_idle_connections_are_closed() {
    let home = temp_dir("slow-clients");
    let d = short_timeouts_daprd(&home).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], d.http_port));
    let limit = Duration::from_secs(3);

    // A request head that never ends.
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    // A connection that never says anything.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    // A body that stops halfway.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(
            b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[{\"key\":",
        )
        .await
        .expect("write");
    // A keep-alive connection left idle after one request.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");

    let (got, took) = read_until_closed(&mut partial, limit).await;
    assert!(got.is_empty(), "no answer to half a head: {got}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    let (_, took) = read_until_closed(&mut silent, limit).await;
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let (got, _) = read_until_closed(&mut stalled, limit).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("ERR_BODY_READ") && got.contains("stalled"), "{got}");
    let (got, _) = read_until_closed(&mut idle, limit).await;
    assert!(got.starts_with("HTTP/1.1 204"), "{got}");

    // Meanwhile, and afterwards, ordinary clients are served.
    assert_eq!(d.get("/v1.0/healthz").await.expect("healthz").status, 204);
}

#[tokio::test]
async fn an_over_limit_content_length_is_refused_before_the_body() {
    let home = temp_dir("early-413");
    let d = Daprd::start(Spec::new("early", &home)).await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(("127.0.0.1", d.http_port))
        .await
        .expect("connect");
    tcp.write_all(b"POST /v1.0/state/statestore HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        .await
        .expect("write");
    let (got, _) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(
        got.contains("ERR_BODY_READ") && got.contains("--max-body-size"),
        "{got}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The same over HTTP/2, where a client may wait for 100-continue.
    let r = super::harness::send_h2(
        &d.url("/v1.0/state/statestore"),
        &[("expect", "100-continue"), ("content-length", "99999999")],
    )
    .await
    .expect("h2 request");
    assert_eq!(r.status, 413);
    assert_eq!(d.get("/v1.0/healthz").await.expect("healthz").status, 204);
}

/// Whether another loopback address can take `port`, i.e. daprd did not bind it on all interfaces.
fn free_on_other_loopback(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.2", port)).is_ok()
}

fn internal_port(home: &Path, app_id: &str) -> u16 {
    let dir = home.join("registry/default").join(app_id);
    let entry = std::fs::read_dir(&dir)
        .expect("registry folder")
        .flatten()
        .next()
        .expect("registry entry");
    let addr: SocketAddr = std::fs::read_to_string(entry.path())
        .expect("read entry")
        .trim()
        .parse()
        .expect("address");
    addr.port()
}

#[tokio::test]
async fn every_listener_honours_the_listen_addresses() {
    let home = temp_dir("listen");
    let public = free_port();
    let d = Daprd::start(Spec {
        extra: vec!["--dapr-public-port".into(), public.to_string()],
        ..Spec::new("bound", &home)
    })
    .await;
    let internal = internal_port(&home, "bound");
    for (what, port) in [
        ("http", d.http_port),
        ("grpc", d.grpc_port),
        ("internal", internal),
        ("public", public),
        ("metrics", d.metrics_port),
    ] {
        assert!(
            free_on_other_loopback(port),
            "{what} port {port} is bound on all interfaces"
        );
    }

    // The metrics port has its own listen address, as in Dapr.
    let home = temp_dir("listen-metrics");
    let d = Daprd::start(Spec {
        extra: vec!["--metrics-listen-address".into(), "127.0.0.3".into()],
        ..Spec::new("metrics-bound", &home)
    })
    .await;
    let at = |ip: [u8; 4]| SocketAddr::new(IpAddr::from(ip), d.metrics_port);
    assert!(TcpStream::connect(at([127, 0, 0, 3])).await.is_ok());
    assert!(TcpStream::connect(at([127, 0, 0, 1])).await.is_err());
}

#[tokio::test]
async fn invoked_methods_are_cleaned_alike_over_http_and_grpc() {
    let home = temp_dir("clean-paths");
    let app_port = http_app().await;
    let _b = Daprd::start(Spec {
        app_port: Some(app_port),
        ..Spec::new("paths-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("paths-a", &home)).await;
    for path in [
        "/v1.0/invoke/paths-b/method/echo/%2E%2E/admin",
        "/v1.0/invoke/paths-b/method/echo/%2e./admin",
        "/v1.0/invoke/paths-b/method/echo/../admin",
    ] {
        let r = a.send("GET", path, &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["path"], "/admin", "{path}");
    }
    let mut c = a.grpc().await;
    let call = |method: &str| InvokeServiceRequest {
        id: "paths-b".into(),
        message: Some(InvokeRequest {
            method: method.into(),
            http_extension: Some(HttpExtension {
                verb: 1,
                querystring: String::new(),
            }),
            ..Default::default()
        }),
    };
    let res = c
        .invoke_service(call("echo/../../../etc/passwd"))
        .await
        .expect("invoke");
    let body = res.into_inner().data.map(|a| a.value).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["path"], "/etc/passwd");
    // Non-ASCII methods pass through InvokeService (they once broke the connection).
    let res = c
        .invoke_service(call("echo/odўМ/x"))
        .await
        .expect("non-ASCII method");
    let body = res.into_inner().data.map(|a| a.value).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(v["path"].as_str().is_some_and(|p| p.starts_with("/echo/")), "{v}");
    for bad in ["echo\r\nX-Injected: 1", "echo me"] {
        let err = c.invoke_service(call(bad)).await.expect_err(bad);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        assert!(err.message().contains("method"), "{}", err.message());
    }
    let mut bad_query = call("echo");
    if let Some(ext) = bad_query.message.as_mut().and_then(|m| m.http_extension.as_mut()) {
        ext.querystring = "a=1\r\nX-Injected: 1".into();
    }
    let err = c
        .invoke_service(bad_query)
        .await
        .expect_err("CR/LF in the querystring");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("querystring"), "{}", err.message());
}

#[tokio::test]
async fn extended_metadata_is_bounded() {
    let home = temp_dir("metadata-bounds");
    let d = Daprd::start(Spec::new("meta", &home)).await;
    let r = d
        .send("PUT", "/v1.0/metadata/big", &[], vec![b'x'; 65 << 10])
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "ERR_METADATA_TOO_LARGE")
    );
    let value = "v".repeat(11 << 10);
    let mut refused = None;
    for i in 0..100 {
        let r = d
            .send("PUT", &format!("/v1.0/metadata/k{i}"), &[], value.clone())
            .await;
        if r.status != 204 {
            refused = Some((i, r.status, r.error_code()));
            break;
        }
    }
    // Values of 11 KiB pass the 1 MiB total at the 94th.
    let (i, status, code) = refused.expect("the total is bounded");
    assert_eq!(i, 93, "refused at {i}");
    assert_eq!((status, code.as_str()), (413, "ERR_METADATA_TOO_LARGE"));
    // Replacing a value does not count it twice; small entries stop at 100.
    let r = d.send("PUT", "/v1.0/metadata/k0", &[], "small").await;
    assert_eq!(r.status, 204);
    let mut last = 0;
    for i in 0..120 {
        last = d
            .send("PUT", &format!("/v1.0/metadata/k{i}"), &[], "s")
            .await
            .status;
        if last != 204 {
            break;
        }
    }
    assert_eq!(last, 400);
    let r = d.get("/v1.0/metadata").await.expect("metadata");
    assert_eq!(r.status, 200);
    assert!(r.body.len() < 2 << 20);
    let mut c = d.grpc().await;
    let err = c
        .set_metadata(daprs_proto::runtime::SetMetadataRequest {
            key: "grpc".into(),
            value: "x".repeat(65 << 10),
        })
        .await
        .expect_err("too large");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn a_call_that_names_another_app_is_refused_by_the_callee() {
    let home = temp_dir("callee-check");
    let app_port = http_app().await;
    let _orders = Daprd::start(Spec {
        app_port: Some(app_port),
        ..Spec::new("orders", &home)
    })
    .await;
    let caller = Daprd::start(Spec::new("caller", &home)).await;
    let me = std::process::id().to_string();
    let register = |app: &str, entry: &[u8]| {
        let dir = home.join("registry/default").join(app);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(&me), entry).expect("entry");
    };
    // "evil9" resolves to the orders sidecar's internal port.
    let port = internal_port(&home, "orders");
    register("evil9", format!("127.0.0.1:{port}").as_bytes());
    let r = caller
        .send("GET", "/v1.0/invoke/evil9/method/echo", &[], "")
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("orders"), "{}", r.text());
    // A 100 MB registry entry is neither read whole nor echoed.
    register("huge", &vec![b'9'; 100 << 20]);
    let r = caller.send("GET", "/v1.0/invoke/huge/method/echo", &[], "").await;
    assert!(r.status >= 400, "{}", r.status);
    assert!(r.body.len() < 4096, "{} bytes", r.body.len());
    // The real app is still reached.
    let r = caller
        .send("GET", "/v1.0/invoke/orders/method/echo", &[], "")
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn keys_too_long_to_read_back_are_refused_on_save() {
    let home = temp_dir("long-keys");
    let d = Daprd::start(Spec::new("long-keys", &home)).await;
    let long = "k".repeat(9000);
    let body = format!(r#"[{{"key":"{long}","value":1}}]"#);
    let r = d.send("POST", "/v1.0/state/statestore", &[], body).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    assert!(r.text().contains("--read-buffer-size"), "{}", r.text());
    // The longest accepted key, even if every byte needs percent-encoding, reads back.
    let key = "é".repeat(1194);
    let body = serde_json::json!([{"key": key, "value": 2}]).to_string();
    let r = d.send("POST", "/v1.0/state/statestore", &[], body).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let encoded: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
    let r = d
        .send("GET", &format!("/v1.0/state/statestore/{encoded}"), &[], "")
        .await;
    assert_eq!((r.status, r.text().as_str()), (200, "2"));
}

#[test]
fn configuration_values_dapr_refuses_stop_start_up() {
    let home = temp_dir("bad-config");
    for (doc, field) in [
        (
            "spec:\n  api:\n    allowed:\n    - name: state\n      version: v1.0\n      protocol: carrier-pigeon\n",
            "spec.api.allowed[0].protocol",
        ),
        (
            "spec:\n  secrets:\n    scopes:\n    - storeName: local\n      defaultAccess: maybe\n",
            "spec.secrets.scopes[0].defaultAccess",
        ),
    ] {
        let path = home.join("config.yaml");
        std::fs::write(
            &path,
            format!("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\n{doc}"),
        )
        .expect("write");
        let out = start_fails(
            &home,
            &["--app-id", "bad-config", "--config", &path.display().to_string()],
        );
        assert!(out.contains(field), "{field}: {out}");
    }
}

#[test]
fn resources_nested_absurdly_deep_are_refused_at_once() {
    let home = temp_dir("deep-yaml");
    let dir = home.join("resources");
    std::fs::create_dir_all(&dir).expect("dir");
    let deep = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: deep\nspec:\n  type: state.in-memory\n  version: v1\n  metadata:\n  - name: x\n    value: {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(dir.join("deep.yaml"), deep).expect("write");
    let out = start_fails(
        &home,
        &["--app-id", "deep", "--resources-path", &dir.display().to_string()],
    );
    assert!(out.contains("nested more than 64 levels"), "{out}");
    let numeric = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: 123\nspec:\n  type: state.in-memory\n  version: v1\n";
    std::fs::write(dir.join("deep.yaml"), numeric).expect("write");
    let out = start_fails(
        &home,
        &[
            "--app-id",
            "numeric",
            "--resources-path",
            &dir.display().to_string(),
        ],
    );
    assert!(out.contains("metadata.name must be a string"), "{out}");
}

#[tokio::test]
async fn undecodable_and_oversized_grpc_messages_are_the_callers_mistake() {
    let home = temp_dir("grpc-garbage");
    let d = Daprd::start(Spec::new("grpc-garbage", &home)).await;
    let path = "/dapr.proto.runtime.v1.Dapr/GetState";
    for (what, payload) in [
        ("garbage", &b"\xff\xff\xff\xff\xff"[..]),
        ("truncated", &b"\x0a\x10stat"[..]),
        ("wrong wire type", &b"\x0d\x01\x02\x03\x04"[..]),
        ("not UTF-8", &b"\x0a\x03\xff\xfe\xfd"[..]),
    ] {
        let (code, message) = raw_grpc(d.grpc_port, path, &[], payload).await;
        assert_eq!(code, tonic::Code::InvalidArgument as i32, "{what}: {message}");
        assert!(message.contains("GetStateRequest"), "{what}: {message}");
    }
    let (code, message) = raw_grpc(
        d.grpc_port,
        "/dapr.proto.runtime.v1.Dapr/SaveState",
        &[],
        &vec![0u8; 5 << 20],
    )
    .await;
    assert_eq!(code, tonic::Code::ResourceExhausted as i32, "{message}");
    assert!(message.contains("--max-body-size"), "{message}");
    // Still serving.
    assert_eq!(d.get("/v1.0/healthz").await.expect("healthz").status, 204);
}

#[tokio::test]
async fn an_app_reply_over_the_body_limit_is_refused_not_buffered() {
    let home = temp_dir("big-reply");
    let port = http_app().await;
    let _b = Daprd::start(Spec {
        app_port: Some(port),
        ..Spec::new("big-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("big-a", &home)).await;
    for path in [
        "/v1.0/invoke/big-b/method/big/10485760",
        "/v1.0/invoke/big-b/method/big/10485760?sized",
    ] {
        let r = a.send("GET", path, &[], "").await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "ERR_DIRECT_INVOKE"),
            "{path}"
        );
        assert!(r.text().contains("--max-body-size"), "{}", r.text());
    }
    let r = a
        .send("GET", "/v1.0/invoke/big-b/method/big/1048576", &[], "")
        .await;
    assert_eq!((r.status, r.body.len()), (200, 1 << 20));
}

/// What one answer on a shared HTTP/2 connection carried.
#[derive(Debug)]
struct H2Answer {
    status: u16,
    grpc_status: Option<String>,
}

/// Sends `requests` one after another on a single HTTP/2 connection, each
/// with `body` (None: no body); fails if the connection does not carry them all.
async fn on_one_connection(port: u16, requests: Vec<(http::Request<()>, Option<&[u8]>)>) -> Vec<H2Answer> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for (i, (req, body)) in requests.into_iter().enumerate() {
        client = client
            .ready()
            .await
            .unwrap_or_else(|e| panic!("request {i}: connection gone: {e}"));
        let (reply, mut send) = client
            .send_request(req, body.is_none())
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        if let Some(body) = body {
            send.send_data(bytes::Bytes::copy_from_slice(body), true)
                .unwrap_or_else(|e| panic!("request {i} body: {e}"));
        }
        let reply = tokio::time::timeout(Duration::from_secs(5), reply)
            .await
            .unwrap_or_else(|_| panic!("request {i}: no answer"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        let status = reply.status().as_u16();
        let mut grpc_status = reply
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let mut body = reply.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap_or_else(|e| panic!("request {i} reply body: {e}"));
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        if let Some(trailers) = body
            .trailers()
            .await
            .unwrap_or_else(|e| panic!("request {i} trailers: {e}"))
        {
            grpc_status = trailers
                .get("grpc-status")
                .map(|v| v.to_str().unwrap_or("?").to_owned());
        }
        answers.push(H2Answer { status, grpc_status });
    }
    answers
}

fn h2_request(port: u16, method: &str, path: &str, headers: &[(String, String)]) -> http::Request<()> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(()).expect("request")
}

#[tokio::test]
async fn oversize_heads_are_refused_on_their_own_stream() {
    let home = temp_dir("big-heads");
    let d = Daprd::start(Spec::new("big-heads", &home)).await;
    let big = |n: usize| vec![("x-big".to_owned(), "a".repeat(n))];

    // HTTP API over HTTP/2: 431 for a 100 KB header, and the connection
    // serves the next request.
    let answers = on_one_connection(
        d.http_port,
        vec![
            (
                h2_request(d.http_port, "GET", "/v1.0/healthz", &big(100_000)),
                None,
            ),
            (h2_request(d.http_port, "GET", "/v1.0/healthz", &[]), None),
        ],
    )
    .await;
    assert_eq!(answers[0].status, 431, "{answers:?}");
    assert_eq!(answers[1].status, 204, "{answers:?}");

    // gRPC API: a 1 MB header and 3,000 metadata entries are each refused
    // with RESOURCE_EXHAUSTED, and the same connection goes on serving.
    let grpc = |headers: Vec<(String, String)>| {
        let mut h = vec![
            ("content-type".to_owned(), "application/grpc".to_owned()),
            ("te".to_owned(), "trailers".to_owned()),
        ];
        h.extend(headers);
        (
            h2_request(d.grpc_port, "POST", "/dapr.proto.runtime.v1.Dapr/GetMetadata", &h),
            Some(&[0u8; 5][..]),
        )
    };
    let many: Vec<_> = (0..3000)
        .map(|i| (format!("x-entry-{i}"), format!("value-{i}")))
        .collect();
    let answers = on_one_connection(
        d.grpc_port,
        vec![grpc(big(1_000_000)), grpc(many), grpc(Vec::new())],
    )
    .await;
    let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
    assert_eq!(
        answers[0].grpc_status.as_deref(),
        Some(exhausted.as_str()),
        "{answers:?}"
    );
    assert_eq!(
        answers[1].grpc_status.as_deref(),
        Some(exhausted.as_str()),
        "{answers:?}"
    );
    assert_eq!(answers[2].grpc_status.as_deref(), Some("0"), "{answers:?}");
}
