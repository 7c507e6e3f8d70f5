//! Renders an app's reply to `InvokeService` as Dapr does: the app's
//! headers as response metadata, and for HTTP apps the status in
//! `dapr-http-status`, a non-2xx one as a gRPC error.

use daprs_proto::{common::InvokeResponse, internals::InternalInvokeResponse};
use tonic::{
    Code, Response, Status,
    metadata::{MetadataMap, MetadataValue},
};

use crate::app_channel::HOP_BY_HOP;

/// gRPC code for an app's HTTP status (Dapr's table; note 400 → Internal).
pub fn grpc_code_of_http(status: u16) -> Code {
    match status {
        200..=299 => Code::Ok,
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::Cancelled,
        409 => Code::AlreadyExists,
        429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Unknown,
    }
}

fn response_metadata(headers: &crate::invoke::Metadata) -> MetadataMap {
    let mut out = MetadataMap::new();
    for (k, list) in headers {
        let lower = k.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || lower == "content-length"
            || lower.starts_with("grpc-")
            || lower == "content-type"
        {
            continue;
        }
        for v in &list.values {
            crate::app_channel::append_metadata(&mut out, &lower, v);
        }
    }
    out
}

/// Renders an app's reply for a gRPC `InvokeService` caller.
pub fn grpc_response(res: InternalInvokeResponse) -> Result<Response<InvokeResponse>, Status> {
    let status = res.status.clone().unwrap_or_default();
    let message = res.message.clone().unwrap_or_default();
    let mut md = response_metadata(&res.headers);
    if status.code >= 100 {
        let code = u16::try_from(status.code).unwrap_or(500);
        md.insert("dapr-http-status", MetadataValue::from(code));
        let grpc = grpc_code_of_http(code);
        if grpc != Code::Ok {
            use tonic_types::{ErrorDetails, StatusExt};
            let text = http::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Unknown");
            let body = message
                .data
                .as_ref()
                .map(|a| String::from_utf8_lossy(&a.value).into_owned())
                .unwrap_or_default();
            let body: String = body.chars().take(63).collect();
            let mut details = ErrorDetails::new();
            details.set_error_info(
                text,
                "dapr.io",
                [
                    ("http.code".to_string(), code.to_string()),
                    ("http.error_message".to_string(), body),
                ],
            );
            let mut s = Status::with_error_details(grpc, text, details);
            s.metadata_mut()
                .insert("dapr-http-status", MetadataValue::from(code));
            return Err(s);
        }
    } else if status.code != 0 {
        return Err(Status::new(Code::from_i32(status.code), status.message));
    }
    let mut out = Response::new(message);
    *out.metadata_mut() = md;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_to_grpc_codes() {
        assert_eq!(grpc_code_of_http(200), Code::Ok);
        assert_eq!(grpc_code_of_http(400), Code::Internal);
        assert_eq!(grpc_code_of_http(404), Code::NotFound);
        assert_eq!(grpc_code_of_http(500), Code::Unknown);
    }
}
