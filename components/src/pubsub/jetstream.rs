//! `pubsub.jetstream`: NATS JetStream. A topic is a subject; messages are
//! kept in the stream `streamName` (created when absent, and given each
//! topic's subject as it is used) or, without it, in one stream per topic.
//! Each consumer group is a durable pull consumer (`durableName`, else the
//! `consumerID`) filtered to the topic: subscribers of one group pull from
//! it in turn, so they share the messages; each group gets all of them.
//! A message is acknowledged after the handler succeeded; a failure is a
//! NAK with a growing delay, so JetStream delivers it again. A publish
//! returns once the stream stored the message. Metadata travels as headers.
//!
//! The consumer options Dapr documents: `backOff` (the pauses before each
//! redelivery of a failed message, the last repeating), `ackPolicy`
//! (`explicit`, `all`, or `none`: delivered at most once), `replicas`,
//! `memoryStorage`, `heartbeat` (the idle heartbeat of each pull),
//! `rateLimit` (bits per second, paced here because the server takes it only
//! for push consumers), `queueGroupName` (the group, when no durable is
//! named), and the JetStream `domain` or `apiPrefix`. `flowControl` belongs
//! to push consumers and has no effect on these pull consumers.

use std::{collections::HashSet, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{
        self, AckKind,
        consumer::{DeliverPolicy, pull},
        stream,
    },
};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{CONSUMER_ID, Handler, Message, PubSub, Subscribed, Subscription, Workers, redelivery_pause};
use crate::{Error, Metadata, Result, lock, meta, meta_duration, meta_num, meta_opt_num};

/// The longest pause before a failed message is handed over again.
const LONGEST_PAUSE: Duration = Duration::from_millis(3200);

#[derive(Debug, Clone)]
struct Settings {
    stream_name: Option<String>,
    durable: Option<String>,
    consumer: String,
    ack_wait: Duration,
    max_deliver: i64,
    max_ack_pending: Option<i64>,
    deliver_policy: DeliverPolicy,
    concurrency: usize,
    back_off: Vec<Duration>,
    ack_policy: jetstream::consumer::AckPolicy,
    replicas: usize,
    memory_storage: bool,
    heartbeat: Option<Duration>,
    /// Bytes per second handed to the app.
    rate: Option<u64>,
    queue_group: Option<String>,
}

/// `backOff`: durations separated by commas (`50ms, 1s, 10s`).
fn back_off(metadata: &Metadata) -> std::result::Result<Vec<Duration>, String> {
    let Some(v) = meta(metadata, "backOff") else {
        return Ok(Vec::new());
    };
    v.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            crate::parse_duration(d)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("backOff: {d:?} is not a positive duration (write 50ms, 1s, 10s)"))
        })
        .collect()
}

/// `ackPolicy`.
fn ack_policy(metadata: &Metadata) -> std::result::Result<jetstream::consumer::AckPolicy, String> {
    use jetstream::consumer::AckPolicy;
    Ok(match meta(metadata, "ackPolicy").unwrap_or("explicit") {
        "explicit" => AckPolicy::Explicit,
        "all" => AckPolicy::All,
        "none" => AckPolicy::None,
        other => return Err(format!("ackPolicy {other:?} is not one of explicit, all, none")),
    })
}

/// `deliverPolicy` (with `startSequence` or `startTime`, Unix seconds), as Dapr reads them.
fn deliver_policy(metadata: &Metadata) -> std::result::Result<DeliverPolicy, String> {
    Ok(match meta(metadata, "deliverPolicy").unwrap_or("all") {
        "all" => DeliverPolicy::All,
        "new" => DeliverPolicy::New,
        "last" => DeliverPolicy::Last,
        "sequence" => DeliverPolicy::ByStartSequence {
            start_sequence: meta(metadata, "startSequence")
                .ok_or("deliverPolicy sequence needs startSequence")?
                .trim()
                .parse()
                .map_err(|_| "startSequence must be a whole number".to_string())?,
        },
        "time" => {
            let secs: i64 = meta(metadata, "startTime")
                .ok_or("deliverPolicy time needs startTime (Unix seconds)")?
                .trim()
                .parse()
                .map_err(|_| "startTime must be Unix seconds".to_string())?;
            DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp(secs)
                    .map_err(|_| format!("startTime {secs} is out of range"))?,
            }
        }
        other => {
            return Err(format!(
                "deliverPolicy {other:?} is not one of all, new, last, sequence, time"
            ));
        }
    })
}

/// The broker.
pub struct JetStreamBroker {
    js: jetstream::Context,
    settings: Settings,
    /// Topics whose stream is known to take them.
    ready: std::sync::Mutex<HashSet<String>>,
}

