//! Who a certificate request comes from, decided from what the API server
//! says about its token and its pod. Pure: the lookups happen in [`crate::sentry`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

/// A refusal, with the gRPC code it maps to.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    InvalidArgument(String),
    PermissionDenied(String),
}

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Refusal::PermissionDenied(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// Control-plane services that may ask for `dapr-<name>` identities.
const CONTROL_PLANE: &[&str] = &["operator", "placement", "injector", "sentry", "scheduler"];

/// The shape of the request before anything is looked up.
pub fn check_request(id: &str, namespace: &str, csr: &[u8]) -> Result<(), Refusal> {
    if id.is_empty() || id.contains('.') || id.len() > 64 {
        return Err(Refusal::InvalidArgument(format!(
            "id {id:?} must be an app-id: 1 to 64 characters without dots"
        )));
    }
    if namespace.is_empty() {
        return Err(Refusal::InvalidArgument("namespace is required".into()));
    }
    if csr.is_empty() {
        return Err(Refusal::InvalidArgument(
            "certificate_signing_request is empty".into(),
        ));
    }
    Ok(())
}

/// What the TokenReview said.
#[derive(Debug, Default)]
pub struct Reviewed {
    pub authenticated: bool,
    pub username: String,
    /// `authentication.kubernetes.io/pod-name` from the user's extra fields
    /// (present for pod-bound projected tokens).
    pub pod_name: Option<String>,
    pub error: Option<String>,
}

/// The service account `(namespace, name)` the token belongs to.
pub fn service_account(r: &Reviewed) -> Result<(String, String), Refusal> {
    if !r.authenticated {
        return Err(Refusal::PermissionDenied(format!(
            "the token was not accepted by the API server{}",
            r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        )));
    }
    let parts: Vec<&str> = r.username.split(':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", ns, name] if !ns.is_empty() && !name.is_empty() => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(Refusal::PermissionDenied(format!(
            "the token belongs to {:?}, not to a service account",
            r.username
        ))),
    }
}

/// The identity the pod behind the token is entitled to.
#[derive(Debug, PartialEq, Eq)]
pub struct Entitled {
    pub app_id: String,
    /// `Some(name)` for control-plane pods.
    pub control_plane: Option<String>,
}

/// Checks the request against the pod: namespace, service account and app-id.
pub fn entitled(
    request_id: &str,
    request_namespace: &str,
    sa: &(String, String),
    pod: &Pod,
    control_plane_namespace: &str,
) -> Result<Entitled, Refusal> {
    let deny = |m: String| Err(Refusal::PermissionDenied(m));
    if sa.0 != request_namespace {
        return deny(format!(
            "the token is for namespace {:?} but the request is for {request_namespace:?}",
            sa.0
        ));
    }
    let pod_sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    if pod_sa != sa.1 {
        return deny(format!(
            "the token's service account {:?} is not the pod's ({pod_sa:?})",
            sa.1
        ));
    }
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let (expected, control_plane) = match annotations.get("dapr.io/control-plane") {
        Some(name) => {
            if request_namespace != control_plane_namespace {
                return deny(format!(
                    "control-plane pods must run in {control_plane_namespace:?}"
                ));
            }
            if !CONTROL_PLANE.contains(&name.as_str()) || annotations.contains_key("dapr.io/app-id") {
                return deny(format!("{name:?} is not a control-plane service"));
            }
            (format!("dapr-{name}"), Some(name.clone()))
        }
        None => (
            annotations
                .get("dapr.io/app-id")
                .cloned()
                .or_else(|| pod.metadata.name.clone())
                .unwrap_or_default(),
            None,
        ),
    };
    if expected != request_id {
        return deny(format!(
            "the pod is app {expected:?}; it may not ask for {request_id:?}"
        ));
    }
    Ok(Entitled {
        app_id: expected,
        control_plane,
    })
}
