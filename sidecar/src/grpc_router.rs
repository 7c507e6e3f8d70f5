//! The routers of daprd's two gRPC ports. The API port serves Dapr's
//! runtime API, health and reflection, and proxies every other service to
//! the app named by `dapr-app-id`; the internal port serves other sidecars'
//! invocations and passes proxied calls on to this sidecar's app.

use std::{convert::Infallible, sync::Arc};

use axum::body::Body;
use tower::{Layer, ServiceExt};

use crate::{app_channel, grpc_api, proxy, runtime::Runtime};

mod unary;

/// What the API port serves itself, as reflection lists it.
const SERVED: [&str; 4] = [
    "dapr.proto.runtime.v1.Dapr",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Extra room over `--max-body-size` for the envelope around a payload.
const ENVELOPE: usize = 64 << 10;

fn reflection() -> tonic_reflection::server::Builder<'static> {
    let mut b = tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(daprs_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in SERVED {
        b = b.with_service_name(name);
    }
    b
}

/// A service as tonic builds them, ready to route.
trait TonicService:
    tower::Service<
        http::Request<Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> TonicService for S where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A service built when it is first called. Reflection decodes every
/// descriptor daprd serves, which was a third of start-up's instructions and
/// is wasted on the many sidecars nobody lists.
fn on_first_call<S: TonicService>(
    build: fn() -> Result<S, tonic_reflection::server::Error>,
) -> impl TonicService {
    let built: Arc<std::sync::OnceLock<Result<S, String>>> = Arc::default();
    tower::service_fn(move |req: http::Request<Body>| {
        let svc = built.get_or_init(|| build().map_err(|e| e.to_string())).clone();
        async move {
            match svc {
                Ok(s) => s.oneshot(req).await,
                Err(e) => {
                    Ok(tonic::Status::internal(format!("reflection is not available: {e}")).into_http())
                }
            }
        }
    })
}

/// Serves `local` unless the call names an app with `dapr-app-id`: then
/// the app's own reflection answers, through the proxy.
fn or_app<S: TonicService>(
    local: S,
    rt: Arc<Runtime>,
) -> impl tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let proxied = proxy::outbound(rt);
    tower::service_fn(move |req: http::Request<Body>| {
        let (local, proxied) = (local.clone(), proxied.clone());
        async move {
            if req.headers().contains_key("dapr-app-id") {
                proxied.oneshot(req).await
            } else {
                Ok(local.oneshot(req).await?.map(Body::new))
            }
        }
    })
}

/// tonic checks a message's size before any codec or layer of ours sees it,
/// and answers OUT_OF_RANGE; a message over the limit is RESOURCE_EXHAUSTED,
/// as gRPC's own servers and Dapr's say, with the flag that raises it.
fn oversize_status<B>(mut res: http::Response<B>) -> http::Response<B> {
    let h = res.headers();
    let over = h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11")
        && h.get("grpc-message").is_some_and(|m| {
            let m = m.as_bytes();
            m.windows(24)
                .any(|w| w == b"decoded%20message%20leng" || w == b"decoded message length t")
        });
    if over {
        let h = res.headers_mut();
        h.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
        h.insert("grpc-message", http::HeaderValue::from_static(unary::OVER_LIMIT));
    }
    res
}

type DaprServer = daprs_proto::runtime::dapr_server::DaprServer<grpc_api::DaprApi>;

/// A tonic server's answer as the router's, with [`oversize_status`].
fn answer(res: http::Response<tonic::body::Body>) -> http::Response<Body> {
    oversize_status(res.map(Body::new))
}

type Answer = Result<http::Response<Body>, Infallible>;

/// The proxy with its future on the heap: the proxy's future is large, and
/// [`Split`]'s future is as large as its larger side, so unboxed it would
/// make every call of the served service move kilobytes around.
fn boxed<S>(
    proxy: S,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = futures_util::future::BoxFuture<'static, Answer>,
> + Clone
+ Send
+ Sync
+ 'static
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    use futures_util::FutureExt;
    proxy
        .map_response(oversize_status as fn(_) -> _)
        .map_future(|f| f.boxed())
}

/// A port's dispatch by path: calls of the services named by `prefixes`
/// go to `matched`, the rest to `other`. Routing every call through an
/// axum router cost each a route lookup, two boxed services cloned and a
/// middleware future; most calls are of one service, or proxied.
#[derive(Clone)]
struct Split<A, B> {
    /// `/<package>.<Service>/` each.
    prefixes: &'static [&'static str],
    matched: A,
    other: B,
}

impl<A, B> tower::Service<http::Request<Body>> for Split<A, B>
where
    A: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    B: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures_util::future::Either<A::Future, B::Future>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        // tonic's generated servers, routers and the proxy are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path();
        if self.prefixes.iter().any(|p| path.starts_with(p)) {
            futures_util::future::Either::Left(self.matched.call(req))
        } else {
            futures_util::future::Either::Right(self.other.call(req))
        }
    }
}

/// The Dapr service's path prefix.
const DAPR: &str = "/dapr.proto.runtime.v1.Dapr/";

/// A method of the Dapr service, as [`busiest`] lists them.
type DaprMethod<M, R> =
    for<'a> fn(
        &'a grpc_api::DaprApi,
        tonic::Request<M>,
    ) -> futures_util::future::BoxFuture<'a, Result<tonic::Response<R>, tonic::Status>>;

