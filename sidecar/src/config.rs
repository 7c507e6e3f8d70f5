//! What a `Configuration` (`--config`) changes in the sidecar: which APIs are
//! served (`spec.api`), which component types may load (`spec.components.deny`)
//! and whether metrics are served (`spec.metric.enabled`). Pure functions over
//! the shared resource types; the servers consult the result.

use std::collections::HashSet;

use daprs_api::v1alpha1::{ApiRule, Configuration, ConfigurationSpec};

/// The parts of a Configuration the sidecar applies.
#[derive(Clone, Debug, Default)]
pub struct SidecarConfig {
    /// The Configuration's name, for the metadata API and logs.
    pub name: Option<String>,
    pub api: ApiAccess,
    /// `type` or `type/version` entries that may not be loaded.
    pub denied_components: Vec<String>,
    /// `spec.metric.enabled`; metrics stay on when unset.
    pub metrics_enabled: bool,
    /// `spec.metric` (or `spec.metrics`): how metrics are labelled.
    pub metric: Option<daprs_api::v1alpha1::MetricSpec>,
    /// `spec.logging.apiLogging`: the default of `--enable-api-logging`.
    pub api_logging: Option<daprs_api::v1alpha1::ApiLoggingSpec>,
    /// `spec.secrets.scopes`: which secrets each store exposes to the app.
    pub secret_scopes: Vec<daprs_api::v1alpha1::SecretScope>,
    /// `spec.accessControl`: who may invoke this app; None lets everyone.
    pub access: Option<std::sync::Arc<crate::acl::AccessControl>>,
    /// `spec.tracing`: sampling and where spans go.
    pub tracing: Option<daprs_api::v1alpha1::TracingSpec>,
}

impl SidecarConfig {
    /// Reads a Configuration; a part that cannot be applied is an error naming its field.
    pub fn from_configuration(c: Option<&Configuration>) -> Result<Self, String> {
        let Some(c) = c else {
            return Ok(Self {
                metrics_enabled: true,
                ..Self::default()
            });
        };
        let spec: &ConfigurationSpec = &c.spec;
        validate(spec)?;
        Ok(Self {
            name: c.metadata.name.clone(),
            api: spec
                .api
                .as_ref()
                .map(|a| ApiAccess::new(&a.allowed, &a.denied))
                .unwrap_or_default(),
            denied_components: spec
                .components
                .as_ref()
                .map(|c| c.deny.clone())
                .unwrap_or_default(),
            metrics_enabled: spec.metric().is_none_or(|m| m.enabled),
            metric: spec.metric().cloned(),
            api_logging: spec.logging.as_ref().and_then(|l| l.api_logging.clone()),
            secret_scopes: spec
                .secrets
                .as_ref()
                .map(|s| s.scopes.clone())
                .unwrap_or_default(),
            access: spec
                .access_control
                .as_ref()
                .map(crate::acl::AccessControl::parse)
                .transpose()?
                .map(std::sync::Arc::new),
            tracing: spec.tracing.clone(),
        })
    }

    /// Why a component of `kind`/`version` may not load, if it may not.
    pub fn component_denied(&self, kind: &str, version: &str) -> Option<String> {
        self.denied_components
            .iter()
            .find(|d| match d.split_once('/') {
                Some((t, v)) => t == kind && v == version,
                None => d.as_str() == kind,
            })
            .map(|d| {
                format!(
                    "component type {kind}/{version} is denied by the Configuration (components.deny: {d})"
                )
            })
    }
}

/// Refuses values Dapr refuses, naming the field, instead of guessing.
fn validate(spec: &ConfigurationSpec) -> Result<(), String> {
    if let Some(t) = &spec.tracing {
        crate::trace::validate(t)?;
    }
    for (i, rule) in spec
        .metric()
        .map(|m| m.rules.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        for (j, label) in rule.labels.iter().enumerate() {
            for (to, pattern) in &label.regex {
                regex::Regex::new(pattern).map_err(|e| {
                    format!("spec.metric.rules[{i}].labels[{j}].regex[{to:?}]: {pattern:?} is not a regular expression: {e}")
                })?;
            }
        }
    }
    if let Some(api) = &spec.api {
        for (list, rules) in [("allowed", &api.allowed), ("denied", &api.denied)] {
            for (i, r) in rules.iter().enumerate() {
                let p = r.protocol.trim();
                if !(p.is_empty() || p.eq_ignore_ascii_case("http") || p.eq_ignore_ascii_case("grpc")) {
                    return Err(format!(
                        "spec.api.{list}[{i}].protocol: {p:?} is neither http nor grpc"
                    ));
                }
                if r.name.trim().is_empty() {
                    return Err(format!("spec.api.{list}[{i}].name is required"));
                }
            }
        }
    }
    if let Some(secrets) = &spec.secrets {
        for (i, scope) in secrets.scopes.iter().enumerate() {
            let a = scope.default_access.trim();
            if !(a.is_empty() || a.eq_ignore_ascii_case("allow") || a.eq_ignore_ascii_case("deny")) {
                return Err(format!(
                    "spec.secrets.scopes[{i}].defaultAccess: {a:?} is neither allow nor deny"
                ));
            }
        }
    }
    Ok(())
}

