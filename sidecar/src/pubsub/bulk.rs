//! Bulk subscriptions (`bulkSubscribe.enabled`): events bound for one route
//! are gathered — up to `maxMessagesCount` (100), or for at most
//! `maxAwaitDurationMs` (1000) — and delivered in one call: HTTP `POST
//! /<route>` with Dapr's bulk envelope, or gRPC `OnBulkTopicEvent` (falling
//! back to `OnBulkTopicEventAlpha1` for older SDKs). The app answers per
//! entry; an entry it leaves out is delivered again.

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
    time::Duration,
};

use daprs_proto::{
    common::http_extension::Verb,
    runtime::{
        TopicEventBulkRequest, TopicEventBulkRequestEntry, TopicEventCeRequest,
        app_callback_alpha_client::AppCallbackAlphaClient, app_callback_client::AppCallbackClient,
        topic_event_bulk_request_entry::Event,
    },
};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{
    answer::{Outcome, grpc_outcome, http_outcome, topic_event_request},
    cloudevent,
    subscriptions::Subscription,
};
use crate::{app_channel::AppChannel, runtime::Runtime};

/// Dapr's `type` of a bulk envelope.
pub const BULK_TYPE: &str = "com.dapr.event.sent.bulk";

/// One event waiting for its batch.
pub struct Entry {
    pub path: String,
    pub event: Map<String, Value>,
    answer: oneshot::Sender<Outcome>,
}

/// Gathers a subscription's events into batches and delivers them.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Entry>,
}

impl Batcher {
    /// Starts the batching task of a bulk subscription.
    pub fn start(rt: Weak<Runtime>, sub: Arc<Subscription>) -> Self {
        let bulk = sub.bulk.clone().unwrap_or_default();
        let max = usize::try_from(bulk.max_messages_count.unwrap_or(100))
            .unwrap_or(100)
            .max(1);
        let wait =
            Duration::from_millis(u64::try_from(bulk.max_await_duration_ms.unwrap_or(1000)).unwrap_or(1000));
        let (tx, rx) = mpsc::channel(max * 2);
        tokio::spawn(gather(rt, sub, rx, max, wait));
        Self { tx }
    }

    /// Hands one event over and waits for what the app said about it.
    pub async fn deliver(&self, path: String, event: Map<String, Value>) -> Outcome {
        let (answer, outcome) = oneshot::channel();
        let entry = Entry { path, event, answer };
        if self.tx.send(entry).await.is_err() {
            return Outcome::Retry;
        }
        outcome.await.unwrap_or(Outcome::Retry)
    }
}

/// Collects batches until every sender is gone.
async fn gather(
    rt: Weak<Runtime>,
    sub: Arc<Subscription>,
    mut rx: mpsc::Receiver<Entry>,
    max: usize,
    wait: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                _ => break,
            }
        }
        // One call per route; each batch goes out while the next gathers.
        let mut by_path: HashMap<String, Vec<Entry>> = HashMap::new();
        for e in batch {
            by_path.entry(e.path.clone()).or_default().push(e);
        }
        for (path, entries) in by_path {
            let (rt, sub) = (rt.clone(), sub.clone());
            tokio::spawn(async move {
                // Without the runtime or its app the answers are dropped: each entry is retried.
                if let Some(rt) = rt.upgrade()
                    && let Some(app) = rt.app.as_ref()
                {
                    send(app, &sub, &path, entries).await;
                }
            });
        }
    }
}

/// Delivers one batch and answers each entry.
async fn send(app: &AppChannel, sub: &Subscription, path: &str, entries: Vec<Entry>) {
    let ids: Vec<String> = entries.iter().map(|_| daprs_components::uuid_v4()).collect();
    let statuses = if app.grpc_channel().is_some() {
        send_grpc(app, sub, path, &ids, &entries).await
    } else {
        send_http(app, sub, path, &ids, &entries).await
    };
    for (id, e) in ids.iter().zip(entries) {
        let outcome = match &statuses {
            Ok(map) => map.get(id).copied().unwrap_or(Outcome::Retry),
            Err(all) => *all,
        };
        let _ = e.answer.send(outcome);
    }
}

