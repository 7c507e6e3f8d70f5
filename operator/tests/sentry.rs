//! The signing service against a fake API server at the HTTP boundary:
//! recorded TokenReview, Pod and Configuration answers.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use daprs_operator::{
    ca::Ca,
    sentry::{Sentry, SentrySettings},
};
use daprs_proto::sentry::{
    SignCertificateRequest, ca_server::Ca as _, sign_certificate_request::TokenValidator,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tonic::{Code, Request};

const AUDIENCE: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";

fn review_for(token: &str) -> Value {
    let user = |sa: &str, pod: Option<&str>| {
        let mut u = json!({"username": format!("system:serviceaccount:{sa}"), "uid": "u", "groups": ["system:serviceaccounts"]});
        if let Some(p) = pod {
            u["extra"] = json!({"authentication.kubernetes.io/pod-name": [p], "authentication.kubernetes.io/pod-uid": ["x"]});
        }
        u
    };
    let status = match token {
        "good-orders" => {
            json!({"authenticated": true, "user": user("prod:orders-sa", Some("orders-7d9")), "audiences": [AUDIENCE]})
        }
        "missing-config" => {
            json!({"authenticated": true, "user": user("prod:orders-sa", Some("orders-broken")), "audiences": [AUDIENCE]})
        }
        "no-pod" => {
            json!({"authenticated": true, "user": user("prod:orders-sa", None), "audiences": [AUDIENCE]})
        }
        "injector" => {
            json!({"authenticated": true, "user": user("dapr-system:daprs-injector", Some("injector-1")), "audiences": [AUDIENCE]})
        }
        "user" => json!({"authenticated": true, "user": {"username": "alice"}}),
        "expired" => {
            json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"})
        }
        _ => {
            json!({"authenticated": false, "error": "token audiences [\"https://kubernetes.default.svc\"] is invalid for the target audiences"})
        }
    };
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}, "status": status})
}

fn pod(name: &str, ns: &str, sa: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": "p", "annotations": annotations},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "x"}]}})
}

fn not_found(what: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404})
}

/// A fake API server answering what the signing service asks.
fn fake_kube() -> kube::Client {
    let svc = tower::service_fn(|req: http::Request<kube::client::Body>| async move {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let (status, answer) = match (method.as_str(), path.as_str()) {
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
                let sent: Value = serde_json::from_slice(&body).unwrap_or_default();
                assert_eq!(
                    sent["spec"]["audiences"],
                    json!([AUDIENCE]),
                    "audience-bound review"
                );
                (
                    201,
                    review_for(sent["spec"]["token"].as_str().unwrap_or_default()),
                )
            }
            ("GET", "/api/v1/namespaces/prod/pods/orders-7d9") => (
                200,
                pod(
                    "orders-7d9",
                    "prod",
                    "orders-sa",
                    json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/config": "appconfig"}),
                ),
            ),
            ("GET", "/api/v1/namespaces/prod/pods/orders-broken") => (
                200,
                pod(
                    "orders-broken",
                    "prod",
                    "orders-sa",
                    json!({"dapr.io/app-id": "orders", "dapr.io/config": "missing"}),
                ),
            ),
            ("GET", "/api/v1/namespaces/dapr-system/pods/injector-1") => (
                200,
                pod(
                    "injector-1",
                    "dapr-system",
                    "daprs-injector",
                    json!({"dapr.io/control-plane": "injector"}),
                ),
            ),
            ("GET", "/apis/dapr.io/v1alpha1/namespaces/prod/configurations/appconfig") => (
                200,
                json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "appconfig", "namespace": "prod"},
                    "spec": {"accessControl": {"defaultAction": "allow", "trustDomain": "shop.example"}}}),
            ),
            _ => (404, not_found(&path)),
        };
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(kube::client::Body::from(answer.to_string().into_bytes()))
    });
    kube::Client::new(svc, "default")
}

fn settings() -> SentrySettings {
    SentrySettings {
        control_plane_namespace: "dapr-system".into(),
        control_plane_trust_domain: "cluster.local".into(),
        workload_ttl: Duration::from_secs(24 * 3600),
        allowed_skew: Duration::from_secs(15 * 60),
    }
}

fn sentry() -> (Sentry, Arc<Ca>) {
    let (ca, _) = Ca::generate("cluster.local", "dapr-system", OffsetDateTime::now_utc()).expect("ca");
    let ca = Arc::new(ca);
    (
        Sentry {
            kube: fake_kube(),
            ca: Arc::new(RwLock::new(Ok(ca.clone()))),
            settings: settings(),
        },
        ca,
    )
}

