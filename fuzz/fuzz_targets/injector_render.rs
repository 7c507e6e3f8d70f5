//! `daprs-injector render` on arbitrary manifests. No input may panic.
#![no_main]

use daprs_injector::{render, sidecar::InjectorConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let _ = render::render(data, &InjectorConfig::default());
});
