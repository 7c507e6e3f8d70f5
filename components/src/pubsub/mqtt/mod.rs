//! `pubsub.mqtt3`: an MQTT 3.1.1 broker (Mosquitto, EMQX, ...) at QoS 1.
//!
//! Each consumer group is one connection whose client id is the group
//! (`consumerID`) and whose session persists (`cleanSession: false`), so
//! the broker keeps QoS 1 messages while the sidecar is away, across broker
//! restarts too. Subscriptions of one group in one sidecar share the
//! messages; MQTT 3 has no consumer groups across connections, so replicas
//! of an app need their own `consumerID` (for example `{podName}`) and each
//! receives every message, as with Dapr. A message
//! is acknowledged (PUBACK) only after the handler succeeded; a failed one
//! is handed to the handler again after a growing pause. A publish returns
//! once the broker acknowledged it. MQTT 3 carries no per-message metadata.
//!
//! `url` is `tcp://[user[:password]@]host[:port]` (1883), or `ssl://` (also
//! `tls://`, `mqtts://`; 8883) for TLS, checked against `caCert` (PEM) or
//! the system's roots, with `clientCert`/`clientKey` for client
//! certificates.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::{oneshot, watch};

mod endpoint;

use self::endpoint::{parse_url, tls_config};
use super::{CONSUMER_ID, Handler, Message, PubSub, Subscribed, Subscription, Workers, redelivery_pause};
use crate::{Error, Metadata, Result, lock, meta, meta_num};

/// The longest pause before a failed message is handed over again.
const LONGEST_PAUSE: Duration = Duration::from_millis(3200);

/// How long a publish waits for the broker's PUBACK.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Settings {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
    consumer: String,
    qos: QoS,
    retain: bool,
    clean_session: bool,
    concurrency: usize,
}

impl Settings {
    /// Connection options for the client `id`.
    fn options(&self, id: &str) -> MqttOptions {
        let mut opts = MqttOptions::new(id, &self.host, self.port);
        opts.set_keep_alive(Duration::from_secs(20));
        if let Some((user, password)) = &self.credentials {
            opts.set_credentials(user, password);
        }
        if let Some(tls) = &self.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        opts
    }
}

/// Waiting publishes: in the order sent until the event loop numbers them,
/// then by packet id until the broker acknowledges.
#[derive(Default)]
struct Pending {
    unnumbered: VecDeque<oneshot::Sender<Result<()>>>,
    numbered: HashMap<u16, oneshot::Sender<Result<()>>>,
}

/// The broker.
pub struct MqttBroker {
    settings: Settings,
    publisher: AsyncClient,
    pending: Arc<Mutex<Pending>>,
    /// Serialises publishes, so the order sent is the order numbered.
    send: tokio::sync::Mutex<()>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    stop: watch::Sender<bool>,
}

impl Drop for MqttBroker {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl MqttBroker {
    /// Reads `url`, `consumerID`, `qos`, `retain`, `cleanSession`, `concurrency`.
    pub async fn connect(metadata: &Metadata) -> std::result::Result<Self, String> {
        let endpoint = parse_url(meta(metadata, "url").ok_or("metadata url is required (tcp://host:1883)")?)?;
        let has_tls_files = ["caCert", "clientCert", "clientKey"]
            .iter()
            .any(|k| meta(metadata, k).is_some());
        let tls = match (endpoint.tls, has_tls_files) {
            (true, _) => Some(tls_config(metadata)?),
            (false, true) => {
                return Err("caCert, clientCert and clientKey need an ssl:// url".into());
            }
            (false, false) => None,
        };
        let qos = match meta_num(metadata, "qos", 1u8)? {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            n => return Err(format!("metadata qos must be 0, 1 or 2, got {n}")),
        };
        let flag = |k: &str| meta(metadata, k).is_some_and(daprs_api::contract::truthy);
        let settings = Settings {
            host: endpoint.host,
            port: endpoint.port,
            credentials: endpoint.credentials,
            tls,
            consumer: meta(metadata, CONSUMER_ID).unwrap_or("daprs").to_string(),
            qos,
            retain: flag("retain"),
            clean_session: flag("cleanSession"),
            concurrency: meta_num(metadata, "concurrency", 16usize)?.max(1),
        };
        let mut opts = settings.options(&format!("{}-pub-{}", settings.consumer, &crate::uuid_v4()[..8]));
        opts.set_clean_session(true);
        let (publisher, mut events) = AsyncClient::new(opts, 64);
        // The first connection attempt decides whether the component starts.
        connected(&mut events)
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", settings.host, settings.port))?;
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(drive_publisher(events, pending.clone(), stopped));
        Ok(Self {
            settings,
            publisher,
            pending,
            send: tokio::sync::Mutex::new(()),
            groups: Mutex::default(),
            stop,
        })
    }

