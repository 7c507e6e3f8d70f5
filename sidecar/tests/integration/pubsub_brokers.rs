//! Pub/sub between sidecars on each real broker, and what a shutdown does
//! to deliveries in flight.

use std::time::Duration;

use serde_json::json;

use super::{
    harness::{Daprd, Spec, free_port, resources},
    pubsub::{numbers, publish_numbered, sidecar, subscribed, subscriber},
};

/// Three sidecars on one broker: a publisher and two apps that each get
/// every message once (one consumer group per app id).
async fn each_app_once(kind: &str, metadata: &[&str], topic: Option<&str>) {
    let topic = topic.map_or_else(|| format!("it-{}", free_port()), str::to_string);
    let yaml = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: pubsub}}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n  - {}\n",
        metadata.join("\n  - ")
    );
    let yaml = yaml.as_str();
    let n = free_port();
    let subs = json!([{"pubsubname": "pubsub", "topic": topic, "route": "/in"}]);
    let (billing, billing_port) = subscriber(subs.clone()).await;
    let (audit, audit_port) = subscriber(subs).await;
    let (b, _h1) = sidecar(&format!("billing-{n}"), yaml, Some(billing_port)).await;
    let (a, _h2) = sidecar(&format!("audit-{n}"), yaml, Some(audit_port)).await;
    let (publisher, _h3) = sidecar(&format!("publisher-{n}"), yaml, None).await;
    subscribed(&b, 1).await;
    subscribed(&a, 1).await;
    publish_numbered(&publisher, &topic, 5).await;
    for inbox in [&billing, &audit] {
        let got = inbox.wait("/in", 5).await;
        assert_eq!(numbers(&got), [0, 1, 2, 3, 4], "each app gets every message");
        assert!(
            got.iter()
                .all(|r| r.event["source"] == format!("publisher-{n}").as_str())
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(billing.at("/in").len(), 5, "and each once");
    if kind == "pubsub.redis" {
        redis_del(&topic).await;
    }
}

#[tokio::test]
async fn redis_delivers_to_each_app_once_across_sidecars() {
    each_app_once(
        "pubsub.redis",
        &["{name: redisHost, value: '127.0.0.1:6379'}"],
        None,
    )
    .await;
}

#[tokio::test]
async fn mqtt_delivers_to_each_app_once_across_sidecars() {
    each_app_once(
        "pubsub.mqtt3",
        &["{name: url, value: 'tcp://127.0.0.1:1883'}"],
        None,
    )
    .await;
}

#[tokio::test]
async fn jetstream_delivers_to_each_app_once_across_sidecars() {
    // One stream and topic for every run; new durables start at new messages.
    let metadata = [
        "{name: natsURL, value: 'nats://127.0.0.1:4222'}",
        "{name: streamName, value: DAPRS_IT}",
        "{name: deliverPolicy, value: new}",
    ];
    each_app_once("pubsub.jetstream", &metadata, Some("it.each-app")).await;
}

#[tokio::test]
async fn rabbitmq_delivers_to_each_app_once_across_sidecars() {
    let metadata = ["{name: connectionString, value: 'amqp://guest:guest@127.0.0.1:5672'}"];
    each_app_once("pubsub.rabbitmq", &metadata, None).await;
}

#[tokio::test]
async fn shutdown_lets_deliveries_in_flight_finish_and_acknowledges_them() {
    let topic = format!("it-shutdown-{}", free_port());
    let (inbox, app) = subscriber(json!([{"pubsubname": "pubsub", "topic": topic, "route": "/slow"}])).await;
    // An unacknowledged message would be claimed again after one second.
    let yaml = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\nspec:\n  type: pubsub.redis\n  version: v1\n  metadata:\n  - {name: redisHost, value: '127.0.0.1:6379'}\n  - {name: processingTimeout, value: 1s}\n  - {name: redeliverInterval, value: 200ms}\n";
    let app_id = format!("ps-drain-{}", free_port());
    let (mut first, home) = sidecar(&app_id, yaml, Some(app)).await;
    subscribed(&first, 1).await;
    let r = first
        .send("POST", &format!("/v1.0/publish/pubsub/{topic}"), &[], "in flight")
        .await;
    assert_eq!(r.status, 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while inbox.busy.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.terminate();
    assert!(
        first.wait_exit(Duration::from_secs(10)).await.is_some(),
        "daprd did not stop"
    );
    assert_eq!(inbox.at("/slow").len(), 1);

    // The same app again: nothing comes back, because the delivery was acknowledged.
    let res = resources(&home, yaml);
    let mut spec = Spec::new(&app_id, &home);
    spec.resources = Some(&res);
    spec.app_port = Some(app);
    let second = Daprd::start(spec).await;
    subscribed(&second, 1).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(inbox.at("/slow").len(), 1, "an acknowledged delivery came back");
    redis_del(&topic).await;
}

/// Removes a test's stream from the shared Redis.
async fn redis_del(key: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Ok(mut s) = tokio::net::TcpStream::connect("127.0.0.1:6379").await {
        let _ = s.write_all(format!("DEL {key}\r\n").as_bytes()).await;
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf).await;
    }
}

#[tokio::test]
async fn a_broker_that_is_down_at_start_follows_ignore_errors() {
    let closed = free_port();
    let yaml = |ignore: bool| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: events}}\nspec:\n  type: pubsub.redis\n  version: v1\n  initTimeout: 3s\n  ignoreErrors: {ignore}\n  metadata:\n  - {{name: redisHost, value: '127.0.0.1:{closed}'}}\n"
        )
    };
    // Ignored: daprd serves, without the component, and says so when it is used.
    let (d, home) = sidecar("ps-down", &yaml(true), None).await;
    let r = d.send("POST", "/v1.0/publish/events/t", &[], "x").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_NOT_CONFIGURED")
    );
    // Not ignored: daprd does not start, and names the component and the address.
    let res = resources(&home, &yaml(false));
    let out = super::harness::start_fails(
        &home,
        &[
            "--app-id",
            "ps-down-fatal",
            "--resources-path",
            &res.display().to_string(),
        ],
    );
    assert!(
        out.contains("events") && out.contains(&closed.to_string()),
        "{out}"
    );
}
