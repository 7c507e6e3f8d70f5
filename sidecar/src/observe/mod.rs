//! What every call the HTTP and gRPC APIs answer leaves behind: Dapr's
//! metrics, a span when tracing is on, and, when API logging is on, one log
//! line. Tower layers put in front of the routers once; not installed when
//! all three are off.

use std::{
    borrow::Cow,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    http::{HeaderMap, Request, Response, header::CONTENT_LENGTH},
};
use http_body::Body as HttpBody;

use daprs_telemetry::trace::{Span, SpanKind, Tracer};

mod bodies;

use self::bodies::{Counted, Finish, on_finish};
pub use self::bodies::{proxied, traced};
use crate::{
    metrics::{Metrics, elapsed_ms},
    trace,
};

/// API logging (`--enable-api-logging`, `spec.logging.apiLogging`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiLog {
    /// Leave `/v1.0/healthz` calls out.
    pub omit_health_checks: bool,
    /// Log the route (`GET /v1.0/state/{storeName}/{key}`) instead of the URL.
    pub obfuscate_urls: bool,
}

/// What the layers record.
#[derive(Clone, Default)]
pub struct Observe {
    pub metrics: Option<Arc<Metrics>>,
    pub log: Option<ApiLog>,
    pub tracer: Tracer,
}

impl Observe {
    /// From the settings: `metrics` when enabled, `log` when asked for,
    /// spans when `tracer` is on.
    pub fn new(metrics: &Arc<Metrics>, log: Option<ApiLog>, tracer: Tracer) -> Self {
        Self {
            metrics: metrics.enabled().then(|| metrics.clone()),
            log,
            tracer,
        }
    }

    /// Whether anything is recorded.
    pub fn any(&self) -> bool {
        self.metrics.is_some() || self.log.is_some() || self.tracer.enabled()
    }

    /// The layer that records calls of kind `K`, when anything is recorded;
    /// otherwise none, so calls pay nothing for it.
    pub fn layer<K>(&self) -> Option<ObserveLayer<K>> {
        self.any().then(|| ObserveLayer::new(self.clone()))
    }

    /// The call's span, its context written over the request's trace
    /// headers so that everything downstream carries it. Health checks
    /// are not traced, as in Dapr.
    fn span(&self, req: &mut Request<Body>, grpc: bool) -> Option<Traced> {
        if !self.tracer.enabled() {
            return None;
        }
        let path = req.uri().path();
        if path.starts_with("/v1.0/healthz") || path.starts_with("/grpc.health.v1.Health/") {
            return None;
        }
        let parent = trace::parent_of(req.headers(), grpc);
        let span = self.tracer.start(SpanKind::Client, parent)?;
        let header = trace::set_headers(req.headers_mut(), &span.context(), grpc);
        Some(Traced { span, header })
    }
}

/// A call's span, and the trace header its answer carries.
pub struct Traced {
    span: Span,
    header: http::HeaderValue,
}

impl Traced {
    fn recording(&self) -> bool {
        self.span.recording()
    }
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn body_len<B: HttpBody>(headers: &HeaderMap, body: &B) -> u64 {
    body.size_hint().exact().unwrap_or_else(|| {
        headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

/// The layer of either server: `ObserveLayer<Http>` records
/// `dapr_http_server_*` and the "HTTP API Called" line for each request;
/// `ObserveLayer<Grpc>` records `dapr_grpc_io_server_*` and the "gRPC API
/// Called" line for each RPC, when its status is known: at once for a
/// trailers-only answer, otherwise when the trailers go out.
pub struct ObserveLayer<K> {
    observe: Observe,
    kind: PhantomData<fn() -> K>,
}

/// The HTTP API's calls.
pub struct Http;
/// gRPC calls.
pub struct Grpc;

impl<K> ObserveLayer<K> {
    pub fn new(observe: Observe) -> Self {
        Self {
            observe,
            kind: PhantomData,
        }
    }
}

impl<K> Clone for ObserveLayer<K> {
    fn clone(&self) -> Self {
        Self::new(self.observe.clone())
    }
}

impl<S, K> tower::Layer<S> for ObserveLayer<K> {
    type Service = Observed<S, K>;
    fn layer(&self, inner: S) -> Self::Service {
        Observed {
            inner,
            observe: self.observe.clone(),
            kind: PhantomData,
        }
    }
}

/// A router behind an [`ObserveLayer`].
pub struct Observed<S, K> {
    inner: S,
    observe: Observe,
    kind: PhantomData<fn() -> K>,
}

impl<S: Clone, K> Clone for Observed<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            observe: self.observe.clone(),
            kind: PhantomData,
        }
    }
}

/// What each kind of server records of a call, begun as the call arrives.
pub trait Kind {
    type Call: Answered;
    /// The call's record, and the request to pass on.
    fn begin(observe: &Observe, req: Request<Body>) -> (Request<Body>, Self::Call);
}

impl<S, K: Kind> tower::Service<Request<Body>> for Observed<S, K>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future, K::Call>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (req, call) = K::begin(&self.observe, req);
        ObservedFuture {
            inner: self.inner.call(req),
            call: Some(call),
        }
    }
}

