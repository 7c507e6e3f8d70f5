//! gRPC proxying: a service daprd does not know, called through two sidecars
//! with nothing but `dapr-app-id` added, in all four call shapes.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_stream::{Stream, StreamExt};
use tonic::{
    Code, Request, Response, Status, Streaming,
    metadata::{MetadataMap, MetadataValue},
};

use super::harness::{Daprd, Spec, free_port, temp_dir};

pub mod echo {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/daprs.test.v1.rs"));
}

use echo::{
    Msg,
    echo_client::EchoClient,
    echo_server::{Echo, EchoServer},
};

/// What the test app saw.
#[derive(Default)]
pub struct Seen {
    /// Calls whose handler was dropped before it finished.
    pub cancelled: AtomicUsize,
    pub calls: AtomicUsize,
}

pub struct App(pub Arc<Seen>);

/// Counts a handler as cancelled unless it finishes.
struct Cancelled(Arc<Seen>, bool);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn text(m: &MetadataMap, key: &str) -> String {
    m.get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The app's `grpc-status-details-bin`: a `google.rpc.Status` (code 9,
/// "the app refused"), as gRPC libraries that read it expect.
const DETAILS: &[u8] = b"\x08\x09\x12\x0fthe app refused";

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for App {
    async fn unary(&self, req: Request<Msg>) -> Result<Response<Msg>, Status> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let md = req.metadata().clone();
        let msg = req.into_inner();
        match msg.text.as_str() {
            "fail" => {
                return Err(Status::with_details(
                    Code::FailedPrecondition,
                    "the app refused",
                    bytes::Bytes::from_static(DETAILS),
                ));
            }
            "grow" => {
                let mut grown = msg.data.repeat(4);
                grown.truncate(64 << 20);
                return Ok(Response::new(Msg {
                    text: "grown".into(),
                    data: grown,
                    count: 0,
                }));
            }
            "sleep" => {
                let mut guard = Cancelled(self.0.clone(), false);
                tokio::time::sleep(Duration::from_secs(10)).await;
                guard.1 = true;
            }
            _ => {}
        }
        let mut res = Response::new(Msg {
            text: format!(
                "{}|caller={}|callee={}|token={}",
                msg.text,
                text(&md, "dapr-caller-app-id"),
                text(&md, "dapr-callee-app-id"),
                text(&md, "dapr-api-token"),
            ),
            data: msg.data,
            count: msg.count,
        });
        res.metadata_mut().insert(
            "x-echo",
            MetadataValue::try_from(text(&md, "x-echo")).unwrap_or_else(|_| MetadataValue::from_static("")),
        );
        if let Some(b) = md.get_bin("x-raw-bin") {
            res.metadata_mut().insert_bin("x-raw-bin", b.clone());
        }
        if let Some(t) = md.get("grpc-timeout") {
            res.metadata_mut().insert("x-seen-timeout", t.clone());
        }
        Ok(res)
    }

    type ServerStreamStream = MsgStream;

