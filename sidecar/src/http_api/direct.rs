//! The HTTP API as served. When no middleware has to see every request (no
//! API token, no `spec.api` restrictions, no CORS), the hottest routes go
//! straight to their handlers: publishing (`POST|PUT
//! /v1.0/publish/{pubsub}/{topic}`), invocation by path (`/v1.0/invoke/
//! {app-id}/method/...`), output bindings (`POST|PUT /v1.0/bindings/{name}`)
//! and single-key state (`POST|PUT /v1.0/state/{store}`, `GET
//! /v1.0/state/{store}/{key}`). Routing a published message through the
//! axum router cost a twelfth of what daprd spends on it. Everything else,
//! and any path that needs percent-decoding, goes to the router, which
//! stays the one definition of every route.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{Method, Request},
    response::{IntoResponse, Response},
};
use tower::ServiceExt;

use crate::runtime::Runtime;

/// The HTTP API: the router, and the runtime when hot routes may bypass it.
#[derive(Clone)]
pub struct Api {
    router: Router,
    direct: Option<Arc<Runtime>>,
}

impl Api {
    pub fn new(rt: Arc<Runtime>) -> Self {
        let unguarded = rt.settings.api_token.is_none()
            && !rt.config.api.restricts_http()
            && rt.settings.allowed_origins.is_none();
        Self {
            router: super::router(rt.clone()),
            direct: unguarded.then_some(rt),
        }
    }
}

/// A route served without the router.
#[derive(Debug, PartialEq, Eq)]
enum Hot<'a> {
    Publish(&'a str, &'a str),
    Invoke,
    Binding(&'a str),
    SaveState(&'a str),
    GetState(&'a str, &'a str),
}

/// `rest` as one path segment, or as two, when none is empty.
fn one(rest: &str) -> Option<&str> {
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

fn two(rest: &str) -> Option<(&str, &str)> {
    let (a, b) = rest.split_once('/')?;
    Some((one(a)?, one(b)?))
}

/// Which hot route `path` is, when it is one the router would give the same
/// handler with the same parameters.
fn hot<'a>(method: &Method, path: &'a str) -> Option<Hot<'a>> {
    // Percent-decoding of the parameters is left to the router.
    if path.contains('%') {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/v1.0/invoke/") {
        return (!rest.is_empty()).then_some(Hot::Invoke);
    }
    if method == Method::GET {
        let (store, key) = two(path.strip_prefix("/v1.0/state/")?)?;
        return Some(Hot::GetState(store, key));
    }
    if method != Method::POST && method != Method::PUT {
        return None;
    }
    if let Some(rest) = path.strip_prefix("/v1.0/bindings/") {
        return one(rest).map(Hot::Binding);
    }
    if let Some(rest) = path.strip_prefix("/v1.0/state/") {
        return one(rest).map(Hot::SaveState);
    }
    let rest = path.strip_prefix("/v1.0/publish/")?;
    if rest.starts_with("bulk/") {
        return None;
    }
    let (pubsub, topic) = rest.split_once('/')?;
    (!pubsub.is_empty() && !topic.is_empty()).then_some(Hot::Publish(pubsub, topic))
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl tower::Service<Request<Body>> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Answer {
        if let Some(rt) = &self.direct {
            match hot(req.method(), req.uri().path()) {
                Some(Hot::Publish(pubsub, topic)) => {
                    let params = Path((pubsub.to_string(), topic.to_string()));
                    let rt = State(rt.clone());
                    return Box::pin(async move {
                        Ok(super::pubsub::publish(rt, params, req).await.into_response())
                    });
                }
                Some(Hot::Invoke) => {
                    let rt = State(rt.clone());
                    return Box::pin(async move { Ok(super::invoke_path(rt, req).await.into_response()) });
                }
                Some(Hot::Binding(name)) => {
                    let (rt, name) = (State(rt.clone()), Path(name.to_string()));
                    return Box::pin(async move {
                        Ok(super::bindings::invoke(rt, name, req).await.into_response())
                    });
                }
                Some(Hot::SaveState(store)) => {
                    let (rt, store) = (State(rt.clone()), Path(store.to_string()));
                    return Box::pin(async move {
                        Ok(super::state::save_state(rt, store, req).await.into_response())
                    });
                }
                Some(Hot::GetState(store, key)) => {
                    let params = Path((store.to_string(), key.to_string()));
                    let rt = State(rt.clone());
                    return Box::pin(async move {
                        Ok(super::state::get_state(rt, params, req).await.into_response())
                    });
                }
                None => {}
            }
        }
        Box::pin(self.router.clone().oneshot(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hot_routes_bypass_the_router() {
        let (post, get) = (Method::POST, Method::GET);
        assert_eq!(
            hot(&post, "/v1.0/publish/bus/orders/eu"),
            Some(Hot::Publish("bus", "orders/eu"))
        );
        assert_eq!(
            hot(&Method::PUT, "/v1.0/publish/bus/t"),
            Some(Hot::Publish("bus", "t"))
        );
        assert_eq!(hot(&get, "/v1.0/invoke/app/method/x"), Some(Hot::Invoke));
        assert_eq!(hot(&post, "/v1.0/bindings/web"), Some(Hot::Binding("web")));
        assert_eq!(hot(&Method::PUT, "/v1.0/state/s"), Some(Hot::SaveState("s")));
        assert_eq!(hot(&get, "/v1.0/state/s/k"), Some(Hot::GetState("s", "k")));
        for (m, path) in [
            (&post, "/v1.0/bindings/web/x"),
            (&post, "/v1.0/bindings/"),
            (&get, "/v1.0/bindings/web"),
            (&Method::DELETE, "/v1.0/state/s"),
            (&post, "/v1.0/state/s/bulk"),
            (&post, "/v1.0/state/s/transaction"),
            (&get, "/v1.0/state/s"),
            (&get, "/v1.0/state/s/"),
            (&get, "/v1.0/state/s/a/b"),
            (&Method::DELETE, "/v1.0/state/s/k"),
            (&post, "/v1.0-alpha1/state/s/query"),
            (&get, "/v1.0/publish/bus/t"),
            (&post, "/v1.0/publish/bulk/bus/t"),
            (&post, "/v1.0/publish/bus/"),
            (&post, "/v1.0/publish//t"),
            (&post, "/v1.0/publish/bus"),
            (&post, "/v1.0/publish/bus/caf%C3%A9"),
            (&post, "/v1.0/invoke/"),
            (&post, "/v1.0/invoke/app%2Fx/method/y"),
            (&get, "/v1.0/healthz"),
        ] {
            assert_eq!(hot(m, path), None, "{m} {path}");
        }
    }
}
