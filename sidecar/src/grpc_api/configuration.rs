//! The configuration RPCs' shapes: items as `ConfigurationItem`s, and a
//! subscription as a server stream whose first message carries its id.

use std::{collections::HashMap, pin::Pin, sync::Arc};

use daprs_components::configuration::Items;
use daprs_proto::{common::ConfigurationItem, runtime::SubscribeConfigurationResponse};
use futures_util::{Stream, StreamExt};
use tonic::Status;

use crate::{configuration_api::Subscription, runtime::Runtime};

/// The stream `SubscribeConfiguration` answers with.
pub type Updates = Pin<Box<dyn Stream<Item = Result<SubscribeConfigurationResponse, Status>> + Send>>;

/// Items as the gRPC API carries them.
pub fn items(items: Items) -> HashMap<String, ConfigurationItem> {
    items
        .into_iter()
        .map(|(k, i)| {
            (
                k,
                ConfigurationItem {
                    value: i.value,
                    version: i.version,
                    metadata: i.metadata.into_iter().collect(),
                },
            )
        })
        .collect()
}

/// The id first, then each change, until unsubscribed or the client leaves.
pub fn updates(rt: Arc<Runtime>, sub: Subscription) -> Updates {
    let Subscription { id, watch, stopped } = sub;
    let first = SubscribeConfigurationResponse {
        id: id.clone(),
        items: HashMap::new(),
    };
    // Forgets the id however the stream ends.
    struct Forget(Arc<Runtime>, String);
    impl Drop for Forget {
        fn drop(&mut self) {
            self.0.forget_configuration(&self.1);
        }
    }
    let state = (watch, stopped, Forget(rt, id.clone()), id);
    let changes = futures_util::stream::unfold(state, |(mut watch, mut stopped, forget, id)| async move {
        let changed = tokio::select! {
            _ = &mut stopped => return None,
            changed = watch.updates.recv() => changed?,
        };
        let msg = SubscribeConfigurationResponse {
            id: id.clone(),
            items: items(changed),
        };
        Some((Ok(msg), (watch, stopped, forget, id)))
    });
    Box::pin(futures_util::stream::once(async { Ok(first) }).chain(changes))
}
