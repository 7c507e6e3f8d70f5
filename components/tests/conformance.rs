//! Conformance suites: each building block's behaviour written once against
//! its trait and run against every implementation on its real server. A new
//! implementation is proven by adding one test that calls its block's suite.

mod conformance {
    pub mod bindings;
    pub mod cluster;
    pub mod configuration;
    pub mod jetstream;
    pub mod lock;
    pub mod nats_jwt;
    pub mod pg_tls;
    pub mod pubsub;
    pub mod rabbitmq_tls;
    pub mod restart;
    pub mod secretstores;
    pub mod sentinel;
    pub mod state;
}

/// A name no other test run uses, for keys, topics and tables.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &daprs_components::uuid_v4()[..13])
}

/// Metadata from pairs.
pub fn md(pairs: &[(&str, &str)]) -> daprs_components::Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Builds a component of `kind` with the given metadata, or fails the test.
pub async fn build(
    kind: &str,
    metadata: &[(&str, &str)],
    env: &std::collections::HashMap<String, String>,
) -> daprs_components::registry::Built {
    match try_build(kind, metadata, env).await {
        Ok(b) => b,
        Err(e) => panic!("{kind}: {e}"),
    }
}

/// Builds a component, or says why it could not.
pub async fn try_build(
    kind: &str,
    metadata: &[(&str, &str)],
    env: &std::collections::HashMap<String, String>,
) -> Result<daprs_components::registry::Built, String> {
    let ctx = daprs_components::registry::Context { env, namespace: None };
    daprs_components::registry::build(kind, "v1", &md(metadata), &ctx).await
}
