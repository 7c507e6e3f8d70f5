//! The Dapr gRPC API (port 50001): `dapr.proto.runtime.v1.Dapr` for service
//! invocation, state, pub/sub, secrets, metadata and shutdown.

use std::{collections::BTreeMap, sync::Arc};

use daprs_proto::{
    common::{InvokeResponse, StateItem, state_options::StateConcurrency},
    internals::{InternalInvokeRequest, InternalInvokeResponse},
    runtime::{
        BulkPublishRequest, BulkPublishResponse, BulkPublishResponseFailedEntry, BulkStateItem,
        DeleteBulkStateRequest, DeleteStateRequest, ExecuteStateTransactionRequest, GetBulkSecretRequest,
        GetBulkSecretResponse, GetBulkStateRequest, GetBulkStateResponse, GetMetadataRequest,
        GetMetadataResponse, GetSecretRequest, GetSecretResponse, GetStateRequest, GetStateResponse,
        InvokeServiceRequest, PublishEventRequest, SaveStateRequest, SecretResponse, SetMetadataRequest,
        ShutdownRequest, SubscribeTopicEventsRequestAlpha1, dapr_server::Dapr,
    },
};
use tonic::{
    Code, Request, Response, Status,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};

use daprs_components::state::Concurrency;

use crate::{
    app_channel::{HOP_BY_HOP, from_grpc_metadata},
    error::ApiError,
    pubsub::{BulkEntry, Publish},
    registry::Target,
    runtime::Runtime,
    state_api::{SaveItem, TxOp, item_metadata},
};

/// The `Dapr` service.
pub struct DaprApi {
    /// Shared sidecar state.
    pub rt: Arc<Runtime>,
}

