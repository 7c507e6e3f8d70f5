//! `bindings.mqtt3`: `create` publishes the data to the component's
//! `topic` (or the call's `topic` metadata); as an input binding it reads
//! `topic` as consumer group `consumerID`. Connections, QoS and redelivery
//! are those of `pubsub.mqtt3`.

use super::broker::BrokerBinding;
use crate::{Metadata, meta, pubsub::mqtt::MqttBroker};

/// Reads `url`, `topic`, `consumerID`, `qos`, `retain`, `cleanSession`.
pub async fn connect(metadata: &Metadata) -> Result<BrokerBinding<MqttBroker>, String> {
    let topic = meta(metadata, "topic")
        .ok_or("metadata topic is required")?
        .to_string();
    Ok(BrokerBinding {
        broker: MqttBroker::connect(metadata).await?,
        topic,
        read_metadata: Metadata::new(),
        topic_per_call: true,
    })
}
