use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Timeouts, retries and circuit breakers, and the targets they apply to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "Resiliency",
    namespaced,
    no_spec
)]
pub struct ResiliencyFields {
    /// Policies and targets.
    pub spec: ResiliencySpec,
    /// App-ids that load it; empty means every app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// The body of a Resiliency.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResiliencySpec {
    /// Named policies.
    pub policies: Policies,
    /// What the policies apply to.
    pub targets: Targets,
}

/// Named policies, referred to from targets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Name to duration string.
    #[serde(default)]
    pub timeouts: BTreeMap<String, String>,
    /// Name to retry policy.
    #[serde(default)]
    pub retries: BTreeMap<String, RetryPolicy>,
    /// Name to circuit breaker.
    #[serde(default)]
    pub circuit_breakers: BTreeMap<String, CircuitBreaker>,
}

/// A retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// `constant` or `exponential`.
    #[serde(default)]
    pub policy: String,
    /// Interval for `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Upper bound for `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_interval: Option<String>,
    /// Attempts after the first; -1 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i64>,
    /// Which failures are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<RetryMatching>,
}

/// Status codes a retry policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryMatching {
    /// e.g. `"500-599,429"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status_codes: Option<String>,
    /// e.g. `"1-4,8"`.
    #[serde(default, rename = "gRPCStatusCodes", skip_serializing_if = "Option::is_none")]
    pub grpc_status_codes: Option<String>,
}

/// A circuit breaker.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Probes allowed while half-open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
    /// How often closed-state counts reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// How long the breaker stays open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Expression over the counts that opens the breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip: Option<String>,
}

/// Targets of resiliency policies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Targets {
    /// By app-id.
    #[serde(default)]
    pub apps: BTreeMap<String, EndpointPolicy>,
    /// By actor type.
    #[serde(default)]
    pub actors: BTreeMap<String, ActorPolicy>,
    /// By component name.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentPolicy>,
}

/// Policy names for an app or one direction of a component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPolicy {
    /// Timeout policy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Circuit breaker name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<String>,
    /// How many breakers are cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker_cache_size: Option<u32>,
}

/// Policy names for an actor type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorPolicy {
    /// Timeout, retry and breaker names.
    #[serde(flatten)]
    pub policy: EndpointPolicy,
    /// `type`, `id` or `both`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker_scope: Option<String>,
}

/// Policy names for a component, per direction.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ComponentPolicy {
    /// Calls from the component into the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<EndpointPolicy>,
    /// Calls from the sidecar to the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<EndpointPolicy>,
}
