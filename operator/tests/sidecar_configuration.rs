//! A configuration subscription of daprd in Kubernetes mode follows its
//! store when the operator replaces the component while running: the
//! same subscription, now fed by the new store.

#[path = "support/daprd.rs"]
mod daprd;
#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/settings.rs"]
mod settings;

use std::{process::Command, time::Duration};

use daprd::{NS, control_plane, scratch, sidecar};
use daprs_proto::runtime::{SubscribeConfigurationRequest, dapr_client::DaprClient};
use serde_json::json;

/// The machine's Redis, database `db`: `SET key value`.
fn redis_set(db: u8, key: &str, value: &str) {
    let out = Command::new("redis-cli")
        .args(["-n", &db.to_string(), "SET", key, value])
        .output()
        .expect("redis-cli");
    assert!(out.status.success(), "{out:?}");
}

fn store(db: u8, version: u32) -> serde_json::Value {
    json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "settings", "namespace": NS, "uid": "cfg1", "resourceVersion": version.to_string()},
        "spec": {"type": "configuration.redis", "version": "v1", "metadata": [
            {"name": "redisHost", "value": "127.0.0.1:6379"},
            {"name": "redisDB", "value": db.to_string()}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_follows_its_store_when_the_component_is_replaced() {
    let cp = control_plane(|cp| {
        cp.pod("tuner", "tuner-token", json!({}));
        cp.put("components", "settings", store(1, 1));
    })
    .await;
    let dir = scratch("k8s-configuration");
    let args = cp.daprd_args(&["--disable-builtin-k8s-secret-store"]);
    let d = sidecar(&cp, "tuner", "tuner-token", &dir, &args)
        .await
        .expect("daprd starts");
    let key = format!("follow-{}", std::process::id());
    let mut client = DaprClient::connect(format!("http://127.0.0.1:{}", d.grpc))
        .await
        .expect("connect");
    let mut updates = client
        .subscribe_configuration(SubscribeConfigurationRequest {
            store_name: "settings".into(),
            keys: vec![key.clone()],
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first = updates
        .message()
        .await
        .expect("stream")
        .expect("the subscription id");
    let id = first.id;
    assert!(!id.is_empty());

    assert_eq!(next_value(&mut updates, &key, 1, "before").await, id);
    // The component now points at another database: the same subscription
    // carries on there.
    cp.put("components", "settings", store(2, 2));
    assert_eq!(next_value(&mut updates, &key, 2, "after").await, id);
}

/// Writes `value` to `key` in database `db` until the subscription reports
/// it; the id of the update that did.
async fn next_value(
    updates: &mut tonic::Streaming<daprs_proto::runtime::SubscribeConfigurationResponse>,
    key: &str,
    db: u8,
    value: &str,
) -> String {
    let started = std::time::Instant::now();
    loop {
        redis_set(db, key, &format!("{value}||1"));
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), updates.message()).await {
            let m = m.expect("stream").expect("an update");
            if m.items.get(key).is_some_and(|i| i.value == value) {
                return m.id;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{value} never arrived"
        );
    }
}
