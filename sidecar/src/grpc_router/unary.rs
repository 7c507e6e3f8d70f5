//! The busiest unary methods, served off their HTTP/2 stream without
//! tonic's generic server. That server reads even a unary request through
//! its streaming decoder (a buffer the message is copied into) and writes
//! the reply through an encoding stream; here the request's one message is
//! taken as it arrived, decoded once, and the reply is one DATA frame and
//! the trailers. Each method keeps its handler, written against tonic's
//! `Request` and `Response`, so both paths answer alike.

use std::{convert::Infallible, future::Future, sync::Arc};

use axum::body::Body;
use bytes::{BufMut, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tonic::{Request, Response, Status, metadata::MetadataMap};

/// Headers a reply's metadata may not set: the transport's own.
const RESERVED: [&str; 6] = [
    "te",
    "user-agent",
    "content-type",
    "grpc-message",
    "grpc-message-type",
    "grpc-status",
];

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// What a call's answer is on its way as.
pub type Answer = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

/// One method's handling of a call.
pub type Handle = Arc<dyn Fn(http::Request<Body>) -> Answer + Send + Sync>;

/// A unary method: requests over `decode_limit` bytes and replies over
/// `encode_limit` are refused, as tonic's limits refuse them.
pub fn method<M, R, H, F>(decode_limit: usize, encode_limit: usize, handler: H) -> Handle
where
    M: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    H: Fn(Request<M>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<R>, Status>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |req: http::Request<Body>| {
        let handler = handler.clone();
        // Boxed: the handler's future is large, and the port's dispatch
        // future is as large as its largest side.
        let answer: Answer = Box::pin(async move {
            let h1 = req.version() < http::Version::HTTP_2;
            let res = match request::<M>(req, decode_limit).await {
                Ok(req) => match handler(req).await {
                    Ok(res) => reply(res, encode_limit, h1),
                    Err(status) => Err(status),
                },
                Err(status) => Err(status),
            };
            Ok(res.unwrap_or_else(|status| status.into_http()))
        });
        answer
    })
}

/// One service's methods served here, by name; its other methods, and
/// every other call, go to `other`.
#[derive(Clone)]
pub struct Methods<S> {
    /// `/<package>.<Service>/`.
    service: &'static str,
    table: Arc<[(&'static str, Handle)]>,
    other: S,
}

impl<S> Methods<S> {
    pub fn new(service: &'static str, table: Vec<(&'static str, Handle)>, other: S) -> Self {
        Self {
            service,
            table: table.into(),
            other,
        }
    }
}

impl<S> tower::Service<http::Request<Body>> for Methods<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::Either<Answer, S::Future>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        // As the port's other services, always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let found = req
            .uri()
            .path()
            .strip_prefix(self.service)
            .and_then(|name| self.table.iter().position(|(n, _)| *n == name));
        match found.and_then(|i| self.table.get(i)) {
            Some((_, handle)) => futures_util::future::Either::Left(handle(req)),
            None => futures_util::future::Either::Right(self.other.call(req)),
        }
    }
}

/// What a message over the size limit is told.
pub const OVER_LIMIT: &str = "the message is over the size limit; raise it with --max-body-size";

fn over_limit() -> Status {
    Status::resource_exhausted(OVER_LIMIT)
}

/// The request's metadata, extensions and one message.
async fn request<M: prost::Message + Default>(
    req: http::Request<Body>,
    limit: usize,
) -> Result<Request<M>, Status> {
    let (parts, body) = req.into_parts();
    // One frame's data is taken as it is; several are joined.
    let collected = Limited::new(body, limit.saturating_add(5))
        .collect()
        .await
        .map_err(|e| match e.downcast_ref::<LengthLimitError>() {
            Some(_) => over_limit(),
            None => Status::from_error(e),
        })?;
    let mut headers = parts.headers;
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    let body = collected.to_bytes();
    let message = daprs_mtls::peer::message_of(body, "the request")?;
    let message = M::decode(message).map_err(daprs_proto::codec::invalid::<M>)?;
    Ok(Request::from_parts(
        MetadataMap::from_headers(headers),
        parts.extensions,
        message,
    ))
}

