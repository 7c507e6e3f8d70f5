//! Resource files: Component, Configuration (access control, API lists,
//! secret scopes), Resiliency and HTTPEndpoint YAML. No input may panic or
//! take long; a decoded Component survives a JSON round trip unchanged.
#![no_main]

use daprs_api::Resource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let Ok(decoded) = daprs_api::resource::decode_yaml(data) else {
        return;
    };
    for r in &decoded.resources {
        match r {
            Resource::Component(c) => {
                let json = serde_json::to_value(c).expect("serialises");
                let back: daprs_api::v1alpha1::Component =
                    serde_json::from_value(json.clone()).expect("reads back");
                assert_eq!(serde_json::to_value(&back).expect("serialises"), json);
            }
            Resource::Configuration(c) => {
                let _ = daprs_sidecar::config::SidecarConfig::from_configuration(Some(c));
            }
            _ => {}
        }
    }
    let _ = daprs_sidecar::resiliency::Resiliency::load(
        decoded.resources.iter().filter_map(Resource::as_resiliency),
        "app",
    );
});
