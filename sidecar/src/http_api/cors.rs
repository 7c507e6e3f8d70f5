//! `--allowed-origins`: lets browsers call the HTTP API from the listed
//! origins (or any, with `*`). Preflight requests are answered here with
//! the methods Dapr allows and whatever headers the browser asks for.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

const METHODS: &str = "HEAD, GET, POST, PUT, PATCH, DELETE";

/// The origins browsers may call from.
#[derive(Debug, Clone)]
pub struct Origins(pub Vec<String>);

impl Origins {
    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, if allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.0.iter().any(|o| o == "*") {
            return Some(HeaderValue::from_static("*"));
        }
        let o = origin.to_str().ok()?;
        self.0
            .iter()
            .any(|a| a.eq_ignore_ascii_case(o))
            .then(|| origin.clone())
    }
}

fn add(headers: &mut HeaderMap, allow: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub async fn layer(State(origins): State<Arc<Origins>>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let allow = origins.allow(&origin);
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut res = StatusCode::NO_CONTENT.into_response();
        if let Some(allow) = allow {
            let h = res.headers_mut();
            add(h, allow);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
        }
        return res;
    }
    let mut res = next.run(req).await;
    if let Some(allow) = allow {
        add(res.headers_mut(), allow);
    }
    res
}