/// `res` as one framed message and the trailers that end it. Over HTTP/1.1
/// (another daprd's unary call, see `daprs_mtls::peer`) the status goes in
/// the head instead and the body's length is given, which the caller reads
/// in one piece.
fn reply<R: prost::Message>(
    res: Response<R>,
    limit: usize,
    h1: bool,
) -> Result<http::Response<Body>, Status> {
    let (metadata, message, extensions) = res.into_parts();
    let len = message.encoded_len();
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= limit)
        .ok_or_else(over_limit)?;
    let mut frame = BytesMut::with_capacity(5 + len);
    frame.put_u8(0);
    frame.put_u32(prefix);
    message.encode_raw(&mut frame);
    let ok = HeaderValue::from_static("0");
    let mut out = if h1 {
        http::Response::new(Body::from(frame.freeze()))
    } else {
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert(GRPC_STATUS, ok.clone());
        let frames = [
            Ok::<_, Infallible>(http_body::Frame::data(frame.freeze())),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        http::Response::new(Body::new(http_body_util::StreamBody::new(
            futures_util::stream::iter(frames),
        )))
    };
    let headers = out.headers_mut();
    *headers = metadata.into_headers();
    if !headers.is_empty() {
        for name in RESERVED {
            headers.remove(name);
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if h1 {
        headers.insert(GRPC_STATUS, ok);
    }
    *out.extensions_mut() = extensions;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body::Body as _;
    use tower::ServiceExt;

    /// An echo of strings that answers with metadata of its own, as the
    /// one method of `/t.S/`; other calls are answered 404.
    fn echo() -> Methods<
        impl tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone,
    > {
        let echo = method(16, 64, |req: Request<String>| async move {
            let said = req
                .metadata()
                .get("said")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let msg = req.into_inner();
            if msg == "fail" {
                return Err(Status::not_found("no such thing"));
            }
            let mut res = Response::new(format!("{said}{msg}"));
            res.metadata_mut().insert("heard", "yes".parse().expect("valid"));
            res.metadata_mut()
                .insert("grpc-status", "13".parse().expect("valid"));
            Ok(res)
        });
        let other = tower::service_fn(|_: http::Request<Body>| async {
            let mut res = http::Response::new(Body::empty());
            *res.status_mut() = http::StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(res)
        });
        Methods::new("/t.S/", vec![("Echo", echo)], other)
    }

    fn framed(message: &impl prost::Message) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(u32::try_from(message.encoded_len()).expect("small"));
        message.encode_raw(&mut b);
        b.freeze()
    }

    fn call(body: Body) -> http::Request<Body> {
        let mut req = http::Request::new(body);
        *req.version_mut() = http::Version::HTTP_2;
        *req.uri_mut() = http::Uri::from_static("/t.S/Echo");
        req.headers_mut().insert("said", HeaderValue::from_static(">"));
        req
    }

    async fn answer(req: http::Request<Body>) -> (HeaderMap, Bytes, HeaderMap) {
        answer_of(echo().oneshot(req).await.expect("infallible")).await
    }

    async fn answer_of(res: http::Response<Body>) -> (HeaderMap, Bytes, HeaderMap) {
        let (parts, body) = res.into_parts();
        let collected = body.collect().await.expect("body");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        (parts.headers, collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_message_in_pieces_is_answered_in_one_frame_with_trailers() {
        let whole = framed(&"hi".to_string());
        let pieces =
            [whole.slice(..3), whole.slice(3..)].map(|b| Ok::<_, Infallible>(http_body::Frame::data(b)));
        let body = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            pieces,
        )));
        let (headers, data, trailers) = answer(call(body)).await;
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["heard"], "yes");
        // The handler cannot overwrite the call's own status.
        assert!(headers.get("grpc-status").is_none());
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(data, framed(&">hi".to_string()));
    }

    #[tokio::test]
    async fn over_http1_the_status_is_in_the_head_and_the_length_known() {
        let mut req = call(Body::from(framed(&"hi".to_string())));
        *req.version_mut() = http::Version::HTTP_11;
        let res = echo().oneshot(req).await.expect("infallible");
        let expected = framed(&">hi".to_string());
        assert_eq!(res.body().size_hint().exact(), Some(expected.len() as u64));
        let (headers, data, trailers) = answer_of(res).await;
        assert_eq!(headers["grpc-status"], "0");
        assert_eq!(headers["heard"], "yes");
        assert!(trailers.is_empty());
        assert_eq!(data, expected);
    }

    #[tokio::test]
    async fn refusals_are_trailers_only_statuses() {
        let status = |h: &HeaderMap| {
            (
                h["grpc-status"].to_str().expect("ascii").to_string(),
                h.get("grpc-message")
                    .map(|m| m.to_str().expect("ascii").to_string()),
            )
        };
        let cases: [(Bytes, &str); 6] = [
            (framed(&"fail".to_string()), "5"),
            (Bytes::new(), "13"),
            (Bytes::from_static(&[1, 0, 0, 0, 0]), "12"),
            (Bytes::from_static(&[0, 0, 0, 0, 5, 1]), "13"),
            (Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]), "3"),
            (framed(&"x".repeat(20)), "8"),
        ];
        for (body, code) in cases {
            let (headers, data, _) = answer(call(Body::from(body.clone()))).await;
            assert_eq!(status(&headers).0, code, "{body:?}: {headers:?}");
            assert!(status(&headers).1.is_some());
            assert!(data.is_empty());
        }
        // A reply over the encoding limit is refused too.
        let long = method(1 << 10, 4, |req: Request<String>| async move {
            Ok(Response::new(req.into_inner()))
        });
        let res = long(call(Body::from(framed(&"too long".to_string()))))
            .await
            .expect("infallible");
        assert_eq!(res.headers()["grpc-status"], "8");
    }

    #[tokio::test]
    async fn other_methods_and_services_pass_by() {
        for path in ["/t.S/Other", "/t.T/Echo", "/t.S/EchoMore", "/t.S/"] {
            let mut req = call(Body::from(framed(&"hi".to_string())));
            *req.uri_mut() = http::Uri::from_static(path);
            let res = echo().oneshot(req).await.expect("infallible");
            assert_eq!(res.status(), http::StatusCode::NOT_FOUND, "{path}");
        }
    }
}
