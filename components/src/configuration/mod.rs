//! Configuration stores: read-only key/value items with versions, and
//! subscriptions that report each change.
//!
//! Semantics every store honours:
//! - `get` with no keys returns every item; absent keys are left out;
//! - a subscription reports each write to a watched key (no keys: every
//!   key) as the key's new item, and a deletion as the key with an empty
//!   value and version; dropping the [`Watch`] ends it.

pub mod postgres;
pub mod redis;

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::Metadata;

/// One configuration item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub value: String,
    /// The store's version of the value.
    pub version: String,
    /// Metadata the store keeps with the item.
    pub metadata: BTreeMap<String, String>,
}

/// Items by key.
pub type Items = BTreeMap<String, Item>;

/// A running subscription: changes arrive on `updates`; dropping it stops
/// the work behind it.
pub struct Watch {
    /// Changed items, in the order the store reported them.
    pub updates: mpsc::Receiver<Items>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// A watch fed by `task` through the sender it was given.
    pub fn new(updates: mpsc::Receiver<Items>, task: tokio::task::JoinHandle<()>) -> Self {
        Self { updates, task }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How many changes may wait for a slow subscriber before the store waits too.
pub const BACKLOG: usize = 256;

/// A configuration store implementation.
#[async_trait]
pub trait ConfigurationStore: Send + Sync + 'static {
    /// The items of `keys` (all items when empty).
    async fn get(&self, keys: &[String], metadata: &Metadata) -> crate::Result<Items>;

    /// Watches `keys` (every key when empty) for changes.
    async fn subscribe(&self, keys: &[String], metadata: &Metadata) -> crate::Result<Watch>;
}
