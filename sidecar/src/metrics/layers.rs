//! The metrics of every request the HTTP and gRPC servers answer, as tower
//! layers put in front of their routers once.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    http::{HeaderMap, Request, Response, header::CONTENT_LENGTH},
};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use super::{Metrics, elapsed_ms};

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

fn body_len<B: HttpBody>(headers: &HeaderMap, body: &B) -> u64 {
    body.size_hint().exact().unwrap_or_else(|| {
        headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// Records `dapr_http_server_*` for each request.
#[derive(Clone)]
pub struct HttpLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for HttpLayer {
    type Service = HttpMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request<Body>> for HttpMetrics<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let metrics = self.metrics.clone();
        let method = req.method().clone();
        // The path is copied only when a label is made from it.
        let path = metrics.paths.uses_path().then(|| req.uri().path().to_string());
        let req_bytes = body_len(req.headers(), req.body());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let res_bytes = body_len(resp.headers(), resp.body());
            metrics.http_served(
                method.as_str(),
                path.as_deref().unwrap_or(""),
                resp.status().as_u16(),
                req_bytes,
                res_bytes,
                elapsed_ms(start),
            );
            Ok(resp)
        })
    }
}

/// gRPC's name for a status code, as Dapr's labels carry it.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// The `grpc-status` a header map carries.
pub fn grpc_code(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// Records `dapr_grpc_io_server_*` for each RPC, when its status is known:
/// at once for a trailers-only answer, otherwise when the trailers go out.
#[derive(Clone)]
pub struct GrpcLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request<Body>> for GrpcMetrics<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let start = Instant::now();
        let received = Arc::new(AtomicU64::new(0));
        let rpc = Rpc {
            metrics: self.metrics.clone(),
            method: req.uri().path().to_string(),
            start,
            received: received.clone(),
            sent: 0,
        };
        let req = req.map(|b| {
            Body::new(Counted {
                inner: b,
                count: received,
            })
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            if let Some(code) = grpc_code(resp.headers()) {
                rpc.finish(code);
                return Ok(resp);
            }
            Ok(resp.map(|inner| {
                Body::new(Watched {
                    inner,
                    rpc: Some(rpc),
                })
            }))
        })
    }
}

/// An RPC whose metrics are recorded once its status is known.
struct Rpc {
    metrics: Arc<Metrics>,
    method: String,
    start: Instant,
    received: Arc<AtomicU64>,
    sent: u64,
}

impl Rpc {
    fn finish(self, code: i32) {
        self.metrics.grpc_served(
            &self.method,
            code_name(code),
            self.received.load(Ordering::Relaxed),
            self.sent,
            elapsed_ms(self.start),
        );
    }
}

/// A request body that counts the bytes read from it.
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that records the RPC when its trailers pass, or when it
/// is dropped unfinished (the caller went away: `Canceled`).
struct Watched {
    inner: Body,
    rpc: Option<Rpc>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(rpc) = self.rpc.as_mut() {
                        rpc.sent += data.len() as u64;
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(rpc) = self.rpc.take()
                {
                    rpc.finish(grpc_code(trailers).unwrap_or(2));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(rpc) = self.rpc.take() {
                    rpc.finish(13);
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: not a complete gRPC answer.
                if let Some(rpc) = self.rpc.take() {
                    rpc.finish(2);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(rpc) = self.rpc.take() {
            rpc.finish(1);
        }
    }
}
