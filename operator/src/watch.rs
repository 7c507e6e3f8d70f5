//! Watch caches of the Dapr resources, and the stream of changes the
//! operator API forwards to sidecars.

use std::{
    collections::{HashMap, HashSet},
    fmt::Debug,
};

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

/// Turns watch events into changes: the first list is not news, an object
/// whose version did not change is not news, and after a re-list whatever
/// was not listed again was deleted while the watch was down.
pub struct Tracker {
    kind: &'static str,
    seen: HashMap<String, (Option<String>, serde_json::Value)>,
    listed: HashSet<String>,
    synced: bool,
}

impl Tracker {
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            seen: HashMap::new(),
            listed: HashSet::new(),
            synced: false,
        }
    }

    pub fn on<K: Resource + Serialize>(&mut self, event: &watcher::Event<K>) -> Vec<Change> {
        let (obj, deleted) = match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => (o, false),
            watcher::Event::Delete(o) => (o, true),
            watcher::Event::Init => {
                self.listed.clear();
                return vec![];
            }
            watcher::Event::InitDone => {
                let mut out = vec![];
                if self.synced {
                    let gone: Vec<String> = self
                        .seen
                        .keys()
                        .filter(|k| !self.listed.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        if let Some((_, old)) = self.seen.remove(&key) {
                            let namespace = old["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string();
                            out.push(Change {
                                kind: self.kind,
                                namespace,
                                old: Some(old),
                                new: None,
                            });
                        }
                    }
                }
                self.synced = true;
                return out;
            }
        };
        let key = obj
            .uid()
            .unwrap_or_else(|| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()));
        let listing = matches!(event, watcher::Event::InitApply(_));
        if listing {
            self.listed.insert(key.clone());
        }
        let value = serde_json::to_value(obj).unwrap_or_default();
        let version = obj.resource_version();
        let old = if deleted {
            self.seen.remove(&key)
        } else {
            self.seen.insert(key, (version.clone(), value.clone()))
        };
        let first_list = !self.synced && listing;
        if first_list || (!deleted && old.as_ref().is_some_and(|(v, _)| *v == version)) {
            return vec![];
        }
        vec![Change {
            kind: self.kind,
            namespace: obj.namespace().unwrap_or_default(),
            old: old.map(|(_, v)| v).or_else(|| deleted.then(|| value.clone())),
            new: (!deleted).then_some(value),
        }]
    }
}

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
        let mut tracker = Tracker::new(kind);
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => {
                    for change in tracker.on(&e) {
                        let _ = changes.send(change);
                    }
                }
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            }
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
