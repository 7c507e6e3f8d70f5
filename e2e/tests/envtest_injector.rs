//! Envtest tier: the injector registered with a real kube-apiserver, pods
//! created through it. Skips (one line) without `KUBEBUILDER_ASSETS`.

use std::sync::Arc;

use base64::Engine;
use daprs_e2e::pki;
use daprs_injector::{
    admission::Requesters,
    server::{self, ReloadingCert, Webhook},
    sidecar::{InjectorConfig, NativeSidecar},
};
use serde_json::json;

fn pod(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1", "ports": [{"containerPort": 8080}]}]}
    })
}

#[tokio::test]
async fn pods_created_through_the_api_server_are_injected() {
    let Some(cp) = daprs_e2e::apiserver::start_or_skip().await else {
        return;
    };

    // The webhook, in this process, with a certificate the API server trusts.
    let tls = pki::issue(&["127.0.0.1"]).expect("pki");
    std::fs::write(cp.dir.join("hook.crt"), &tls.leaf_pem).expect("write");
    std::fs::write(cp.dir.join("hook.key"), &tls.leaf_key_pem).expect("write");
    let cert = Arc::new(ReloadingCert::new(cp.dir.join("hook.crt"), cp.dir.join("hook.key")).expect("cert"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hook = Arc::new(Webhook {
        config: InjectorConfig {
            native_sidecar: NativeSidecar::Off,
            ..InjectorConfig::default()
        },
        requesters: Requesters::default(),
        tracer: daprs_telemetry::trace::Tracer::off(),
    });
    tokio::spawn(server::serve(
        listener,
        cert,
        server::router(hook),
        std::future::pending(),
    ));

    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "daprs-injector"},
        "webhooks": [{
            "name": "sidecar-injector.daprs.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}/mutate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&tls.ca_pem),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}]
        }]
    });
    let r = cp
        .request(
            "POST",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            Some(&config),
        )
        .await
        .expect("register webhook");
    assert_eq!(r.status, 201, "{:?}", r.body);

    // The API server picks up webhook configurations asynchronously.
    let pods = "/api/v1/namespaces/default/pods";
    let annotated = |name: &str| {
        pod(
            name,
            json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}),
        )
    };
    let mut attempt = 0;
    let created = loop {
        attempt += 1;
        let r = cp
            .request("POST", pods, Some(&annotated(&format!("orders-{attempt}"))))
            .await
            .expect("create");
        assert_eq!(r.status, 201, "{:?}", r.body);
        let names: Vec<String> = r.body["spec"]["containers"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if names.contains(&"daprd".to_string()) {
            break r.body;
        }
        assert!(attempt < 50, "the webhook was never called");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(created["metadata"]["labels"]["dapr.io/app-id"], "orders");
    assert_eq!(
        created["spec"]["containers"][0]["env"][0]["name"],
        "DAPR_HTTP_PORT"
    );

    // Not annotated: unchanged.
    let r = cp
        .request("POST", pods, Some(&pod("plain", json!({}))))
        .await
        .expect("create");
    assert_eq!(r.status, 201);
    assert_eq!(r.body["spec"]["containers"].as_array().map(Vec::len), Some(1));

    // A bad annotation: created, with the warning kubectl would print.
    let shaky = pod(
        "shaky",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "shaky", "dapr.io/log-level": "LOUD"}),
    );
    let r = cp.request("POST", pods, Some(&shaky)).await.expect("create");
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(
        r.warnings.iter().any(|w| w.contains("dapr.io/log-level")),
        "{:?}",
        r.warnings
    );

    // An unusable app-id: refused, naming the annotation.
    let bad = pod(
        "bad",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "Not_Valid"}),
    );
    let r = cp.request("POST", pods, Some(&bad)).await.expect("create");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dapr.io/app-id"),
        "{:?}",
        r.body
    );

    // Dry run: patched in the answer, nothing stored.
    let r = cp
        .request("POST", &format!("{pods}?dryRun=All"), Some(&annotated("dry")))
        .await
        .expect("dry run");
    assert_eq!(r.status, 201);
    assert!(r.body["spec"]["containers"].to_string().contains("daprd"));
    assert_eq!(
        cp.request("GET", &format!("{pods}/dry"), None)
            .await
            .expect("get")
            .status,
        404
    );
}
