//! Delivering events to the app: each subscription becomes a broker
//! subscription whose handler reads the CloudEvent, picks the route, calls
//! the app (HTTP `POST /<route>` or gRPC `OnTopicEvent`) under the
//! component's inbound resiliency policy, and turns the app's answer into
//! Dapr's outcome: acknowledge, redeliver, or drop (to the dead-letter topic
//! when there is one). The broker acknowledges only what ends here in `Ok`.

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use daprs_components::{
    Error,
    pubsub::{self as broker, Handler, Message, Subscribed},
};
use daprs_proto::{
    common::http_extension::Verb,
    runtime::{TopicEventResponse, app_callback_client::AppCallbackClient},
};
use daprs_telemetry::trace::{Span, SpanContext};
use http::HeaderName;
use serde_json::{Map, Value};
use tower::{Layer, ServiceExt};

use super::{
    answer::{Outcome, grpc_outcome, http_outcome, topic_event_request},
    bulk::Batcher,
    cloudevent,
    subscriptions::{self, Subscription},
};
use crate::{
    app_channel::{AppChannel, MAX_UNARY},
    resiliency::Failure,
    runtime::{PubSubEntry, Runtime},
};

static ON_TOPIC_EVENT: std::sync::LazyLock<http::uri::PathAndQuery> = std::sync::LazyLock::new(|| {
    http::uri::PathAndQuery::from_static("/dapr.proto.runtime.v1.AppCallback/OnTopicEvent")
});

/// How long each attempt at `GET /dapr/subscribe` (or
/// `ListTopicSubscriptions`) may take: the sidecar is ready only once the
/// app has answered.
const SUBSCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

// The headers of a delivery, named once rather than parsed per event.
const PUBSUBNAME: HeaderName = HeaderName::from_static("pubsubname");

/// What a delivery reads of an event: the whole event where something needs
/// it (routing rules, gRPC apps, batches), else only the attributes an HTTP
/// delivery uses, which spares building the event as a map each time.
pub enum Event {
    Full(Map<String, Value>),
    Attrs(Attrs),
}

/// The attributes of an event an HTTP delivery reads.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Attrs {
    id: Option<String>,
    expiration: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Event {
    /// Reads `data` as an event: None when it is not a JSON object.
    fn parse(data: &[u8], whole: bool) -> Option<Self> {
        if whole {
            match serde_json::from_slice::<Value>(data) {
                Ok(Value::Object(m)) => Some(Self::Full(m)),
                _ => None,
            }
        } else {
            // A struct also reads from a JSON array; an event is an object.
            let first = data.iter().find(|b| !b.is_ascii_whitespace());
            if first != Some(&b'{') {
                return None;
            }
            serde_json::from_slice::<Attrs>(data).ok().map(Self::Attrs)
        }
    }

    /// A string attribute.
    fn attr(&self, name: &str) -> Option<&str> {
        match self {
            Self::Full(m) => m.get(name).and_then(Value::as_str),
            Self::Attrs(a) => match name {
                "id" => a.id.as_deref(),
                "expiration" => a.expiration.as_deref(),
                "traceparent" => a.traceparent.as_deref(),
                "tracestate" => a.tracestate.as_deref(),
                _ => None,
            },
        }
    }

    fn expired(&self, now: SystemTime) -> bool {
        cloudevent::expired(self.attr("expiration"), now)
    }

    /// The whole event, read again from `body` if only attributes were.
    fn whole(&self, body: &[u8]) -> std::borrow::Cow<'_, Map<String, Value>> {
        match self {
            Self::Full(m) => std::borrow::Cow::Borrowed(m),
            Self::Attrs(_) => match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => std::borrow::Cow::Owned(m),
                _ => std::borrow::Cow::Owned(Map::new()),
            },
        }
    }
}

