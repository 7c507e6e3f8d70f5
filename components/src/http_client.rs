//! An HTTP client to one server. Plain HTTP goes on a pool of HTTP/1.1
//! keep-alive connections of daprd's own ([`Pool`]): one idle list behind
//! one lock, each connection used by one request at a time and driven by
//! the task that makes it ([`h1`]). hyper's pooled client, which runs a
//! task per connection and hands each request to it over a channel, still
//! serves TLS (with ALPN) and HTTP/2 without TLS. daprd calls HTTP apps
//! with it, and `bindings.http` its server. Answers are read whole, up to
//! a limit the caller gives.

use bytes::Bytes;
use daprs_mtls::h1::{self, Failure};
use http::{Request, response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{self, connect::HttpConnector};

pub use daprs_mtls::h1::pool::Pool;

/// Why a request got no usable answer.
#[derive(Debug)]
pub enum CallError {
    /// The answer's body is over the caller's limit.
    TooLarge,
    /// No answer: the connection, the request or the answer failed.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge => f.write_str(h1::TOO_LARGE),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

impl From<Failure> for CallError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::TooLarge => Self::TooLarge,
            f => Self::Failed(f.message()),
        }
    }
}

/// An answer: its head and its whole body.
pub type Answer = (response::Parts, Bytes);

/// How requests reach one server.
pub enum HttpClient {
    /// Plain HTTP/1.1 on pooled keep-alive connections.
    Pool(Pool),
    /// TLS, or HTTP/2 without TLS.
    Hyper(Box<legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>>),
}

impl HttpClient {
    /// Sends `req` (its URI absolute, as `http://host:port/path`) and reads
    /// the answer, its body at most `limit` bytes.
    pub async fn request(&self, req: Request<Bytes>, limit: usize) -> Result<Answer, CallError> {
        match self {
            Self::Pool(p) => Ok(p.request(req, limit).await?),
            Self::Hyper(c) => {
                let res = c
                    .request(req.map(Full::new))
                    .await
                    .map_err(|e| CallError::Failed(crate::error_chain(&e)))?;
                let declared = res
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|n| n > limit as u64) {
                    return Err(CallError::TooLarge);
                }
                let (parts, body) = res.into_parts();
                match Limited::new(body, limit).collect().await {
                    Ok(b) => Ok((parts, b.to_bytes())),
                    Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                        Err(CallError::TooLarge)
                    }
                    Err(e) => Err(CallError::Failed(format!("reading the answer failed: {e}"))),
                }
            }
        }
    }
}