impl Kind for Http {
    type Call = HttpCall;

    fn begin(observe: &Observe, mut req: Request<Body>) -> (Request<Body>, HttpCall) {
        let start = Instant::now();
        let method = req.method().clone();
        let mut span = observe.span(&mut req, false);
        if let Some(t) = span.as_mut().filter(|t| t.recording()) {
            trace::describe_http(&mut t.span, method.as_str(), req.uri().path());
        }
        let uses_path = observe.metrics.as_ref().is_some_and(|m| m.paths.uses_path());
        let path = (uses_path || observe.log.is_some()).then(|| req.uri().path().to_string());
        let line = observe.log.and_then(|log| {
            let path = path.as_deref().unwrap_or("");
            if log.omit_health_checks && path.starts_with("/v1.0/healthz") {
                return None;
            }
            let shown = if log.obfuscate_urls {
                route_of(path)
            } else {
                Cow::Borrowed(path)
            };
            Some((format!("{method} {shown}"), user_agent(req.headers())))
        });
        let req_bytes = body_len(req.headers(), req.body());
        let call = HttpCall {
            observe: observe.clone(),
            start,
            method,
            path,
            line,
            req_bytes,
            span,
        };
        (req, call)
    }
}

/// One HTTP request being answered.
pub struct HttpCall {
    observe: Observe,
    start: Instant,
    method: http::Method,
    path: Option<String>,
    /// The logged method text and user agent, when the call is logged.
    line: Option<(String, Option<String>)>,
    req_bytes: u64,
    span: Option<Traced>,
}

impl HttpCall {
    fn finish(self, resp: &Response<Body>) {
        let res_bytes = body_len(resp.headers(), resp.body());
        let ms = elapsed_ms(self.start);
        let status = resp.status().as_u16();
        if let Some(m) = &self.observe.metrics {
            m.http_served(
                self.method.as_str(),
                self.path.as_deref().unwrap_or(""),
                status,
                self.req_bytes,
                res_bytes,
                ms,
            );
        }
        if let Some(Traced { mut span, .. }) = self.span {
            trace::http_status(&mut span, status);
            span.end();
        }
        if let Some((called, agent)) = self.line {
            tracing::info!(
                target: API_LOG,
                scope = "dapr.runtime.http-info",
                method = %called,
                code = status,
                size = res_bytes,
                duration = ms,
                useragent = agent.as_deref(),
                "HTTP API Called"
            );
        }
    }
}

/// What an observed call does once the inner service has answered.
pub trait Answered {
    fn answered(self, resp: Response<Body>) -> Response<Body>;
}

impl Answered for HttpCall {
    /// The answer carries the call's `traceparent`, as Dapr's does.
    fn answered(self, mut resp: Response<Body>) -> Response<Body> {
        if let Some(t) = &self.span {
            trace::answer_headers(resp.headers_mut(), &t.header, false);
        }
        self.finish(&resp);
        resp
    }
}

const INVOKE_SERVICE: &str = "/dapr.proto.runtime.v1.Dapr/InvokeService";

impl Answered for Rpc {
    /// Answers other than `InvokeService`'s carry `grpc-trace-bin`, as
    /// Dapr's do. The call is recorded when its status is known.
    fn answered(self, mut resp: Response<Body>) -> Response<Body> {
        if let Some(t) = &self.span
            && self.uri.path() != INVOKE_SERVICE
        {
            trace::answer_headers(resp.headers_mut(), &t.header, true);
        }
        on_finish(self, resp)
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; hands its answer to the call's record.
    pub struct ObservedFuture<F, C> {
        #[pin]
        inner: F,
        call: Option<C>,
    }
}

impl<F, E, C: Answered> Future for ObservedFuture<F, C>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(match this.call.take() {
            Some(call) => out.map(|resp| call.answered(resp)),
            None => out,
        })
    }
}

/// The route of a Dapr API path, with names, keys and ids as placeholders,
/// as API logging shows it when `obfuscateURLs` is on.
pub fn route_of(path: &str) -> Cow<'_, str> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [ver, api, rest @ ..] = parts.as_slice() else {
        return Cow::Borrowed(path);
    };
    let tail: &[&str] = match (*api, rest) {
        ("invoke", [_, "method", ..]) => &["{id}", "method", "{method}"],
        ("state", [_]) => &["{storeName}"],
        ("state", [_, suffix @ ("bulk" | "transaction" | "query")]) => &["{storeName}", suffix],
        ("state", [_, _, ..]) => &["{storeName}", "{key}"],
        ("secrets", [_, "bulk"]) => &["{secretStoreName}", "bulk"],
        ("secrets", [_, _, ..]) => &["{secretStoreName}", "{key}"],
        ("publish", ["bulk", _, _, ..]) => &["bulk", "{pubsubname}", "{topic}"],
        ("publish", [_, _, ..]) => &["{pubsubname}", "{topic}"],
        ("bindings", [_]) => &["{name}"],
        ("metadata", [_]) => &["{key}"],
        ("configuration", [_]) => &["{storeName}"],
        ("configuration", [_, "subscribe"]) => &["{storeName}", "subscribe"],
        ("configuration", [_, _, "unsubscribe"]) => {
            &["{storeName}", "{configurationSubscribeID}", "unsubscribe"]
        }
        ("lock" | "unlock", [_]) => &["{storeName}"],
        _ => return Cow::Borrowed(path),
    };
    Cow::Owned(format!("/{ver}/{api}/{}", tail.join("/")))
}