/// A JetStream name (streams, durables) from free text: `.`, `*`, `>`,
/// spaces and path separators are not allowed.
fn nats_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The user and password (or token) of the first server in `natsURL`
/// (`nats://user:pw@host:4222,nats://host2:4222`), percent-decoded.
fn url_credentials(url: &str) -> Option<(String, Option<String>)> {
    let first = url.split(',').next()?.trim();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    Some(match userinfo.split_once(':') {
        Some((u, p)) => (crate::percent_decode(u), Some(crate::percent_decode(p))),
        None => (crate::percent_decode(userinfo), None),
    })
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

impl JetStreamBroker {
    /// Connects to `natsURL`.
    pub async fn connect(metadata: &Metadata) -> std::result::Result<Self, String> {
        let url = meta(metadata, "natsURL").ok_or("metadata natsURL is required (nats://host:4222)")?;
        let mut opts = async_nats::ConnectOptions::new()
            .name(meta(metadata, "name").unwrap_or("dapr.io - pubsub.jetstream"))
            .connection_timeout(Duration::from_secs(5));
        // The client library does not read credentials from the URL, so
        // they are read here: `user:password@` or, alone, a token.
        match url_credentials(url) {
            Some((user, Some(password))) => opts = opts.user_and_password(user, password),
            Some((token, None)) => opts = opts.token(token),
            None => {}
        }
        if let Some(token) = meta(metadata, "token") {
            opts = opts.token(token.to_string());
        }
        // TLS: a `tls://` URL or a server that asks for it; the server is
        // checked against the system's roots.
        if let Some((cert, key)) = crate::meta_pair(metadata, "tls_client_cert", "tls_client_key")? {
            for (what, path) in [("tls_client_cert", cert), ("tls_client_key", key)] {
                if !std::path::Path::new(path).is_file() {
                    return Err(format!("{what} {path:?} is not a readable file"));
                }
            }
            opts = opts.add_client_certificate(cert.into(), key.into());
        }
        // Decentralised authentication: the user's JWT, and the server's
        // nonce signed with the user's seed at every connect.
        if let Some((jwt, seed)) = crate::meta_pair(metadata, "jwt", "seedKey")? {
            let key = nkeys::KeyPair::from_seed(seed.trim())
                .map_err(|e| format!("seedKey is not a NATS user seed (SU...): {e}"))?;
            let key = std::sync::Arc::new(key);
            opts = opts.jwt(jwt.trim().to_string(), move |nonce| {
                let key = key.clone();
                async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
            });
        }
        if meta(metadata, "flowControl").is_some_and(daprs_api::contract::truthy) {
            tracing::info!(
                "pubsub.jetstream: flowControl is for push consumers and has no effect on pull consumers"
            );
        }
        let client = opts
            .connect(url)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        let rate_bits: u64 = meta_num(metadata, "rateLimit", 0)?;
        let settings = Settings {
            stream_name: meta(metadata, "streamName").map(str::to_string),
            durable: meta(metadata, "durableName").map(nats_name),
            consumer: meta(metadata, CONSUMER_ID).unwrap_or("daprs").to_string(),
            ack_wait: meta_duration(metadata, "ackWait", Duration::from_secs(30))?,
            max_deliver: meta_num(metadata, "maxDeliver", -1i64)?,
            max_ack_pending: meta_opt_num(metadata, "maxAckPending")?,
            deliver_policy: deliver_policy(metadata)?,
            concurrency: meta_num(metadata, "concurrency", 16usize)?.max(1),
            back_off: back_off(metadata)?,
            ack_policy: ack_policy(metadata)?,
            replicas: meta_num(metadata, "replicas", 0usize)?,
            memory_storage: meta(metadata, "memoryStorage").is_some_and(daprs_api::contract::truthy),
            heartbeat: match meta(metadata, "heartbeat") {
                Some(_) => {
                    Some(meta_duration(metadata, "heartbeat", Duration::ZERO)?).filter(|d| !d.is_zero())
                }
                None => None,
            },
            rate: (rate_bits > 0).then(|| (rate_bits / 8).max(1)),
            queue_group: meta(metadata, "queueGroupName").map(nats_name),
        };
        let js = match (meta(metadata, "domain"), meta(metadata, "apiPrefix")) {
            (Some(domain), _) => jetstream::with_domain(client, domain),
            (None, Some(prefix)) => jetstream::with_prefix(client, prefix),
            (None, None) => jetstream::new(client),
        };
        Ok(Self {
            js,
            settings,
            ready: Default::default(),
        })
    }

    fn stream_for(&self, topic: &str) -> String {
        match &self.settings.stream_name {
            Some(s) => s.clone(),
            None => format!("DAPR_{}", nats_name(topic)),
        }
    }

    /// The stream that keeps `topic`, created or widened when needed.
    async fn ensure_stream(&self, topic: &str) -> Result<stream::Stream> {
        let name = self.stream_for(topic);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![topic.to_string()],
            ..Default::default()
        };
        let mut s = self.js.get_or_create_stream(config).await.map_err(backend)?;
        if !lock(&self.ready).contains(topic) {
            let info = s.info().await.map_err(backend)?;
            if !info.config.subjects.iter().any(|sub| sub == topic) {
                let mut config = info.config.clone();
                config.subjects.push(topic.to_string());
                self.js.update_stream(&config).await.map_err(backend)?;
            }
            lock(&self.ready).insert(topic.to_string());
        }
        Ok(s)
    }
}

