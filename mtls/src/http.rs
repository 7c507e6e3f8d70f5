//! Serving an axum router over HTTP/1.1 and HTTP/2 with the limits a
//! server facing untrusted clients needs: a deadline for each request head,
//! a deadline for each stalled request body, an idle timeout between
//! requests, an early 413 when `Content-Length` is over the limit, and a
//! graceful drain at shutdown.
//!
//! hyper alone only bounds the first request head of an HTTP/1 connection,
//! and nothing while it detects the protocol; so each connection here is
//! watched by its own task, which closes it when it has been idle (no
//! request in flight) for too long, or when a request head has been
//! arriving for too long.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use http::{Extensions, Request, header::CONTENT_LENGTH};
use http_body::Body as HttpBody;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{mpsc, watch},
    time::Sleep,
};
use tower::ServiceExt;

use crate::h1::serve::sniff;

mod body;

use body::{Counted, TimedBody};

/// The time limits of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the first byte of a request head to its end (Dapr's `ReadHeaderTimeout`).
    pub read_header: Duration,
    /// Longest wait for the next chunk of a request body; None for none
    /// (gRPC streams may rightly stay quiet for long).
    pub body: Option<Duration>,
    /// Longest time a connection stays open with no request in flight.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            read_header: Duration::from_secs(10),
            body: Some(Duration::from_secs(60)),
            idle: Duration::from_secs(120),
        }
    }
}

/// What one server accepts.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Largest request head in bytes (RFC 9113's header list size over
    /// HTTP/2); larger ones get `head_too_large` on their own stream.
    pub max_head: usize,
    /// The response to an HTTP/2 request whose head is over `max_head`.
    pub head_too_large: fn(usize) -> Response,
    /// Largest request body; a request declaring more is answered at once.
    pub max_body: usize,
    /// The response to a request whose `Content-Length` is over `max_body`.
    pub too_large: fn(usize) -> Response,
    /// Time limits.
    pub timeouts: Timeouts,
    /// HTTP/2 flow-control windows (stream, connection); hyper's defaults when None.
    pub h2_windows: Option<(u32, u32)>,
    /// With a size, HTTP/1.1 requests are read whole, their bodies at most
    /// that long, and answered by the connection's own task
    /// ([`crate::h1::serve`]): the internal port, where they are other
    /// sidecars' unary calls.
    pub h1_whole: Option<usize>,
}

/// The error a request body yields when its client stopped sending it.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: nothing arrived for {0:?}")]
pub struct BodyTimeout(pub Duration);

impl BodyTimeout {
    /// Finds this error in a body error's chain of causes.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut cur = Some(e);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<Self>() {
                return Some(t);
            }
            cur = e.source();
        }
        None
    }
}

/// Something connections are accepted from.
pub trait Listener: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection; the extensions (say, the client's
    /// proven identity) are added to each of its requests.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, Extensions)>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<(Self::Io, Extensions)> {
        let (tcp, _) = tokio::net::TcpListener::accept(self).await?;
        // Small requests answered quickly: Nagle plus delayed ACKs would
        // hold each reply back for tens of milliseconds.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        Ok((tcp, Extensions::new()))
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> io::Result<(Self::Io, Extensions)> {
        Ok((tokio::net::UnixListener::accept(self).await?.0, Extensions::new()))
    }
}

/// Tells connections to finish and waits until they have.
#[derive(Clone)]
pub struct Drain {
    stop: watch::Receiver<bool>,
    // Each connection holds a sender; when the last is dropped, all are done.
    _open: mpsc::Sender<()>,
}

/// The other end of [`Drain`]: starts the drain and waits for it.
pub struct DrainHandle {
    stop: watch::Sender<bool>,
    open: mpsc::Receiver<()>,
}

impl Drain {
    /// A new drain and its handle.
    pub fn new() -> (Self, DrainHandle) {
        let (stop_tx, stop) = watch::channel(false);
        let (open, open_rx) = mpsc::channel(1);
        (
            Self { stop, _open: open },
            DrainHandle {
                stop: stop_tx,
                open: open_rx,
            },
        )
    }
}

impl DrainHandle {
    /// Asks every connection to finish its requests and close, then waits.
    pub async fn drain(mut self) {
        let _ = self.stop.send(true);
        // recv yields None once every Drain clone is gone.
        while self.open.recv().await.is_some() {}
    }
}

/// What serves requests: an [`axum::Router`], or any service like it.
pub trait Api:
    tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Api for S where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `router` on connections from `l` until `stop`, then lets the
