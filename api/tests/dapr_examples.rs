//! Resources written as Dapr documents them are accepted by the generated
//! CRD schemas with nothing pruned, and read into the Rust types with
//! nothing lost. The API server prunes fields a structural schema does not
//! declare, so a misspelt field there (say `workloadCertTtl`) silently drops
//! what a user wrote.

use daprs_api::{v1alpha1, v2alpha1};
use serde_json::Value;

/// Where `value` breaks `schema` as the API server reads it: fields it
/// would prune, values of the wrong type, required fields missing.
fn problems(schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true && schema.get("properties").is_none() {
        return;
    }
    if value.is_null() {
        if schema["nullable"] != true {
            out.push(format!("{at}: null"));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    match schema["type"].as_str() {
        Some("object") => {
            let Some(fields) = value.as_object() else {
                out.push(format!("{at}: not an object"));
                return;
            };
            for req in schema["required"].as_array().into_iter().flatten() {
                if let Some(r) = req.as_str()
                    && !fields.contains_key(r)
                {
                    out.push(format!("{at}.{r}: required"));
                }
            }
            for (k, v) in fields {
                let path = format!("{at}.{k}");
                if let Some(s) = schema["properties"].get(k) {
                    problems(s, v, &path, out);
                } else if schema["additionalProperties"].is_object() {
                    problems(&schema["additionalProperties"], v, &path, out);
                } else if schema["additionalProperties"] != true
                    && schema["x-kubernetes-preserve-unknown-fields"] != true
                {
                    out.push(format!("{path}: pruned (not in the schema)"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, v) in items.iter().enumerate() {
                    problems(&schema["items"], v, &format!("{at}[{i}]"), out);
                }
            }
            None => out.push(format!("{at}: not an array")),
        },
        Some("string") if !(value.is_string() || int_or_string && value.is_i64()) => {
            out.push(format!("{at}: not a string"));
        }
        Some("integer") if !value.is_i64() && !value.is_u64() => out.push(format!("{at}: not an integer")),
        Some("number") if !value.is_number() => out.push(format!("{at}: not a number")),
        Some("boolean") if !value.is_boolean() => out.push(format!("{at}: not a boolean")),
        None if int_or_string && !(value.is_string() || value.is_i64()) => {
            out.push(format!("{at}: neither an integer nor a string"));
        }
        _ => {}
    }
}

/// The schema of `kind` in `version`, from the generated CRDs.
fn schema(kind: &str, version: &str) -> Value {
    let crds = daprs_api::crds::all().expect("crds");
    let crd = crds
        .iter()
        .map(|(_, c)| c)
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let v = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == version)
        .unwrap_or_else(|| panic!("{kind} has no version {version}"));
    serde_json::to_value(v.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref())).expect("schema")
}

/// `v` read into `T` and written back holds everything it held.
fn reads_back<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(typed).map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    missing(v, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(())
    } else {
        Err(lost.join(", "))
    }
}

fn missing(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => missing(v, w, &format!("{at}.{k}"), out),
                    None => out.push(format!("{at}.{k}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                missing(v, w, &format!("{at}[{i}]"), out);
            }
        }
        // The types keep scalar values as the user wrote them, or as strings.
        (Value::Bool(_) | Value::Number(_), Value::String(_)) => {}
        _ if a != b => out.push(format!("{at}: {a} became {b}")),
        _ => {}
    }
}

#[test]
fn dapr_documented_resources_are_accepted_whole() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for de in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(de).expect("yaml");
            let kind = v["kind"].as_str().expect("kind").to_string();
            let version = v["apiVersion"]
                .as_str()
                .and_then(|a| a.split('/').nth(1))
                .expect("version");
            let what = format!("{} {kind} {}", path.display(), v["metadata"]["name"]);
            let mut found = Vec::new();
            let mut body = v.clone();
            if let Some(o) = body.as_object_mut() {
                // The API server's own fields.
                for k in ["apiVersion", "kind", "metadata"] {
                    o.remove(k);
                }
            }
            problems(&schema(&kind, version), &body, "", &mut found);
            assert!(found.is_empty(), "{what}: {found:?}");
            let typed = match (kind.as_str(), version) {
                ("Component", _) => reads_back::<v1alpha1::Component>(&v),
                ("Configuration", _) => reads_back::<v1alpha1::Configuration>(&v),
                ("Resiliency", _) => reads_back::<v1alpha1::Resiliency>(&v),
                ("HTTPEndpoint", _) => reads_back::<v1alpha1::HTTPEndpoint>(&v),
                ("Subscription", "v1alpha1") => reads_back::<v1alpha1::Subscription>(&v),
                ("Subscription", _) => reads_back::<v2alpha1::Subscription>(&v),
                _ => panic!("{what}: no type"),
            };
            if let Err(lost) = typed {
                panic!("{what}: the type loses {lost}");
            }
            seen.push(format!("{kind}/{version}"));
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        [
            "Component/v1alpha1",
            "Configuration/v1alpha1",
            "HTTPEndpoint/v1alpha1",
            "Resiliency/v1alpha1",
            "Subscription/v1alpha1",
            "Subscription/v2alpha1"
        ]
    );
}

#[test]
fn a_misspelt_field_is_caught() {
    let mut found = Vec::new();
    let body = serde_json::json!({"spec": {"mtls": {"enabled": true, "workloadCertTtl": "24h"}}});
    problems(&schema("Configuration", "v1alpha1"), &body, "", &mut found);
    assert_eq!(found, [".spec.mtls.workloadCertTtl: pruned (not in the schema)"]);
}
