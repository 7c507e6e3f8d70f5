//! Golden tests: real manifests through `render`, compared with reviewed
//! output. `UPDATE_GOLDEN=1 cargo test -p daprs-injector --test golden`
//! rewrites the expected files; review the diff before committing it.

use std::path::{Path, PathBuf};

use clap::Parser;
use daprs_injector::{
    render::render,
    sidecar::{InjectorConfig, NativeSidecar},
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::CronJob,
    core::v1::{Container, Pod, PodSpec},
};

fn config() -> InjectorConfig {
    InjectorConfig {
        image: "ghcr.io/daprs/daprd:0.1.0".into(),
        trust_anchors: Some("-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n".into()),
        native_sidecar: NativeSidecar::Off,
        ..InjectorConfig::default()
    }
}

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

/// Every pod spec in a rendered stream, typed.
fn pod_specs(output: &str) -> Vec<(String, PodSpec)> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(output) {
        let v: serde_json::Value = serde::Deserialize::deserialize(de).expect("yaml");
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let spec = match kind.as_str() {
            "Pod" => serde_json::from_value::<Pod>(v).expect("valid Pod").spec,
            "Deployment" => serde_json::from_value::<Deployment>(v)
                .expect("valid Deployment")
                .spec
                .and_then(|s| s.template.spec),
            "StatefulSet" => serde_json::from_value::<StatefulSet>(v)
                .expect("valid StatefulSet")
                .spec
                .and_then(|s| s.template.spec),
            "CronJob" => serde_json::from_value::<CronJob>(v)
                .expect("valid CronJob")
                .spec
                .and_then(|s| s.job_template.spec)
                .and_then(|s| s.template.spec),
            _ => None,
        };
        if let Some(spec) = spec {
            out.push((kind, spec));
        }
    }
    out
}

fn daprd_of(spec: &PodSpec) -> Vec<&Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name == "daprd")
        .collect()
}

/// The injected flags must be ones this repository's daprd accepts.
fn assert_daprd_accepts(c: &Container) {
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("/daprd"));
    let flags =
        daprs_sidecar::flags::Flags::try_parse_from(daprs_sidecar::flags::normalise_args(args.clone()))
            .unwrap_or_else(|e| panic!("daprd rejects {args:?}: {e}"));
    let env = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    daprs_sidecar::settings::Settings::from_flags(flags, env)
        .unwrap_or_else(|e| panic!("daprd rejects {args:?}: {e}"));
}

#[test]
fn manifests_render_as_reviewed() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(dir("fixtures"))
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 6);
    for input in inputs {
        let name = input
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let text = std::fs::read_to_string(&input).expect("read fixture");
        let rendered = render(&text, &config()).expect("render");
        let messages = rendered.messages.join("\n") + "\n";
        let out_path = dir("golden").join(format!("{name}.yaml"));
        let msg_path = dir("golden").join(format!("{name}.messages.txt"));
        if update {
            std::fs::write(&out_path, &rendered.output).expect("write golden");
            std::fs::write(&msg_path, &messages).expect("write golden");
        }
        let want = std::fs::read_to_string(&out_path).expect("golden output (run with UPDATE_GOLDEN=1)");
        assert_eq!(
            rendered.output,
            want,
            "{name}: output differs from {}",
            out_path.display()
        );
        let want_msgs = std::fs::read_to_string(&msg_path).expect("golden messages");
        assert_eq!(messages, want_msgs, "{name}: messages differ");

        // Injecting again changes nothing.
        let again = render(&rendered.output, &config()).expect("render twice");
        assert_eq!(again.output, rendered.output, "{name}: not idempotent");

        for (kind, spec) in pod_specs(&rendered.output) {
            let daprd = daprd_of(&spec);
            assert!(
                daprd.len() <= 1,
                "{name}: {kind} has {} daprd containers",
                daprd.len()
            );
            // A daprd the manifest brought itself is not ours to check.
            for c in daprd.into_iter().filter(|c| c.args.is_some()) {
                assert_daprd_accepts(c);
            }
        }
    }
}

#[test]
fn warnings_and_refusals_name_the_annotation() {
    let text = std::fs::read_to_string(dir("fixtures").join("pod-bad-annotations.yaml")).expect("fixture");
    let r = render(&text, &config()).expect("render");
    assert!(!r.refused);
    for (annotation, hint) in [
        ("dapr.io/app-port", "whole number"),
        ("dapr.io/app-protocol", "http, grpc, https, grpcs, h2c"),
        ("dapr.io/log-level", "debug, info, warn, error"),
        ("dapr.io/sidecar-cpu-request", "quantity"),
        ("dapr.io/volume-mounts", "missing"),
        ("dapr.io/enable-profiling", "does not support"),
    ] {
        assert!(
            r.messages
                .iter()
                .any(|m| m.contains(annotation) && m.contains(hint)),
            "no message for {annotation}: {:#?}",
            r.messages
        );
    }
    let text = std::fs::read_to_string(dir("fixtures").join("refused.yaml")).expect("fixture");
    let r = render(&text, &config()).expect("render");
    assert!(r.refused);
    assert_eq!(r.messages.len(), 2, "{:#?}", r.messages);
    assert!(r.messages[0].starts_with("Deployment/anonymous: not injected: dapr.io/app-id is required"));
    assert!(r.messages[1].contains("\"Orders.V1\" is not valid"));
    assert_eq!(r.output, render(&r.output, &config()).expect("render").output);
}

#[test]
fn broken_yaml_is_an_error_not_a_panic() {
    assert!(render("kind: [unclosed", &config()).is_err());
    let r = render("", &config()).expect("empty input");
    assert_eq!(r.output, "");
}