/// requests in flight finish.
pub async fn serve<L: Listener, S: Api>(mut l: L, router: S, limits: Limits, stop: impl Future<Output = ()>) {
    let (drain, handle) = Drain::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (io, ext) = tokio::select! {
            accepted = l.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        tokio::spawn(serve_connection(io, router.clone(), limits, drain.clone(), ext));
    }
    drop(drain);
    handle.drain().await;
}

/// What the watcher of one connection knows about it.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection opened), in clock ticks.
    idle_since: AtomicU64,
    /// When the first byte after `idle_since` arrived; 0 = none yet.
    first_byte: AtomicU64,
    /// HTTP/2 clients keep connections open and ping; only the idle limit applies.
    h2: AtomicBool,
    /// Served by [`crate::h1::serve`], which stops taking requests at a
    /// drain but is not told when idle: the watcher closes it then.
    whole: AtomicBool,
}

/// Milliseconds since the first call, never 0 (0 marks "not yet").
fn tick() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

impl Activity {
    /// Nothing in flight and no request begun.
    fn quiet(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.first_byte.load(Ordering::Acquire) == 0
    }

    fn expired(&self, t: &Timeouts, now: u64) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let first = self.first_byte.load(Ordering::Acquire);
        if first != 0 && !self.h2.load(Ordering::Relaxed) {
            return (now.saturating_sub(first) >= millis(t.read_header)).then_some("request head timed out");
        }
        let idle = self.idle_since.load(Ordering::Acquire);
        (now.saturating_sub(idle) >= millis(t.idle)).then_some("idle")
    }
}

/// Counts a request in flight until its response body is gone.
pub(crate) struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.first_byte.store(0, Ordering::Release);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.idle_since.store(tick(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's byte stream, noting when a request head starts.
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    /// Set once the write side is shut: until it fires, what the client still
    /// sends is read and dropped, so an answer given before the request
    /// body was read is not lost to a reset.
    linger: Option<Pin<Box<Sleep>>>,
    /// Whether the first bytes (which tell HTTP/2 from HTTP/1) were looked at.
    seen: bool,
    /// Bytes read before the server took the connection, read again first.
    first: bytes::Bytes,
}

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_millis(500);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            let first = self.first.split_to(n);
            buf.put_slice(&first);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        let this = &mut *self;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let a = &this.activity;
            if !this.seen {
                this.seen = true;
                if read.starts_with(&H2_PREFACE[..read.len().min(H2_PREFACE.len())]) {
                    a.h2.store(true, Ordering::Relaxed);
                }
            }
            if a.in_flight.load(Ordering::Acquire) == 0 && a.first_byte.load(Ordering::Acquire) == 0 {
                a.first_byte.store(tick(), Ordering::Release);
            }
        }
        res
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // End of stream or an error: the client is gone.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => break,
            }
        }
        match this.linger.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// The head's size as HTTP/2 counts it: name and value plus 32 per field,
/// pseudo-header fields included.
fn head_size<B>(req: &Request<B>) -> usize {
    const FIELD: usize = 32;
    let uri = req.uri();
    let pseudo = req.method().as_str().len()
        + uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, str::len)
        + 4 * FIELD
        + ":method:path:authority:scheme".len();
    req.headers()
        .iter()
        .fold(pseudo, |n, (k, v)| n + k.as_str().len() + v.len() + FIELD)
}

/// The response to an oversize head on a plain HTTP port.
pub fn head_too_large(limit: usize) -> Response {
    (
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!("request header fields may be at most {limit} bytes"),
    )
        .into_response()
}

fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Serves one accepted connection (after any TLS handshake) until the
/// client closes it, it times out, or the drain asks it to finish. `ext`
/// is added to each request's extensions.
pub async fn serve_connection<I, S: Api>(io: I, router: S, limits: Limits, drain: Drain, ext: Extensions)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    activity.idle_since.store(tick(), Ordering::Release);
    let mut io = Watched {
        io,
        activity: activity.clone(),
        linger: None,
        seen: false,
        first: bytes::Bytes::new(),
    };
    // The work's own view of the drain; the watcher below keeps another.
    let work_stop = drain.stop.clone();
    let work = async {
        if limits.h1_whole.is_some() {
            let Ok((h2, read)) = sniff(&mut io).await else {
                return;
            };
            if !h2 {
                activity.whole.store(true, Ordering::Release);
                let enter = || InFlight::enter(&activity);
                let served = crate::h1::serve::serve(io, read, router, limits, &ext, &work_stop, enter).await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP/1.1 connection ended with an error");
                }
                return;
            }
            io.first = read.freeze();
        }
        serve_with_hyper(io, router, limits, &activity, ext, work_stop).await;
    };
    let mut work = std::pin::pin!(work);
    let t = limits.timeouts;
    // The watcher wakes a few times per limit; nothing is done per request.
    let period = (t.read_header.min(t.idle) / 4).max(Duration::from_millis(5));
    let mut stop = drain.stop.clone();
    let mut draining = *stop.borrow();
    loop {
        tokio::select! {
            () = work.as_mut() => break,
            // hyper drains its own connections; only whole-request ones
            // need telling when they are idle.
            changed = stop.changed(), if !draining && limits.h1_whole.is_some() => {
                draining = changed.is_err() || *stop.borrow();
            }
            () = tokio::time::sleep(period) => {
                if let Some(why) = activity.expired(&t, tick()) {
                    tracing::debug!(reason = why, "closing HTTP connection");
                    break;
                }
            }
        }
        if draining && activity.whole.load(Ordering::Acquire) && activity.quiet() {
            break;
        }
    }
    drop(drain);
}

