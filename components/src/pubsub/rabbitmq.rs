//! `pubsub.rabbitmq`: AMQP 0-9-1. A topic is an exchange (`exchangeKind`,
//! fanout by default); each consumer group reads its own queue
//! `<consumerID>-<topic>` (or the subscription's `queueName`) bound to it,
//! so the group's subscribers share the queue and every group gets every
//! message. Queues and exchanges follow `durable` and `deletedWhenUnused`.
//! A publish waits for the broker's confirm. A delivery is acknowledged
//! after the handler succeeded; a failure is rejected, back onto the queue
//! when `requeueInFailure` is set, else to the dead-letter queue when
//! `enableDeadLetter` is set; with `autoAck` nothing is answered and a
//! message is delivered at most once. Messages expire in the queue after
//! `ttlInSeconds` (the publish's, else the component's), and queues hold at
//! most `maxLen` messages or `maxLenBytes` bytes. Lost connections are made
//! again after `reconnectWaitSeconds`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    tcp::{OwnedIdentity, OwnedTLSConfig},
    types::{AMQPValue, FieldTable},
    uri::{AMQPScheme, AMQPUri, SASLMechanism},
};
use tokio::sync::watch;

use super::{CONSUMER_ID, Handler, Message, PubSub, Subscribed, Subscription, Workers};
use crate::{Error, Metadata, Result, meta, meta_duration, meta_num, meta_opt_num};

#[derive(Clone)]
struct Settings {
    uri: AMQPUri,
    /// TLS for `amqps://`: trust roots and the client certificate.
    tls: OwnedTLSConfig,
    consumer: String,
    durable: bool,
    delete_when_unused: bool,
    requeue_in_failure: bool,
    dead_letter: bool,
    persistent: bool,
    prefetch: u16,
    exchange_kind: ExchangeKind,
    concurrency: usize,
    /// Queue limits (`maxLen`, `maxLenBytes`): past them the oldest go.
    max_len: Option<u64>,
    max_len_bytes: Option<u64>,
    /// `clientName`: the connection's name in the broker's management UI.
    client_name: Option<String>,
    /// `autoAck`: the broker counts a message delivered once it is sent
    /// (at most once); nothing is acknowledged or requeued.
    auto_ack: bool,
    /// `reconnectWaitSeconds`: the pause before connecting again.
    reconnect_wait: Duration,
    /// `ttlInSeconds`: how long a message waits in a queue unless its
    /// publish says otherwise.
    ttl: Option<u64>,
}

/// Message time to live, in the component's and in a publish's metadata.
const TTL: &str = "ttlInSeconds";