fn dapr_method<M, R>(api: &Arc<grpc_api::DaprApi>, max: usize, f: DaprMethod<M, R>) -> unary::Handle
where
    M: prost::Message + Default + Send + 'static,
    R: prost::Message + Send + 'static,
{
    let api = api.clone();
    unary::method(max, max.max(app_channel::MAX_UNARY), move |req| {
        let api = api.clone();
        async move { f(&api, req).await }
    })
}

/// The unary methods SDKs call most, served by [`unary::method`]; tonic's
/// server keeps the rest of the service.
fn busiest(api: &Arc<grpc_api::DaprApi>, max: usize) -> Vec<(&'static str, unary::Handle)> {
    use daprs_proto::runtime::dapr_server::Dapr;
    vec![
        ("InvokeService", dapr_method(api, max, |a, r| a.invoke_service(r))),
        ("GetState", dapr_method(api, max, |a, r| a.get_state(r))),
        ("GetBulkState", dapr_method(api, max, |a, r| a.get_bulk_state(r))),
        ("SaveState", dapr_method(api, max, |a, r| a.save_state(r))),
        ("DeleteState", dapr_method(api, max, |a, r| a.delete_state(r))),
        (
            "ExecuteStateTransaction",
            dapr_method(api, max, |a, r| a.execute_state_transaction(r)),
        ),
        ("PublishEvent", dapr_method(api, max, |a, r| a.publish_event(r))),
        ("InvokeBinding", dapr_method(api, max, |a, r| a.invoke_binding(r))),
        ("GetSecret", dapr_method(api, max, |a, r| a.get_secret(r))),
        (
            "TryLockAlpha1",
            dapr_method(api, max, |a, r| a.try_lock_alpha1(r)),
        ),
        ("UnlockAlpha1", dapr_method(api, max, |a, r| a.unlock_alpha1(r))),
    ]
}

/// The API port's service.
pub async fn api(rt: Arc<Runtime>) -> impl daprs_mtls::http::Api {
    let v1 = on_first_call(|| reflection().build_v1());
    let v1alpha = on_first_call(|| reflection().build_v1alpha());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DaprServer>().await;
    // Health watchers see the sidecar go down when it shuts down.
    let mut stopping = rt.shutdown.subscribe();
    tokio::spawn(async move {
        if stopping.wait_for(|v| *v).await.is_ok() {
            reporter.set_not_serving::<DaprServer>().await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        }
    });
    let max = rt.settings.max_body_size + ENVELOPE;
    let dapr = DaprServer::new(grpc_api::DaprApi { rt: rt.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(app_channel::MAX_UNARY));
    let local = tonic::service::Routes::new(health)
        .into_axum_router()
        .route_service(
            "/grpc.reflection.v1.ServerReflection/{*method}",
            or_app(v1, rt.clone()),
        )
        .route_service(
            "/grpc.reflection.v1alpha.ServerReflection/{*method}",
            or_app(v1alpha, rt.clone()),
        )
        .layer(axum::middleware::map_response(
            |res: axum::response::Response| async { oversize_status(res) },
        ));
    let proxied = boxed(proxy::outbound(rt.clone()));
    let dapr = unary::Methods::new(
        DAPR,
        busiest(&Arc::new(grpc_api::DaprApi { rt: rt.clone() }), max),
        ServiceExt::<http::Request<Body>>::map_response(dapr, answer as fn(_) -> _),
    );
    let port = Split {
        prefixes: &[DAPR],
        matched: dapr,
        other: Split {
            prefixes: &[
                "/grpc.health.v1.Health/",
                "/grpc.reflection.v1.ServerReflection/",
                "/grpc.reflection.v1alpha.ServerReflection/",
            ],
            matched: local,
            other: proxied,
        },
    };
    // Without access rules or a token, nothing is checked on each call.
    let access = rt
        .config
        .api
        .restricts_grpc()
        .then(|| grpc_api::ApiAccessLayer(Arc::new(rt.config.api.clone())));
    let token = rt.settings.api_token.as_deref().map(|t| {
        let check = tonic::service::InterceptorLayer::new(grpc_api::token_check(Arc::from(t)));
        tower::layer::layer_fn(move |inner| {
            ServiceExt::<http::Request<Body>>::map_response(check.layer(inner), |res: http::Response<_>| {
                res.map(Body::new)
            })
        })
    });
    tower::ServiceBuilder::new()
        .option_layer(token)
        .option_layer(access)
        .service(port)
}

/// The largest message the internal port decodes: a body of the largest
/// size the API takes, in its envelope.
pub fn internal_message_limit(settings: &crate::settings::Settings) -> usize {
    (settings.max_body_size + ENVELOPE).max(app_channel::MAX_UNARY)
}

/// The internal port's service.
pub fn internal(rt: Arc<Runtime>) -> impl daprs_mtls::http::Api {
    use daprs_proto::internals::service_invocation_server::{ServiceInvocation, ServiceInvocationServer};
    let max = internal_message_limit(&rt.settings);
    let server = Arc::new(crate::internal::InternalServer { rt: rt.clone() });
    let local = server.clone();
    let call_local = unary::method(max, usize::MAX, move |req| {
        let server = local.clone();
        async move { server.call_local(req).await }
    });
    let svc = ServiceInvocationServer::from_arc(server)
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    const INTERNAL: &str = "/dapr.proto.internals.v1.ServiceInvocation/";
    unary::Methods::new(
        INTERNAL,
        vec![("CallLocal", call_local)],
        Split {
            prefixes: &[INTERNAL],
            matched: ServiceExt::<http::Request<Body>>::map_response(svc, answer as fn(_) -> _),
            other: boxed(proxy::inbound(rt)),
        },
    )
}
