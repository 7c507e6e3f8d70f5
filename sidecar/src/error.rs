//! The sidecar's API error: one Dapr error code with its HTTP status and gRPC
//! code, mapped once to an HTTP response and once to a gRPC status.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::Serialize;
use tonic::Code;

/// An error returned to an API caller, as Dapr shapes it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Dapr's error code, e.g. `ERR_STATE_STORE_NOT_FOUND`.
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// HTTP status for the HTTP API.
    pub http: StatusCode,
    /// gRPC code for the gRPC API.
    pub grpc: Code,
    /// `ErrorInfo.reason` for Dapr's "rich" errors.
    pub reason: Option<&'static str>,
    /// `ResourceInfo` (type, name) for Dapr's "rich" errors.
    pub resource: Option<(&'static str, String)>,
}

impl ApiError {
    /// An error with an explicit HTTP status and gRPC code.
    pub fn new(code: &'static str, http: StatusCode, grpc: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            http,
            grpc,
            reason: None,
            resource: None,
        }
    }

    /// Adds the `ErrorInfo` reason of a rich error.
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Adds the `ResourceInfo` of a rich error.
    pub fn with_resource(mut self, kind: &'static str, name: impl Into<String>) -> Self {
        self.resource = Some((kind, name.into()));
        self
    }

    /// 400 / InvalidArgument `ERR_MALFORMED_REQUEST`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_MALFORMED_REQUEST",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            message,
        )
    }

    /// 400 / InvalidArgument `ERR_BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            "ERR_BAD_REQUEST",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            message,
        )
    }

    /// 413 / ResourceExhausted: a request body over `--max-body-size`.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            "ERR_BODY_READ",
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            format!("request body exceeds the limit of {limit} bytes; raise it with --max-body-size"),
        )
    }

    /// A request body that could not be read: 408 when the client stopped
    /// sending it, else 400.
    pub fn body_read(e: &(dyn std::error::Error + 'static)) -> Self {
        match daprs_mtls::http::BodyTimeout::find(e) {
            Some(t) => Self::new(
                "ERR_BODY_READ",
                StatusCode::REQUEST_TIMEOUT,
                Code::DeadlineExceeded,
                t.to_string(),
            ),
            None => Self::new(
                "ERR_BODY_READ",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("cannot read the request body: {e}"),
            ),
        }
    }

    /// 500 / Internal with the given code.
    pub fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(code, StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, message)
    }
}

/// HTTP status for a gRPC code (the grpc-gateway table Dapr uses).
pub fn http_status_of(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        Ok => StatusCode::OK,
        Cancelled => StatusCode::REQUEST_TIMEOUT,
        InvalidArgument | FailedPrecondition | OutOfRange => StatusCode::BAD_REQUEST,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "errorCode")]
    error_code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<serde_json::Value>,
}

impl ApiError {
    fn details_json(&self) -> Vec<serde_json::Value> {
        let mut details = Vec::new();
        if let Some(reason) = self.reason {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "dapr.io",
                "metadata": {},
            }));
        }
        if let Some((kind, name)) = &self.resource {
            details.push(serde_json::json!({
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "resource_type": kind,
                "resource_name": name,
                "owner": "",
                "description": "",
            }));
        }
        details
    }

    /// The JSON body Dapr returns for this error.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Body {
            error_code: self.code,
            message: &self.message,
            details: self.details_json(),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.http, self.to_json()).into_response();
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        res
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        use tonic_types::{ErrorDetails, StatusExt};
        let mut details = ErrorDetails::new();
        if let Some(reason) = e.reason {
            details.set_error_info(
                reason,
                "dapr.io",
                std::collections::HashMap::<String, String>::new(),
            );
        }
        if let Some((kind, name)) = &e.resource {
            details.set_resource_info(*kind, name.clone(), "", "");
        }
        if e.reason.is_none() && e.resource.is_none() {
            tonic::Status::new(e.grpc, e.message)
        } else {
            tonic::Status::with_error_details(e.grpc, e.message, details)
        }
    }
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag or environment value is not acceptable.
    #[error("{0}")]
    Config(String),
    /// A resource file could not be read.
    #[error("{0}")]
    Resources(String),
    /// A component failed and does not allow errors to be ignored.
    #[error("component {name} ({kind}) failed to initialise: {reason}")]
    Component {
        /// Component name.
        name: String,
        /// Component type.
        kind: String,
        /// What went wrong.
        reason: String,
    },
    /// A port could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        /// What the port was for.
        what: &'static str,
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Other I/O at start-up.
    #[error("{0}")]
    Io(String),
    /// The control plane did not give this sidecar its identity or resources.
    #[error("{0}")]
    ControlPlane(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_has_code_message_and_rich_details() {
        let e = ApiError::new(
            "ERR_STATE_STORE_NOT_FOUND",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "x",
        )
        .with_reason("DAPR_STATE_NOT_FOUND");
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).expect("json");
        assert_eq!(v["errorCode"], "ERR_STATE_STORE_NOT_FOUND");
        assert_eq!(v["message"], "x");
        assert_eq!(v["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");
        let plain: serde_json::Value =
            serde_json::from_slice(&ApiError::malformed("m").to_json()).expect("json");
        assert!(plain.get("details").is_none());
    }

    #[test]
    fn grpc_status_carries_code_and_error_info() {
        use tonic_types::StatusExt;
        let e = ApiError::new(
            "ERR_STATE_STORE_NOT_FOUND",
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "x",
        )
        .with_reason("DAPR_STATE_NOT_FOUND");
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "DAPR_STATE_NOT_FOUND");
        assert_eq!(info.domain, "dapr.io");
    }
}
