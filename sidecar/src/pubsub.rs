//! The pub/sub building block, shared by the HTTP and gRPC APIs: publishing
//! (one event or a batch) with Dapr's CloudEvent envelope, topic scoping and
//! errors; [`delivery`] runs the app's subscriptions.

pub mod answer;
pub mod bulk;
pub mod cloudevent;
pub mod delivery;
pub mod routing;
pub mod scopes;
pub mod streaming;
pub mod subscriptions;

use std::{collections::HashSet, sync::Arc, time::SystemTime};

use bytes::Bytes;
use daprs_components::{Metadata, pubsub::Message};
use http::StatusCode;
use tonic::Code;

use crate::{
    components::backend_failure,
    error::ApiError,
    runtime::{PubSubEntry, Runtime},
};

/// One event to publish, as both APIs describe it.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    pub pubsub: String,
    pub topic: String,
    pub data: Bytes,
    pub content_type: Option<String>,
    /// Request metadata: `rawPayload`, `ttlInSeconds`, `cloudevent.*`, broker keys.
    pub metadata: Metadata,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// One entry of a bulk publish.
#[derive(Debug, Clone, Default)]
pub struct BulkEntry {
    pub entry_id: String,
    pub event: Bytes,
    pub content_type: Option<String>,
    pub metadata: Metadata,
}

/// An entry a bulk publish could not publish, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEntry {
    pub entry_id: String,
    pub error: String,
}

fn pubsub_error(code: &'static str, http: StatusCode, grpc: Code, message: impl Into<String>) -> ApiError {
    ApiError::new(code, http, grpc, message)
}

/// Whether request metadata asks for the payload to go out unwrapped.
fn raw_payload(metadata: &Metadata) -> Result<bool, ApiError> {
    match metadata
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("rawPayload"))
    {
        None => Ok(false),
        Some((_, v)) => v.trim().to_ascii_lowercase().parse::<bool>().map_err(|_| {
            pubsub_error(
                "ERR_PUBSUB_REQUEST_METADATA",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("metadata rawPayload must be true or false, got {v:?}"),
            )
        }),
    }
}

impl Runtime {
    /// The named pub/sub and this app's topic scopes, or Dapr's errors.
    pub fn pubsub(&self, name: &str, topic: &str) -> Result<Arc<PubSubEntry>, ApiError> {
        if name.is_empty() {
            return Err(pubsub_error(
                "ERR_PUBSUB_EMPTY",
                StatusCode::NOT_FOUND,
                Code::InvalidArgument,
                "pubsub name is empty",
            ));
        }
        let entry = {
            let loaded = self
                .loaded
                .read()
                .map_err(|_| ApiError::internal("ERR_PUBSUB_NOT_FOUND", "component table unavailable"))?;
            if loaded.pubsubs.is_empty() {
                return Err(pubsub_error(
                    "ERR_PUBSUB_NOT_CONFIGURED",
                    StatusCode::BAD_REQUEST,
                    Code::FailedPrecondition,
                    "no pubsub is configured",
                ));
            }
            loaded.pubsubs.get(name).cloned().ok_or_else(|| {
                pubsub_error(
                    "ERR_PUBSUB_NOT_FOUND",
                    StatusCode::NOT_FOUND,
                    Code::InvalidArgument,
                    format!("pubsub {name} is not found"),
                )
                .with_reason("DAPR_PUBSUB_NOT_FOUND")
                .with_resource("pubsub", name)
            })?
        };
        if topic.is_empty() {
            return Err(pubsub_error(
                "ERR_TOPIC_NAME_EMPTY",
                StatusCode::NOT_FOUND,
                Code::InvalidArgument,
                format!("topic is empty in pubsub {name}"),
            ));
        }
        Ok(entry)
    }

    /// The message for one event: the envelope (unless raw) and the
    /// metadata the broker gets.
    fn message(&self, p: &Publish) -> Result<Message, ApiError> {
        let raw = raw_payload(&p.metadata)?;
        let (data, content_type) = if raw {
            (p.data.clone(), p.content_type.clone())
        } else {
            let origin = cloudevent::Origin {
                app_id: &self.app_id,
                pubsub: &p.pubsub,
                topic: &p.topic,
                traceparent: p.traceparent.as_deref(),
                tracestate: p.tracestate.as_deref(),
            };
            let ce = cloudevent::envelope(
                &p.data,
                p.content_type.as_deref(),
                &p.metadata,
                &origin,
                SystemTime::now(),
            )
            .map_err(|e| {
                pubsub_error(
                    "ERR_PUBSUB_CLOUD_EVENTS_SER",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::InvalidArgument,
                    format!("cannot create a CloudEvent for topic {}: {}", p.topic, e.0),
                )
            })?;
            (ce, Some(cloudevent::CONTENT_TYPE.to_string()))
        };
        Ok(Message {
            topic: p.topic.clone(),
            data,
            content_type,
            metadata: p.metadata.clone(),
        })
    }