/// The broker.
pub struct RabbitBroker {
    settings: Settings,
    /// The publishing channel (confirms on), made again when it breaks.
    publisher: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

impl RabbitBroker {
    /// Reads `connectionString` (or `hostname`, `username`, `password`),
    /// TLS (`caCert`, `clientCert`, `clientKey`, `saslExternal`) and Dapr's options.
    pub async fn connect(metadata: &Metadata) -> std::result::Result<Self, String> {
        let uri = match meta(metadata, "connectionString") {
            Some(c) => c.to_string(),
            None => {
                let host =
                    meta(metadata, "hostname").ok_or("metadata connectionString or hostname is required")?;
                let scheme = meta(metadata, "protocol").unwrap_or("amqp");
                match (meta(metadata, "username"), meta(metadata, "password")) {
                    (Some(u), Some(p)) => format!("{scheme}://{u}:{p}@{host}"),
                    _ => format!("{scheme}://{host}"),
                }
            }
        };
        let flag = |k: &str, default: bool| meta(metadata, k).map_or(default, daprs_api::contract::truthy);
        let (mut uri, tls) = tls(&uri, metadata, flag("saslExternal", false))?;
        // A heartbeat in the connection string stands unless `heartBeat` is given.
        if meta(metadata, "heartBeat").is_some() || uri.query.heartbeat.is_none() {
            let heartbeat = meta_duration(metadata, "heartBeat", Duration::from_secs(10))?;
            uri.query.heartbeat = Some(u16::try_from(heartbeat.as_secs()).unwrap_or(u16::MAX));
        }
        let exchange_kind = match meta(metadata, "exchangeKind").unwrap_or("fanout") {
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "direct" => ExchangeKind::Direct,
            "headers" => ExchangeKind::Headers,
            other => {
                return Err(format!(
                    "exchangeKind {other:?} is not one of fanout, topic, direct, headers"
                ));
            }
        };
        let settings = Settings {
            uri,
            tls,
            consumer: meta(metadata, CONSUMER_ID).unwrap_or("daprs").to_string(),
            durable: flag("durable", false),
            delete_when_unused: flag("deletedWhenUnused", true),
            requeue_in_failure: flag("requeueInFailure", false),
            dead_letter: flag("enableDeadLetter", false),
            persistent: meta_num(metadata, "deliveryMode", 0u8)? == 2,
            prefetch: meta_num(metadata, "prefetchCount", 0u16)?,
            exchange_kind,
            concurrency: meta_num(metadata, "concurrency", 16usize)?.max(1),
            max_len: meta_opt_num(metadata, "maxLen")?,
            max_len_bytes: meta_opt_num(metadata, "maxLenBytes")?,
            client_name: meta(metadata, "clientName").map(str::to_string),
            auto_ack: flag("autoAck", false),
            reconnect_wait: Duration::from_secs(meta_num(metadata, "reconnectWaitSeconds", 3u64)?),
            ttl: meta_opt_num(metadata, TTL)?,
        };
        let broker = Self {
            settings,
            publisher: tokio::sync::Mutex::new(None),
        };
        // Fail the component at start when the broker is not there.
        broker
            .publishing_channel()
            .await
            .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
        Ok(broker)
    }

    /// The publishing channel, connecting first when there is none or it broke.
    async fn publishing_channel(&self) -> Result<Channel> {
        let mut slot = self.publisher.lock().await;
        if let Some((conn, ch)) = slot.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let (conn, ch) = open(&self.settings).await?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(backend)?;
        *slot = Some((conn, ch.clone()));
        Ok(ch)
    }
}

/// The connection string parsed, with SASL EXTERNAL when asked for, and the
/// TLS it is opened with: `amqps://` trusts the system's roots and `caCert`
/// and presents `clientCert`/`clientKey` when given; certificates
/// with `amqp://` are refused, since they would not be used.
fn tls(
    uri: &str,
    metadata: &Metadata,
    sasl_external: bool,
) -> std::result::Result<(AMQPUri, OwnedTLSConfig), String> {
    let mut uri: AMQPUri = uri
        .parse()
        .map_err(|e| format!("the connection string is not an AMQP URI: {e}"))?;
    let client = crate::meta_pair(metadata, "clientCert", "clientKey")?;
    let ca = meta(metadata, "caCert");
    if uri.scheme != AMQPScheme::AMQPS {
        if ca.is_some() || client.is_some() || sasl_external {
            return Err(
                "caCert, clientCert, clientKey and saslExternal need an amqps:// connection string".into(),
            );
        }
        return Ok((uri, OwnedTLSConfig::default()));
    }
    if sasl_external {
        if client.is_none() {
            return Err(
                "saslExternal needs clientCert and clientKey: the broker reads the user from the certificate"
                    .into(),
            );
        }
        uri.query.auth_mechanism = Some(SASLMechanism::External);
    }
    let tls = OwnedTLSConfig {
        identity: client.map(|(cert, key)| OwnedIdentity::PKCS8 {
            pem: cert.as_bytes().to_vec(),
            key: key.as_bytes().to_vec(),
        }),
        // Added to the system's roots.
        cert_chain: ca.map(str::to_string),
    };
    Ok((uri, tls))
}

async fn open(s: &Settings) -> Result<(Connection, Channel)> {
    let runtime = lapin::runtime::default_runtime().map_err(backend)?;
    let mut props = ConnectionProperties::default();
    if let Some(name) = &s.client_name {
        props = props.with_connection_name(name.as_str().into());
    }
    let conn = Connection::connect_uri_with_config(s.uri.clone(), props, s.tls.clone(), runtime)
        .await
        .map_err(backend)?;
    let channel = conn.create_channel().await.map_err(backend)?;
    Ok((conn, channel))
}

/// The topic's exchange, as the settings shape it.
async fn declare_exchange(ch: &Channel, s: &Settings, topic: &str) -> Result<()> {
    let opts = ExchangeDeclareOptions {
        durable: s.durable,
        auto_delete: s.delete_when_unused,
        ..Default::default()
    };
    ch.exchange_declare(topic.into(), s.exchange_kind.clone(), opts, FieldTable::default())
        .await
        .map_err(backend)
}

fn headers(metadata: &Metadata) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in metadata {
        t.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    t
}

fn metadata_of(props: &BasicProperties) -> Metadata {
    let mut out = Metadata::new();
    if let Some(h) = props.headers() {
        for (k, v) in h {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.to_string(),
                other => format!("{other:?}"),
            };
            out.insert(k.to_string(), text);
        }
    }
    out
}

