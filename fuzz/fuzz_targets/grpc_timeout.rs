//! `grpc-timeout` values. Property: what parses formats back to a value that
//! parses to no more than the original.
#![no_main]

use daprs_sidecar::proxy::timeout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Some(d) = timeout::parse(data) {
        let again = timeout::parse(&timeout::format(d)).expect("formatted timeouts parse");
        assert!(again <= d);
    }
});
