//! The app behind the target sidecar: an HTTP echo server and a gRPC
//! `AppCallback` echo server. The same app serves the direct and the
//! through-sidecars runs, so the difference is what the sidecars add.

use std::convert::Infallible;

use bytes::Bytes;
use daprs_proto::{
    common::{InvokeRequest, InvokeResponse},
    runtime::{
        BindingEventRequest, BindingEventResponse, JobEventRequest, JobEventResponse,
        ListInputBindingsResponse, ListTopicSubscriptionsResponse, TopicEventBulkRequest,
        TopicEventBulkResponse, TopicEventRequest, TopicEventResponse,
        app_callback_server::{AppCallback, AppCallbackServer},
    },
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::{Status, transport::Server};

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Response::new(Full::new(body)))
}

/// Serves HTTP/1.1 echo on `listener` until the process ends.
pub fn http(listener: TcpListener) {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(echo))
                    .await;
            });
        }
    });
}

struct GrpcEcho;

#[tonic::async_trait]
impl AppCallback for GrpcEcho {
    async fn on_invoke(
        &self,
        request: tonic::Request<InvokeRequest>,
    ) -> Result<tonic::Response<InvokeResponse>, Status> {
        let req = request.into_inner();
        Ok(tonic::Response::new(InvokeResponse {
            data: req.data,
            content_type: req.content_type,
        }))
    }

    async fn list_topic_subscriptions(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<ListTopicSubscriptionsResponse>, Status> {
        Ok(tonic::Response::new(ListTopicSubscriptionsResponse::default()))
    }

    async fn on_topic_event(
        &self,
        _: tonic::Request<TopicEventRequest>,
    ) -> Result<tonic::Response<TopicEventResponse>, Status> {
        Err(Status::unimplemented("the bench app has no subscriptions"))
    }

    async fn list_input_bindings(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<ListInputBindingsResponse>, Status> {
        Ok(tonic::Response::new(ListInputBindingsResponse::default()))
    }

    async fn on_binding_event(
        &self,
        _: tonic::Request<BindingEventRequest>,
    ) -> Result<tonic::Response<BindingEventResponse>, Status> {
        Err(Status::unimplemented("the bench app has no bindings"))
    }

    async fn on_bulk_topic_event(
        &self,
        _: tonic::Request<TopicEventBulkRequest>,
    ) -> Result<tonic::Response<TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented("the bench app has no subscriptions"))
    }

    async fn on_job_event(
        &self,
        _: tonic::Request<JobEventRequest>,
    ) -> Result<tonic::Response<JobEventResponse>, Status> {
        Err(Status::unimplemented("the bench app has no jobs"))
    }
}

/// Serves the gRPC echo app on `listener` until the process ends.
pub fn grpc(listener: TcpListener) {
    tokio::spawn(
        Server::builder()
            .add_service(AppCallbackServer::new(GrpcEcho))
            .serve_with_incoming(TcpListenerStream::new(listener).map(|conn| {
                let conn = conn?;
                conn.set_nodelay(true)?;
                Ok::<_, std::io::Error>(conn)
            })),
    );
}
