//! Bindings over a pub/sub broker's client: `create` publishes to one topic
//! (or queue), and as an input binding the topic is read in the broker's
//! consumer group, a message acknowledged only once the app took it.
//! `bindings.mqtt3` and `bindings.rabbitmq` are this with their broker.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Binding, Event, Handler, Reading, Request, Response};
use crate::{
    Error, Metadata, meta,
    pubsub::{Message, PubSub, Subscription},
};

/// A binding on one topic of a broker.
pub struct BrokerBinding<B> {
    pub(crate) broker: B,
    pub(crate) topic: String,
    /// Subscription metadata of the input side.
    pub(crate) read_metadata: Metadata,
    /// Whether a call's `topic` metadata may name another topic.
    pub(crate) topic_per_call: bool,
}

const OPERATIONS: &[&str] = &["create"];

#[async_trait]
impl<B: PubSub> Binding for BrokerBinding<B> {
    fn operations(&self) -> &'static [&'static str] {
        OPERATIONS
    }

    async fn run(&self, req: Request) -> crate::Result<Response> {
        let topic = match meta(&req.metadata, "topic") {
            Some(t) if self.topic_per_call => t.to_string(),
            _ => self.topic.clone(),
        };
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
            metadata: self.read_metadata.clone(),
        };
        let to_events: crate::pubsub::Handler = Arc::new(move |m: Message| {
            let handler = handler.clone();
            Box::pin(async move {
                handler(Event {
                    data: m.data,
                    metadata: m.metadata,
                })
                .await
                .map_err(Error::Backend)
            })
        });
        Ok(Reading::guard(self.broker.subscribe(sub, to_events).await?))
    }
}
