//! The manifests in deploy/ are valid Kubernetes objects.

use std::path::Path;

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Namespace, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};

fn check(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file))
        .expect("manifest");
    let mut kinds = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(de).expect("yaml");
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let ok = match kind.as_str() {
            "Namespace" => serde_json::from_value::<Namespace>(v).is_ok(),
            "ServiceAccount" => serde_json::from_value::<ServiceAccount>(v).is_ok(),
            "ClusterRole" => serde_json::from_value::<ClusterRole>(v).is_ok(),
            "ClusterRoleBinding" => serde_json::from_value::<ClusterRoleBinding>(v).is_ok(),
            "Role" => serde_json::from_value::<Role>(v).is_ok(),
            "RoleBinding" => serde_json::from_value::<RoleBinding>(v).is_ok(),
            "Deployment" => serde_json::from_value::<Deployment>(v).is_ok(),
            "Service" => serde_json::from_value::<Service>(v).is_ok(),
            "MutatingWebhookConfiguration" => {
                serde_json::from_value::<MutatingWebhookConfiguration>(v).is_ok()
            }
            other => panic!("{file}: unexpected kind {other}"),
        };
        assert!(ok, "{file}: a {kind} is not valid");
        kinds.push(kind);
    }
    kinds
}

#[test]
fn deploy_manifests_are_valid_objects() {
    let operator = check("deploy/operator/operator.yaml");
    assert!(operator.contains(&"Deployment".to_string()) && operator.contains(&"ClusterRole".to_string()));
    let injector = check("deploy/injector/injector.yaml");
    assert!(injector.contains(&"MutatingWebhookConfiguration".to_string()));
}
