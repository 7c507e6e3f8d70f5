//! The configuration building block, shared by the HTTP and gRPC APIs:
//! reads, subscriptions under ids that unsubscribe them, and — for HTTP
//! subscribers — pushing each change to the app at
//! `POST /configuration/{store}/{key}`.

use std::{collections::HashMap, sync::Arc};

use daprs_components::{
    Metadata,
    configuration::{ConfigurationStore, Item, Items, Watch},
};
use daprs_proto::common::http_extension::Verb;
use http::StatusCode;
use serde::Serialize;
use tokio::sync::oneshot;
use tonic::Code;

use crate::{
    error::ApiError,
    runtime::{Lookup, Runtime},
};

/// Running subscriptions: id → (store, what stops it).
#[derive(Default)]
pub struct Watches(std::sync::Mutex<HashMap<String, (String, oneshot::Sender<()>)>>);

/// A subscription handed to an API: its id, its changes, and the signal
/// that it was unsubscribed.
pub struct Subscription {
    /// The id `unsubscribe` takes.
    pub id: String,
    /// The store's changes.
    pub watch: Watch,
    /// Resolves when the subscription is unsubscribed.
    pub stopped: oneshot::Receiver<()>,
}

/// An item as the HTTP API writes it: empty fields left out.
#[derive(Serialize)]
pub struct ItemJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    value: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    metadata: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> From<&'a Item> for ItemJson<'a> {
    fn from(i: &'a Item) -> Self {
        Self {
            value: &i.value,
            version: &i.version,
            metadata: &i.metadata,
        }
    }
}

/// Items as the HTTP API writes them.
pub fn items_json(items: &Items) -> serde_json::Value {
    serde_json::Value::Object(
        items
            .iter()
            .map(|(k, i)| {
                (
                    k.clone(),
                    serde_json::to_value(ItemJson::from(i)).unwrap_or_default(),
                )
            })
            .collect(),
    )
}

impl Runtime {
    fn config_store(&self, name: &str) -> Result<Arc<dyn ConfigurationStore>, ApiError> {
        const LOOKUP: Lookup = Lookup {
            what: "configuration store",
            not_configured: "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
            not_found: "ERR_CONFIGURATION_STORE_NOT_FOUND",
        };
        self.lookup(name, &LOOKUP, |l| &l.configs)
    }

    /// The items of `keys` (all when empty).
    pub async fn get_configuration(
        &self,
        store: &str,
        keys: &[String],
        metadata: &Metadata,
    ) -> Result<Items, ApiError> {
        let s = self.config_store(store)?;
        self.timed(
            crate::metrics::Block::Configuration,
            store,
            "get",
            self.outbound(
                store,
                || s.get(keys, metadata),
                crate::components::backend_failure,
            ),
        )
        .await
        .map_err(|e| {
            ApiError::internal(
                "ERR_CONFIGURATION_GET",
                format!("failed to get {keys:?} from configuration store {store}: {e}"),
            )
        })
    }

    /// Subscribes to `keys` (all when empty) of `store`. The subscription
    /// follows the store: when the component is replaced while running, it
    /// carries on against the new one under the same id.
    pub async fn subscribe_configuration(
        self: &Arc<Self>,
        store: &str,
        keys: &[String],
        metadata: &Metadata,
    ) -> Result<Subscription, ApiError> {
        // Listening first, so a replacement made while subscribing is not missed.
        let changed = self.components_changed.subscribe();
        let watch = self.watch_store(store, keys, metadata).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let relay = tokio::spawn(self.clone().follow_store(
            store.to_string(),
            keys.to_vec(),
            metadata.clone(),
            watch,
            changed,
            tx,
        ));
        let id = daprs_components::uuid_v4();
        let (stop, stopped) = oneshot::channel();
        daprs_components::lock(&self.config_watches.0).insert(id.clone(), (store.to_string(), stop));
        Ok(Subscription {
            id,
            watch: Watch::new(rx, relay),
            stopped,
        })
    }

