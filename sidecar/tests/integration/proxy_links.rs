//! Proxied gRPC over the connections daprd keeps to the next hop: to an
//! app that serves TLS (`--app-protocol grpcs`), to a target sidecar that
//! went away and came back, many streams sharing one connection, and a
//! 100 MB stream through both sidecars with their memory bounded.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio_stream::StreamExt;
use tonic::Status;

use super::{
    apps::{serve_tls, tls_acceptor},
    harness::{Daprd, Spec, temp_dir},
    proxy::{
        App, Seen, client,
        echo::{Msg, echo_server::EchoServer},
        echo_app, msg, pair, to,
    },
};

#[tokio::test]
async fn unary_and_streamed_calls_reach_a_grpcs_app_over_tls() {
    let seen = Arc::new(Seen::default());
    let routes = tonic::service::Routes::new(EchoServer::new(App(seen.clone()))).prepare();
    let svc = tower::ServiceExt::<http::Request<hyper::body::Incoming>>::map_response(
        routes,
        |r: http::Response<tonic::body::Body>| r.map(axum::body::Body::new),
    );
    let port = serve_tls(svc, tls_acceptor(&[b"h2"]).0).await;
    let home = temp_dir("px-grpcs");
    let _server = Daprd::start(Spec {
        app_port: Some(port),
        protocol: "grpcs",
        ..Spec::new("px-grpcs-server", &home)
    })
    .await;
    let caller = Daprd::start(Spec::new("px-grpcs-client", &home)).await;
    let mut c = client(&caller).await;

    let res = c
        .unary(to(
            "px-grpcs-server",
            Msg {
                text: "over tls".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("unary");
    let text = res.into_inner().text;
    assert!(text.starts_with("over tls|caller=px-grpcs-client|"), "{text}");

    let out = tokio_stream::iter((0..40).map(|i| Msg {
        data: vec![3u8; 4096],
        count: i,
        ..Default::default()
    }));
    let res = c
        .client_stream(to("px-grpcs-server", out))
        .await
        .expect("client stream")
        .into_inner();
    assert_eq!((res.count, res.text), (40, format!("|{}", 40 * 4096)));
    // The app's unary handler ran once.
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_restarted_target_sidecar_is_reached_again_on_the_next_call() {
    let (port, _seen) = echo_app().await;
    let home = temp_dir("px-restart");
    let spec = || Spec {
        app_port: Some(port),
        protocol: "grpc",
        ..Spec::new("px-restart-server", &home)
    };
    let server = Daprd::start(spec()).await;
    let caller = Daprd::start(Spec::new("px-restart-client", &home)).await;
    let mut c = client(&caller).await;
    let ping = || {
        to(
            "px-restart-server",
            Msg {
                text: "ping".into(),
                ..Default::default()
            },
        )
    };
    c.unary(ping()).await.expect("first call");

    // The target goes away: the connection the caller kept breaks.
    server.stop();
    let err = c.unary(ping()).await.expect_err("target gone");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());

    // A new target (on new ports) is found and reached without restarting the caller.
    let _server = Daprd::start(spec()).await;
    let res = c.unary(ping()).await.expect("after the restart");
    assert!(
        res.into_inner()
            .text
            .starts_with("ping|caller=px-restart-client|")
    );
}

#[tokio::test]
async fn many_concurrent_streams_on_one_connection_do_not_mix() {
    let (client_d, _server_d, _seen, app) = pair("px-many").await;
    let c = client(&client_d).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let (mut c, app) = (c.clone(), app.clone());
        tasks.spawn(async move {
            let out = tokio_stream::iter((0..3).map(move |j| Msg {
                text: format!("{i}.{j}"),
                count: i,
                ..Default::default()
            }));
            let mut replies = c.bidi(to(&app, out)).await?.into_inner();
            let mut got = Vec::new();
            while let Some(m) = replies.next().await {
                let m = m?;
                if m.count != i {
                    return Err(Status::internal(format!("stream {i} got {}", m.text)));
                }
                got.push(m.text);
            }
            Ok::<_, Status>(
                got == [
                    format!("echo:{i}.0"),
                    format!("echo:{i}.1"),
                    format!("echo:{i}.2"),
                ],
            )
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        assert!(
            r.expect("task").expect("stream"),
            "a stream got the wrong replies"
        );
        ok += 1;
    }
    assert_eq!(ok, 1000);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_100_mb_stream_keeps_both_sidecars_memory_bounded() {
    let (client_d, server_d, _seen, app) = pair("px-100mb").await;
    let mut c = client(&client_d).await;
    // Warm both sidecars up so idle RSS includes the connection set-up.
    c.unary(to(&app, msg("warm"))).await.expect("warm");
    let idle = (rss_kib(client_d.pid()), rss_kib(server_d.pid()));
    let peak = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let watch = {
        let (peak, pids) = (peak.clone(), (client_d.pid(), server_d.pid()));
        tokio::spawn(async move {
            loop {
                let now = (rss_kib(pids.0), rss_kib(pids.1));
                if let Ok(mut p) = peak.lock() {
                    *p = (p.0.max(now.0), p.1.max(now.1));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let out = tokio_stream::iter((0..100).map(|i| Msg {
        data: vec![(i % 251) as u8; 1 << 20],
        count: i,
        ..Default::default()
    }));
    let res = c
        .client_stream(to(&app, out))
        .await
        .expect("100 MB stream")
        .into_inner();
    watch.abort();
    assert_eq!((res.count, res.text.as_str()), (100, "|104857600"));
    let peak = *peak.lock().expect("peak");
    for (who, idle, peak) in [("client", idle.0, peak.0), ("server", idle.1, peak.1)] {
        assert!(
            peak < idle + 16 * 1024,
            "{who} sidecar grew from {idle} KiB to {peak} KiB during the stream"
        );
    }
}
