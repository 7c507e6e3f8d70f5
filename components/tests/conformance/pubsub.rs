//! The pub/sub contract, run against in-memory and Redis Streams.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use daprs_components::{
    Error,
    pubsub::{CONSUMER_ID, Handler, Message, PubSub, Subscribed, Subscription},
    registry::{self, Built},
};

use crate::{md, unique};

pub async fn open(kind: &str, metadata: &[(&str, &str)]) -> Arc<dyn PubSub> {
    match crate::build(kind, metadata, &Default::default()).await {
        Built::PubSub(s) => s,
        _ => panic!("{kind} is not a pub/sub"),
    }
}

/// What one subscriber saw: payloads in order of arrival.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }

    /// A handler that records each delivery and fails the first
    /// `fail_first` deliveries of each payload.
    pub fn handler(&self, fail_first: usize) -> Handler {
        let seen = self.clone();
        let tries: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        Arc::new(move |msg: Message| {
            let (seen, tries) = (seen.clone(), tries.clone());
            Box::pin(async move {
                let text = String::from_utf8_lossy(&msg.data).into_owned();
                seen.0.lock().expect("lock").push(text.clone());
                let mut t = tries.lock().expect("lock");
                let n = t.entry(text).or_default();
                *n += 1;
                if *n <= fail_first {
                    return Err(Error::Backend("not yet".into()));
                }
                Ok(())
            })
        })
    }
}

pub fn message(topic: &str, text: &str) -> Message {
    Message {
        topic: topic.into(),
        data: Bytes::from(text.to_string()),
        content_type: Some("text/plain".into()),
        metadata: md(&[("k", "v")]),
    }
}

pub async fn subscribe(p: &dyn PubSub, topic: &str, group: &str, handler: Handler) -> Subscribed {
    let sub = Subscription {
        topic: topic.into(),
        metadata: md(&[(CONSUMER_ID, group)]),
    };
    p.subscribe(sub, handler).await.expect("subscribe")
}

/// Waits until `check` holds, or fails after 10 s.
pub async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// What a broker can do beyond the contract every one keeps.
pub struct Caps {
    /// Holds messages for a group while none of its subscribers runs.
    pub keeps: bool,
    /// Carries per-message metadata to subscribers.
    pub metadata: bool,
}

/// Everything a broker promises.
pub async fn suite(p: Arc<dyn PubSub>, caps: Caps) {
    let p = &*p;
    // Group names are client ids on some brokers: unique per run.
    let (g, ga, gb, other) = (unique("g"), unique("a"), unique("b"), unique("other"));

    // Published once, delivered once, with its metadata.
    let topic = unique("conf-once");
    let seen = Seen::default();
    let got_md = Arc::new(Mutex::new(None));
    let h: Handler = {
        let (seen, got_md) = (seen.clone(), got_md.clone());
        Arc::new(move |m: Message| {
            let (seen, got_md) = (seen.clone(), got_md.clone());
            Box::pin(async move {
                seen.0
                    .lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&m.data).into_owned());
                *got_md.lock().expect("lock") = Some(m.metadata.clone());
                Ok(())
            })
        })
    };
    let s = subscribe(p, &topic, &g, h).await;
    p.publish(message(&topic, "hello")).await.expect("publish");
    until("delivery", || seen.all().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.all(), ["hello"], "delivered exactly once");
    if caps.metadata {
        let got = got_md
            .lock()
            .expect("lock")
            .as_ref()
            .and_then(|m| m.get("k").cloned());
        assert_eq!(got.as_deref(), Some("v"));
    }
    s.stop().await;

    // A failed delivery comes again until it succeeds.
    let topic = unique("conf-retry");
    let seen = Seen::default();
    let s = subscribe(p, &topic, &g, seen.handler(2)).await;
    p.publish(message(&topic, "again")).await.expect("publish");
    until("two redeliveries", || seen.all().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.all(),
        ["again", "again", "again"],
        "no delivery after the ack"
    );
    s.stop().await;

    // Two groups each get every message; members of one group share them.
    let topic = unique("conf-groups");
    let (a1, a2, b) = (Seen::default(), Seen::default(), Seen::default());
    let s1 = subscribe(p, &topic, &ga, a1.handler(0)).await;
    let s2 = subscribe(p, &topic, &ga, a2.handler(0)).await;
    let s3 = subscribe(p, &topic, &gb, b.handler(0)).await;
    let sent: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    for m in &sent {
        p.publish(message(&topic, m)).await.expect("publish");
    }
    until("group b has all", || b.all().len() == sent.len()).await;
    until("group a has all", || {
        a1.all().len() + a2.all().len() == sent.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sorted(b.all()), sent);
    let mut shared = a1.all();
    shared.extend(a2.all());
    assert_eq!(sorted(shared), sent, "each message once within a group");
    for s in [s1, s2, s3] {
        s.stop().await;
    }

    // After stop, nothing more is delivered to that subscriber.
    let topic = unique("conf-stop");
    let seen = Seen::default();
    let anchor = subscribe(p, &topic, &other, Seen::default().handler(0)).await;
    let s = subscribe(p, &topic, &g, seen.handler(0)).await;
    s.stop().await;
    p.publish(message(&topic, "late")).await.expect("publish");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen.all().is_empty(), "a stopped subscription delivers nothing");
    if caps.keeps {
        // The group's message waited for it.
        let s = subscribe(p, &topic, &g, seen.handler(0)).await;
        until("the kept message", || seen.all() == ["late"]).await;
        s.stop().await;
    }
    anchor.stop().await;
}

