//! Who may call the gRPC API: the `dapr-api-token` check and the
//! Configuration's `spec.api` allow and deny lists.

use std::sync::Arc;

use tonic::{Request, Status};

/// `spec.api` of the Configuration for gRPC: methods of APIs that are not
/// enabled answer `Unimplemented`, as Dapr does.
#[derive(Clone)]
pub struct ApiAccessLayer(pub Arc<crate::config::ApiAccess>);

impl<S> tower::Layer<S> for ApiAccessLayer {
    type Service = ApiAccessService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiAccessService {
            access: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct ApiAccessService<S> {
    access: Arc<crate::config::ApiAccess>,
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for ApiAccessService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<http::Response<RB>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.access.grpc_permits(req.uri().path()) {
            futures_util::future::Either::Left(self.inner.call(req))
        } else {
            let denied = Status::unimplemented("requested endpoint is not available").into_http();
            futures_util::future::Either::Right(std::future::ready(Ok(denied)))
        }
    }
}

/// Checks `dapr-api-token` on every gRPC call against `DAPR_API_TOKEN`
/// (the layer is only there when it is set).
pub fn token_check(want: Arc<str>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| match req.metadata().get("dapr-api-token") {
        None => Err(Status::unauthenticated(
            "Unauthorized: missing api token in request metadata",
        )),
        Some(v) if v.as_bytes() == want.as_bytes() => {
            req.metadata_mut().remove("dapr-api-token");
            Ok(req)
        }
        Some(_) => Err(Status::unauthenticated(
            "Unauthorized: authentication error: api token mismatch",
        )),
    }
}