/// The version prefixes of Dapr's HTTP API.
const HTTP_VERSIONS: &[&str] = &["v1.0", "v1.0-alpha1", "v1.0-alpha2", "v1.0-beta1"];

/// `(name, version)` pairs allowed and denied for one protocol.
#[derive(Clone, Debug, Default)]
struct Rules {
    /// `None` when there is no allowlist: everything not denied is served.
    allowed: Option<HashSet<(String, String)>>,
    denied: HashSet<(String, String)>,
}

impl Rules {
    /// Whether any rule exists at all.
    fn restricts(&self) -> bool {
        self.allowed.is_some() || !self.denied.is_empty()
    }

    fn permits(&self, name: &str, version: &str) -> bool {
        if !self.restricts() {
            return true;
        }
        let key = (name.to_string(), version.to_string());
        if self.denied.contains(&key) {
            return false;
        }
        self.allowed.as_ref().is_none_or(|a| a.contains(&key))
    }
}

/// `spec.api.allowed` / `spec.api.denied`. A denylist entry wins over an
/// allowlist entry for the same API; health endpoints are always served.
#[derive(Clone, Debug, Default)]
pub struct ApiAccess {
    http: Rules,
    grpc: Rules,
}

impl ApiAccess {
    pub fn new(allowed: &[ApiRule], denied: &[ApiRule]) -> Self {
        let pick = |rules: &[ApiRule], grpc: bool| -> HashSet<(String, String)> {
            rules
                .iter()
                // A rule without a protocol is an HTTP rule.
                .filter(|r| r.protocol.eq_ignore_ascii_case("grpc") == grpc)
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect()
        };
        let rules = |grpc: bool| {
            let allowed = pick(allowed, grpc);
            Rules {
                allowed: (!allowed.is_empty()).then_some(allowed),
                denied: pick(denied, grpc),
            }
        };
        Self {
            http: rules(false),
            grpc: rules(true),
        }
    }

    /// Whether any HTTP rule exists (without one every route is served).
    pub fn restricts_http(&self) -> bool {
        self.http.restricts()
    }

    /// Whether any gRPC rule exists (without one every method is served).
    pub fn restricts_grpc(&self) -> bool {
        self.grpc.restricts()
    }

    /// Whether an HTTP request path (`/<version>/<api>/...`) is served.
    pub fn http_permits(&self, path: &str) -> bool {
        let mut parts = path.trim_start_matches('/').split('/');
        match (parts.next(), parts.next()) {
            (Some(version), Some(name)) if HTTP_VERSIONS.contains(&version) => {
                name == "healthz" || self.http.permits(name, version)
            }
            // Any other path is the app's own, reached through the
            // `dapr-app-id` header form of invocation.
            _ => self.http.permits("invoke", "v1.0"),
        }
    }

    /// Whether a gRPC method (`/package.Service/Method`) is served. Only the
    /// `dapr.proto.runtime.v1.Dapr` service is subject to the lists.
    pub fn grpc_permits(&self, path: &str) -> bool {
        let Some(method) = path.strip_prefix("/dapr.proto.runtime.v1.Dapr/") else {
            return true;
        };
        match grpc_api(method) {
            Some((name, version)) => self.grpc.permits(name, version),
            None => self.grpc.allowed.is_none(),
        }
    }
}

