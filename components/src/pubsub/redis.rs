//! `pubsub.redis`: Redis Streams laid out as Dapr lays them out, so either
//! runtime reads the other's messages. A topic is a stream; a message is an
//! entry with the fields `data` and, when there is any, `metadata` (JSON).
//! Each consumer group (`consumerID`) is a stream consumer group created
//! from the stream's start. An entry is acknowledged (`XACK`) only after the
//! handler succeeded; entries left pending longer than `processingTimeout`
//! are claimed again every `redeliverInterval`, which is how failed and
//! abandoned deliveries come back.

use std::{collections::HashSet, sync::Arc, time::Duration};

use ::redis::{
    AsyncCommands, Value,
    streams::{StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply},
};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use super::{CONSUMER_ID, Handler, Message, PubSub, Subscribed, Subscription, Workers};
use crate::{
    Error, Metadata, Result, meta, meta_duration, meta_num,
    redis_conn::{Conn, Redis},
};

/// How long one blocking read waits before it looks at the stop signal again.
const BLOCK: Duration = Duration::from_secs(1);

/// The broker's settings, with Dapr's metadata names and defaults.
#[derive(Debug, Clone)]
struct Settings {
    consumer: String,
    queue_depth: usize,
    concurrency: usize,
    processing_timeout: Duration,
    redeliver_interval: Duration,
    max_len_approx: Option<u64>,
}

/// The broker.
pub struct RedisBroker {
    redis: Redis,
    conn: Conn,
    settings: Settings,
}

fn backend(e: ::redis::RedisError) -> Error {
    Error::Backend(e.to_string())
}

impl RedisBroker {
    /// Connects to `redisHost`.
    pub async fn connect(metadata: &Metadata) -> std::result::Result<Self, String> {
        let settings = Settings {
            consumer: meta(metadata, CONSUMER_ID).unwrap_or("default").to_string(),
            queue_depth: meta_num(metadata, "queueDepth", 100usize)?.max(1),
            concurrency: meta_num(metadata, "concurrency", 10usize)?.max(1),
            processing_timeout: meta_duration(metadata, "processingTimeout", Duration::from_secs(15))?,
            redeliver_interval: meta_duration(metadata, "redeliverInterval", Duration::from_secs(60))?,
            max_len_approx: match meta(metadata, "maxLenApprox") {
                Some(_) => Some(meta_num(metadata, "maxLenApprox", 0u64)?),
                None => None,
            },
        };
        let (redis, conn) = crate::redis_conn::connect(metadata).await?;
        Ok(Self {
            redis,
            conn,
            settings,
        })
    }
}

/// The fields of one stream entry for a message.
fn entry_fields(msg: &Message) -> Vec<(&'static str, Vec<u8>)> {
    let mut fields = vec![("data", msg.data.to_vec())];
    if !msg.metadata.is_empty() {
        let json = serde_json::to_vec(&msg.metadata).unwrap_or_default();
        fields.push(("metadata", json));
    }
    fields
}

/// Creates consumer group `group` on `topic` from the stream's start (and
/// the stream, when absent); a group that exists already is fine. Used when
/// subscribing, and again when a server restarted without persistence has
/// lost it.
async fn create_group(conn: &mut Conn, topic: &str, group: &str) -> ::redis::RedisResult<()> {
    let created: ::redis::RedisResult<Value> = ::redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(topic)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// A stream entry back as a message.
fn message(topic: &str, entry: &StreamId) -> Message {
    let bytes = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => b.clone(),
        Some(Value::SimpleString(s)) => s.clone().into_bytes(),
        _ => Vec::new(),
    };
    let metadata = serde_json::from_slice(&bytes(entry.map.get("metadata"))).unwrap_or_default();
    Message {
        topic: topic.to_string(),
        data: Bytes::from(bytes(entry.map.get("data"))),
        content_type: None,
        metadata,
    }
}

