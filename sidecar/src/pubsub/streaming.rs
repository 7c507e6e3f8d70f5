//! Streaming subscriptions (`SubscribeTopicEventsAlpha1`): the subscriber
//! holds one bidirectional call open instead of serving an app port. The
//! first message names the topic; daprd answers with an initial response,
//! then sends each event and waits for the subscriber's answer by event id
//! before the broker acknowledges it.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use daprs_components::{
    Error,
    pubsub::{self as broker, Handler, Subscribed},
};
use daprs_proto::runtime::{
    SubscribeTopicEventsRequestAlpha1, SubscribeTopicEventsResponseAlpha1,
    SubscribeTopicEventsResponseInitialAlpha1,
    subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In,
    subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out,
};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use super::{
    answer::{Outcome, grpc_outcome, topic_event_request},
    cloudevent,
    subscriptions::{Kind, Subscription},
};
use crate::runtime::{PubSubEntry, Runtime};

/// The response stream of a streaming subscription.
pub type Events = Pin<Box<dyn Stream<Item = Result<SubscribeTopicEventsResponseAlpha1, Status>> + Send>>;

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<i32>>>>;

/// Subscribes `sub` on `entry`'s broker, sending each event to the
/// subscriber through `tx` and waiting for its answer in `waiting`.
async fn start(
    rt: &Arc<Runtime>,
    entry: Arc<PubSubEntry>,
    sub: &Arc<Subscription>,
    tx: &mpsc::Sender<Result<SubscribeTopicEventsResponseAlpha1, Status>>,
    waiting: &Waiting,
) -> Result<Subscribed, Status> {
    let handler: Handler = {
        let (tx, waiting, sub, entry, rt) = (
            tx.clone(),
            waiting.clone(),
            sub.clone(),
            entry.clone(),
            Arc::downgrade(rt),
        );
        Arc::new(move |msg| {
            let (tx, waiting, sub, entry, rt) = (
                tx.clone(),
                waiting.clone(),
                sub.clone(),
                entry.clone(),
                rt.clone(),
            );
            Box::pin(async move {
                let ce = match serde_json::from_slice::<Value>(&msg.data) {
                    Ok(Value::Object(ce)) if !sub.raw_payload() => ce,
                    _ => cloudevent::wrap_raw(&msg.data, &sub.pubsub, &sub.topic),
                };
                let rt = rt.upgrade().ok_or(Error::Closed)?;
                let expiration = ce.get("expiration").and_then(Value::as_str);
                if cloudevent::expired(expiration, SystemTime::now()) {
                    return super::delivery::drop_message(&rt, &entry, &sub, msg).await;
                }
                let mut event = topic_event_request(&ce, "");
                if event.id.is_empty() {
                    event.id = daprs_components::uuid_v4();
                }
                let (answered, answer) = oneshot::channel();
                daprs_components::lock(&waiting).insert(event.id.clone(), answered);
                let out = SubscribeTopicEventsResponseAlpha1 {
                    subscribe_topic_events_response_type: Some(Out::EventMessage(event)),
                };
                if tx.send(Ok(out)).await.is_err() {
                    return Err(Error::Closed);
                }
                // A subscriber that goes away leaves the event unacknowledged.
                let status = answer.await.map_err(|_| Error::Closed)?;
                match grpc_outcome(Ok(status)) {
                    Outcome::Success => Ok(()),
                    Outcome::Drop => super::delivery::drop_message(&rt, &entry, &sub, msg).await,
                    Outcome::Retry => Err(Error::Backend("the subscriber asked for the event again".into())),
                }
            })
        })
    };
    let request = broker::Subscription {
        topic: sub.topic.clone(),
        metadata: sub.metadata.clone(),
    };
    entry
        .broker
        .subscribe(request, handler)
        .await
        .map_err(|e| Status::internal(format!("subscribing to {}/{}: {e}", sub.pubsub, sub.topic)))
}

/// Starts a streaming subscription from the subscriber's first message.
pub async fn subscribe(
    rt: Arc<Runtime>,
    mut incoming: Streaming<SubscribeTopicEventsRequestAlpha1>,
) -> Result<Events, Status> {
    let first = incoming
        .message()
        .await?
        .and_then(|m| m.subscribe_topic_events_request_type);
    let Some(In::InitialRequest(init)) = first else {
        return Err(Status::invalid_argument(
            "the first message of SubscribeTopicEventsAlpha1 must be an initial request",
        ));
    };
    let entry = rt.pubsub_to_subscribe(&init.pubsub_name, &init.topic)?;
    let sub = Arc::new(Subscription {
        pubsub: init.pubsub_name.clone(),
        topic: init.topic.clone(),
        rules: Vec::new(),
        default_path: Some(String::new()),
        dead_letter_topic: init.dead_letter_topic.filter(|t| !t.is_empty()),
        metadata: init.metadata.into_iter().collect(),
        bulk: None,
        kind: Kind::Streaming,
        name: None,
    });
    let (tx, rx) = mpsc::channel::<Result<SubscribeTopicEventsResponseAlpha1, Status>>(16);
    let waiting: Waiting = Arc::default();
    let mut changed = rt.components_changed.subscribe();
    let mut running = Some(start(&rt, entry, &sub, &tx, &waiting).await?);
    let initial = SubscribeTopicEventsResponseAlpha1 {
        subscribe_topic_events_response_type: Some(Out::InitialResponse(
            SubscribeTopicEventsResponseInitialAlpha1 {},
        )),
    };
    let _ = tx.send(Ok(initial)).await;
    let token = rt.add_subscription(sub.clone());
    // Answers from the subscriber, until it ends the call; a replaced
    // component moves the subscription to its new broker.
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = incoming.next() => m,
                name = changed.recv() => {
                    if matches!(&name, Ok(n) if *n == sub.pubsub) {
                        // Not waited for: its deliveries in flight finish as this
                        // loop reads their answers.
                        drop(running.take());
                        match rt.pubsub(&sub.pubsub, &sub.topic) {
                            Ok(entry) => match start(&rt, entry, &sub, &tx, &waiting).await {
                                Ok(r) => running = Some(r),
                                Err(e) => {
                                    let _ = tx.send(Err(e)).await;
                                    break;
                                }
                            },
                            Err(e) => {
                                let _ = tx.send(Err(e.into())).await;
                                break;
                            }
                        }
                    }
                    continue;
                }
            };
            let Some(Ok(msg)) = msg else { break };
            if let Some(In::EventProcessed(done)) = msg.subscribe_topic_events_request_type {
                let status = done.status.map_or(0, |s| s.status);
                if let Some(answered) = daprs_components::lock(&waiting).remove(&done.id) {
                    let _ = answered.send(status);
                }
            }
        }
        daprs_components::lock(&waiting).clear();
        if let Some(r) = running {
            r.stop().await;
        }
        rt.remove_subscription(token);
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