/// Calls the app once with an event; transport failures count as Retry.
async fn call_app(
    app: &AppChannel,
    to: &Subscriber,
    path: &str,
    ev: &Event,
    body: &Bytes,
    trace: Option<SpanContext>,
) -> (Outcome, Option<Failure>) {
    let sub = &*to.sub;
    if let Some(peer) = app.peer() {
        let _permit = app.admit().await;
        let mut req = app.grpc_request(topic_event_request(&ev.whole(body), path));
        if let Some(ctx) = &trace {
            crate::trace::set_grpc_metadata(req.metadata_mut(), ctx);
        }
        let (metadata, _, event) = req.into_parts();
        // One write, on daprd's own connection to the app.
        let res = peer
            .unary::<TopicEventResponse>(&ON_TOPIC_EVENT, metadata.into_headers(), &event, MAX_UNARY)
            .await
            .map(|(_, r)| r.status)
            .map_err(|s| s.code());
        let failure = res.as_ref().err().map(|c| Failure::Grpc(*c as i32));
        return (grpc_outcome(res), failure);
    }
    let mut headers = http::HeaderMap::with_capacity(4);
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(cloudevent::CONTENT_TYPE),
    );
    let mut header = |k: HeaderName, v: &str| {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    };
    header(PUBSUBNAME, &sub.pubsub);
    // The app's span is a child of the delivery's, when there is one.
    let traceparent = trace.map(|t| t.traceparent());
    // The event's attributes carry the same names as the headers.
    for (name, own) in [
        (crate::trace::TRACEPARENT_HEADER, traceparent.as_deref()),
        (crate::trace::TRACESTATE_HEADER, None),
    ] {
        if let Some(v) = own.or(ev.attr(name.as_str())).filter(|v| !v.is_empty()) {
            header(name, v);
        }
    }
    let uri = match &to.default_uri {
        Some(uri) if sub.default_path.as_deref() == Some(path) => Ok(uri.clone()),
        _ => app.event_uri(path),
    };
    let answer = match uri {
        Ok(uri) => app.post(uri, headers, body.clone()).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok((status, body)) => {
            let outcome = http_outcome(status, &body);
            let failure = (outcome == Outcome::Retry).then_some(Failure::Http(status));
            (outcome, failure)
        }
        Err(e) => {
            tracing::debug!(error = %e, "delivery to the app failed");
            (Outcome::Retry, Some(Failure::Transport))
        }
    }
}

