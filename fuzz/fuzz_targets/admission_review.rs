//! The injector's AdmissionReview bodies and the annotations inside them.
//! Property: an injecting answer carries a base64 JSON Patch that parses.
#![no_main]

use daprs_injector::{
    admission::{Requesters, review},
    sidecar::InjectorConfig,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((answer, _)) = review(data, &InjectorConfig::default(), &Requesters::default()) else {
        return;
    };
    if let Some(patch) = answer["response"]["patch"].as_str() {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("base64");
        let _: Vec<serde_json::Value> = serde_json::from_slice(&bytes).expect("a JSON Patch");
    }
});