#[async_trait]
impl PubSub for RabbitBroker {
    fn features(&self) -> &'static [&'static str] {
        &["MESSAGE_TTL"]
    }

    async fn publish(&self, msg: Message) -> Result<()> {
        let ch = self.publishing_channel().await?;
        declare_exchange(&ch, &self.settings, &msg.topic).await?;
        let routing_key = meta(&msg.metadata, "routingKey").unwrap_or_default().to_string();
        let mut props = BasicProperties::default().with_headers(headers(&msg.metadata));
        if let Some(ct) = &msg.content_type {
            props = props.with_content_type(ct.as_str().into());
        }
        if self.settings.persistent {
            props = props.with_delivery_mode(2);
        }
        // RabbitMQ drops the message once it has waited this long.
        let ttl = meta_opt_num::<u64>(&msg.metadata, TTL)
            .map_err(Error::Invalid)?
            .or(self.settings.ttl);
        if let Some(secs) = ttl {
            props = props.with_expiration(secs.saturating_mul(1000).to_string().into());
        }
        let confirm = ch
            .basic_publish(
                msg.topic.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &msg.data,
                props,
            )
            .await
            .map_err(backend)?
            .await
            .map_err(backend)?;
        if confirm.is_nack() {
            return Err(Error::Backend(format!(
                "RabbitMQ refused the message for {}",
                msg.topic
            )));
        }
        Ok(())
    }

    async fn subscribe(&self, sub: Subscription, handler: Handler) -> Result<Subscribed> {
        let group = meta(&sub.metadata, CONSUMER_ID).unwrap_or(&self.settings.consumer);
        let queue =
            meta(&sub.metadata, "queueName").map_or_else(|| format!("{group}-{}", sub.topic), str::to_string);
        let routing_keys: Vec<String> = meta(&sub.metadata, "routingKey")
            .unwrap_or_default()
            .split(',')
            .map(|k| k.trim().to_string())
            .collect();
        let consumer = QueueConsumer {
            settings: self.settings.clone(),
            topic: sub.topic,
            queue,
            routing_keys,
            handler,
        };
        // The first connection is made here, so a subscription that cannot
        // exist fails now, and an auto-deleted queue has had its consumer.
        let first = consumer.connect().await?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(consumer.run(Some(first), stopped));
        Ok(Subscribed::new(stop, task))
    }
}

/// One subscription's queue and its consuming loop.
struct QueueConsumer {
    settings: Settings,
    topic: String,
    queue: String,
    routing_keys: Vec<String>,
    handler: Handler,
}

