//! `pubsub.redis`: Redis Streams laid out as Dapr lays them out, so either
//! runtime reads the other's messages. A topic is a stream; a message is an
//! entry with the fields `data` and, when there is any, `metadata` (JSON).
//! Each consumer group (`consumerID`) is a stream consumer group created
//! from the stream's start. An entry is acknowledged (`XACK`) only after the
//! handler succeeded; entries left pending longer than `processingTimeout`
//! are claimed again every `redeliverInterval`, which is how failed and
//! abandoned deliveries come back. Streams are trimmed as entries are added:
//! to about `maxLenApprox` entries, or of those older than `streamTTL`.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ::redis::Value;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::{CONSUMER_ID, Handler, Message, PubSub, Subscribed, Subscription, Workers};
use crate::{
    Error, Metadata, Result, meta, meta_duration, meta_num, meta_opt_num,
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
    /// Entries older than this are trimmed as new ones are added.
    stream_ttl: Option<Duration>,
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
            max_len_approx: meta_opt_num(metadata, "maxLenApprox")?,
            stream_ttl: Some(meta_duration(metadata, "streamTTL", Duration::ZERO)?).filter(|d| !d.is_zero()),
        };
        let (redis, conn) = crate::redis_conn::connect(metadata).await?;
        Ok(Self {
            redis,
            conn,
            settings,
        })
    }
}

/// Appends `XADD`'s field-value pairs for a message: `data` and, when there
/// is any, `metadata` (JSON).
fn entry_fields(cmd: &mut ::redis::Cmd, msg: &Message) {
    cmd.arg("data").arg(&msg.data[..]);
    if !msg.metadata.is_empty() {
        cmd.arg("metadata")
            .arg(serde_json::to_vec(&msg.metadata).unwrap_or_default());
    }
}

/// `XADD`'s trimming: `maxLenApprox` entries at most or, without it, none
/// older than `streamTTL` (by their ids, which are milliseconds since the
/// epoch). Approximate (`~`): Redis drops whole nodes of old entries, which
/// is cheap.
fn trim(cmd: &mut ::redis::Cmd, settings: &Settings, now: SystemTime) {
    if let Some(n) = settings.max_len_approx {
        cmd.arg("MAXLEN").arg("~").arg(n);
    } else if let Some(ttl) = settings.stream_ttl {
        let oldest = now
            .checked_sub(ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis());
        cmd.arg("MINID").arg("~").arg(oldest.to_string());
    }
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

/// One stream entry read back: its id and, unless the entry was deleted
/// after it was delivered, its message.
#[derive(Debug, PartialEq)]
struct Entry {
    id: String,
    msg: Option<Message>,
}

/// The elements of an array, or of a map as key, value, key, value.
fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s.into_bytes()),
        _ => None,
    }
}

/// The entries of a list `[[id, [field, value, ...]], ...]`, moved out of
/// the reply (a message's data is not copied).
fn entries(topic: &str, list: Value, out: &mut Vec<Entry>) {
    for entry in items(list) {
        let mut parts = items(entry).into_iter();
        let Some(id) = parts.next().and_then(into_bytes) else {
            continue;
        };
        let Ok(id) = String::from_utf8(id) else {
            continue;
        };
        let fields = parts.next().unwrap_or(Value::Nil);
        let msg = (!matches!(fields, Value::Nil)).then(|| {
            let (mut data, mut metadata) = (Vec::new(), Metadata::new());
            let mut fields = items(fields).into_iter();
            while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                match (into_bytes(k).as_deref(), into_bytes(v)) {
                    (Some(b"data"), Some(v)) => data = v,
                    (Some(b"metadata"), Some(v)) => metadata = serde_json::from_slice(&v).unwrap_or_default(),
                    _ => {}
                }
            }
            Message {
                topic: topic.to_string(),
                data: Bytes::from(data),
                content_type: None,
                metadata,
            }
        });
        out.push(Entry { id, msg });
    }
}

