//! What the three programs report about themselves. [`registry`] holds
//! counters, gauges and histograms under Dapr's metric names and writes them
//! as Prometheus text; each program declares its own families, and
//! [`process`] adds the process's CPU and memory. [`trace`] propagates
//! trace context, samples, and exports spans.

pub mod process;
pub mod registry;
pub mod trace;

/// gRPC's name for a status code, as Dapr's labels carry it (Go's spelling:
/// `OK`, `Canceled`).
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}
