//! The server end of [`super::Conn`]'s calls between sidecars: HTTP/1.1
//! requests read whole (head and `content-length` body) into one buffer,
//! handed to the router, and each answer written in one write, all in the
//! connection's own task. hyper's server, which this replaces on the
//! internal port, streams both bodies through channels and wakes the task
//! once per body frame; a unary gRPC call needs none of that.
//!
//! Only what daprd's own client sends is served: a request with a chunked
//! body, `Expect`, or an upgrade is refused with a status and the
//! connection closed. Time limits are the connection watcher's (see
//! [`crate::http`]): it sees each head begin and each request finish.

use std::io;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
    header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE},
};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

use super::head::{BadField, BadLength, content_length, keeps_alive, lists, sliced, spans, write_fields};
use crate::http::{Api, Limits};

/// Most header fields in a request head.
const MAX_FIELDS: usize = 128;
/// An answer's body at most this long goes out in the same write as its head.
const JOINED_BODY: usize = 64 << 10;

/// A request head parsed off the buffer, and what it says of the body
/// and the connection.
struct Head {
    parts: http::request::Parts,
    length: usize,
    keep: bool,
    /// The client accepts trailer fields.
    trailers: bool,
}

/// Why a head is refused: the status, what the client is told.
type Refusal = (StatusCode, String);

/// Serves requests on `io`, starting with what `buf` already holds, until
/// the client closes the connection, a request or answer ends it, or
/// `stop` turns true between requests. `enter` is called once per request
/// head read and its guard dropped once the answer is written.
pub async fn serve<I, S, G>(
    mut io: I,
    mut buf: BytesMut,
    router: S,
    limits: Limits,
    ext: &http::Extensions,
    stop: &tokio::sync::watch::Receiver<bool>,
    enter: impl Fn() -> G,
) -> io::Result<()>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: Api,
{
    let max_body = limits.max_body.min(limits.h1_whole.unwrap_or(usize::MAX));
    let mut out = Vec::new();
    loop {
        let head = loop {
            match parse(&mut buf, limits.max_head) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err((status, why)) => {
                    out.clear();
                    refusal(&mut out, status, &why);
                    return finish(&mut io, &out).await;
                }
            }
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(8 << 10);
            }
            if io.read_buf(&mut buf).await? == 0 {
                // Closed between requests, or mid-head: nothing to answer.
                return Ok(());
            }
        };
        let guard = enter();
        if head.length > max_body {
            let (parts, body) = (limits.too_large)(max_body).into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            out.clear();
            last_answer(&mut out, &parts, &body);
            return finish(&mut io, &out).await;
        }
        while buf.len() < head.length {
            buf.reserve(head.length - buf.len());
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body = buf.split_to(head.length).freeze();
        let (keep, trailers) = (head.keep, head.trailers);
        // An answer to HEAD states its length but carries no body.
        let bodiless = head.parts.method == Method::HEAD;
        let mut req = Request::from_parts(head.parts, Body::from(body));
        if !ext.is_empty() {
            req.extensions_mut().extend(ext.clone());
        }
        let res = match router.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        let (parts, body) = res.into_parts();
        // A body that fails midway leaves nothing sensible to send.
        let Ok(collected) = body.collect().await else {
            return Ok(());
        };
        let sent = collected
            .trailers()
            .filter(|t| trailers && !bodiless && !t.is_empty())
            .cloned();
        let body = collected.to_bytes();
        out.clear();
        let keep = keep && !*stop.borrow();
        encode(&mut out, &parts, &body, sent.as_ref(), keep);
        let (unchunked, joined) = (sent.is_none() && !bodiless, body.len() <= JOINED_BODY);
        if unchunked && joined {
            out.extend_from_slice(&body);
        }
        io.write_all(&out).await?;
        if unchunked && !joined {
            io.write_all(&body).await?;
        }
        io.flush().await?;
        drop(guard);
        if !keep {
            return io.shutdown().await;
        }
        // A large answer's buffer is not kept by an idle connection.
        if out.capacity() > JOINED_BODY {
            out = Vec::new();
        }
    }
}

/// Writes a last answer and closes.
async fn finish<I: AsyncWrite + Unpin>(io: &mut I, out: &[u8]) -> io::Result<()> {
    io.write_all(out).await?;
    io.shutdown().await
}

