use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A component: one configured building-block implementation (a state store, a
/// pub/sub broker, a binding, ...). `auth` and `scopes` sit beside `spec` at the
/// top level of the object, as in Dapr's YAML.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "Component",
    namespaced,
    no_spec
)]
#[kube(status = "ComponentStatus")]
#[kube(
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct ComponentFields {
    /// What the component is and how to configure it.
    pub spec: ComponentSpec,
    /// Where `secretKeyRef` values are read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// App-ids that may load the component; empty means every app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// What the operator found when it checked the component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `Ready` (`True` when the component is valid) with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One status condition, shaped as Kubernetes conditions are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word for machines, e.g. `Invalid`.
    #[serde(default)]
    pub reason: String,
    /// What a person should know or do.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `metadata.generation` this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The body of a component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// `<building block>.<implementation>`, e.g. `state.redis`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Implementation version, e.g. `v1`.
    #[serde(default)]
    pub version: String,
    /// When true, a failure to initialise is logged and the sidecar carries on.
    #[serde(default)]
    pub ignore_errors: bool,
    /// How long initialisation may take (a duration such as `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_timeout: Option<String>,
    /// Settings passed to the implementation.
    #[serde(default)]
    pub metadata: Vec<NameValuePair>,
}

/// Names the secret store that resolves `secretKeyRef` values.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Secret store component name; empty means the built-in `kubernetes` store.
    #[serde(default)]
    pub secret_store: String,
}

/// A named setting whose value is given inline, from the environment, or from a secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameValuePair {
    /// The setting's name.
    pub name: String,
    /// Inline value: a string, number, boolean or object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub value: Option<serde_json::Value>,
    /// A secret holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// An environment variable of the sidecar holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_ref: Option<String>,
}

/// Points at one key of a secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// The secret's name.
    pub name: String,
    /// The key inside the secret; defaults to the secret's name.
    #[serde(default)]
    pub key: String,
}

impl NameValuePair {
    /// The inline value as the string components read: strings as they are,
    /// other JSON values in their JSON form.
    pub fn inline_value(&self) -> Option<String> {
        match self.value.as_ref()? {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

impl Component {
    /// The building block, the part of `spec.type` before the first dot.
    pub fn building_block(&self) -> &str {
        let t = &self.spec.spec.type_;
        t.split_once('.').map_or(t.as_str(), |(block, _)| block)
    }

    /// True when the component may be loaded by `app_id`.
    pub fn in_scope(&self, app_id: &str) -> bool {
        self.spec.scopes.is_empty() || self.spec.scopes.iter().any(|s| s == app_id)
    }

    /// `auth.secretStore`: the store its `secretKeyRef`s name ("" when unset).
    pub fn secret_store(&self) -> &str {
        self.spec
            .auth
            .as_ref()
            .map(|a| a.secret_store.as_str())
            .unwrap_or("")
    }
}