fn csr() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
        .into_bytes()
}

fn request(id: &str, ns: &str, token: &str) -> SignCertificateRequest {
    SignCertificateRequest {
        id: id.into(),
        token: token.into(),
        trust_domain: String::new(),
        namespace: ns.into(),
        certificate_signing_request: csr().into(),
        token_validator: TokenValidator::Kubernetes as i32,
        jwt_audiences: vec![],
    }
}

fn openssl_text(pem: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("daprs-sentry-{}-{}.pem", std::process::id(), pem.len()));
    std::fs::write(&path, pem).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("openssl");
    let _ = std::fs::remove_file(&path);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn an_app_gets_a_certificate_for_its_own_identity() {
    let (s, ca) = sentry();
    let resp = s
        .sign_certificate(Request::new(request("orders", "prod", "good-orders")))
        .await
        .expect("signed")
        .into_inner();
    let chain = String::from_utf8(resp.workload_certificate.to_vec()).expect("pem");
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(openssl_text(chain.as_bytes()).contains("URI:spiffe://shop.example/ns/prod/orders"));
    assert_eq!(
        resp.trust_chain_certificates,
        vec![bytes::Bytes::from(ca.trust_anchors.clone())]
    );
    let until = resp.valid_until.expect("valid_until").seconds;
    let expected = OffsetDateTime::now_utc().unix_timestamp() + 24 * 3600;
    assert!((until - expected).abs() < 60, "{until} vs {expected}");
    // Counted under Dapr's names (the counters are the process's).
    let mut text = String::new();
    daprs_operator::metrics::METRICS.render(&mut text);
    assert!(
        text.contains("# TYPE dapr_sentry_cert_sign_success_total counter"),
        "{text}"
    );
    assert!(
        text.contains("dapr_sentry_cert_sign_request_received_total "),
        "{text}"
    );
}

#[tokio::test]
async fn control_plane_pods_get_their_service_names() {
    let (s, _) = sentry();
    let resp = s
        .sign_certificate(Request::new(request("dapr-injector", "dapr-system", "injector")))
        .await
        .expect("signed")
        .into_inner();
    let text = openssl_text(&resp.workload_certificate);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/dapr-system/dapr-injector"),
        "{text}"
    );
    assert!(text.contains("DNS:daprs-injector.dapr-system.svc"), "{text}");
}

#[tokio::test]
async fn refusals_carry_a_clear_status() {
    let (s, _) = sentry();
    let refuse =
        async |req: SignCertificateRequest| s.sign_certificate(Request::new(req)).await.expect_err("refused");

    let e = refuse(request("orders", "staging", "good-orders")).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("namespace \"prod\""), "{}", e.message());

    let e = refuse(request("payments", "prod", "good-orders")).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("\"orders\"") && e.message().contains("\"payments\""),
        "{}",
        e.message()
    );

    let e = refuse(request("orders", "prod", "expired")).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("expired"), "{}", e.message());

    let e = refuse(request("orders", "prod", "wrong-audience")).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("audiences"), "{}", e.message());

    let e = refuse(request("orders", "prod", "no-pod")).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("not bound to a pod"), "{}", e.message());

    let e = refuse(request("orders", "prod", "user")).await;
    assert_eq!(e.code(), Code::PermissionDenied);

    let e = refuse(request("orders", "prod", "missing-config")).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("\"missing\""), "{}", e.message());

    let mut bad_csr = request("orders", "prod", "good-orders");
    bad_csr.certificate_signing_request =
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .to_vec()
            .into();
    let e = refuse(bad_csr).await;
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());

    let e = refuse(request("orders.v1", "prod", "good-orders")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = refuse(request("orders", "", "good-orders")).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut insecure = request("orders", "prod", "good-orders");
    insecure.token_validator = TokenValidator::Insecure as i32;
    assert_eq!(refuse(insecure).await.code(), Code::InvalidArgument);
    let mut text = String::new();
    daprs_operator::metrics::METRICS.render(&mut text);
    assert!(
        text.contains("dapr_sentry_cert_sign_failure_total{reason=\"InvalidArgument\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_ca_that_is_not_ready_says_why() {
    let (mut s, _) = sentry();
    s.ca = Arc::new(RwLock::new(Err(
        "issuer.crt does not chain to any root in ca.crt".into(),
    )));
    let e = s
        .sign_certificate(Request::new(request("orders", "prod", "good-orders")))
        .await
        .expect_err("not ready");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("does not chain"));
}