#[tokio::test]
async fn in_memory() {
    let caps = Caps {
        keeps: false,
        metadata: true,
    };
    suite(open("pubsub.in-memory", &[]).await, caps).await;
}

#[tokio::test]
async fn redis_streams() {
    let p = open(
        "pubsub.redis",
        &[
            ("redisHost", "127.0.0.1:6379"),
            ("processingTimeout", "200ms"),
            ("redeliverInterval", "100ms"),
        ],
    )
    .await;
    let caps = Caps {
        keeps: true,
        metadata: true,
    };
    suite(p, caps).await;
}

#[tokio::test]
async fn redis_stream_ttl_trims_old_entries() {
    let topic = unique("ttl");
    let p = open(
        "pubsub.redis",
        &[("redisHost", "127.0.0.1:6379"), ("streamTTL", "1s")],
    )
    .await;
    for i in 0..200 {
        p.publish(message(&topic, &i.to_string())).await.expect("publish");
    }
    let mut redis = ::redis::Client::open("redis://127.0.0.1:6379")
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let len = || ::redis::cmd("XLEN").arg(&topic).clone();
    let before: u64 = len().query_async(&mut redis).await.expect("XLEN");
    assert_eq!(before, 200, "entries younger than the TTL stay");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    p.publish(message(&topic, "late")).await.expect("publish");
    let after: u64 = len().query_async(&mut redis).await.expect("XLEN");
    // Trimming is approximate: Redis drops whole nodes (up to 100 entries
    // each), so at most the node the new entry joined is left of the old.
    assert!((1..=101).contains(&after), "{after} entries left");
    let _: () = ::redis::cmd("DEL")
        .arg(&topic)
        .query_async(&mut redis)
        .await
        .expect("DEL");
}

#[tokio::test]
async fn mqtt3() {
    let id = unique("conf-mqtt");
    let p = open(
        "pubsub.mqtt3",
        &[("url", "tcp://127.0.0.1:1883"), ("consumerID", &id)],
    )
    .await;
    let caps = Caps {
        keeps: true,
        metadata: false,
    };
    suite(p, caps).await;
}

#[tokio::test]
async fn jetstream() {
    // One stream of its own, widened with each topic's subject, removed after.
    let stream = unique("conf");
    let p = open(
        "pubsub.jetstream",
        &[("natsURL", "nats://127.0.0.1:4222"), ("streamName", &stream)],
    )
    .await;
    let caps = Caps {
        keeps: true,
        metadata: true,
    };
    suite(p, caps).await;
    let client = async_nats::connect("127.0.0.1:4222").await.expect("nats");
    let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
}

#[tokio::test]
async fn rabbitmq() {
    // Queues go when their last consumer does (Dapr's default), so a run
    // leaves nothing on the broker; failures go back on the queue.
    let p = open(
        "pubsub.rabbitmq",
        &[
            ("connectionString", RABBIT),
            ("durable", "true"),
            ("requeueInFailure", "true"),
        ],
    )
    .await;
    let caps = Caps {
        keeps: false,
        metadata: true,
    };
    suite(p, caps).await;
}

const RABBIT: &str = "amqp://guest:guest@127.0.0.1:5672";