fn meta_map(m: std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn concurrency(item: &StateItem) -> Concurrency {
    match item.options.as_ref().map(|o| o.concurrency()) {
        Some(StateConcurrency::ConcurrencyFirstWrite) => Concurrency::FirstWrite,
        _ => Concurrency::LastWrite,
    }
}

fn save_item(item: StateItem) -> SaveItem {
    let concurrency = concurrency(&item);
    SaveItem {
        key: item.key,
        value: item.value,
        etag: item.etag.map(|e| e.value),
        metadata: meta_map(item.metadata),
        concurrency,
    }
}

/// gRPC code for an app's HTTP status (Dapr's table; note 400 → Internal).
pub fn grpc_code_of_http(status: u16) -> Code {
    match status {
        200..=299 => Code::Ok,
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::Cancelled,
        409 => Code::AlreadyExists,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Unknown,
    }
}

fn response_metadata(headers: &crate::invoke::Metadata) -> MetadataMap {
    let mut out = MetadataMap::new();
    for (k, list) in headers {
        let lower = k.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || lower == "content-length"
            || lower.starts_with("grpc-")
            || lower == "content-type"
        {
            continue;
        }
        let Ok(key) = MetadataKey::from_bytes(lower.as_bytes()) else {
            continue;
        };
        for v in &list.values {
            if let Ok(v) = MetadataValue::try_from(v.as_str()) {
                out.append(key.clone(), v);
            }
        }
    }
    out
}

/// Renders an app's reply for a gRPC `InvokeService` caller.
pub fn grpc_response(res: InternalInvokeResponse) -> Result<Response<InvokeResponse>, Status> {
    let status = res.status.clone().unwrap_or_default();
    let message = res.message.clone().unwrap_or_default();
    let mut md = response_metadata(&res.headers);
    if status.code >= 100 {
        let code = u16::try_from(status.code).unwrap_or(500);
        md.insert("dapr-http-status", MetadataValue::from(code));
        let grpc = grpc_code_of_http(code);
        if grpc != Code::Ok {
            use tonic_types::{ErrorDetails, StatusExt};
            let text = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Unknown");
            let body = message
                .data
                .as_ref()
                .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                .unwrap_or_default();
            let body: String = body.chars().take(63).collect();
            let mut details = ErrorDetails::new();
            details.set_error_info(
                text,
                "dapr.io",
                [
                    ("http.code".to_string(), code.to_string()),
                    ("http.error_message".to_string(), body),
                ],
            );
            let mut s = Status::with_error_details(grpc, text, details);
            s.metadata_mut()
                .insert("dapr-http-status", MetadataValue::from(code));
            return Err(s);
        }
    } else if status.code != 0 {
        return Err(Status::new(Code::from_i32(status.code), status.message));
    }
    let mut out = Response::new(message);
    *out.metadata_mut() = md;
    Ok(out)
}

#[tonic::async_trait]
impl Dapr for DaprApi {
    async fn invoke_service(
        &self,
        request: Request<InvokeServiceRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let metadata = from_grpc_metadata(request.metadata());
        let req = request.into_inner();
        let target = Target::parse(&req.id).map_err(Status::invalid_argument)?;
        let message = req
            .message
            .ok_or_else(|| Status::invalid_argument("message is required"))?;
        let mut metadata = metadata;
        for skip in [
            "dapr-api-token",
            "dapr-app-id",
            "content-type",
            "user-agent",
            "te",
            "grpc-accept-encoding",
            "grpc-timeout",
        ] {
            metadata.remove(skip);
        }
        let internal = InternalInvokeRequest {
            ver: 0,
            metadata,
            message: Some(message),
            actor: None,
        };
        let res = self.rt.invoke(&target, internal).await?;
        grpc_response(res)
    }

    async fn get_state(
        &self,
        request: Request<GetStateRequest>,
    ) -> Result<Response<GetStateResponse>, Status> {
        let req = request.into_inner();
        let item = self.rt.get_state(&req.store_name, &req.key).await?;
        Ok(Response::new(match item {
            Some(item) => GetStateResponse {
                metadata: item_metadata(&item).into_iter().collect(),
                etag: item.etag,
                data: item.data,
            },
            None => GetStateResponse::default(),
        }))
    }

    async fn get_bulk_state(
        &self,
        request: Request<GetBulkStateRequest>,
    ) -> Result<Response<GetBulkStateResponse>, Status> {
        let req = request.into_inner();
        let items = self.rt.bulk_get_state(&req.store_name, &req.keys).await?;
        Ok(Response::new(GetBulkStateResponse {
            items: items
                .into_iter()
                .map(|i| BulkStateItem {
                    key: i.key,
                    data: i.data.unwrap_or_default(),
                    etag: i.etag.unwrap_or_default(),
                    error: i.error.unwrap_or_default(),
                    metadata: i.metadata.into_iter().collect(),
                })
                .collect(),
        }))
    }

    async fn save_state(&self, request: Request<SaveStateRequest>) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        self.rt
            .save_state(&req.store_name, req.states.into_iter().map(save_item).collect())
            .await?;
        Ok(Response::new(()))
    }

    async fn delete_state(&self, request: Request<DeleteStateRequest>) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        self.rt
            .delete_state(&req.store_name, &req.key, req.etag.map(|e| e.value))
            .await?;
        Ok(Response::new(()))
    }

    async fn delete_bulk_state(
        &self,
        request: Request<DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        for item in req.states {
            self.rt
                .delete_state(&req.store_name, &item.key, item.etag.map(|e| e.value))
                .await?;
        }
        Ok(Response::new(()))
    }

    async fn execute_state_transaction(
        &self,
        request: Request<ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let mut ops = Vec::with_capacity(req.operations.len());
        for op in req.operations {
            let item = op
                .request
                .ok_or_else(|| Status::invalid_argument("each operation needs a request"))?;
            ops.push(match op.operation_type.as_str() {
                "upsert" => TxOp::Upsert(save_item(item)),
                "delete" => TxOp::Delete(item.key, item.etag.map(|e| e.value), meta_map(item.metadata)),
                other => {
                    return Err(ApiError::new(
                        "ERR_NOT_SUPPORTED_STATE_OPERATION",
                        http::StatusCode::BAD_REQUEST,
                        Code::InvalidArgument,
                        format!("operation type {other} not supported"),
                    )
                    .into());
                }
            });
        }
        self.rt.transact_state(&req.store_name, ops).await?;
        Ok(Response::new(()))
    }

    async fn publish_event(&self, request: Request<PublishEventRequest>) -> Result<Response<()>, Status> {
        let trace = |k: &str| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (traceparent, tracestate) = (trace("traceparent"), trace("tracestate"));
        let req = request.into_inner();
        self.rt
            .publish(Publish {
                pubsub: req.pubsub_name,
                topic: req.topic,
                data: req.data,
                content_type: Some(req.data_content_type).filter(|c| !c.is_empty()),
                metadata: meta_map(req.metadata),
                traceparent,
                tracestate,
            })
            .await?;
        Ok(Response::new(()))
    }

    async fn bulk_publish_event_alpha1(
        &self,
        request: Request<BulkPublishRequest>,
    ) -> Result<Response<BulkPublishResponse>, Status> {
        self.bulk_publish_event(request).await
    }

    async fn bulk_publish_event(
        &self,
        request: Request<BulkPublishRequest>,
    ) -> Result<Response<BulkPublishResponse>, Status> {
        let req = request.into_inner();
        let entries = req
            .entries
            .into_iter()
            .map(|e| BulkEntry {
                entry_id: e.entry_id,
                event: e.event,
                content_type: Some(e.content_type).filter(|c| !c.is_empty()),
                metadata: meta_map(e.metadata),
            })
            .collect();
        let failed = self
            .rt
            .bulk_publish(&req.pubsub_name, &req.topic, entries, &meta_map(req.metadata))
            .await?;
        Ok(Response::new(BulkPublishResponse {
            failed_entries: failed
                .into_iter()
                .map(|f| BulkPublishResponseFailedEntry {
                    entry_id: f.entry_id,
                    error: f.error,
                })
                .collect(),
        }))
    }

    type SubscribeTopicEventsAlpha1Stream = crate::pubsub::streaming::Events;

    async fn subscribe_topic_events_alpha1(
        &self,
        request: Request<tonic::Streaming<SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        let events = crate::pubsub::streaming::subscribe(self.rt.clone(), request.into_inner()).await?;
        Ok(Response::new(events))
    }

    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let req = request.into_inner();
        let data = self
            .rt
            .get_secret(&req.store_name, &req.key, &meta_map(req.metadata))
            .await?;
        Ok(Response::new(GetSecretResponse {
            data: data.into_iter().collect(),
        }))
    }

    async fn get_bulk_secret(
        &self,
        request: Request<GetBulkSecretRequest>,
    ) -> Result<Response<GetBulkSecretResponse>, Status> {
        let req = request.into_inner();
        let all = self
            .rt
            .bulk_secrets(&req.store_name, &meta_map(req.metadata))
            .await?;
        Ok(Response::new(GetBulkSecretResponse {
            data: all
                .into_iter()
                .map(|(name, keys)| {
                    (
                        name,
                        SecretResponse {
                            secrets: keys.into_iter().collect(),
                        },
                    )
                })
                .collect(),
        }))
    }

    async fn get_metadata(
        &self,
        _request: Request<GetMetadataRequest>,
    ) -> Result<Response<GetMetadataResponse>, Status> {
        Ok(Response::new(crate::metadata_api::response(&self.rt)))
    }

    async fn set_metadata(&self, request: Request<SetMetadataRequest>) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        crate::metadata_api::set_extended(&self.rt, req.key, req.value)?;
        Ok(Response::new(()))
    }

    async fn shutdown(&self, request: Request<ShutdownRequest>) -> Result<Response<()>, Status> {
        let force = request
            .metadata()
            .get("dapr-force-shutdown")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        self.rt.shutdown_requested(force);
        Ok(Response::new(()))
    }
}

