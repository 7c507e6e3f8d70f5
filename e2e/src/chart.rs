//! The Helm chart in `charts/daprs`: rendering it with `helm template`, and
//! reading what it renders as Kubernetes objects.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The workspace folder.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Helm binary `scripts/helm.sh` installs (or `DAPRS_HELM`), or why
/// there is none.
pub fn helm() -> Result<PathBuf, String> {
    let path = std::env::var_os("DAPRS_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/tools/helm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no Helm at {} (bash scripts/helm.sh installs it)",
            path.display()
        ))
    }
}

/// Runs helm with `args`; its standard output, or its error.
pub fn run(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("{}: {e}", helm.display()))?;
    if out.status.success() {
        String::from_utf8(out.stdout).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "helm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm template` of the chart into `dapr-system`, with `--set` values.
pub fn template(helm: &Path, sets: &[&str], include_crds: bool) -> Result<String, String> {
    let mut args = vec!["template", "daprs", "charts/daprs", "--namespace", "dapr-system"];
    if include_crds {
        args.push("--include-crds");
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    run(helm, &args)
}

/// The first lines of `deploy/install.yaml`: what it is, and its namespace.
const INSTALL_HEAD: &str = "\
# daprs control plane for `kubectl apply -f deploy/install.yaml`: the chart in
# charts/daprs rendered with its default values (`helm template --include-crds`),
# after the namespace it installs into. Generated; do not edit. After changing
# the chart: cargo run -p daprs-e2e --bin install-yaml > deploy/install.yaml
apiVersion: v1
kind: Namespace
metadata:
  name: dapr-system
  labels:
    app.kubernetes.io/part-of: daprs
";

/// What `deploy/install.yaml` must hold.
pub fn install_yaml(helm: &Path) -> Result<String, String> {
    Ok(format!("{INSTALL_HEAD}{}", template(helm, &[], true)?))
}

/// The objects of a multi-document YAML text (empty documents dropped).
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(de).map_err(|e| e.to_string())?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// `v` as a `K`, refusing any field `K` does not have: the object must read
/// back from `K` exactly as it was written.
pub fn strict<K: DeserializeOwned + Serialize>(v: &Value) -> Result<K, String> {
    let typed: K = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(v, &back, "") {
        None => Ok(typed),
        Some(path) => Err(format!(
            "{path} is not a field of the type, or does not read back"
        )),
    }
}

/// The first path where `a` has something `b` lacks or differs on.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x.iter().find_map(|(k, v)| match y.get(k) {
            Some(w) => first_difference(v, w, &format!("{at}.{k}")),
            None if v.is_null() => None,
            None => Some(format!("{at}.{k}")),
        }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(at.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;

    use super::*;

    #[test]
    fn unknown_and_misspelt_fields_are_refused() {
        let good = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}});
        assert!(strict::<Service>(&good).is_ok());
        let mut bad = good.clone();
        bad["spec"]["ports"][0]["prot"] = "TCP".into();
        let e = strict::<Service>(&bad).expect_err("misspelt");
        assert!(e.contains(".spec.ports[0].prot"), "{e}");
    }
}