/// The request head at the start of `buf`, taken off it, once all of it
/// is there; a refusal for a head over `max_head` bytes, a malformed one,
/// or one asking for what is not served.
fn parse(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, Refusal> {
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_string());
    if buf.is_empty() {
        return Ok(None);
    }
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Err((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request heads may be at most {max_head} bytes and {MAX_FIELDS} fields"),
            ));
        }
        Err(e) => return Err(bad(&format!("the request is not HTTP/1.1: {e}"))),
    };
    let method =
        Method::from_bytes(req.method.unwrap_or_default().as_bytes()).map_err(|_| bad("invalid method"))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let start = buf.as_ptr() as usize;
    let target = req.path.unwrap_or_default();
    let target_at = target.as_ptr() as usize - start..target.as_ptr() as usize - start + target.len();
    let bad_field = |e| match e {
        BadField::Name(_) => bad("invalid header name"),
        BadField::Value(_) => bad("invalid header value"),
    };
    let spans = spans(buf.as_ptr(), req.headers).map_err(bad_field)?;
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target_at)).map_err(|_| bad("invalid request target"))?;
    let headers = sliced(&head, spans).map_err(bad_field)?;
    if headers.contains_key(TRANSFER_ENCODING)
        || headers.contains_key(EXPECT)
        || headers.contains_key(UPGRADE)
    {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "chunked bodies, Expect and upgrades are not served on this port".into(),
        ));
    }
    let length = match content_length(&headers) {
        Ok(n) => usize::try_from(n.unwrap_or(0)).map_err(|_| bad("invalid content-length"))?,
        Err(BadLength::Invalid(_)) => return Err(bad("invalid content-length")),
        Err(BadLength::Conflicting) => return Err(bad("conflicting content-length values")),
    };
    let keep = keeps_alive(&headers, version);
    let trailers = headers
        .get(http::header::TE)
        .is_some_and(|te| lists(te, "trailers"));
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        length,
        keep,
        trailers,
    }))
}

