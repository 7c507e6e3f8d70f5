use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A declarative subscription with a single route (`dapr.io/v1alpha1`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "Subscription",
    namespaced,
    no_spec
)]
pub struct SubscriptionFields {
    /// What to subscribe to and where to deliver.
    pub spec: SubscriptionSpec,
    /// App-ids that subscribe; empty means every app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// The body of a v1alpha1 Subscription.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// Pub/sub component name.
    pub pubsubname: String,
    /// Topic name.
    pub topic: String,
    /// App path events are posted to.
    pub route: String,
    /// Settings passed to the broker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Topic for events the app drops or that cannot be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Batch delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_subscribe: Option<BulkSubscribe>,
}

/// Batch delivery settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkSubscribe {
    /// Whether events are delivered in batches.
    pub enabled: bool,
    /// Most events in a batch (100 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_count: Option<i32>,
    /// Longest wait to fill a batch, in milliseconds (1000 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_await_duration_ms: Option<i32>,
}
