//! JetStream's own options: where a consumer starts, and the consumer
//! settings Dapr documents, against the NATS server on this machine.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use daprs_components::{
    Error,
    pubsub::{Handler, Message},
};

use super::pubsub::{Seen, message, open, sorted, subscribe, until};
use crate::unique;

const NATS: (&str, &str) = ("natsURL", "nats://127.0.0.1:4222");

async fn drop_stream(stream: &str) {
    let client = async_nats::connect("127.0.0.1:4222").await.expect("nats");
    let _ = async_nats::jetstream::new(client).delete_stream(stream).await;
}

/// A handler that records when each delivery came and fails the first
/// `fail_first` of them.
fn timed(times: &Arc<Mutex<Vec<Instant>>>, fail_first: usize) -> Handler {
    let times = times.clone();
    Arc::new(move |_: Message| {
        let times = times.clone();
        Box::pin(async move {
            let mut t = times.lock().expect("lock");
            t.push(Instant::now());
            if t.len() <= fail_first {
                return Err(Error::Backend("not yet".into()));
            }
            Ok(())
        })
    })
}

#[tokio::test]
async fn deliver_policies_start_where_asked() {
    let stream = unique("conf-policy");
    let topic = unique("conf-policy");
    let publisher = open("pubsub.jetstream", &[NATS, ("streamName", &stream)]).await;
    for m in ["m1", "m2", "m3"] {
        publisher.publish(message(&topic, m)).await.expect("publish");
    }
    // Each policy on a consumer group of its own, after the three were stored.
    for (policy, extra, want) in [
        ("all", None, vec!["m1", "m2", "m3"]),
        ("last", None, vec!["m3"]),
        ("sequence", Some(("startSequence", "2")), vec!["m2", "m3"]),
    ] {
        let mut md = vec![NATS, ("streamName", stream.as_str()), ("deliverPolicy", policy)];
        md.extend(extra);
        let p = open("pubsub.jetstream", &md).await;
        let seen = Seen::default();
        let s = subscribe(&*p, &topic, &unique("g"), seen.handler(0)).await;
        until(policy, || seen.all().len() >= want.len()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sorted(seen.all()), want, "deliverPolicy {policy}");
        s.stop().await;
    }
    drop_stream(&stream).await;
}

#[tokio::test]
async fn consumer_options_shape_redelivery_and_storage() {
    let (stream, topic, group) = (unique("conf-opts"), unique("conf-opts"), unique("g"));
    let p = open(
        "pubsub.jetstream",
        &[
            NATS,
            ("streamName", &stream),
            ("backOff", "100ms, 400ms"),
            ("maxDeliver", "5"),
            ("memoryStorage", "true"),
            ("replicas", "1"),
            ("heartbeat", "5s"),
            ("flowControl", "true"),
        ],
    )
    .await;
    let times = Arc::default();
    let s = subscribe(&*p, &topic, &group, timed(&times, 2)).await;
    p.publish(message(&topic, "m")).await.expect("publish");
    until("three deliveries", || times.lock().expect("lock").len() >= 3).await;
    let t = times.lock().expect("lock").clone();
    let (first, second) = (t[1] - t[0], t[2] - t[1]);
    assert!(first >= Duration::from_millis(90), "first pause {first:?}");
    assert!(second >= Duration::from_millis(380), "second pause {second:?}");
    assert!(
        first < second,
        "the pauses follow backOff: {first:?} then {second:?}"
    );

    // The server holds the consumer as configured.
    let client = async_nats::connect("127.0.0.1:4222").await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(&stream)
        .await
        .expect("stream")
        .get_consumer(&format!("{group}_{topic}"))
        .await
        .expect("consumer");
    let info = consumer.info().await.expect("info");
    assert_eq!(
        info.config.backoff,
        [Duration::from_millis(100), Duration::from_millis(400)]
    );
    assert!(info.config.memory_storage);
    assert_eq!(info.config.max_deliver, 5);
    s.stop().await;
    drop_stream(&stream).await;
}

#[tokio::test]
async fn ack_policy_none_delivers_at_most_once() {
    let (stream, topic) = (unique("conf-none"), unique("conf-none"));
    let p = open(
        "pubsub.jetstream",
        &[NATS, ("streamName", &stream), ("ackPolicy", "none")],
    )
    .await;
    let seen = Seen::default();
    let s = subscribe(&*p, &topic, &unique("g"), seen.handler(usize::MAX)).await;
    p.publish(message(&topic, "once")).await.expect("publish");
    until("the delivery", || !seen.all().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(seen.all(), ["once"], "a failed delivery is not repeated");
    s.stop().await;
    drop_stream(&stream).await;
}

#[tokio::test]
async fn rate_limit_paces_deliveries() {
    let (stream, topic) = (unique("conf-rate"), unique("conf-rate"));
    // 160,000 bits/s is 20,000 bytes/s: five 4,000-byte messages take 0.8 s.
    let p = open(
        "pubsub.jetstream",
        &[NATS, ("streamName", &stream), ("rateLimit", "160000")],
    )
    .await;
    let times = Arc::default();
    let body = "x".repeat(4000);
    for _ in 0..5 {
        p.publish(message(&topic, &body)).await.expect("publish");
    }
    let s = subscribe(&*p, &topic, &unique("g"), timed(&times, 0)).await;
    until("five deliveries", || times.lock().expect("lock").len() >= 5).await;
    let t = times.lock().expect("lock").clone();
    let spread = t[4] - t[0];
    assert!(
        spread >= Duration::from_millis(700),
        "five messages in {spread:?}"
    );
    s.stop().await;
    drop_stream(&stream).await;
}
