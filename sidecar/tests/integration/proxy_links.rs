//! Proxied gRPC over the connections daprd keeps to the next hop: to an
//! app that serves TLS (`--app-protocol grpcs`), and to a target sidecar
//! that went away and came back.

use std::sync::{Arc, atomic::Ordering};

use super::{
    apps::{serve_tls, tls_acceptor},
    harness::{Daprd, Spec, temp_dir},
    proxy::{
        App, Seen, client,
        echo::{Msg, echo_server::EchoServer},
        echo_app, to,
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
