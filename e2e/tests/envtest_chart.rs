//! Envtest tier: `deploy/install.yaml` (the chart's default rendering)
//! created in a real kube-apiserver, then the operator run with nothing but
//! the rights the chart gives its service account. Skips (one line) without
//! `KUBEBUILDER_ASSETS`.

use std::time::{Duration, Instant};

use daprs_e2e::{apiserver::ControlPlane, chart};
use daprs_operator::serve::run;
use serde_json::{Value, json};

async fn eventually(cp: &ControlPlane, path: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = cp.request("GET", path, None).await
            && r.status == 200
            && ok(&r.body)
        {
            return r.body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn gone(cp: &ControlPlane, path: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cp.request("GET", path, None).await.map(|r| r.status) != Ok(404) {
        assert!(Instant::now() < deadline, "{what} is still there");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_install_manifest_runs_the_operator_with_its_own_rights() {
    let Some(cp) = daprs_e2e::apiserver::start_or_skip().await else {
        return;
    };
    let text = std::fs::read_to_string(chart::root().join("deploy/install.yaml")).expect("install.yaml");
    let objects = chart::documents(&text).expect("YAML");
    cp.create_all(&objects)
        .await
        .expect("kubectl create -f deploy/install.yaml");
    cp.namespace("dapr-system")
        .await
        .expect("default service account");
    cp.namespace("shop").await.expect("namespace");

    // The operator's own token: every call it makes is checked against the
    // chart's RBAC, as in a cluster.
    let r = cp
        .request(
            "POST",
            "/api/v1/namespaces/dapr-system/serviceaccounts/daprs-operator/token",
            Some(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}),
            ),
        )
        .await
        .expect("token request");
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["status"]["token"].as_str().expect("token").to_string();
    let client = cp.kube_client_as(&token).await.expect("client");
    let started = Instant::now();
    tokio::spawn(run(
        client,
        daprs_e2e::operator::settings(Some("daprs-trust-bundle-owner")),
    ));

    // The CA, owned by the installation.
    let owner = eventually(
        &cp,
        "/api/v1/namespaces/dapr-system/configmaps/daprs-trust-bundle-owner",
        "owner",
        |_| true,
    )
    .await;
    for path in [
        "/api/v1/namespaces/dapr-system/secrets/dapr-trust-bundle",
        "/api/v1/namespaces/dapr-system/configmaps/dapr-trust-bundle",
    ] {
        let o = eventually(&cp, path, path, |v| v["metadata"]["ownerReferences"].is_array()).await;
        assert_eq!(
            o["metadata"]["ownerReferences"][0]["uid"], owner["metadata"]["uid"],
            "{path}"
        );
    }
    // The injector's certificate and the webhook's trust, within seconds.
    eventually(
        &cp,
        "/api/v1/namespaces/dapr-system/secrets/daprs-injector-tls",
        "the injector's certificate",
        |v| v["data"]["tls.crt"].is_string(),
    )
    .await;
    eventually(
        &cp,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/daprs-injector",
        "the webhook's caBundle",
        |v| v["webhooks"][0]["clientConfig"]["caBundle"].is_string(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the webhook could serve only after {:?}",
        started.elapsed()
    );
    eventually(
        &cp,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/subscriptions.dapr.io",
        "the conversion webhook's caBundle",
        |v| v["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"].is_string(),
    )
    .await;

    // <app-id>-dapr comes with Dapr turned on, and goes with it turned off.
    let deployments = "/apis/apps/v1/namespaces/shop/deployments";
    let deployment = |enabled: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart"},
            "spec": {"selector": {"matchLabels": {"app": "cart"}}, "template": {"metadata": {"labels": {"app": "cart"},
                "annotations": {"dapr.io/enabled": enabled, "dapr.io/app-id": "cart"}},
                "spec": {"containers": [{"name": "cart", "image": "example.com/cart:1"}]}}}})
    };
    let r = cp
        .request("POST", deployments, Some(&deployment("true")))
        .await
        .expect("create");
    assert_eq!(r.status, 201, "{:?}", r.body);
    let service = "/api/v1/namespaces/shop/services/cart-dapr";
    eventually(&cp, service, "cart-dapr", |_| true).await;
    let r = cp
        .request("PUT", &format!("{deployments}/cart"), Some(&deployment("false")))
        .await
        .expect("update");
    assert_eq!(r.status, 200, "{:?}", r.body);
    gone(&cp, service, "cart-dapr after dapr.io/enabled: false").await;

    // Component status, written with the status subresource right.
    let components = "/apis/dapr.io/v1alpha1/namespaces/shop/components";
    let r = cp
        .request(
            "POST",
            components,
            Some(
                &json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "cache"},
                "spec": {"type": "state.in-memory", "version": "v1", "metadata": []}}),
            ),
        )
        .await
        .expect("component");
    assert_eq!(r.status, 201, "{:?}", r.body);
    eventually(&cp, &format!("{components}/cache"), "Ready", |v| {
        v["status"]["conditions"][0]["status"] == "True"
    })
    .await;

    // The system Configuration reads back as Dapr spells it.
    let system = eventually(
        &cp,
        "/apis/dapr.io/v1alpha1/namespaces/dapr-system/configurations/daprsystem",
        "daprsystem",
        |_| true,
    )
    .await;
    assert_eq!(system["spec"]["mtls"]["workloadCertTTL"], "24h");

    // Resources written as Dapr documents them read back with nothing pruned.
    let dir = chart::root().join("api/tests/examples");
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for mut example in chart::documents(&text).expect("YAML") {
            // A v1alpha1 Subscription is stored as v2alpha1 through the
            // conversion webhook, which the API server reaches only through
            // a Service with running pods: the kind tier covers it.
            if example["kind"] == "Subscription" && example["apiVersion"] == "dapr.io/v1alpha1" {
                continue;
            }
            example["metadata"]["namespace"] = json!("shop");
            let what = format!("{} {}", path.display(), example["metadata"]["name"]);
            let collection = daprs_e2e::apiserver::collection(&example).expect("collection");
            let r = cp
                .request("POST", &collection, Some(&example))
                .await
                .expect("create");
            assert_eq!(r.status, 201, "{what}: {:?}", r.body);
            let name = example["metadata"]["name"].as_str().unwrap_or_default();
            let back = cp
                .request("GET", &format!("{collection}/{name}"), None)
                .await
                .expect("get")
                .body;
            for key in ["spec", "auth", "scopes"] {
                assert_eq!(back[key], example[key], "{what}: {key} came back changed");
            }
        }
    }
}