/// One delivery: everything between the broker handing over a message and
/// the answer it gets.
async fn handle(rt: &Runtime, to: &Subscriber, msg: Message) -> Result<(), Error> {
    let (sub, entry, batcher) = (&*to.sub, &to.entry, to.batcher.as_ref());
    let (ev, body) = if sub.raw_payload() {
        let ce = cloudevent::wrap_raw(&msg.data, &sub.pubsub, &sub.topic);
        let body = Bytes::from(serde_json::to_vec(&ce).unwrap_or_default());
        (Event::Full(ce), body)
    } else {
        match Event::parse(&msg.data, to.whole_event) {
            Some(ev) => (ev, msg.data.clone()),
            None => {
                tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, "a message is not a CloudEvent; set rawPayload on the subscription to receive raw messages");
                return drop_message(rt, entry, sub, msg).await;
            }
        }
    };
    if ev.expired(SystemTime::now()) {
        tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, id = ?ev.attr("id"), "event expired; dropped");
        return drop_message(rt, entry, sub, msg).await;
    }
    let route = match &ev {
        Event::Full(ce) => sub.route(ce),
        Event::Attrs(_) => sub.default_path.as_deref(),
    };
    let Some(path) = route.map(str::to_string) else {
        tracing::debug!(pubsub = %sub.pubsub, topic = %sub.topic, "no route matches the event; acknowledged");
        return Ok(());
    };
    let app = rt.app().map_err(|e| Error::Backend(e.message))?;
    if !rt.health.app_healthy.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::Backend("the app is unhealthy".into()));
    }
    let start = std::time::Instant::now();
    let parent = ev.attr("traceparent").and_then(SpanContext::parse);
    let mut span = crate::trace::callback(&rt.tracer, parent, &["pubsub/", &sub.topic]);
    if let Some(s) = span.as_mut().filter(|s| s.recording()) {
        s.set_attribute("messaging.system", "pubsub");
        s.set_attribute("messaging.destination", &sub.topic);
        s.set_attribute("messaging.destination_kind", "topic");
    }
    let trace = span.as_ref().map(Span::context);
    let outcome = match batcher {
        Some(b) => Some(b.deliver(path, ev.whole(&body).into_owned()).await),
        None => deliver_one(rt, app, to, &path, &ev, &body, trace).await,
    };
    let status = match outcome {
        Some(Outcome::Success) => "success",
        Some(Outcome::Drop) => "drop",
        Some(Outcome::Retry) | None => "retry",
    };
    rt.metrics
        .delivered(&sub.pubsub, &sub.topic, status, crate::metrics::elapsed_ms(start));
    if let Some(mut span) = span {
        if status != "success" {
            span.set_error(status);
        }
        span.end();
    }
    match outcome {
        Some(Outcome::Success) => Ok(()),
        Some(Outcome::Drop) => {
            tracing::warn!(pubsub = %sub.pubsub, topic = %sub.topic, id = ?ev.attr("id"), "the app dropped the event");
            drop_message(rt, entry, sub, msg).await
        }
        Some(Outcome::Retry) | None => Err(Error::Backend(format!(
            "the app asked for {}/{} to be delivered again",
            sub.pubsub, sub.topic
        ))),
    }
}

/// Delivers one event under the component's inbound resiliency policy;
/// None when the policy gave up.
async fn deliver_one(
    rt: &Runtime,
    app: &AppChannel,
    to: &Subscriber,
    path: &str,
    ev: &Event,
    body: &Bytes,
    trace: Option<SpanContext>,
) -> Option<Outcome> {
    let policy = rt.resiliency.inbound(&to.sub.pubsub, "pubsub");
    let attempt = tower::service_fn(|()| async {
        match call_app(app, to, path, ev, body, trace).await {
            (Outcome::Retry, failure) => Err(failure.unwrap_or(Failure::Transport)),
            (outcome, _) => Ok(outcome),
        }
    });
    let failed = |r: &Result<Outcome, Failure>| r.as_ref().err().copied();
    policy.layer(failed).layer(attempt).oneshot(()).await.ok()
}

/// A dropped message goes to the dead-letter topic when there is one; it
/// is acknowledged only once it is there.
pub(crate) async fn drop_message(
    rt: &Runtime,
    entry: &PubSubEntry,
    sub: &Subscription,
    mut msg: Message,
) -> Result<(), Error> {
    let Some(dead) = &sub.dead_letter_topic else {
        return Ok(());
    };
    msg.topic = dead.clone();
    rt.send(entry, &sub.pubsub, msg).await
}

/// What every delivery of one subscription shares, made once when it starts.
struct Subscriber {
    sub: Arc<Subscription>,
    entry: Arc<PubSubEntry>,
    batcher: Option<Batcher>,
    /// The default route's URI, when the app speaks HTTP.
    default_uri: Option<http::Uri>,
    /// Whether deliveries read the whole event (routing rules, a gRPC app,
    /// batches) rather than the attributes an HTTP delivery uses.
    whole_event: bool,
}

/// The running subscriptions of the app.
#[derive(Default)]
pub struct Subscribers {
    running: Vec<Running>,
}

/// A running subscription and its token in the runtime's list.
struct Running {
    sub: Arc<Subscription>,
    handle: Subscribed,
    token: u64,
}

