//! The `<app-id>-dapr` Service every Dapr-enabled Deployment and StatefulSet
//! gets: headless, selecting the workload's pods, exposing the sidecar's
//! ports, owned by the workload so it goes when the workload goes.

use std::collections::BTreeMap;

use daprs_api::contract::truthy;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Service, ServicePort, ServiceSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};

const ENABLED: &str = "dapr.io/enabled";
const APP_ID: &str = "dapr.io/app-id";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const MANAGER: &str = "daprs-operator";

/// What a workload says about its sidecar.
struct Workload<'a> {
    api_version: &'static str,
    kind: &'static str,
    meta: &'a ObjectMeta,
    selector: &'a LabelSelector,
    annotations: Option<&'a BTreeMap<String, String>>,
}

fn port_annotation(a: &BTreeMap<String, String>, key: &str, default: i32) -> i32 {
    a.get(key)
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|p| (1..=65535).contains(p))
        .unwrap_or(default)
}

fn port(name: &str, port: i32, target: i32, app_protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        app_protocol: Some(app_protocol.into()),
        ..Default::default()
    }
}

/// The Service for a Deployment: `None` when it is not Dapr-enabled,
/// `Err` when it is but its app-id cannot name a Service.
pub fn for_deployment(d: &Deployment) -> Option<Result<Service, String>> {
    let spec = d.spec.as_ref()?;
    desired(&Workload {
        api_version: "apps/v1",
        kind: "Deployment",
        meta: &d.metadata,
        selector: &spec.selector,
        annotations: spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()),
    })
}

/// The same for a StatefulSet.
pub fn for_statefulset(s: &StatefulSet) -> Option<Result<Service, String>> {
    let spec = s.spec.as_ref()?;
    desired(&Workload {
        api_version: "apps/v1",
        kind: "StatefulSet",
        meta: &s.metadata,
        selector: &spec.selector,
        annotations: spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref()),
    })
}

/// The Services in `namespace` the operator made for the workload `uid`
/// that it should no longer have: all of them when the workload has none
/// (Dapr turned off, or an app-id that cannot name one), the others when
/// its app-id changed.
pub fn stale<'a>(
    made: impl IntoIterator<Item = &'a ObjectMeta>,
    namespace: &str,
    uid: &str,
    keep: Option<&str>,
) -> Vec<String> {
    made.into_iter()
        .filter(|m| m.namespace.as_deref() == Some(namespace))
        .filter(|m| {
            m.labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY))
                .is_some_and(|v| v == MANAGER)
        })
        .filter(|m| {
            m.owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .filter_map(|m| m.name.clone())
        .filter(|n| Some(n.as_str()) != keep)
        .collect()
}

/// The Service name for an app-id, if the app-id can make one.
pub fn service_name(app_id: &str) -> Result<String, String> {
    let name = format!("{app_id}-dapr");
    let valid = name.len() <= 63
        && app_id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "dapr.io/app-id {app_id:?} cannot name a Service: use at most 58 lowercase letters, digits and '-'"
        ))
    }
}

fn desired(w: &Workload<'_>) -> Option<Result<Service, String>> {
    let a = w.annotations?;
    if !a.get(ENABLED).is_some_and(|v| truthy(v)) {
        return None;
    }
    let Some(app_id) = a.get(APP_ID).map(|s| s.trim()).filter(|s| !s.is_empty()) else {
        return Some(Err(format!("{APP_ID} is not set on the pod template")));
    };
    let name = match service_name(app_id) {
        Ok(n) => n,
        Err(e) => return Some(Err(e)),
    };
    let (Some(workload_name), Some(uid)) = (w.meta.name.clone(), w.meta.uid.clone()) else {
        return Some(Err("the workload has no name or uid yet".into()));
    };
    let Some(match_labels) = w.selector.match_labels.clone().filter(|l| !l.is_empty()) else {
        return Some(Err(
            "the workload's selector has no matchLabels to select its pods with".into(),
        ));
    };
    let grpc = port_annotation(a, "dapr.io/grpc-port", 50001);
    let internal = port_annotation(a, "dapr.io/internal-grpc-port", 50002);
    let metrics = port_annotation(a, "dapr.io/metrics-port", 9090);
    let metrics_on = a.get("dapr.io/enable-metrics").is_none_or(|v| truthy(v));

    let mut annotations = BTreeMap::from([(APP_ID.to_string(), app_id.to_string())]);
    if metrics_on {
        for (k, v) in [
            ("prometheus.io/scrape", "true".to_string()),
            ("prometheus.io/probe", "true".to_string()),
            ("prometheus.io/port", metrics.to_string()),
            ("prometheus.io/path", "/".to_string()),
        ] {
            annotations.insert(k.into(), v);
        }
    }
    // Extra annotations the user asked for; the ones above cannot be overridden.
    if let Some(extra) = a.get("dapr.io/sidecar-svc-annotations") {
        for pair in extra.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                let k = k.trim();
                if !k.is_empty() && !annotations.contains_key(k) {
                    annotations.insert(k.to_string(), v.trim().to_string());
                }
            }
        }
    }

    Some(Ok(Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: w.meta.namespace.clone(),
            labels: Some(BTreeMap::from([
                (ENABLED.to_string(), "true".to_string()),
                (MANAGED_BY.to_string(), MANAGER.to_string()),
            ])),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: w.api_version.into(),
                kind: w.kind.into(),
                name: workload_name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(match_labels),
            cluster_ip: Some("None".into()),
            ports: Some(vec![
                port("dapr-http", 80, 3500, "http"),
                port("dapr-grpc", grpc, grpc, "grpc"),
                port("dapr-internal", internal, internal, "grpc"),
                port("dapr-metrics", metrics, metrics, "http"),
            ]),
            ..Default::default()
        }),
        status: None,
    }))
}