impl QueueConsumer {
    async fn declare(&self, ch: &Channel) -> Result<()> {
        let s = &self.settings;
        declare_exchange(ch, s, &self.topic).await?;
        let mut args = FieldTable::default();
        if s.dead_letter {
            let dlx = format!("dlx-{}", self.queue);
            ch.exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: s.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
            let dlq = format!("dlq-{}", self.queue);
            ch.queue_declare(
                dlq.as_str().into(),
                QueueDeclareOptions {
                    durable: s.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
            ch.queue_bind(
                dlq.as_str().into(),
                dlx.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(dlx.as_str().into()),
            );
        }
        for (arg, limit) in [
            ("x-max-length", s.max_len),
            ("x-max-length-bytes", s.max_len_bytes),
        ] {
            if let Some(n) = limit {
                args.insert(
                    arg.into(),
                    AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX)),
                );
            }
        }
        let opts = QueueDeclareOptions {
            durable: s.durable,
            auto_delete: s.delete_when_unused,
            ..Default::default()
        };
        ch.queue_declare(self.queue.as_str().into(), opts, args)
            .await
            .map_err(backend)?;
        for key in &self.routing_keys {
            ch.queue_bind(
                self.queue.as_str().into(),
                self.topic.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
        }
        Ok(())
    }

    /// Connects, declares and starts consuming.
    async fn connect(&self) -> Result<(Connection, lapin::Consumer)> {
        let (conn, ch) = open(&self.settings).await?;
        self.declare(&ch).await?;
        let prefetch = if self.settings.prefetch > 0 {
            self.settings.prefetch
        } else {
            self.settings.concurrency.min(u16::MAX as usize) as u16
        };
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(backend)?;
        let consumer = ch
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: self.settings.auto_ack,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
        Ok((conn, consumer))
    }

    /// Consumes until stopped, connecting again after a failure.
    async fn run(self, mut first: Option<(Connection, lapin::Consumer)>, mut stopped: watch::Receiver<bool>) {
        let this = std::sync::Arc::new(self);
        let mut workers = Workers::new(this.settings.concurrency);
        while !*stopped.borrow() {
            let opened = match first.take() {
                Some(c) => Ok(c),
                None => this.connect().await,
            };
            let (conn, mut deliveries) = match opened {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(queue = %this.queue, error = %e, "RabbitMQ unavailable; trying again");
                    tokio::select! {
                        _ = stopped.wait_for(|v| *v) => break,
                        () = tokio::time::sleep(this.settings.reconnect_wait) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = stopped.wait_for(|v| *v) => break,
                    d = deliveries.next() => d,
                };
                let Some(Ok(d)) = next else {
                    tracing::warn!(queue = %this.queue, "RabbitMQ connection lost; connecting again");
                    break;
                };
                let this = this.clone();
                workers
                    .spawn(async move {
                        let msg = Message {
                            topic: this.topic.clone(),
                            data: Bytes::from(d.data.clone()),
                            content_type: d.properties.content_type().as_ref().map(|c| c.to_string()),
                            metadata: metadata_of(&d.properties),
                        };
                        let handled = (this.handler)(msg).await;
                        if this.settings.auto_ack {
                            return;
                        }
                        let answered = match handled {
                            Ok(()) => d.ack(BasicAckOptions::default()).await,
                            Err(_) => {
                                // A pause keeps a failing message from spinning.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                let requeue = this.settings.requeue_in_failure;
                                d.nack(BasicNackOptions {
                                    requeue,
                                    multiple: false,
                                })
                                .await
                            }
                        };
                        if let Err(e) = answered {
                            tracing::warn!(error = %e, "answering RabbitMQ failed; the message comes back");
                        }
                    })
                    .await;
            }
            // Deliveries in flight answer on this channel: let them finish first.
            std::mem::replace(&mut workers, Workers::new(this.settings.concurrency))
                .drain()
                .await;
            let _ = conn.close(0, "stopping".into()).await;
        }
        workers.drain().await;
    }
}
