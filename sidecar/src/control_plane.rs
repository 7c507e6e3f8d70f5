//! Resources from the operator (Kubernetes mode): the app's components and
//! its Configuration, read over mutual TLS with the workload certificate,
//! and component changes applied while the sidecar runs.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::Engine;
use daprs_api::v1alpha1::{Component, Configuration};
use daprs_proto::operator::{
    ComponentUpdateRequest, GetConfigurationRequest, ListComponentsRequest, ListSubscriptionsRequest,
    ResourceEventType, SubscriptionUpdateRequest, operator_client::OperatorClient,
};
use tonic::transport::Channel;

use crate::{identity::Svid, runtime::Runtime, settings::ControlPlane};

/// How long start-up waits for an operator that does not answer.
const PATIENCE: Duration = Duration::from_secs(30);

/// A connection to the operator API.
#[derive(Clone)]
pub struct Operator {
    client: OperatorClient<Channel>,
    address: String,
    namespace: String,
}

/// Reads a Component the operator sent. The operator has already read the
/// Kubernetes Secrets that `secretKeyRef`s name (when the component uses no
/// other secret store) and put each value in as base64; those are decoded
/// here so that the rest of the sidecar sees plain values.
pub fn decode_component(json: &[u8]) -> Result<Component, String> {
    let mut c: Component = serde_json::from_slice(json)
        .map_err(|e| format!("the operator sent a Component that does not parse: {e}"))?;
    let store = c.secret_store();
    if !(store.is_empty() || store == "kubernetes") {
        return Ok(c);
    }
    let name = c.metadata.name.clone().unwrap_or_default();
    for item in &mut c.spec.spec.metadata {
        let (Some(_), Some(serde_json::Value::String(encoded))) = (&item.secret_key_ref, &item.value) else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| {
                format!(
                    "component {name}: metadata {} holds a secret that is not base64",
                    item.name
                )
            })?;
        let plain = String::from_utf8(raw).map_err(|_| {
            format!(
                "component {name}: the secret in metadata {} is not UTF-8 text",
                item.name
            )
        })?;
        item.value = Some(serde_json::Value::String(plain));
        item.secret_key_ref = None;
    }
    Ok(c)
}

impl Operator {
    pub fn connect(cp: &ControlPlane, svid: &Svid, address: &str, namespace: &str) -> Result<Self, String> {
        let config = daprs_mtls::tls::client_config(
            svid.roots.clone(),
            crate::identity::control_plane_id(cp, "dapr-operator"),
            Some(svid.identity.clone()),
        )?;
        let channel = daprs_mtls::net::channel(address, Some(Arc::new(config)))?;
        Ok(Self {
            client: OperatorClient::new(channel).max_decoding_message_size(64 << 20),
            address: address.into(),
            namespace: namespace.into(),
        })
    }

