//! Watch caches of the Dapr resources, and the stream of changes the
//! operator API forwards to sidecars.

use std::{collections::HashMap, fmt::Debug};

use daprs_api::{
    v1alpha1::{Component, Configuration, HTTPEndpoint, Resiliency},
    v2alpha1::Subscription,
};
use futures_util::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::broadcast;

use crate::api::{Caches, Change};

/// Caches `K` cluster-wide and reports every change after the initial list.
fn cache<K>(client: &kube::Client, kind: &'static str, changes: broadcast::Sender<Change>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    );
    tokio::spawn(async move {
        let mut seen: HashMap<String, (Option<String>, serde_json::Value)> = HashMap::new();
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(kind, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            let (obj, deleted, initial) = match &event {
                watcher::Event::Apply(o) => (o, false, false),
                watcher::Event::InitApply(o) => (o, false, true),
                watcher::Event::Delete(o) => (o, true, false),
                watcher::Event::Init | watcher::Event::InitDone => continue,
            };
            let key = obj
                .uid()
                .unwrap_or_else(|| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()));
            let value = serde_json::to_value(obj).unwrap_or_default();
            let version = obj.resource_version();
            let old = if deleted {
                seen.remove(&key)
            } else {
                seen.insert(key, (version.clone(), value.clone()))
            };
            // The initial list is not news, nor a resync of an unchanged object.
            if initial || (!deleted && old.as_ref().is_some_and(|(v, _)| *v == version)) {
                continue;
            }
            let _ = changes.send(Change {
                kind,
                namespace: obj.namespace().unwrap_or_default(),
                old: old.map(|(_, v)| v).or_else(|| deleted.then(|| value.clone())),
                new: (!deleted).then_some(value),
            });
        }
    });
    reader
}

/// Starts every cache; changes go to `changes`.
pub fn start(client: &kube::Client, changes: &broadcast::Sender<Change>) -> Caches {
    Caches {
        components: cache::<Component>(client, "Component", changes.clone()),
        configurations: cache::<Configuration>(client, "Configuration", changes.clone()),
        subscriptions: cache::<Subscription>(client, "Subscription", changes.clone()),
        resiliencies: cache::<Resiliency>(client, "Resiliency", changes.clone()),
        http_endpoints: cache::<HTTPEndpoint>(client, "HTTPEndpoint", changes.clone()),
    }
}
