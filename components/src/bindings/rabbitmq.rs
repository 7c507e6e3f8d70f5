//! `bindings.rabbitmq`: the queue `queueName` on the broker at `host` (an
//! AMQP URL). `create` publishes the data to it; as an input binding it
//! consumes the queue, putting a message the app refused back on it.
//! Connections and confirms are those of `pubsub.rabbitmq`.

use super::broker::BrokerBinding;
use crate::{Metadata, meta, pubsub::rabbitmq::RabbitBroker};

/// Reads `host`, `queueName`, `durable`, `deleteWhenUnused`, `prefetchCount`,
/// and TLS as `pubsub.rabbitmq` does (`caCert`, `clientCert`, `clientKey`,
/// with `externalSasl`).
pub async fn connect(metadata: &Metadata) -> Result<BrokerBinding<RabbitBroker>, String> {
    let queue = meta(metadata, "queueName")
        .ok_or("metadata queueName is required")?
        .to_string();
    let mut settings = metadata.clone();
    if let Some(host) = meta(metadata, "host") {
        settings.insert("connectionString".into(), host.to_string());
    }
    // The binding's name for what the pub/sub calls saslExternal.
    if let Some(v) = meta(metadata, "externalSasl") {
        settings.insert("saslExternal".into(), v.to_string());
    }
    // A refused message goes back on the queue, as Dapr's binding does.
    settings.insert("requeueInFailure".into(), "true".into());
    Ok(BrokerBinding {
        broker: RabbitBroker::connect(&settings).await?,
        read_metadata: Metadata::from([("queueName".to_string(), queue.clone())]),
        topic: queue,
        topic_per_call: false,
    })
}
