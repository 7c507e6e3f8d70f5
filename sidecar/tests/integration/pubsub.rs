//! Pub/sub through real daprd processes: publishing over HTTP and gRPC,
//! delivery to HTTP and gRPC apps and to streaming subscribers, routing
//! rules, the app's answers, dead letters, errors, and Redis between apps.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use daprs_proto::runtime::{
    BulkPublishRequest, BulkPublishRequestEntry, PublishEventRequest, SubscribeTopicEventsRequestAlpha1,
    SubscribeTopicEventsRequestInitialAlpha1, SubscribeTopicEventsRequestProcessedAlpha1, TopicEventResponse,
    subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In,
    subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::harness::{Daprd, Spec, resources, temp_dir};

/// One delivery as the app saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub event: Value,
    /// The `traceparent` the delivery carried.
    pub traceparent: String,
}

#[derive(Clone, Default)]
pub struct Inbox {
    pub got: Arc<Mutex<Vec<Received>>>,
    subscriptions: Arc<Mutex<Value>>,
    /// Deliveries to `/slow` in progress now, and the most at once.
    pub busy: Arc<std::sync::atomic::AtomicUsize>,
    pub most_busy: Arc<std::sync::atomic::AtomicUsize>,
}

impl Inbox {
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub async fn wait(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: {} of {n} deliveries",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An HTTP subscriber: `/dapr/subscribe` lists what the test set; `/drop`
/// answers DROP, `/retry-once` RETRY the first time, `/gone` 404, others SUCCESS.
pub async fn subscriber(subscriptions: Value) -> (Inbox, u16) {
    let inbox = Inbox::default();
    *inbox.subscriptions.lock().expect("lock") = subscriptions;
    async fn list(State(inbox): State<Inbox>) -> Json<Value> {
        Json(inbox.subscriptions.lock().expect("lock").clone())
    }
    async fn deliver(State(inbox): State<Inbox>, req: Request) -> axum::response::Response {
        let path = req.uri().path().to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if path == "/bulk" {
            return bulk(&inbox, event);
        }
        let seen_before = inbox.at(&path).len();
        inbox.got.lock().expect("lock").push(Received {
            path: path.clone(),
            content_type,
            event,
            traceparent,
        });
        if path == "/slow" {
            use std::sync::atomic::Ordering::SeqCst;
            let now = inbox.busy.fetch_add(1, SeqCst) + 1;
            inbox.most_busy.fetch_max(now, SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            inbox.busy.fetch_sub(1, SeqCst);
        }
        match path.as_str() {
            "/drop" => Json(json!({"status": "DROP"})).into_response(),
            "/fails" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            "/retry-once" if seen_before == 0 => Json(json!({"status": "RETRY"})).into_response(),
            "/gone" => StatusCode::NOT_FOUND.into_response(),
            _ => Json(json!({"status": "SUCCESS"})).into_response(),
        }
    }
    /// Records a bulk envelope's entries; answers SUCCESS for each, but leaves
    /// out an entry whose data is "skip-once" the first time it comes.
    fn bulk(inbox: &Inbox, envelope: Value) -> axum::response::Response {
        let mut statuses = Vec::new();
        for e in envelope["entries"].as_array().into_iter().flatten() {
            let skip = e["event"]["data"] == "skip-once"
                && !inbox
                    .at("/bulk")
                    .iter()
                    .any(|r| r.event["event"]["data"] == "skip-once");
            inbox.got.lock().expect("lock").push(Received {
                path: "/bulk".into(),
                content_type: envelope["type"].as_str().unwrap_or_default().into(),
                event: e.clone(),
                traceparent: String::new(),
            });
            if !skip {
                statuses.push(json!({"entryId": e["entryId"], "status": "SUCCESS"}));
            }
        }
        Json(json!({ "statuses": statuses })).into_response()
    }
    // Port 0: a port found free first could be taken by a parallel test.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let router = Router::new()
        .route("/dapr/subscribe", get(list))
        .fallback(deliver)
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (inbox, port)
}

pub const IN_MEMORY: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\nspec: {type: pubsub.in-memory, version: v1}\n";

pub async fn sidecar(name: &str, yaml: &str, app_port: Option<u16>) -> (Daprd, std::path::PathBuf) {
    let home = temp_dir(name);
    let res = resources(&home, yaml);
    let mut spec = Spec::new(name, &home);
    spec.resources = Some(&res);
    spec.app_port = app_port;
    (Daprd::start(spec).await, home)
}

pub async fn post(
    d: &Daprd,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
) -> super::harness::Reply {
    d.send("POST", &path, &headers, body).await
}

/// Waits until the sidecar lists `n` subscriptions (they start once the app listens).
pub async fn subscribed(d: &Daprd, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let md = d.get("/v1.0/metadata").await.expect("metadata").json();
        if md["subscriptions"].as_array().map_or(0, Vec::len) >= n {
            return md["subscriptions"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "subscriptions: {md}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `{"i": 0}` to `{"i": n - 1}` on `pubsub`/`topic` through `d`.
pub async fn publish_numbered(d: &Daprd, topic: &str, n: i64) {
    for i in 0..n {
        let r = d
            .send(
                "POST",
                &format!("/v1.0/publish/pubsub/{topic}"),
                &[("content-type", "application/json")],
                format!("{{\"i\": {i}}}"),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

/// The numbers of the events an app got, in order.
pub fn numbers(got: &[Received]) -> Vec<i64> {
    let mut ids: Vec<i64> = got.iter().filter_map(|r| r.event["data"]["i"].as_i64()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn http_publish_reaches_programmatic_and_declarative_subscribers_as_cloudevents() {
    let (inbox, app) = subscriber(json!([
        {"pubsubname": "pubsub", "topic": "plain", "route": "/plain"},
        {"pubsubname": "pubsub", "topic": "raw", "route": "/raw", "metadata": {"rawPayload": "true"}},
    ]))
    .await;
    let yaml = format!(
        "{IN_MEMORY}---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {{name: orders}}\nspec:\n  pubsubname: pubsub\n  topic: orders\n  routes:\n    rules:\n    - {{match: 'event.data.total > 100', path: /big}}\n    default: /orders\n"
    );
    let (d, _home) = sidecar("ps-http", &yaml, Some(app)).await;
    let subs = subscribed(&d, 3).await;
    let kinds: Vec<&str> = subs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"DECLARATIVE") && kinds.contains(&"PROGRAMMATIC"),
        "{subs}"
    );

    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let publish = |topic: &str, ct: &'static str, body: &str| {
        post(
            &d,
            format!("/v1.0/publish/pubsub/{topic}"),
            vec![("content-type", ct), ("traceparent", tp)],
            body.to_string(),
        )
    };
    assert_eq!(
        publish("orders", "application/json", r#"{"total": 150}"#)
            .await
            .status,
        204
    );
    assert_eq!(
        publish("orders", "application/json", r#"{"total": 5}"#)
            .await
            .status,
        204
    );
    assert_eq!(publish("plain", "text/plain", "hello").await.status, 204);

    let big = &inbox.wait("/big", 1).await[0];
    assert_eq!(big.content_type, "application/cloudevents+json");
    let ce = &big.event;
    assert_eq!(ce["data"], json!({"total": 150}));
    assert_eq!(ce["source"], "ps-http");
    assert_eq!(ce["type"], "com.dapr.event.sent");
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(
        (ce["topic"].as_str(), ce["pubsubname"].as_str()),
        (Some("orders"), Some("pubsub"))
    );
    assert_eq!(
        (ce["traceparent"].as_str(), ce["traceid"].as_str()),
        (Some(tp), Some(tp))
    );
    assert_eq!(ce["id"].as_str().map(str::len), Some(36));
    assert!(ce["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(inbox.wait("/orders", 1).await[0].event["data"]["total"], 5);
    assert_eq!(inbox.wait("/plain", 1).await[0].event["data"], "hello");

    // Raw: published as it is, and wrapped for a rawPayload subscriber.
    let r = d
        .send(
            "POST",
            "/v1.0/publish/pubsub/raw?metadata.rawPayload=true",
            &[("content-type", "application/octet-stream")],
            &b"\x01\x02"[..],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let raw = &inbox.wait("/raw", 1).await[0].event;
    assert_eq!(
        (raw["data_base64"].as_str(), raw["datacontenttype"].as_str()),
        (Some("AQI="), Some("application/octet-stream"))
    );

    // An app's own CloudEvent keeps its attributes.
    let own = r#"{"id": "evt-1", "type": "order.created", "source": "shop", "specversion": "1.0", "data": {"total": 1}}"#;
    assert_eq!(
        publish("orders", "application/cloudevents+json", own)
            .await
            .status,
        204
    );
    let got = inbox.wait("/orders", 2).await;
    assert_eq!(
        (got[1].event["id"].as_str(), got[1].event["type"].as_str()),
        (Some("evt-1"), Some("order.created"))
    );
}

/// Scripts wait for `/v1.0/healthz` and publish at once (`dapr run` does):
/// by then the app's subscriptions have started, so nothing goes to a topic
/// nobody listens on yet.
#[tokio::test]
async fn once_healthz_answers_204_the_apps_subscriptions_receive() {
    let (inbox, app) =
        subscriber(json!([{"pubsubname": "pubsub", "topic": "early", "route": "/early"}])).await;
    let (d, _home) = sidecar("ps-ready", IN_MEMORY, Some(app)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while d.get("/v1.0/healthz").await.map(|r| r.status) != Ok(204) {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    publish_numbered(&d, "early", 1).await;
    assert_eq!(numbers(&inbox.wait("/early", 1).await), [0]);
}

#[tokio::test]
async fn answers_retry_drop_and_dead_letters() {
    let (inbox, app) = subscriber(json!([
        {"pubsubname": "pubsub", "topic": "flaky", "route": "/retry-once"},
        {"pubsubname": "pubsub", "topic": "doomed", "route": "/drop", "deadLetterTopic": "dead"},
        {"pubsubname": "pubsub", "topic": "dead", "route": "/dead-inbox"},
        {"pubsubname": "pubsub", "topic": "missing", "route": "/gone"},
    ]))
    .await;
    let (d, _home) = sidecar("ps-answers", IN_MEMORY, Some(app)).await;
    subscribed(&d, 4).await;
    for topic in ["flaky", "doomed", "missing"] {
        let r = d
            .send(
                "POST",
                &format!("/v1.0/publish/pubsub/{topic}"),
                &[],
                format!("to {topic}"),
            )
            .await;
        assert_eq!(r.status, 204);
    }
    // RETRY comes again, then is acknowledged.
    let flaky = inbox.wait("/retry-once", 2).await;
    assert_eq!(
        flaky[0].event["id"], flaky[1].event["id"],
        "the same event, delivered again"
    );
    // DROP goes to the dead-letter topic, as the same event.
    let dropped = inbox.wait("/drop", 1).await;
    let dead = inbox.wait("/dead-inbox", 1).await;
    assert_eq!(dead[0].event["id"], dropped[0].event["id"]);
    assert_eq!(dead[0].event["data"], "to doomed");
    // 404 drops without redelivery.
    inbox.wait("/gone", 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(inbox.at("/gone").len(), 1);
    assert_eq!(inbox.at("/drop").len(), 1);
    assert_eq!(inbox.at("/retry-once").len(), 2);
}

#[tokio::test]
async fn publish_errors_are_daprs_and_the_sidecar_keeps_serving() {
    let yaml = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: pubsub}\nspec:\n  type: pubsub.in-memory\n  version: v1\n  metadata:\n  - {name: allowedTopics, value: 'open,bulk'}\n";
    let (d, _home) = sidecar("ps-errors", yaml, None).await;
    let post = |path: &str, ct: &'static str, body: &str| {
        post(&d, path.to_string(), vec![("content-type", ct)], body.to_string())
    };
    let r = post("/v1.0/publish/nope/open", "text/plain", "x").await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "ERR_PUBSUB_NOT_FOUND"));
    let r = post("/v1.0/publish/pubsub/closed", "text/plain", "x").await;
    assert_eq!((r.status, r.error_code().as_str()), (403, "ERR_PUBSUB_FORBIDDEN"));
    let r = post(
        "/v1.0/publish/pubsub/open",
        "application/cloudevents+json",
        "[1, 2]",
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_PUBSUB_CLOUD_EVENTS_SER")
    );
    let r = post(
        "/v1.0/publish/pubsub/open?metadata.rawPayload=perhaps",
        "text/plain",
        "x",
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_REQUEST_METADATA")
    );
    let dup = r#"[{"entryId": "1", "event": "a", "contentType": "text/plain"}, {"entryId": "1", "event": "b", "contentType": "text/plain"}]"#;
    let r = post("/v1.0-alpha1/publish/bulk/pubsub/bulk", "application/json", dup).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_EVENTS_SER")
    );
    let r = post(
        "/v1.0-alpha1/publish/bulk/pubsub/bulk",
        "application/json",
        "{not json",
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_EVENTS_SER")
    );
    let ok = r#"[{"entryId": "1", "event": {"a": 1}, "contentType": "application/json"}, {"entryId": "2", "event": "b", "contentType": "text/plain"}]"#;
    assert_eq!(
        post("/v1.0/publish/bulk/pubsub/bulk", "application/json", ok)
            .await
            .status,
        204
    );

    let mut grpc = d.grpc().await;
    let req = |pubsub: &str, topic: &str| PublishEventRequest {
        pubsub_name: pubsub.into(),
        topic: topic.into(),
        data: "x".into(),
        data_content_type: "text/plain".into(),
        metadata: Default::default(),
    };
    let code = |r: Result<tonic::Response<()>, tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(grpc.publish_event(req("nope", "open")).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(
        code(grpc.publish_event(req("pubsub", "closed")).await),
        Some(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        code(grpc.publish_event(req("pubsub", "")).await),
        Some(tonic::Code::InvalidArgument)
    );
    assert_eq!(code(grpc.publish_event(req("pubsub", "open")).await), None);
    assert_eq!(d.get("/v1.0/healthz").await.expect("health").status, 204);

    // With no pub/sub at all.
    let state_only = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.in-memory, version: v1}\n";
    let (bare, _h) = sidecar("ps-none", state_only, None).await;
    let r = bare.send("POST", "/v1.0/publish/pubsub/t", &[], "x").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_PUBSUB_NOT_CONFIGURED")
    );
}

#[tokio::test]
async fn streaming_subscription_over_grpc_with_bulk_publish() {
    let (d, _home) = sidecar("ps-stream", IN_MEMORY, None).await;
    let mut grpc = d.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let initial = SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(In::InitialRequest(
            SubscribeTopicEventsRequestInitialAlpha1 {
                pubsub_name: "pubsub".into(),
                topic: "feed".into(),
                metadata: Default::default(),
                dead_letter_topic: None,
            },
        )),
    };
    tx.send(initial).await.expect("send");
    let mut events = grpc
        .subscribe_topic_events_alpha1(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("subscribe")
        .into_inner();
    let first = events.message().await.expect("stream").expect("initial");
    assert!(matches!(
        first.subscribe_topic_events_response_type,
        Some(Out::InitialResponse(_))
    ));
    let md = d.get("/v1.0/metadata").await.expect("metadata").json();
    assert_eq!(md["subscriptions"][0]["type"], "STREAMING", "{md}");

    let entries = (0..3)
        .map(|i| BulkPublishRequestEntry {
            entry_id: i.to_string(),
            event: format!("{{\"n\": {i}}}").into(),
            content_type: "application/json".into(),
            metadata: Default::default(),
        })
        .collect();
    // The deprecated name, which older SDKs call, still answers.
    #[allow(deprecated)]
    let res = grpc
        .bulk_publish_event_alpha1(BulkPublishRequest {
            pubsub_name: "pubsub".into(),
            topic: "feed".into(),
            entries,
            metadata: Default::default(),
        })
        .await
        .expect("bulk publish")
        .into_inner();
    assert!(res.failed_entries.is_empty());
    let answer = |id: String, status: i32| SubscribeTopicEventsRequestAlpha1 {
        subscribe_topic_events_request_type: Some(In::EventProcessed(
            SubscribeTopicEventsRequestProcessedAlpha1 {
                id,
                status: Some(TopicEventResponse { status }),
            },
        )),
    };
    let mut seen = Vec::new();
    let mut retried = false;
    while seen.len() < 4 {
        let msg = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("event");
        let Some(Out::EventMessage(ev)) = msg.subscribe_topic_events_response_type else {
            panic!("not an event")
        };
        assert_eq!((ev.topic.as_str(), ev.pubsub_name.as_str()), ("feed", "pubsub"));
        let data: Value = serde_json::from_slice(&ev.data).expect("json data");
        seen.push(data["n"].as_i64().unwrap_or(-1));
        // The first event is asked for again once; the rest are acknowledged.
        let status = if data["n"] == 0 && !retried { 1 } else { 0 };
        retried |= status == 1;
        tx.send(answer(ev.id, status)).await.expect("answer");
    }
    seen.sort();
    assert_eq!(seen, [0, 0, 1, 2]);
}

#[tokio::test]
async fn bulk_subscriptions_get_batches_and_answer_per_entry() {
    let (inbox, app) = subscriber(json!([{
        "pubsubname": "pubsub", "topic": "batch", "route": "/bulk",
        "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10, "maxAwaitDurationMs": 300}
    }]))
    .await;
    let (d, _home) = sidecar("ps-bulk", IN_MEMORY, Some(app)).await;
    subscribed(&d, 1).await;
    let entries: Vec<Value> = (0..5)
        .map(|i| json!({"entryId": i.to_string(), "event": format!("e{i}"), "contentType": "text/plain"}))
        .chain([json!({"entryId": "s", "event": "skip-once", "contentType": "text/plain"})])
        .collect();
    let r = d
        .send(
            "POST",
            "/v1.0-alpha1/publish/bulk/pubsub/batch",
            &[("content-type", "application/json")],
            Value::Array(entries).to_string(),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    // Six entries, then the one left out comes again in a later batch.
    let got = inbox.wait("/bulk", 7).await;
    assert!(got.iter().all(|r| r.content_type == "com.dapr.event.sent.bulk"));
    let mut data: Vec<String> = got
        .iter()
        .filter_map(|r| r.event["event"]["data"].as_str().map(str::to_string))
        .collect();
    data.sort();
    assert_eq!(data, ["e0", "e1", "e2", "e3", "e4", "skip-once", "skip-once"]);
    assert!(
        got.iter()
            .all(|r| r.event["event"]["topic"] == "batch" && r.event["entryId"].is_string())
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        inbox.at("/bulk").len(),
        7,
        "acknowledged entries are not delivered again"
    );
}

#[tokio::test]
async fn inbound_resiliency_retries_and_app_max_concurrency_bound_deliveries() {
    let (inbox, app) = subscriber(json!([
        {"pubsubname": "pubsub", "topic": "failing", "route": "/fails"},
        {"pubsubname": "pubsub", "topic": "busy", "route": "/slow"},
    ]))
    .await;
    let yaml = format!(
        "{IN_MEMORY}---\napiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {{name: inbound}}\nspec:\n  policies:\n    retries:\n      quick:\n        policy: constant\n        duration: 5ms\n        maxRetries: 3\n  targets:\n    components:\n      pubsub:\n        inbound:\n          retry: quick\n"
    );
    let home = temp_dir("ps-inbound");
    let res = resources(&home, &yaml);
    let mut spec = Spec::new("ps-inbound", &home);
    spec.resources = Some(&res);
    spec.app_port = Some(app);
    spec.extra = vec!["--app-max-concurrency".into(), "2".into()];
    let d = Daprd::start(spec).await;
    subscribed(&d, 2).await;

    // The policy tries the app four times in quick succession before the
    // broker's own redelivery (100 ms later) begins.
    assert_eq!(
        d.send("POST", "/v1.0/publish/pubsub/failing", &[], "x")
            .await
            .status,
        204
    );
    inbox.wait("/fails", 4).await;
    assert_eq!(
        inbox.at("/fails").len(),
        4,
        "one delivery: the first try and three retries"
    );
    inbox.wait("/fails", 8).await;

    // Ten slow deliveries, never more than two at once in the app.
    for i in 0..10 {
        let r = d
            .send("POST", "/v1.0/publish/pubsub/busy", &[], format!("b{i}"))
            .await;
        assert_eq!(r.status, 204);
    }
    inbox.wait("/slow", 10).await;
    let most = inbox.most_busy.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} deliveries at once with --app-max-concurrency 2"
    );
}

#[tokio::test]
async fn a_bad_subscription_or_an_oversized_batch_is_refused_and_the_rest_keeps_working() {
    let (inbox, app) = subscriber(json!([])).await;
    let yaml = format!(
        "{IN_MEMORY}---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {{name: broken}}\nspec:\n  pubsubname: pubsub\n  topic: broken\n  routes:\n    rules:\n    - {{match: 'event.type = \"x\"', path: /never}}\n---\napiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {{name: fine}}\nspec:\n  pubsubname: pubsub\n  topic: fine\n  routes: {{default: /fine}}\n"
    );
    let home = temp_dir("ps-bad-input");
    let res = resources(&home, &yaml);
    let mut spec = Spec::new("ps-bad-input", &home);
    spec.resources = Some(&res);
    spec.app_port = Some(app);
    spec.extra = vec!["--max-body-size".into(), "1Ki".into()];
    let d = Daprd::start(spec).await;
    // The broken rule is reported and left out; the other subscription runs.
    let subs = subscribed(&d, 1).await;
    assert_eq!(subs.as_array().map(Vec::len), Some(1), "{subs}");
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(
        log.contains("Subscription broken") && log.contains("invalid match"),
        "{log}"
    );
    assert_eq!(
        d.send("POST", "/v1.0/publish/pubsub/fine", &[], "ok")
            .await
            .status,
        204
    );
    inbox.wait("/fine", 1).await;
    // A batch over --max-body-size is refused before it is read.
    let big: Vec<Value> = (0..40)
        .map(|i| json!({"entryId": i.to_string(), "event": "x".repeat(64), "contentType": "text/plain"}))
        .collect();
    let r = d
        .send(
            "POST",
            "/v1.0-alpha1/publish/bulk/pubsub/fine",
            &[("content-type", "application/json")],
            Value::Array(big).to_string(),
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(d.get("/v1.0/healthz").await.expect("health").status, 204);
}
