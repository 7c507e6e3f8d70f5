//! One write per burst of frames on a gRPC server connection.
//!
//! h2 sends a DATA frame of 256 bytes or more straight from the caller's
//! buffer, and must flush it before it can queue the next frame; so a unary
//! gRPC reply (HEADERS and DATA, then the trailers) leaves in two writes, and
//! on loopback each write wakes the peer once more. [`Coalescing`] copies
//! small writes into one buffer and, the first time it is asked to flush,
//! yields to the task once, so h2 queues everything it has before the bytes
//! leave together. Large writes pass straight through.

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
    /// The task was asked to run again before the held bytes are written.
    yielded: bool,
}

impl<T> Coalescing<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            held: BytesMut::new(),
            yielded: false,
        }
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
    fn poll_hold(
        &mut self,
        cx: &mut Context<'_>,
        len: usize,
        copy: impl FnOnce(&mut BytesMut),
        direct: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.held.len() + len > DIRECT {
            ready!(self.poll_drain(cx))?;
            if len >= DIRECT {
                return direct(Pin::new(&mut self.inner), cx);
            }
        }
        copy(&mut self.held);
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
        self.poll_hold(
            cx,
            buf.len(),
            |held| held.extend_from_slice(buf),
            |inner, cx| inner.poll_write(cx, buf),
        )
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.poll_hold(
            cx,
            len,
            |held| bufs.iter().for_each(|b| held.extend_from_slice(b)),
            |inner, cx| inner.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.held.is_empty() {
            if !self.yielded {
                // Let whatever is ready to send be queued first; the task
                // runs again at once and flushes then.
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(self.poll_drain(cx))?;
        }
        self.yielded = false;
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
        // The first flush yields once; the second poll writes.
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