impl Subscribers {
    /// Subscribes each one on its broker; one that cannot start is logged
    /// and the rest go on.
    pub async fn start(&mut self, rt: &Arc<Runtime>, subs: Vec<Subscription>) {
        for sub in subs {
            let entry = match rt.pubsub_to_subscribe(&sub.pubsub, &sub.topic) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, error = %e.message, "subscription not started");
                    continue;
                }
            };
            let sub = Arc::new(sub);
            let batcher = sub
                .bulk
                .as_ref()
                .is_some_and(|b| b.enabled)
                .then(|| Batcher::start(Arc::downgrade(rt), sub.clone()));
            let default_uri = rt
                .app
                .as_ref()
                .zip(sub.default_path.as_deref())
                .and_then(|(app, path)| app.event_uri(path).ok());
            let http_app = rt.app.as_ref().is_some_and(|a| a.grpc_channel().is_none());
            let whole_event = !(http_app && sub.rules.is_empty() && batcher.is_none());
            let to = Arc::new(Subscriber {
                sub: sub.clone(),
                entry: entry.clone(),
                batcher,
                default_uri,
                whole_event,
            });
            let handler: Handler = {
                let rt = Arc::downgrade(rt);
                Arc::new(move |msg| {
                    let (rt, to) = (rt.clone(), to.clone());
                    Box::pin(async move {
                        let rt = rt.upgrade().ok_or(Error::Closed)?;
                        handle(&rt, &to, msg).await
                    })
                })
            };
            let request = broker::Subscription {
                topic: sub.topic.clone(),
                metadata: sub.metadata.clone(),
            };
            match entry.broker.subscribe(request, handler).await {
                Ok(s) => {
                    tracing::info!(pubsub = %sub.pubsub, topic = %sub.topic, kind = ?sub.kind, "subscribed");
                    let token = rt.add_subscription(sub.clone());
                    self.running.push(Running {
                        sub,
                        handle: s,
                        token,
                    });
                }
                Err(e) => {
                    tracing::error!(pubsub = %sub.pubsub, topic = %sub.topic, error = %e, "subscribing failed")
                }
            }
        }
    }

    /// Replaces what the Subscription resource `name` declares: its running
    /// subscriptions stop (deliveries in flight finish), `subs` start.
    pub async fn replace(&mut self, rt: &Arc<Runtime>, name: &str, subs: Vec<Subscription>) {
        let (old, keep) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| r.sub.name.as_deref() == Some(name));
        self.running = keep;
        Self::stop_all(rt, old).await;
        self.start(rt, subs).await;
    }

    /// Subscribes again everything on pub/sub `name`, after the component
    /// was replaced: the old broker stops delivering, the new one starts.
    pub async fn restart_pubsub(&mut self, rt: &Arc<Runtime>, name: &str) {
        let (old, keep): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| r.sub.pubsub == name);
        self.running = keep;
        let subs = old.iter().map(|r| (*r.sub).clone()).collect();
        Self::stop_all(rt, old).await;
        self.start(rt, subs).await;
    }

    /// The names of the Subscription resources with running subscriptions.
    pub fn declared(&self) -> std::collections::BTreeSet<String> {
        self.running.iter().filter_map(|r| r.sub.name.clone()).collect()
    }

    async fn stop_all(rt: &Runtime, list: Vec<Running>) {
        let stops = list.into_iter().map(|r| async move {
            r.handle.stop().await;
            rt.remove_subscription(r.token);
        });
        futures_util::future::join_all(stops).await;
    }

    /// Stops every subscription, letting deliveries in flight finish.
    pub async fn stop(self, rt: &Runtime) {
        Self::stop_all(rt, self.running).await;
    }
}

