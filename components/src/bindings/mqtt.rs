//! `bindings.mqtt3`: `create` publishes the data to the component's
//! `topic` (or the call's `topic` metadata); as an input binding it reads
//! `topic` as consumer group `consumerID`, acknowledging a message only
//! once the app took it. Connections, QoS and redelivery are those of
//! `pubsub.mqtt3`, which this binding drives.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Binding, Event, Handler, Reading, Request, Response, check_operation};
use crate::{
    Error, Metadata, meta,
    pubsub::{Message, PubSub, Subscription, mqtt::MqttBroker},
};

/// The MQTT binding.
pub struct MqttBinding {
    broker: MqttBroker,
    topic: String,
}

const OPERATIONS: &[&str] = &["create"];

impl MqttBinding {
    /// Reads `url`, `topic`, `consumerID`, `qos`, `retain`, `cleanSession`.
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let topic = meta(metadata, "topic")
            .ok_or("metadata topic is required")?
            .to_string();
        Ok(Self {
            broker: MqttBroker::connect(metadata).await?,
            topic,
        })
    }
}

/// Delivers broker messages to a binding handler.
pub(crate) fn to_events(handler: Handler) -> crate::pubsub::Handler {
    Arc::new(move |m: Message| {
        let handler = handler.clone();
        Box::pin(async move {
            handler(Event {
                data: m.data,
                metadata: m.metadata,
            })
            .await
            .map_err(Error::Backend)
        })
    })
}

#[async_trait]
impl Binding for MqttBinding {
    fn operations(&self) -> &'static [&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: Request) -> crate::Result<Response> {
        check_operation(OPERATIONS, &req.operation)?;
        let topic = meta(&req.metadata, "topic").unwrap_or(&self.topic).to_string();
        self.broker
            .publish(Message {
                topic,
                data: req.data,
                content_type: None,
                metadata: req.metadata,
            })
            .await?;
        Ok(Response::default())
    }

    fn is_input(&self) -> bool {
        true
    }

    async fn read(&self, handler: Handler) -> crate::Result<Reading> {
        let sub = Subscription {
            topic: self.topic.clone(),
            metadata: Metadata::new(),
        };
        Ok(Reading::guard(
            self.broker.subscribe(sub, to_events(handler)).await?,
        ))
    }
}
