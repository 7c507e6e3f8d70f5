//! `/v1.0-alpha1/lock/{store}` and `/v1.0-alpha1/unlock/{store}`. Bodies are
//! the gRPC messages in protobuf's JSON form, so both field spellings
//! (`resourceId` and `resource_id`) are accepted and numbers may be strings.

use axum::{
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{Rt, parse_json, read_body};
use crate::error::ApiError;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LockJson {
    #[serde(alias = "resource_id")]
    resource_id: String,
    #[serde(alias = "lock_owner")]
    lock_owner: String,
    #[serde(alias = "expiry_in_seconds")]
    expiry_in_seconds: Option<serde_json::Value>,
}

/// protojson's int32: a JSON number or a string holding one.
fn int32(v: Option<&serde_json::Value>) -> Result<i32, ApiError> {
    let bad = || ApiError::malformed("expiryInSeconds must be a whole number of seconds");
    match v {
        None | Some(serde_json::Value::Null) => Ok(0),
        Some(serde_json::Value::Number(n)) => n.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(bad),
        Some(serde_json::Value::String(s)) => s.trim().parse().map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

pub async fn try_lock(State(rt): Rt, Path(store): Path<String>, req: Request) -> Result<Response, ApiError> {
    let body = read_body(&rt, req.into_body()).await?;
    let l: LockJson = parse_json(&body)?;
    let expiry = int32(l.expiry_in_seconds.as_ref())?;
    let success = rt.try_lock(&store, &l.resource_id, &l.lock_owner, expiry).await?;
    Ok(axum::Json(serde_json::json!({ "success": success })).into_response())
}

pub async fn unlock(State(rt): Rt, Path(store): Path<String>, req: Request) -> Result<Response, ApiError> {
    let body = read_body(&rt, req.into_body()).await?;
    let l: LockJson = parse_json(&body)?;
    let status = rt.unlock(&store, &l.resource_id, &l.lock_owner).await?;
    Ok(axum::Json(serde_json::json!({ "status": status as i32 })).into_response())
}
