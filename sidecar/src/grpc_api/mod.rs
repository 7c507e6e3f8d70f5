//! The Dapr gRPC API (port 50001): `dapr.proto.runtime.v1.Dapr`, every
//! RPC of Dapr's release. Each method hands its request to the building
//! block's API module; those of blocks this sidecar does not have answer
//! UNIMPLEMENTED naming the block ([`unbuilt`]).

mod access;
mod configuration;
mod invoke;
mod unbuilt;

pub use access::{ApiAccessLayer, token_check};
use invoke::grpc_response;

use std::{collections::BTreeMap, sync::Arc};

use daprs_proto::{
    common::InvokeResponse,
    internals::InternalInvokeRequest,
    runtime as R,
    runtime::{
        BulkPublishRequest, BulkPublishResponse, BulkPublishResponseFailedEntry, BulkStateItem,
        DeleteBulkStateRequest, DeleteStateRequest, ExecuteStateTransactionRequest, GetBulkSecretRequest,
        GetBulkSecretResponse, GetBulkStateRequest, GetBulkStateResponse, GetMetadataRequest,
        GetMetadataResponse, GetSecretRequest, GetSecretResponse, GetStateRequest, GetStateResponse,
        InvokeServiceRequest, PublishEventRequest, SaveStateRequest, SecretResponse, SetMetadataRequest,
        ShutdownRequest, SubscribeTopicEventsRequestAlpha1, dapr_server::Dapr,
    },
};
use tonic::{Code, Request, Response, Status};

use crate::{
    app_channel::from_grpc_metadata,
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

/// Request metadata an `InvokeService` call does not pass to the target.
const NOT_FORWARDED: &[&str] = &[
    "dapr-api-token",
    "dapr-app-id",
    "content-type",
    "user-agent",
    "te",
    "grpc-accept-encoding",
    "grpc-timeout",
    "grpc-trace-bin",
];

#[tonic::async_trait]
impl Dapr for DaprApi {
    async fn invoke_service(
        &self,
        request: Request<InvokeServiceRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        // With tracing on, the API layer wrote the call's span into both
        // trace headers; the target reads `traceparent`, so the binary copy
        // (the list's last entry) is not sent.
        let skip = if self.rt.tracer.enabled() {
            NOT_FORWARDED
        } else {
            &NOT_FORWARDED[..NOT_FORWARDED.len() - 1]
        };
        let metadata = from_grpc_metadata(request.metadata(), skip);
        let rename = request.extensions().get::<crate::trace::Rename>().cloned();
        let req = request.into_inner();
        let target = Target::parse(&req.id).map_err(Status::invalid_argument)?;
        let message = req
            .message
            .ok_or_else(|| Status::invalid_argument("message is required"))?;
        if let Some(r) = rename {
            r.set(format!("CallLocal/{}/{}", req.id, message.method));
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
            .save_state(
                &req.store_name,
                req.states.into_iter().map(SaveItem::from).collect(),
            )
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
                "upsert" => TxOp::Upsert(SaveItem::from(item)),
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

    async fn get_configuration(
        &self,
        request: Request<R::GetConfigurationRequest>,
    ) -> Result<Response<R::GetConfigurationResponse>, Status> {
        let r = request.into_inner();
        let items = self
            .rt
            .get_configuration(&r.store_name, &r.keys, &meta_map(r.metadata))
            .await?;
        Ok(Response::new(R::GetConfigurationResponse {
            items: configuration::items(items),
        }))
    }

    async fn get_configuration_alpha1(
        &self,
        request: Request<R::GetConfigurationRequest>,
    ) -> Result<Response<R::GetConfigurationResponse>, Status> {
        self.get_configuration(request).await
    }

    type SubscribeConfigurationStream = configuration::Updates;
    type SubscribeConfigurationAlpha1Stream = configuration::Updates;

    async fn subscribe_configuration(
        &self,
        request: Request<R::SubscribeConfigurationRequest>,
    ) -> Result<Response<configuration::Updates>, Status> {
        let r = request.into_inner();
        let sub = self
            .rt
            .subscribe_configuration(&r.store_name, &r.keys, &meta_map(r.metadata))
            .await?;
        Ok(Response::new(configuration::updates(self.rt.clone(), sub)))
    }

    async fn subscribe_configuration_alpha1(
        &self,
        request: Request<R::SubscribeConfigurationRequest>,
    ) -> Result<Response<configuration::Updates>, Status> {
        self.subscribe_configuration(request).await
    }

    async fn unsubscribe_configuration(
        &self,
        request: Request<R::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<R::UnsubscribeConfigurationResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            match self.rt.unsubscribe_configuration(&r.store_name, &r.id) {
                Ok(()) => R::UnsubscribeConfigurationResponse {
                    ok: true,
                    message: String::new(),
                },
                Err(e) if e.code == "ERR_CONFIGURATION_UNSUBSCRIBE" => R::UnsubscribeConfigurationResponse {
                    ok: false,
                    message: e.message,
                },
                Err(e) => return Err(e.into()),
            },
        ))
    }

    async fn unsubscribe_configuration_alpha1(
        &self,
        request: Request<R::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<R::UnsubscribeConfigurationResponse>, Status> {
        self.unsubscribe_configuration(request).await
    }

    async fn query_state_alpha1(
        &self,
        request: Request<R::QueryStateRequest>,
    ) -> Result<Response<R::QueryStateResponse>, Status> {
        let r = request.into_inner();
        let page = self.rt.query_state(&r.store_name, r.query.as_bytes()).await?;
        Ok(Response::new(R::QueryStateResponse {
            results: page
                .results
                .into_iter()
                .map(|(key, item)| R::QueryStateItem {
                    key,
                    data: item.data,
                    etag: item.etag,
                    error: String::new(),
                })
                .collect(),
            token: page.token.unwrap_or_default(),
            metadata: Default::default(),
        }))
    }

    async fn invoke_binding(
        &self,
        request: Request<R::InvokeBindingRequest>,
    ) -> Result<Response<R::InvokeBindingResponse>, Status> {
        let mut metadata = BTreeMap::new();
        let headers = request.metadata();
        crate::trace::into_binding_metadata(|k| headers.get(k).and_then(|v| v.to_str().ok()), &mut metadata)
            .map_err(Status::invalid_argument)?;
        let r = request.into_inner();
        metadata.extend(r.metadata);
        let res = self
            .rt
            .invoke_binding(&r.name, r.operation, r.data, metadata)
            .await?;
        Ok(Response::new(R::InvokeBindingResponse {
            data: res.data.unwrap_or_default(),
            metadata: res.metadata.into_iter().collect(),
        }))
    }

    async fn try_lock_alpha1(
        &self,
        request: Request<R::TryLockRequest>,
    ) -> Result<Response<R::TryLockResponse>, Status> {
        let r = request.into_inner();
        let success = self
            .rt
            .try_lock(&r.store_name, &r.resource_id, &r.lock_owner, r.expiry_in_seconds)
            .await?;
        Ok(Response::new(R::TryLockResponse { success }))
    }

    async fn unlock_alpha1(
        &self,
        request: Request<R::UnlockRequest>,
    ) -> Result<Response<R::UnlockResponse>, Status> {
        let r = request.into_inner();
        let status = self
            .rt
            .unlock(&r.store_name, &r.resource_id, &r.lock_owner)
            .await?;
        Ok(Response::new(R::UnlockResponse {
            status: status as i32,
        }))
    }

    unbuilt::rpcs!();
}
