//! The CA kept in step with the Secret and ConfigMap, against an in-memory API server.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::sync::{Arc, RwLock};

use base64::Engine;
use daprs_operator::{ca::Ca, ca_sync::CaSync, sentry::CaState};
use fake_api::FakeApi;
use serde_json::json;
use time::OffsetDateTime;

const SECRET: &str = "/api/v1/namespaces/dapr-system/secrets/dapr-trust-bundle";
const MAP: &str = "/api/v1/namespaces/dapr-system/configmaps/dapr-trust-bundle";

fn sync() -> CaSync {
    CaSync {
        namespace: "dapr-system".into(),
        trust_domain: "cluster.local".into(),
        owner: None,
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn anchors(state: &CaState) -> Result<String, String> {
    match &*state.read().expect("lock") {
        Ok(ca) => Ok(ca.trust_anchors.clone()),
        Err(e) => Err(e.clone()),
    }
}

#[tokio::test]
async fn an_empty_cluster_gets_one_ca_that_is_kept() {
    let api = FakeApi::default();
    let state: CaState = Arc::new(RwLock::new(Err("not loaded".into())));
    let notes = sync().once(&api.client(), &state).await.expect("first pass");
    assert!(notes.is_empty(), "{notes:?}");
    let first = anchors(&state).expect("ready");
    let secret = api.get(SECRET).expect("secret written");
    for key in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(secret["data"][key].is_string(), "{key}");
    }
    assert_eq!(api.get(MAP).expect("configmap")["data"]["ca.crt"], first.as_str());

    // Later passes change nothing.
    let writes = api.writes.lock().expect("lock").len();
    sync().once(&api.client(), &state).await.expect("second pass");
    assert_eq!(api.writes.lock().expect("lock").len(), writes);
    assert_eq!(anchors(&state).expect("ready"), first);
}

#[tokio::test]
async fn replaced_material_is_picked_up_and_disagreement_stops_signing() {
    let api = FakeApi::default();
    let state: CaState = Arc::new(RwLock::new(Err("not loaded".into())));
    sync().once(&api.client(), &state).await.expect("first pass");
    let old = anchors(&state).expect("ready");

    // A person rotates: new issuer and root in the Secret, both roots published.
    let (_, new) = Ca::generate("cluster.local", "dapr-system", OffsetDateTime::now_utc()).expect("new ca");
    api.put(
        SECRET,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dapr-trust-bundle", "namespace": "dapr-system"},
            "data": {"ca.crt": b64(&new.ca_crt), "issuer.crt": b64(&new.issuer_crt), "issuer.key": b64(&new.issuer_key)}}),
    );
    let mut map = api.get(MAP).expect("map");
    map["data"]["ca.crt"] = json!(format!("{old}{}", new.ca_crt));
    api.put(MAP, map.clone());
    sync().once(&api.client(), &state).await.expect("reload");
    let now = anchors(&state).expect("still ready");
    assert_ne!(now, old, "the new root is used without a restart");

    // The ConfigMap drops the new root: signing stops, and the reason says why.
    map["data"]["ca.crt"] = json!(old);
    api.put(MAP, map);
    let notes = sync().once(&api.client(), &state).await.expect("pass");
    let err = anchors(&state).expect_err("not ready");
    assert!(err.contains("ConfigMap"), "{err}");
    assert_eq!(notes, vec![err]);
    // Nothing was overwritten to "repair" it.
    assert_eq!(
        api.get(SECRET).expect("secret")["data"]["ca.crt"],
        b64(&new.ca_crt)
    );
}

#[tokio::test]
async fn a_concurrent_creator_wins_and_is_adopted() {
    let api = FakeApi::default();
    let state: CaState = Arc::new(RwLock::new(Err("not loaded".into())));
    // Another replica creates the Secret between our read and our write:
    // simulate by creating it first with a ConfigMap still missing.
    let (_, theirs) = Ca::generate("cluster.local", "dapr-system", OffsetDateTime::now_utc()).expect("ca");
    api.put(
        SECRET,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dapr-trust-bundle", "namespace": "dapr-system"},
            "data": {"ca.crt": b64(&theirs.ca_crt), "issuer.crt": b64(&theirs.issuer_crt), "issuer.key": b64(&theirs.issuer_key)}}),
    );
    sync().once(&api.client(), &state).await.expect("pass");
    assert_eq!(anchors(&state).expect("ready").trim(), theirs.ca_crt.trim());
    assert_eq!(
        api.get(MAP).expect("published")["data"]["ca.crt"]
            .as_str()
            .map(str::trim),
        Some(theirs.ca_crt.trim())
    );
}

#[tokio::test]
async fn the_ca_belongs_to_the_installation_when_it_names_an_owner() {
    let api = FakeApi::default();
    let state: CaState = Arc::new(RwLock::new(Err("not loaded".into())));
    // Made before any owner was configured.
    sync().once(&api.client(), &state).await.expect("first pass");
    assert!(api.get(SECRET).expect("secret")["metadata"]["ownerReferences"].is_null());
    api.put(
        "/api/v1/namespaces/dapr-system/configmaps/daprs-trust-bundle-owner",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "daprs-trust-bundle-owner", "namespace": "dapr-system", "uid": "owner-uid"}}),
    );
    let owned = CaSync {
        owner: Some("daprs-trust-bundle-owner".into()),
        ..sync()
    };
    let before = anchors(&state).expect("ready");
    owned.once(&api.client(), &state).await.expect("second pass");
    for path in [SECRET, MAP] {
        let refs = &api.get(path).expect("object")["metadata"]["ownerReferences"];
        assert_eq!(refs[0]["kind"], "ConfigMap", "{path}");
        assert_eq!(refs[0]["uid"], "owner-uid", "{path}");
    }
    assert_eq!(anchors(&state).expect("ready"), before, "the CA itself is kept");
    // Once set, nothing more is written.
    let writes = api.writes.lock().expect("lock").len();
    owned.once(&api.client(), &state).await.expect("third pass");
    assert_eq!(api.writes.lock().expect("lock").len(), writes);
}
