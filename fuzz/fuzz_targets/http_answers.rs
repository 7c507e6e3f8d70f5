//! What an HTTP/1.1 app answers daprd, read by the transport crate's
//! client. The first byte picks the request's method and the body limit,
//! the second how many bytes each read returns; the rest is the answer.
//! Property: no panic, and an accepted body is within the limit.
#![no_main]

#[path = "common/scripted.rs"]
mod scripted;

use bytes::Bytes;
use daprs_mtls::h1::Conn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [pick, step, answer @ ..] = data else { return };
    let method = match pick % 3 {
        0 => http::Method::GET,
        1 => http::Method::HEAD,
        _ => http::Method::POST,
    };
    let limit = usize::from(pick / 3) * 64;
    let app = scripted::Scripted::new(answer, *step);
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
