//! `dapr.proto.operator.v1.Operator`: each sidecar, identified by the SPIFFE
//! ID of its client certificate, gets the resources of its namespace that
//! it may use, listed from the watch caches and streamed as they change.

use std::pin::Pin;

use base64::Engine;
use daprs_api::v1alpha1::{Component, Configuration, HTTPEndpoint, Resiliency};
use daprs_api::v2alpha1::Subscription;
use daprs_proto::operator::{
    ComponentUpdateEvent, ComponentUpdateRequest, GetConfigurationRequest, GetConfigurationResponse,
    GetResiliencyRequest, GetResiliencyResponse, HttpEndpointUpdateEvent, HttpEndpointUpdateRequest,
    ListComponentResponse, ListComponentsRequest, ListHttpEndpointsRequest, ListHttpEndpointsResponse,
    ListResiliencyRequest, ListResiliencyResponse, ListSubscriptionsRequest, ListSubscriptionsResponse,
    ResourceEventType, SubscriptionUpdateEvent, SubscriptionUpdateRequest, operator_server::Operator,
};
use futures_util::Stream;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, runtime::reflector::Store};
use serde_json::Value;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

pub use daprs_mtls::PeerId;

/// Whether `scopes` admit `app_id` (empty admits everyone).
fn in_scope(scopes: &[String], app_id: &str) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| s == app_id)
}

/// How a change looks to one app: what to send, and as what.
pub fn transition(
    old_scopes: Option<&[String]>,
    new_scopes: Option<&[String]>,
    deleted: bool,
    app_id: &str,
) -> Option<(bool, ResourceEventType)> {
    let was = old_scopes.is_some_and(|s| in_scope(s, app_id));
    let is = !deleted && new_scopes.is_some_and(|s| in_scope(s, app_id));
    match (was, is) {
        // New to this app (created, or its scopes now include the app).
        (false, true) => Some((true, ResourceEventType::Created)),
        (true, true) => Some((true, ResourceEventType::Updated)),
        // Gone for this app: the old object goes out as deleted.
        (true, false) => Some((false, ResourceEventType::Deleted)),
        (false, false) => None,
    }
}

/// A change to one resource, as the watchers saw it.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: &'static str,
    pub namespace: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

