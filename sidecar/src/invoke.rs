//! Service invocation routing: stamps caller identity, then hands the call to
//! the local app (own app-id) or to the target's sidecar over the internal API,
//! retrying connection failures as Dapr's built-in policy does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use daprs_proto::internals::{ApiVersion, InternalInvokeRequest, InternalInvokeResponse, ListStringValue};
use tonic::transport::Channel;

use daprs_mtls::Authorize;

use crate::{
    error::ApiError,
    identity::Svid,
    registry::{Resolver, Target},
};

/// Headers or gRPC metadata carried with an invocation.
pub type Metadata = std::collections::BTreeMap<String, ListStringValue>;

/// Routes invocations to other sidecars.
pub struct Invoker {
    /// This sidecar's app-id.
    pub app_id: String,
    /// This sidecar's namespace.
    pub namespace: String,
    resolver: Resolver,
    links: Mutex<HashMap<String, Link>>,
    max_body: usize,
    /// This sidecar's certificate, when calls between sidecars use mutual TLS.
    mtls: Option<Arc<Svid>>,
}

/// The two ways to one peer sidecar: daprd's own connections for unary
/// calls (HTTP/1.1, one write each) and proxied calls (HTTP/2), and a tonic
/// channel (connected on first use) for streamed invocations.
#[derive(Clone)]
pub struct Link {
    pub unary: Arc<daprs_mtls::peer::Peer>,
    pub channel: Channel,
}

/// Sets one metadata entry, replacing any spelling of the same key. An
/// entry already spelt `key` is overwritten in place, without allocating.
pub(crate) fn set(meta: &mut Metadata, key: &str, value: &str) {
    if meta.keys().any(|k| k != key && k.eq_ignore_ascii_case(key)) {
        meta.retain(|k, _| k == key || !k.eq_ignore_ascii_case(key));
    }
    match meta.get_mut(key).and_then(|e| {
        e.values.truncate(1);
        e.values.first_mut()
    }) {
        Some(v) => {
            v.clear();
            v.push_str(value);
        }
        None => {
            meta.insert(
                key.to_string(),
                ListStringValue {
                    values: vec![value.to_string()],
                },
            );
        }
    }
}

/// Reads one metadata entry, whatever the spelling of its key.
pub(crate) fn get<'a>(meta: &'a Metadata, key: &str) -> Option<&'a str> {
    meta.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| v.values.first())
        .map(String::as_str)
}

