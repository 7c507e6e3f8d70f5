//! `lock.in-memory`: leases in a process-local map, for one sidecar.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{LockStore, Unlocked};

/// The in-memory lock store.
#[derive(Default)]
pub struct MemoryLocks {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

#[async_trait]
impl LockStore for MemoryLocks {
    async fn try_lock(&self, resource: &str, owner: &str, lease: Duration) -> crate::Result<bool> {
        let now = Instant::now();
        let mut held = crate::lock(&self.held);
        if held.get(resource).is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        // A lease too long for the clock is as good as forever.
        let until = now
            .checked_add(lease)
            .unwrap_or_else(|| now + Duration::from_secs(u32::MAX.into()));
        held.insert(resource.to_string(), (owner.to_string(), until));
        Ok(true)
    }

    async fn unlock(&self, resource: &str, owner: &str) -> crate::Result<Unlocked> {
        let mut held = crate::lock(&self.held);
        Ok(match held.get(resource) {
            Some((_, until)) if *until <= Instant::now() => {
                held.remove(resource);
                Unlocked::NotFound
            }
            Some((o, _)) if o == owner => {
                held.remove(resource);
                Unlocked::Success
            }
            Some(_) => Unlocked::OtherOwner,
            None => Unlocked::NotFound,
        })
    }
}
