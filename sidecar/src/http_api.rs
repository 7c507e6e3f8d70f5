//! The Dapr HTTP API (port 3500): service invocation, state, pub/sub, secrets,
//! metadata, health and shutdown. Handlers only translate between HTTP and the protocol-neutral
//! operations on [`Runtime`]; errors are [`ApiError`]s rendered once.

use std::{collections::BTreeMap, sync::Arc, sync::atomic::Ordering};

use axum::{
    Router,
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post, put},
};
use bytes::Bytes;
use daprs_proto::{
    common::InvokeRequest,
    internals::{InternalInvokeRequest, InternalInvokeResponse},
};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::{
    app_channel::{HOP_BY_HOP, from_http_headers, http_extension},
    error::{ApiError, http_status_of},
    registry::Target,
    runtime::Runtime,
};

mod bindings;
mod configuration;
mod cors;
mod direct;
mod lock;
mod pubsub;
mod state;
mod unbuilt;

pub use direct::Api;
pub use state::{decode_bulk_keys, decode_save, decode_transaction};

type Rt = State<Arc<Runtime>>;

/// Builds the HTTP API router.
pub fn router(rt: Arc<Runtime>) -> Router {
    let api = Router::new()
        .route("/v1.0/invoke/{*rest}", any(invoke_path))
        .route(
            "/v1.0/state/{store}",
            post(state::save_state)
                .put(state::save_state)
                .delete(state::delete_bulk),
        )
        .route(
            "/v1.0-alpha1/state/{store}/query",
            post(state::query).put(state::query),
        )
        .route(
            "/v1.0/state/{store}/{key}",
            get(state::get_state)
                .delete(state::delete_state)
                .post(state::bulk_or_transaction)
                .put(state::bulk_or_transaction),
        )
        .route(
            "/v1.0/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish).put(pubsub::bulk_publish),
        )
        .route(
            "/v1.0-alpha1/publish/bulk/{pubsub}/{*topic}",
            post(pubsub::bulk_publish).put(pubsub::bulk_publish),
        )
        .route(
            "/v1.0/publish/{pubsub}/{*topic}",
            post(pubsub::publish).put(pubsub::publish),
        )
        .route("/v1.0/secrets/{store}/bulk", get(bulk_secrets))
        .route("/v1.0/secrets/{store}/{key}", get(get_secret))
        .route("/v1.0/metadata", get(get_metadata))
        .route("/v1.0/metadata/{key}", put(put_metadata))
        .route("/v1.0/shutdown", post(shutdown))
        .route(
            "/v1.0/bindings/{name}",
            post(bindings::invoke).put(bindings::invoke),
        )
        .route("/v1.0/configuration/{store}", get(configuration::get))
        .route("/v1.0-alpha1/configuration/{store}", get(configuration::get))
        .route(
            "/v1.0/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/subscribe",
            get(configuration::subscribe),
        )
        .route(
            "/v1.0/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        .route(
            "/v1.0-alpha1/configuration/{store}/{id}/unsubscribe",
            get(configuration::unsubscribe),
        )
        .route("/v1.0-alpha1/lock/{store}", post(lock::try_lock))
        .route("/v1.0-alpha1/unlock/{store}", post(lock::unlock))
        .merge(unbuilt::routes())
        .fallback(invoke_header);
    // Without a token nothing is checked, and no layer runs on each request.
    let api = match rt.settings.api_token.as_deref() {
        Some(token) => api.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            require_token,
        )),
        None => api,
    };
    let router = public_router(rt.clone()).merge(api);
    // Without HTTP rules every route is served; no check on each request.
    let router = if rt.config.api.restricts_http() {
        router.layer(middleware::from_fn_with_state(rt.clone(), api_access))
    } else {
        router
    };
    let router = match &rt.settings.allowed_origins {
        Some(origins) => router.layer(middleware::from_fn_with_state(
            Arc::new(cors::Origins(origins.clone())),
            cors::layer,
        )),
        None => router,
    };
    router.with_state(rt)
}

/// `spec.api` of the Configuration: a route that is not enabled behaves as if
/// it did not exist, falling through to the `dapr-app-id` header form of
/// invocation (or to a bare 404 when invocation is not enabled either).
async fn api_access(State(rt): Rt, req: Request, next: Next) -> Response {
    let access = &rt.config.api;
    if access.http_permits(req.uri().path()) {
        next.run(req).await
    } else if access.http_permits("/") {
        invoke_header(State(rt.clone()), req).await.into_response()
    } else {
        (StatusCode::NOT_FOUND, "404 page not found").into_response()
    }
}

/// Routes that need no API token: health (and, on the public port, metadata).
pub fn public_router(_rt: Arc<Runtime>) -> Router<Arc<Runtime>> {
    Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
}

/// The router of `--dapr-public-port`: health and metadata only, no token.
pub fn public_port_router(rt: Arc<Runtime>) -> Router {
    public_router(rt.clone())
        .route("/v1.0/metadata", get(get_metadata))
        .route("/v1.0/metadata/{key}", put(put_metadata))
        .with_state(rt)
}

