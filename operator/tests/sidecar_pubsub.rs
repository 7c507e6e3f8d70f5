//! daprd in Kubernetes mode follows the operator's Subscriptions, its
//! subscriptions move with a pub/sub component replaced while running, and
//! input bindings follow their components.

#[path = "support/daprd.rs"]
mod daprd;
#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/settings.rs"]
mod settings;

use std::{net::SocketAddr, time::Duration};

use daprd::{ControlPlane, NS, control_plane, http, scratch, sidecar};
use daprs_proto::runtime::{
    SubscribeTopicEventsRequestAlpha1, SubscribeTopicEventsRequestInitialAlpha1, dapr_client::DaprClient,
    subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In,
    subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out,
};
use serde_json::{Value, json};

/// An app that records the path of every POST it gets and acknowledges it.
async fn recording_app() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    let record = seen.clone();
    let router = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let record = record.clone();
        async move {
            if let Ok(mut s) = record.lock() {
                s.push(uri.path().to_string());
            }
            axum::Json(json!({"status": "SUCCESS"}))
        }
    });
    tokio::spawn(async move { axum::serve(l, router).await });
    (port, seen)
}

/// daprd's flags in Kubernetes mode, with the app on `app_port`.
fn k8s_args(cp: &ControlPlane, app_port: u16) -> Vec<String> {
    cp.daprd_args(&[
        "--disable-builtin-k8s-secret-store",
        "--app-port",
        &app_port.to_string(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mode_follows_subscriptions_from_the_operator() {
    let subscription = |name: &str, topic: &str, scopes: Value| {
        json!({"apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": name, "namespace": NS, "uid": format!("s-{name}"), "resourceVersion": "1"},
            "spec": {"pubsubname": "pubsub", "topic": topic, "routes": {"default": format!("/{topic}")}},
            "scopes": scopes})
    };
    let path = |name: &str| format!("/apis/dapr.io/v2alpha1/namespaces/{NS}/subscriptions/{name}");
    let cp = control_plane(|cp| {
        cp.pod("shop", "shop-token", json!({}));
        cp.put(
            "components",
            "pubsub",
            json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
                "metadata": {"name": "pubsub", "namespace": NS, "uid": "p1", "resourceVersion": "1"},
                "spec": {"type": "pubsub.in-memory", "version": "v1", "metadata": []}}),
        );
        cp.api
            .put(&path("orders"), subscription("orders", "orders", json!(["shop"])));
        cp.api.put(
            &path("elsewhere"),
            subscription("elsewhere", "other", json!(["billing"])),
        );
    })
    .await;
    let (app_port, seen) = recording_app().await;
    let dir = scratch("k8s-subscriptions");
    let args = k8s_args(&cp, app_port);
    let d = sidecar(&cp, "shop", "shop-token", &dir, &args)
        .await
        .expect("daprd starts");
    let topics = |d: SocketAddr| async move {
        let (_, meta) = http(d, "GET", "/v1.0/metadata", "").await.expect("metadata");
        let meta: Value = serde_json::from_str(&meta).expect("json");
        let mut t: Vec<String> = meta["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"] == "DECLARATIVE")
            .filter_map(|s| s["topic"].as_str().map(String::from))
            .collect();
        t.sort();
        t
    };
    let until = |want: &'static [&'static str]| async move {
        let started = std::time::Instant::now();
        while topics(d.http).await != want {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "subscriptions stayed {:?}, expected {want:?}",
                topics(d.http).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let publish = |topic: &'static str| async move {
        let (status, body) = http(d.http, "POST", &format!("/v1.0/publish/pubsub/{topic}"), "{}")
            .await
            .expect("publish");
        assert_eq!(status, 204, "{body}");
    };
    let delivered = |p: &'static str| {
        let seen = seen.clone();
        async move {
            let started = std::time::Instant::now();
            while !seen.lock().expect("lock").iter().any(|s| s == p) {
                assert!(started.elapsed() < Duration::from_secs(10), "nothing reached {p}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // Only the subscription scoped to this app, from the operator's list.
    until(&["orders"]).await;
    publish("orders").await;
    delivered("/orders").await;

    // A new Subscription reaches the running sidecar...
    cp.api
        .put(&path("audit"), subscription("audit", "audit", json!([])));
    until(&["audit", "orders"]).await;
    publish("audit").await;
    delivered("/audit").await;

    // ...and a deleted one stops delivering.
    cp.api.remove(&path("orders"));
    until(&["audit"]).await;
    let before = seen.lock().expect("lock").len();
    publish("orders").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        seen.lock().expect("lock").len(),
        before,
        "a removed subscription still delivers"
    );

    // A streaming subscriber, open across the replacement below.
    let (answers, answers_rx) = tokio::sync::mpsc::channel(16);
    answers
        .send(SubscribeTopicEventsRequestAlpha1 {
            subscribe_topic_events_request_type: Some(In::InitialRequest(
                SubscribeTopicEventsRequestInitialAlpha1 {
                    pubsub_name: "pubsub".into(),
                    topic: "feed".into(),
                    metadata: Default::default(),
                    dead_letter_topic: None,
                },
            )),
        })
        .await
        .expect("initial request");
    let mut client = DaprClient::connect(format!("http://127.0.0.1:{}", d.grpc))
        .await
        .expect("connect");
    let mut events = client
        .subscribe_topic_events_alpha1(tokio_stream::wrappers::ReceiverStream::new(answers_rx))
        .await
        .expect("subscribe")
        .into_inner();
    let first = events.message().await.expect("stream").expect("initial");
    assert!(matches!(
        first.subscribe_topic_events_response_type,
        Some(Out::InitialResponse(_))
    ));

    // A replaced pub/sub component takes its subscriptions to the new broker.
    cp.put(
        "components",
        "pubsub",
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "pubsub", "namespace": NS, "uid": "p1", "resourceVersion": "2"},
            "spec": {"type": "pubsub.in-memory", "version": "v1", "metadata": [{"name": "concurrency", "value": "4"}]}}),
    );
    let audits = || {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|p| *p == "/audit")
            .count()
    };
    let started = std::time::Instant::now();
    loop {
        let before = audits();
        publish("audit").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if audits() > before && started.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing delivered after the component changed"
        );
    }
    // ...the streaming one too.
    let next = async {
        loop {
            publish("feed").await;
            match tokio::time::timeout(Duration::from_millis(300), events.message()).await {
                Ok(m) => break m,
                Err(_) => continue,
            }
        }
    };
    let msg = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the stream got an event after the component changed")
        .expect("stream")
        .expect("event");
    assert!(matches!(
        msg.subscribe_topic_events_response_type,
        Some(Out::EventMessage(ref e)) if e.topic == "feed"
    ));
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_bindings_follow_components_replaced_added_and_removed() {
    let cron = |name: &str, route: &str, version: &str| {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": name, "namespace": NS, "uid": format!("b-{name}"), "resourceVersion": version},
            "spec": {"type": "bindings.cron", "version": "v1", "metadata": [
                {"name": "schedule", "value": "@every 100ms"}, {"name": "route", "value": route}]}})
    };
    let cp = control_plane(|cp| {
        cp.pod("ticker", "ticker-token", json!({}));
        cp.put("components", "ticks", cron("ticks", "/first", "1"));
    })
    .await;
    let (app_port, seen) = recording_app().await;
    let dir = scratch("k8s-bindings");
    let args = k8s_args(&cp, app_port);
    let d = sidecar(&cp, "ticker", "ticker-token", &dir, &args)
        .await
        .expect("daprd starts");
    let count = |p: &str| seen.lock().expect("lock").iter().filter(|s| *s == p).count();
    let grows = |p: &'static str| {
        let seen = seen.clone();
        async move {
            let n = |seen: &std::sync::Mutex<Vec<String>>| {
                seen.lock().expect("lock").iter().filter(|s| *s == p).count()
            };
            let (before, started) = (n(&seen), std::time::Instant::now());
            while n(&seen) < before + 2 {
                assert!(started.elapsed() < Duration::from_secs(10), "no events at {p}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    grows("/first").await;

    // Replaced: the events move to the new route and stop at the old one.
    cp.put("components", "ticks", cron("ticks", "/second", "2"));
    grows("/second").await;
    let first = count("/first");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(count("/first"), first, "the replaced binding still fires");

    // Added while running, then removed.
    cp.put("components", "more", cron("more", "/more", "1"));
    grows("/more").await;
    cp.api
        .remove(&format!("/apis/dapr.io/v1alpha1/namespaces/{NS}/components/more"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let more = count("/more");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(count("/more"), more, "a removed binding still fires");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