/// The entries of an `XREADGROUP` reply: per stream `[name, entries]`
/// (RESP2) or a map of name to entries (RESP3); nil when the block timed out.
fn read_reply(topic: &str, reply: Value, out: &mut Vec<Entry>) {
    if let Value::Map(streams) = reply {
        for (_, list) in streams {
            entries(topic, list, out);
        }
        return;
    }
    for stream in items(reply) {
        if let Some(list) = items(stream).into_iter().nth(1) {
            entries(topic, list, out);
        }
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
        trim(&mut cmd, &self.settings, SystemTime::now());
        cmd.arg("*");
        entry_fields(&mut cmd, &msg);
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
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let consumer = Consumer {
            topic: sub.topic,
            group,
            settings: s.clone(),
            conn: self.conn.clone(),
            handler,
            acks,
            in_flight: Default::default(),
        };
        let task = tokio::spawn(consumer.run(reader, acks_rx, stopped));
        Ok(Subscribed::new(stop, task))
    }
}

/// Most entries one `XACK` names.
const ACK_BATCH: usize = 256;

/// One subscription's reading, claiming and acknowledging.
struct Consumer {
    topic: String,
    group: String,
    settings: Settings,
    conn: Conn,
    handler: Handler,
    /// Ids of entries handled, for the acknowledging task.
    acks: mpsc::UnboundedSender<String>,
    /// Entries being delivered or acknowledged, so a claim does not start
    /// them twice here.
    in_flight: std::sync::Mutex<HashSet<String>>,
}

