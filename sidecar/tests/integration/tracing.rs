//! Distributed tracing through real sidecars: one trace from the caller's
//! app through both sidecars to the target app, over HTTP and gRPC
//! invocation, gRPC proxying and pub/sub, exported to a loopback collector
//! as Zipkin, OTLP/HTTP and OTLP/gRPC; and requests unharmed when the
//! collector is down.

use std::{path::PathBuf, time::Duration};

use daprs_proto::{
    common::{HttpExtension, InvokeRequest},
    runtime::{GetMetadataRequest, InvokeServiceRequest},
};
use serde_json::json;

use super::{
    apps::{grpc_app, http_app},
    collector::Collector,
    harness::{Daprd, Spec, raw_grpc, resources, temp_dir},
    proxy::{client, echo::Msg, echo_app, to},
    pubsub::{IN_MEMORY, subscribed, subscriber},
};

/// The caller's app's own span.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

fn parent() -> String {
    format!("00-{TRACE}-{APP_SPAN}-01")
}

/// A Configuration sampling everything, exporting as `exporter` says.
fn config(home: &std::path::Path, name: &str, exporter: &str) -> PathBuf {
    let path = home.join(format!("{name}.yaml"));
    let yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: {name}\nspec:\n  tracing:\n    samplingRate: \"1\"\n{exporter}"
    );
    std::fs::write(&path, yaml).expect("config");
    path
}

fn zipkin(c: &Collector) -> String {
    format!(
        "    zipkin:\n      endpointAddress: http://127.0.0.1:{}/api/v2/spans\n",
        c.port
    )
}

fn otel(c: &Collector, protocol: &str) -> String {
    otel_at(c.port, protocol)
}

fn otel_at(port: u16, protocol: &str) -> String {
    format!(
        "    otel:\n      endpointAddress: 127.0.0.1:{port}\n      isSecure: false\n      protocol: {protocol}\n"
    )
}

/// A process's resident memory.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

async fn traced(
    app_id: &str,
    home: &std::path::Path,
    config: &std::path::Path,
    app: Option<(u16, &str)>,
) -> Daprd {
    let mut spec = Spec::new(app_id, home);
    spec.extra = vec!["--config".into(), config.display().to_string()];
    // Spans leave in batches; a short wait keeps the tests quick.
    spec.env = vec![("OTEL_BSP_SCHEDULE_DELAY", "50".into())];
    if let Some((port, protocol)) = app {
        spec.app_port = Some(port);
        spec.protocol = protocol;
    }
    Daprd::start(spec).await
}

fn span_id_of(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap_or_default()
}

