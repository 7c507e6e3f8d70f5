//! gRPC proxying. A call on the API port for a service daprd does not serve
//! itself goes, as raw HTTP/2 (messages are never decoded), to the app named
//! by `dapr-app-id`: through that app's sidecar's internal port, then to the
//! app. Unary and streaming calls alike; both directions flow as the two ends
//! send them, under HTTP/2 flow control.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tonic::{Status, transport::Channel};
use tower::ServiceExt;

use crate::{registry::Target, runtime::Runtime};

type Req = http::Request<Body>;
type Resp = http::Response<Body>;

const APP_ID: &str = "dapr-app-id";
const CALLEE: &str = "dapr-callee-app-id";
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The API port's fallback: proxies calls addressed with `dapr-app-id`.
pub fn outbound(
    rt: Arc<Runtime>,
) -> impl tower::Service<Req, Response = Resp, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
    tower::service_fn(move |req: Req| {
        let rt = rt.clone();
        async move { Ok(answer(forward_out(&rt, req).await)) }
    })
}

/// The internal port's fallback: proxied calls from other sidecars, on to the app.
pub fn inbound(
    rt: Arc<Runtime>,
) -> impl tower::Service<Req, Response = Resp, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
    tower::service_fn(move |req: Req| {
        let rt = rt.clone();
        async move { Ok(answer(forward_in(&rt, req).await)) }
    })
}

fn answer(res: Result<Resp, Status>) -> Resp {
    res.unwrap_or_else(|status| status.into_http::<Body>())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), Status> {
    let v = HeaderValue::from_str(value)
        .map_err(|_| Status::invalid_argument(format!("{name} is not a valid metadata value")))?;
    h.insert(HeaderName::from_static(name), v);
    Ok(())
}

async fn forward_out(rt: &Runtime, mut req: Req) -> Result<Resp, Status> {
    let h = req.headers();
    let Some(target) = header(h, APP_ID).or_else(|| header(h, CALLEE)) else {
        return Err(Status::unimplemented(format!(
            "unknown method {}: this sidecar does not serve it; to call an app's service through \
             the sidecar, add the dapr-app-id metadata naming the app",
            req.uri().path()
        )));
    };
    let target = Target::parse(target).map_err(Status::invalid_argument)?;
    let deadline = deadline_of(req.headers())?;
    let h = req.headers_mut();
    h.remove(APP_ID);
    set(h, CALLEE, &target.app_id)?;
    set(h, "dapr-caller-app-id", &rt.app_id)?;
    set(h, "dapr-caller-namespace", &rt.invoker.namespace)?;
    if rt.invoker.is_self(&target) {
        return to_app(rt, req, deadline).await;
    }
    let channel = rt
        .invoker
        .proxy_channel(&target)
        .map_err(|e| Status::unavailable(format!("cannot reach app {}: {}", target.app_id, e.message)))?;
    call(channel, req, deadline, &target.app_id).await
}

async fn forward_in(rt: &Runtime, req: Req) -> Result<Resp, Status> {
    let callee = header(req.headers(), CALLEE);
    if callee != Some(rt.app_id.as_str()) {
        return Err(Status::permission_denied(format!(
            "this sidecar serves app {:?}; the call is addressed to {:?}",
            rt.app_id,
            callee.unwrap_or("no app")
        )));
    }
    let deadline = deadline_of(req.headers())?;
    to_app(rt, req, deadline).await
}

async fn to_app(rt: &Runtime, mut req: Req, deadline: Option<Instant>) -> Result<Resp, Status> {
    let app = rt.app.as_ref().ok_or_else(|| {
        Status::unavailable(format!(
            "app {} has no app channel: start its sidecar with --app-port and --app-protocol grpc",
            rt.app_id
        ))
    })?;
    let channel = app.grpc_channel().ok_or_else(|| {
        Status::failed_precondition(format!(
            "app {} speaks {}, not gRPC: proxied gRPC calls need its sidecar started with \
             --app-protocol grpc (or grpcs)",
            rt.app_id,
            app.protocol.as_str()
        ))
    })?;
    if let Some(token) = app.token() {
        req.headers_mut().insert("dapr-api-token", token.clone());
    }
    call(channel, req, deadline, &rt.app_id).await
}

