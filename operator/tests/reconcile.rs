//! Reconcile decisions on real Kubernetes objects.

use std::path::Path;

use daprs_operator::{controllers, scope, service, validate};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

fn deployment() -> Deployment {
    serde_json::from_str(&fixture("deployment.json")).expect("deployment")
}

#[test]
fn dapr_enabled_deployment_gets_a_headless_owned_service() {
    let svc = service::for_deployment(&deployment())
        .expect("enabled")
        .expect("valid");
    let meta = &svc.metadata;
    assert_eq!(meta.name.as_deref(), Some("nodeapp-dapr"));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let owner = &meta.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Deployment", "nodeapp", Some(true))
    );
    assert_eq!(owner.uid, "2f4b3c1e-7a55-4a0b-9d2e-5c1f0e8d9a11");
    let a = meta.annotations.as_ref().expect("annotations");
    assert_eq!(a["dapr.io/app-id"], "nodeapp");
    assert_eq!(a["prometheus.io/scrape"], "true");
    assert_eq!(a["prometheus.io/port"], "9191");
    assert_eq!(a["prometheus.io/path"], "/", "reserved keys are not overridden");
    assert_eq!(a["team"], "orders", "extra annotations are copied");
    assert_eq!(meta.labels.as_ref().expect("labels")["dapr.io/enabled"], "true");
    let spec = svc.spec.as_ref().expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.selector.as_ref().expect("selector")["app"], "node");
    let ports: Vec<_> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("dapr-http".into(), 80),
            ("dapr-grpc".into(), 50001),
            ("dapr-internal".into(), 50002),
            ("dapr-metrics".into(), 9191)
        ]
    );
    // The Service round-trips as a valid object.
    let json = serde_json::to_value(&svc).expect("json");
    let _: k8s_openapi::api::core::v1::Service = serde_json::from_value(json).expect("valid Service");
}

#[test]
fn slimmed_workloads_in_the_cache_give_the_same_service() {
    let full = deployment();
    let mut slim = full.clone();
    controllers::slim_deployment(&mut slim);
    let spec = slim.spec.as_ref().expect("spec");
    assert!(spec.template.spec.is_none() && slim.status.is_none());
    assert!(serde_json::to_vec(&slim).expect("json").len() < serde_json::to_vec(&full).expect("json").len());
    assert_eq!(
        service::for_deployment(&slim).map(Result::ok),
        service::for_deployment(&full).map(Result::ok)
    );

    let mut set: StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "prod", "uid": "s-1", "annotations": {"note": "x"}},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}, "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "db"}},
                "spec": {"containers": [{"name": "db", "image": "postgres"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}}))
    .expect("statefulset");
    let before = service::for_statefulset(&set).map(Result::ok);
    controllers::slim_statefulset(&mut set);
    assert!(
        set.spec
            .as_ref()
            .is_some_and(|s| s.volume_claim_templates.is_none())
    );
    assert_eq!(service::for_statefulset(&set).map(Result::ok), before);
}

#[test]
fn other_workloads_get_nothing_or_a_reason() {
    let mut d = deployment();
    let set = |d: &mut Deployment, k: &str, v: Option<&str>| {
        let a = d
            .spec
            .as_mut()
            .and_then(|s| s.template.metadata.as_mut())
            .and_then(|m| m.annotations.as_mut())
            .expect("annotations");
        match v {
            Some(v) => a.insert(k.into(), v.into()),
            None => a.remove(k),
        };
    };
    set(&mut d, "dapr.io/enabled", Some("false"));
    assert!(service::for_deployment(&d).is_none());
    set(&mut d, "dapr.io/enabled", Some("true"));
    set(&mut d, "dapr.io/app-id", None);
    let err = service::for_deployment(&d)
        .expect("enabled")
        .expect_err("no app-id");
    assert!(err.contains("dapr.io/app-id"), "{err}");
    set(&mut d, "dapr.io/app-id", Some("Node.App"));
    assert!(service::for_deployment(&d).expect("enabled").is_err());

    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "data", "uid": "u-1"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "db",
                "dapr.io/enable-metrics": "false"}},
                "spec": {"containers": [{"name": "db", "image": "postgres"}]}}}
    }))
    .expect("statefulset");
    let svc = service::for_statefulset(&sts).expect("enabled").expect("valid");
    assert_eq!(svc.metadata.name.as_deref(), Some("db-dapr"));
    assert!(
        !svc.metadata
            .annotations
            .expect("annotations")
            .contains_key("prometheus.io/scrape")
    );
}

#[test]
fn components_are_validated_with_actionable_reasons() {
    let decoded = daprs_api::resource::decode_yaml(&fixture("components.yaml")).expect("valid yaml");
    let catalog = scope::Catalog::from_resources(decoded.resources);
    let status = |name: &str| {
        let c = catalog
            .components
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .expect("component");
        let s = validate::status(c, "2026-11-20T10:00:00Z");
        let cond = s.conditions[0].clone();
        (cond.status, cond.reason, cond.message)
    };
    assert_eq!(status("statestore").0, "True");
    let (st, reason, message) = status("pubsub");
    assert_eq!((st.as_str(), reason.as_str()), ("False", "MissingMetadata"));
    assert!(message.contains("brokers"), "{message}");
    let (_, reason, message) = status("typo");
    assert_eq!(reason, "UnknownType");
    assert!(
        message.contains("\"stat.redis\"") && message.contains("state."),
        "{message}"
    );
    let (_, reason, _) = status("badref");
    assert_eq!(reason, "InvalidSecretKeyRef");

    // The transition time holds while the condition does not change.
    let mut c = catalog.components[0].clone();
    c.status = Some(validate::status(&c, "2026-11-20T10:00:00Z"));
    let again = validate::status(&c, "2026-11-21T10:00:00Z");
    assert_eq!(
        again.conditions[0].last_transition_time.as_deref(),
        Some("2026-11-20T10:00:00Z")
    );
}

#[test]
fn sidecars_see_only_their_namespace_and_scopes() {
    let decoded = daprs_api::resource::decode_yaml(&fixture("components.yaml")).expect("valid yaml");
    let catalog = scope::Catalog::from_resources(decoded.resources);
    let names = |ns: &str, app: &str| -> Vec<String> {
        scope::components(&catalog.components, ns, app)
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect()
    };
    assert_eq!(
        names("default", "checkout"),
        ["statestore", "pubsub", "typo", "badref"]
    );
    assert_eq!(names("default", "orders"), ["statestore", "typo", "badref"]);
    assert_eq!(names("shop", "orders"), ["orders-only"]);
    assert!(names("shop", "checkout").is_empty());
}
