//! Builds a component from its `type` and `version`: the one place that
//! knows which implementations exist.

use std::{collections::HashMap, sync::Arc};

use crate::{
    Metadata,
    bindings::{self, Binding},
    configuration::{self, ConfigurationStore},
    lock::{self, LockStore},
    pubsub::{self, PubSub},
    secretstores::{self, SecretStore},
    state::{self, StateStore},
};

/// A component, ready to serve its building block.
pub enum Built {
    /// A state store.
    State(Arc<dyn StateStore>),
    /// A secret store.
    SecretStore(Arc<dyn SecretStore>),
    /// A pub/sub broker.
    PubSub(Arc<dyn PubSub>),
    /// A lock store.
    Lock(Arc<dyn LockStore>),
    /// A configuration store.
    Configuration(Arc<dyn ConfigurationStore>),
    /// An input and/or output binding.
    Binding(Arc<dyn Binding>),
}

/// What a component may read besides its metadata.
pub struct Context<'a> {
    /// The sidecar's environment (for `secretstores.local.env`).
    pub env: &'a HashMap<String, String>,
    /// The pod's namespace, if any.
    pub namespace: Option<&'a str>,
}

/// Every `type` this build can load, by building block.
pub const TYPES: &[&str] = &[
    "state.in-memory",
    "state.sqlite",
    "state.redis",
    "state.postgresql",
    "secretstores.local.env",
    "secretstores.local.file",
    "secretstores.kubernetes",
    "pubsub.in-memory",
    "pubsub.redis",
    "pubsub.mqtt3",
    "pubsub.jetstream",
    "pubsub.rabbitmq",
    "lock.in-memory",
    "lock.redis",
    "configuration.redis",
    "configuration.postgresql",
    "bindings.cron",
    "bindings.http",
    "bindings.localstorage",
    "bindings.redis",
    "bindings.postgresql",
    "bindings.rabbitmq",
    "bindings.mqtt3",
];

/// Whether `version` is one this build implements (all are `v1`).
fn known_version(version: &str) -> bool {
    matches!(version, "" | "v1")
}

/// Builds (connects, opens) the component of `kind` and `version`.
pub async fn build(
    kind: &str,
    version: &str,
    metadata: &Metadata,
    ctx: &Context<'_>,
) -> Result<Built, String> {
    let kind = kind.trim();
    // Dapr accepts `state.postgres` as well as the documented name.
    let kind = match kind {
        "state.postgres" => "state.postgresql",
        "configuration.postgres" => "configuration.postgresql",
        "bindings.postgres" => "bindings.postgresql",
        k => k,
    };
    if !TYPES.contains(&kind) {
        return Err(format!("unknown component type {kind}"));
    }
    if !known_version(version) {
        return Err(format!("{kind} has no version {version:?} (this build has v1)"));
    }
    Ok(match kind {
        "state.in-memory" => Built::State(Arc::new(state::memory::MemoryStore::default())),
        "state.sqlite" => Built::State(Arc::new(state::sqlite::SqliteStore::open(metadata).await?)),
        "state.redis" => Built::State(Arc::new(state::redis::RedisStore::connect(metadata).await?)),
        "state.postgresql" => {
            Built::State(Arc::new(state::postgres::PostgresStore::connect(metadata).await?))
        }
        "secretstores.local.env" => Built::SecretStore(Arc::new(secretstores::env::EnvStore::new(
            ctx.env,
            crate::meta(metadata, "prefix").unwrap_or_default(),
        ))),
        "secretstores.local.file" => {
            Built::SecretStore(Arc::new(secretstores::file::FileStore::open(metadata)?))
        }
        "secretstores.kubernetes" => Built::SecretStore(Arc::new(
            secretstores::kubernetes::KubernetesStore::new(metadata, ctx.env, ctx.namespace)?,
        )),
        "pubsub.in-memory" => Built::PubSub(Arc::new(pubsub::memory::MemoryBroker::new(metadata)?)),
        "pubsub.redis" => Built::PubSub(Arc::new(pubsub::redis::RedisBroker::connect(metadata).await?)),
        "pubsub.mqtt3" => Built::PubSub(Arc::new(pubsub::mqtt::MqttBroker::connect(metadata).await?)),
        "pubsub.rabbitmq" => {
            Built::PubSub(Arc::new(pubsub::rabbitmq::RabbitBroker::connect(metadata).await?))
        }
        "pubsub.jetstream" => Built::PubSub(Arc::new(
            pubsub::jetstream::JetStreamBroker::connect(metadata).await?,
        )),
        "lock.in-memory" => Built::Lock(Arc::new(lock::memory::MemoryLocks::default())),
        "lock.redis" => Built::Lock(Arc::new(lock::redis::RedisLocks::connect(metadata).await?)),
        "configuration.redis" => Built::Configuration(Arc::new(
            configuration::redis::RedisConfig::connect(metadata).await?,
        )),
        "configuration.postgresql" => Built::Configuration(Arc::new(
            configuration::postgres::PostgresConfig::connect(metadata).await?,
        )),
        "bindings.cron" => Built::Binding(Arc::new(bindings::cron::Cron::new(metadata)?)),
        "bindings.http" => Built::Binding(Arc::new(bindings::http::HttpBinding::new(metadata)?)),
        "bindings.localstorage" => {
            Built::Binding(Arc::new(bindings::localstorage::LocalStorage::new(metadata)?))
        }
        "bindings.redis" => Built::Binding(Arc::new(bindings::redis::RedisBinding::connect(metadata).await?)),
        "bindings.postgresql" => Built::Binding(Arc::new(
            bindings::postgres::PostgresBinding::connect(metadata).await?,
        )),
        "bindings.rabbitmq" => Built::Binding(Arc::new(bindings::rabbitmq::connect(metadata).await?)),
        "bindings.mqtt3" => Built::Binding(Arc::new(bindings::mqtt::connect(metadata).await?)),
        other => return Err(format!("unknown component type {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_types_and_versions_are_refused() {
        let env = HashMap::new();
        let ctx = Context {
            env: &env,
            namespace: None,
        };
        let none = Metadata::new();
        let err = |r: Result<Built, String>| r.err().unwrap_or_default();
        assert!(err(build("state.cassandra", "v1", &none, &ctx).await).contains("unknown component type"));
        assert!(err(build("state.in-memory", "v2", &none, &ctx).await).contains("no version"));
        assert!(matches!(
            build("state.in-memory", "v1", &none, &ctx).await,
            Ok(Built::State(_))
        ));
        assert!(matches!(
            build("pubsub.in-memory", "", &none, &ctx).await,
            Ok(Built::PubSub(_))
        ));
    }
}
