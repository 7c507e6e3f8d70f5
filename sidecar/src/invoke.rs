//! Service invocation routing: stamps caller identity, then hands the call to
//! the local app (own app-id) or to the target's sidecar over the internal API,
//! retrying connection failures as Dapr's built-in policy does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
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
pub type Metadata = HashMap<String, ListStringValue>;

/// Retries after a connection failure (Dapr's `DaprBuiltInServiceRetries`).
const RETRIES: u32 = 3;
const RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Routes invocations to other sidecars.
pub struct Invoker {
    /// This sidecar's app-id.
    pub app_id: String,
    /// This sidecar's namespace.
    pub namespace: String,
    resolver: Resolver,
    channels: Mutex<HashMap<String, Channel>>,
    max_body: usize,
    /// This sidecar's certificate, when calls between sidecars use mutual TLS.
    mtls: Option<Arc<Svid>>,
}

/// Sets one metadata entry, replacing any spelling of the same key.
pub(crate) fn set(meta: &mut Metadata, key: &str, value: &str) {
    meta.retain(|k, _| !k.eq_ignore_ascii_case(key));
    meta.insert(
        key.to_string(),
        ListStringValue {
            values: vec![value.to_string()],
        },
    );
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
            channels: Mutex::default(),
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

    fn channel(&self, app_id: &str, namespace: &str, addr: &str) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| "channel cache lock poisoned".to_string())?;
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
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
        let channel = daprs_mtls::net::channel(addr, tls)?;
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn forget(&self, target: &Target, addr: &str) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.remove(addr);
        }
        self.resolver.invalidate(
            &target.app_id,
            target.namespace.as_deref().unwrap_or(&self.namespace),
        );
    }

    /// Calls the target's sidecar.
    pub async fn remote(
        &self,
        target: &Target,
        req: InternalInvokeRequest,
    ) -> Result<InternalInvokeResponse, ApiError> {
        let ns = target.namespace.as_deref().unwrap_or(&self.namespace);
        let shown = match &target.namespace {
            Some(ns) => format!("{}.{ns}", target.app_id),
            None => target.app_id.clone(),
        };
        let mut attempt = 0;
        loop {
            let addr = self
                .resolver
                .resolve(&target.app_id, ns)
                .map_err(|e| failed(&shown, e))?;
            let channel = self
                .channel(&target.app_id, ns, &addr)
                .map_err(|e| failed(&shown, e))?;
            match crate::internal::call(channel, req.clone(), self.max_body).await {
                Ok(res) => return Ok(res),
                Err(status) if status.code() == tonic::Code::Unavailable && attempt < RETRIES => {
                    tracing::debug!(target = %shown, %addr, error = %status.message(), attempt, "retrying invocation");
                    self.forget(target, &addr);
                    attempt += 1;
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    self.forget(target, &addr);
                    return Err(failed(
                        &shown,
                        format!("the sidecar at {addr} is unreachable: {}", status.message()),
                    ));
                }
                Err(status) => {
                    let mut e = failed(&shown, status.message());
                    if status.code() == tonic::Code::PermissionDenied {
                        e.http = http::StatusCode::FORBIDDEN;
                        e.grpc = tonic::Code::PermissionDenied;
                    } else if status.code() == tonic::Code::ResourceExhausted {
                        e.http = http::StatusCode::PAYLOAD_TOO_LARGE;
                        e.grpc = tonic::Code::ResourceExhausted;
                    }
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LocalRegistry;

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