    /// Dapr's error for a topic the component's scopes keep from this app.
    fn forbidden(&self, pubsub: &str, topic: &str) -> ApiError {
        pubsub_error(
            "ERR_PUBSUB_FORBIDDEN",
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            format!(
                "topic {topic} is not allowed for app id {} on pubsub {pubsub}",
                self.app_id
            ),
        )
    }

    fn check_publish_scope(&self, entry: &PubSubEntry, pubsub: &str, topic: &str) -> Result<(), ApiError> {
        if entry.scopes.may_publish(topic) {
            Ok(())
        } else {
            Err(self.forbidden(pubsub, topic))
        }
    }

    /// The named pub/sub, if this app may subscribe to `topic` on it.
    pub fn pubsub_to_subscribe(&self, name: &str, topic: &str) -> Result<Arc<PubSubEntry>, ApiError> {
        let entry = self.pubsub(name, topic)?;
        if entry.scopes.may_subscribe(topic) {
            Ok(entry)
        } else {
            Err(self.forbidden(name, topic))
        }
    }

    /// Publishes one event.
    pub async fn publish(&self, p: Publish) -> Result<(), ApiError> {
        let entry = self.pubsub(&p.pubsub, &p.topic)?;
        self.check_publish_scope(&entry, &p.pubsub, &p.topic)?;
        let msg = self.message(&p)?;
        self.send(&entry, &p.pubsub, msg).await.map_err(|e| {
            pubsub_error(
                "ERR_PUBSUB_PUBLISH_MESSAGE",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
                format!(
                    "error when publishing to topic {} in pubsub {}: {e}",
                    p.topic, p.pubsub
                ),
            )
        })
    }

    /// Hands a message to the broker under the component's outbound policy.
    pub(crate) async fn send(
        &self,
        entry: &PubSubEntry,
        pubsub: &str,
        msg: Message,
    ) -> daprs_components::Result<()> {
        if !self.metrics.enabled() {
            return self
                .outbound(pubsub, || entry.broker.publish(msg.clone()), backend_failure)
                .await;
        }
        let start = std::time::Instant::now();
        let topic = msg.topic.clone();
        let result = self
            .outbound(pubsub, || entry.broker.publish(msg.clone()), backend_failure)
            .await;
        self.metrics
            .published(pubsub, &topic, result.is_ok(), crate::metrics::elapsed_ms(start));
        result
    }

    /// Publishes a batch; each entry gets its own envelope, and the entries
    /// that fail are reported with their errors (the rest are published).
    pub async fn bulk_publish(
        &self,
        pubsub: &str,
        topic: &str,
        entries: Vec<BulkEntry>,
        metadata: &Metadata,
    ) -> Result<Vec<FailedEntry>, ApiError> {
        let entry = self.pubsub(pubsub, topic)?;
        self.check_publish_scope(&entry, pubsub, topic)?;
        let mut ids = HashSet::new();
        for e in &entries {
            if e.entry_id.is_empty() || !ids.insert(e.entry_id.as_str()) {
                return Err(pubsub_error(
                    "ERR_PUBSUB_EVENTS_SER",
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    format!(
                        "entryId {:?} is missing or used twice: each entry needs a unique entryId",
                        e.entry_id
                    ),
                ));
            }
        }
        let mut messages = Vec::with_capacity(entries.len());
        for e in entries {
            let mut md = metadata.clone();
            md.extend(e.metadata);
            let p = Publish {
                pubsub: pubsub.to_string(),
                topic: topic.to_string(),
                data: e.event,
                content_type: e.content_type,
                metadata: md,
                ..Default::default()
            };
            messages.push((e.entry_id, self.message(&p)?));
        }
        let sends = messages.into_iter().map(|(id, msg)| {
            let entry = entry.clone();
            async move { (id, self.send(&entry, pubsub, msg).await) }
        });
        let failed = futures_util::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(|(entry_id, r)| {
                r.err().map(|e| FailedEntry {
                    entry_id,
                    error: e.to_string(),
                })
            })
            .collect();
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_payload_metadata_must_be_a_boolean() {
        let md = |v: &str| Metadata::from([("rawPayload".to_string(), v.to_string())]);
        assert!(!raw_payload(&Metadata::new()).expect("none"));
        assert!(raw_payload(&md("TRUE")).expect("true"));
        assert!(!raw_payload(&md("false")).expect("false"));
        assert_eq!(
            raw_payload(&md("yes")).expect_err("bad").code,
            "ERR_PUBSUB_REQUEST_METADATA"
        );
    }
}
