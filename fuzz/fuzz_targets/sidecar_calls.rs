//! What arrives on the internal port over HTTP/1.1, read by the transport
//! crate's server loop. The first byte picks how many bytes each read
//! returns; the rest is what the client sends. Property: no panic, and the
//! loop ends once the client's bytes do.
#![no_main]

#[path = "common/scripted.rs"]
mod scripted;

use std::convert::Infallible;

use axum::body::Body;
use bytes::BytesMut;
use daprs_mtls::http::{Limits, Timeouts};
use libfuzzer_sys::fuzz_target;

fn refused(_: usize) -> axum::response::Response {
    let mut res = axum::response::Response::new(Body::from("refused"));
    *res.status_mut() = http::StatusCode::PAYLOAD_TOO_LARGE;
    res
}

fuzz_target!(|data: &[u8]| {
    let [step, sent @ ..] = data else { return };
    let client = scripted::Scripted::new(sent, *step);
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
