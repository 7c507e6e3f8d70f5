//! `daprs-injector render`: injects the pods of a multi-document YAML stream
//! offline, the way the webhook would, leaving every other object as it is.

use serde_json::Value;

use crate::{
    patch::{self, Decision},
    sidecar::InjectorConfig,
};

/// The result of rendering one stream.
#[derive(Debug, Default)]
pub struct Rendered {
    /// The objects, as YAML documents.
    pub output: String,
    /// One line per warning or refusal, naming the object.
    pub messages: Vec<String>,
    /// Whether any pod was refused (its object is printed unchanged).
    pub refused: bool,
}

/// JSON-pointer of the pod template inside an object of `kind`.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some(""),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some("/spec/template")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    format!("{kind}/{name}")
}

/// Injects one object in place; returns messages about it.
fn inject_object(doc: &mut Value, cfg: &InjectorConfig, out: &mut Rendered) {
    let Some(pointer) = doc.get("kind").and_then(Value::as_str).and_then(template_pointer) else {
        return;
    };
    let what = describe(doc);
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let Some(template) = doc.pointer_mut(pointer) else {
        return;
    };
    let pod: k8s_openapi::api::core::v1::Pod = match serde_json::from_value(template.clone()) {
        Ok(p) => p,
        Err(e) => {
            out.messages
                .push(format!("{what}: pod template is not valid: {e}"));
            return;
        }
    };
    match patch::decide(&pod, &namespace, cfg) {
        Decision::Skip(_) => {}
        Decision::Deny(why) => {
            out.refused = true;
            out.messages.push(format!("{what}: not injected: {why}"));
        }
        Decision::Inject { patch, warnings } => {
            for w in warnings {
                out.messages.push(format!("{what}: warning: {w}"));
            }
            if let Err(e) = patch::apply(template, &patch) {
                out.refused = true;
                out.messages.push(format!("{what}: not injected: {e}"));
            }
        }
    }
}

/// Renders `input`, a stream of YAML documents.
pub fn render(input: &str, cfg: &InjectorConfig) -> Result<Rendered, String> {
    let mut text = Vec::new();
    let mut out = render_to(input, cfg, &mut text)?;
    out.output = String::from_utf8(text).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Renders document by document into `w`: each is parsed, injected, written
/// and dropped before the next is read, so memory follows the largest
/// document rather than the whole manifest. `output` of the result is empty.
pub fn render_to(input: &str, cfg: &InjectorConfig, w: &mut impl std::io::Write) -> Result<Rendered, String> {
    let mut out = Rendered::default();
    let mut first = true;
    for (i, de) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let mut doc: Value = serde::Deserialize::deserialize(de)
            .map_err(|e| format!("document {}: not valid YAML: {e}", i + 1))?;
        if doc.is_null() {
            continue;
        }
        // A List wraps objects in `items`.
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
            if let Some(Value::Array(items)) = doc.get_mut("items") {
                for item in items {
                    inject_object(item, cfg, &mut out);
                }
            }
        } else {
            inject_object(&mut doc, cfg, &mut out);
        }
        if !first {
            w.write_all(b"---\n").map_err(|e| e.to_string())?;
        }
        first = false;
        serde_yaml::to_writer(&mut *w, &doc).map_err(|e| e.to_string())?;
    }
    Ok(out)
}
