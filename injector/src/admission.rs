//! AdmissionReview in, AdmissionReview out: the webhook's whole decision as
//! a pure function of the request body and the injector's settings.

use base64::Engine;
use serde_json::{Value, json};

use crate::{
    annotations::key,
    patch::{self, Decision},
    sidecar::InjectorConfig,
};

/// Service accounts whose pods are injected without further configuration:
/// Kubernetes' built-in workload controllers and common operators.
pub const BUILTIN_REQUESTERS: &[&str] = &[
    "kube-system:replicaset-controller",
    "kube-system:replication-controller",
    "kube-system:deployment-controller",
    "kube-system:cronjob-controller",
    "kube-system:job-controller",
    "kube-system:statefulset-controller",
    "kube-system:daemon-set-controller",
    "openshift-operator-lifecycle-manager:olm-operator-serviceaccount",
    "tekton-pipelines:tekton-pipelines-controller",
    "mirrord:mirrord-operator",
];

/// Who may create pods that get a sidecar.
#[derive(Clone, Debug)]
pub struct Requesters {
    /// `namespace:name` glob patterns (`*` and `?`) of service accounts.
    pub patterns: Vec<String>,
    /// User UIDs that are always allowed.
    pub uids: Vec<String>,
}

impl Default for Requesters {
    fn default() -> Self {
        Self {
            patterns: BUILTIN_REQUESTERS.iter().map(|s| s.to_string()).collect(),
            uids: Vec::new(),
        }
    }
}

/// `*` matches any run of characters, `?` any one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Requesters {
    /// Whether the request's user may create injected pods.
    pub fn allows(&self, user: &Value) -> bool {
        let groups = user["groups"].as_array();
        if groups.is_some_and(|g| g.iter().any(|g| g.as_str() == Some("system:masters"))) {
            return true;
        }
        if let Some(uid) = user["uid"].as_str()
            && self.uids.iter().any(|u| u == uid)
        {
            return true;
        }
        let Some(sa) = user["username"]
            .as_str()
            .and_then(|u| u.strip_prefix("system:serviceaccount:"))
        else {
            return false;
        };
        let Some((ns, name)) = sa.split_once(':') else {
            return false;
        };
        self.patterns.iter().any(|p| match p.split_once(':') {
            Some((pns, pname)) => glob(pns, ns) && glob(pname, name),
            None => false,
        })
    }
}

/// Kubernetes' limit on a pod's annotations, keys and values together.
pub const MAX_ANNOTATIONS: usize = 256 << 10;

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A request body the webhook cannot read (answered with HTTP 400).
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// What happened, for logs and metrics.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// daprd was added for this app-id.
    Injected(String),
    Skipped(String),
    NotAllowed(String),
    Denied(String),
}