#[async_trait]
impl PubSub for RedisBroker {
    fn features(&self) -> &'static [&'static str] {
        &[]
    }

    async fn publish(&self, msg: Message) -> Result<()> {
        let mut cmd = ::redis::cmd("XADD");
        cmd.arg(&msg.topic);
        if let Some(n) = self.settings.max_len_approx {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        for (k, v) in entry_fields(&msg) {
            cmd.arg(k).arg(v);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<Value>(&mut conn).await.map_err(backend)?;
        Ok(())
    }

    async fn subscribe(&self, sub: Subscription, handler: Handler) -> Result<Subscribed> {
        let s = &self.settings;
        let group = meta(&sub.metadata, CONSUMER_ID)
            .unwrap_or(&s.consumer)
            .to_string();
        create_group(&mut self.conn.clone(), &sub.topic, &group)
            .await
            .map_err(backend)?;
        // Blocking reads get their own connection, with room for the block.
        let config =
            crate::redis_conn::manager_config().set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        let reader = self.redis.open(config).await.map_err(backend)?;
        let (stop, stopped) = watch::channel(false);
        let consumer = Consumer {
            topic: sub.topic,
            group,
            settings: s.clone(),
            conn: self.conn.clone(),
            handler,
            in_flight: Default::default(),
        };
        let task = tokio::spawn(consumer.run(reader, stopped));
        Ok(Subscribed::new(stop, task))
    }
}

/// One subscription's reading, claiming and acknowledging.
struct Consumer {
    topic: String,
    group: String,
    settings: Settings,
    conn: Conn,
    handler: Handler,
    /// Entries being delivered, so a claim does not start them twice here.
    in_flight: std::sync::Mutex<HashSet<String>>,
}

impl Consumer {
    async fn run(self, mut reader: Conn, mut stopped: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut workers = Workers::new(this.settings.concurrency);
        let opts = StreamReadOptions::default()
            .group(&this.group, &this.settings.consumer)
            .count(this.settings.queue_depth)
            .block(BLOCK.as_millis() as usize);
        let mut claim_at = tokio::time::Instant::now() + this.settings.redeliver_interval;
        let mut failures = 0u32;
        let (keys, ids) = ([this.topic.as_str()], [">"]);
        while !*stopped.borrow() {
            let mut entries = Vec::new();
            if !this.settings.redeliver_interval.is_zero() && tokio::time::Instant::now() >= claim_at {
                claim_at = tokio::time::Instant::now() + this.settings.redeliver_interval;
                match this.claim(&mut reader).await {
                    Ok(claimed) => entries.extend(claimed),
                    Err(e) => {
                        tracing::warn!(topic = %this.topic, error = %e, "claiming pending messages failed")
                    }
                }
            }
            let read = tokio::select! {
                _ = stopped.wait_for(|v| *v) => break,
                r = reader.xread_options::<_, _, StreamReadReply>(&keys, &ids, &opts) => r,
            };
            match read {
                Ok(reply) => {
                    failures = 0;
                    entries.extend(reply.keys.into_iter().flat_map(|k| k.ids));
                }
                Err(e) => {
                    // The server is away: wait a little longer each time, then
                    // read again; the connection reconnects by itself.
                    failures = failures.saturating_add(1);
                    tracing::warn!(topic = %this.topic, error = %e, "reading the stream failed");
                    let pause = Duration::from_millis(100 * u64::from(failures.min(30)));
                    tokio::select! {
                        _ = stopped.wait_for(|v| *v) => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    if e.code() == Some("NOGROUP") {
                        let _ = create_group(&mut this.conn.clone(), &this.topic, &this.group).await;
                    }
                }
            }
            for entry in entries {
                if !crate::lock(&this.in_flight).insert(entry.id.clone()) {
                    continue;
                }
                let this = this.clone();
                workers.spawn(async move { this.deliver(entry).await }).await;
            }
        }
        workers.drain().await;
    }

    async fn deliver(&self, entry: StreamId) {
        let msg = message(&self.topic, &entry);
        if (self.handler)(msg).await.is_ok() {
            let mut conn = self.conn.clone();
            let acked: std::result::Result<Value, _> =
                conn.xack(&self.topic, &self.group, &[&entry.id]).await;
            if let Err(e) = acked {
                // The entry stays pending and is claimed again: at least once.
                tracing::warn!(topic = %self.topic, id = %entry.id, error = %e, "acknowledging failed");
            }
        }
        crate::lock(&self.in_flight).remove(&entry.id);
    }

    /// Entries pending longer than `processingTimeout`, now this consumer's.
    async fn claim(&self, conn: &mut Conn) -> std::result::Result<Vec<StreamId>, ::redis::RedisError> {
        let idle = self.settings.processing_timeout.as_millis() as u64;
        let reply: StreamAutoClaimReply = ::redis::cmd("XAUTOCLAIM")
            .arg(&self.topic)
            .arg(&self.group)
            .arg(&self.settings.consumer)
            .arg(idle)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.settings.queue_depth)
            .query_async(conn)
            .await?;
        Ok(reply.claimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let msg = Message {
            topic: "t".into(),
            data: Bytes::from_static(b"{\"a\":1}"),
            content_type: None,
            metadata: Metadata::from([("k".to_string(), "v".to_string())]),
        };
        let fields = entry_fields(&msg);
        let entry = StreamId {
            id: "1-0".into(),
            map: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::BulkString(v)))
                .collect(),
            ..Default::default()
        };
        assert_eq!(message("t", &entry), msg);
        let bare = StreamId::default();
        assert_eq!(message("t", &bare).data, Bytes::new());
    }
}