/// Checks `dapr-api-token` on every gRPC call when `DAPR_API_TOKEN` is set.
/// `spec.api` of the Configuration for gRPC: methods of APIs that are not
/// enabled answer `Unimplemented`, as Dapr does.
#[derive(Clone)]
pub struct ApiAccessLayer(pub Arc<crate::config::ApiAccess>);

impl<S> tower::Layer<S> for ApiAccessLayer {
    type Service = ApiAccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiAccessService {
            access: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct ApiAccessService<S> {
    access: Arc<crate::config::ApiAccess>,
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for ApiAccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<http::Response<RB>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.access.grpc_permits(req.uri().path()) {
            futures_util::future::Either::Left(self.inner.call(req))
        } else {
            let denied = Status::unimplemented("requested endpoint is not available").into_http();
            futures_util::future::Either::Right(std::future::ready(Ok(denied)))
        }
    }
}

pub fn token_check(
    token: Option<Arc<str>>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let Some(want) = &token else { return Ok(req) };
        match req.metadata().get("dapr-api-token") {
            None => Err(Status::unauthenticated(
                "Unauthorized: missing api token in request metadata",
            )),
            Some(v) if v.as_bytes() == want.as_bytes() => {
                req.metadata_mut().remove("dapr-api-token");
                Ok(req)
            }
            Some(_) => Err(Status::unauthenticated(
                "Unauthorized: authentication error: api token mismatch",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_to_grpc_codes() {
        assert_eq!(grpc_code_of_http(200), Code::Ok);
        assert_eq!(grpc_code_of_http(400), Code::Internal);
        assert_eq!(grpc_code_of_http(404), Code::NotFound);
        assert_eq!(grpc_code_of_http(500), Code::Unknown);
    }
}