/// Serves a connection with hyper (HTTP/1 or HTTP/2, as the client
/// speaks), finishing gracefully once `stop` turns true.
async fn serve_with_hyper<I, S: Api>(
    io: I,
    router: S,
    limits: Limits,
    activity: &Arc<Activity>,
    ext: Extensions,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_activity = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = InFlight::enter(&svc_activity);
        let router = router.clone();
        if !ext.is_empty() {
            req.extensions_mut().extend(ext.clone());
        }
        async move {
            if req.version() == http::Version::HTTP_2 && head_size(&req) > limits.max_head {
                let resp = (limits.head_too_large)(limits.max_head);
                return Ok::<_, Infallible>(resp.map(|b| {
                    Body::new(Counted {
                        inner: b,
                        _in_flight: in_flight,
                    })
                }));
            }
            if declared_length(&req).is_some_and(|n| n > limits.max_body as u64) {
                let mut resp = (limits.too_large)(limits.max_body);
                if req.version() < http::Version::HTTP_2 {
                    // The body is never read, so the connection cannot carry another request.
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                return Ok(resp.map(|b| {
                    Body::new(Counted {
                        inner: b,
                        _in_flight: in_flight,
                    })
                }));
            }
            let req = req.map(|inner| match limits.timeouts.body {
                Some(limit) if !inner.is_end_stream() => Body::new(TimedBody {
                    inner,
                    limit,
                    sleep: None,
                    armed: false,
                }),
                _ => Body::new(inner),
            });
            let resp = match router.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok(resp.map(|b| {
                Body::new(Counted {
                    inner: b,
                    _in_flight: in_flight,
                })
            }))
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(limits.max_head.max(MIN_HEAD));
    // h2 itself refuses heads over its limit with 431 and a reset, and ends
    // the connection past four times that or past a CONTINUATION count
    // derived from it. A generous limit there keeps oversize heads a matter
    // of their own stream, answered above; h2 holds at most one head per
    // connection while decoding it.
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_head.max(H2_HEAD_CEILING)).unwrap_or(u32::MAX));
    if let Some((stream, conn)) = limits.h2_windows {
        builder
            .http2()
            .initial_stream_window_size(stream)
            .initial_connection_window_size(conn)
            .max_frame_size(crate::MAX_FRAME);
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !draining => {
                if changed.is_err() || *stop.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The smallest request-head buffer hyper accepts.
pub const MIN_HEAD: usize = 8 << 10;

/// The head size h2 is told to accept: room for a 1 MB head in 16 KiB
/// CONTINUATION frames, so such a head is refused on its stream alone.
pub const H2_HEAD_CEILING: usize = 2 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_head_deadlines() {
        let t = Timeouts {
            read_header: Duration::from_millis(100),
            body: Some(Duration::from_secs(1)),
            idle: Duration::from_millis(500),
        };
        let a = Activity::default();
        a.idle_since.store(1000, Ordering::Relaxed);
        assert_eq!(a.expired(&t, 1400), None);
        assert_eq!(a.expired(&t, 1500), Some("idle"));
        a.first_byte.store(1050, Ordering::Relaxed);
        assert_eq!(a.expired(&t, 1149), None);
        assert_eq!(a.expired(&t, 1150), Some("request head timed out"));
        // HTTP/2 pings do not start the head deadline.
        a.h2.store(true, Ordering::Relaxed);
        assert_eq!(a.expired(&t, 1150), None);
        // Nothing expires while a request is in flight.
        a.in_flight.store(1, Ordering::Relaxed);
        assert_eq!(a.expired(&t, 99_999), None);
    }
}
