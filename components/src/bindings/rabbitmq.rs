//! `bindings.rabbitmq`: the queue `queueName` on the broker at `host` (an
//! AMQP URL). `create` publishes the data to it (with `ttlInSeconds`); as
//! an input binding it consumes the queue, acknowledging a message only
//! once the app took it and putting a refused one back. Connections and
//! confirms are those of `pubsub.rabbitmq`, which this binding drives.

use async_trait::async_trait;

use super::{Binding, Handler, Reading, Request, Response, check_operation, mqtt::to_events};
use crate::{
    Metadata, meta,
    pubsub::{Message, PubSub, Subscription, rabbitmq::RabbitBroker},
};

/// The RabbitMQ binding.
pub struct RabbitBinding {
    broker: RabbitBroker,
    queue: String,
}

const OPERATIONS: &[&str] = &["create"];

impl RabbitBinding {
    /// Reads `host`, `queueName`, `durable`, `deleteWhenUnused`, `prefetchCount`.
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let queue = meta(metadata, "queueName")
            .ok_or("metadata queueName is required")?
            .to_string();
        let mut settings = metadata.clone();
        if let Some(host) = meta(metadata, "host") {
            settings.insert("connectionString".into(), host.to_string());
        }
        if let Some(n) = meta(metadata, "prefetchCount") {
            settings.insert("prefetchCount".into(), n.to_string());
        }
        // A refused message goes back on the queue, as Dapr's binding does.
        settings.insert("requeueInFailure".into(), "true".into());
        Ok(Self {
            broker: RabbitBroker::connect(&settings).await?,
            queue,
        })
    }
}

#[async_trait]
impl Binding for RabbitBinding {
    fn operations(&self) -> &'static [&'static str] {
        OPERATIONS
    }

    async fn invoke(&self, req: Request) -> crate::Result<Response> {
        check_operation(OPERATIONS, &req.operation)?;
        self.broker
            .publish(Message {
                topic: self.queue.clone(),
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
            topic: self.queue.clone(),
            metadata: Metadata::from([("queueName".to_string(), self.queue.clone())]),
        };
        Ok(Reading::guard(
            self.broker.subscribe(sub, to_events(handler)).await?,
        ))
    }
}