fn scopes_of(v: &Value) -> Vec<String> {
    // Components keep scopes at the top level; the others in spec.
    let s = if v.get("scopes").is_some() {
        &v["scopes"]
    } else {
        &v["spec"]["scopes"]
    };
    s.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// A Secret's data by key.
pub type SecretData = std::collections::BTreeMap<String, Vec<u8>>;

/// Replaces Kubernetes `secretKeyRef`s in `items` (Component metadata or
/// HTTPEndpoint headers) with the JSON string `base64(value)`, as sidecars
/// expect. `fetch` returns a Secret's data; a missing key leaves the entry
/// as it is, a missing Secret is an error.
pub fn resolve_refs(items: &mut [Value], fetch: &dyn Fn(&str) -> Option<SecretData>) -> Result<(), String> {
    for item in items {
        let Some(name) = item["secretKeyRef"]["name"].as_str().map(str::to_string) else {
            continue;
        };
        let key = item["secretKeyRef"]["key"]
            .as_str()
            .filter(|k| !k.is_empty())
            .unwrap_or(&name)
            .to_string();
        let data = fetch(&name).ok_or_else(|| format!("secret {name:?} does not exist"))?;
        if let Some(raw) = data.get(&key) {
            item["value"] = Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
        }
    }
    Ok(())
}

/// The watch caches the API answers from.
#[derive(Clone)]
pub struct Caches {
    pub components: Store<Component>,
    pub configurations: Store<Configuration>,
    pub subscriptions: Store<Subscription>,
    pub resiliencies: Store<Resiliency>,
    pub http_endpoints: Store<HTTPEndpoint>,
}

pub struct OperatorApi {
    pub caches: Caches,
    pub kube: kube::Client,
    pub changes: broadcast::Sender<Change>,
}

fn caller<T>(req: &Request<T>, namespace: &str) -> Result<String, Status> {
    let id = req
        .extensions()
        .get::<PeerId>()
        .and_then(|p| p.0.clone())
        .ok_or_else(|| Status::unauthenticated("a client certificate with a SPIFFE ID is required"))?;
    let peer = daprs_mtls::SpiffeId::parse(&id)
        .ok_or_else(|| Status::permission_denied(format!("{id:?} is not an app identity")))?;
    if namespace.is_empty() || namespace != peer.namespace {
        return Err(Status::permission_denied(format!(
            "the caller is in namespace {:?} and may not read {namespace:?}",
            peer.namespace
        )));
    }
    Ok(peer.app_id)
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

/// Secrets read so far while answering one request, by name (None: the
/// Secret does not exist).
type SecretCache = std::collections::BTreeMap<String, Option<SecretData>>;

/// Reads the Secrets that the `secretKeyRef`s at `pointer` (in `obj`) name,
/// through `cache`, then resolves them. Objects that use a secret store
/// other than Kubernetes are left for the sidecar.
async fn resolve_secrets(
    kube: &kube::Client,
    namespace: &str,
    mut obj: Value,
    pointer: &str,
    cache: &mut SecretCache,
) -> Result<Value, String> {
    let store = obj["auth"]["secretStore"].as_str().unwrap_or_default();
    if !(store.is_empty() || store == "kubernetes") {
        return Ok(obj);
    }
    let Some(Value::Array(items)) = obj.pointer_mut(pointer) else {
        return Ok(obj);
    };
    let api: Api<Secret> = Api::namespaced(kube.clone(), namespace);
    for item in items.iter() {
        if let Some(name) = item["secretKeyRef"]["name"].as_str()
            && !cache.contains_key(name)
        {
            let s = api
                .get_opt(name)
                .await
                .map_err(|e| format!("reading secret {name:?}: {e}"))?;
            let data = s.map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<SecretData>()
            });
            cache.insert(name.to_string(), data);
        }
    }
    resolve_refs(items, &|name| cache.get(name).cloned().flatten())?;
    Ok(obj)
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Streams the changes of `kind` in `namespace` as `app_id` should see them.
/// With `secrets` (a client and where the `secretKeyRef`s are), each event
/// has its Kubernetes secrets resolved as a list answer has; an event whose
/// Secrets cannot be read is left out and logged (the sidecar catches up
/// with its next list).
fn updates<T: Send + 'static>(
    changes: &broadcast::Sender<Change>,
    kind: &'static str,
    namespace: String,
    app_id: String,
    secrets: Option<(kube::Client, &'static str)>,
    make: impl Fn(Vec<u8>, ResourceEventType) -> T + Send + 'static,
) -> EventStream<T> {
    let rx = changes.subscribe();
    Box::pin(futures_util::stream::unfold(
        (rx, namespace, app_id, make),
        move |(mut rx, ns, app, make)| {
            let secrets = secrets.clone();
            async move {
                loop {
                    let change = match rx.recv().await {
                        Ok(c) => c,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((
                                Err(Status::data_loss(
                                    "the stream fell behind; list again and reconnect",
                                )),
                                (rx, ns, app, make),
                            ));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    if change.kind != kind || change.namespace != ns {
                        continue;
                    }
                    let old_scopes = change.old.as_ref().map(scopes_of);
                    let new_scopes = change.new.as_ref().map(scopes_of);
                    let Some((send_new, ty)) = transition(
                        old_scopes.as_deref(),
                        new_scopes.as_deref(),
                        change.new.is_none(),
                        &app,
                    ) else {
                        continue;
                    };
                    let obj = if send_new { change.new } else { change.old };
                    let Some(mut obj) = obj else { continue };
                    if let Some((kube, pointer)) = &secrets {
                        match resolve_secrets(kube, &ns, obj, pointer, &mut SecretCache::new()).await {
                            Ok(resolved) => obj = resolved,
                            Err(e) => {
                                tracing::warn!(kind, namespace = %ns, error = %e, "change not sent");
                                continue;
                            }
                        }
                    }
                    let bytes = serde_json::to_vec(&obj).unwrap_or_default();
                    return Some((Ok(make(bytes, ty)), (rx, ns, app, make)));
                }
            }
        },
    ))
}

#[tonic::async_trait]
impl Operator for OperatorApi {
    type ComponentUpdateStream = EventStream<ComponentUpdateEvent>;
    type SubscriptionUpdateStream = EventStream<SubscriptionUpdateEvent>;
    type HTTPEndpointUpdateStream = EventStream<HttpEndpointUpdateEvent>;

    async fn list_components(
        &self,
        req: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentResponse>, Status> {
        let ns = req.get_ref().namespace.clone();
        let app = caller(&req, &ns)?;
        let mut out = Vec::new();
        let mut secrets = SecretCache::new();
        for c in self.caches.components.state() {
            if c.namespace().as_deref() != Some(ns.as_str()) || !c.in_scope(&app) {
                continue;
            }
            let v = serde_json::to_value(&*c).map_err(|e| Status::internal(e.to_string()))?;
            let v = resolve_secrets(&self.kube, &ns, v, "/spec/metadata", &mut secrets)
                .await
                .map_err(|e| Status::internal(format!("component {}: {e}", c.name_any())))?;
            out.push(json(&v)?.into());
        }
        Ok(Response::new(ListComponentResponse { components: out }))
    }

    async fn component_update(
        &self,
        req: Request<ComponentUpdateRequest>,
    ) -> Result<Response<Self::ComponentUpdateStream>, Status> {
        let ns = req.get_ref().namespace.clone();
        let app = caller(&req, &ns)?;
        Ok(Response::new(updates(
            &self.changes,
            "Component",
            ns,
            app,
            Some((self.kube.clone(), "/spec/metadata")),
            |component, ty| ComponentUpdateEvent {
                component: component.into(),
                r#type: ty as i32,
            },
        )))
    }

    async fn get_configuration(
        &self,
        req: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        let ns = req.get_ref().namespace.clone();
        caller(&req, &ns)?;
        let name = &req.get_ref().name;
        let found = self
            .caches
            .configurations
            .state()
            .into_iter()
            .find(|c| c.namespace().as_deref() == Some(ns.as_str()) && &c.name_any() == name)
            .ok_or_else(|| Status::not_found(format!("Configuration {ns}/{name} does not exist")))?;
        Ok(Response::new(GetConfigurationResponse {
            configuration: json(&*found)?.into(),
        }))
    }

    async fn list_subscriptions(
        &self,
        _req: Request<()>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        Err(Status::permission_denied(
            "ListSubscriptions has no namespace; use ListSubscriptionsV2",
        ))
    }

    async fn get_resiliency(
        &self,
        req: Request<GetResiliencyRequest>,
    ) -> Result<Response<GetResiliencyResponse>, Status> {
        let ns = req.get_ref().namespace.clone();
        caller(&req, &ns)?;
        let name = &req.get_ref().name;
        let found = self
            .caches
            .resiliencies
            .state()
            .into_iter()
            .find(|r| r.namespace().as_deref() == Some(ns.as_str()) && &r.name_any() == name)
            .ok_or_else(|| Status::not_found(format!("Resiliency {ns}/{name} does not exist")))?;
        Ok(Response::new(GetResiliencyResponse {
            resiliency: json(&*found)?.into(),
        }))
    }

    async fn list_resiliency(
        &self,
        req: Request<ListResiliencyRequest>,
    ) -> Result<Response<ListResiliencyResponse>, Status> {
        let ns = req.get_ref().namespace.clone();
        caller(&req, &ns)?;
        let mut out = Vec::new();
        for r in self.caches.resiliencies.state() {
            if r.namespace().as_deref() == Some(ns.as_str()) {
                out.push(json(&*r)?.into());
            }
        }
        Ok(Response::new(ListResiliencyResponse { resiliencies: out }))
    }

    async fn list_subscriptions_v2(
        &self,
        req: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let ns = req.get_ref().namespace.clone();
        caller(&req, &ns)?;
        let mut out = Vec::new();
        for s in self.caches.subscriptions.state() {
            if s.namespace().as_deref() == Some(ns.as_str()) {
                out.push(json(&*s)?.into());
            }
        }
        Ok(Response::new(ListSubscriptionsResponse { subscriptions: out }))
    }

    async fn subscription_update(
        &self,
        req: Request<SubscriptionUpdateRequest>,
    ) -> Result<Response<Self::SubscriptionUpdateStream>, Status> {
        let ns = req.get_ref().namespace.clone();
        let app = caller(&req, &ns)?;
        Ok(Response::new(updates(
            &self.changes,
            "Subscription",
            ns,
            app,
            // Subscriptions carry no secrets; they go out as they are.
            None,
            |subscription, ty| SubscriptionUpdateEvent {
                subscription: subscription.into(),
                r#type: ty as i32,
            },
        )))
    }

    async fn list_http_endpoints(
        &self,
        req: Request<ListHttpEndpointsRequest>,
    ) -> Result<Response<ListHttpEndpointsResponse>, Status> {
        let ns = req.get_ref().namespace.clone();
        caller(&req, &ns)?;
        let mut out = Vec::new();
        let mut secrets = SecretCache::new();
        for e in self.caches.http_endpoints.state() {
            if e.namespace().as_deref() != Some(ns.as_str()) {
                continue;
            }
            let v = serde_json::to_value(&*e).map_err(|e| Status::internal(e.to_string()))?;
            let v = resolve_secrets(&self.kube, &ns, v, "/spec/headers", &mut secrets)
                .await
                .map_err(|err| Status::internal(format!("HTTPEndpoint {}: {err}", e.name_any())))?;
            out.push(json(&v)?.into());
        }
        Ok(Response::new(ListHttpEndpointsResponse { http_endpoints: out }))
    }

    async fn http_endpoint_update(
        &self,
        req: Request<HttpEndpointUpdateRequest>,
    ) -> Result<Response<Self::HTTPEndpointUpdateStream>, Status> {
        let ns = req.get_ref().namespace.clone();
        let app = caller(&req, &ns)?;
        Ok(Response::new(updates(
            &self.changes,
            "HTTPEndpoint",
            ns,
            app,
            Some((self.kube.clone(), "/spec/headers")),
            |http_endpoints, ty| HttpEndpointUpdateEvent {
                http_endpoints: http_endpoints.into(),
                r#type: ty as i32,
            },
        )))
    }
}
