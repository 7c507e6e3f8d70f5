//! `POST|PUT /v1.0/bindings/{name}`: an output binding call. The body is
//! `{"data": …, "metadata": {…}, "operation": "…"}`; `data` reaches the
//! binding as its JSON text (a JSON string arrives quoted, as in Dapr).
//! The binding's metadata comes back as `metadata.<key>` headers.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Rt, metadata_headers, parse_json, read_body};
use crate::error::ApiError;

#[derive(Deserialize, Default)]
#[serde(default)]
struct CallJson<'a> {
    /// As written: it is passed on, not read, so it is not rebuilt.
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    metadata: BTreeMap<String, String>,
    operation: String,
}

pub async fn invoke(State(rt): Rt, Path(name): Path<String>, req: Request) -> Result<Response, ApiError> {
    let mut metadata = BTreeMap::new();
    let headers = req.headers();
    crate::trace::into_binding_metadata(|k| headers.get(k).and_then(|v| v.to_str().ok()), &mut metadata)
        .map_err(ApiError::malformed)?;
    let body = read_body(&rt, req.into_body()).await?;
    let call: CallJson<'_> = parse_json(&body)?;
    if call.operation.is_empty() {
        return Err(ApiError::malformed("operation is required (e.g. create or get)"));
    }
    // `null` (a RawValue of it, or the field absent) is no data.
    let data = match call.data.map(RawValue::get) {
        None | Some("null") => bytes::Bytes::new(),
        // A slice of the body it was read from, not a copy.
        Some(text) => body.slice_ref(text.as_bytes()),
    };
    // The caller's own metadata wins over what the headers carry.
    metadata.extend(call.metadata);
    let res = rt.invoke_binding(&name, call.operation, data, metadata).await?;
    let mut out = match res.data {
        Some(d) if !d.is_empty() => {
            let mut r = (StatusCode::OK, d).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    };
    metadata_headers(out.headers_mut(), res.metadata);
    Ok(out)
}
