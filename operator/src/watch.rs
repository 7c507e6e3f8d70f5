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
///
/// The last version of each object is kept as JSON text: a parsed value
/// takes several times the memory, and it is only needed when it changes.
pub struct Tracker {
    kind: &'static str,
    seen: HashMap<String, (Option<String>, Box<str>)>,
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
                            let old: serde_json::Value = serde_json::from_str(&old).unwrap_or_default();
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
            let text = serde_json::to_string(&value).unwrap_or_default().into_boxed_str();
            self.seen.insert(key, (version.clone(), text))
        };
        let first_list = !self.synced && listing;
        if first_list || (!deleted && old.as_ref().is_some_and(|(v, _)| *v == version)) {
            return vec![];
        }
        vec![Change {
            kind: self.kind,
            namespace: obj.namespace().unwrap_or_default(),
            old: old
                .and_then(|(_, text)| serde_json::from_str(&text).ok())
                .or_else(|| deleted.then(|| value.clone())),
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
    // Field-manager bookkeeping is of no use to sidecars; dropping it keeps
    // the caches small.
    let objects = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .modify(|o: &mut K| o.managed_fields_mut().clear());
    let stream = reflector::reflector(writer, objects);
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