/// Answers one AdmissionReview body.
pub fn review(
    body: &[u8],
    cfg: &InjectorConfig,
    requesters: &Requesters,
) -> Result<(Value, Outcome), BadRequest> {
    let mut review: Value = serde_json::from_slice(body).map_err(|e| BadRequest(format!("not JSON: {e}")))?;
    if review["kind"] != "AdmissionReview" {
        return Err(BadRequest("body is not an AdmissionReview".into()));
    }
    let api_version = review["apiVersion"]
        .as_str()
        .unwrap_or("admission.k8s.io/v1")
        .to_string();
    // The pod is taken out of the review, not copied.
    let mut object = review["request"]["object"].take();
    let request = &review["request"];
    let Some(uid) = request["uid"].as_str() else {
        return Err(BadRequest("AdmissionReview has no request.uid".into()));
    };
    let answer = |response: Value| {
        let mut response = response;
        response["uid"] = json!(uid);
        json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})
    };
    let allow = |why: String, warnings: Vec<String>| {
        let mut r = json!({"allowed": true});
        if !warnings.is_empty() {
            r["warnings"] = json!(warnings);
        }
        (answer(r), Outcome::Skipped(why))
    };

    if request["kind"]["kind"] != "Pod" || request["kind"]["group"].as_str().is_some_and(|g| !g.is_empty()) {
        return Ok(allow("not a pod".into(), vec![]));
    }
    if request["operation"].as_str().is_some_and(|op| op != "CREATE") {
        return Ok(allow("not a CREATE".into(), vec![]));
    }
    if !object.is_object() {
        let why = format!(
            "the review of this pod carries no pod object ({}); the daprd sidecar was not added",
            kind_of(&object)
        );
        return Ok(allow(why.clone(), vec![why]));
    }
    let enabled = object["metadata"]["annotations"][key::ENABLED]
        .as_str()
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !enabled {
        return Ok(allow(format!("{} is not \"true\"", key::ENABLED), vec![]));
    }
    // Kubernetes itself refuses annotations over 256 KiB in all; nothing is
    // built from larger ones.
    let annotation_bytes: usize = object["metadata"]["annotations"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if annotation_bytes > MAX_ANNOTATIONS {
        let why = format!(
            "the pod's annotations take {annotation_bytes} bytes, over Kubernetes' limit of {MAX_ANNOTATIONS}"
        );
        return Ok((
            answer(
                json!({"allowed": false, "status": {"code": 400, "reason": "BadRequest", "message": why}}),
            ),
            Outcome::Denied(why),
        ));
    }
    if !requesters.allows(&request["userInfo"]) {
        let who = request["userInfo"]["username"].as_str().unwrap_or("(unknown)");
        let why = format!(
            "the daprd sidecar was not added: {who} may not create Dapr-enabled pods. Pods created by \
             Deployments, StatefulSets, Jobs and the other built-in controllers are allowed; add \
             \"<namespace>:<service-account>\" to the injector's --allowed-service-accounts to allow others"
        );
        let (v, _) = allow(why.clone(), vec![why.clone()]);
        return Ok((v, Outcome::NotAllowed(why)));
    }
    let pod: k8s_openapi::api::core::v1::Pod = match serde_json::from_value(object.take()) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("the pod could not be read ({e}); the daprd sidecar was not added");
            return Ok(allow(why.clone(), vec![why]));
        }
    };
    let namespace = request["namespace"]
        .as_str()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default")
        .to_string();
    Ok(match patch::decide(&pod, &namespace, cfg) {
        Decision::Skip(why) => allow(why, vec![]),
        Decision::Deny(why) => (
            answer(
                json!({"allowed": false, "status": {"code": 400, "reason": "BadRequest", "message": why}}),
            ),
            Outcome::Denied(why),
        ),
        Decision::Inject { patch, warnings } => {
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            let mut r = json!({
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(bytes),
            });
            if !warnings.is_empty() {
                r["warnings"] = json!(warnings);
            }
            let app_id = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("dapr.io/app-id"))
                .or(pod.metadata.name.as_ref())
                .cloned()
                .unwrap_or_default();
            (answer(r), Outcome::Injected(app_id))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("kube-system", "kube-system"));
        assert!(glob("team-*", "team-a"));
        assert!(glob("*", ""));
        assert!(glob("deploy-?", "deploy-1"));
        assert!(!glob("deploy-?", "deploy-12"));
        assert!(glob("*-controller", "job-controller"));
        assert!(!glob("team-*", "other"));
    }

    #[test]
    fn requesters() {
        let r = Requesters {
            patterns: vec!["kube-system:*-controller".into(), "ci-*:deployer".into()],
            uids: vec!["u-1".into()],
        };
        let user = |name: &str| json!({"username": name, "uid": "x", "groups": []});
        assert!(r.allows(&user("system:serviceaccount:kube-system:job-controller")));
        assert!(r.allows(&user("system:serviceaccount:ci-prod:deployer")));
        assert!(!r.allows(&user("system:serviceaccount:ci-prod:other")));
        assert!(!r.allows(&user("alice")));
        assert!(r.allows(&json!({"username": "alice", "uid": "u-1"})));
        assert!(r.allows(&json!({"username": "admin", "groups": ["system:masters"]})));
    }
}
