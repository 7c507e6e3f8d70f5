//! The busiest unary methods, served off their HTTP/2 stream without
//! tonic's generic server. That server reads even a unary request through
//! its streaming decoder (a buffer the message is copied into) and writes
//! the reply through an encoding stream; here the request's one message is
//! taken as it arrived, decoded once, and the reply is one DATA frame and
//! the trailers. Each method keeps its handler, written against tonic's
//! `Request` and `Response`, so both paths answer alike.

use std::{convert::Infallible, future::Future};

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
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

/// A unary method's service: requests over `decode_limit` bytes and
/// replies over `encode_limit` are refused, as tonic's limits refuse them.
pub fn method<M, R, H, F>(
    decode_limit: usize,
    encode_limit: usize,
    handler: H,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static
where
    M: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
    H: Fn(Request<M>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<R>, Status>> + Send + 'static,
{
    tower::service_fn(move |req: http::Request<Body>| {
        let handler = handler.clone();
        // Boxed: the handler's future is large, and the port's dispatch
        // future is as large as its largest side.
        let answer: BoxFuture<'static, _> = Box::pin(async move {
            let res = match request::<M>(req, decode_limit).await {
                Ok(req) => match handler(req).await {
                    Ok(res) => reply(res, encode_limit),
                    Err(status) => Err(status),
                },
                Err(status) => Err(status),
            };
            Ok(res.unwrap_or_else(|status| status.into_http()))
        });
        answer
    })
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
    let (parts, mut body) = req.into_parts();
    let mut headers = parts.headers;
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::from_error(Box::new(e)))?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    headers.extend(trailers);
                }
                continue;
            }
        };
        let len = joined.as_ref().map_or(whole.len(), BytesMut::len) + data.len();
        if len > limit.saturating_add(5) {
            return Err(over_limit());
        }
        match &mut joined {
            Some(j) => j.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None => {
                let mut j = BytesMut::with_capacity(len);
                j.extend_from_slice(&whole);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
    }
    let body = joined.map_or(whole, BytesMut::freeze);
    let message = daprs_mtls::peer::message_of(body, "the request")?;
    let message = M::decode(message).map_err(daprs_proto::codec::invalid::<M>)?;
    Ok(Request::from_parts(
        MetadataMap::from_headers(headers),
        parts.extensions,
        message,
    ))
}

/// `res` as one framed message and the trailers that end it.
fn reply<R: prost::Message>(res: Response<R>, limit: usize) -> Result<http::Response<Body>, Status> {
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
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Infallible>(http_body::Frame::data(frame.freeze())),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    let mut out = http::Response::new(Body::new(http_body_util::StreamBody::new(
        futures_util::stream::iter(frames),
    )));
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
    *out.extensions_mut() = extensions;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// An echo of `StringValue` that answers with metadata of its own.
    fn echo() -> impl tower::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
    > + Clone {
        method(16, 64, |req: Request<String>| async move {
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
        })
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
        req.headers_mut().insert("said", HeaderValue::from_static(">"));
        req
    }

    async fn answer(req: http::Request<Body>) -> (HeaderMap, Bytes, HeaderMap) {
        let res = echo().oneshot(req).await.expect("infallible");
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
        let res = long
            .oneshot(call(Body::from(framed(&"too long".to_string()))))
            .await
            .expect("infallible");
        assert_eq!(res.headers()["grpc-status"], "8");
    }
}