/// `pubsub.rabbitmq` on the shared broker, with `metadata` beside the URL.
async fn rabbit(metadata: &[(&str, &str)]) -> Arc<dyn PubSub> {
    let mut md = vec![("connectionString", RABBIT)];
    md.extend_from_slice(metadata);
    open("pubsub.rabbitmq", &md).await
}

/// Durable queues that outlive their consumers, so messages wait in them.
const KEPT: [(&str, &str); 2] = [("durable", "true"), ("deletedWhenUnused", "false")];

#[tokio::test]
async fn rabbitmq_durable_queues_keep_messages_while_no_one_consumes() {
    let p = rabbit(&KEPT).await;
    let (topic, group) = (unique("conf-durable"), unique("app"));
    let seen = Seen::default();
    subscribe(&*p, &topic, &group, seen.handler(0)).await.stop().await;
    p.publish(message(&topic, "kept")).await.expect("publish");
    let s = subscribe(&*p, &topic, &group, seen.handler(0)).await;
    until("the kept message", || seen.all() == ["kept"]).await;
    s.stop().await;
    rabbit_remove(&topic, &group).await;
}

/// Removes a test's queue and exchange from the shared RabbitMQ.
async fn rabbit_remove(topic: &str, group: &str) {
    let conn = lapin::Connection::connect(RABBIT, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let queue = format!("{group}-{topic}");
    let _ = ch.queue_delete(queue.as_str().into(), Default::default()).await;
    let _ = ch.exchange_delete(topic.into(), Default::default()).await;
}

#[tokio::test]
async fn rabbitmq_messages_expire_in_the_queue() {
    let p = rabbit(&[KEPT[0], KEPT[1], ("ttlInSeconds", "1")]).await;
    assert_eq!(p.features(), ["MESSAGE_TTL"], "reported as Dapr reports it");
    let (topic, group) = (unique("conf-ttl"), unique("app"));
    let seen = Seen::default();
    subscribe(&*p, &topic, &group, seen.handler(0)).await.stop().await;
    // The component's TTL, and a publish's own longer one.
    p.publish(message(&topic, "short")).await.expect("publish");
    let mut long = message(&topic, "long");
    long.metadata.insert("ttlInSeconds".into(), "60".into());
    p.publish(long).await.expect("publish");
    let mut bad = message(&topic, "bad");
    bad.metadata.insert("ttlInSeconds".into(), "soon".into());
    let e = p.publish(bad).await.expect_err("a TTL that is not a number");
    assert!(e.to_string().contains("ttlInSeconds"), "{e}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = subscribe(&*p, &topic, &group, seen.handler(0)).await;
    until("the message still in time", || seen.all() == ["long"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.all(), ["long"], "the expired message was dropped");
    s.stop().await;
    rabbit_remove(&topic, &group).await;
}

#[tokio::test]
async fn rabbitmq_auto_ack_delivers_at_most_once() {
    let p = rabbit(&[("autoAck", "true"), ("requeueInFailure", "true")]).await;
    let (topic, group) = (unique("conf-autoack"), unique("app"));
    let seen = Seen::default();
    let s = subscribe(&*p, &topic, &group, seen.handler(1)).await;
    p.publish(message(&topic, "once")).await.expect("publish");
    until("the delivery", || seen.all() == ["once"]).await;
    // The handler failed it, yet it does not come back: the broker let it go on delivery.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(seen.all(), ["once"]);
    s.stop().await;
    rabbit_remove(&topic, &group).await;
}

#[tokio::test]
async fn rabbitmq_max_len_keeps_the_newest() {
    let p = rabbit(&[
        KEPT[0],
        KEPT[1],
        ("maxLen", "2"),
        ("clientName", "daprs-conformance"),
        ("heartBeat", "5s"),
    ])
    .await;
    let (topic, group) = (unique("conf-maxlen"), unique("app"));
    let seen = Seen::default();
    subscribe(&*p, &topic, &group, seen.handler(0)).await.stop().await;
    for i in 0..5 {
        p.publish(message(&topic, &format!("m{i}")))
            .await
            .expect("publish");
    }
    let s = subscribe(&*p, &topic, &group, seen.handler(0)).await;
    until("the newest two", || seen.all().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.all(), ["m3", "m4"], "the queue kept only the newest");
    // The broker lists the connection under its name, with the heartbeat asked for.
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "timeout", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("5\t") && l.contains("daprs-conformance")),
        "{listed}"
    );
    s.stop().await;
    rabbit_remove(&topic, &group).await;
}

/// With one delivery at a time (`concurrency: 1`), a subscriber sees the
/// messages of a topic in the order they were published.
async fn ordered(kind: &str, metadata: &[(&str, &str)]) {
    let mut md: Vec<(&str, &str)> = metadata.to_vec();
    md.push(("concurrency", "1"));
    let p = open(kind, &md).await;
    let topic = unique("conf-order");
    let seen = Seen::default();
    let s = subscribe(&*p, &topic, &unique("g"), seen.handler(0)).await;
    let sent: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    for m in &sent {
        p.publish(message(&topic, m)).await.expect("publish");
    }
    until("all in order", || seen.all().len() == sent.len()).await;
    assert_eq!(seen.all(), sent);
    s.stop().await;
}

#[tokio::test]
async fn order_is_kept_one_at_a_time() {
    ordered("pubsub.in-memory", &[]).await;
    ordered("pubsub.redis", &[("redisHost", "127.0.0.1:6379")]).await;
    let id = unique("conf-order");
    ordered(
        "pubsub.mqtt3",
        &[("url", "tcp://127.0.0.1:1883"), ("consumerID", &id)],
    )
    .await;
    let stream = unique("conf-order");
    ordered(
        "pubsub.jetstream",
        &[("natsURL", "nats://127.0.0.1:4222"), ("streamName", &stream)],
    )
    .await;
    let client = async_nats::connect("127.0.0.1:4222").await.expect("nats");
    let _ = async_nats::jetstream::new(client).delete_stream(&stream).await;
    ordered("pubsub.rabbitmq", &[("connectionString", RABBIT)]).await;
}

#[tokio::test]
async fn a_broker_that_is_down_fails_the_component_with_a_reason() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let env = Default::default();
    let ctx = registry::Context {
        env: &env,
        namespace: None,
    };
    let cases = [
        ("pubsub.redis", "redisHost", format!("127.0.0.1:{closed}")),
        ("pubsub.mqtt3", "url", format!("tcp://127.0.0.1:{closed}")),
        (
            "pubsub.jetstream",
            "natsURL",
            format!("nats://127.0.0.1:{closed}"),
        ),
        (
            "pubsub.rabbitmq",
            "connectionString",
            format!("amqp://127.0.0.1:{closed}"),
        ),
    ];
    for (kind, key, value) in cases {
        let started = std::time::Instant::now();
        let err = match registry::build(kind, "v1", &md(&[(key, &value)]), &ctx).await {
            Err(e) => e,
            Ok(_) => panic!("{kind} started without its broker"),
        };
        assert!(
            err.contains(&closed.to_string()) || err.contains("connect"),
            "{kind}: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{kind} took {:?}",
            started.elapsed()
        );
    }
    // A missing required setting is named.
    let err = registry::build("pubsub.redis", "v1", &md(&[]), &ctx)
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("redisHost"), "{err}");
}

