//! Envtest tier for the operator: CRDs installed in a real API server, Dapr
//! sample Components given a status, a Deployment given its Service, a
//! certificate issued for a real pod-bound token through a TokenReview, and
//! a daprd in Kubernetes mode that gets its identity and components from
//! the operator and follows a component created later.
//! Skips (one line) without `KUBEBUILDER_ASSETS`.

use std::{sync::Arc, time::Duration};

use daprs_e2e::apiserver::ControlPlane;
use daprs_operator::serve::run;
use daprs_proto::sentry::{
    SignCertificateRequest, ca_client::CaClient, sign_certificate_request::TokenValidator,
};
use serde_json::{Value, json};

const AUDIENCE: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";

fn free() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

async fn eventually(cp: &ControlPlane, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = cp.request("GET", path, None).await
            && r.status == 200
            && ok(&r.body)
        {
            return r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn create(cp: &ControlPlane, path: &str, body: Value) -> Value {
    let r = cp.request("POST", path, Some(&body)).await.expect("request");
    assert!(
        r.status == 201 || r.status == 200,
        "POST {path}: {} {:?}",
        r.status,
        r.body
    );
    r.body
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

#[tokio::test]
async fn operator_against_a_real_api_server() {
    let Some(cp) = daprs_e2e::apiserver::start_or_skip().await else {
        return;
    };

    // CRDs, generated from the types, installed and established.
    for (_, crd) in daprs_api::crds::all().expect("crds") {
        let name = crd.metadata.name.clone().unwrap_or_default();
        create(
            &cp,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            serde_json::to_value(&crd).expect("json"),
        )
        .await;
        eventually(
            &cp,
            &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"),
            "CRD established",
            |v| {
                v["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
            },
        )
        .await;
    }
    for ns in ["dapr-system", "prod"] {
        cp.namespace(ns).await.expect("namespace");
    }

    // Sample Components from Dapr's docs, one of them broken.
    let components = "/apis/dapr.io/v1alpha1/namespaces/prod/components";
    create(&cp, components, json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "statestore"},
        "spec": {"type": "state.redis", "version": "v1", "metadata": [{"name": "redisHost", "value": "redis-master:6379"}]}})).await;
    create(&cp, components, json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "pubsub"},
        "spec": {"type": "pubsub.kafka", "version": "v1", "metadata": [{"name": "consumerGroup", "value": "g"}]}})).await;
    // A Dapr-enabled Deployment (no controller-manager runs, so no pods; the Service still follows).
    create(&cp, "/apis/apps/v1/namespaces/prod/deployments", json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "orders"},
        "spec": {"selector": {"matchLabels": {"app": "orders"}}, "template": {"metadata": {"labels": {"app": "orders"},
            "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}},
            "spec": {"containers": [{"name": "orders", "image": "example.com/orders:1"}]}}}})).await;

    let client = cp.kube_client().await.expect("kube client");
    let settings = daprs_e2e::operator::settings(None);
    let (sentry_addr, api_addr) = (settings.sentry_addr, settings.api_addr);
    tokio::spawn(run(client, settings));

    eventually(
        &cp,
        &format!("{components}/statestore"),
        "statestore Ready=True",
        |v| v["status"]["conditions"][0]["status"] == "True",
    )
    .await;
    let pubsub = eventually(&cp, &format!("{components}/pubsub"), "pubsub Ready=False", |v| {
        v["status"]["conditions"][0]["status"] == "False"
    })
    .await;
    assert_eq!(pubsub["status"]["conditions"][0]["reason"], "MissingMetadata");
    let svc = eventually(
        &cp,
        "/api/v1/namespaces/prod/services/orders-dapr",
        "orders-dapr Service",
        |_| true,
    )
    .await;
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    let bundle = eventually(
        &cp,
        "/api/v1/namespaces/dapr-system/configmaps/dapr-trust-bundle",
        "trust anchors",
        |v| v["data"]["ca.crt"].is_string(),
    )
    .await;
    let anchors = bundle["data"]["ca.crt"].as_str().unwrap_or_default().to_string();

    // A pod and a token bound to it, audience-bound to the operator.
    create(
        &cp,
        "/api/v1/namespaces/prod/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "orders"}}),
    )
    .await;
    let pod = create(&cp, "/api/v1/namespaces/prod/pods", json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-1", "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}},
        "spec": {"serviceAccountName": "orders", "containers": [{"name": "orders", "image": "example.com/orders:1"}]}})).await;
    let token = create(&cp, "/api/v1/namespaces/prod/serviceaccounts/orders/token", json!({"apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest", "spec": {"audiences": [AUDIENCE], "expirationSeconds": 3600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "orders-1", "uid": pod["metadata"]["uid"]}}})).await;
    let token = token["status"]["token"].as_str().expect("token").to_string();

    // The certificate service over TLS, trusting only the published anchors.
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut tls = daprs_e2e::pki::client_config(anchors.as_bytes()).expect("anchors");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let channel = tonic::transport::Endpoint::from_static("http://dapr-sentry.dapr-system.svc")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(sentry_addr).await?;
                let name =
                    ServerName::try_from("dapr-sentry.dapr-system.svc").map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connector.connect(name, tcp).await?))
            }
        }))
        .await
        .expect("TLS to the certificate service");
    let mut ca = CaClient::new(channel);
    let request = |id: &str, ns: &str| SignCertificateRequest {
        id: id.into(),
        token: token.clone(),
        trust_domain: String::new(),
        namespace: ns.into(),
        certificate_signing_request: csr().into(),
        token_validator: TokenValidator::Kubernetes as i32,
        jwt_audiences: vec![],
    };
    let signed = ca
        .sign_certificate(request("orders", "prod"))
        .await
        .expect("signed")
        .into_inner();
    let leaf = String::from_utf8(signed.workload_certificate.to_vec()).expect("pem");
    let der = CertificateDer::pem_slice_iter(leaf.as_bytes())
        .next()
        .expect("leaf")
        .expect("der");
    let spiffe = b"spiffe://public/ns/prod/orders";
    assert!(
        der.windows(spiffe.len()).any(|w| w == spiffe),
        "SPIFFE ID in the certificate"
    );

    let err = ca
        .sign_certificate(request("payments", "prod"))
        .await
        .expect_err("other app-id");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = ca
        .sign_certificate(request("orders", "dapr-system"))
        .await
        .expect_err("other namespace");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // daprd in Kubernetes mode, as the injector starts it, in a namespace of
    // its own with one in-memory state store.
    cp.namespace("shop").await.expect("namespace");
    let shop_components = "/apis/dapr.io/v1alpha1/namespaces/shop/components";
    let in_memory = |name: &str| {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": name},
            "spec": {"type": "state.in-memory", "version": "v1", "metadata": []}})
    };
    create(&cp, shop_components, in_memory("cache")).await;
    create(
        &cp,
        "/api/v1/namespaces/shop/serviceaccounts",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cart"}}),
    )
    .await;
    let pod = create(&cp, "/api/v1/namespaces/shop/pods", json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cart-1", "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "cart"}},
        "spec": {"serviceAccountName": "cart", "containers": [{"name": "cart", "image": "example.com/cart:1"}]}})).await;
    let token = create(&cp, "/api/v1/namespaces/shop/serviceaccounts/cart/token", json!({"apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest", "spec": {"audiences": [AUDIENCE], "expirationSeconds": 3600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "cart-1", "uid": pod["metadata"]["uid"]}}})).await;
    let dir = std::env::temp_dir().join(format!("daprs-envtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, token["status"]["token"].as_str().expect("token")).expect("token file");
    let http_port = free().port();
    let args: Vec<String> = [
        "daprd",
        "--app-id",
        "cart",
        "--mode",
        "kubernetes",
        "--control-plane-address",
        &api_addr.to_string(),
        "--sentry-address",
        &sentry_addr.to_string(),
        "--enable-mtls",
        "--disable-builtin-k8s-secret-store",
        "--dapr-http-port",
        &http_port.to_string(),
        "--dapr-grpc-port",
        &free().port().to_string(),
        "--dapr-internal-grpc-port",
        &free().port().to_string(),
        "--metrics-port",
        &free().port().to_string(),
        "--dapr-listen-addresses",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [
        ("NAMESPACE", "shop".to_string()),
        ("DAPR_TRUST_ANCHORS", anchors.clone()),
        ("DAPR_SENTRY_TOKEN_FILE", token_file.display().to_string()),
        ("DAPRS_HOME", dir.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let flags = <daprs_sidecar::flags::Flags as clap::Parser>::try_parse_from(args).expect("flags");
    let settings = daprs_sidecar::settings::Settings::from_flags(flags, env).expect("settings");
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daprd = tokio::spawn(daprs_sidecar::run(settings, async {
        let _ = stopped.await;
    }));
    let daprd_addr = std::net::SocketAddr::from(([127, 0, 0, 1], http_port));
    let component_names = || async move {
        let (_, body) = http(daprd_addr, "GET", "/v1.0/metadata", "").await?;
        let meta: Value = serde_json::from_str(&body).ok()?;
        let mut names: Vec<String> = meta["components"]
            .as_array()?
            .iter()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect();
        names.sort();
        Some(names)
    };
    let daprd = &daprd;
    let wait_for = |want: &'static [&'static str]| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if component_names().await.is_some_and(|n| n == want) {
                return;
            }
            assert!(!daprd.is_finished(), "daprd exited");
            assert!(std::time::Instant::now() < deadline, "daprd never had {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for(&["cache"]).await;
    let (status, _) = http(
        daprd_addr,
        "POST",
        "/v1.0/state/cache",
        r#"[{"key": "k", "value": 1}]"#,
    )
    .await
    .expect("save");
    assert_eq!(status, 204);

    // A component created now reaches the running sidecar through the watch.
    let created = std::time::Instant::now();
    create(&cp, shop_components, in_memory("cache2")).await;
    wait_for(&["cache", "cache2"]).await;
    eprintln!("new component visible to daprd after {:?}", created.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 exchange: (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n")?.1.to_string()))
}