    fn group(&self, name: &str) -> Arc<Group> {
        lock(&self.groups)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Group::new(name)))
            .clone()
    }
}

/// Drives a new connection until the broker accepts it.
async fn connected(events: &mut EventLoop) -> std::result::Result<(), rumqttc::ConnectionError> {
    loop {
        if let Event::Incoming(Incoming::ConnAck(_)) = events.poll().await? {
            return Ok(());
        }
    }
}

/// Runs the publisher's event loop, pairing PUBACKs with waiting publishes.
async fn drive_publisher(
    mut events: EventLoop,
    pending: Arc<Mutex<Pending>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            _ = stopped.wait_for(|v| *v) => return,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut p = lock(&pending);
                if let Some(tx) = p.unnumbered.pop_front() {
                    if pkid == 0 {
                        // QoS 0: nothing comes back.
                        let _ = tx.send(Ok(()));
                    } else {
                        p.numbered.insert(pkid, tx);
                    }
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(tx) = lock(&pending).numbered.remove(&ack.pkid) {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Incoming::PubComp(ack))) => {
                if let Some(tx) = lock(&pending).numbered.remove(&ack.pkid) {
                    let _ = tx.send(Ok(()));
                }
            }
            Ok(_) => {}
            Err(e) => {
                // The event loop reconnects on the next poll and sends again
                // what was not acknowledged.
                tracing::warn!(error = %e, "MQTT publisher connection failed; reconnecting");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[async_trait]
impl PubSub for MqttBroker {
    fn features(&self) -> &'static [&'static str] {
        &[]
    }

    async fn publish(&self, msg: Message) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.send.lock().await;
            lock(&self.pending).unnumbered.push_back(tx);
            let sent = self
                .publisher
                .publish(
                    msg.topic.clone(),
                    self.settings.qos,
                    self.settings.retain,
                    msg.data.to_vec(),
                )
                .await;
            if let Err(e) = sent {
                lock(&self.pending).unnumbered.pop_back();
                return Err(Error::Invalid(format!("cannot publish to {}: {e}", msg.topic)));
            }
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Backend(format!(
                "the MQTT broker did not acknowledge a publish to {} within {PUBLISH_TIMEOUT:?}",
                msg.topic
            ))),
        }
    }

    async fn subscribe(&self, sub: Subscription, handler: Handler) -> Result<Subscribed> {
        let name = meta(&sub.metadata, CONSUMER_ID)
            .unwrap_or(&self.settings.consumer)
            .to_string();
        let group = self.group(&name);
        let token = group.add(&sub.topic, handler);
        group.start(&self.settings).await?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = stopped.wait_for(|v| *v).await;
            group.remove(token).await;
        });
        Ok(Subscribed::new(stop, task))
    }
}

type Handlers = HashMap<String, Vec<(u64, Handler)>>;

/// One consumer group's connection and the handlers of its topics.
struct Group {
    name: String,
    handlers: Arc<Mutex<Handlers>>,
    next: std::sync::atomic::AtomicU64,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    client: AsyncClient,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    subscribed: Vec<String>,
}

/// The filter a group subscribes with: the topic itself. Shared
/// subscriptions (`$share/...`) would let replicas with their own client
/// ids share a topic, but brokers drop what they hold for a shared
/// subscription across a restart, so they are not used.
fn filter(_group: &str, topic: &str) -> String {
    topic.to_string()
}