#[tokio::test]
async fn rabbitmq_dead_letters_what_fails_when_not_requeued() {
    let p = open(
        "pubsub.rabbitmq",
        &[("connectionString", RABBIT), ("enableDeadLetter", "true")],
    )
    .await;
    let (topic, group) = (unique("conf-dlx"), unique("app"));
    let seen = Seen::default();
    let s = subscribe(&*p, &topic, &group, seen.handler(usize::MAX)).await;
    p.publish(message(&topic, "doomed")).await.expect("publish");
    until("the failed delivery", || seen.all().len() == 1).await;
    // Rejected without requeue, the message is in the dead-letter queue.
    let conn = lapin::Connection::connect(RABBIT, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let dlq = format!("dlq-{group}-{topic}");
    let mut got = None;
    for _ in 0..100 {
        if let Ok(Some(m)) = ch.basic_get(dlq.as_str().into(), Default::default()).await {
            got = Some(m.delivery.data.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.as_deref(), Some(&b"doomed"[..]));
    assert_eq!(seen.all().len(), 1, "not delivered again");
    s.stop().await;
    let _ = ch.queue_delete(dlq.as_str().into(), Default::default()).await;
    let _ = ch
        .exchange_delete(format!("dlx-{group}-{topic}").as_str().into(), Default::default())
        .await;
}
