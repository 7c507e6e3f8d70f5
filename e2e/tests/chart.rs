//! The Helm chart: it lints, renders valid objects for each shape of
//! install, and `deploy/install.yaml` is exactly its default rendering.
//! Skips (one line) without Helm; `bash scripts/helm.sh` installs it.

use std::collections::BTreeMap;

use daprs_e2e::chart::{self, documents, strict};
use k8s_openapi::{
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        core::v1::{ConfigMap, Container, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use serde_json::Value;

macro_rules! helm_or_skip {
    () => {
        match chart::helm() {
            Ok(h) => h,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// What one rendering holds, each object read strictly into its type.
#[derive(Default)]
struct Rendered {
    deployments: BTreeMap<String, Deployment>,
    services: BTreeMap<String, Service>,
    cluster_roles: BTreeMap<String, ClusterRole>,
    roles: BTreeMap<String, Role>,
    pdbs: BTreeMap<String, PodDisruptionBudget>,
    webhooks: BTreeMap<String, MutatingWebhookConfiguration>,
    configurations: BTreeMap<String, daprs_api::v1alpha1::Configuration>,
    crds: BTreeMap<String, CustomResourceDefinition>,
    kinds: Vec<String>,
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn check<K: serde::de::DeserializeOwned + serde::Serialize>(v: &Value, what: &str) -> K {
    strict(v).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn read(text: &str) -> Rendered {
    let mut r = Rendered::default();
    for v in documents(text).expect("YAML") {
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let n = name(&v);
        let what = format!("{kind} {n}");
        match kind.as_str() {
            "Namespace" => {
                check::<k8s_openapi::api::core::v1::Namespace>(&v, &what);
            }
            "ServiceAccount" => {
                check::<ServiceAccount>(&v, &what);
            }
            "ConfigMap" => {
                check::<ConfigMap>(&v, &what);
            }
            "ClusterRoleBinding" => {
                check::<ClusterRoleBinding>(&v, &what);
            }
            "RoleBinding" => {
                check::<RoleBinding>(&v, &what);
            }
            "ClusterRole" => {
                r.cluster_roles.insert(n, check(&v, &what));
            }
            "Role" => {
                r.roles.insert(n, check(&v, &what));
            }
            "Deployment" => {
                r.deployments.insert(n, check(&v, &what));
            }
            "Service" => {
                r.services.insert(n, check(&v, &what));
            }
            "PodDisruptionBudget" => {
                r.pdbs.insert(n, check(&v, &what));
            }
            "MutatingWebhookConfiguration" => {
                r.webhooks.insert(n, check(&v, &what));
            }
            "Configuration" => {
                r.configurations.insert(n, check(&v, &what));
            }
            "CustomResourceDefinition" => {
                r.crds.insert(n, check(&v, &what));
            }
            other => panic!("unexpected kind {other} ({n})"),
        }
        r.kinds.push(kind);
    }
    r
}

fn render(sets: &[&str]) -> Rendered {
    let helm = chart::helm().expect("helm");
    read(&chart::template(&helm, sets, true).expect("helm template"))
}

fn container<'a>(r: &'a Rendered, deployment: &str) -> &'a Container {
    r.deployments[deployment]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| &s.containers[0])
        .expect("container")
}

fn env(c: &Container, key: &str) -> String {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == key)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("{} has no {key}", c.name))
}

fn replicas(r: &Rendered, deployment: &str) -> i32 {
    r.deployments[deployment]
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .expect("replicas")
}

fn allows(rules: &[k8s_openapi::api::rbac::v1::PolicyRule], resource: &str, verb: &str) -> bool {
    rules
        .iter()
        .any(|r| r.resources.iter().flatten().any(|x| x == resource) && r.verbs.iter().any(|v| v == verb))
}

#[test]
fn the_chart_lints_clean() {
    let helm = helm_or_skip!();
    let out = chart::run(&helm, &["lint", "--strict", "charts/daprs"]).expect("helm lint");
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn install_yaml_is_the_chart_rendered_with_default_values() {
    let helm = helm_or_skip!();
    let want = chart::install_yaml(&helm).expect("render");
    let have = std::fs::read_to_string(chart::root().join("deploy/install.yaml")).unwrap_or_default();
    assert!(
        have == want,
        "deploy/install.yaml is out of date; run `cargo run -p daprs-e2e --bin install-yaml > deploy/install.yaml`"
    );
    let r = read(&have);
    assert_eq!(r.kinds.first().map(String::as_str), Some("Namespace"));
}

#[test]
fn default_values_give_a_whole_control_plane() {
    let _ = helm_or_skip!();
    let r = render(&[]);
    assert_eq!(
        r.crds.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "components.dapr.io",
            "configurations.dapr.io",
            "httpendpoints.dapr.io",
            "resiliencies.dapr.io",
            "subscriptions.dapr.io"
        ]
    );
    for d in ["daprs-operator", "daprs-injector"] {
        assert_eq!(replicas(&r, d), 1, "{d}");
    }
    assert!(r.pdbs.is_empty());
    let op = container(&r, "daprs-operator");
    assert_eq!(op.image.as_deref(), Some("ghcr.io/daprs/daprs-operator:0.1.0"));
    assert_eq!(env(op, "WORKLOAD_CERT_TTL"), "24h");
    assert_eq!(env(op, "ALLOWED_CLOCK_SKEW"), "15m");
    assert_eq!(env(op, "METRICS_PORT"), "9090");
    assert_eq!(env(op, "LISTEN_ADDRESS"), "0.0.0.0");
    assert_eq!(env(op, "WATCHDOG_INTERVAL"), "0");
    let inj = container(&r, "daprs-injector");
    assert_eq!(inj.image.as_deref(), Some("ghcr.io/daprs/daprs-injector:0.1.0"));
    assert_eq!(env(inj, "SIDECAR_IMAGE"), "ghcr.io/daprs/daprd:0.1.0");
    assert_eq!(env(inj, "DAPR_MTLS_ENABLED"), "true");
    assert_eq!(env(inj, "NATIVE_SIDECAR"), "auto");
    assert_eq!(env(inj, "METRICS_PORT"), "9090");
    for s in [
        "dapr-sentry",
        "dapr-api",
        "dapr-webhook",
        "daprs-injector",
        "daprs-operator-metrics",
    ] {
        assert!(r.services.contains_key(s), "Service {s}");
    }
    let hook = &r.webhooks["daprs-injector"].webhooks.as_ref().expect("webhooks")[0];
    assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(
        hook.client_config.service.as_ref().map(|s| s.namespace.as_str()),
        Some("dapr-system")
    );
    assert!(hook.client_config.ca_bundle.is_none(), "the operator writes it");
    // The operator may delete the Services it made, and nothing it does not need.
    let rules = &r.cluster_roles["daprs-operator"]
        .rules
        .clone()
        .unwrap_or_default();
    assert!(allows(rules, "services", "delete"));
    assert!(!allows(rules, "secrets", "list"), "no listing of every Secret");
    assert!(!allows(rules, "deployments", "patch"));
    let own = &r.roles["daprs-operator"].rules.clone().unwrap_or_default();
    assert!(allows(own, "leases", "update"));
    let system = &r.configurations["daprsystem"];
    let mtls = system.spec.mtls.as_ref().expect("mtls");
    assert_eq!(mtls.enabled, Some(true));
    assert_eq!(mtls.workload_cert_ttl.as_deref(), Some("24h"));
}

#[test]
fn high_availability_spreads_three_replicas_with_budgets() {
    let _ = helm_or_skip!();
    let r = render(&["global.ha.enabled=true"]);
    for d in ["daprs-operator", "daprs-injector"] {
        assert_eq!(replicas(&r, d), 3, "{d}");
        let spec = r.deployments[d]
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("spec");
        let anti = spec
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .expect("anti-affinity");
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .as_ref()
                .map(|p| p[0].pod_affinity_term.topology_key.as_str()),
            Some("topology.kubernetes.io/zone")
        );
        let pdb = r.pdbs.get(d).expect("budget");
        assert!(
            pdb.spec
                .as_ref()
                .and_then(|s| s.max_unavailable.as_ref())
                .is_some()
        );
    }
}

#[test]
fn mtls_off_reaches_the_injector_and_the_system_configuration() {
    let _ = helm_or_skip!();
    let r = render(&["global.mtls.enabled=false", "global.mtls.workloadCertTTL=1h"]);
    assert_eq!(env(container(&r, "daprs-injector"), "DAPR_MTLS_ENABLED"), "false");
    assert_eq!(env(container(&r, "daprs-operator"), "WORKLOAD_CERT_TTL"), "1h");
    let mtls = r.configurations["daprsystem"].spec.mtls.clone().expect("mtls");
    assert_eq!(mtls.enabled, Some(false));
    assert_eq!(mtls.workload_cert_ttl.as_deref(), Some("1h"));
}

#[test]
fn a_custom_registry_and_settings_reach_every_container() {
    let _ = helm_or_skip!();
    let r = render(&[
        "global.registry=registry.example.com/mirror",
        "global.tag=1.2.3",
        "global.imagePullPolicy=Always",
        "global.imagePullSecrets=regcred",
        "global.logAsJson=true",
        "global.logLevel=debug",
        "global.prometheus.enabled=false",
        "dapr_sidecar_injector.image.name=docker.io/me/daprd:dev",
        "dapr_sidecar_injector.nativeSidecar=true",
        "dapr_sidecar_injector.allowedServiceAccounts=ci:deployer",
        "dapr_operator.listenAddress=::",
        "dapr_operator.watchdogEnabled=true",
        "dapr_operator.podAnnotations.team=platform",
    ]);
    let op = container(&r, "daprs-operator");
    assert_eq!(
        op.image.as_deref(),
        Some("registry.example.com/mirror/daprs-operator:1.2.3")
    );
    assert_eq!(op.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(env(op, "LOG_LEVEL"), "debug");
    assert_eq!(env(op, "LOG_AS_JSON"), "true");
    assert_eq!(env(op, "METRICS_PORT"), "0");
    assert_eq!(env(op, "LISTEN_ADDRESS"), "::");
    assert_eq!(env(op, "WATCHDOG_INTERVAL"), "60s");
    assert_eq!(env(op, "WATCHDOG_DELETE_PODS"), "true");
    let inj = container(&r, "daprs-injector");
    assert_eq!(
        inj.image.as_deref(),
        Some("registry.example.com/mirror/daprs-injector:1.2.3")
    );
    assert_eq!(env(inj, "SIDECAR_IMAGE"), "docker.io/me/daprd:dev");
    assert_eq!(env(inj, "NATIVE_SIDECAR"), "on");
    assert_eq!(env(inj, "ALLOWED_SERVICE_ACCOUNTS"), "ci:deployer");
    assert_eq!(env(inj, "METRICS_PORT"), "0");
    assert!(!r.services.contains_key("daprs-operator-metrics"));
    for d in ["daprs-operator", "daprs-injector"] {
        let pod = r.deployments[d]
            .spec
            .as_ref()
            .map(|s| &s.template)
            .expect("template");
        let secrets = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        assert_eq!(secrets.len(), 1, "{d}");
        assert_eq!(secrets[0].name, "regcred");
        let annotations = pod
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert!(!annotations.contains_key("prometheus.io/scrape"), "{d}");
    }
    let annotations = r.deployments["daprs-operator"]
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    assert_eq!(annotations.get("team").map(String::as_str), Some("platform"));
}
