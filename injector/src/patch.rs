//! The inject decision and the JSON patch (RFC 6902) that carries it out.
//! Every `add` targets a path that exists at that point of the patch: arrays
//! and maps the pod lacks are created first, and later operations append.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::{
    annotations::key,
    sidecar::{self, InjectorConfig, PodFacts},
};

/// What to do with one pod.
#[derive(Debug)]
pub enum Decision {
    /// Admit the pod unchanged, for this reason.
    Skip(String),
    /// Admit it with this patch; warnings go back to the user.
    Inject {
        patch: Vec<Value>,
        warnings: Vec<String>,
    },
    /// Refuse the pod: an annotation the sidecar cannot work without is wrong.
    Deny(String),
}

/// Annotation marking the control plane's own pods, which are never injected.
pub const CONTROL_PLANE: &str = "dapr.io/control-plane";

/// Escapes one JSON-pointer segment (`/` and `~`).
fn segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn add(path: impl Into<String>, value: Value) -> Value {
    json!({"op": "add", "path": path.into(), "value": value})
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Decides for `pod`, created in `namespace`.
pub fn decide(pod: &Pod, namespace: &str, cfg: &InjectorConfig) -> Decision {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let enabled = annotations
        .get(key::ENABLED)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        return Decision::Skip(format!("{} is not \"true\"", key::ENABLED));
    }
    if annotations.contains_key(CONTROL_PLANE) {
        return Decision::Skip("control-plane pods are never injected".into());
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let has_daprd = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == sidecar::CONTAINER_NAME);
    if has_daprd {
        return Decision::Skip("the pod already has a daprd container".into());
    }
    let volumes = spec.volumes.clone().unwrap_or_default();
    let facts = PodFacts {
        name: pod.metadata.name.as_deref(),
        annotations,
        app_containers: &spec.containers,
        volume_names: volumes.iter().map(|v| v.name.as_str()).collect(),
    };
    let sc = match sidecar::build(cfg, namespace, &facts) {
        Ok(sc) => sc,
        Err(sidecar::Denied(why)) => return Decision::Deny(why),
    };

    let mut ops = Vec::new();
    // Volumes.
    let new_volumes: Vec<_> = sc
        .volumes
        .iter()
        .filter(|v| !volumes.iter().any(|e| e.name == v.name))
        .collect();
    if spec.volumes.is_none() {
        ops.push(add("/spec/volumes", to_value(&new_volumes)));
    } else {
        for v in new_volumes {
            ops.push(add("/spec/volumes/-", to_value(v)));
        }
    }
    // The identity token is a projected service-account token, which the API
    // server refuses on a pod that names no service account (when its
    // ServiceAccount admission plugin is off); name the one it would.
    let unnamed = |n: &Option<String>| n.as_deref().is_none_or(str::is_empty);
    if pod.spec.is_some()
        && unnamed(&spec.service_account_name)
        && unnamed(&spec.service_account)
        && sc.volumes.iter().any(|v| v.name == sidecar::TOKEN_VOLUME)
    {
        ops.push(add("/spec/serviceAccountName", json!("default")));
    }
    // The container itself.
    let daprd = to_value(&sc.container);
    if sc.native {
        if spec.init_containers.is_none() {
            ops.push(add("/spec/initContainers", json!([daprd])));
        } else {
            ops.push(add("/spec/initContainers/-", daprd));
        }
    } else if pod.spec.is_none() {
        ops.push(add("/spec", json!({"containers": [daprd]})));
    } else {
        ops.push(add("/spec/containers/-", daprd));
    }
    // Labels.
    let labels = [
        ("dapr.io/sidecar-injected", "true".to_string()),
        ("dapr.io/app-id", sc.app_id.clone()),
        ("dapr.io/metrics-enabled", sc.metrics_enabled.to_string()),
    ];
    if pod.metadata.labels.is_none() {
        let all: BTreeMap<_, _> = labels.iter().cloned().collect();
        ops.push(add("/metadata/labels", to_value(&all)));
    } else {
        for (k, v) in &labels {
            ops.push(add(format!("/metadata/labels/{}", segment(k)), json!(v)));
        }
    }
    // Env and mounts for the app containers; what the app sets itself wins.
    for (i, c) in spec.containers.iter().enumerate() {
        let taken: Vec<(&str, &str)> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        let mounts: Vec<_> = sc
            .app_mounts
            .iter()
            .filter(|m| !taken.iter().any(|(n, p)| *n == m.name || *p == m.mount_path))
            .collect();
        if !mounts.is_empty() {
            if c.volume_mounts.is_none() {
                ops.push(add(
                    format!("/spec/containers/{i}/volumeMounts"),
                    to_value(&mounts),
                ));
            } else {
                for m in mounts {
                    ops.push(add(format!("/spec/containers/{i}/volumeMounts/-"), to_value(m)));
                }
            }
        }
        let existing: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        let missing: Vec<_> = sc
            .app_env
            .iter()
            .filter(|e| !existing.contains(&e.name.as_str()))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if c.env.is_none() {
            ops.push(add(format!("/spec/containers/{i}/env"), to_value(&missing)));
        } else {
            for e in missing {
                ops.push(add(format!("/spec/containers/{i}/env/-"), to_value(e)));
            }
        }
    }
    Decision::Inject {
        patch: ops,
        warnings: sc.warnings,
    }
}

/// Applies `patch` to `doc` with a standard JSON-patch implementation.
pub fn apply(doc: &mut Value, patch: &[Value]) -> Result<(), String> {
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(patch.to_vec())).map_err(|e| format!("invalid patch: {e}"))?;
    json_patch::patch(doc, &patch).map_err(|e| e.to_string())
}