async fn require_token(State(want): State<Arc<str>>, mut req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("dapr-api-token")
        .is_some_and(|v| v.as_bytes() == want.as_bytes());
    if !ok {
        return (StatusCode::UNAUTHORIZED, "invalid api token").into_response();
    }
    req.headers_mut().remove("dapr-api-token");
    next.run(req).await
}

/// Reads a request body up to `--max-body-size`.
async fn read_body(rt: &Runtime, body: Body) -> Result<Bytes, ApiError> {
    let limit = rt.settings.max_body_size;
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::body_too_large(limit))
        }
        Err(e) => Err(ApiError::body_read(&*e)),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Query parameters as (name, value) pairs, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `metadata.<key>=<value>` query parameters (first value wins).
fn query_metadata(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(key) = k.strip_prefix("metadata.") {
            out.entry(key.to_string()).or_insert_with(|| v.clone());
        }
    }
    out
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Component response metadata as `metadata.<key>` headers, as Dapr
/// answers state reads and output bindings; a pair that cannot be a
/// header is left out.
fn metadata_headers(h: &mut HeaderMap, metadata: impl IntoIterator<Item = (String, String)>) {
    const PREFIX: &[u8] = b"metadata.";
    let mut name = Vec::with_capacity(64);
    for (k, v) in metadata {
        name.clear();
        name.extend_from_slice(PREFIX);
        name.extend_from_slice(k.as_bytes());
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(&name), HeaderValue::try_from(v)) {
            h.insert(name, value);
        }
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed(format!("failed to parse the request body as JSON: {e}")))
}

// === invocation ===

/// Splits `/v1.0/invoke/<target>/method/<method...>`.
pub fn split_invoke_path(rest: &str) -> Result<(String, String), ApiError> {
    let (target, method) = rest
        .split_once("/method/")
        .or_else(|| rest.strip_suffix("/method").map(|t| (t, "")))
        .ok_or_else(|| {
            ApiError::new(
                "ERR_DIRECT_INVOKE",
                StatusCode::NOT_FOUND,
                tonic::Code::NotFound,
                "failed getting app id either from the URL path or the header dapr-app-id",
            )
        })?;
    Ok((percent_decode(target), method.to_string()))
}

async fn invoke_path(State(rt): Rt, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path();
    let rest = path.strip_prefix("/v1.0/invoke/").unwrap_or_default();
    let (target, method) = split_invoke_path(rest)?;
    invoke(&rt, &target, method, req).await
}

fn target_from_basic_auth(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v.strip_prefix("Basic ")?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.strip_prefix("dapr-app-id:").map(str::to_string)
}

async fn invoke_header(State(rt): Rt, req: Request) -> Result<Response, ApiError> {
    let target = req
        .headers()
        .get("dapr-app-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| target_from_basic_auth(req.headers()));
    let Some(target) = target else {
        return Err(ApiError::new(
            "ERR_DIRECT_INVOKE",
            StatusCode::NOT_FOUND,
            tonic::Code::NotFound,
            "failed getting app id either from the URL path or the header dapr-app-id",
        ));
    };
    let method = req.uri().path().trim_start_matches('/').to_string();
    invoke(&rt, &target, method, req).await
}

async fn invoke(rt: &Runtime, target: &str, method: String, req: Request) -> Result<Response, ApiError> {
    if let Some(endpoint) = rt.endpoints.lookup(target) {
        let (parts, body) = req.into_parts();
        let out = crate::endpoints::Outgoing {
            path: crate::invoke::clean_method(&method)?,
            query: parts.uri.query().map(str::to_string),
            body: read_body(rt, body).await?,
            method: parts.method,
            headers: parts.headers,
        };
        return endpoint.call(target, out, rt.resiliency.app(target)).await;
    }
    let target = Target::parse(target).map_err(|e| {
        ApiError::new(
            "ERR_DIRECT_INVOKE",
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            e,
        )
    })?;
    let (parts, body) = req.into_parts();
    let body = read_body(rt, body).await?;
    let metadata = from_http_headers(
        &parts.headers,
        &[
            "dapr-app-id",
            "dapr-api-token",
            "host",
            "content-length",
            "content-type",
            "authorization",
        ],
    );
    let mut metadata = metadata;
    // Basic auth carrying the target is Dapr's addressing, not the caller's credential.
    if let Some(auth) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && target_from_basic_auth(&parts.headers).is_none()
    {
        metadata.insert(
            "authorization".into(),
            daprs_proto::internals::ListStringValue {
                values: vec![auth.into()],
            },
        );
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let request = InternalInvokeRequest {
        ver: 0,
        metadata,
        message: Some(InvokeRequest {
            method,
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: body.to_vec(),
            }),
            content_type,
            http_extension: Some(http_extension(&parts.method, parts.uri.query().unwrap_or(""))),
        }),
        actor: None,
    };
    let res = rt.invoke(&target, request).await?;
    Ok(http_response(res))
}

