//! Sidecar-to-sidecar invocation (`dapr.proto.internals.v1.ServiceInvocation`) on
//! the internal gRPC port: the server that hands calls to the local app, and the
//! client that calls another sidecar. Bodies above [`STREAM_THRESHOLD`] travel
//! in chunks over `CallLocalStream`; smaller ones in one `CallLocal` message.

use std::{pin::Pin, sync::Arc};

use bytes::Bytes;
use daprs_proto::{
    common::StreamPayload,
    internals::{
        ApiVersion, InternalInvokeRequest, InternalInvokeRequestStream, InternalInvokeResponse,
        InternalInvokeResponseStream, service_invocation_client::ServiceInvocationClient,
        service_invocation_server::ServiceInvocation,
    },
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::invoke::Link;

use crate::runtime::Runtime;

/// Bodies larger than this are streamed.
pub const STREAM_THRESHOLD: usize = 256 << 10;
/// Size of each streamed chunk.
pub const CHUNK: usize = 64 << 10;

/// The unary call's path.
static CALL_LOCAL: std::sync::LazyLock<http::uri::PathAndQuery> = std::sync::LazyLock::new(|| {
    http::uri::PathAndQuery::from_static("/dapr.proto.internals.v1.ServiceInvocation/CallLocal")
});

/// Serves calls from other sidecars.
pub struct InternalServer {
    /// Shared sidecar state.
    pub rt: Arc<Runtime>,
}

fn body_of_request(req: &mut InternalInvokeRequest) -> Vec<u8> {
    req.message
        .as_mut()
        .and_then(|m| m.data.as_mut())
        .map(|a| std::mem::take(&mut a.value))
        .unwrap_or_default()
}

fn body_of_response(res: &mut InternalInvokeResponse) -> Vec<u8> {
    res.message
        .as_mut()
        .and_then(|m| m.data.as_mut())
        .map(|a| std::mem::take(&mut a.value))
        .unwrap_or_default()
}

fn set_request_body(req: &mut InternalInvokeRequest, body: Vec<u8>) {
    let msg = req.message.get_or_insert_with(Default::default);
    msg.data.get_or_insert_with(Default::default).value = body;
}

fn set_response_body(res: &mut InternalInvokeResponse, body: Vec<u8>) {
    let msg = res.message.get_or_insert_with(Default::default);
    msg.data.get_or_insert_with(Default::default).value = body;
}

/// Splits a body into numbered payloads (at least one, possibly empty).
fn chunks(body: Vec<u8>) -> Vec<StreamPayload> {
    let body = Bytes::from(body);
    if body.is_empty() {
        return vec![StreamPayload {
            data: Bytes::new(),
            seq: 0,
        }];
    }
    (0..body.len())
        .step_by(CHUNK)
        .enumerate()
        .map(|(seq, start)| StreamPayload {
            data: body.slice(start..(start + CHUNK).min(body.len())),
            seq: seq as u64,
        })
        .collect()
}

/// Appends payloads in order, refusing gaps and bodies over `limit`.
async fn collect_payloads<T>(
    first: Option<StreamPayload>,
    rest: &mut Streaming<T>,
    payload_of: fn(T) -> Option<StreamPayload>,
    limit: usize,
) -> Result<Vec<u8>, Status> {
    let mut body = Vec::new();
    let mut expected = 0u64;
    let mut push = |p: StreamPayload| -> Result<(), Status> {
        if p.seq != expected {
            return Err(Status::invalid_argument(format!(
                "payload chunk {} arrived when {expected} was expected",
                p.seq
            )));
        }
        expected += 1;
        if body.len() + p.data.len() > limit {
            return Err(Status::resource_exhausted(format!(
                "body exceeds the limit of {limit} bytes (--max-body-size)"
            )));
        }
        body.extend_from_slice(&p.data);
        Ok(())
    };
    if let Some(p) = first {
        push(p)?;
    }
    while let Some(msg) = rest.message().await? {
        if let Some(p) = payload_of(msg) {
            push(p)?;
        }
    }
    Ok(body)
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<InternalInvokeResponseStream, Status>> + Send>>;

/// Over mutual TLS the caller is who its certificate says, whatever its
/// request claims.
fn proven_caller<T>(req: &Request<T>) -> Option<daprs_mtls::SpiffeId> {
    req.extensions()
        .get::<daprs_mtls::PeerId>()
        .and_then(daprs_mtls::PeerId::spiffe)
}

impl InternalServer {
    /// The server span of an invocation from another sidecar, named as
    /// Dapr names it; the app receives its context.
    fn call_span(&self, req: &mut InternalInvokeRequest) -> Option<daprs_telemetry::trace::Span> {
        let parent = crate::trace::parent_in_metadata(&req.metadata);
        let mut span = self
            .rt
            .tracer
            .start(daprs_telemetry::trace::SpanKind::Server, parent)?;
        crate::trace::set_metadata(&mut req.metadata, &span.context());
        if span.recording() {
            let method = req.message.as_ref().map_or("", |m| m.method.as_str());
            span.set_name_parts(&["CallLocal/", &self.rt.app_id, "/", method]);
            span.set_attribute("rpc.service", "ServiceInvocation");
            span.set_attribute("dapr.invoke_method", method);
            span.set_attribute("dapr.protocol", "grpc");
        }
        Some(span)
    }

    async fn local(
        &self,
        mut req: InternalInvokeRequest,
        caller: Option<daprs_mtls::SpiffeId>,
    ) -> Result<InternalInvokeResponse, Status> {
        if let Some(id) = &caller {
            crate::invoke::set(&mut req.metadata, "dapr-caller-app-id", &id.app_id);
            crate::invoke::set(&mut req.metadata, "dapr-caller-namespace", &id.namespace);
        }
        if req.ver != ApiVersion::V1 as i32 {
            return Err(Status::unimplemented(format!(
                "unsupported internal API version {}",
                req.ver
            )));
        }
        if req.actor.is_some() {
            return Err(Status::unimplemented("actors are not hosted by this sidecar"));
        }
        // A caller names the app it means; a call that reached the wrong
        // sidecar (or names no app) is not this app's to answer.
        crate::acl::check_callee(
            &self.rt.app_id,
            crate::invoke::get(&req.metadata, "dapr-callee-app-id"),
        )?;
        if let Some(msg) = req.message.as_mut() {
            msg.method = crate::invoke::clean_method(&msg.method).map_err(Status::from)?;
            if let Some(ext) = &msg.http_extension {
                crate::invoke::check_query(&ext.querystring).map_err(Status::from)?;
            }
        }
        let msg = req.message.as_ref();
        // Verbs count only for apps that speak HTTP.
        let verb = match (&self.rt.app, msg.and_then(|m| m.http_extension.as_ref())) {
            (Some(app), Some(ext)) if !app.protocol.is_grpc() => crate::app_channel::method_of(ext.verb)
                .ok()
                .map(|m| m.to_string()),
            _ => None,
        };
        crate::acl::check_caller(
            self.rt.config.access.as_deref(),
            caller.as_ref(),
            crate::invoke::get(&req.metadata, "dapr-caller-app-id"),
            crate::invoke::get(&req.metadata, "dapr-caller-namespace"),
            msg.map_or("", |m| m.method.as_str()),
            verb.as_deref(),
        )?;
        let from = self
            .rt
            .metrics
            .enabled()
            .then(|| crate::invoke::get(&req.metadata, "dapr-caller-app-id").map(str::to_string))
            .flatten();
        let span = self.call_span(&mut req);
        let result = self.rt.invoke_local(req).await;
        if let Some(mut span) = span {
            match &result {
                Err(e) => span.set_error(&e.message),
                // The app's own failure: an HTTP error status, or a gRPC code.
                Ok(res) => {
                    let code = res.status.as_ref().map_or(0, |s| s.code);
                    let failed = if self.rt.app.as_ref().is_some_and(|a| a.protocol.is_grpc()) {
                        (code != 0).then(|| daprs_telemetry::grpc_code_name(code))
                    } else {
                        daprs_telemetry::trace::http_error(u16::try_from(code).unwrap_or(500))
                    };
                    if let Some(f) = failed {
                        span.set_error(f);
                    }
                }
            }
            span.end();
        }
        if self.rt.metrics.enabled() {
            let status = crate::runtime::invocation_status(&result);
            self.rt
                .metrics
                .invocation_received(from.as_deref().unwrap_or(""), status);
        }
        result.map_err(Status::from)
    }
}

#[tonic::async_trait]
impl ServiceInvocation for InternalServer {
    async fn call_local(
        &self,
        request: Request<InternalInvokeRequest>,
    ) -> Result<Response<InternalInvokeResponse>, Status> {
        let caller = proven_caller(&request);
        self.local(request.into_inner(), caller).await.map(Response::new)
    }

    type CallLocalStreamStream = ResponseStream;

    async fn call_local_stream(
        &self,
        request: Request<Streaming<InternalInvokeRequestStream>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let caller = proven_caller(&request);
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty invocation stream"))?;
        let mut req = first
            .request
            .ok_or_else(|| Status::invalid_argument("the first message must carry the request"))?;
        let body = collect_payloads(
            first.payload,
            &mut stream,
            |m| m.payload,
            self.rt.settings.max_body_size,
        )
        .await?;
        set_request_body(&mut req, body);
        let mut res = self.local(req, caller).await?;
        let body = body_of_response(&mut res);
        let mut out = Vec::new();
        let mut response = Some(res);
        for payload in chunks(body) {
            out.push(Ok(InternalInvokeResponseStream {
                response: response.take(),
                payload: Some(payload),
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }
}

/// Calls another sidecar, streaming large bodies.
pub async fn call(
    link: &Link,
    req: &InternalInvokeRequest,
    max_body: usize,
) -> Result<InternalInvokeResponse, Status> {
    let limit = (max_body + (64 << 10)).max(crate::app_channel::MAX_UNARY);
    let body_len = req
        .message
        .as_ref()
        .and_then(|m| m.data.as_ref())
        .map_or(0, |a| a.value.len());
    if body_len <= STREAM_THRESHOLD {
        let (_, reply) = link
            .unary
            .unary(&CALL_LOCAL, http::HeaderMap::new(), req, limit)
            .await?;
        return Ok(reply);
    }
    let mut client = ServiceInvocationClient::new(link.channel.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // Attempts borrow the request so that retries can repeat it; a
    // streamed one is copied once, its body moved out into the chunks.
    let mut req = req.clone();
    let body = body_of_request(&mut req);
    let mut header = Some(req);
    let messages: Vec<_> = chunks(body)
        .into_iter()
        .map(|payload| InternalInvokeRequestStream {
            request: header.take(),
            payload: Some(payload),
        })
        .collect();
    let mut stream = client
        .call_local_stream(tokio_stream::iter(messages))
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("the callee closed the stream without a response"))?;
    let mut res = first
        .response
        .ok_or_else(|| Status::internal("the callee's first message has no response"))?;
    let body = collect_payloads(first.payload, &mut stream, |m| m.payload, usize::MAX).await?;
    set_response_body(&mut res, body);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_body_in_order() {
        let body: Vec<u8> = (0..(CHUNK * 2 + 10)).map(|i| i as u8).collect();
        let parts = chunks(body.clone());
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.seq).collect::<Vec<_>>(), [0, 1, 2]);
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, body);
        assert_eq!(chunks(Vec::new()).len(), 1);
    }
}
