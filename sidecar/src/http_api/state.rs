//! `/v1.0/state/...`: save, get, delete, bulk get and transactions.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{Rt, metadata_headers, parse_json, query_metadata, query_pairs, query_value, read_body};
use crate::{
    error::ApiError,
    state_api::{BulkItem, SaveItem, TxOp, check_consistency, item_metadata, parse_concurrency},
};

#[derive(Deserialize, Default)]
#[serde(default)]
struct StateOptionsJson {
    concurrency: String,
    consistency: String,
}

#[derive(Deserialize)]
struct SaveJson {
    key: String,
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    options: Option<StateOptionsJson>,
}

impl SaveJson {
    fn into_item(self, query_meta: &BTreeMap<String, String>) -> Result<SaveItem, ApiError> {
        let opts = self.options.unwrap_or_default();
        check_consistency(&opts.consistency)?;
        let mut metadata = self.metadata;
        metadata.extend(query_meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        let value = serde_json::to_vec(&self.value).map_err(|e| ApiError::malformed(e.to_string()))?;
        Ok(SaveItem {
            key: self.key,
            value: value.into(),
            etag: self.etag.filter(|e| !e.is_empty()),
            metadata,
            concurrency: parse_concurrency(&opts.concurrency)?,
        })
    }
}

/// The items of a `POST /v1.0/state/{store}` body, with the query string's
/// `metadata.*` added to each.
pub fn decode_save(body: &[u8], query: Option<&str>) -> Result<Vec<SaveItem>, ApiError> {
    let meta = query_metadata(&query_pairs(query));
    let items: Vec<SaveJson> = parse_json(body)?;
    items.into_iter().map(|i| i.into_item(&meta)).collect()
}

/// The keys of a `POST /v1.0/state/{store}/bulk` body.
pub fn decode_bulk_keys(body: &[u8]) -> Result<Vec<String>, ApiError> {
    parse_json::<BulkJson>(body).map(|b| b.keys)
}

/// The operations of a `POST /v1.0/state/{store}/transaction` body.
pub fn decode_transaction(body: &[u8], query: Option<&str>) -> Result<Vec<TxOp>, ApiError> {
    let meta = query_metadata(&query_pairs(query));
    let tx: TxJson = parse_json(body)?;
    let mut ops = Vec::with_capacity(tx.operations.len());
    for op in tx.operations {
        ops.push(match op.operation.as_str() {
            "upsert" => TxOp::Upsert(op.request.into_item(&meta)?),
            "delete" => {
                let item = op.request.into_item(&meta)?;
                TxOp::Delete(item.key, item.etag, item.metadata)
            }
            other => {
                return Err(ApiError::new(
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    StatusCode::BAD_REQUEST,
                    tonic::Code::InvalidArgument,
                    format!("operation type {other} not supported"),
                ));
            }
        });
    }
    Ok(ops)
}

pub(super) async fn save_state(
    State(rt): Rt,
    Path(store): Path<String>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let query = req.uri().query().map(str::to_string);
    let body = read_body(&rt, req.into_body()).await?;
    rt.save_state(&store, decode_save(&body, query.as_deref())?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn get_state(
    State(rt): Rt,
    Path((store, key)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(req.uri().query());
    check_consistency(query_value(&pairs, "consistency").unwrap_or(""))?;
    let Some(item) = rt.get_state(&store, &key).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let mut res = Response::new(Body::from(item.data.clone()));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&item.etag) {
        h.insert(header::ETAG, v);
    }
    metadata_headers(h, item_metadata(&item));
    Ok(res)
}

pub(super) async fn delete_state(
    State(rt): Rt,
    Path((store, key)): Path<(String, String)>,
    req: Request,
) -> Result<StatusCode, ApiError> {
    let pairs = query_pairs(req.uri().query());
    parse_concurrency(query_value(&pairs, "concurrency").unwrap_or(""))?;
    check_consistency(query_value(&pairs, "consistency").unwrap_or(""))?;
    let etag = req
        .headers()
        .get(header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or_default().trim_matches('"').to_string());
    rt.delete_state(&store, &key, etag).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct BulkJson {
    keys: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    parallelism: Option<i64>,
}

#[derive(Serialize)]
struct BulkOut {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Stored bytes inlined as JSON when they are JSON, else as a JSON string.
fn raw_json(data: &[u8]) -> Option<Box<serde_json::value::RawValue>> {
    serde_json::from_slice::<Box<serde_json::value::RawValue>>(data)
        .ok()
        .or_else(|| serde_json::value::to_raw_value(&String::from_utf8_lossy(data)).ok())
}

#[derive(Deserialize)]
struct TxJson {
    operations: Vec<TxOpJson>,
}

#[derive(Deserialize)]
struct TxOpJson {
    operation: String,
    request: SaveJson,
}

pub(super) async fn bulk_or_transaction(
    State(rt): Rt,
    Path((store, action)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let query = req.uri().query().map(str::to_string);
    match action.as_str() {
        "bulk" => {
            let body = read_body(&rt, req.into_body()).await?;
            let items = rt.bulk_get_state(&store, &decode_bulk_keys(&body)?).await?;
            let out: Vec<BulkOut> = items
                .into_iter()
                .map(
                    |BulkItem {
                         key,
                         data,
                         etag,
                         error,
                         metadata,
                     }| BulkOut {
                        key,
                        data: data.as_deref().and_then(raw_json),
                        etag,
                        metadata,
                        error,
                    },
                )
                .collect();
            Ok(axum::Json(out).into_response())
        }
        "transaction" => {
            let body = read_body(&rt, req.into_body()).await?;
            let ops = decode_transaction(&body, query.as_deref())?;
            rt.transact_state(&store, ops).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::new(
            "ERR_METHOD_NOT_ALLOWED",
            StatusCode::METHOD_NOT_ALLOWED,
            tonic::Code::Unimplemented,
            format!(
                "{} is not allowed on a state key; use GET or DELETE",
                req.method()
            ),
        )),
    }
}

#[derive(Serialize)]
struct QueryOut {
    results: Vec<BulkOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// `POST /v1.0-alpha1/state/{store}/query`: 200 with the page, 204 when nothing matched.
pub(super) async fn query(
    State(rt): Rt,
    Path(store): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_body(&rt, req.into_body()).await?;
    let page = rt.query_state(&store, &body).await?;
    if page.results.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let results = page
        .results
        .into_iter()
        .map(|(key, item)| BulkOut {
            key,
            data: raw_json(&item.data),
            etag: Some(item.etag),
            metadata: BTreeMap::new(),
            error: None,
        })
        .collect();
    Ok(axum::Json(QueryOut {
        results,
        token: page.token,
    })
    .into_response())
}

#[derive(Deserialize)]
struct DeleteJson {
    key: String,
    #[serde(default)]
    etag: Option<String>,
}

/// `DELETE /v1.0/state/{store}` with a JSON array of `{key, etag}`: the
/// HTTP form of gRPC `DeleteBulkState`; stops at the first failure.
pub(super) async fn delete_bulk(
    State(rt): Rt,
    Path(store): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_body(&rt, req.into_body()).await?;
    let items: Vec<DeleteJson> = parse_json(&body)?;
    for d in items {
        rt.delete_state(&store, &d.key, d.etag.filter(|e| !e.is_empty()))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