/// The answer's status line and fields: its length, or chunked framing
/// with the trailers after the body (written here too).
fn encode(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &Bytes,
    trailers: Option<&HeaderMap>,
    keep: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // The answer's framing is set here.
    const FRAMING: [HeaderName; 3] = [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION];
    write_fields(out, &parts.headers, &FRAMING);
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    }
    match trailers {
        None => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
        }
        Some(t) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            if !body.is_empty() {
                out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            write_fields(out, t, &FRAMING);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// An answer after which the connection closes, its body included.
fn last_answer(out: &mut Vec<u8>, parts: &http::response::Parts, body: &Bytes) {
    encode(out, parts, body, None, false);
    out.extend_from_slice(body);
}

/// A refusal, after which the connection closes.
fn refusal(out: &mut Vec<u8>, status: StatusCode, why: &str) {
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts
        .headers
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    last_answer(out, &parts, &Bytes::copy_from_slice(why.as_bytes()));
}

/// Reads the connection's first bytes: HTTP/2's preface (the bytes then go
/// to the HTTP/2 server ahead of the rest), or anything else (for [`serve`]).
pub async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(bool, BytesMut)> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = BytesMut::with_capacity(8 << 10);
    loop {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Ok((false, buf));
        }
        if n == PREFACE.len() {
            return Ok((true, buf));
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Ok((false, buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::h1::{Conn, Failure, Trailers};

    fn limits() -> Limits {
        Limits {
            max_head: 1024,
            head_too_large: crate::http::head_too_large,
            max_body: 64,
            too_large: |_| (StatusCode::PAYLOAD_TOO_LARGE, "too large").into_response(),
            timeouts: crate::http::Timeouts::default(),
            h2_windows: None,
            h1_whole: Some(64),
        }
    }

    use axum::response::IntoResponse;

    /// Echoes the body with the path in a header; `/trailers` answers with
    /// a trailer field too.
    fn echo() -> impl Api {
        tower::service_fn(|req: Request<Body>| async move {
            let path = req.uri().path().to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body = if path == "/h" {
                Bytes::from_static(b"hidden")
            } else {
                body
            };
            let res = if path == "/trailers" {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", HeaderValue::from_static("0"));
                let frames = [
                    Ok::<_, Infallible>(http_body::Frame::data(body)),
                    Ok(http_body::Frame::trailers(t)),
                ];
                Response::new(Body::new(http_body_util::StreamBody::new(
                    futures_util::stream::iter(frames),
                )))
            } else {
                Response::new(Body::from(body))
            };
            let (mut parts, body) = res.into_parts();
            parts.headers.insert(
                "path",
                HeaderValue::from_str(&path).unwrap_or(HeaderValue::from_static("?")),
            );
            Ok::<_, Infallible>(Response::from_parts(parts, body))
        })
    }

    fn served() -> (tokio::io::DuplexStream, tokio::sync::watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = serve(
                server,
                BytesMut::new(),
                echo(),
                limits(),
                &http::Extensions::new(),
                &stop,
                || (),
            )
            .await;
        });
        (client, stop_tx)
    }

    fn post(path: &str, headers: &[(&'static str, &'static str)]) -> http::request::Parts {
        let mut req = Request::post(path).body(()).expect("request");
        for (k, v) in headers {
            req.headers_mut().insert(*k, HeaderValue::from_static(v));
        }
        req.into_parts().0
    }

    #[tokio::test]
    async fn requests_on_one_connection_are_answered_in_turn() {
        let (io, _stop) = served();
        let mut conn = Conn::new(io);
        for i in 0..3 {
            let body = Bytes::from(format!("call {i}"));
            let (parts, answer, keep) = conn
                .exchange(&post("/a", &[]), &body, 1 << 10)
                .await
                .expect("answer");
            assert_eq!((parts.status, &answer, keep), (StatusCode::OK, &body, true));
            assert_eq!(parts.headers["path"], "/a");
            assert_eq!(parts.headers["content-length"], body.len().to_string().as_str());
        }
        // Trailers go out only to a client that takes them.
        let body = Bytes::from_static(b"t");
        let (parts, answer, _) = conn
            .exchange(&post("/trailers", &[("te", "trailers")]), &body, 1 << 10)
            .await
            .expect("chunked");
        assert_eq!(&answer[..], b"t");
        let trailers = parts
            .extensions
            .get::<Trailers>()
            .map(|t| t.0.clone())
            .unwrap_or_default();
        assert_eq!(trailers["grpc-status"], "0");
        let (parts, _, _) = conn
            .exchange(&post("/trailers", &[]), &body, 1 << 10)
            .await
            .expect("plain");
        assert!(parts.extensions.get::<Trailers>().is_none());
        assert_eq!(parts.headers["content-length"], "1");
    }

    #[tokio::test]
    async fn an_answer_to_head_has_a_length_and_no_body() {
        let (io, _stop) = served();
        let mut conn = Conn::new(io);
        let head = Request::head("/h").body(()).expect("request").into_parts().0;
        let (parts, body, keep) = conn.exchange(&head, &Bytes::new(), 1 << 10).await.expect("head");
        assert_eq!((parts.status, body.len(), keep), (StatusCode::OK, 0, true));
        assert_eq!(parts.headers["content-length"], "6");
        let (_, answer, _) = conn
            .exchange(&post("/a", &[]), &Bytes::from_static(b"next"), 1 << 10)
            .await
            .expect("next");
        assert_eq!(&answer[..], b"next");
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (mut io, _stop) = served();
        io.write_all(
            b"POST /1 HTTP/1.1\r\ncontent-length: 1\r\n\r\naPOST /2 HTTP/1.1\r\ncontent-length: 1\r\n\r\nb",
        )
        .await
        .expect("write");
        let mut conn = Conn::new(io);
        let (p1, b1) = conn.read_answer().await;
        let (p2, b2) = conn.read_answer().await;
        assert_eq!(
            (&p1.headers["path"], &b1[..]),
            (&HeaderValue::from_static("/1"), &b"a"[..])
        );
        assert_eq!(
            (&p2.headers["path"], &b2[..]),
            (&HeaderValue::from_static("/2"), &b"b"[..])
        );
    }

    #[tokio::test]
    async fn what_is_not_served_is_refused_and_the_connection_closed() {
        for (head, status) in [
            ("POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\ncontent-length: 65\r\n\r\n", 413),
            (
                "POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n", 400),
            ("NOT HTTP\r\n\r\n", 400),
        ] {
            let (mut io, _stop) = served();
            io.write_all(head.as_bytes()).await.expect("write");
            let mut conn = Conn::new(io);
            let (parts, _) = conn.read_answer().await;
            assert_eq!(parts.status.as_u16(), status, "{head}");
            assert_eq!(parts.headers["connection"], "close");
        }
        let (mut io, _stop) = served();
        let long = format!("POST / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(2000));
        io.write_all(long.as_bytes()).await.expect("write");
        let (parts, _) = Conn::new(io).read_answer().await;
        assert_eq!(parts.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[tokio::test]
    async fn after_a_drain_the_answer_closes_the_connection() {
        let (io, stop) = served();
        let mut conn = Conn::new(io);
        let body = Bytes::from_static(b"x");
        let (_, _, keep) = conn
            .exchange(&post("/a", &[]), &body, 1 << 10)
            .await
            .expect("first");
        assert!(keep);
        let _ = stop.send(true);
        let (parts, _, keep) = conn
            .exchange(&post("/a", &[]), &body, 1 << 10)
            .await
            .expect("last");
        assert_eq!(
            (parts.headers["connection"].as_bytes(), keep),
            (&b"close"[..], false)
        );
        let after = conn.exchange(&post("/a", &[]), &body, 1 << 10).await;
        assert!(
            matches!(after, Err(Failure::NotSent(_) | Failure::Unanswered(_))),
            "{after:?}"
        );
    }

    #[tokio::test]
    async fn the_http2_preface_is_told_from_anything_else() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0")
            .await
            .expect("write");
        let (h2, read) = sniff(&mut b).await.expect("sniff");
        assert!(h2);
        assert!(read.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"POST / HTTP/1.1\r\n").await.expect("write");
        let (h2, read) = sniff(&mut b).await.expect("sniff");
        assert!(!h2);
        assert!(read.starts_with(b"POST"));
    }
}
