//! `state.in-memory`: a process-local map. Every operation holds one lock, so
//! transactions are atomic and ETag checks cannot race.

use std::{collections::HashMap, sync::Mutex, time::SystemTime};

use async_trait::async_trait;

use super::*;

/// The in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<String, Item>>,
}

fn live<'a>(items: &'a HashMap<String, Item>, key: &str, now: SystemTime) -> Option<&'a Item> {
    items.get(key).filter(|i| i.expires_at.is_none_or(|t| t > now))
}

/// Checks a write or delete against the current item; shared with the SQLite store.
pub(crate) fn check(current: Option<&str>, etag: Option<&str>, first_write: bool) -> StoreResult<()> {
    match (etag, current) {
        (Some(want), Some(have)) if want == have => Ok(()),
        (Some(want), _) => Err(StoreError::EtagMismatch(format!("etag {want:?} does not match"))),
        (None, Some(_)) if first_write => Err(StoreError::EtagMismatch(
            "key exists and first-write needs its etag".into(),
        )),
        (None, _) => Ok(()),
    }
}

impl MemoryStore {
    fn apply(items: &mut HashMap<String, Item>, op: Operation, now: SystemTime) {
        match op {
            Operation::Upsert(req) => {
                let item = Item {
                    data: req.value,
                    etag: new_etag(),
                    expires_at: req.ttl.map(|d| expiry(now, d)),
                };
                items.insert(req.key, item);
            }
            Operation::Delete(req) => {
                items.remove(&req.key);
            }
        }
    }

    fn validate(items: &HashMap<String, Item>, op: &Operation, now: SystemTime) -> StoreResult<()> {
        let (key, etag, first) = match op {
            Operation::Upsert(r) => (
                &r.key,
                r.etag.as_deref(),
                r.concurrency == Concurrency::FirstWrite,
            ),
            Operation::Delete(r) => (&r.key, r.etag.as_deref(), false),
        };
        check(live(items, key, now).map(|i| i.etag.as_str()), etag, first)
    }

    fn run(&self, ops: Vec<Operation>) -> StoreResult<()> {
        let now = SystemTime::now();
        let mut items = lock(&self.items);
        for op in &ops {
            Self::validate(&items, op, now)?;
        }
        for op in ops {
            Self::apply(&mut items, op, now);
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn features(&self) -> &'static [&'static str] {
        &[ETAG, TRANSACTIONAL, TTL, QUERY_API]
    }

    async fn scan(
        &self,
        prefix: &str,
        _: Option<&query::Filter>,
    ) -> StoreResult<Option<Vec<(String, Item)>>> {
        let now = SystemTime::now();
        let items = lock(&self.items);
        Ok(Some(
            items
                .iter()
                .filter(|(k, i)| k.starts_with(prefix) && i.expires_at.is_none_or(|t| t > now))
                .map(|(k, i)| (k.clone(), i.clone()))
                .collect(),
        ))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Item>> {
        let items = lock(&self.items);
        Ok(live(&items, key, SystemTime::now()).cloned())
    }

    async fn set(&self, req: SetRequest) -> StoreResult<()> {
        self.run(vec![Operation::Upsert(req)])
    }

    async fn delete(&self, req: DeleteRequest) -> StoreResult<()> {
        self.run(vec![Operation::Delete(req)])
    }

    async fn transact(&self, ops: Vec<Operation>) -> StoreResult<()> {
        self.run(ops)
    }
}
