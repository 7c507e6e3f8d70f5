//! The reconcilers against an in-memory API server.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::sync::Arc;

use daprs_api::v1alpha1::Component;
use daprs_operator::controllers::{Ctx, reconcile_component, reconcile_deployment};
use daprs_telemetry::trace::{Sampler, Tracer};
use fake_api::FakeApi;
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    api::PartialObjectMeta,
    runtime::{reflector, watcher},
};

/// A context whose store of the operator's Services holds `services`.
fn ctx(api: &FakeApi, services: &[serde_json::Value]) -> Arc<Ctx> {
    traced_ctx(api, services, Tracer::off())
}

fn traced_ctx(api: &FakeApi, services: &[serde_json::Value], tracer: Tracer) -> Arc<Ctx> {
    let (store, mut writer) = reflector::store::<PartialObjectMeta<Service>>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for s in services {
        writer.apply_watcher_event(&watcher::Event::InitApply(
            serde_json::from_value(s.clone()).expect("service metadata"),
        ));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    Arc::new(Ctx {
        client: api.client(),
        services: store,
        tracer,
    })
}

fn deployment() -> Deployment {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/deployment.json"),
    )
    .expect("fixture");
    serde_json::from_str(&text).expect("deployment")
}

#[tokio::test]
async fn a_dapr_deployment_gets_its_service_applied_again_and_again_safely() {
    let api = FakeApi::default();
    let ctx = ctx(&api, &[]);
    reconcile_deployment(Arc::new(deployment()), ctx.clone())
        .await
        .expect("reconcile");
    let svc = api
        .get("/api/v1/namespaces/default/services/nodeapp-dapr")
        .expect("service applied");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert_eq!(svc["metadata"]["ownerReferences"][0]["name"], "nodeapp");
    // Reconciling again applies the same object (server-side apply is idempotent).
    reconcile_deployment(Arc::new(deployment()), ctx)
        .await
        .expect("again");
    let writes = api.writes.lock().expect("lock").clone();
    assert!(
        writes.iter().all(|w| w.ends_with("/services/nodeapp-dapr")),
        "{writes:?}"
    );
}

#[tokio::test]
async fn workloads_without_dapr_are_left_alone() {
    let api = FakeApi::default();
    let ctx = ctx(&api, &[]);
    let mut d = deployment();
    if let Some(a) = d
        .spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .and_then(|m| m.annotations.as_mut())
    {
        a.remove("dapr.io/enabled");
    }
    reconcile_deployment(Arc::new(d), ctx).await.expect("reconcile");
    assert!(api.writes.lock().expect("lock").is_empty());
}

fn annotations(d: &mut Deployment) -> &mut std::collections::BTreeMap<String, String> {
    d.spec
        .as_mut()
        .and_then(|s| s.template.metadata.as_mut())
        .and_then(|m| m.annotations.as_mut())
        .expect("template annotations")
}

#[tokio::test]
async fn a_service_the_workload_no_longer_has_is_deleted() {
    let api = FakeApi::default();
    reconcile_deployment(Arc::new(deployment()), ctx(&api, &[]))
        .await
        .expect("reconcile");
    let path = "/api/v1/namespaces/default/services/nodeapp-dapr";
    let made = api.get(path).expect("service applied");

    // Another app-id: the new Service is applied and the old one deleted.
    let mut renamed = deployment();
    annotations(&mut renamed).insert("dapr.io/app-id".into(), "shop".into());
    reconcile_deployment(Arc::new(renamed), ctx(&api, std::slice::from_ref(&made)))
        .await
        .expect("reconcile");
    assert!(api.get(path).is_none(), "the old Service is gone");
    let mut text = String::new();
    daprs_operator::metrics::METRICS.render(&mut text);
    assert!(
        text.contains("dapr_operator_service_created_total{app_id=\"shop\"}"),
        "{text}"
    );
    assert!(
        text.contains("dapr_operator_service_deleted_total{app_id=\"nodeapp\"}"),
        "{text}"
    );
    let shop = api
        .get("/api/v1/namespaces/default/services/shop-dapr")
        .expect("the new Service");

    // Dapr turned off: the Service goes.
    let mut off = deployment();
    annotations(&mut off).insert("dapr.io/enabled".into(), "false".into());
    reconcile_deployment(Arc::new(off), ctx(&api, &[shop]))
        .await
        .expect("reconcile");
    assert!(api.get("/api/v1/namespaces/default/services/shop-dapr").is_none());

    // A Service another workload owns, or the user made, is never touched.
    let mut foreign = made.clone();
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else".into();
    api.put(path, foreign.clone());
    let mut off = deployment();
    annotations(&mut off).insert("dapr.io/enabled".into(), "false".into());
    reconcile_deployment(Arc::new(off), ctx(&api, &[foreign]))
        .await
        .expect("reconcile");
    assert!(api.get(path).is_some());
}

#[tokio::test]
async fn component_status_is_written_once_per_change() {
    let api = FakeApi::default();
    let ctx = ctx(&api, &[]);
    let path = "/apis/dapr.io/v1alpha1/namespaces/default/components/pubsub";
    let yaml = "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
  namespace: default
  generation: 3
spec:
  type: pubsub.kafka
  version: v1
  metadata:
  - name: consumerGroup
    value: g
";
    let component: Component = serde_yaml::from_str(yaml).expect("component");
    api.put(path, serde_json::to_value(&component).expect("json"));
    reconcile_component(Arc::new(component), ctx.clone())
        .await
        .expect("reconcile");
    let stored = api.get(path).expect("stored");
    let cond = &stored["status"]["conditions"][0];
    assert_eq!(cond["type"], "Ready");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "MissingMetadata");
    assert_eq!(cond["observedGeneration"], 3);
    // A person looking at `kubectl describe component pubsub` sees why.
    let writes = api.writes.lock().expect("lock").clone();
    assert!(
        writes
            .iter()
            .any(|w| w.starts_with("POST /api/v1/namespaces/default/events")),
        "{writes:?}"
    );
    // With the status already current, nothing more is written.
    let current: Component = serde_json::from_value(stored).expect("component");
    let before = api.writes.lock().expect("lock").len();
    reconcile_component(Arc::new(current), ctx).await.expect("again");
    assert_eq!(api.writes.lock().expect("lock").len(), before);
}

#[tokio::test]
async fn each_reconcile_is_a_span_when_tracing_is_on() {
    let api = FakeApi::default();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let ctx = traced_ctx(&api, &[], Tracer::new(Sampler::new(1.0), Some(tx)));
    reconcile_deployment(Arc::new(deployment()), ctx.clone())
        .await
        .expect("reconcile");
    let span = rx.recv().await.expect("a span");
    assert_eq!(span.name(), "reconcile Deployment");
    let attr = |k: &str| {
        span.attributes()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(attr("k8s.namespace.name").as_deref(), Some("default"));
    assert_eq!(attr("k8s.deployment.name").as_deref(), Some("nodeapp"));
    assert!(span.error().is_none());
    // A reconcile that fails says why.
    let mut orphan = deployment();
    orphan.metadata.namespace = None;
    assert!(reconcile_deployment(Arc::new(orphan), ctx).await.is_err());
    let failed = rx.recv().await.expect("a span");
    assert!(
        failed.error().is_some_and(|e| e.contains("no namespace")),
        "{failed:?}"
    );
}