#[async_trait]
impl PubSub for JetStreamBroker {
    fn features(&self) -> &'static [&'static str] {
        &[]
    }

    async fn publish(&self, msg: Message) -> Result<()> {
        if !lock(&self.ready).contains(&msg.topic) {
            self.ensure_stream(&msg.topic).await?;
        }
        // Without metadata the message goes without a header block at all.
        let ack = if msg.metadata.is_empty() {
            self.js.publish(msg.topic, msg.data).await
        } else {
            let mut headers = HeaderMap::new();
            for (k, v) in &msg.metadata {
                headers.insert(k.as_str(), v.as_str());
            }
            self.js.publish_with_headers(msg.topic, headers, msg.data).await
        }
        .map_err(backend)?;
        ack.await.map_err(backend)?;
        Ok(())
    }

    async fn subscribe(&self, sub: Subscription, handler: Handler) -> Result<Subscribed> {
        let s = &self.settings;
        let group = meta(&sub.metadata, "durableName")
            .map(nats_name)
            .or_else(|| meta(&sub.metadata, CONSUMER_ID).map(nats_name))
            .or_else(|| s.durable.clone())
            .or_else(|| s.queue_group.clone())
            .unwrap_or_else(|| nats_name(&s.consumer));
        // One durable per group and topic: a durable is filtered to one subject.
        let durable = if s.stream_name.is_some() {
            format!("{group}_{}", nats_name(&sub.topic))
        } else {
            group
        };
        let stream = self.ensure_stream(&sub.topic).await?;
        let config = pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: sub.topic.clone(),
            ack_policy: s.ack_policy,
            ack_wait: s.ack_wait,
            max_deliver: s.max_deliver,
            deliver_policy: s.deliver_policy,
            max_ack_pending: s.max_ack_pending.unwrap_or_default(),
            backoff: s.back_off.clone(),
            num_replicas: s.replicas,
            memory_storage: s.memory_storage,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(backend)?;
        let mut pull = consumer.stream();
        if let Some(h) = s.heartbeat {
            pull = pull.heartbeat(h);
        }
        let mut messages = pull.messages().await.map_err(backend)?;
        let answers = !matches!(s.ack_policy, jetstream::consumer::AckPolicy::None);
        // Shared by the deliveries, so none copies the list.
        let back_off: std::sync::Arc<[Duration]> = s.back_off.clone().into();
        let mut pace = s.rate.map(Pace::new);
        let (stop, mut stopped) = watch::channel(false);
        let concurrency = s.concurrency;
        let topic = sub.topic;
        let task = tokio::spawn(async move {
            let mut workers = Workers::new(concurrency);
            loop {
                let next = tokio::select! {
                    _ = stopped.wait_for(|v| *v) => break,
                    m = messages.next() => m,
                };
                let m = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(%topic, error = %e, "JetStream pull failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    None => break,
                };
                if let Some(p) = pace.as_mut() {
                    tokio::select! {
                        _ = stopped.wait_for(|v| *v) => break,
                        () = p.admit(m.payload.len()) => {}
                    }
                }
                let handler = handler.clone();
                let back_off = back_off.clone();
                workers
                    .spawn(async move {
                        let metadata = m
                            .headers
                            .iter()
                            .flat_map(|h| h.iter())
                            .filter_map(|(k, v)| Some((k.to_string(), v.first()?.to_string())))
                            .collect();
                        let msg = Message {
                            topic: m.subject.to_string(),
                            data: m.payload.clone(),
                            content_type: None,
                            metadata,
                        };
                        let handled = handler(msg).await;
                        if !answers {
                            return;
                        }
                        let outcome = match handled {
                            Ok(()) => m.ack().await,
                            Err(_) => {
                                // Read from the reply subject only when needed.
                                let delivered = m.info().map_or(1, |i| i.delivered).max(1);
                                let attempt = usize::try_from(delivered - 1).unwrap_or(usize::MAX);
                                let pause = match back_off.last() {
                                    Some(last) => *back_off.get(attempt).unwrap_or(last),
                                    None => redelivery_pause(
                                        u32::try_from(attempt).unwrap_or(u32::MAX),
                                        LONGEST_PAUSE,
                                    ),
                                };
                                m.ack_with(AckKind::Nak(Some(pause))).await
                            }
                        };
                        if let Err(e) = outcome {
                            // Unanswered, the message comes back after ackWait.
                            tracing::warn!(error = %e, "answering JetStream failed");
                        }
                    })
                    .await;
            }
            workers.drain().await;
        });
        Ok(Subscribed::new(stop, task))
    }
}