/// The API name and version of a `Dapr` service method, as the allowlist
/// names them (`state`/`v1`, `lock`/`v1alpha1`, ...).
fn grpc_api(method: &str) -> Option<(&'static str, &'static str)> {
    let (base, version) = match method.strip_suffix("Alpha1") {
        Some(b) => (b, "v1alpha1"),
        None => match method.strip_suffix("Alpha2") {
            Some(b) => (b, "v1alpha2"),
            None => (method, "v1"),
        },
    };
    let name = match base {
        "InvokeService" => "invoke",
        "GetState"
        | "GetBulkState"
        | "SaveState"
        | "QueryState"
        | "DeleteState"
        | "DeleteBulkState"
        | "ExecuteStateTransaction" => "state",
        "PublishEvent" | "BulkPublishEvent" => "publish",
        "SubscribeTopicEvents" => "subscribe",
        "InvokeBinding" => "bindings",
        "GetSecret" | "GetBulkSecret" => "secrets",
        "RegisterActorTimer"
        | "UnregisterActorTimer"
        | "RegisterActorReminder"
        | "UnregisterActorReminder"
        | "GetActorState"
        | "ExecuteActorStateTransaction"
        | "InvokeActor"
        | "GetActorReminder"
        | "ListActorReminders"
        | "UnregisterActorRemindersByType" => "actors",
        "GetConfiguration" | "SubscribeConfiguration" | "UnsubscribeConfiguration" => "configuration",
        "TryLock" => "lock",
        "Unlock" => "unlock",
        "Encrypt" | "Decrypt" => "crypto",
        "GetMetadata" | "SetMetadata" => "metadata",
        "Shutdown" => "shutdown",
        b if b.starts_with("Subtle") => "subtlecrypto",
        b if b.contains("Workflow") => "workflows",
        b if b.contains("Job") => "jobs",
        b if b.starts_with("Converse") => "conversation",
        _ => return None,
    };
    Some((name, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, version: &str, protocol: &str) -> ApiRule {
        ApiRule {
            name: name.into(),
            version: version.into(),
            protocol: protocol.into(),
        }
    }

    #[test]
    fn no_lists_serve_everything() {
        let a = ApiAccess::default();
        assert!(a.http_permits("/v1.0/state/s/k"));
        assert!(a.grpc_permits("/dapr.proto.runtime.v1.Dapr/GetState"));
    }

    #[test]
    fn an_http_allowlist_keeps_health_and_drops_the_rest() {
        let a = ApiAccess::new(&[rule("state", "v1.0", "http")], &[]);
        assert!(a.http_permits("/v1.0/state/s/k"));
        assert!(a.http_permits("/v1.0/healthz"));
        assert!(a.http_permits("/v1.0/healthz/outbound"));
        assert!(!a.http_permits("/v1.0/invoke/b/method/m"));
        assert!(!a.http_permits("/orders"), "the header form is invocation");
        assert!(
            !a.http_permits("/v1.0-alpha1/state/s/query"),
            "versions are distinct"
        );
        // gRPC has no rules, so it is untouched.
        assert!(a.grpc_permits("/dapr.proto.runtime.v1.Dapr/InvokeService"));
    }

    #[test]
    fn rules_without_protocol_are_http_rules() {
        let a = ApiAccess::new(&[], &[rule("invoke", "v1.0", "")]);
        assert!(!a.http_permits("/v1.0/invoke/b/method/m"));
        assert!(a.grpc_permits("/dapr.proto.runtime.v1.Dapr/InvokeService"));
    }

    #[test]
    fn grpc_lists_name_apis_and_deny_wins() {
        let a = ApiAccess::new(
            &[rule("state", "v1", "grpc"), rule("metadata", "v1", "grpc")],
            &[rule("metadata", "v1", "grpc"), rule("lock", "v1alpha1", "grpc")],
        );
        assert!(a.grpc_permits("/dapr.proto.runtime.v1.Dapr/SaveState"));
        assert!(a.grpc_permits("/dapr.proto.runtime.v1.Dapr/ExecuteStateTransaction"));
        assert!(!a.grpc_permits("/dapr.proto.runtime.v1.Dapr/GetMetadata"));
        assert!(!a.grpc_permits("/dapr.proto.runtime.v1.Dapr/InvokeService"));
        assert!(
            !a.grpc_permits("/dapr.proto.runtime.v1.Dapr/QueryStateAlpha1"),
            "state v1alpha1 is not state v1"
        );
        assert!(a.grpc_permits("/grpc.health.v1.Health/Check"));
        let d = ApiAccess::new(&[], &[rule("lock", "v1alpha1", "grpc")]);
        assert!(!d.grpc_permits("/dapr.proto.runtime.v1.Dapr/TryLockAlpha1"));
        assert!(d.grpc_permits("/dapr.proto.runtime.v1.Dapr/UnlockAlpha1"));
    }

    #[test]
    fn configuration_yaml_is_applied() {
        let yaml = "apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  metric:
    enabled: false
  components:
    deny:
      - state.redis
      - state.postgresql/v2
  api:
    denied:
      - name: shutdown
        version: v1.0
        protocol: http
";
        let decoded = daprs_api::resource::decode_yaml(yaml).expect("valid");
        let conf = decoded.resources.iter().find_map(|r| match r {
            daprs_api::Resource::Configuration(c) => Some(c),
            _ => None,
        });
        let c = SidecarConfig::from_configuration(conf).expect("valid");
        assert_eq!(c.name.as_deref(), Some("appconfig"));
        assert!(!c.metrics_enabled);
        assert!(c.component_denied("state.redis", "v1").is_some());
        assert!(c.component_denied("state.postgresql", "v1").is_none());
        assert!(c.component_denied("state.postgresql", "v2").is_some());
        assert!(!c.api.http_permits("/v1.0/shutdown"));
        assert!(
            SidecarConfig::from_configuration(None)
                .expect("none")
                .metrics_enabled
        );
        // Values Dapr refuses are refused, naming the field.
        for (from, to, field) in [
            (
                "protocol: http",
                "protocol: carrier-pigeon",
                "spec.api.denied[0].protocol",
            ),
            (
                "  api:",
                "  secrets:\n    scopes:\n    - storeName: s\n      defaultAccess: maybe\n  api:",
                "defaultAccess",
            ),
        ] {
            let decoded = daprs_api::resource::decode_yaml(&yaml.replace(from, to)).expect("yaml");
            let conf = decoded.resources.iter().find_map(|r| match r {
                daprs_api::Resource::Configuration(c) => Some(c),
                _ => None,
            });
            let e = SidecarConfig::from_configuration(conf).err().unwrap_or_default();
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
