//! gRPC proxying. A call on the API port for a service daprd does not serve
//! itself goes, as raw HTTP/2 (messages are never decoded), to the app named
//! by `dapr-app-id`: through that app's sidecar's internal port, then to the
//! app. Unary and streaming calls alike; both directions flow as the two ends
//! send them, under HTTP/2 flow control.

mod body;
mod resilient;
pub mod timeout;

use std::{convert::Infallible, sync::Arc};

use axum::body::Body;
use daprs_mtls::peer::Peer;
use daprs_telemetry::trace::SpanKind;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use tonic::Status;

pub use self::body::grpc_status;
use self::body::{Checked, Frames, Reply, Trip, cancelled, deadline_exceeded, passed};
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
    let (addr, peer) = rt
        .invoker
        .proxy_peer(&target)
        .map_err(|e| Status::unavailable(format!("cannot reach app {}: {}", target.app_id, e.message)))?;
    let policy = rt.resiliency.app(&target.app_id);
    let start = std::time::Instant::now();
    let sent = resilient::send(rt, &peer, req, deadline, &target.app_id, policy).await;
    if let Err(s) = &sent
        && s.code() == tonic::Code::Unavailable
    {
        // The next call resolves the target again: it may have moved.
        rt.invoker.forget(&target, &addr);
    }
    if !rt.metrics.enabled() {
        return sent;
    }
    match sent {
        Ok(resp) => Ok(crate::observe::proxied(&rt.metrics, &target.app_id, start, resp)),
        Err(status) => {
            let ms = crate::metrics::elapsed_ms(start);
            rt.metrics
                .invocation_sent(&target.app_id, true, status.code() as i32, ms);
            Err(status)
        }
    }
}

async fn forward_in(rt: &Runtime, mut req: Req) -> Result<Resp, Status> {
    crate::acl::check_callee(&rt.app_id, header(req.headers(), CALLEE))?;
    // Under mutual TLS the caller is who its certificate says, whatever its request claims.
    let proven = req
        .extensions()
        .get::<daprs_mtls::PeerId>()
        .and_then(daprs_mtls::PeerId::spiffe);
    if let Some(id) = &proven {
        let h = req.headers_mut();
        set(h, "dapr-caller-app-id", &id.app_id)?;
        set(h, "dapr-caller-namespace", &id.namespace)?;
    }
    let h = req.headers();
    crate::acl::check_caller(
        rt.config.access.as_deref(),
        proven.as_ref(),
        header(h, "dapr-caller-app-id"),
        header(h, "dapr-caller-namespace"),
        req.uri().path(),
        None,
    )?;
    let deadline = deadline_of(req.headers())?;
    let Some(mut span) = rt
        .tracer
        .start(SpanKind::Server, crate::trace::parent_of(req.headers(), true))
    else {
        return to_app(rt, req, deadline).await;
    };
    // The app's span is a child of this sidecar's.
    crate::trace::set_headers(req.headers_mut(), &span.context(), true);
    if span.recording() {
        let path = req.uri().path();
        span.set_name(path);
        crate::trace::describe_grpc(&mut span, path);
    }
    match to_app(rt, req, deadline).await {
        Ok(resp) => Ok(crate::observe::traced(span, resp)),
        Err(status) => {
            span.set_error(daprs_telemetry::grpc_code_name(status.code() as i32));
            Err(status)
        }
    }
}

async fn to_app(rt: &Runtime, mut req: Req, deadline: Option<Instant>) -> Result<Resp, Status> {
    let app = rt.app.as_ref().ok_or_else(|| {
        Status::unavailable(format!(
            "app {} has no app channel: start its sidecar with --app-port and --app-protocol grpc",
            rt.app_id
        ))
    })?;
    let peer = app.peer().ok_or_else(|| {
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
    // A proxied call counts against --app-max-concurrency until its reply ends.
    let permit = match deadline {
        Some(d) => tokio::time::timeout_at(d, app.admit())
            .await
            .map_err(|_| deadline_exceeded())?,
        None => app.admit().await,
    };
    call(rt, peer, req, deadline, &rt.app_id, permit).await
}

/// Sends the call on and hands back the reply. The reply ends with
/// DEADLINE_EXCEEDED if the caller's deadline passes first, and with
/// RESOURCE_EXHAUSTED if a message either way is over `--max-body-size`.
async fn call(
    rt: &Runtime,
    next: &Peer,
    mut req: Req,
    deadline: Option<Instant>,
    app_id: &str,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Resp, Status> {
    if let Some(d) = deadline {
        // What is left of the caller's time, not what it started with.
        let left = d.saturating_duration_since(Instant::now());
        if let Ok(v) = HeaderValue::from_str(&timeout::format(left)) {
            req.headers_mut().insert(GRPC_TIMEOUT, v);
        }
    }
    let max = rt.settings.max_body_size;
    let trip = Arc::new(Trip::default());
    let req = req.map(|inner| Checked {
        inner,
        frames: Frames::new(),
        max,
        trip: trip.clone(),
    });
    let exchange = async {
        match next.forward(req).await {
            Ok(res) => Ok(res.map(tonic::body::Body::new)),
            Err(s) if s.code() == tonic::Code::Unavailable => Err(Status::unavailable(format!(
                "cannot reach app {app_id}: {}",
                s.message()
            ))),
            Err(s) => Err(s),
        }
    };
    let sent = async {
        match deadline {
            Some(d) => match tokio::time::timeout_at(d, exchange).await {
                // The next hop enforces the forwarded grpc-timeout too.
                Ok(Err(_)) if passed(d) => Err(deadline_exceeded()),
                Ok(res) => res,
                Err(_) => Err(deadline_exceeded()),
            },
            None => exchange.await,
        }
    };
    let res = tokio::select! {
        // A request refused for its size fails the exchange as it trips.
        res = sent => res.map_err(|e| if trip.fired() { trip.status(max) } else { e })?,
        () = trip.tripped() => return Err(trip.status(max)),
    };
    if deadline.is_some_and(passed) && cancelled(res.headers()) {
        return Err(deadline_exceeded());
    }
    Ok(res.map(|inner| {
        Body::new(Reply {
            inner: Some(inner),
            deadline: deadline.map(|d| (d, Box::pin(tokio::time::sleep_until(d)))),
            frames: Frames::new(),
            max,
            trip,
            _permit: permit,
        })
    }))
}

/// When the caller's `grpc-timeout` runs out.
fn deadline_of(h: &HeaderMap) -> Result<Option<Instant>, Status> {
    match h.get(GRPC_TIMEOUT) {
        None => Ok(None),
        Some(v) => {
            let d = v.to_str().ok().and_then(timeout::parse).ok_or_else(|| {
                Status::invalid_argument(format!("grpc-timeout {v:?} is not a timeout such as 100m or 5S"))
            })?;
            Ok(Some(Instant::now() + d))
        }
    }
}
