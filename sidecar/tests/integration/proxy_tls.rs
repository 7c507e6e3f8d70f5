//! Proxied gRPC to an app that serves TLS (`--app-protocol grpcs`).

use std::sync::{Arc, atomic::Ordering};

use super::{
    apps::{serve_tls, tls_acceptor},
    harness::{Daprd, Spec, temp_dir},
    proxy::{
        App, Seen, client,
        echo::{Msg, echo_server::EchoServer},
        to,
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