/// The one normalisation of an invoked method, for every API and both
/// sidecars: `.` and `..` segments are resolved (percent-encoded dots
/// included, as the app would decode them) so a method cannot climb out of
/// the app's routes, and characters that cannot stand in a request path are
/// refused.
pub fn clean_method(method: &str) -> Result<String, ApiError> {
    if let Some(c) = method.chars().find(|c| c.is_control() || *c == ' ') {
        return Err(ApiError::new(
            "ERR_DIRECT_INVOKE",
            http::StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            format!("the method name may not contain {c:?}"),
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in method.split('/') {
        match dots(seg) {
            Some(1) => {}
            Some(_) => {
                parts.pop();
            }
            None if seg.is_empty() => {}
            None => parts.push(seg),
        }
    }
    let mut out = parts.join("/");
    if method.ends_with('/') && !out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Refuses a query string that cannot go on a request line as it is.
pub fn check_query(query: &str) -> Result<(), ApiError> {
    match query.chars().find(|c| c.is_control() || matches!(c, ' ' | '#')) {
        Some(c) => Err(ApiError::new(
            "ERR_DIRECT_INVOKE",
            http::StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            format!("the querystring may not contain {c:?}"),
        )),
        None => Ok(()),
    }
}

/// 1 for a `.` segment, 2 for `..`, spelled plainly or as `%2e`.
fn dots(seg: &str) -> Option<u8> {
    let mut rest = seg;
    let mut n = 0u8;
    while !rest.is_empty() && n < 3 {
        rest = if let Some(r) = rest.strip_prefix('.') {
            r
        } else if rest.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%2e")) {
            // Three ASCII bytes, so byte 3 starts a character.
            &rest[3..]
        } else {
            return None;
        };
        n += 1;
    }
    (rest.is_empty() && (1..=2).contains(&n)).then_some(n)
}

/// How one attempt at a remote call failed.
pub enum Attempt {
    /// The target has no known address (not worth retrying).
    Unresolved(String),
    /// The target's sidecar could not be reached at this address.
    Unreachable(String, tonic::Status),
    /// The target's sidecar answered with an error.
    Status(tonic::Status),
}

/// Whether an app's answer is a failure for resiliency: an HTTP status of 400
/// or more from an HTTP app, a code other than OK from a gRPC app.
pub fn failure_of(res: &InternalInvokeResponse) -> Option<crate::resiliency::Failure> {
    let code = res.status.as_ref().map_or(0, |s| s.code);
    match code {
        c if c >= 400 => u16::try_from(c).ok().map(crate::resiliency::Failure::Http),
        c if (1..100).contains(&c) => Some(crate::resiliency::Failure::Grpc(c)),
        _ => None,
    }
}

/// The invocation error for a call a resiliency policy halted (an open
/// breaker, a timeout), to an app or an endpoint outside Dapr.
pub fn halted(target: &str, halt: crate::resiliency::Halt) -> ApiError {
    ApiError::new(
        "ERR_DIRECT_INVOKE",
        crate::error::http_status_of(halt.code),
        halt.code,
        format!("failed to invoke, id: {target}, err: {}", halt.message),
    )
}

/// The invocation error Dapr returns when the call could not be made.
pub fn failed(target: &str, err: impl std::fmt::Display) -> ApiError {
    ApiError::internal(
        "ERR_DIRECT_INVOKE",
        format!("failed to invoke, id: {target}, err: {err}"),
    )
}

impl Invoker {
    /// A router for `app_id` in `namespace`.
    pub fn new(app_id: String, namespace: String, resolver: Resolver, max_body: usize) -> Self {
        Self {
            app_id,
            namespace,
            resolver,
            links: Mutex::default(),
            max_body,
            mtls: None,
        }
    }

    /// Calls other sidecars over mutual TLS with this certificate.
    pub fn with_mtls(mut self, svid: Arc<Svid>) -> Self {
        self.mtls = Some(svid);
        self
    }

    /// The standalone registry, when names resolve through one.
    pub fn local_registry(&self) -> Option<&crate::registry::LocalRegistry> {
        match &self.resolver {
            Resolver::Local(r) => Some(r),
            Resolver::Kubernetes { .. } => None,
        }
    }

    /// Whether a target is this sidecar's own app.
    pub fn is_self(&self, target: &Target) -> bool {
        target.app_id == self.app_id && target.namespace.as_deref().is_none_or(|ns| ns == self.namespace)
    }

    /// Adds the caller/callee headers and the API version; caller-supplied values are replaced.
    pub fn stamp(&self, target: &Target, req: &mut InternalInvokeRequest) {
        req.ver = ApiVersion::V1 as i32;
        set(&mut req.metadata, "dapr-caller-app-id", &self.app_id);
        set(&mut req.metadata, "dapr-caller-namespace", &self.namespace);
        set(&mut req.metadata, "dapr-callee-app-id", &target.app_id);
    }

    fn link(&self, app_id: &str, namespace: &str, addr: &str) -> Result<Link, String> {
        let mut links = self
            .links
            .lock()
            .map_err(|_| "channel cache lock poisoned".to_string())?;
        if let Some(l) = links.get(addr) {
            return Ok(l.clone());
        }
        let tls = match &self.mtls {
            // The callee must prove it is the app asked for.
            Some(svid) => Some(Arc::new(daprs_mtls::tls::client_config(
                svid.roots.clone(),
                Authorize::App {
                    namespace: namespace.into(),
                    app_id: app_id.into(),
                },
                Some(svid.identity.clone()),
            )?)),
            None => None,
        };
        let link = Link {
            channel: daprs_mtls::net::channel(addr, tls.clone())?,
            unary: Arc::new(daprs_mtls::peer::Peer::sidecar(addr, tls)),
        };
        links.insert(addr.to_string(), link.clone());
        Ok(link)
    }

    /// Drops the link to `addr` and the target's cached addresses, after a
    /// call found its sidecar unreachable there.
    pub fn forget(&self, target: &Target, addr: &str) {
        if let Ok(mut links) = self.links.lock() {
            links.remove(addr);
        }
        self.resolver.invalidate(
            &target.app_id,
            target.namespace.as_deref().unwrap_or(&self.namespace),
        );
    }

    /// The address of the target's sidecar and the link to it.
    fn connect(&self, target: &Target) -> Result<(String, Link), String> {
        let ns = target.namespace.as_deref().unwrap_or(&self.namespace);
        let addr = self.resolver.resolve(&target.app_id, ns)?;
        let link = self.link(&target.app_id, ns, &addr)?;
        Ok((addr, link))
    }

    /// The address of the target's sidecar and the connection to it, for a
    /// proxied gRPC call.
    pub fn proxy_peer(&self, target: &Target) -> Result<(String, Arc<daprs_mtls::peer::Peer>), ApiError> {
        self.connect(target)
            .map(|(addr, link)| (addr, link.unary))
            .map_err(|e| failed(&target.app_id, e))
    }

    /// One attempt at calling the target's sidecar. A connection that
    /// failed is forgotten, so the next attempt resolves the target again.
    async fn remote_once(
        &self,
        target: &Target,
        req: &InternalInvokeRequest,
    ) -> Result<InternalInvokeResponse, Attempt> {
        let (addr, link) = self.connect(target).map_err(Attempt::Unresolved)?;
        match crate::internal::call(&link, req, self.max_body).await {
            Ok(res) => Ok(res),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tracing::debug!(target = %target.app_id, %addr, error = %status.message(), "sidecar unreachable");
                self.forget(target, &addr);
                Err(Attempt::Unreachable(addr, status))
            }
            Err(status) => Err(Attempt::Status(status)),
        }
    }

    /// Calls the target's sidecar under `policy` (the app's resiliency policy,
    /// or the built-in retries for transport failures).
    pub async fn remote(
        &self,
        target: &Target,
        req: InternalInvokeRequest,
        policy: crate::resiliency::Policy,
    ) -> Result<InternalInvokeResponse, ApiError> {
        use tower::{Layer, ServiceExt};

        use crate::resiliency::Failure;
        let shown = match &target.namespace {
            Some(ns) => format!("{}.{ns}", target.app_id),
            None => target.app_id.clone(),
        };
        let classify = |r: &Result<InternalInvokeResponse, Attempt>| match r {
            Ok(res) => failure_of(res),
            Err(Attempt::Unresolved(_)) => None,
            Err(Attempt::Unreachable(..)) => Some(Failure::Transport),
            Err(Attempt::Status(s)) => Some(Failure::Grpc(s.code() as i32)),
        };
        let once = tower::service_fn(|()| self.remote_once(target, &req));
        let res = policy.layer(classify).layer(once).oneshot(()).await;
        let stop = match res {
            Ok(res) => return Ok(res),
            Err(stop) => stop,
        };
        Err(match stop.reason() {
            Ok(Attempt::Unresolved(e)) => failed(&shown, e),
            Ok(Attempt::Unreachable(addr, status)) => failed(
                &shown,
                format!("the sidecar at {addr} is unreachable: {}", status.message()),
            ),
            Ok(Attempt::Status(status)) => {
                let mut e = failed(&shown, status.message());
                if status.code() == tonic::Code::PermissionDenied {
                    e.http = http::StatusCode::FORBIDDEN;
                    e.grpc = tonic::Code::PermissionDenied;
                } else if status.code() == tonic::Code::ResourceExhausted {
                    e.http = http::StatusCode::PAYLOAD_TOO_LARGE;
                    e.grpc = tonic::Code::ResourceExhausted;
                }
                e
            }
            Err(halt) => halted(&shown, halt),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LocalRegistry;

    #[test]
    fn methods_are_cleaned_the_same_way_everywhere() {
        let ok = |m: &str| clean_method(m).expect("valid");
        assert_eq!(ok("a/../../b/./c"), "b/c");
        assert_eq!(ok("a/b/"), "a/b/");
        assert_eq!(ok("echo/%2E%2E/admin"), "admin");
        assert_eq!(ok("echo/%2e./%2E/admin"), "admin");
        assert_eq!(ok("echo/../../../etc/passwd"), "etc/passwd");
        assert_eq!(ok("/orders//new"), "orders/new");
        // Three dots, or dots inside a name, are names.
        assert_eq!(ok("a/.../b..c/%2e%2e%2e"), "a/.../b..c/%2e%2e%2e");
        // Found by fuzzing: a multi-byte character right after two bytes.
        assert_eq!(ok("od\u{45e}x/ў/%2ў/../a"), "od\u{45e}x/ў/a");
        for bad in ["a\r\nHost: x", "a b", "a\tb", "a\u{0}"] {
            let e = clean_method(bad).expect_err(bad);
            assert_eq!(e.grpc, tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn stamps_identity_over_caller_values() {
        let inv = Invoker::new(
            "a".into(),
            "default".into(),
            Resolver::Local(LocalRegistry::new(&std::env::temp_dir())),
            1,
        );
        let mut req = InternalInvokeRequest::default();
        req.metadata.insert(
            "Dapr-Caller-App-Id".into(),
            ListStringValue {
                values: vec!["forged".into()],
            },
        );
        let target = Target::parse("b").expect("target");
        inv.stamp(&target, &mut req);
        assert_eq!(req.metadata["dapr-caller-app-id"].values, ["a"]);
        assert_eq!(req.metadata["dapr-callee-app-id"].values, ["b"]);
        assert!(!req.metadata.contains_key("Dapr-Caller-App-Id"));
        assert!(inv.is_self(&Target::parse("a").expect("t")));
        assert!(inv.is_self(&Target::parse("a.default").expect("t")));
        assert!(!inv.is_self(&Target::parse("a.other").expect("t")));
    }
}