/// Starts the app's subscriptions once it listens (the declared ones and
/// its own), then keeps them current while the sidecar runs: a replaced
/// pub/sub component takes its subscriptions along, and in Kubernetes the
/// operator's Subscription changes apply. Returns once they have started.
pub async fn serve(
    rt: &Arc<Runtime>,
    subscribers: &Arc<tokio::sync::Mutex<Subscribers>>,
    declared: Vec<Subscription>,
    operator: Option<crate::control_plane::Operator>,
) {
    let Some(app) = rt.app.as_ref() else { return };
    // Listening first, so no change made while they start is missed.
    let mut changed = rt.components_changed.subscribe();
    let mut subs = declared;
    if !rt.settings.skip_app_subscribe {
        subs.extend(programmatic(app).await);
    }
    subscribers.lock().await.start(rt, subs).await;
    let until_shutdown = |work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        let mut stopping = rt.shutdown.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = work => {}
                _ = stopping.wait_for(|v| *v) => {}
            }
        });
    };
    let (rt2, subs2) = (rt.clone(), subscribers.clone());
    until_shutdown(Box::pin(async move {
        loop {
            match changed.recv().await {
                Ok(name) => subs2.lock().await.restart_pubsub(&rt2, &name).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    }));
    if let Some(op) = operator {
        let (rt, subscribers) = (rt.clone(), subscribers.clone());
        until_shutdown(Box::pin(
            async move { op.follow_subscriptions(rt, subscribers).await },
        ));
    }
}

/// The app's own subscriptions: `GET /dapr/subscribe` on HTTP apps,
/// `ListTopicSubscriptions` on gRPC apps; none when it has no such route.
pub async fn programmatic(app: &AppChannel) -> Vec<Subscription> {
    let mut errors = Vec::new();
    let subs = if let Some(channel) = app.grpc_channel() {
        let mut client = AppCallbackClient::new(channel);
        let call = client.list_topic_subscriptions(app.grpc_request(()));
        let answer = tokio::time::timeout(SUBSCRIBE_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("the app did not answer in time")));
        match answer {
            Ok(res) => subscriptions::from_grpc_app(res.into_inner(), &mut errors),
            Err(s) if s.code() == tonic::Code::Unimplemented => Vec::new(),
            Err(s) => {
                tracing::warn!(error = %s.message(), "ListTopicSubscriptions failed; no programmatic subscriptions");
                Vec::new()
            }
        }
    } else {
        // The app's port is open but it may still be starting: a failed
        // call is tried again a few times, as Dapr's start-up policy does.
        let mut tries = 0;
        let answer = loop {
            // The sidecar is ready only once this is answered: an app that
            // never answers gets no programmatic subscriptions.
            let call = app.call_http(Verb::Get, "dapr/subscribe", "", Vec::new(), Default::default());
            let answer = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, call).await {
                Ok(answer) => answer,
                Err(_) => Err(crate::error::ApiError::internal(
                    "ERR_DIRECT_INVOKE",
                    "the app did not answer GET /dapr/subscribe in time",
                )),
            };
            if answer.is_ok() || tries == 3 {
                break answer;
            }
            tries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        match answer {
            Ok((200, body)) => subscriptions::from_http_app(&body, &mut errors),
            Ok((404, _)) => Vec::new(),
            Ok((code, _)) => {
                tracing::warn!(
                    status = code,
                    "GET /dapr/subscribe failed; no programmatic subscriptions"
                );
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "GET /dapr/subscribe failed; no programmatic subscriptions");
                Vec::new()
            }
        }
    };
    for e in errors {
        tracing::error!(error = %e, "subscription ignored");
    }
    subs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_objects_read_whole_or_by_attributes() {
        let data = br#"{"id": "1", "expiration": "2000-01-01T00:00:00Z", "traceparent": "tp", "data": {"a": [1, 2]}}"#;
        for whole in [true, false] {
            let ev = Event::parse(data, whole).expect("an event");
            assert_eq!((ev.attr("id"), ev.attr("traceparent")), (Some("1"), Some("tp")));
            assert!(ev.expired(SystemTime::now()));
            assert_eq!(ev.whole(data)["data"]["a"][1], 2);
            assert!(Event::parse(b"[null, null]", whole).is_none());
            assert!(Event::parse(b"not json", whole).is_none());
        }
    }
}
