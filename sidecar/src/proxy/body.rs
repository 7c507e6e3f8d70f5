//! The bodies of a proxied call: messages are never decoded, but their
//! gRPC framing (a flag byte and a 4-byte length before each message) is
//! followed as bytes pass, so a message over the size limit is refused
//! before it is forwarded, and a deadline that passes ends the reply.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame};
use tokio::{
    sync::Notify,
    time::{Instant, Sleep},
};
use tonic::{Code, Status};

/// Follows gRPC message boundaries across data chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frames {
    /// Reading a message prefix; `got` of its 5 bytes seen so far.
    Prefix { got: u8, len: u32 },
    /// Inside a message with `left` bytes to go.
    Message { left: u64 },
}

impl Frames {
    /// At the start of a stream.
    pub fn new() -> Self {
        Self::Prefix { got: 0, len: 0 }
    }

    /// Follows `chunk`; returns the length of the first message that is over `max`.
    pub fn check(&mut self, mut chunk: &[u8], max: usize) -> Result<(), u64> {
        while !chunk.is_empty() {
            match *self {
                Self::Prefix { got, len } => {
                    // Byte 0 is the compression flag; bytes 1..5 the length.
                    let len = if got == 0 {
                        0
                    } else {
                        (len << 8) | u32::from(chunk[0])
                    };
                    let got = got + 1;
                    chunk = &chunk[1..];
                    *self = match got {
                        5 if u64::from(len) > max as u64 => return Err(u64::from(len)),
                        5 if len == 0 => Self::new(),
                        5 => Self::Message { left: u64::from(len) },
                        _ => Self::Prefix { got, len },
                    };
                }
                Self::Message { left } => {
                    let take = left.min(chunk.len() as u64);
                    chunk = &chunk[usize::try_from(take).unwrap_or(chunk.len())..];
                    *self = match left - take {
                        0 => Self::new(),
                        left => Self::Message { left },
                    };
                }
            }
        }
        Ok(())
    }
}

impl Default for Frames {
    fn default() -> Self {
        Self::new()
    }
}

/// Set when the caller sent a message over the limit; the reply then ends
/// with RESOURCE_EXHAUSTED whatever the app had started to say.
#[derive(Default)]
pub struct Trip {
    set: AtomicBool,
    notify: Notify,
    len: std::sync::atomic::AtomicU64,
}

impl Trip {
    fn fire(&self, len: u64) {
        self.len.store(len, Ordering::Relaxed);
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn fired(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Waits until the request trips.
    pub async fn tripped(&self) {
        let wait = self.notify.notified();
        if !self.fired() {
            wait.await;
        }
    }

    /// The status the caller gets.
    pub fn status(&self, max: usize) -> Status {
        too_large(self.len.load(Ordering::Relaxed), max)
    }
}

/// RESOURCE_EXHAUSTED for a message of `len` bytes.
pub fn too_large(len: u64, max: usize) -> Status {
    Status::resource_exhausted(format!(
        "a message of {len} bytes is over the limit of {max} bytes; raise it with --max-body-size"
    ))
}

/// The caller's request body, refused at the first message over the limit.
pub struct Checked<B> {
    pub inner: B,
    pub frames: Frames,
    pub max: usize,
    pub trip: Arc<Trip>,
}

impl<B> HttpBody for Checked<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(len) = this.frames.check(data.chunk(), this.max)
                {
                    this.trip.fire(len);
                    // The error resets the stream upstream, which stops the app's handler.
                    return Poll::Ready(Some(Err(too_large(len, this.max).into())));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => Poll::Ready(other.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// The reply: passed on as it comes, ended by the trailers a caller should
/// see when the deadline passes or a message is over the limit.
pub struct Reply {
    pub inner: Option<tonic::body::Body>,
    pub deadline: Option<(Instant, Pin<Box<Sleep>>)>,
    pub frames: Frames,
    pub max: usize,
    pub trip: Arc<Trip>,
    /// The call's place under `--app-max-concurrency`, if it takes one.
    pub _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Reply {
    /// Ends the reply with `status`; dropping the app's reply resets its
    /// stream, which cancels the call at the app.
    fn end(&mut self, status: &Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.inner = None;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(status)))))
    }
}

impl HttpBody for Reply {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.trip.fired() {
            let status = this.trip.status(this.max);
            return this.end(&status);
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(len) = this.frames.check(data.chunk(), this.max)
                {
                    return this.end(&too_large(len, this.max));
                }
                if frame.trailers_ref().is_some_and(cancelled)
                    && this.deadline.as_ref().is_some_and(|(d, _)| passed(*d))
                {
                    return this.end(&deadline_exceeded());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) if this.trip.fired() => {
                drop(e);
                let status = this.trip.status(this.max);
                this.end(&status)
            }
            Poll::Ready(other) => {
                if other.is_none() {
                    this.inner = None;
                }
                Poll::Ready(other)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|(_, sleep)| sleep.as_mut().poll(cx).is_ready());
                if expired {
                    this.end(&deadline_exceeded())
                } else {
                    Poll::Pending
                }
            }
        }
    }

    /// A trailers-only reply (an error answered at once) must end with its
    /// headers: gRPC clients other than tonic's reject a reply that goes on
    /// with an empty final data frame.
    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }
}

fn trailers(status: &Status) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if let Ok(v) = HeaderValue::from_str(status.message()) {
        h.insert("grpc-message", v);
    }
    h
}

/// Whether the deadline has passed, give or take the few milliseconds by
/// which the timers of the hops after this one may differ.
pub fn passed(d: Instant) -> bool {
    Instant::now() + Duration::from_millis(5) >= d
}

/// A hop after this one saw the same deadline pass and said CANCELLED
/// (tonic does); the caller is told the reason.
pub fn cancelled(h: &HeaderMap) -> bool {
    grpc_status(h) == Some(Code::Cancelled as i32)
}

/// The `grpc-status` of headers or trailers, if they carry one.
pub fn grpc_status(h: &HeaderMap) -> Option<i32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// What the caller gets when its deadline passes.
pub fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the deadline passed before the call ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len as usize));
        v
    }

    #[test]
    fn message_lengths_are_followed_across_chunks() {
        let mut stream = framed(10);
        stream.extend(framed(0));
        stream.extend(framed(100));
        stream.extend(framed(3));
        // Whatever the chunking, the 100-byte message is the one over 50.
        for size in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut f = Frames::new();
            let result: Result<Vec<()>, u64> = stream.chunks(size).map(|c| f.check(c, 50)).collect();
            assert_eq!(result, Err(100), "chunks of {size}");
            let mut f = Frames::new();
            assert!(stream.chunks(size).all(|c| f.check(c, 100).is_ok()));
            assert_eq!(f, Frames::new(), "ends on a boundary");
        }
        // A 4 GiB length prefix is refused from its prefix alone.
        let mut f = Frames::new();
        assert_eq!(
            f.check(&[0, 255, 255, 255, 255], 1 << 20),
            Err(u64::from(u32::MAX))
        );
    }
}
