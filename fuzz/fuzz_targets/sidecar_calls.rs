//! What arrives on the internal port over HTTP/1.1, read by the transport
//! crate's server loop. The first byte picks how many bytes each read
//! returns; the rest is what the client sends. Property: no panic, and the
//! loop ends once the client's bytes do.
#![no_main]

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::BytesMut;
use daprs_mtls::http::{Limits, Timeouts};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client that sends `data`, `step` bytes per read, and takes whatever
/// is written to it.
struct Client {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Client {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
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

impl AsyncWrite for Client {
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

fn refused(_: usize) -> axum::response::Response {
    let mut res = axum::response::Response::new(Body::from("refused"));
    *res.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
    res
}

fuzz_target!(|data: &[u8]| {
    let [step, sent @ ..] = data else { return };
    let client = Client {
        data: sent.to_vec(),
        at: 0,
        step: usize::from(*step).max(1),
    };
    let limits = Limits {
        max_head: 4096,
        head_too_large: refused,
        max_body: 1024,
        too_large: refused,
        timeouts: Timeouts::default(),
        h2_windows: None,
        h1_whole: Some(1024),
    };
    // Answers each request with its own body.
    let echo = tower::service_fn(|req: http::Request<Body>| async move {
        Ok::<_, Infallible>(axum::response::Response::new(req.into_body()))
    });
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let ext = http::Extensions::new();
    let served = daprs_mtls::h1::serve::serve(client, BytesMut::new(), echo, limits, &ext, &stop, || ());
    let _ = rt.block_on(served);
});
