//! Pub/sub brokers: publish a message to a topic; deliver every message of a
//! topic to each consumer group at least once.
//!
//! Semantics every broker honours:
//! - a message is acknowledged to the broker only after the handler returned
//!   `Ok`; a handler error, a crash or a stop before that leaves it to be
//!   delivered again;
//! - subscriptions that share a consumer group (`consumerID`, which daprd
//!   sets to the app id) share the messages; each group gets every message;
//! - [`Subscribed::stop`] ends delivery: no handler starts after it returns,
//!   and the ones running were allowed to finish (or their messages stay
//!   unacknowledged).

pub mod jetstream;
pub mod memory;
pub mod mqtt;
pub mod rabbitmq;
pub mod redis;

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::{Metadata, Result};

/// Metadata naming the consumer group (Dapr's name).
pub const CONSUMER_ID: &str = "consumerID";

/// A message as published or delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload: a CloudEvent's JSON, or the raw bytes of a raw publish.
    pub data: Bytes,
    /// Content type of `data`, when known.
    pub content_type: Option<String>,
    /// Per-message metadata (publish request metadata out, broker metadata in).
    pub metadata: Metadata,
}

/// What a subscription asks the broker for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The topic.
    pub topic: String,
    /// Subscription metadata (broker-specific options).
    pub metadata: Metadata,
}

/// The future a handler returns: `Ok` acknowledges the message.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Called once per delivery.
pub type Handler = Arc<dyn Fn(Message) -> HandlerFuture + Send + Sync>;

/// A pub/sub broker.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// Capabilities, as reported by the metadata API.
    fn features(&self) -> &'static [&'static str];

    /// Publishes one message; `Ok` means the broker has it.
    async fn publish(&self, msg: Message) -> Result<()>;

    /// Starts delivering the topic's messages to `handler`; returns once the
    /// subscription exists on the broker, so messages published after that
    /// reach it.
    async fn subscribe(&self, sub: Subscription, handler: Handler) -> Result<Subscribed>;
}

/// A running subscription. Dropping it stops delivery without waiting.
pub struct Subscribed {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Subscribed {
    /// Wraps a delivery task that watches `stop`.
    pub fn new(stop: watch::Sender<bool>, task: tokio::task::JoinHandle<()>) -> Self {
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops delivery and waits for the deliveries in flight to finish.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// The pause before a failed delivery is handed over again: 100 ms, doubling
/// with each attempt up to `longest`.
pub(crate) fn redelivery_pause(attempt: u32, longest: Duration) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(longest)
}

/// Runs deliveries with at most `limit` at a time, so a slow app bounds the
/// work a subscription has taken on. Waits for a free slot before it returns.
pub(crate) struct Workers {
    slots: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<()>,
}

impl Workers {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(limit.max(1))),
            tasks: tokio::task::JoinSet::new(),
        }
    }

    /// Starts `work` once a slot is free.
    pub(crate) async fn spawn(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        // Reap finished tasks so the set does not grow with the stream.
        while self.tasks.try_join_next().is_some() {}
        let Ok(permit) = self.slots.clone().acquire_owned().await else {
            return;
        };
        self.tasks.spawn(async move {
            work.await;
            drop(permit);
        });
    }

    /// Waits for every delivery in flight.
    pub(crate) async fn drain(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redelivery_pauses_grow_to_a_limit() {
        let longest = Duration::from_secs(5);
        assert_eq!(redelivery_pause(0, longest), Duration::from_millis(100));
        assert_eq!(redelivery_pause(1, longest), Duration::from_millis(200));
        assert_eq!(redelivery_pause(5, longest), Duration::from_millis(3200));
        assert_eq!(redelivery_pause(30, longest), longest);
        assert_eq!(redelivery_pause(u32::MAX, longest), longest);
    }
}
