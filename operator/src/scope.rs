//! Which resources a sidecar sees: those in its namespace whose `scopes`
//! are empty or name its app-id.

use daprs_api::{
    Resource,
    v1alpha1::{Component, HTTPEndpoint, Resiliency},
    v2alpha1::Subscription,
};

fn in_scope(namespace: Option<&str>, scopes: &[String], want_ns: &str, app_id: &str) -> bool {
    namespace.unwrap_or("default") == want_ns && (scopes.is_empty() || scopes.iter().any(|s| s == app_id))
}

/// The components an app in `namespace` may load.
pub fn components<'a>(all: &'a [Component], namespace: &str, app_id: &str) -> Vec<&'a Component> {
    all.iter()
        .filter(|c| in_scope(c.metadata.namespace.as_deref(), &c.spec.scopes, namespace, app_id))
        .collect()
}

/// The subscriptions that apply to an app.
pub fn subscriptions<'a>(all: &'a [Subscription], namespace: &str, app_id: &str) -> Vec<&'a Subscription> {
    all.iter()
        .filter(|s| in_scope(s.metadata.namespace.as_deref(), &s.spec.scopes, namespace, app_id))
        .collect()
}

/// The resiliency policies that apply to an app.
pub fn resiliencies<'a>(all: &'a [Resiliency], namespace: &str, app_id: &str) -> Vec<&'a Resiliency> {
    all.iter()
        .filter(|r| in_scope(r.metadata.namespace.as_deref(), &r.spec.scopes, namespace, app_id))
        .collect()
}

/// The HTTP endpoints that apply to an app.
pub fn http_endpoints<'a>(all: &'a [HTTPEndpoint], namespace: &str, app_id: &str) -> Vec<&'a HTTPEndpoint> {
    all.iter()
        .filter(|e| in_scope(e.metadata.namespace.as_deref(), &e.spec.scopes, namespace, app_id))
        .collect()
}

/// Sorts decoded resources into the kinds above.
#[derive(Default)]
pub struct Catalog {
    pub components: Vec<Component>,
    pub subscriptions: Vec<Subscription>,
    pub resiliencies: Vec<Resiliency>,
    pub http_endpoints: Vec<HTTPEndpoint>,
}

impl Catalog {
    pub fn from_resources(resources: Vec<Resource>) -> Self {
        let mut c = Self::default();
        for r in resources {
            match r {
                Resource::Component(x) => c.components.push(x),
                Resource::SubscriptionV2(x) => c.subscriptions.push(x),
                Resource::Resiliency(x) => c.resiliencies.push(x),
                Resource::HttpEndpoint(x) => c.http_endpoints.push(x),
                _ => {}
            }
        }
        c
    }
}
