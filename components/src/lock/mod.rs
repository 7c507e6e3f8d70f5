//! Distributed locks: a named resource held by one owner until it unlocks
//! or the lease expires.
//!
//! Semantics every store honours:
//! - `try_lock` takes a free (or expired) resource and reports whether it did;
//!   it never waits and never extends a lease, even for the same owner;
//! - `unlock` releases only the owner's own lease: an expired lock re-taken
//!   by another owner stays with that owner.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

/// What an unlock found, with the numbers of Dapr's `UnlockResponse.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlocked {
    /// The owner held the lock; it is released.
    Success = 0,
    /// Nobody holds the lock (never taken, released, or expired).
    NotFound = 1,
    /// Another owner holds the lock; it stays.
    OtherOwner = 2,
}

/// A lock store implementation.
#[async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Takes `resource` for `owner` for `lease`, unless someone holds it.
    async fn try_lock(&self, resource: &str, owner: &str, lease: Duration) -> crate::Result<bool>;

    /// Releases `resource` if `owner` holds it.
    async fn unlock(&self, resource: &str, owner: &str) -> crate::Result<Unlocked>;
}
