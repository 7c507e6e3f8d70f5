//! Response and request bodies that watch a gRPC call pass: the bytes a
//! request carries, and the status its answer ends with (from the trailers,
//! or `Canceled` when the caller goes away), for whatever records the call.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{body::Body, http::Response};
use bytes::Bytes;
use daprs_telemetry::trace::Span;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::{
    metrics::{Metrics, elapsed_ms},
    proxy::grpc_status,
};

/// A request body that counts the bytes read from it.
pub(super) struct Counted {
    pub(super) inner: Body,
    pub(super) count: Arc<AtomicU64>,
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

/// What a gRPC response body reports to when it ends.
pub(super) trait Finish {
    /// Response message bytes passed.
    fn sent(&mut self, _bytes: usize) {}
    /// The call ended with `code`.
    fn finish(self, code: i32);
}

/// A proxied call this sidecar made to another app.
struct Proxied {
    metrics: Arc<Metrics>,
    target: String,
    start: Instant,
}

impl Finish for Proxied {
    fn finish(self, code: i32) {
        self.metrics
            .invocation_sent(&self.target, true, code, elapsed_ms(self.start));
    }
}

/// Records a proxied gRPC call to `target` as streaming service invocation,
/// once its status is known.
pub fn proxied(metrics: &Arc<Metrics>, target: &str, start: Instant, resp: Response<Body>) -> Response<Body> {
    let call = Proxied {
        metrics: metrics.clone(),
        target: target.to_string(),
        start,
    };
    on_finish(call, resp)
}

/// A gRPC call's span, ended with the call.
struct Spanned(Span);

impl Finish for Spanned {
    fn finish(mut self, code: i32) {
        if code != 0 {
            self.0.set_error(daprs_telemetry::grpc_code_name(code));
        }
        self.0.end();
    }
}

/// Ends `span` when the gRPC call answered by `resp` ends.
pub fn traced(span: Span, resp: Response<Body>) -> Response<Body> {
    on_finish(Spanned(span), resp)
}

/// Hands `call` the status of the gRPC answer `resp`: at once for a
/// trailers-only answer, otherwise when the response body's trailers pass.
pub(super) fn on_finish<F: Finish + Send + Unpin + 'static>(call: F, resp: Response<Body>) -> Response<Body> {
    if let Some(code) = grpc_status(resp.headers()) {
        call.finish(code);
        return resp;
    }
    resp.map(|inner| {
        Body::new(Watched {
            inner,
            call: Some(call),
        })
    })
}

/// A response body that reports when its trailers pass, or when it is
/// dropped unfinished (the caller went away: `Canceled`).
struct Watched<F: Finish> {
    inner: Body,
    call: Option<F>,
}

impl<F: Finish + Send + Unpin + 'static> HttpBody for Watched<F> {
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
                    if let Some(call) = self.call.as_mut() {
                        call.sent(data.len());
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.take()
                {
                    call.finish(grpc_status(trailers).unwrap_or(2));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = self.call.take() {
                    call.finish(13);
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: not a complete gRPC answer.
                if let Some(call) = self.call.take() {
                    call.finish(2);
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

impl<F: Finish> Drop for Watched<F> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(1);
        }
    }
}
