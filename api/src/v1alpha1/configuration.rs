use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NameValuePair;

/// Runtime settings for the apps that name this Configuration (`--config`,
/// or the `dapr.io/config` annotation).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "dapr.io", version = "v1alpha1", kind = "Configuration", namespaced)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationSpec {
    /// Distributed tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    /// Metrics; read them through [`ConfigurationSpec::metric`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricSpec>,
    /// The same under the other name Dapr accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricSpec>,
    /// Mutual TLS between sidecars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSpec>,
    /// Which secrets each secret store exposes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsSpec>,
    /// Service-invocation access control and the app's trust domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_control: Option<AccessControlSpec>,
    /// How app-ids are resolved to addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_resolution: Option<NameResolutionSpec>,
    /// Feature flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeatureSpec>,
    /// API allow- and deny-lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,
    /// Middleware on the API side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_pipeline: Option<PipelineSpec>,
    /// Middleware on the app side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_http_pipeline: Option<PipelineSpec>,
    /// Component types that may not be loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsSpec>,
    /// Logging defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
}

impl ConfigurationSpec {
    /// The metrics settings, under either name (`metric` wins when both are set).
    pub fn metric(&self) -> Option<&MetricSpec> {
        self.metric.as_ref().or(self.metrics.as_ref())
    }
}

/// Tracing settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// Fraction of requests sampled, as a string such as `"1"` or `"0.1"`.
    #[serde(default)]
    pub sampling_rate: String,
    /// Print spans to standard output.
    #[serde(default)]
    pub stdout: bool,
    /// Zipkin exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinSpec>,
    /// OpenTelemetry exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<OtelSpec>,
}

/// Zipkin exporter settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpec {
    /// Collector URL.
    pub endpoint_address: String,
}

/// OpenTelemetry exporter settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtelSpec {
    /// Collector address.
    #[serde(default)]
    pub endpoint_address: String,
    /// Use TLS to the collector (true when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_secure: Option<bool>,
    /// `grpc` or `http`.
    #[serde(default)]
    pub protocol: String,
    /// Extra headers sent to the collector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NameValuePair>,
    /// Export timeout, a duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Metrics settings (`spec.metric`, or `spec.metrics` as Dapr also reads).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Whether metrics are recorded.
    pub enabled: bool,
    /// Whether error codes are recorded as a metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_error_codes: Option<bool>,
    /// HTTP metric labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<MetricHttpSpec>,
    /// Label rewriting rules per metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<MetricRule>,
    /// Latency histogram bucket bounds in milliseconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_distribution_buckets: Vec<i64>,
}

/// How HTTP paths become metric labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricHttpSpec {
    /// Label every path (unbounded cardinality) rather than normalised ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increased_cardinality: Option<bool>,
    /// Path templates paths are matched against, e.g. `/orders/{orderID}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_matching: Vec<String>,
    /// Leave the HTTP verb out of the labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_verbs: Option<bool>,
}

/// Label rewriting for one metric.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MetricRule {
    /// The metric's name.
    pub name: String,
    /// Its labels' rewrites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<MetricLabel>,
}

/// Values of one label replaced by the key of the first regex they match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct MetricLabel {
    /// The label's name.
    pub name: String,
    /// Replacement value → regular expression.
    #[serde(default)]
    pub regex: std::collections::BTreeMap<String, String>,
}

/// Mutual TLS settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MtlsSpec {
    /// Whether sidecars use mTLS (true when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Lifetime of workload certificates, a duration string.
    #[serde(default, rename = "workloadCertTTL", skip_serializing_if = "Option::is_none")]
    pub workload_cert_ttl: Option<String>,
    /// Clock skew tolerated when checking certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_clock_skew: Option<String>,
    /// Address of the certificate authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentry_address: Option<String>,
    /// Trust domain of the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_trust_domain: Option<String>,
}

/// Secret access lists.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretsSpec {
    /// One entry per secret store.
    #[serde(default)]
    pub scopes: Vec<SecretScope>,
}

/// Which secrets of one store the app may read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretScope {
    /// The secret store component.
    pub store_name: String,
    /// `allow` or `deny` for secrets in neither list.
    #[serde(default)]
    pub default_access: String,
    /// Secrets that may be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_secrets: Vec<String>,
    /// Secrets that may not be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_secrets: Vec<String>,
}

/// Service-invocation access control.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessControlSpec {
    /// `allow` or `deny` for callers no policy names.
    #[serde(default)]
    pub default_action: String,
    /// The app's SPIFFE trust domain (`public` when empty).
    #[serde(default)]
    pub trust_domain: String,
    /// Per-caller policies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AppPolicy>,
}

/// What one calling app may do.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicy {
    /// The caller's app-id.
    pub app_id: String,
    /// `allow` or `deny` for operations no rule names.
    #[serde(default)]
    pub default_action: String,
    /// The caller's trust domain.
    #[serde(default)]
    pub trust_domain: String,
    /// The caller's namespace.
    #[serde(default)]
    pub namespace: String,
    /// Rules per operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<AppOperation>,
}

/// A rule for one operation path.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppOperation {
    /// Method path; `*` and `**` are wildcards.
    pub name: String,
    /// HTTP verbs the rule covers (`*` for all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_verb: Vec<String>,
    /// `allow` or `deny`.
    pub action: String,
}

/// Name resolution settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct NameResolutionSpec {
    /// Resolver, e.g. `kubernetes` or `mdns`.
    pub component: String,
    /// Resolver version.
    #[serde(default)]
    pub version: String,
    /// Resolver-specific settings.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub configuration: serde_json::Value,
}

/// A feature flag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct FeatureSpec {
    /// Feature name.
    pub name: String,
    /// Whether it is on.
    pub enabled: bool,
}

/// API allow- and deny-lists.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ApiSpec {
    /// Only these APIs are served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<ApiRule>,
    /// These APIs are not served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<ApiRule>,
}

/// One API, e.g. `state` `v1.0` over `http`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ApiRule {
    /// API name (`state`, `invoke`, `publish`, ...).
    pub name: String,
    /// API version.
    pub version: String,
    /// `http` or `grpc`; empty means `http`, as in Dapr.
    #[serde(default)]
    pub protocol: String,
}

/// A middleware chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PipelineSpec {
    /// Middleware components in order.
    #[serde(default)]
    pub handlers: Vec<HandlerSpec>,
}

/// One middleware in a chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HandlerSpec {
    /// Middleware component name.
    pub name: String,
    /// Middleware type, e.g. `middleware.http.uppercase`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Which requests it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorSpec>,
}

/// Requests a middleware applies to: all of the fields must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SelectorSpec {
    /// Field conditions.
    #[serde(default)]
    pub fields: Vec<SelectorField>,
}

/// One field condition of a selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SelectorField {
    /// The field.
    pub field: String,
    /// Its value.
    pub value: String,
}

/// Component restrictions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ComponentsSpec {
    /// Denied component types, optionally `type/version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Logging defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// API call logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_logging: Option<ApiLoggingSpec>,
}

/// API call logging defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiLoggingSpec {
    /// Log every API call.
    #[serde(default)]
    pub enabled: bool,
    /// Log route templates instead of concrete URLs.
    #[serde(default, rename = "obfuscateURLs")]
    pub obfuscate_urls: bool,
    /// Leave health checks out of the log.
    #[serde(default)]
    pub omit_health_checks: bool,
}
