//! One write per burst of frames on a gRPC server connection.
//!
//! h2 sends a DATA frame of 256 bytes or more straight from the caller's
//! buffer, and must flush it before it can queue the next frame; so a unary
//! gRPC reply (HEADERS and DATA, then the trailers) leaves in two writes, and
//! on loopback each write wakes the peer once more. [`Coalescing`] copies
//! small writes into one buffer. When what it holds opens a response (a
//! HEADERS frame that does not end its stream), the first flush yields to
//! the task once, so h2 queues the rest of a unary reply before the bytes
//! leave together. Later messages of a stream are not held back: their
//! bursts open nothing. Large writes pass straight through.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, BytesMut};
use http::Extensions;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::Listener;

/// Writes at least this long are not copied.
const DIRECT: usize = 32 << 10;

/// A connection whose small writes are held until a flush.
pub struct Coalescing<T> {
    inner: T,
    held: BytesMut,
    /// Where the bytes written so far leave off in their HTTP/2 frames.
    frames: Frames,
    /// Since the last flush, a response was opened.
    opens: bool,
    /// The task was asked to run again before the held bytes are written.
    yielded: bool,
}

impl<T> Coalescing<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            held: BytesMut::new(),
            frames: Frames::default(),
            opens: false,
            yielded: false,
        }
    }

    /// Follows the frames in `n` accepted bytes of `bufs`.
    fn accepted<'b>(&mut self, bufs: impl Iterator<Item = &'b [u8]>, mut n: usize) {
        for b in bufs {
            let take = n.min(b.len());
            self.opens |= self.frames.scan(&b[..take]);
            n -= take;
        }
    }
}

/// Follows a server's HTTP/2 frames across writes: only frame headers are
/// read, payloads are skipped. Bytes that are not HTTP/2 only make the
/// wrong choice about yielding, never change what is written.
#[derive(Default)]
struct Frames {
    head: [u8; 9],
    got: usize,
    skip: usize,
}