    /// Passes `watch`'s changes to `tx`, subscribing again to `store` each
    /// time the component is replaced; ends when the store is removed or
    /// the subscriber goes away.
    async fn follow_store(
        self: Arc<Self>,
        store: String,
        keys: Vec<String>,
        metadata: Metadata,
        mut watch: Watch,
        mut changed: tokio::sync::broadcast::Receiver<String>,
        tx: tokio::sync::mpsc::Sender<Items>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            tokio::select! {
                items = watch.updates.recv() => {
                    let Some(items) = items else { return };
                    if tx.send(items).await.is_err() {
                        return;
                    }
                }
                name = changed.recv() => {
                    match name {
                        Ok(name) if name != store => continue,
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    }
                    match self.watch_store(&store, &keys, &metadata).await {
                        Ok(w) => watch = w,
                        Err(e) => {
                            tracing::warn!(%store, error = %e.message, "a configuration subscription ended with its store");
                            return;
                        }
                    }
                }
                () = tx.closed() => return,
            }
        }
    }

    /// One subscription on the store named `store` as it is now.
    async fn watch_store(
        &self,
        store: &str,
        keys: &[String],
        metadata: &Metadata,
    ) -> Result<Watch, ApiError> {
        let s = self.config_store(store)?;
        s.subscribe(keys, metadata).await.map_err(|e| {
            let code = match e {
                daprs_components::Error::Invalid(_) => Code::InvalidArgument,
                _ => Code::Internal,
            };
            ApiError::new(
                "ERR_CONFIGURATION_SUBSCRIBE",
                StatusCode::INTERNAL_SERVER_ERROR,
                code,
                format!("failed to subscribe {keys:?} from configuration store {store}: {e}"),
            )
        })
    }

    /// Forgets a subscription that ended by itself (its subscriber went away).
    pub fn forget_configuration(&self, id: &str) {
        daprs_components::lock(&self.config_watches.0).remove(id);
    }

    /// Stops subscription `id` of `store`.
    pub fn unsubscribe_configuration(&self, store: &str, id: &str) -> Result<(), ApiError> {
        self.config_store(store)?;
        let mut all = daprs_components::lock(&self.config_watches.0);
        match all.get(id) {
            Some((s, _)) if s == store => {
                if let Some((_, stop)) = all.remove(id) {
                    let _ = stop.send(());
                }
                Ok(())
            }
            _ => Err(ApiError::internal(
                "ERR_CONFIGURATION_UNSUBSCRIBE",
                format!("subscription {id} of configuration store {store} does not exist"),
            )),
        }
    }

    /// Subscribes for an HTTP app: each change is POSTed to
    /// `/configuration/{store}/{key}` until unsubscribed.
    pub async fn subscribe_configuration_for_app(
        self: &Arc<Self>,
        store: &str,
        keys: &[String],
        metadata: &Metadata,
    ) -> Result<String, ApiError> {
        if self.app()?.grpc_channel().is_some() {
            return Err(ApiError::internal(
                "ERR_CONFIGURATION_SUBSCRIBE",
                "this subscription pushes changes to an HTTP app; a gRPC app subscribes with the \
                 SubscribeConfiguration stream",
            ));
        }
        let Subscription {
            id,
            mut watch,
            mut stopped,
        } = self.subscribe_configuration(store, keys, metadata).await?;
        let (rt, store, sub_id) = (self.clone(), store.to_string(), id.clone());
        tokio::spawn(async move {
            loop {
                let items = tokio::select! {
                    _ = &mut stopped => return,
                    items = watch.updates.recv() => match items {
                        Some(items) => items,
                        None => break,
                    },
                };
                let Some(app) = rt.app.as_ref() else { break };
                for (key, item) in &items {
                    let body = serde_json::json!({
                        "id": sub_id,
                        "items": { key: ItemJson::from(item) },
                    });
                    let path = format!("configuration/{store}/{key}");
                    match app
                        .call_http(
                            Verb::Post,
                            &path,
                            "application/json",
                            body.to_string().into_bytes(),
                            Default::default(),
                        )
                        .await
                    {
                        Ok((200..=299, _)) => {}
                        Ok((status, _)) => {
                            tracing::warn!(%store, %key, status, "the app did not take a configuration update")
                        }
                        Err(e) => {
                            tracing::warn!(%store, %key, error = %e, "a configuration update could not reach the app")
                        }
                    }
                }
            }
            rt.forget_configuration(&sub_id);
        });
        Ok(id)
    }
}
