//! The webhook over real HTTPS: AdmissionReviews in, patches out.

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::Engine;
use bytes::Bytes;
use daprs_injector::{
    admission::Requesters,
    patch,
    server::{self, ReloadingCert, Webhook},
    sidecar::{InjectorConfig, NativeSidecar},
};
use daprs_telemetry::trace::{Sampler, Tracer};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

struct Tls {
    ca_pem: String,
    dir: PathBuf,
}

/// A CA and a serving certificate for 127.0.0.1 signed by it, written to files.
fn issue(dir: &std::path::Path, serial: u64) -> Tls {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("test ca {serial}"));
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("tls.crt"), leaf.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("write");
    Tls {
        ca_pem: ca_cert.pem(),
        dir: dir.to_path_buf(),
    }
}

fn client(
    ca_pem: &str,
) -> Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

struct Running {
    port: u16,
    tls: Tls,
}

async fn start(name: &str) -> Running {
    start_traced(name, Tracer::off()).await
}

async fn start_traced(name: &str, tracer: Tracer) -> Running {
    let dir = std::env::temp_dir().join(format!("daprs-injector-{name}-{}", std::process::id()));
    let tls = issue(&dir, 1);
    let cert = Arc::new(ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key")).expect("cert"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hook = Arc::new(Webhook {
        config: InjectorConfig {
            image: "ghcr.io/daprs/daprd:0.1.0".into(),
            native_sidecar: NativeSidecar::Off,
            ..InjectorConfig::default()
        },
        requesters: Requesters::default(),
        tracer,
    });
    tokio::spawn(server::serve(
        listener,
        cert,
        server::router(hook),
        std::future::pending(),
    ));
    Running { port, tls }
}

async fn post(r: &Running, ca: &str, content_type: &str, body: impl Into<Bytes>) -> (u16, Bytes) {
    post_with(r, ca, &[("content-type", content_type)], body).await
}

async fn post_with(r: &Running, ca: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> (u16, Bytes) {
    let mut req = http::Request::post(format!("https://127.0.0.1:{}/mutate", r.port));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = client(ca).request(req).await.expect("https request");
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.expect("body").to_bytes())
}

fn review(api_version: &str, user: &str, object: Value, kind: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "7f0b2c9e-1111-2222-3333-444455556666",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": user, "uid": "abc", "groups": ["system:serviceaccounts"]},
            "object": object,
            "dryRun": false
        }
    })
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "orders-5d9f-", "namespace": "shop", "annotations": annotations,
                     "labels": {"app": "orders"}},
        "spec": {"containers": [{"name": "orders", "image": "example.com/orders:1",
                 "ports": [{"containerPort": 8080}]}],
                 "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}]}
    })
}

const CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

#[tokio::test]
async fn annotated_pods_from_controllers_get_a_working_patch() {
    let r = start("inject").await;
    let object =
        pod(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "8080"}));
    for (api_version, dry_run) in [("admission.k8s.io/v1", false), ("admission.k8s.io/v1beta1", true)] {
        let mut body = review(api_version, CONTROLLER, object.clone(), "Pod");
        body["request"]["dryRun"] = json!(dry_run);
        let (status, answer) = post(&r, &r.tls.ca_pem, "application/json", body.to_string()).await;
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&answer).expect("json");
        assert_eq!(
            answer["apiVersion"], api_version,
            "answered in the request's version"
        );
        let resp = &answer["response"];
        assert_eq!(resp["uid"], "7f0b2c9e-1111-2222-3333-444455556666");
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(resp["patch"].as_str().expect("patch"))
            .expect("base64");
        let ops: Vec<Value> = serde_json::from_slice(&bytes).expect("ops");
        let mut patched = object.clone();
        patch::apply(&mut patched, &ops).expect("patch applies");
        let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched).expect("valid pod");
        let spec = typed.spec.expect("spec");
        assert_eq!(spec.containers.len(), 2);
        assert_eq!(spec.containers[1].name, "daprd");
        assert!(
            spec.volumes
                .expect("volumes")
                .iter()
                .any(|v| v.name == "dapr-identity-token")
        );
        assert_eq!(typed.metadata.labels.expect("labels")["dapr.io/app-id"], "orders");
    }
    // Counted under Dapr's metric names.
    let text = daprs_injector::metrics::METRICS.render();
    assert!(
        text.contains("dapr_injector_sidecar_injection_succeeded_total{app_id=\"orders\"}"),
        "{text}"
    );
    assert!(text.contains("# TYPE dapr_injector_sidecar_injection_requests_total counter"));
}

