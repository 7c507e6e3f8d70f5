//! Resources in `dapr.io/v2alpha1`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::v1alpha1::BulkSubscribe;

/// A declarative subscription whose events are routed by rules (`dapr.io/v2alpha1`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v2alpha1",
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

/// The body of a v2alpha1 Subscription.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// Pub/sub component name.
    pub pubsubname: String,
    /// Topic name.
    pub topic: String,
    /// Routing rules.
    pub routes: Routes,
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

/// Rules tried in order; the first match wins, otherwise `default`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Routes {
    /// Match expressions and their paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Path for events no rule matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// One routing rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Rule {
    /// CEL expression over the CloudEvent (`event.type == "x"`).
    #[serde(rename = "match")]
    pub match_: String,
    /// App path for matching events.
    pub path: String,
}