    /// Retries `call` while the operator is unreachable, for up to [`PATIENCE`].
    async fn patiently<T, F, Fut>(&self, what: &str, call: F) -> Result<T, String>
    where
        F: Fn(OperatorClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match call(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %s.message(), "operator not reachable yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(s) => {
                    return Err(format!(
                        "{what} from the operator at {}: {}: {}",
                        self.address,
                        s.code(),
                        s.message()
                    ));
                }
            }
        }
    }

    /// The components of this namespace that are in this app's scope.
    pub async fn components(&self) -> Result<Vec<Component>, String> {
        let req = ListComponentsRequest {
            namespace: self.namespace.clone(),
        };
        let list = self
            .patiently("listing components", |mut c| {
                let req = req.clone();
                async move { c.list_components(req).await }
            })
            .await?;
        decode_all(&list.into_inner().components)
    }

    /// Applies the operator's component changes to the running sidecar.
    /// Each time the stream opens (at start, and after it breaks) a fresh
    /// list catches up with what changed while it was closed. `known` are
    /// the components loaded at start. Runs until dropped.
    pub async fn follow(&self, rt: Arc<Runtime>, known: Vec<Component>) {
        let mut known: BTreeMap<String, Component> = known
            .into_iter()
            .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
            .collect();
        loop {
            let req = ComponentUpdateRequest {
                namespace: self.namespace.clone(),
            };
            let mut stream = match self.client.clone().component_update(req).await {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    tracing::debug!(error = %s.message(), "component updates unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            // Listed after the stream opened, so no change falls between.
            let req = ListComponentsRequest {
                namespace: self.namespace.clone(),
            };
            match self.client.clone().list_components(req).await {
                Ok(list) => match decode_all(&list.into_inner().components) {
                    Ok(list) => reconcile(&rt, &mut known, list).await,
                    Err(e) => tracing::warn!(error = %e, "cannot catch up on component changes"),
                },
                Err(s) => tracing::warn!(error = %s.message(), "cannot catch up on component changes"),
            }
            loop {
                match stream.message().await {
                    Ok(Some(event)) => match decode_component(&event.component) {
                        Ok(c) => {
                            let deleted = event.r#type == ResourceEventType::Deleted as i32;
                            apply(&rt, &mut known, c, deleted).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "component update ignored"),
                    },
                    Ok(None) => break,
                    Err(s) => {
                        tracing::debug!(error = %s.message(), "component update stream broke");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The Resiliency documents of this namespace (their scopes are applied by the caller).
    pub async fn resiliencies(&self) -> Result<Vec<daprs_api::v1alpha1::Resiliency>, String> {
        let req = daprs_proto::operator::ListResiliencyRequest {
            namespace: self.namespace.clone(),
        };
        let res = self
            .patiently("listing resiliency policies", |mut c| {
                let req = req.clone();
                async move { c.list_resiliency(req).await }
            })
            .await?;
        decode_json_list("Resiliency", &res.into_inner().resiliencies)
    }

    /// The v2alpha1 Subscriptions of this namespace (their scopes are applied
    /// by the caller); one that does not parse is logged and left out.
    pub async fn subscriptions(&self) -> Result<Vec<daprs_api::v2alpha1::Subscription>, String> {
        let req = ListSubscriptionsRequest {
            namespace: self.namespace.clone(),
        };
        let res = self
            .patiently("listing subscriptions", |mut c| {
                let req = req.clone();
                async move { c.list_subscriptions_v2(req).await }
            })
            .await?;
        Ok(res
            .into_inner()
            .subscriptions
            .iter()
            .filter_map(|b| match serde_json::from_slice(b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "the operator sent a Subscription that does not parse; ignored");
                    None
                }
            })
            .collect())
    }

    /// Applies the operator's Subscription changes to the running
    /// subscriptions, as [`Operator::follow`] does for components: each
    /// time the stream opens, a fresh list catches up. Runs until dropped.
    pub async fn follow_subscriptions(
        &self,
        rt: Arc<Runtime>,
        subscribers: Arc<tokio::sync::Mutex<crate::pubsub::delivery::Subscribers>>,
    ) {
        use daprs_api::{Resource, v2alpha1::Subscription};
        let declared = |s: Subscription| {
            let mut errors = Vec::new();
            let subs = crate::pubsub::subscriptions::declarative(
                &[Resource::SubscriptionV2(s)],
                &rt.app_id,
                &mut errors,
            );
            for e in errors {
                tracing::error!(error = %e, "subscription ignored");
            }
            subs
        };
        loop {
            let req = SubscriptionUpdateRequest {
                namespace: self.namespace.clone(),
            };
            let mut stream = match self.client.clone().subscription_update(req).await {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    tracing::debug!(error = %s.message(), "subscription updates unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            match self.subscriptions().await {
                Ok(list) => {
                    let mut subs = subscribers.lock().await;
                    let mut gone = subs.declared();
                    for s in list {
                        let name = s.metadata.name.clone().unwrap_or_default();
                        gone.remove(&name);
                        subs.replace(&rt, &name, declared(s)).await;
                    }
                    for name in gone {
                        subs.replace(&rt, &name, Vec::new()).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot catch up on subscription changes"),
            }
            loop {
                match stream.message().await {
                    Ok(Some(event)) => match serde_json::from_slice::<Subscription>(&event.subscription) {
                        Ok(s) => {
                            let name = s.metadata.name.clone().unwrap_or_default();
                            let subs = if event.r#type == ResourceEventType::Deleted as i32 {
                                Vec::new()
                            } else {
                                declared(s)
                            };
                            tracing::info!(subscription = %name, "subscription changed");
                            subscribers.lock().await.replace(&rt, &name, subs).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "subscription update ignored"),
                    },
                    Ok(None) => break,
                    Err(s) => {
                        tracing::debug!(error = %s.message(), "subscription update stream broke");
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The HTTPEndpoints of this namespace, secrets resolved by the operator.
    pub async fn http_endpoints(&self) -> Result<Vec<daprs_api::v1alpha1::HTTPEndpoint>, String> {
        let req = daprs_proto::operator::ListHttpEndpointsRequest {
            namespace: self.namespace.clone(),
        };
        let res = self
            .patiently("listing HTTP endpoints", |mut c| {
                let req = req.clone();
                async move { c.list_http_endpoints(req).await }
            })
            .await?;
        decode_json_list("HTTPEndpoint", &res.into_inner().http_endpoints)
    }

    /// The Configuration named by `--config`.
    pub async fn configuration(&self, name: &str) -> Result<Configuration, String> {
        let req = GetConfigurationRequest {
            name: name.into(),
            namespace: self.namespace.clone(),
        };
        let res = self
            .patiently(&format!("reading Configuration {name}"), |mut c| {
                let req = req.clone();
                async move { c.get_configuration(req).await }
            })
            .await?;
        serde_json::from_slice(&res.into_inner().configuration)
            .map_err(|e| format!("the operator sent a Configuration that does not parse: {e}"))
    }
}

/// Resources the operator sends as JSON, one per entry.
fn decode_json_list<T: serde::de::DeserializeOwned>(
    kind: &str,
    list: &[bytes::Bytes],
) -> Result<Vec<T>, String> {
    list.iter()
        .map(|b| {
            serde_json::from_slice(b)
                .map_err(|e| format!("the operator sent a {kind} that does not parse: {e}"))
        })
        .collect()
}

fn decode_all(list: &[bytes::Bytes]) -> Result<Vec<Component>, String> {
    list.iter().map(|b| decode_component(b)).collect()
}

/// Brings the loaded components in line with a full list.
async fn reconcile(rt: &Runtime, known: &mut BTreeMap<String, Component>, list: Vec<Component>) {
    let names: std::collections::BTreeSet<String> = list
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    let gone: Vec<Component> = known
        .iter()
        .filter(|(name, _)| !names.contains(*name))
        .map(|(_, c)| c.clone())
        .collect();
    for c in gone {
        apply(rt, known, c, true).await;
    }
    for c in list {
        apply(rt, known, c, false).await;
    }
}

/// One change. A new or changed component is initialised before it
/// replaces the old one: if it fails, the old one stays in use and the
/// failure is logged, so a bad edit never takes a working store away.
async fn apply(rt: &Runtime, known: &mut BTreeMap<String, Component>, c: Component, deleted: bool) {
    let name = c.metadata.name.clone().unwrap_or_default();
    let kind = c.spec.spec.type_.clone();
    if deleted {
        known.remove(&name);
        if rt.loaded.write().is_ok_and(|mut l| l.remove(&name)) {
            tracing::info!(component = %name, r#type = %kind, "component removed");
            // Subscriptions and input bindings on it stop; each listener
            // picks the names of its own block.
            let _ = rt.components_changed.send(name);
        }
        return;
    }
    let same = |old: &Component| serde_json::to_value(&old.spec).ok() == serde_json::to_value(&c.spec).ok();
    if known.get(&name).is_some_and(same) {
        return;
    }
    let all: Vec<&Component> = known
        .values()
        .filter(|k| k.metadata.name != c.metadata.name)
        .chain(std::iter::once(&c))
        .collect();
    match crate::components::init(&rt.settings, &rt.config, &c, &all).await {
        Ok((info, block)) => {
            if let Ok(mut l) = rt.loaded.write() {
                l.put(info, block);
            }
            tracing::info!(component = %name, r#type = %kind, "component loaded");
            rt.metrics.component_started(&kind);
            // Subscriptions and input bindings move to the new component.
            let _ = rt.components_changed.send(name.clone());
            known.insert(name, c);
        }
        Err(reason) => {
            rt.metrics.component_failed(&kind, &name, "init");
            tracing::error!(component = %name, r#type = %kind, %reason, "updated component failed to initialise; the previous one stays in use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_kubernetes_secrets_are_decoded() {
        let json = serde_json::json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "cache", "namespace": "prod"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "redisHost", "value": "redis:6379"},
                {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}, "value": "czNjcmV0"},
                {"name": "unresolved", "secretKeyRef": {"name": "gone"}}]}});
        let c = decode_component(json.to_string().as_bytes()).expect("decoded");
        let m = &c.spec.spec.metadata;
        assert_eq!(m[0].inline_value().as_deref(), Some("redis:6379"));
        assert_eq!(m[1].inline_value().as_deref(), Some("s3cret"));
        assert!(m[1].secret_key_ref.is_none());
        // A missing secret stays a reference, and fails where it is used.
        assert!(m[2].secret_key_ref.is_some() && m[2].value.is_none());
    }

    #[test]
    fn other_secret_stores_are_left_alone_and_bad_input_is_an_error() {
        let json = serde_json::json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "cache"}, "auth": {"secretStore": "vault"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "p", "secretKeyRef": {"name": "redis"}, "value": "czNjcmV0"}]}});
        let c = decode_component(json.to_string().as_bytes()).expect("decoded");
        assert_eq!(
            c.spec.spec.metadata[0].inline_value().as_deref(),
            Some("czNjcmV0")
        );
        let bad = serde_json::json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "cache"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "p", "secretKeyRef": {"name": "redis"}, "value": "%%%"}]}});
        assert!(
            decode_component(bad.to_string().as_bytes())
                .expect_err("not base64")
                .contains("not base64")
        );
        assert!(decode_component(b"{").is_err());
    }
}