/// Paces deliveries to a byte rate (`rateLimit`).
struct Pace {
    bytes_per_s: u64,
    start: tokio::time::Instant,
    sent: u64,
}

impl Pace {
    fn new(bytes_per_s: u64) -> Self {
        Self {
            bytes_per_s,
            start: tokio::time::Instant::now(),
            sent: 0,
        }
    }

    /// Waits until `len` more bytes keep the rate since the start.
    async fn admit(&mut self, len: usize) {
        let due = Duration::from_secs_f64(self.sent as f64 / self.bytes_per_s as f64);
        tokio::time::sleep_until(self.start + due).await;
        self.sent += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_options_as_dapr_writes_them() {
        let md = |k: &str, v: &str| Metadata::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            back_off(&md("backOff", "50ms, 1s,10s")),
            Ok(vec![
                Duration::from_millis(50),
                Duration::from_secs(1),
                Duration::from_secs(10)
            ])
        );
        assert_eq!(back_off(&Metadata::new()), Ok(vec![]));
        for bad in ["soon", "1s, 0s", "1s,,x"] {
            let e = back_off(&md("backOff", bad)).err().unwrap_or_default();
            assert!(e.contains("backOff"), "{bad}: {e}");
        }
        use jetstream::consumer::AckPolicy;
        assert_eq!(ack_policy(&Metadata::new()), Ok(AckPolicy::Explicit));
        assert_eq!(ack_policy(&md("ackPolicy", "none")), Ok(AckPolicy::None));
        assert!(ack_policy(&md("ackPolicy", "some")).is_err());
    }

    #[test]
    fn credentials_in_the_url() {
        let both = |u: &str, p: &str| Some((u.to_string(), Some(p.to_string())));
        assert_eq!(url_credentials("nats://app:p%40ss@db:4222"), both("app", "p@ss"));
        assert_eq!(
            url_credentials("tls://app:pw@a:4222,nats://b:4222"),
            both("app", "pw")
        );
        assert_eq!(
            url_credentials("nats://s3cr3t@host"),
            Some(("s3cr3t".to_string(), None))
        );
        assert_eq!(url_credentials("nats://host:4222"), None);
        assert_eq!(url_credentials("nats://host:4222/path@x"), None);
    }

    #[test]
    fn deliver_policies() {
        let md = |pairs: &[(&str, &str)]| -> Metadata {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(deliver_policy(&md(&[])), Ok(DeliverPolicy::All));
        assert_eq!(
            deliver_policy(&md(&[("deliverPolicy", "last")])),
            Ok(DeliverPolicy::Last)
        );
        assert_eq!(
            deliver_policy(&md(&[("deliverPolicy", "sequence"), ("startSequence", "42")])),
            Ok(DeliverPolicy::ByStartSequence { start_sequence: 42 })
        );
        assert!(matches!(
            deliver_policy(&md(&[("deliverPolicy", "time"), ("startTime", "1700000000")])),
            Ok(DeliverPolicy::ByStartTime { start_time }) if start_time.unix_timestamp() == 1_700_000_000
        ));
        assert!(deliver_policy(&md(&[("deliverPolicy", "sequence")])).is_err());
        assert!(deliver_policy(&md(&[("deliverPolicy", "time"), ("startTime", "soon")])).is_err());
        assert!(deliver_policy(&md(&[("deliverPolicy", "first")])).is_err());
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(nats_name("orders.created"), "orders_created");
        assert_eq!(nats_name("a b/c>*"), "a_b_c__");
        assert_eq!(nats_name("app-1_x"), "app-1_x");
    }
}
