//! The secrets API over HTTP and gRPC: environment, file and Kubernetes
//! secret stores, the Configuration's access rules, and component metadata
//! taken from a secret.

use std::collections::HashMap;

use base64::Engine;
use daprs_proto::runtime::{GetBulkSecretRequest, GetSecretRequest};

use super::{
    apps::{serve_tls, tls_acceptor},
    harness::{Daprd, Spec, resources, temp_dir},
};

const STORES: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: envstore}
spec: {type: secretstores.local.env, version: v1}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: filestore}
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - {name: secretsFile, value: SECRETS_FILE}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: cache}
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    secretKeyRef: {name: "redis:host", key: "redis:host"}
auth: {secretStore: filestore}
"#;

const CONFIG: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: secrets}
spec:
  secrets:
    scopes:
    - storeName: filestore
      defaultAccess: deny
      allowedSecrets: ["db:user"]
"#;

#[tokio::test]
async fn secrets_from_env_and_file_stores_with_access_rules() {
    let home = temp_dir("secrets");
    let file = home.join("secrets.json");
    std::fs::write(
        &file,
        r#"{"db": {"user": "app", "password": "hunter2"}, "redis": {"host": "127.0.0.1:6379"}}"#,
    )
    .expect("secrets file");
    let config = home.join("config.yaml");
    std::fs::write(&config, CONFIG).expect("config");
    let res = resources(
        &home,
        &STORES.replace("SECRETS_FILE", &file.display().to_string()),
    );
    let d = Daprd::start(Spec {
        resources: Some(&res),
        extra: vec!["--config".into(), config.display().to_string()],
        env: vec![
            ("SHOP_SECRET", "s3cret".into()),
            ("DAPR_API_TOKEN", String::new()),
        ],
        ..Spec::new("secrets", &home)
    })
    .await;

    let r = d.send("GET", "/v1.0/secrets/envstore/SHOP_SECRET", &[], "").await;
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"SHOP_SECRET": "s3cret"}))
    );
    let r = d
        .send("GET", "/v1.0/secrets/envstore/DAPR_HOST_IP", &[], "")
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_SECRET_GET"));

    // The file store with an allow-list.
    let r = d.send("GET", "/v1.0/secrets/filestore/db:user", &[], "").await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"db:user": "app"})));
    let r = d
        .send("GET", "/v1.0/secrets/filestore/db:password", &[], "")
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "ERR_PERMISSION_DENIED")
    );
    let r = d.send("GET", "/v1.0/secrets/filestore/bulk", &[], "").await;
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"db:user": {"db:user": "app"}}))
    );
    let r = d.send("GET", "/v1.0/secrets/vault/x", &[], "").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "ERR_SECRET_STORE_NOT_FOUND")
    );

    // The Redis host came from the file store (the rules cover the API,
    // not the sidecar's own references).
    let r = d
        .send("POST", "/v1.0/state/cache", &[], r#"[{"key": "s", "value": 1}]"#)
        .await;
    assert_eq!(r.status, 204);

    // The same over gRPC.
    let mut g = d.grpc().await;
    let one = g
        .get_secret(GetSecretRequest {
            store_name: "filestore".into(),
            key: "db:user".into(),
            metadata: HashMap::new(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(one.data.get("db:user").map(String::as_str), Some("app"));
    let denied = g
        .get_secret(GetSecretRequest {
            store_name: "filestore".into(),
            key: "db:password".into(),
            metadata: HashMap::new(),
        })
        .await
        .expect_err("denied");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let bulk = g
        .get_bulk_secret(GetBulkSecretRequest {
            store_name: "envstore".into(),
            metadata: HashMap::new(),
        })
        .await
        .expect("bulk")
        .into_inner();
    assert!(bulk.data.contains_key("SHOP_SECRET"));
    assert!(!bulk.data.keys().any(|k| k.starts_with("DAPR_")));
}

#[tokio::test]
async fn without_secret_stores_the_api_says_so() {
    let home = temp_dir("nosecrets");
    let d = Daprd::start(Spec::new("nosecrets", &home)).await;
    let r = d.send("GET", "/v1.0/secrets/any/x", &[], "").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_SECRET_STORES_NOT_CONFIGURED")
    );
}

/// An API server over HTTPS with a token: `(port, CA PEM)`. It serves
/// `prod/db` and lists `prod`'s Secrets.
async fn api_server(token: &'static str) -> (u16, String) {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let db = serde_json::json!({"kind": "Secret", "metadata": {"name": "db", "namespace": "prod"},
        "data": {"user": b64("app"), "password": b64("pw")}});
    let router = axum::Router::new()
        .route(
            "/api/v1/namespaces/prod/secrets/db",
            axum::routing::get({
                let db = db.clone();
                move || async move { axum::Json(db) }
            }),
        )
        .route(
            "/api/v1/namespaces/prod/secrets",
            axum::routing::get(move || async move {
                axum::Json(serde_json::json!({"kind": "SecretList", "items": [db]}))
            }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"kind": "Status", "message": "not found", "code": 404})),
            )
        })
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                if auth != format!("Bearer {token}") {
                    return axum::response::IntoResponse::into_response((
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(
                            serde_json::json!({"kind": "Status", "message": "Unauthorized", "code": 401}),
                        ),
                    ));
                }
                next.run(req).await
            },
        ));
    let (acceptor, ca) = tls_acceptor(&[b"http/1.1"]);
    (serve_tls(router, acceptor).await, ca)
}

#[tokio::test]
async fn kubernetes_store_reads_secrets_through_a_kubeconfig() {
    let home = temp_dir("k8ssecrets");
    let (port, ca) = api_server("t0ken").await;
    let kubeconfig = home.join("kubeconfig");
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\ncontexts:\n- name: test\n  context: {{cluster: c, user: u}}\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{port}', certificate-authority-data: {b64}}}\nusers:\n- name: u\n  user: {{token: t0ken}}\n"
        ),
    )
    .expect("kubeconfig");
    let res = resources(
        &home,
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: kube}}\nspec:\n  type: secretstores.kubernetes\n  version: v1\n  metadata:\n  - {{name: kubeconfigPath, value: '{}'}}\n",
            kubeconfig.display()
        ),
    );
    let d = Daprd::start(Spec {
        resources: Some(&res),
        env: vec![("NAMESPACE", "prod".into())],
        ..Spec::new("k8ssecrets", &home)
    })
    .await;
    let r = d.send("GET", "/v1.0/secrets/kube/db", &[], "").await;
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"user": "app", "password": "pw"}))
    );
    let r = d.send("GET", "/v1.0/secrets/kube/bulk", &[], "").await;
    assert_eq!(r.json()["db"]["user"], "app");
    let r = d
        .send("GET", "/v1.0/secrets/kube/db?metadata.namespace=other", &[], "")
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_SECRET_GET"));
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not found")
    );
    let r = d.send("GET", "/v1.0/secrets/kube/..%2Fconfigmaps", &[], "").await;
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_SECRET_GET"));
}
