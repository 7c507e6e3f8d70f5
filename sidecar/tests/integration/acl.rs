//! Access control on the callee's sidecar without mutual TLS: the caller is
//! who its sidecar says, and HTTP verbs count for HTTP apps.

use daprs_proto::{
    common::{HttpExtension, InvokeRequest},
    runtime::InvokeServiceRequest,
};

use super::{
    apps::http_app,
    harness::{Daprd, Spec, start_fails, temp_dir},
};

async fn call(d: &Daprd, verb: &str, path: &str) -> super::harness::Reply {
    d.send(verb, &format!("/v1.0/invoke/acl-orders/method{path}"), &[], "")
        .await
}

const CONFIG: &str = r#"apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: acl
spec:
  accessControl:
    defaultAction: deny
    policies:
    - appId: frontend
      defaultAction: deny
      namespace: default
      operations:
      - name: /orders/**
        httpVerb: [GET, POST]
        action: allow
      - name: /orders/admin/*
        httpVerb: ["*"]
        action: deny
"#;

#[tokio::test]
async fn callers_get_only_the_operations_their_policy_allows() {
    let home = temp_dir("acl");
    let config = home.join("acl.yaml");
    std::fs::write(&config, CONFIG).expect("config");
    let app_port = http_app().await;
    let _orders = Daprd::start(Spec {
        app_port: Some(app_port),
        extra: vec!["--config".into(), config.display().to_string()],
        ..Spec::new("acl-orders", &home)
    })
    .await;
    let frontend = Daprd::start(Spec::new("frontend", &home)).await;
    let stranger = Daprd::start(Spec::new("stranger", &home)).await;

    assert_eq!(call(&frontend, "GET", "/orders/7").await.status, 200);
    assert_eq!(call(&frontend, "POST", "/orders/7/items").await.status, 200);
    let r = call(&frontend, "DELETE", "/orders/7").await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "ERR_DIRECT_INVOKE"));
    assert!(
        r.text().contains("frontend") && r.text().contains("DELETE"),
        "{}",
        r.text()
    );
    assert_eq!(
        call(&frontend, "GET", "/orders/admin/x").await.status,
        403,
        "most specific rule"
    );
    assert_eq!(
        call(&frontend, "GET", "/payments").await.status,
        403,
        "policy default"
    );
    // A path that climbs out of /orders is cleaned before it is checked.
    assert_eq!(
        call(&frontend, "GET", "/orders/%2e%2e/payments").await.status,
        403
    );
    assert_eq!(
        call(&stranger, "GET", "/orders/7").await.status,
        403,
        "global default"
    );

    // InvokeService is checked the same way.
    let mut c = stranger.grpc().await;
    let err = c
        .invoke_service(InvokeServiceRequest {
            id: "acl-orders".into(),
            message: Some(InvokeRequest {
                method: "orders/7".into(),
                http_extension: Some(HttpExtension {
                    verb: 1,
                    querystring: String::new(),
                }),
                ..Default::default()
            }),
        })
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[test]
fn an_invalid_access_control_document_stops_start_up_naming_the_field() {
    let home = temp_dir("acl-invalid");
    let config = home.join("bad.yaml");
    std::fs::write(
        &config,
        CONFIG.replace(
            "defaultAction: deny\n    policies",
            "defaultAction: maybe\n    policies",
        ),
    )
    .expect("config");
    let all = start_fails(
        &home,
        &["--app-id", "bad-acl", "--config", &config.display().to_string()],
    );
    assert!(
        all.contains("accessControl.defaultAction") && all.contains("maybe"),
        "{all}"
    );
}