impl Group {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            handlers: Arc::default(),
            next: Default::default(),
            running: tokio::sync::Mutex::new(None),
        }
    }

    fn add(&self, topic: &str, handler: Handler) -> u64 {
        let token = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.handlers)
            .entry(topic.to_string())
            .or_default()
            .push((token, handler));
        token
    }

    /// Connects when needed and subscribes every topic with a handler.
    async fn start(&self, s: &Settings) -> Result<()> {
        let mut running = self.running.lock().await;
        if running.is_none() {
            let mut opts = s.options(&self.name);
            opts.set_clean_session(s.clean_session).set_manual_acks(true);
            let (client, mut events) = AsyncClient::new(opts, 64);
            connected(&mut events)
                .await
                .map_err(|e| Error::Backend(format!("cannot connect as {}: {e}", self.name)))?;
            let (stop, stopped) = watch::channel(false);
            let consumer = Consumer {
                client: client.clone(),
                handlers: self.handlers.clone(),
                qos: s.qos,
                group: self.name.clone(),
                turn: Default::default(),
            };
            let task = tokio::spawn(consumer.run(events, stopped, s.concurrency));
            *running = Some(Running {
                client,
                stop,
                task,
                subscribed: Vec::new(),
            });
        }
        let Some(r) = running.as_mut() else {
            return Err(Error::Closed);
        };
        let topics: Vec<String> = lock(&self.handlers).keys().cloned().collect();
        for topic in topics {
            if !r.subscribed.contains(&topic) {
                r.client
                    .subscribe(filter(&self.name, &topic), s.qos)
                    .await
                    .map_err(|e| Error::Backend(e.to_string()))?;
                r.subscribed.push(topic);
            }
        }
        Ok(())
    }

    /// Forgets a handler; the last one closes the connection, leaving the
    /// session (and its queued messages) on the broker.
    async fn remove(&self, token: u64) {
        let (gone, empty) = {
            let mut h = lock(&self.handlers);
            for list in h.values_mut() {
                list.retain(|(t, _)| *t != token);
            }
            let gone: Vec<String> = h
                .iter()
                .filter(|(_, l)| l.is_empty())
                .map(|(t, _)| t.clone())
                .collect();
            h.retain(|_, list| !list.is_empty());
            (gone, h.is_empty())
        };
        let mut running = self.running.lock().await;
        if empty {
            if let Some(r) = running.take() {
                r.stop.send_replace(true);
                let _ = r.task.await;
            }
        } else if let Some(r) = running.as_mut() {
            // A topic no handler reads any more must not hold messages unacknowledged.
            for topic in gone {
                let _ = r.client.unsubscribe(filter(&self.name, &topic)).await;
                r.subscribed.retain(|t| *t != topic);
            }
        }
    }
}

/// Reads one group's connection and hands messages to the handlers of their topic.
struct Consumer {
    client: AsyncClient,
    handlers: Arc<Mutex<Handlers>>,
    qos: QoS,
    group: String,
    turn: std::sync::atomic::AtomicUsize,
}

impl Consumer {
    fn handler_for(&self, topic: &str) -> Option<Handler> {
        let h = lock(&self.handlers);
        let list = h.get(topic)?;
        let i = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % list.len().max(1);
        list.get(i).map(|(_, h)| h.clone())
    }

    async fn run(self, mut events: EventLoop, mut stopped: watch::Receiver<bool>, concurrency: usize) {
        let this = Arc::new(self);
        let mut workers = Workers::new(concurrency);
        loop {
            let event = tokio::select! {
                _ = stopped.wait_for(|v| *v) => break,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let (this, mut stopping) = (this.clone(), stopped.clone());
                    workers
                        .spawn(async move {
                            let msg = Message {
                                topic: p.topic.clone(),
                                data: Bytes::from(p.payload.to_vec()),
                                content_type: None,
                                metadata: Metadata::new(),
                            };
                            let mut attempt = 0u32;
                            loop {
                                // A topic whose handlers all left: the message stays unacknowledged.
                                let Some(handler) = this.handler_for(&p.topic) else {
                                    return;
                                };
                                if handler(msg.clone()).await.is_ok() {
                                    let _ = this.client.ack(&p).await;
                                    return;
                                }
                                let pause = redelivery_pause(attempt, LONGEST_PAUSE);
                                attempt = attempt.saturating_add(1);
                                tokio::select! {
                                    _ = stopping.wait_for(|v| *v) => return,
                                    () = tokio::time::sleep(pause) => {}
                                }
                            }
                        })
                        .await;
                }
                Ok(Event::Incoming(Incoming::ConnAck(c))) if !c.session_present => {
                    // A new session: subscribe again.
                    let topics: Vec<String> = lock(&this.handlers).keys().cloned().collect();
                    for t in topics {
                        let _ = this.client.subscribe(filter(&this.group, &t), this.qos).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(group = %this.group, error = %e, "MQTT connection failed; reconnecting");
                    tokio::select! {
                        _ = stopped.wait_for(|v| *v) => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
        // Let the deliveries in flight finish while the connection still
        // carries their acknowledgements.
        let drained = workers.drain();
        tokio::pin!(drained);
        loop {
            tokio::select! {
                () = &mut drained => break,
                _ = events.poll() => {}
            }
        }
        let _ = this.client.disconnect().await;
        let flush = async {
            while let Ok(e) = events.poll().await {
                if matches!(e, Event::Outgoing(Outgoing::Disconnect)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
    }
}
