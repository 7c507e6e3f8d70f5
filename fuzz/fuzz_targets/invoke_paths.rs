//! Invocation paths: `/v1.0/invoke/<target>/method/<method>` splitting and
//! method cleaning. Property: cleaning is idempotent and leaves no `.` or
//! `..` segment, however spelled.
#![no_main]

use daprs_sidecar::{http_api, invoke};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Ok((_target, method)) = http_api::split_invoke_path(data) {
        if let Ok(clean) = invoke::clean_method(&method) {
            assert_eq!(invoke::clean_method(&clean).ok().as_deref(), Some(clean.as_str()));
            for seg in clean.split('/') {
                let lower = seg.to_ascii_lowercase().replace("%2e", ".");
                assert!(lower != "." && lower != "..", "{clean:?} keeps {seg:?}");
            }
        }
    }
});
