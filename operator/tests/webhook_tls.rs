//! The injector's serving certificate and the webhook's caBundle come from the CA.

#[path = "support/fake_api.rs"]
mod fake_api;

use base64::Engine;
use std::time::Duration;

use daprs_operator::{ca::Ca, ca_sync::CaSync, serve::next_upkeep, webhook_tls};
use fake_api::FakeApi;
use serde_json::json;
use time::OffsetDateTime;

const SECRET: &str = "/api/v1/namespaces/dapr-system/secrets/daprs-injector-tls";
const OWNER: &str = "/api/v1/namespaces/dapr-system/configmaps/daprs-trust-bundle-owner";

/// The operator's settings, with the install's owner ConfigMap present.
fn sync(api: &FakeApi) -> CaSync {
    api.put(
        OWNER,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "daprs-trust-bundle-owner", "namespace": "dapr-system", "uid": "owner-uid"}}),
    );
    CaSync {
        namespace: "dapr-system".into(),
        trust_domain: "cluster.local".into(),
        owner: Some("daprs-trust-bundle-owner".into()),
    }
}

const HOOK: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/daprs-injector";

#[tokio::test]
async fn the_injector_gets_a_certificate_and_the_webhook_trusts_it() {
    let api = FakeApi::default();
    api.put(
        HOOK,
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "daprs-injector", "resourceVersion": "1"},
            "webhooks": [{"name": "sidecar-injector.daprs.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "clientConfig": {"service": {"name": "daprs-injector", "namespace": "dapr-system", "path": "/mutate"}}}]}),
    );
    let (ca, _) = Ca::generate("cluster.local", "dapr-system", OffsetDateTime::now_utc()).expect("ca");
    webhook_tls::ensure(&api.client(), &ca, &sync(&api))
        .await
        .expect("ensure");

    let secret = api.get(SECRET).expect("secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    // It goes when the installation's owner ConfigMap goes.
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "owner-uid");
    let crt = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["tls.crt"].as_str().expect("crt"))
        .expect("b64");
    let dir = std::env::temp_dir().join(format!("daprs-whtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("chain.pem"), &crt).expect("write");
    std::fs::write(dir.join("root.pem"), &ca.trust_anchors).expect("write");
    let text = String::from_utf8_lossy(&crt).into_owned();
    let leaf_end = text
        .find("-----END CERTIFICATE-----")
        .map(|i| i + 26)
        .expect("leaf");
    std::fs::write(dir.join("leaf.pem"), &text[..leaf_end]).expect("write");
    std::fs::write(dir.join("issuer.pem"), &text[leaf_end..]).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslserver", "-CAfile"])
        .arg(dir.join("root.pem"))
        .arg("-untrusted")
        .arg(dir.join("issuer.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.join("leaf.pem"))
        .output()
        .expect("openssl");
    assert!(String::from_utf8_lossy(&names.stdout).contains("DNS:daprs-injector.dapr-system.svc"));
    let _ = std::fs::remove_dir_all(&dir);

    let hook = api.get(HOOK).expect("hook");
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(
            hook["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle"),
        )
        .expect("b64");
    assert_eq!(bundle, ca.trust_anchors.as_bytes());

    // Nothing changes on the next pass.
    let writes = api.writes.lock().expect("lock").len();
    webhook_tls::ensure(&api.client(), &ca, &sync(&api))
        .await
        .expect("again");
    assert_eq!(api.writes.lock().expect("lock").len(), writes);

    // A new CA: the certificate is re-issued and the bundle replaced.
    let (next, _) = Ca::generate("cluster.local", "dapr-system", OffsetDateTime::now_utc()).expect("ca");
    webhook_tls::ensure(&api.client(), &next, &sync(&api))
        .await
        .expect("rotate");
    let writes_now = api.writes.lock().expect("lock").clone();
    assert!(
        writes_now
            .iter()
            .any(|w| w.starts_with("PUT") && w.ends_with("daprs-injector-tls")),
        "{writes_now:?}"
    );
    let hook = api.get(HOOK).expect("hook");
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(
            hook["webhooks"][0]["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle"),
        )
        .expect("b64");
    assert_eq!(bundle, next.trust_anchors.as_bytes());
}

#[tokio::test]
async fn the_subscription_crd_is_pointed_at_this_operator() {
    let api = FakeApi::default();
    let (_, crd) = daprs_api::crds::all()
        .expect("crds")
        .into_iter()
        .find(|(f, _)| *f == "subscriptions.yaml")
        .expect("subscriptions");
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/subscriptions.dapr.io";
    api.put(path, serde_json::to_value(&crd).expect("json"));
    let (ca, _) = Ca::generate("cluster.local", "daprs", OffsetDateTime::now_utc()).expect("ca");
    webhook_tls::ensure_conversion(&api.client(), &ca, "daprs")
        .await
        .expect("ensure");
    let stored = api.get(path).expect("crd");
    let config = &stored["spec"]["conversion"]["webhook"]["clientConfig"];
    assert_eq!(config["service"]["namespace"], "daprs");
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(config["caBundle"].as_str().expect("caBundle"))
        .expect("b64");
    assert_eq!(bundle, ca.trust_anchors.as_bytes());
    let writes = api.writes.lock().expect("lock").len();
    webhook_tls::ensure_conversion(&api.client(), &ca, "daprs")
        .await
        .expect("again");
    assert_eq!(
        api.writes.lock().expect("lock").len(),
        writes,
        "nothing to do the second time"
    );
}

#[test]
fn the_certificate_is_retried_within_seconds_until_it_is_issued() {
    let mut wait = Duration::ZERO;
    let mut total = Duration::ZERO;
    for _ in 0..4 {
        wait = next_upkeep(false, wait);
        total += wait;
    }
    assert!(
        total <= Duration::from_secs(5),
        "four failed passes took {total:?}"
    );
    assert!(next_upkeep(false, Duration::from_secs(60)) <= Duration::from_secs(5));
    assert_eq!(next_upkeep(true, wait), Duration::from_secs(30));
}