impl Frames {
    /// Reads `bytes`; true if they complete the header of a HEADERS frame
    /// that does not end its stream.
    fn scan(&mut self, mut bytes: &[u8]) -> bool {
        const HEADERS: u8 = 0x1;
        const END_STREAM: u8 = 0x1;
        let mut opens = false;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.got).min(bytes.len());
            self.head[self.got..self.got + n].copy_from_slice(&bytes[..n]);
            self.got += n;
            bytes = &bytes[n..];
            if self.got == 9 {
                self.got = 0;
                let [a, b, c, kind, flags, ..] = self.head;
                self.skip = u32::from_be_bytes([0, a, b, c]) as usize;
                opens |= kind == HEADERS && flags & END_STREAM == 0;
            }
        }
        opens
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes out what is held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.held.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.held.advance(n);
        }
        self.held.clear();
        Poll::Ready(Ok(()))
    }

    /// Holds `len` bytes copied by `copy`, or writes them straight through
    /// when they are large (after what is already held).
    fn poll_hold<'b>(
        &mut self,
        cx: &mut Context<'_>,
        bufs: impl Iterator<Item = &'b [u8]> + Clone,
        direct: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let len = bufs.clone().map(<[u8]>::len).sum();
        if self.held.len() + len > DIRECT {
            ready!(self.poll_drain(cx))?;
            if len >= DIRECT {
                let n = ready!(direct(Pin::new(&mut self.inner), cx))?;
                self.accepted(bufs, n);
                return Poll::Ready(Ok(n));
            }
        }
        bufs.clone().for_each(|b| self.held.extend_from_slice(b));
        self.accepted(bufs, len);
        Poll::Ready(Ok(len))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_hold(cx, std::iter::once(buf), |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_hold(cx, bufs.iter().map(|b| &**b), |inner, cx| {
            inner.poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.held.is_empty() {
            if self.opens && !self.yielded {
                // Let whatever is ready to send be queued first; the task
                // runs again at once and flushes then.
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(self.poll_drain(cx))?;
        }
        self.yielded = false;
        self.opens = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts from `L` and coalesces each connection's writes.
pub struct Coalesce<L>(pub L);

impl<L: Listener> Listener for Coalesce<L> {
    type Io = Coalescing<L::Io>;
    async fn accept(&mut self) -> io::Result<(Self::Io, Extensions)> {
        let (io, ext) = self.0.accept().await?;
        Ok((Coalescing::new(io), ext))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Counts the writes that reach the stream under it.
    struct Counting<T> {
        inner: T,
        writes: Arc<AtomicUsize>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn counted<T>(inner: T) -> (Coalescing<Counting<T>>, Arc<AtomicUsize>) {
        let writes = Arc::new(AtomicUsize::new(0));
        let io = Coalescing::new(Counting {
            inner,
            writes: writes.clone(),
        });
        (io, writes)
    }

    #[tokio::test]
    async fn small_writes_leave_together_and_large_ones_pass_through() {
        let (mut c, writes) = counted(Vec::new());
        c.write_all(b"headers").await.expect("write");
        c.write_all(b"data").await.expect("write");
        // Bytes that open no HTTP/2 response are written at the first flush.
        c.flush().await.expect("flush");
        c.write_all(b"trailers").await.expect("write");
        c.flush().await.expect("flush");
        assert_eq!(writes.load(Ordering::SeqCst), 2);
        let big = vec![7u8; DIRECT];
        c.write_all(b"x").await.expect("write");
        c.write_all(&big).await.expect("write");
        assert_eq!(
            writes.load(Ordering::SeqCst),
            4,
            "what was held goes first, then the large write"
        );
        c.flush().await.expect("flush");
        let mut want = b"headersdatatrailersx".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(c.inner.inner, want);
    }

    /// An HTTP/2 frame header: `len` bytes of payload follow.
    fn frame(len: u32, kind: u8, flags: u8) -> Vec<u8> {
        let [_, a, b, c] = len.to_be_bytes();
        vec![a, b, c, kind, flags, 0, 0, 0, 1]
    }

    #[test]
    fn frame_headers_are_followed_across_writes() {
        let mut f = Frames::default();
        // Response headers split over two writes open a response when whole.
        let headers = frame(3, 0x1, 0x4);
        assert!(!f.scan(&headers[..4]));
        assert!(f.scan(&headers[4..]));
        // Its payload, then a DATA frame whose payload looks like a header.
        let mut more = vec![0u8; 3];
        more.extend(frame(9, 0x0, 0x0));
        more.extend(frame(0, 0x1, 0x0));
        assert!(!f.scan(&more), "a payload is skipped, not read as a frame");
        // Trailers end their stream: they open nothing.
        assert!(!f.scan(&frame(0, 0x1, 0x5)));
    }

    #[test]
    fn only_a_burst_that_opens_a_response_waits_a_turn() {
        use futures_util::FutureExt;
        let (mut c, writes) = counted(Vec::new());
        // A stream's next message goes out at the first flush.
        let mut data = frame(4, 0x0, 0x0);
        data.extend_from_slice(b"next");
        c.write_all(&data).now_or_never().expect("held").expect("write");
        assert!(c.flush().now_or_never().is_some(), "flushed at once");
        assert_eq!(writes.load(Ordering::SeqCst), 1);
        // Response headers wait one turn of the task for what follows them.
        c.write_all(&frame(0, 0x1, 0x4))
            .now_or_never()
            .expect("held")
            .expect("write");
        assert!(c.flush().now_or_never().is_none(), "yields once");
        assert!(c.flush().now_or_never().is_some(), "then flushes");
        assert_eq!(writes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn h2_sends_a_unary_reply_in_one_write() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (server, writes) = counted(server);
        let (before_tx, before_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server).await.expect("handshake");
            let (_req, mut respond) = conn.accept().await.expect("a request").expect("ok");
            let driver = tokio::spawn(async move { while conn.accept().await.is_some() {} });
            // Let the connection settle before counting.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let _ = before_tx.send(writes.load(Ordering::SeqCst));
            let mut tx = respond
                .send_response(http::Response::new(()), false)
                .expect("headers");
            tx.send_data(bytes::Bytes::from(vec![1u8; 1024]), false)
                .expect("data");
            tx.send_trailers(http::HeaderMap::new()).expect("trailers");
            (driver, writes)
        });
        let (mut send, conn) = h2::client::handshake(client).await.expect("handshake");
        tokio::spawn(conn);
        let (res, _) = send
            .send_request(http::Request::post("http://x/").body(()).expect("req"), true)
            .expect("send");
        let mut body = res.await.expect("response").into_body();
        let mut got = 0;
        while let Some(d) = body.data().await {
            got += d.expect("data").len();
        }
        assert_eq!(got, 1024);
        assert!(body.trailers().await.expect("trailers").is_some());
        let (_driver, writes) = server.await.expect("server");
        let before = before_rx.await.expect("count");
        assert_eq!(
            writes.load(Ordering::SeqCst) - before,
            1,
            "HEADERS, DATA and trailers in one write"
        );
    }
}