impl Consumer {
    async fn run(
        self,
        mut reader: Conn,
        acks: mpsc::UnboundedReceiver<String>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let this = Arc::new(self);
        let acking = tokio::spawn(this.clone().acknowledge(acks));
        let mut workers = Workers::new(this.settings.concurrency);
        let mut read = ::redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(&this.group)
            .arg(&this.settings.consumer)
            .arg("COUNT")
            .arg(this.settings.queue_depth)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&this.topic)
            .arg(">");
        let mut claim_at = tokio::time::Instant::now() + this.settings.redeliver_interval;
        let mut failures = 0u32;
        let mut entries = Vec::new();
        while !*stopped.borrow() {
            if !this.settings.redeliver_interval.is_zero() && tokio::time::Instant::now() >= claim_at {
                claim_at = tokio::time::Instant::now() + this.settings.redeliver_interval;
                if let Err(e) = this.claim(&mut reader, &mut entries).await {
                    tracing::warn!(topic = %this.topic, error = %e, "claiming pending messages failed")
                }
            }
            let reply = tokio::select! {
                _ = stopped.wait_for(|v| *v) => break,
                r = read.query_async::<Value>(&mut reader) => r,
            };
            match reply {
                Ok(reply) => {
                    failures = 0;
                    read_reply(&this.topic, reply, &mut entries);
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
            for Entry { id, msg } in entries.drain(..) {
                if !crate::lock(&this.in_flight).insert(id.clone()) {
                    continue;
                }
                let Some(msg) = msg else {
                    // Deleted from the stream: nothing to deliver, only to
                    // take off the pending list.
                    let _ = this.acks.send(id);
                    continue;
                };
                let this = this.clone();
                workers.spawn(async move { this.deliver(id, msg).await }).await;
            }
        }
        workers.drain().await;
        // The last acknowledgements go out before the subscription has stopped.
        drop(this);
        let _ = acking.await;
    }

    async fn deliver(&self, id: String, msg: Message) {
        if (self.handler)(msg).await.is_ok() {
            let _ = self.acks.send(id);
        } else {
            crate::lock(&self.in_flight).remove(&id);
        }
    }

    /// Acknowledges handled entries: those that arrive while one `XACK` is
    /// on its way go together in the next, so a busy subscription sends
    /// one command for many entries and an idle one waits for nothing.
    /// Ends when every sender (the consumer and its deliveries) is gone.
    async fn acknowledge(self: Arc<Self>, mut acks: mpsc::UnboundedReceiver<String>) {
        let this = Arc::downgrade(&self);
        let (topic, group, mut conn) = (self.topic.clone(), self.group.clone(), self.conn.clone());
        drop(self);
        let mut ids = Vec::with_capacity(ACK_BATCH);
        while acks.recv_many(&mut ids, ACK_BATCH).await > 0 {
            let mut cmd = ::redis::cmd("XACK");
            cmd.arg(&topic).arg(&group).arg(&ids);
            if let Err(e) = cmd.query_async::<Value>(&mut conn).await {
                // The entries stay pending and are claimed again: at least once.
                tracing::warn!(%topic, entries = ids.len(), error = %e, "acknowledging failed");
            }
            if let Some(this) = this.upgrade() {
                let mut in_flight = crate::lock(&this.in_flight);
                for id in &ids {
                    in_flight.remove(id);
                }
            }
            ids.clear();
        }
    }

    /// Entries pending longer than `processingTimeout`, now this consumer's.
    async fn claim(&self, conn: &mut Conn, out: &mut Vec<Entry>) -> ::redis::RedisResult<()> {
        let idle = self.settings.processing_timeout.as_millis() as u64;
        let reply: Value = ::redis::cmd("XAUTOCLAIM")
            .arg(&self.topic)
            .arg(&self.group)
            .arg(&self.settings.consumer)
            .arg(idle)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.settings.queue_depth)
            .query_async(conn)
            .await?;
        // `[next cursor, entries, ids deleted meanwhile]`.
        if let Some(list) = items(reply).into_iter().nth(1) {
            entries(&self.topic, list, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    /// The arguments a command was given after its name.
    fn args(cmd: &::redis::Cmd) -> Vec<&[u8]> {
        cmd.args_iter()
            .skip(1)
            .map(|a| match a {
                ::redis::Arg::Simple(b) => b,
                _ => &[],
            })
            .collect()
    }

    #[test]
    fn trimming_by_length_or_age() {
        let args = |settings: &Settings| {
            let mut cmd = ::redis::cmd("XADD");
            trim(&mut cmd, settings, UNIX_EPOCH + Duration::from_secs(100));
            args(&cmd)
                .into_iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        };
        let mut s = Settings {
            consumer: "c".into(),
            queue_depth: 1,
            concurrency: 1,
            processing_timeout: Duration::ZERO,
            redeliver_interval: Duration::ZERO,
            max_len_approx: None,
            stream_ttl: None,
        };
        assert!(args(&s).is_empty());
        s.stream_ttl = Some(Duration::from_secs(30));
        assert_eq!(args(&s), ["MINID", "~", "70000"]);
        s.stream_ttl = Some(Duration::from_secs(1000));
        assert_eq!(
            args(&s),
            ["MINID", "~", "0"],
            "a TTL longer than the clock keeps all"
        );
        s.max_len_approx = Some(5);
        assert_eq!(
            args(&s),
            ["MAXLEN", "~", "5"],
            "a length limit comes first, as in Dapr"
        );
    }

    #[test]
    fn entries_round_trip() {
        let msg = Message {
            topic: "t".into(),
            data: Bytes::from_static(b"{\"a\":1}"),
            content_type: None,
            metadata: Metadata::from([("k".to_string(), "v".to_string())]),
        };
        let mut cmd = ::redis::cmd("XADD");
        entry_fields(&mut cmd, &msg);
        let fields: Vec<Value> = args(&cmd).into_iter().map(bulk).collect();
        assert_eq!(fields.len(), 4);
        let list = || {
            Value::Array(vec![
                Value::Array(vec![bulk(b"1-0"), Value::Array(fields.clone())]),
                Value::Array(vec![bulk(b"2-0"), Value::Nil]),
            ])
        };
        let want = vec![
            Entry {
                id: "1-0".into(),
                msg: Some(msg),
            },
            Entry {
                id: "2-0".into(),
                msg: None,
            },
        ];
        let resp2 = Value::Array(vec![Value::Array(vec![bulk(b"t"), list()])]);
        let resp3 = Value::Map(vec![(bulk(b"t"), list())]);
        for reply in [resp2, resp3] {
            let mut out = Vec::new();
            read_reply("t", reply, &mut out);
            assert_eq!(out, want);
        }
        // A timed-out block, and replies of no expected shape, give nothing.
        for reply in [Value::Nil, Value::Int(3), Value::Array(vec![Value::Int(1)])] {
            let mut out = Vec::new();
            read_reply("t", reply, &mut out);
            assert!(out.is_empty());
        }
    }
}