    async fn server_stream(&self, req: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        let msg = req.into_inner();
        let n = msg.count;
        let data = msg.data;
        let out = tokio_stream::iter(0..n).map(move |i| {
            Ok(Msg {
                text: format!("{i}"),
                data: data.clone(),
                count: i,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn client_stream(&self, req: Request<Streaming<Msg>>) -> Result<Response<Msg>, Status> {
        let mut s = req.into_inner();
        let (mut count, mut bytes, mut texts) = (0u32, 0usize, String::new());
        while let Some(m) = s.next().await {
            let m = m?;
            count += 1;
            bytes += m.data.len();
            if texts.len() < 64 {
                texts.push_str(&m.text);
            }
        }
        Ok(Response::new(Msg {
            text: format!("{texts}|{bytes}"),
            data: Default::default(),
            count,
        }))
    }

    type BidiStream = MsgStream;

    async fn bidi(&self, req: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let s = req.into_inner();
        let out = s.map(|m| {
            m.map(|m| Msg {
                text: format!("echo:{}", m.text),
                data: m.data,
                count: m.count,
            })
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// Starts the app; returns its port and what it saw.
pub async fn echo_app() -> (u16, Arc<Seen>) {
    let port = free_port();
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind app");
    let svc = EchoServer::new(App(seen.clone()))
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(include_bytes!(concat!(
            env!("OUT_DIR"),
            "/echo_descriptor.bin"
        )))
        .build_v1alpha()
        .expect("reflection");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .add_service(reflection)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (port, seen)
}

/// Two sidecars: `client` with no app, `server` in front of the echo app.
pub async fn pair(name: &str) -> (Daprd, Daprd, Arc<Seen>, String) {
    pair_with(name, vec![]).await
}

/// The same, with extra flags for the server's sidecar.
async fn pair_with(name: &str, server_flags: Vec<String>) -> (Daprd, Daprd, Arc<Seen>, String) {
    let home = temp_dir(name);
    let (port, seen) = echo_app().await;
    let server_id = format!("{name}-server");
    let server = Daprd::start(Spec {
        app_port: Some(port),
        protocol: "grpc",
        extra: server_flags,
        ..Spec::new(&server_id, &home)
    })
    .await;
    let client = Daprd::start(Spec::new(&format!("{name}-client"), &home)).await;
    (client, server, seen, server_id)
}

pub async fn client(d: &Daprd) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(format!("http://127.0.0.1:{}", d.grpc_port))
        .await
        .expect("connect")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

pub fn to<T>(app: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("dapr-app-id", app.parse().expect("app id"));
    r
}

pub fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn unary_calls_carry_metadata_errors_and_details_both_ways() {
    let (client_d, _server_d, _seen, app) = pair("px-unary").await;
    let mut c = client(&client_d).await;

    let mut req = to(&app, msg("hello"));
    req.metadata_mut().insert("x-echo", "42".parse().expect("value"));
    req.metadata_mut()
        .insert_bin("x-raw-bin", MetadataValue::from_bytes(&[0, 159, 255, 1]));
    let res = c.unary(req).await.expect("unary");
    assert_eq!(text(res.metadata(), "x-echo"), "42");
    assert_eq!(
        res.metadata()
            .get_bin("x-raw-bin")
            .and_then(|v| v.to_bytes().ok())
            .as_deref(),
        Some(&[0u8, 159, 255, 1][..])
    );
    let body = res.into_inner().text;
    assert_eq!(body, format!("hello|caller=px-unary-client|callee={app}|token="));

    // The app's status, message and details come back unchanged.
    let err = c.unary(to(&app, msg("fail"))).await.expect_err("app error");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "the app refused");
    assert_eq!(err.details(), DETAILS);

    // Without dapr-app-id the sidecar says what to add.
    let err = c.unary(Request::new(msg("x"))).await.expect_err("no app id");
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("dapr-app-id"), "{}", err.message());

    // An app nobody serves fails at once, not at a deadline.
    let started = Instant::now();
    let err = c
        .unary(to("nobody-serves-this", msg("x")))
        .await
        .expect_err("unknown app");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2));

    // A malformed deadline is the caller's mistake.
    let mut req = to(&app, msg("x"));
    req.metadata_mut()
        .insert("grpc-timeout", "soon".parse().expect("value"));
    let err = c.unary(req).await.expect_err("bad timeout");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn streams_of_every_kind_flow_through_two_sidecars() {
    let (client_d, _server_d, _seen, app) = pair("px-streams").await;
    let mut c = client(&client_d).await;

    // Server streaming.
    let mut req = msg("");
    req.count = 500;
    req.data = vec![7u8; 1024];
    let mut s = c
        .server_stream(to(&app, req))
        .await
        .expect("server stream")
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.next().await {
        let m = m.expect("message");
        assert_eq!(m.count, n);
        assert_eq!(m.data.len(), 1024);
        n += 1;
    }
    assert_eq!(n, 500);

    // Client streaming.
    let out = tokio_stream::iter((0..300).map(|i| Msg {
        text: if i < 3 { format!("{i}") } else { String::new() },
        data: vec![1u8; 2048],
        count: i,
    }));
    let res = c
        .client_stream(to(&app, out))
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!((res.count, res.text.as_str()), (300, "012|614400"));

    // Bidirectional, one message answered before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let mut replies = c
        .bidi(to(&app, tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .expect("bidi")
        .into_inner();
    for i in 0..50 {
        tx.send(msg(&format!("m{i}"))).await.expect("send");
        let r = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .expect("reply before the next message")
            .expect("open")
            .expect("message");
        assert_eq!(r.text, format!("echo:m{i}"));
    }
    drop(tx);
    assert!(replies.next().await.is_none());

    // Each stream counted as streaming invocation, and as an RPC the API served.
    let m = super::metrics::scrape(&client_d).await;
    let me = ("app_id", "px-streams-client");
    let streaming = [me, ("dst_app_id", app.as_str()), ("type", "streaming")];
    let sent = super::metrics::value(&m, "dapr_runtime_service_invocation_req_sent_total", &streaming);
    assert_eq!(sent, Some(3.0));
    let ok = [
        me,
        ("src_app_id", app.as_str()),
        ("status", "0"),
        ("type", "streaming"),
    ];
    let received = super::metrics::value(&m, "dapr_runtime_service_invocation_res_recv_total", &ok);
    assert_eq!(received, Some(3.0));
    let served = m
        .samples
        .iter()
        .filter(|x| x.metric == "dapr_grpc_io_server_completed_rpcs")
        .filter(|x| x.labels.get("grpc_server_status") == Some("OK"))
        .filter(|x| {
            x.labels
                .get("grpc_server_method")
                .is_some_and(|m| m.ends_with("Stream") || m.ends_with("Bidi"))
        })
        .count();
    assert!(served >= 2, "{served}");
}

#[tokio::test]
async fn deadlines_reach_the_app_and_cancel_it() {
    let (client_d, _server_d, seen, app) = pair("px-deadline").await;
    let mut c = client(&client_d).await;

    // The app sees what is left of the caller's deadline.
    let mut req = to(&app, msg("x"));
    req.set_timeout(Duration::from_secs(5));
    let res = c.unary(req).await.expect("unary");
    let seen_timeout = text(res.metadata(), "x-seen-timeout");
    let left = echo_timeout(&seen_timeout);
    assert!(
        left <= Duration::from_secs(5) && left > Duration::from_secs(4),
        "{seen_timeout}"
    );

    // An expired deadline answers DEADLINE_EXCEEDED at once and cancels the
    // handler. A plain HTTP/2 client: tonic's would answer from its own timer.
    let started = Instant::now();
    let status = raw_unary(&client_d, &app, "300m", &msg("sleep")).await;
    assert_eq!(status, Code::DeadlineExceeded as i32);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    wait_for(|| seen.cancelled.load(Ordering::SeqCst) == 1).await;

    // A caller that gives up cancels the call at the app too.
    let mut c2 = c.clone();
    let app2 = app.clone();
    let call = tokio::spawn(async move { c2.unary(to(&app2, msg("sleep"))).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.abort();
    wait_for(|| seen.cancelled.load(Ordering::SeqCst) == 2).await;
}

/// Calls `Echo/Unary` over bare HTTP/2 with a `grpc-timeout`; returns the grpc-status.
async fn raw_unary(d: &Daprd, app: &str, timeout: &str, m: &Msg) -> i32 {
    let headers = [("grpc-timeout", timeout), ("dapr-app-id", app)];
    let payload = prost::Message::encode_to_vec(m);
    super::harness::raw_grpc(d.grpc_port, "/daprs.test.v1.Echo/Unary", &headers, &payload)
        .await
        .0
}

fn echo_timeout(v: &str) -> Duration {
    daprs_sidecar::proxy::timeout::parse(v).unwrap_or_else(|| panic!("grpc-timeout {v:?}"))
}

async fn wait_for(cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_app_that_is_not_grpc_is_named_with_the_flag_to_fix() {
    let home = temp_dir("px-http-app");
    let port = super::apps::http_app().await;
    let _server = Daprd::start(Spec {
        app_port: Some(port),
        ..Spec::new("px-http-server", &home)
    })
    .await;
    let client_d = Daprd::start(Spec::new("px-http-client", &home)).await;
    let err = client(&client_d)
        .await
        .unary(to("px-http-server", msg("x")))
        .await
        .expect_err("http app");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("--app-protocol"), "{}", err.message());
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused_either_way() {
    let flags = vec!["--max-body-size".to_string(), "1Mi".to_string()];
    let (client_d, _server_d, seen, app) = pair_with("px-size", flags).await;
    let mut c = client(&client_d).await;
    let big = |n: usize| Msg {
        data: vec![1u8; n],
        ..msg("x")
    };
    // Over the caller's sidecar's 4 MiB: refused there, the app never called.
    let before = seen.calls.load(Ordering::SeqCst);
    let err = c.unary(to(&app, big(5 << 20))).await.expect_err("over 4Mi");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("--max-body-size"), "{}", err.message());
    // Over the callee's 1 MiB.
    let err = c.unary(to(&app, big(2 << 20))).await.expect_err("over 1Mi");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert_eq!(seen.calls.load(Ordering::SeqCst), before);
    // A reply over the callee's limit.
    let err = c
        .unary(to(
            &app,
            Msg {
                data: vec![1u8; 512 << 10],
                ..msg("grow")
            },
        ))
        .await
        .expect_err("reply over 1Mi");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    // Under both limits all is well.
    let ok = c.unary(to(&app, big(900 << 10))).await.expect("under the limits");
    assert_eq!(ok.into_inner().data.len(), 900 << 10);
}

#[tokio::test]
async fn api_tokens_guard_proxied_calls_and_never_reach_the_app() {
    let home = temp_dir("px-tokens");
    let (port, _seen) = echo_app().await;
    let _server = Daprd::start(Spec {
        app_port: Some(port),
        protocol: "grpc",
        env: vec![("APP_API_TOKEN", "app-secret".into())],
        ..Spec::new("px-token-server", &home)
    })
    .await;
    let client_d = Daprd::start(Spec {
        env: vec![("DAPR_API_TOKEN", "api-secret".into())],
        ..Spec::new("px-token-client", &home)
    })
    .await;
    let mut c = client(&client_d).await;
    let err = c
        .unary(to("px-token-server", msg("x")))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = to("px-token-server", msg("x"));
    req.metadata_mut()
        .insert("dapr-api-token", "api-secret".parse().expect("value"));
    let reply = c.unary(req).await.expect("with the token").into_inner();
    // The app sees its own token, never the API's.
    assert!(reply.text.ends_with("|token=app-secret"), "{}", reply.text);
}

#[tokio::test]
async fn dapr_stream_calls_flow_and_count_against_app_max_concurrency() {
    let flags = vec!["--app-max-concurrency".to_string(), "1".to_string()];
    let (client_d, _server_d, _seen, app) = pair_with("px-stream-limit", flags).await;
    let mut c = client(&client_d).await;
    // A stream marked as Dapr documents, held open: it takes the app's one place.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(4);
    let mut req = to(&app, tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("dapr-stream", "true".parse().expect("value"));
    let mut replies = c.bidi(req).await.expect("bidi").into_inner();
    tx.send(msg("held")).await.expect("send");
    let first = replies.next().await.expect("open").expect("reply");
    assert_eq!(first.text, "echo:held");
    // Another call waits for the place, and its deadline passes while it waits.
    let started = Instant::now();
    assert_eq!(
        raw_unary(&client_d, &app, "300m", &msg("x")).await,
        Code::DeadlineExceeded as i32
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    // When the stream ends, the place is free again.
    drop(tx);
    assert!(replies.next().await.is_none());
    let ok = c.unary(to(&app, msg("after"))).await.expect("after the stream");
    assert!(ok.into_inner().text.starts_with("after|"));
}

#[tokio::test]
async fn a_target_in_another_namespace_is_named_app_dot_namespace() {
    let home = temp_dir("px-namespace");
    let (port, _seen) = echo_app().await;
    let _server = Daprd::start(Spec {
        app_port: Some(port),
        protocol: "grpc",
        env: vec![("NAMESPACE", "production".into())],
        ..Spec::new("px-ns-server", &home)
    })
    .await;
    let client_d = Daprd::start(Spec::new("px-ns-client", &home)).await;
    let mut c = client(&client_d).await;
    let reply = c
        .unary(to("px-ns-server.production", msg("across")))
        .await
        .expect("cross-namespace call")
        .into_inner();
    assert!(
        reply
            .text
            .starts_with("across|caller=px-ns-client|callee=px-ns-server|"),
        "{}",
        reply.text
    );
    // The same app-id in the caller's own namespace does not exist.
    let err = c
        .unary(to("px-ns-server", msg("x")))
        .await
        .expect_err("not in default");
    assert_eq!(err.code(), Code::Unavailable);
}
