//! What an HTTP/1.1 app answers daprd, read by the transport crate's
//! client. The first byte picks the request's method and the body limit,
//! the second how many bytes each read returns; the rest is the answer.
//! Property: no panic, and an accepted body is within the limit.
#![no_main]

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use daprs_mtls::h1::Conn;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An app that answers with `data`, `step` bytes per read, and takes
/// whatever is written to it.
struct App {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for App {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let end = self
            .data
            .len()
            .min(self.at + self.step)
            .min(self.at + buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..end]);
        self.at = end;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for App {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let [pick, step, answer @ ..] = data else { return };
    let method = match pick % 3 {
        0 => http::Method::GET,
        1 => http::Method::HEAD,
        _ => http::Method::POST,
    };
    let limit = usize::from(pick / 3) * 64;
    let app = App {
        data: answer.to_vec(),
        at: 0,
        step: usize::from(*step).max(1),
    };
    let (head, ()) = http::Request::builder()
        .method(method)
        .uri("/orders")
        .body(())
        .expect("a valid request")
        .into_parts();
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let mut conn = Conn::new(app);
    if let Ok((_, body, _)) = rt.block_on(conn.exchange(&head, &Bytes::from_static(b"{}"), limit)) {
        assert!(
            body.len() <= limit,
            "a body of {} bytes passed a limit of {limit}",
            body.len()
        );
    }
});