/// Sends the call on and hands back the reply, ending it with
/// `DEADLINE_EXCEEDED` if the caller's deadline passes first.
async fn call(
    channel: Channel,
    mut req: Req,
    deadline: Option<Instant>,
    app_id: &str,
) -> Result<Resp, Status> {
    if let Some(d) = deadline {
        // What is left of the caller's time, not what it started with.
        let left = d.saturating_duration_since(Instant::now());
        if let Ok(v) = HeaderValue::from_str(&format_timeout(left)) {
            req.headers_mut().insert(GRPC_TIMEOUT, v);
        }
    }
    let sent = channel.oneshot(req.map(tonic::body::Body::new));
    let res = match deadline {
        Some(d) => tokio::time::timeout_at(d, sent)
            .await
            .map_err(|_| deadline_exceeded())?,
        None => sent.await,
    }
    .map_err(|e| match deadline {
        // The channel enforces the forwarded grpc-timeout too.
        Some(d) if passed(d) => deadline_exceeded(),
        _ => Status::unavailable(format!("cannot reach app {app_id}: {e}")),
    })?;
    if deadline.is_some_and(passed) && cancelled(res.headers()) {
        return Err(deadline_exceeded());
    }
    Ok(res.map(|body| match deadline {
        Some(d) => Body::new(Deadline {
            inner: Some(body),
            deadline: d,
            sleep: Box::pin(tokio::time::sleep_until(d)),
        }),
        None => Body::new(body),
    }))
}

/// Whether the deadline has passed, give or take the few milliseconds by
/// which the timers of the hops after this one may differ.
fn passed(d: Instant) -> bool {
    Instant::now() + Duration::from_millis(5) >= d
}

/// A hop after this one saw the same deadline pass and said CANCELLED
/// (tonic does); the caller is told the reason.
fn cancelled(h: &HeaderMap) -> bool {
    h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"1")
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("the deadline passed before the call ended")
}

/// A reply body that ends with `DEADLINE_EXCEEDED` when the deadline passes;
/// dropping the inner body resets the stream, which cancels the call at the app.
struct Deadline {
    inner: Option<tonic::body::Body>,
    deadline: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame)))
                if frame.trailers_ref().is_some_and(cancelled) && passed(self.deadline) =>
            {
                self.inner = None;
                Poll::Ready(Some(Ok(Frame::trailers(deadline_trailers()))))
            }
            Poll::Ready(frame) => {
                if frame.is_none() {
                    self.inner = None;
                }
                Poll::Ready(frame)
            }
            Poll::Pending if self.sleep.as_mut().poll(cx).is_ready() => {
                self.inner = None;
                Poll::Ready(Some(Ok(Frame::trailers(deadline_trailers()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none()
    }
}

fn deadline_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-status",
        HeaderValue::from(tonic::Code::DeadlineExceeded as i32),
    );
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("the deadline passed before the call ended"),
    );
    trailers
}

/// When the caller's `grpc-timeout` runs out.
fn deadline_of(h: &HeaderMap) -> Result<Option<Instant>, Status> {
    match h.get(GRPC_TIMEOUT) {
        None => Ok(None),
        Some(v) => {
            let d = v.to_str().ok().and_then(parse_timeout).ok_or_else(|| {
                Status::invalid_argument(format!("grpc-timeout {v:?} is not a timeout such as 100m or 5S"))
            })?;
            Ok(Some(Instant::now() + d))
        }
    }
}

/// Parses `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_timeout(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let digits = &v[..v.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a timeout for `grpc-timeout`, in the finest unit that fits 8 digits.
pub fn format_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let units: [(u128, &str); 6] = [
        (d.as_nanos(), "n"),
        (d.as_micros(), "u"),
        (d.as_millis(), "m"),
        (u128::from(d.as_secs()), "S"),
        (u128::from(d.as_secs() / 60), "M"),
        (u128::from(d.as_secs() / 3600), "H"),
    ];
    units
        .iter()
        .find(|(n, _)| *n <= MAX)
        .map_or_else(|| format!("{MAX}H"), |(n, u)| format!("{n}{u}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_round_trip() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "123456789S", "-1S", "1.5S", "٣S", "1٣"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        for d in [
            Duration::from_nanos(5),
            Duration::from_millis(1500),
            Duration::from_secs(3 * 86_400),
        ] {
            let back = parse_timeout(&format_timeout(d)).expect("parses");
            assert!(back <= d && d - back < Duration::from_secs(3600), "{d:?}");
        }
        assert_eq!(format_timeout(Duration::from_millis(250)), "250000u");
    }
}