/// Renders an app's reply for an HTTP caller: HTTP apps' status, headers and body
/// pass through; gRPC apps' replies become 200 or the mapped error status.
pub fn http_response(res: InternalInvokeResponse) -> Response {
    let status = res.status.unwrap_or_default();
    let msg = res.message.unwrap_or_default();
    let body = msg.data.map(|a| a.value).unwrap_or_default();
    if status.code >= 100 {
        let code = u16::try_from(status.code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut out = Response::new(Body::from(body));
        *out.status_mut() = code;
        let h = out.headers_mut();
        for (k, list) in &res.headers {
            let lower = k.to_ascii_lowercase();
            if HOP_BY_HOP.contains(&lower.as_str()) || lower == "content-length" {
                continue;
            }
            let Ok(name) = http::HeaderName::from_bytes(lower.as_bytes()) else {
                continue;
            };
            for v in &list.values {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.append(name.clone(), v);
                }
            }
        }
        if !h.contains_key(header::CONTENT_TYPE)
            && !msg.content_type.is_empty()
            && let Ok(v) = HeaderValue::from_str(&msg.content_type)
        {
            h.insert(header::CONTENT_TYPE, v);
        }
        return out;
    }
    let code = tonic::Code::from_i32(status.code);
    if code == tonic::Code::Ok {
        let mut out = Response::new(Body::from(body));
        if let Ok(v) = HeaderValue::from_str(&msg.content_type)
            && !msg.content_type.is_empty()
        {
            out.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        return out;
    }
    let json = serde_json::json!({ "code": status.code, "message": status.message, "details": [] });
    let mut out = (http_status_of(code), json.to_string()).into_response();
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    out
}

// === metadata, health, shutdown ===

// === secrets ===

async fn get_secret(
    State(rt): Rt,
    Path((store, key)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let meta = query_metadata(&query_pairs(req.uri().query()));
    let secret = rt.get_secret(&store, &key, &meta).await?;
    if secret.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(axum::Json(secret).into_response())
}

async fn bulk_secrets(State(rt): Rt, Path(store): Path<String>, req: Request) -> Result<Response, ApiError> {
    let meta = query_metadata(&query_pairs(req.uri().query()));
    Ok(axum::Json(rt.bulk_secrets(&store, &meta).await?).into_response())
}

async fn get_metadata(State(rt): Rt) -> Response {
    axum::Json(crate::metadata_api::http_json(&rt)).into_response()
}

async fn put_metadata(State(rt): Rt, Path(key): Path<String>, req: Request) -> Result<StatusCode, ApiError> {
    let body = read_body(&rt, req.into_body()).await?;
    let value = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("metadata value must be UTF-8"))?;
    crate::metadata_api::set_extended(&rt, key, value)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn healthz(State(rt): Rt, req: Request) -> Result<StatusCode, ApiError> {
    let pairs = query_pairs(req.uri().query());
    if let Some(id) = query_value(&pairs, "appid")
        && id != rt.app_id
    {
        return Err(ApiError::internal(
            "ERR_HEALTH_APPID_NOT_MATCH",
            "dapr app-id does not match",
        ));
    }
    let unready = rt.unready();
    if unready.is_empty() {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::internal(
            "ERR_HEALTH_NOT_READY",
            format!("dapr is not ready: [{}]", unready.join(" ")),
        ))
    }
}

async fn healthz_outbound(State(rt): Rt) -> Result<StatusCode, ApiError> {
    if rt.health.outbound.load(Ordering::Relaxed) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::internal(
            "ERR_OUTBOUND_HEALTH_NOT_READY",
            "dapr outbound is not ready",
        ))
    }
}

async fn shutdown(State(rt): Rt, headers: HeaderMap) -> StatusCode {
    let force = headers
        .get("dapr-force-shutdown")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    rt.shutdown_requested(force);
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_paths() {
        assert_eq!(
            split_invoke_path("app/method/a/b").expect("ok"),
            ("app".into(), "a/b".into())
        );
        assert_eq!(split_invoke_path("app.ns/method/x").expect("ok").0, "app.ns");
        assert_eq!(
            split_invoke_path("http%3A%2F%2Fh%3A1/method/x").expect("ok").0,
            "http://h:1"
        );
        assert_eq!(
            split_invoke_path("app/method").expect("ok"),
            ("app".into(), "".into())
        );
        assert_eq!(
            split_invoke_path("app").expect_err("no method").http,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn query_metadata_and_decoding() {
        let pairs = query_pairs(Some(
            "metadata.ttlInSeconds=5&metadata.ttlInSeconds=9&x=a%20b+c&metadata.k%2Fv=%zz",
        ));
        let meta = query_metadata(&pairs);
        assert_eq!(meta["ttlInSeconds"], "5");
        assert_eq!(meta["k/v"], "%zz");
        assert_eq!(query_value(&pairs, "x"), Some("a b c"));
    }

    #[test]
    fn grpc_codes_to_http() {
        assert_eq!(
            http_status_of(tonic::Code::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status_of(tonic::Code::Unimplemented),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            http_status_of(tonic::Code::Cancelled),
            StatusCode::REQUEST_TIMEOUT
        );
    }
}