/// The HTTP bulk envelope Dapr posts to a route.
pub fn http_envelope(sub: &Subscription, ids: &[String], events: &[&Map<String, Value>]) -> Value {
    let entries: Vec<Value> = ids
        .iter()
        .zip(events)
        .map(|(id, ce)| {
            json!({
                "entryId": id,
                "event": ce,
                "contentType": cloudevent::CONTENT_TYPE,
                "metadata": {},
            })
        })
        .collect();
    json!({
        "id": daprs_components::uuid_v4(),
        "type": BULK_TYPE,
        "topic": sub.topic,
        "pubsubname": sub.pubsub,
        "metadata": sub.metadata,
        "entries": entries,
    })
}

/// Per-entry outcomes from an HTTP app's answer, or one outcome for all.
pub fn http_statuses(status: u16, body: &[u8]) -> Result<HashMap<String, Outcome>, Outcome> {
    if !(200..300).contains(&status) {
        return Err(http_outcome(status, body));
    }
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Entries the answer leaves out (all of them, without `statuses`) are retried.
    let Some(list) = parsed.get("statuses").and_then(Value::as_array) else {
        return Ok(HashMap::new());
    };
    Ok(list
        .iter()
        .filter_map(|s| {
            let id = s.get("entryId")?.as_str()?.to_string();
            let outcome = http_outcome(200, &serde_json::to_vec(s).unwrap_or_default());
            Some((id, outcome))
        })
        .collect())
}

async fn send_http(
    app: &AppChannel,
    sub: &Subscription,
    path: &str,
    ids: &[String],
    entries: &[Entry],
) -> Result<HashMap<String, Outcome>, Outcome> {
    let events: Vec<&Map<String, Value>> = entries.iter().map(|e| &e.event).collect();
    let body = serde_json::to_vec(&http_envelope(sub, ids, &events)).unwrap_or_default();
    match app
        .call_http(Verb::Post, path, "application/json", body, Default::default())
        .await
    {
        Ok((status, body)) => http_statuses(status, &body),
        Err(_) => Err(Outcome::Retry),
    }
}

async fn send_grpc(
    app: &AppChannel,
    sub: &Subscription,
    path: &str,
    ids: &[String],
    entries: &[Entry],
) -> Result<HashMap<String, Outcome>, Outcome> {
    let Some(channel) = app.grpc_channel() else {
        return Err(Outcome::Retry);
    };
    let request = TopicEventBulkRequest {
        id: daprs_components::uuid_v4(),
        entries: ids
            .iter()
            .zip(entries)
            .map(|(id, e)| {
                let ev = topic_event_request(&e.event, path);
                TopicEventBulkRequestEntry {
                    entry_id: id.clone(),
                    content_type: ev.data_content_type.clone(),
                    metadata: HashMap::new(),
                    event: Some(Event::CloudEvent(TopicEventCeRequest {
                        id: ev.id,
                        source: ev.source,
                        r#type: ev.r#type,
                        spec_version: ev.spec_version,
                        data_content_type: ev.data_content_type,
                        data: ev.data,
                        extensions: ev.extensions,
                    })),
                }
            })
            .collect(),
        metadata: sub.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        topic: sub.topic.clone(),
        pubsub_name: sub.pubsub.clone(),
        r#type: BULK_TYPE.into(),
        path: path.to_string(),
    };
    let _permit = app.admit().await;
    let mut res = AppCallbackClient::new(channel.clone())
        .on_bulk_topic_event(app.grpc_request(request.clone()))
        .await;
    if matches!(&res, Err(s) if s.code() == tonic::Code::Unimplemented) {
        res = AppCallbackAlphaClient::new(channel)
            .on_bulk_topic_event_alpha1(app.grpc_request(request))
            .await;
    }
    match res {
        Ok(r) => Ok(r
            .into_inner()
            .statuses
            .into_iter()
            .map(|s| (s.entry_id, grpc_outcome(Ok(s.status))))
            .collect()),
        Err(s) => Err(grpc_outcome(Err(s.code()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bulk_answers() {
        let ok = br#"{"statuses": [{"entryId": "a", "status": "SUCCESS"}, {"entryId": "b", "status": "DROP"}, {"entryId": "c", "status": "RETRY"}]}"#;
        let map = http_statuses(200, ok).expect("per entry");
        assert_eq!(map["a"], Outcome::Success);
        assert_eq!(map["b"], Outcome::Drop);
        assert_eq!(map["c"], Outcome::Retry);
        assert!(!map.contains_key("d"), "a missing entry is retried by the caller");
        assert_eq!(http_statuses(200, b""), Ok(HashMap::new()));
        assert_eq!(http_statuses(404, b""), Err(Outcome::Drop));
        assert_eq!(http_statuses(500, b""), Err(Outcome::Retry));
    }
}
