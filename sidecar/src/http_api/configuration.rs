//! `/v1.0/configuration/{store}` (and the `v1.0-alpha1` routes): read items,
//! subscribe the app to their changes, unsubscribe.

use axum::{
    extract::{Path, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{Rt, query_metadata, query_pairs};
use crate::{configuration_api::items_json, error::ApiError};

/// The `key` query parameters, in order.
fn keys(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, v)| k == "key" && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

pub async fn get(State(rt): Rt, Path(store): Path<String>, req: Request) -> Result<Response, ApiError> {
    let pairs = query_pairs(req.uri().query());
    let items = rt
        .get_configuration(&store, &keys(&pairs), &query_metadata(&pairs))
        .await?;
    if items.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(axum::Json(items_json(&items)).into_response())
}

pub async fn subscribe(State(rt): Rt, Path(store): Path<String>, req: Request) -> Result<Response, ApiError> {
    let pairs = query_pairs(req.uri().query());
    let id = rt
        .subscribe_configuration_for_app(&store, &keys(&pairs), &query_metadata(&pairs))
        .await?;
    Ok(axum::Json(serde_json::json!({ "id": id })).into_response())
}

pub async fn unsubscribe(State(rt): Rt, Path((store, id)): Path<(String, String)>) -> Response {
    match rt.unsubscribe_configuration(&store, &id) {
        Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        // Dapr answers a failed unsubscribe with only a message.
        Err(e) if e.code == "ERR_CONFIGURATION_UNSUBSCRIBE" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "message": e.message })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
