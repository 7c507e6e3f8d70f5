//! A proxied call under the target app's resiliency policy, as Dapr applies
//! it: a unary call gets the timeout around the whole call and its retries
//! through a one-message replay buffer; a call marked `dapr-stream: true`
//! gets the policy for establishing the stream only, and may not have retries.

use bytes::Bytes;
use daprs_mtls::peer::Peer;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Limited};
use tokio::time::Instant;
use tonic::Status;
use tower::{Layer, ServiceExt};

use super::{
    Req, Resp,
    body::{grpc_status, too_large},
    call,
};
use crate::{
    resiliency::{Failure, Policy, Stop},
    runtime::Runtime,
};

/// A failed attempt: an error from this side, or an app's non-OK status.
fn failure(r: &Result<Resp, Status>) -> Option<Failure> {
    match r {
        Ok(res) => grpc_status(res.headers()).filter(|c| *c != 0).map(Failure::Grpc),
        Err(s) if s.code() == tonic::Code::Unavailable => Some(Failure::Transport),
        Err(s) => Some(Failure::Grpc(s.code() as i32)),
    }
}

fn stopped(e: Stop<Status>) -> Status {
    e.reason()
        .unwrap_or_else(|halt| Status::new(halt.code, halt.message))
}

/// Sends a proxied call to another app's sidecar under `policy`.
pub async fn send(
    rt: &Runtime,
    peer: &Peer,
    req: Req,
    mut deadline: Option<Instant>,
    app_id: &str,
    policy: Policy,
) -> Result<Resp, Status> {
    let stream = req
        .headers()
        .get("dapr-stream")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if stream && policy.user_retries() {
        return Err(Status::failed_precondition(
            "cannot use resiliency policies with retries on streaming RPCs",
        ));
    }
    if !stream && let Some(t) = policy.timeout {
        // Around the whole unary call: the same deadline the caller's own timeout sets.
        let by_policy = Instant::now() + t;
        deadline = Some(deadline.map_or(by_policy, |d| d.min(by_policy)));
    }
    if !stream && policy.user_retries() {
        return replayed(rt, peer, req, deadline, app_id, policy).await;
    }
    // One attempt: the breaker counts it, and a stream's handshake is timed.
    let mut attempt = policy.once();
    if !stream {
        // The timeout is already in the deadline, which also covers the reply.
        attempt.timeout = None;
    }
    // Sent at most once: this policy never retries.
    let slot = std::sync::Mutex::new(Some(req));
    let once = tower::service_fn(|()| {
        let req = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        async move {
            match req {
                Some(req) => call(rt, peer, req, deadline, app_id, None).await,
                None => Err(Status::internal("a proxied call is sent once")),
            }
        }
    });
    attempt
        .layer(failure)
        .layer(once)
        .oneshot(())
        .await
        .map_err(stopped)
}

/// A unary call tried as the policy says, its one request message kept for
/// the retries and each answer read whole to see its status.
async fn replayed(
    rt: &Runtime,
    peer: &Peer,
    req: Req,
    deadline: Option<Instant>,
    app_id: &str,
    policy: Policy,
) -> Result<Resp, Status> {
    let max = rt.settings.max_body_size;
    let (parts, body) = req.into_parts();
    // One message and its 5-byte prefix.
    let sent = Limited::new(body, max + 5)
        .collect()
        .await
        .map_err(|_| too_large(max as u64 + 1, max))?
        .to_bytes();
    let attempt = tower::service_fn(|sent: Bytes| {
        let mut r = Request::new(axum::body::Body::from(sent));
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = parts.uri.clone();
        *r.version_mut() = parts.version;
        *r.headers_mut() = parts.headers.clone();
        async move {
            let res = call(rt, peer, r, deadline, app_id, None).await?;
            let (head, body) = res.into_parts();
            let got = Limited::new(body, max + 5)
                .collect()
                .await
                .map_err(|e| Status::unavailable(format!("the reply of app {app_id} broke off: {e}")))?;
            let trailers = got.trailers().cloned();
            let data = got.to_bytes();
            let mut res = http::Response::from_parts(head, whole(data, trailers.clone()));
            // A status in the trailers decides as one in the headers would.
            if let Some(code) = trailers.as_ref().and_then(grpc_status) {
                res.headers_mut().insert("grpc-status", code.into());
                res.extensions_mut().insert(TrailerStatus);
            }
            Ok(res)
        }
    });
    let mut res = policy
        .layer(failure)
        .layer(attempt)
        .oneshot(sent)
        .await
        .map_err(stopped)?;
    if res.extensions_mut().remove::<TrailerStatus>().is_some() {
        res.headers_mut().remove("grpc-status");
    }
    Ok(res)
}

/// Marks a grpc-status copied from the trailers into the headers for
/// classification only.
#[derive(Clone, Copy)]
struct TrailerStatus;

/// A body of one data chunk and its trailers.
fn whole(data: Bytes, trailers: Option<HeaderMap>) -> axum::body::Body {
    let frames = [
        Some(http_body::Frame::data(data)),
        trailers.map(http_body::Frame::trailers),
    ];
    let stream = futures_util::stream::iter(frames.into_iter().flatten().map(Ok::<_, Status>));
    axum::body::Body::new(http_body_util::StreamBody::new(stream))
}
