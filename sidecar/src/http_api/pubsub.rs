//! `POST /v1.0/publish/{pubsub}/{topic}` and the bulk publish routes.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_json, query_metadata, query_pairs, read_body};
use crate::{
    error::ApiError,
    pubsub::{BulkEntry, Publish},
    runtime::Runtime,
};

fn header_value(req: &Request, name: &http::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Publishes the body as one event.
pub async fn publish(
    State(rt): State<Arc<Runtime>>,
    Path((pubsub, topic)): Path<(String, String)>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let metadata = query_metadata(&query_pairs(req.uri().query()));
    let content_type = header_value(&req, &header::CONTENT_TYPE);
    let (traceparent, tracestate) = (
        header_value(&req, &crate::trace::TRACEPARENT_HEADER),
        header_value(&req, &crate::trace::TRACESTATE_HEADER),
    );
    let data = read_body(&rt, req.into_body()).await?;
    rt.publish(Publish {
        pubsub,
        topic,
        data,
        content_type,
        metadata,
        traceparent,
        tracestate,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkEntryJson {
    #[serde(default)]
    entry_id: String,
    event: Value,
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

impl BulkEntryJson {
    /// The event's bytes: JSON as JSON, a string as its text for other types.
    fn into_entry(self) -> BulkEntry {
        let json = self.content_type.is_empty() || self.content_type.to_ascii_lowercase().contains("json");
        let event = match self.event {
            Value::String(s) if !json => Bytes::from(s),
            v => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        };
        let content_type = Some(self.content_type)
            .filter(|c| !c.is_empty())
            .or_else(|| Some("application/json".into()));
        BulkEntry {
            entry_id: self.entry_id,
            event,
            content_type,
            metadata: self.metadata,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FailedJson {
    entry_id: String,
    error: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BulkFailure {
    failed_entries: Vec<FailedJson>,
    error_code: &'static str,
}

/// Publishes a JSON array of entries; 204 when all went out, else 500 with
/// the entries that did not.
pub async fn bulk_publish(
    State(rt): State<Arc<Runtime>>,
    Path((pubsub, topic)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let metadata = query_metadata(&query_pairs(req.uri().query()));
    let body = read_body(&rt, req.into_body()).await?;
    let entries: Vec<BulkEntryJson> = parse_json(&body).map_err(|e| {
        ApiError::new(
            "ERR_PUBSUB_EVENTS_SER",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            e.message,
        )
    })?;
    let entries = entries.into_iter().map(BulkEntryJson::into_entry).collect();
    let failed = rt.bulk_publish(&pubsub, &topic, entries, &metadata).await?;
    if failed.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let body = BulkFailure {
        failed_entries: failed
            .into_iter()
            .map(|f| FailedJson {
                entry_id: f.entry_id,
                error: f.error,
            })
            .collect(),
        error_code: "ERR_PUBSUB_PUBLISH_MESSAGE",
    };
    Ok((StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response())
}