#[tokio::test]
async fn other_requests_pass_unchanged_or_are_refused_clearly() {
    let r = start("other").await;
    let ca = r.tls.ca_pem.clone();
    let ask = async |body: Value| -> Value {
        let (status, answer) = post(&r, &ca, "application/json", body.to_string()).await;
        assert_eq!(status, 200);
        serde_json::from_slice::<Value>(&answer).expect("json")["response"].clone()
    };

    // Not a pod.
    let resp = ask(review(
        "admission.k8s.io/v1",
        CONTROLLER,
        json!({"kind": "Service"}),
        "Service",
    ))
    .await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
    // Not annotated.
    let resp = ask(review("admission.k8s.io/v1", CONTROLLER, pod(json!({})), "Pod")).await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
    // A requester that is not allowed: admitted without the sidecar, and told why.
    let annotated = pod(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}));
    let resp = ask(review("admission.k8s.io/v1", "alice", annotated.clone(), "Pod")).await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
    let warning = resp["warnings"][0].as_str().expect("warning");
    assert!(
        warning.contains("alice") && warning.contains("--allowed-service-accounts"),
        "{warning}"
    );
    // system:masters may.
    let mut admin = review("admission.k8s.io/v1", "kubernetes-admin", annotated, "Pod");
    admin["request"]["userInfo"]["groups"] = json!(["system:masters", "system:authenticated"]);
    assert!(ask(admin).await.get("patch").is_some());
    // A broken app-id is refused with the annotation named.
    let bad = pod(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "Orders_1"}));
    let resp = ask(review("admission.k8s.io/v1", CONTROLLER, bad, "Pod")).await;
    assert_eq!(resp["allowed"], false);
    assert!(
        resp["status"]["message"]
            .as_str()
            .expect("message")
            .contains("dapr.io/app-id")
    );
    // Bad annotations still inject, with warnings.
    let shaky = pod(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "x"}));
    let resp = ask(review("admission.k8s.io/v1", CONTROLLER, shaky, "Pod")).await;
    assert!(resp.get("patch").is_some());
    assert!(
        resp["warnings"][0]
            .as_str()
            .expect("warning")
            .contains("dapr.io/app-port")
    );
}