/// The target API log lines go under; logged at info whatever `--log-level`
/// says, as Dapr's API loggers are.
pub const API_LOG: &str = "dapr_api";

impl Kind for Grpc {
    type Call = Rpc;

    fn begin(observe: &Observe, mut req: Request<Body>) -> (Request<Body>, Rpc) {
        let received = Arc::new(AtomicU64::new(0));
        let health = req.uri().path().starts_with("/grpc.health.v1.Health/");
        let span = observe.span(&mut req, true);
        let rename = span.as_ref().filter(|t| t.recording()).map(|_| {
            let rename = trace::Rename::default();
            req.extensions_mut().insert(rename.clone());
            rename
        });
        let rpc = Rpc {
            metrics: observe.metrics.clone(),
            log: observe
                .log
                .filter(|l| !(l.omit_health_checks && health))
                .map(|_| user_agent(req.headers())),
            // A URI clone shares its bytes: the method is not copied.
            uri: req.uri().clone(),
            start: Instant::now(),
            received: received.clone(),
            sent: 0,
            span,
            rename,
        };
        let req = req.map(|b| {
            Body::new(Counted {
                inner: b,
                count: received,
            })
        });
        (req, rpc)
    }
}

/// An RPC whose metrics are recorded once its status is known.
pub struct Rpc {
    metrics: Option<Arc<Metrics>>,
    /// Some (with the user agent) when the call is logged.
    log: Option<Option<String>>,
    uri: http::Uri,
    start: Instant,
    received: Arc<AtomicU64>,
    sent: u64,
    span: Option<Traced>,
    /// Where a handler may rename the span.
    rename: Option<trace::Rename>,
}

impl Rpc {
    fn finish(self, code: i32) {
        let ms = elapsed_ms(self.start);
        if let Some(Traced { mut span, .. }) = self.span {
            if span.recording() {
                let path = self.uri.path();
                match self.rename.and_then(|r| r.take()) {
                    Some(name) => span.set_name(&name),
                    None => span.set_name(path),
                }
                trace::describe_grpc(&mut span, path);
                if code != 0 {
                    span.set_error(daprs_telemetry::grpc_code_name(code));
                }
            }
            span.end();
        }
        if let Some(m) = &self.metrics {
            m.grpc_served(
                self.uri.path(),
                daprs_telemetry::grpc_code_name(code),
                self.received.load(Ordering::Relaxed),
                self.sent,
                ms,
            );
        }
        if let Some(agent) = &self.log {
            tracing::info!(
                target: API_LOG,
                scope = "dapr.runtime.grpc.api-info",
                method = %self.uri.path(),
                code,
                duration = ms,
                useragent = agent.as_deref(),
                "gRPC API Called"
            );
        }
    }
}

impl Finish for Rpc {
    fn sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }
    fn finish(self, code: i32) {
        Rpc::finish(self, code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_hide_names_keys_and_ids() {
        for (path, route) in [
            ("/v1.0/state/statestore/order-1", "/v1.0/state/{storeName}/{key}"),
            ("/v1.0/state/statestore", "/v1.0/state/{storeName}"),
            (
                "/v1.0-alpha1/state/s/query",
                "/v1.0-alpha1/state/{storeName}/query",
            ),
            (
                "/v1.0/invoke/orders/method/a/b",
                "/v1.0/invoke/{id}/method/{method}",
            ),
            ("/v1.0/secrets/vault/db", "/v1.0/secrets/{secretStoreName}/{key}"),
            (
                "/v1.0/publish/bulk/ps/t",
                "/v1.0/publish/bulk/{pubsubname}/{topic}",
            ),
            ("/v1.0/publish/ps/a/b", "/v1.0/publish/{pubsubname}/{topic}"),
            (
                "/v1.0/configuration/c/7/unsubscribe",
                "/v1.0/configuration/{storeName}/{configurationSubscribeID}/unsubscribe",
            ),
            ("/v1.0-alpha1/lock/l", "/v1.0-alpha1/lock/{storeName}"),
            ("/v1.0/healthz", "/v1.0/healthz"),
            ("/v1.0/metadata", "/v1.0/metadata"),
            ("/odd", "/odd"),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }
}
