//! `pubsub.in-memory`: a broker inside the sidecar process. Each consumer
//! group of a topic has one bounded queue that its subscriptions take turns
//! reading, so they share the work; a publish puts the message on every
//! group's queue (waiting for room, which is the publisher's backpressure).
//! A failed delivery goes back on the queue after a growing pause.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use super::{CONSUMER_ID, Handler, Message, PubSub, Subscribed, Subscription, redelivery_pause};
use crate::{Metadata, Result, lock, meta, meta_num};

/// Messages a group's queue holds before publishers wait.
const QUEUE: usize = 10_000;
/// The longest pause before a message that failed is delivered again.
const LAST_RETRY: Duration = Duration::from_secs(5);

struct Delivery {
    msg: Message,
    attempt: u32,
}

struct Group {
    queue: Queue,
    members: usize,
}

/// The broker. Topics and groups live as long as a subscription uses them.
pub struct MemoryBroker {
    consumer: String,
    concurrency: usize,
    topics: Arc<Mutex<HashMap<String, HashMap<String, Group>>>>,
}

impl MemoryBroker {
    /// A broker whose subscriptions join group `consumerID`.
    pub fn new(metadata: &Metadata) -> std::result::Result<Self, String> {
        Ok(Self {
            consumer: meta(metadata, CONSUMER_ID).unwrap_or("default").to_string(),
            concurrency: meta_num(metadata, "concurrency", 16usize)?,
            topics: Arc::default(),
        })
    }

    fn join(&self, topic: &str, group: &str) -> Queue {
        let mut topics = lock(&self.topics);
        let g = topics
            .entry(topic.to_string())
            .or_default()
            .entry(group.to_string())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                Group {
                    queue: Queue {
                        tx,
                        rx: Arc::new(tokio::sync::Mutex::new(rx)),
                    },
                    members: 0,
                }
            });
        g.members += 1;
        g.queue.clone()
    }
}

/// One group's queue.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<Delivery>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Delivery>>>,
}

impl Queue {
    /// Delivers messages one at a time until the subscription stops.
    async fn work(self, handler: Handler, mut stopped: watch::Receiver<bool>) {
        loop {
            let next = tokio::select! {
                biased;
                _ = stopped.wait_for(|v| *v) => break,
                d = async { self.rx.lock().await.recv().await } => d,
            };
            let Some(d) = next else { break };
            if handler(d.msg.clone()).await.is_ok() {
                continue;
            }
            // A stop cuts the pause short; the message goes back at once.
            tokio::select! {
                () = tokio::time::sleep(redelivery_pause(d.attempt, LAST_RETRY)) => {}
                _ = stopped.wait_for(|v| *v) => {}
            }
            let again = Delivery {
                msg: d.msg,
                attempt: d.attempt.saturating_add(1),
            };
            // Waiting for room here could wait for this very worker.
            if let Err(mpsc::error::TrySendError::Full(again)) = self.tx.try_send(again) {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(again).await;
                });
            }
        }
    }
}

fn leave(topics: &Mutex<HashMap<String, HashMap<String, Group>>>, topic: &str, group: &str) {
    let mut topics = lock(topics);
    let Some(groups) = topics.get_mut(topic) else {
        return;
    };
    if let Some(g) = groups.get_mut(group) {
        g.members = g.members.saturating_sub(1);
        if g.members == 0 {
            groups.remove(group);
        }
    }
    if groups.is_empty() {
        topics.remove(topic);
    }
}

#[async_trait]
impl PubSub for MemoryBroker {
    fn features(&self) -> &'static [&'static str] {
        &[]
    }

    async fn publish(&self, msg: Message) -> Result<()> {
        // Queues with room take the message at once; the full ones are
        // waited for outside the lock.
        let mut full = Vec::new();
        if let Some(groups) = lock(&self.topics).get(&msg.topic) {
            for g in groups.values() {
                let d = Delivery {
                    msg: msg.clone(),
                    attempt: 0,
                };
                if let Err(mpsc::error::TrySendError::Full(d)) = g.queue.tx.try_send(d) {
                    full.push((g.queue.tx.clone(), d));
                }
            }
        }
        for (tx, d) in full {
            // A group that went away meanwhile has no one to deliver to.
            let _ = tx.send(d).await;
        }
        Ok(())
    }

    async fn subscribe(&self, sub: Subscription, handler: Handler) -> Result<Subscribed> {
        let group = meta(&sub.metadata, CONSUMER_ID)
            .unwrap_or(&self.consumer)
            .to_string();
        let queue = self.join(&sub.topic, &group);
        let (stop, stopped) = watch::channel(false);
        // A fixed set of workers take turns at the group's queue: as many
        // deliveries at once as `concurrency`, with no task per message.
        let workers: Vec<_> = (0..self.concurrency.max(1))
            .map(|_| tokio::spawn(queue.clone().work(handler.clone(), stopped.clone())))
            .collect();
        let topics = self.topics.clone();
        let task = tokio::spawn(async move {
            for w in workers {
                let _ = w.await;
            }
            leave(&topics, &sub.topic, &group);
        });
        Ok(Subscribed::new(stop, task))
    }
}