#[tokio::test]
async fn http_invocation_is_one_trace_from_app_to_app_in_zipkin() {
    let home = temp_dir("trace-http");
    let c = Collector::start().await;
    let cfg = config(&home, "zipkin", &zipkin(&c));
    let app = http_app().await;
    let target = traced("trace-target", &home, &cfg, Some((app, "http"))).await;
    let caller = traced("trace-caller", &home, &cfg, None).await;
    let _ = &target;

    let tp = parent();
    let r = caller
        .send(
            "GET",
            "/v1.0/invoke/trace-target/method/orders/7",
            &[("traceparent", tp.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(seen.starts_with(&format!("00-{TRACE}-")), "the app saw {seen}");
    // The caller learns the trace its request joined.
    let answered = r.header("traceparent").unwrap_or_default().to_string();
    assert!(answered.contains(TRACE), "{answered}");

    let client = c
        .wait("client span", |s| {
            s.service == "trace-caller" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(client.name, "CallLocal/trace-target/orders/7");
    assert_eq!(client.kind, "CLIENT");
    assert_eq!(client.parent, APP_SPAN);
    assert_eq!(client.tag("net.peer.name"), Some("trace-target"));
    assert_eq!(client.tag("dapr.protocol"), Some("http"));
    assert_eq!(client.tag("dapr.status_code"), Some("200"));
    assert_eq!(span_id_of(&answered), client.id);
    let server = c
        .wait("server span", |s| {
            s.service == "trace-target" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(server.name, "CallLocal/trace-target/orders/7");
    assert_eq!(server.kind, "SERVER");
    assert_eq!(server.parent, client.id);
    assert_eq!(server.tag("dapr.invoke_method"), Some("orders/7"));
    // The app's span is a child of the target sidecar's.
    assert_eq!(span_id_of(&seen), server.id);

    // An app's failure marks both sidecars' spans.
    let r = caller
        .get("/v1.0/invoke/trace-target/method/status/500")
        .await
        .expect("invoke");
    assert_eq!(r.status, 500);
    for service in ["trace-caller", "trace-target"] {
        let s = c
            .wait("failed invocation", |s| {
                s.service == service && s.name == "CallLocal/trace-target/status/500"
            })
            .await;
        assert!(s.error, "{s:?}");
    }

    // A failing call's span says so.
    let r = caller.get("/v1.0/state/none/key").await.expect("state");
    assert!(r.status >= 400);
    let failed = c
        .wait("failed state call", |s| s.name == "/v1.0/state/none/key")
        .await;
    assert!(failed.error, "{failed:?}");
    assert_eq!(failed.tag("db.system"), Some("state"));
    assert_eq!(failed.tag("db.name"), Some("none"));
    // Health checks are not traced.
    assert_eq!(caller.get("/v1.0/healthz").await.expect("health").status, 204);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !c.spans
            .lock()
            .expect("lock")
            .iter()
            .any(|s| s.name.contains("healthz"))
    );
}

#[tokio::test]
async fn grpc_invocation_and_proxying_are_traced_over_otlp_grpc_and_http() {
    let home = temp_dir("trace-grpc");
    let c = Collector::start().await;
    let caller_cfg = config(&home, "otlp-grpc", &otel(&c, "grpc"));
    let target_cfg = config(&home, "otlp-http", &otel(&c, "http"));
    let app = grpc_app().await;
    let _target = traced("trace-grpc-target", &home, &target_cfg, Some((app, "grpc"))).await;
    let caller = traced("trace-grpc-caller", &home, &caller_cfg, None).await;

    let mut grpc = caller.grpc().await;
    let mut req = tonic::Request::new(InvokeServiceRequest {
        id: "trace-grpc-target".into(),
        message: Some(InvokeRequest {
            method: "hello".into(),
            http_extension: Some(HttpExtension {
                verb: 1,
                querystring: String::new(),
            }),
            ..Default::default()
        }),
    });
    req.metadata_mut()
        .insert("traceparent", parent().parse().expect("value"));
    let res = grpc.invoke_service(req).await.expect("InvokeService");
    // Dapr leaves grpc-trace-bin off InvokeService answers ...
    assert!(res.metadata().get_bin("grpc-trace-bin").is_none());
    // ... and puts it on the others.
    let md = grpc
        .get_metadata(GetMetadataRequest::default())
        .await
        .expect("GetMetadata");
    assert!(md.metadata().get_bin("grpc-trace-bin").is_some());

    let client = c
        .wait("InvokeService span", |s| {
            s.service == "trace-grpc-caller" && s.name == "CallLocal/trace-grpc-target/hello"
        })
        .await;
    assert_eq!(
        (client.kind.as_str(), client.trace_id.as_str()),
        ("CLIENT", TRACE)
    );
    assert_eq!(client.parent, APP_SPAN);
    assert_eq!(
        client.tag("dapr.api"),
        Some("/dapr.proto.runtime.v1.Dapr/InvokeService")
    );
    let server = c
        .wait("CallLocal span", |s| {
            s.service == "trace-grpc-target" && s.kind == "SERVER"
        })
        .await;
    assert_eq!(server.name, "CallLocal/trace-grpc-target/hello");
    assert_eq!(server.parent, client.id);

    // A proxied call: a client span at the caller, a server span at the
    // target's sidecar, one trace.
    let method = "/dapr.proto.runtime.v1.AppCallback/ListInputBindings";
    let tp = format!("00-{TRACE}-1111111111111111-01");
    let (code, msg) = raw_grpc(
        caller.grpc_port,
        method,
        &[("dapr-app-id", "trace-grpc-target"), ("traceparent", &tp)],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{msg}");
    let out = c
        .wait("proxied client span", |s| s.name == method && s.kind == "CLIENT")
        .await;
    assert_eq!(
        (out.trace_id.as_str(), out.parent.as_str()),
        (TRACE, "1111111111111111")
    );
    let inn = c
        .wait("proxied server span", |s| s.name == method && s.kind == "SERVER")
        .await;
    assert_eq!(inn.service, "trace-grpc-target");
    assert_eq!(inn.parent, out.id);
}

/// A proxied call to `app` as the caller's app makes it, in the app's trace.
fn traced_to<T>(app: &str, msg: T) -> tonic::Request<T> {
    let mut r = to(app, msg);
    r.metadata_mut()
        .insert("traceparent", parent().parse().expect("value"));
    r
}

#[tokio::test]
async fn proxied_streams_of_every_kind_are_one_trace_ending_with_the_stream() {
    use tokio_stream::StreamExt;
    let home = temp_dir("trace-streams");
    let c = Collector::start().await;
    let cfg = config(&home, "zipkin", &zipkin(&c));
    let (port, _seen) = echo_app().await;
    let _server = traced("trace-streams-server", &home, &cfg, Some((port, "grpc"))).await;
    let caller = traced("trace-streams-client", &home, &cfg, None).await;
    let mut echo = client(&caller).await;
    let app = "trace-streams-server";

    let first = Msg {
        count: 20,
        ..Default::default()
    };
    let mut s = echo
        .server_stream(traced_to(app, first))
        .await
        .expect("server stream")
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.next().await {
        m.expect("message");
        n += 1;
    }
    assert_eq!(n, 20);
    let many = tokio_stream::iter((0..10).map(|i| Msg {
        count: i,
        ..Default::default()
    }));
    echo.client_stream(traced_to(app, many))
        .await
        .expect("client stream");
    // A bidirectional stream held open: its spans end only when it does.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let mut replies = echo
        .bidi(traced_to(app, tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .expect("bidi")
        .into_inner();
    tx.send(Msg::default()).await.expect("send");
    replies.next().await.expect("a reply").expect("message");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bidi = "/daprs.test.v1.Echo/Bidi";
    assert!(
        !c.spans.lock().expect("lock").iter().any(|s| s.name == bidi),
        "a span ended while its stream was open"
    );
    drop(tx);
    while replies.next().await.is_some() {}

    for method in ["ServerStream", "ClientStream", "Bidi"] {
        let name = format!("/daprs.test.v1.Echo/{method}");
        let out = c
            .wait(&format!("{method} client span"), |s| {
                s.name == name && s.kind == "CLIENT"
            })
            .await;
        assert_eq!(
            (out.trace_id.as_str(), out.parent.as_str()),
            (TRACE, APP_SPAN),
            "{method}"
        );
        let inn = c
            .wait(&format!("{method} server span"), |s| {
                s.name == name && s.kind == "SERVER"
            })
            .await;
        assert_eq!(inn.service, "trace-streams-server");
        assert_eq!(inn.parent, out.id, "{method}");
        assert!(!out.error && !inn.error, "{method}");
    }
}

#[tokio::test]
async fn an_event_carries_the_publishers_trace_to_the_subscriber() {
    let home = temp_dir("trace-pubsub");
    let c = Collector::start().await;
    let cfg = config(&home, "otlp-http", &otel(&c, "http"));
    let (inbox, app) =
        subscriber(json!([{"pubsubname": "pubsub", "topic": "traced", "route": "/traced"}])).await;
    let res = resources(&home, IN_MEMORY);
    let mut spec = Spec::new("trace-pubsub", &home);
    spec.resources = Some(&res);
    spec.app_port = Some(app);
    spec.extra = vec!["--config".into(), cfg.display().to_string()];
    spec.env = vec![("OTEL_BSP_SCHEDULE_DELAY", "50".into())];
    let d = Daprd::start(spec).await;
    subscribed(&d, 1).await;

    let tp = parent();
    let r = d
        .send(
            "POST",
            "/v1.0/publish/pubsub/traced",
            &[("traceparent", tp.as_str())],
            r#"{"n":1}"#,
        )
        .await;
    assert_eq!(r.status, 204);
    let got = inbox.wait("/traced", 1).await;
    let publish = c
        .wait("publish span", |s| s.name == "/v1.0/publish/pubsub/traced")
        .await;
    assert_eq!(publish.parent, APP_SPAN);
    assert_eq!(publish.tag("messaging.destination"), Some("traced"));
    // The event names the publish call's span ...
    let ce_tp = got[0].event["traceparent"].as_str().unwrap_or_default();
    assert_eq!(ce_tp, format!("00-{TRACE}-{}-01", publish.id));
    assert_eq!(got[0].event["traceid"], got[0].event["traceparent"]);
    // ... the delivery is its child, and the subscriber's parent.
    let delivery = c.wait("delivery span", |s| s.name == "pubsub/traced").await;
    assert_eq!(
        (delivery.trace_id.as_str(), delivery.parent.as_str()),
        (TRACE, publish.id.as_str())
    );
    assert_eq!(delivery.tag("messaging.system"), Some("pubsub"));
    assert_eq!(got[0].traceparent, format!("00-{TRACE}-{}-01", delivery.id));
}

#[tokio::test]
async fn requests_are_unharmed_when_the_collector_is_down_and_rate_zero_traces_nothing() {
    let home = temp_dir("trace-down");
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = home.join("down.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: down\nspec:\n  tracing:\n    samplingRate: \"1\"\n    zipkin:\n      endpointAddress: http://127.0.0.1:{dead}/api/v2/spans\n    otel:\n      endpointAddress: 127.0.0.1:{dead}\n      isSecure: false\n      protocol: grpc\n"
        ),
    )
    .expect("config");
    let app = http_app().await;
    let d = traced("trace-down", &home, &cfg, Some((app, "http"))).await;
    let start = std::time::Instant::now();
    for _ in 0..200 {
        let r = d.get("/v1.0/invoke/trace-down/method/x").await.expect("invoke");
        assert_eq!(r.status, 200);
        assert!(r.header("traceparent").is_some());
    }
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&d.log).unwrap_or(log);
    assert!(log.contains("spans could not be exported"), "{log}");

    // A collector that takes the connection and never answers: exports
    // wait out their timeout, the queue fills, and what does not fit is
    // dropped and reported, while memory stays where it was.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hung_port = hung.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s);
        }
    });
    let cfg = config(&home, "hung", &otel_at(hung_port, "http"));
    let mut spec = Spec::new("trace-hung", &home);
    spec.extra = vec!["--config".into(), cfg.display().to_string()];
    spec.app_port = Some(app);
    spec.env = vec![
        ("OTEL_BSP_SCHEDULE_DELAY", "50".into()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64".into()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".into()),
    ];
    let d = Daprd::start(spec).await;
    let path = "/v1.0/invoke/trace-hung/method/x";
    for _ in 0..200 {
        assert_eq!(d.get(path).await.expect("invoke").status, 200);
    }
    let before = rss_kib(d.pid());
    for _ in 0..3000 {
        assert_eq!(d.get(path).await.expect("invoke").status, 200);
    }
    let after = rss_kib(d.pid());
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let dropped = loop {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        let reported = log
            .lines()
            .filter(|l| l.contains("spans dropped"))
            .filter_map(|l| {
                l.split("dropped=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum::<u64>();
        if reported > 0 {
            break reported;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Without the bound nothing would be dropped; with it, hundreds are by
    // the time the first export gives up.
    assert!(dropped >= 200, "{dropped} spans dropped");

    // samplingRate "0": tracing is off; the caller's context passes unchanged.
    let off = home.join("off.yaml");
    std::fs::write(
        &off,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: off\nspec:\n  tracing:\n    samplingRate: \"0\"\n",
    )
    .expect("config");
    let d = traced("trace-off", &home, &off, Some((app, "http"))).await;
    let tp = parent();
    let r = d
        .send(
            "GET",
            "/v1.0/invoke/trace-off/method/x",
            &[("traceparent", tp.as_str())],
            "",
        )
        .await;
    assert_eq!(r.json()["headers"]["traceparent"], tp.as_str());
    assert!(r.header("traceparent").is_none());
}

#[tokio::test]
async fn an_unknown_otlp_protocol_stops_start_up() {
    let home = temp_dir("trace-bad");
    let cfg = home.join("bad.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: bad\nspec:\n  tracing:\n    otel:\n      endpointAddress: localhost:4317\n      protocol: udp\n",
    )
    .expect("config");
    let out = super::harness::start_fails(
        &home,
        &["--app-id", "trace-bad", "--config", &cfg.display().to_string()],
    );
    assert!(out.contains("spec.tracing.otel.protocol"), "{out}");
}
