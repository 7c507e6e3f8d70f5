//! Service invocation from app A to app B through both sidecars.

use daprs_proto::{common::InvokeRequest, runtime::InvokeServiceRequest};

use super::{
    apps::{grpc_app, grpcs_app, http_app, https_app},
    harness::{Daprd, Spec, temp_dir},
};

#[tokio::test]
async fn http_app_is_invoked_through_two_sidecars() {
    let home = temp_dir("invoke-http");
    let app_port = http_app().await;
    let b = Daprd::start(Spec {
        app_port: Some(app_port),
        ..Spec::new("svc-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("svc-a", &home)).await;
    // b reports ready once its app listens.
    assert_eq!(b.get("/v1.0/healthz").await.expect("healthz").status, 204);

    let r = a
        .send(
            "POST",
            "/v1.0/invoke/svc-b/method/orders/new?x=1&y=a%20b",
            &[
                ("x-custom", "42"),
                ("content-type", "text/plain"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            ],
            "hello",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-app"),
        Some("echo"),
        "app response headers pass through"
    );
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/orders/new");
    assert_eq!(v["query"], "x=1&y=a%20b");
    assert_eq!(v["body"], "hello");
    assert_eq!(v["headers"]["x-custom"], "42");
    assert_eq!(v["headers"]["content-type"], "text/plain");
    assert_eq!(v["headers"]["dapr-caller-app-id"], "svc-a");
    assert_eq!(v["headers"]["dapr-callee-app-id"], "svc-b");
    assert_eq!(
        v["headers"]["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );

    // Other verbs, and the dapr-app-id header form.
    let r = a
        .send("DELETE", "/things/7?force=true", &[("dapr-app-id", "svc-b")], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "DELETE");
    assert_eq!(r.json()["path"], "/things/7");
    assert_eq!(r.json()["query"], "force=true");
    assert!(
        r.json()["headers"].get("dapr-app-id").is_none(),
        "the addressing header is not forwarded"
    );

    // Errors from the app keep their status and body.
    let r = a
        .send("GET", "/v1.0/invoke/svc-b/method/status/418", &[], "")
        .await;
    assert_eq!((r.status, r.text().as_str()), (418, "app answered 418"));
    let r = a
        .send("PUT", "/v1.0/invoke/svc-b/method/status/503", &[], "")
        .await;
    assert_eq!(r.status, 503);

    // Caller-supplied identity headers are overwritten.
    let r = a
        .send(
            "GET",
            "/v1.0/invoke/svc-b/method/who",
            &[("dapr-caller-app-id", "forged")],
            "",
        )
        .await;
    assert_eq!(r.json()["headers"]["dapr-caller-app-id"], "svc-a");

    // Self-invocation reaches the local app.
    let r = b.send("GET", "/v1.0/invoke/svc-b/method/self", &[], "").await;
    assert_eq!(r.json()["headers"]["dapr-caller-app-id"], "svc-b");
}

#[tokio::test]
async fn large_bodies_stream_between_sidecars_and_oversize_is_refused() {
    let home = temp_dir("invoke-large");
    let app_port = http_app().await;
    let b = Daprd::start(Spec {
        app_port: Some(app_port),
        ..Spec::new("big-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("big-a", &home)).await;
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let r = a
        .send("POST", "/v1.0/invoke/big-b/method/raw", &[], body.clone())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(
        r.body.as_ref() == body.as_slice(),
        "3 MiB body came back unchanged"
    );

    let too_big = vec![b'x'; 5 * 1024 * 1024];
    let r = a
        .send("POST", "/v1.0/invoke/big-b/method/raw", &[], too_big)
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "ERR_BODY_READ");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-body-size")
    );
    drop(b);
}

#[tokio::test]
async fn grpc_app_is_invoked_over_http_and_grpc_apis() {
    let home = temp_dir("invoke-grpc");
    let app_port = grpc_app().await;
    let b = Daprd::start(Spec {
        app_port: Some(app_port),
        protocol: "grpc",
        ..Spec::new("grpc-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("grpc-a", &home)).await;

    let r = a
        .send(
            "POST",
            "/v1.0/invoke/grpc-b/method/hello",
            &[("content-type", "text/plain")],
            "ping",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello|grpc-a|text/plain|ping");

    // App errors become HTTP statuses with the gRPC status as JSON.
    let r = a
        .send("POST", "/v1.0/invoke/grpc-b/method/missing", &[], "")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "no such thing");
    let r = a
        .send("POST", "/v1.0/invoke/grpc-b/method/invalid", &[], "")
        .await;
    assert_eq!(r.status, 400);

    // The gRPC API.
    let mut client = a.grpc().await;
    let req = InvokeServiceRequest {
        id: "grpc-b".into(),
        message: Some(InvokeRequest {
            method: "hi".into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: b"there".to_vec(),
            }),
            content_type: "text/plain".into(),
            http_extension: None,
        }),
    };
    // Binary metadata reaches the app as the caller sent it, and comes back.
    let mut with_bin = tonic::Request::new(req.clone());
    with_bin.metadata_mut().insert_bin(
        "x-raw-bin",
        tonic::metadata::BinaryMetadataValue::from_bytes(b"\x00\xff\x10"),
    );
    let res = client.invoke_service(with_bin).await.expect("invoke");
    assert_eq!(
        res.metadata().get("x-app").and_then(|v| v.to_str().ok()),
        Some("grpc")
    );
    assert_eq!(
        res.metadata()
            .get_bin("x-raw-bin")
            .and_then(|v| v.to_bytes().ok())
            .as_deref(),
        Some(&b"\x00\xff\x10"[..])
    );
    assert_eq!(
        res.into_inner().data.map(|a| a.value).unwrap_or_default(),
        b"hi|grpc-a|text/plain|there"
    );
    let mut missing = req.clone();
    if let Some(m) = missing.message.as_mut() {
        m.method = "missing".into();
    }
    let err = client.invoke_service(missing).await.expect_err("app error");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "no such thing");
    drop(b);
}

#[tokio::test]
async fn grpc_api_invokes_http_apps_with_dapr_http_status() {
    let home = temp_dir("invoke-grpc-http");
    let app_port = http_app().await;
    let _b = Daprd::start(Spec {
        app_port: Some(app_port),
        ..Spec::new("gh-b", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("gh-a", &home)).await;
    let mut client = a.grpc().await;
    let mk = |method: &str| InvokeServiceRequest {
        id: "gh-b".into(),
        message: Some(InvokeRequest {
            method: method.into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: b"{}".to_vec(),
            }),
            content_type: "application/json".into(),
            http_extension: Some(daprs_proto::common::HttpExtension {
                verb: 4,
                querystring: "q=1".into(),
            }),
        }),
    };
    let res = client.invoke_service(mk("echo")).await.expect("invoke");
    assert_eq!(
        res.metadata()
            .get("dapr-http-status")
            .and_then(|v| v.to_str().ok()),
        Some("200")
    );
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_inner().data.map(|a| a.value).unwrap_or_default()).expect("json");
    assert_eq!(
        (body["method"].as_str(), body["query"].as_str()),
        (Some("PUT"), Some("q=1"))
    );
    let err = client.invoke_service(mk("status/404")).await.expect_err("404");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        err.metadata()
            .get("dapr-http-status")
            .and_then(|v| v.to_str().ok()),
        Some("404")
    );
}

#[tokio::test]
async fn invocation_errors_are_clear() {
    let home = temp_dir("invoke-errors");
    let a = Daprd::start(Spec::new("lonely", &home)).await;
    let r = a.send("GET", "/v1.0/invoke/ghost/method/x", &[], "").await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_DIRECT_INVOKE"));
    assert!(r.text().contains("ghost"));
    let r = a.send("GET", "/v1.0/invoke/a.b.c/method/x", &[], "").await;
    assert_eq!((r.status, r.error_code().as_str()), (400, "ERR_DIRECT_INVOKE"));
    let r = a.send("GET", "/not/a/route", &[], "").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "ERR_DIRECT_INVOKE"));
    // Own app-id without an app port.
    let r = a.send("GET", "/v1.0/invoke/lonely/method/x", &[], "").await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_APP_CHANNEL_NIL"));
    let mut client = a.grpc().await;
    let err = client
        .invoke_service(InvokeServiceRequest {
            id: "ghost".into(),
            message: Some(InvokeRequest::default()),
        })
        .await
        .expect_err("unknown app");
    assert_eq!(err.code(), tonic::Code::Internal);
    let err = client
        .invoke_service(InvokeServiceRequest {
            id: "x".into(),
            message: None,
        })
        .await
        .expect_err("no message");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn apps_behind_tls_are_invoked_with_https_and_grpcs() {
    let home = temp_dir("invoke-tls");
    let https_port = https_app().await;
    let grpcs_port = grpcs_app().await;
    let web = Daprd::start(Spec {
        app_port: Some(https_port),
        protocol: "https",
        extra: vec![
            "--enable-app-health-check".into(),
            "--app-health-check-path".into(),
            "/healthz".into(),
        ],
        ..Spec::new("tls-web", &home)
    })
    .await;
    let grpcs = Daprd::start(Spec {
        app_port: Some(grpcs_port),
        protocol: "grpcs",
        ..Spec::new("tls-grpc", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("tls-caller", &home)).await;
    // Readiness needs the health probe, which also goes over TLS.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while web.get("/v1.0/healthz").await.expect("healthz").status != 204 {
        assert!(
            std::time::Instant::now() < deadline,
            "https app never reported healthy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let r = a
        .send(
            "PUT",
            "/v1.0/invoke/tls-web/method/items/3?q=1",
            &[("x-custom", "7")],
            "over tls",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["path"], "/items/3");
    assert_eq!(v["query"], "q=1");
    assert_eq!(v["body"], "over tls");
    assert_eq!(v["headers"]["x-custom"], "7");

    let r = a
        .send(
            "POST",
            "/v1.0/invoke/tls-grpc/method/hello",
            &[("content-type", "text/plain")],
            "secure",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello|tls-caller|text/plain|secure");
    let r = a
        .send("POST", "/v1.0/invoke/tls-grpc/method/missing", &[], "")
        .await;
    assert_eq!(
        r.status, 404,
        "gRPC app errors still map to HTTP statuses over TLS"
    );
    drop((web, grpcs));
}

#[tokio::test]
async fn plain_protocol_against_a_tls_app_fails_clearly() {
    let home = temp_dir("invoke-tls-mismatch");
    let https_port = https_app().await;
    let _b = Daprd::start(Spec {
        app_port: Some(https_port),
        ..Spec::new("tls-mismatch", &home)
    })
    .await;
    let a = Daprd::start(Spec::new("tls-mismatch-caller", &home)).await;
    let r = a.send("GET", "/v1.0/invoke/tls-mismatch/method/x", &[], "").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");
}

#[tokio::test]
async fn a_restarted_target_sidecar_is_reached_again_on_the_next_call() {
    let home = temp_dir("invoke-restart");
    let app_port = http_app().await;
    let spec = || Spec {
        app_port: Some(app_port),
        ..Spec::new("svc-r", &home)
    };
    let b = Daprd::start(spec()).await;
    let a = Daprd::start(Spec::new("svc-q", &home)).await;
    let call = || a.send("POST", "/v1.0/invoke/svc-r/method/echo", &[], "ping");
    let r = call().await;
    assert_eq!((r.status, r.json()["body"].as_str()), (200, Some("ping")));
    // Several calls share the one connection the caller keeps to b.
    let replies = futures_util::future::join_all((0..8).map(|_| call())).await;
    assert!(replies.iter().all(|r| r.status == 200));

    // b goes away: its connection breaks, and the call says so.
    b.stop();
    let r = call().await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.error_code(), "ERR_DIRECT_INVOKE");

    // A new b (on new ports) is found and reached without restarting a.
    let _b = Daprd::start(spec()).await;
    let r = call().await;
    assert_eq!(
        (r.status, r.json()["body"].as_str()),
        (200, Some("ping")),
        "{}",
        r.text()
    );
}
