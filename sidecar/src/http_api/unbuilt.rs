//! The HTTP routes of building blocks this sidecar does not have: each
//! answers 501 with Dapr's error body naming the block, instead of falling
//! through to service invocation.

use std::sync::Arc;

use axum::{Router, routing::any};
use http::StatusCode;
use tonic::Code;

use crate::{error::ApiError, runtime::Runtime};

/// Route prefixes and the block each belongs to.
const BLOCKS: &[(&str, &str)] = &[
    ("/v1.0/actors", "actors"),
    ("/v1.0/jobs", "jobs"),
    ("/v1.0-alpha1/jobs", "jobs"),
    ("/v1.0/workflows", "workflows"),
    ("/v1.0-alpha1/workflows", "workflows"),
    ("/v1.0-beta1/workflows", "workflows"),
    ("/v1.0-alpha1/crypto", "cryptography"),
    ("/v1.0-alpha1/subtlecrypto", "cryptography"),
    ("/v1.0-alpha1/conversation", "conversation"),
    ("/v1.0-alpha2/conversation", "conversation"),
];

fn unimplemented(block: &'static str) -> ApiError {
    ApiError::new(
        "ERR_API_UNIMPLEMENTED",
        StatusCode::NOT_IMPLEMENTED,
        Code::Unimplemented,
        format!("the {block} API is not available in this sidecar"),
    )
}

/// The 501 routes, to merge into the API router.
pub fn routes() -> Router<Arc<Runtime>> {
    let mut r = Router::new();
    for &(prefix, block) in BLOCKS {
        r = r.route(
            &format!("{prefix}/{{*rest}}"),
            any(move || async move { unimplemented(block) }),
        );
    }
    r
}
