//! The watchdog's choice of pods, its rate limit, and one pass against the
//! in-memory API server.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::time::{Duration, Instant};

use daprs_operator::watchdog::{RateLimit, Watchdog, missing_sidecar};
use fake_api::FakeApi;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

fn pod(name: &str, annotations: Value, labels: Value, containers: &[&str], owned: bool) -> Value {
    let mut meta = json!({"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "annotations": annotations, "labels": labels});
    if owned {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-5d9f", "uid": "rs-1", "controller": true}]);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": containers.iter().map(|c| json!({"name": c, "image": "x"})).collect::<Vec<_>>()},
        "status": {"phase": "Running"}})
}

fn typed(v: &Value) -> Pod {
    serde_json::from_value(v.clone()).expect("pod")
}

#[test]
fn only_enabled_controller_owned_pods_without_daprd_are_chosen() {
    let enabled = json!({"dapr.io/enabled": "true"});
    assert!(missing_sidecar(&typed(&pod("a", enabled.clone(), json!({}), &["app"], true))).is_some());
    assert!(
        missing_sidecar(&typed(&pod(
            "b",
            enabled.clone(),
            json!({}),
            &["app", "daprd"],
            true
        )))
        .is_none()
    );
    assert!(
        missing_sidecar(&typed(&pod(
            "c",
            enabled.clone(),
            json!({"dapr.io/sidecar-injected": "true"}),
            &["app"],
            true
        )))
        .is_none()
    );
    assert!(
        missing_sidecar(&typed(&pod("d", enabled.clone(), json!({}), &["app"], false))).is_none(),
        "bare pods are never touched"
    );
    assert!(missing_sidecar(&typed(&pod("e", json!({}), json!({}), &["app"], true))).is_none());
    let mut deleting = pod("f", enabled, json!({}), &["app"], true);
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-20T10:00:00Z");
    assert!(missing_sidecar(&typed(&deleting)).is_none());
}

#[test]
fn the_rate_limit_refills_each_minute() {
    let start = Instant::now();
    let mut l = RateLimit::new(2);
    assert!(l.allow(start) && l.allow(start));
    assert!(!l.allow(start + Duration::from_secs(30)));
    assert!(l.allow(start + Duration::from_secs(61)));
    let mut unlimited = RateLimit::new(0);
    assert!((0..100).all(|_| unlimited.allow(start)));
}

#[tokio::test]
async fn a_pass_deletes_within_the_limit_and_reports_every_pod() {
    let api = FakeApi::default();
    let enabled = json!({"dapr.io/enabled": "true"});
    for (name, containers, owned) in [
        ("p1", vec!["app"], true),
        ("p2", vec!["app"], true),
        ("ok", vec!["app", "daprd"], true),
        ("bare", vec!["app"], false),
    ] {
        api.put(
            &format!("/api/v1/namespaces/shop/pods/{name}"),
            pod(name, enabled.clone(), json!({}), &containers, owned),
        );
    }
    let dog = Watchdog {
        every: Duration::from_secs(60),
        delete: true,
        max_per_minute: 1,
    };
    let mut limit = RateLimit::new(1);
    let acted = dog.pass(&api.client(), &mut limit).await.expect("pass");
    let mut names: Vec<_> = acted.iter().map(|m| m.pod.as_str()).collect();
    names.sort();
    assert_eq!(names, ["p1", "p2"]);
    let remaining: Vec<bool> = ["p1", "p2"]
        .iter()
        .map(|p| api.get(&format!("/api/v1/namespaces/shop/pods/{p}")).is_some())
        .collect();
    assert_eq!(
        remaining.iter().filter(|r| !**r).count(),
        1,
        "one deletion per minute"
    );
    assert!(api.get("/api/v1/namespaces/shop/pods/bare").is_some());
    let writes = api.writes.lock().expect("lock").clone();
    let events: Vec<_> = writes.iter().filter(|w| w.contains("/events")).collect();
    assert_eq!(events.len(), 2, "an Event per pod: {writes:?}");
}
