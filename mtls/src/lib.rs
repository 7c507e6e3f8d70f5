//! Workload identity on the wire: SPIFFE IDs in X.509 certificates
//! ([`spiffe`]), the rustls configurations that check them ([`tls`]), and
//! the accept loop and dialer that carry them into tonic ([`net`]), unary
//! calls to a peer in one write each ([`peer`]), gRPC replies in one write
//! each ([`coalesce`]), the HTTP serving loop with the limits every
//! server facing clients needs ([`http`]), and HTTP/1.1 connections driven
//! by the task that makes each request ([`h1`]).
//!
//! daprd and the operator both speak mutual TLS with certificates from the
//! operator's CA, so they share one implementation of what a peer must prove;
//! daprd and the injector share one way of serving HTTP.

pub mod coalesce;
pub mod forward;
pub mod h1;
pub mod http;
pub mod net;
pub mod peer;
pub mod spiffe;
pub mod tls;

pub use net::{PeerId, TlsConn};
pub use spiffe::SpiffeId;
pub use tls::{Authorize, Identity};

/// The largest HTTP/2 frame daprd's gRPC connections accept. At h2's
/// default of 16 KiB a message of 16 KiB crosses each hop as two DATA
/// frames (its 5-byte prefix does not fit); 64 KiB keeps a message of that
/// size whole without letting one stream's frame hold the others back long.
pub const MAX_FRAME: u32 = 64 << 10;