#[tokio::test]
async fn malformed_and_huge_bodies_get_http_errors() {
    let r = start("bad").await;
    let ca = r.tls.ca_pem.clone();
    assert_eq!(post(&r, &ca, "application/json", "{not json").await.0, 400);
    assert_eq!(post(&r, &ca, "application/json", "").await.0, 400);
    assert_eq!(
        post(&r, &ca, "application/json", r#"{"kind":"AdmissionReview"}"#)
            .await
            .0,
        400
    );
    assert_eq!(post(&r, &ca, "text/plain", "{}").await.0, 415);
    let huge = vec![b' '; server::MAX_BODY + 1];
    assert_eq!(post(&r, &ca, "application/json", huge).await.0, 413);
    // Still serving.
    let body = review("admission.k8s.io/v1", CONTROLLER, pod(json!({})), "Pod");
    assert_eq!(post(&r, &ca, "application/json", body.to_string()).await.0, 200);
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_restart() {
    let r = start("reload").await;
    let body = review("admission.k8s.io/v1", CONTROLLER, pod(json!({})), "Pod").to_string();
    assert_eq!(
        post(&r, &r.tls.ca_pem, "application/json", body.clone()).await.0,
        200
    );
    // Rotate: a new CA and leaf in the same files. Make sure the mtime moves.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let next = issue(&r.tls.dir, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let req = http::Request::post(format!("https://127.0.0.1:{}/mutate", r.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .expect("request");
        if client(&next.ca_pem).request(req).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TLS connection to the webhook, as a client that then misbehaves.
async fn raw_tls(r: &Running) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(r.tls.ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", r.port))
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
        .await
        .expect("handshake")
}

#[tokio::test]
async fn stalled_and_oversized_requests_are_cut_off_after_the_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = start("slow").await;
    // A request head that never ends is closed by the 10 s head deadline.
    let mut slow = raw_tls(&r).await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    // A declared body over the limit is answered at once, unread.
    let mut big = raw_tls(&r).await;
    big.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), big.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a half-sent head was held for 15 s");
    assert!(rest.is_empty());
    assert!(
        started.elapsed() <= Duration::from_secs(11),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reviews_that_are_too_large_or_not_pods_are_answered_clearly() {
    let r = start("odd-reviews").await;
    let answer = |object: Value| {
        let body = review("admission.k8s.io/v1", CONTROLLER, object, "Pod").to_string();
        let r = &r;
        async move {
            let (status, answer) = post(r, &r.tls.ca_pem, "application/json", body).await;
            assert_eq!(status, 200);
            let v: Value = serde_json::from_slice(&answer).expect("json");
            (v["response"].clone(), answer.len())
        }
    };
    // Annotations over Kubernetes' 256 KiB: refused, with nothing built from them.
    let huge =
        pod(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "big": "x".repeat(300 << 10)}));
    let (resp, _) = answer(huge).await;
    assert_eq!(resp["allowed"], false);
    assert!(
        resp["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("262144"),
        "{resp}"
    );
    // An app-id of 100 KB is quoted short.
    let long_id = pod(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "A".repeat(100 << 10)}));
    let (resp, size) = answer(long_id).await;
    assert_eq!(resp["allowed"], false);
    assert!(size < 2048, "the answer took {size} bytes");
    // No pod object, or one that cannot be a pod: allowed, with a warning saying so.
    for object in [
        Value::Null,
        json!("a string"),
        json!({"metadata": {"annotations": {"dapr.io/enabled": "true"}}, "spec": {"containers": "nginx"}}),
    ] {
        let (resp, _) = answer(object.clone()).await;
        assert_eq!(resp["allowed"], true, "{object}");
        let warning = resp["warnings"][0].as_str().unwrap_or_default();
        assert!(warning.contains("sidecar was not added"), "{object}: {resp}");
    }
}

#[tokio::test]
async fn each_admission_is_a_span_under_the_api_servers_trace() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let r = start_traced("traced", Tracer::new(Sampler::new(1.0), Some(tx))).await;
    let object =
        pod(json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "8080"}));
    let body = review("admission.k8s.io/v1", CONTROLLER, object, "Pod");
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [("content-type", "application/json"), ("traceparent", parent)];
    let (status, _) = post_with(&r, &r.tls.ca_pem, &headers, body.to_string()).await;
    assert_eq!(status, 200);
    let span = rx.recv().await.expect("a span");
    assert_eq!(span.name(), "admission /mutate");
    assert_eq!(
        span.parent,
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );
    let attr = |k: &str| {
        span.attributes()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(attr("dapr.injector.outcome").as_deref(), Some("injected"));
    assert_eq!(attr("dapr.app_id").as_deref(), Some("orders"));
    assert!(span.error().is_none());
    // A malformed review's span is an error.
    let (status, _) = post(&r, &r.tls.ca_pem, "application/json", "{}").await;
    assert_eq!(status, 400);
    let bad = rx.recv().await.expect("a span");
    assert!(bad.error().is_some(), "{bad:?}");
}
