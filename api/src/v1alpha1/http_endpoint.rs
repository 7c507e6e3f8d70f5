use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Auth, NameValuePair, SecretKeyRef};

/// An external HTTP service that apps invoke by name like another app.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "HTTPEndpoint",
    namespaced,
    no_spec
)]
pub struct HttpEndpointFields {
    /// Where the endpoint is and how to call it.
    pub spec: HttpEndpointSpec,
    /// Where `secretKeyRef` values are read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// App-ids that may use it; empty means every app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

/// The body of an HTTPEndpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpEndpointSpec {
    /// Base URL that method paths are appended to.
    pub base_url: String,
    /// Headers added to every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NameValuePair>,
    /// Client TLS towards the endpoint.
    #[serde(default, rename = "clientTLS", skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
}

/// TLS material for calls to an HTTPEndpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// CA certificate that signs the endpoint's certificate.
    #[serde(default, rename = "rootCA", skip_serializing_if = "Option::is_none")]
    pub root_ca: Option<TlsDocument>,
    /// Client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<TlsDocument>,
    /// Client private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<TlsDocument>,
    /// `Never`, `OnceAsClient` or `FreelyAsClient`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renegotiation: Option<String>,
}

/// A PEM document given inline or from a secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsDocument {
    /// Inline PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A secret holding the PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}
