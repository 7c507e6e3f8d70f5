//! `lock.redis`: a lease is a key holding its owner, set with `SET NX PX` so
//! taking it is one atomic step, and released by a script that deletes the
//! key only if it still holds the caller — so an owner whose lease expired
//! can never release the lease someone else took since.

use std::time::Duration;

use ::redis::{AsyncCommands, Script};

use crate::redis_conn::Conn;
use async_trait::async_trait;

use super::{LockStore, Unlocked};
use crate::{Error, Metadata};

/// 0 released, 1 no such lock, 2 held by another owner.
const RELEASE: &str = r#"
local v = redis.call("GET", KEYS[1])
if v == false then return 1 end
if v ~= ARGV[1] then return 2 end
redis.call("DEL", KEYS[1])
return 0
"#;

/// The Redis lock store.
pub struct RedisLocks {
    conn: Conn,
    release: Script,
}

impl RedisLocks {
    /// Connects with the shared Redis metadata (`redisHost`, `redisPassword`, …).
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let (_, conn) = crate::redis_conn::connect(metadata).await?;
        Ok(Self {
            conn,
            release: Script::new(RELEASE),
        })
    }
}

fn backend(e: ::redis::RedisError) -> Error {
    Error::Backend(e.to_string())
}

#[async_trait]
impl LockStore for RedisLocks {
    async fn try_lock(&self, resource: &str, owner: &str, lease: Duration) -> crate::Result<bool> {
        let millis = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1);
        let opts = ::redis::SetOptions::default()
            .conditional_set(::redis::ExistenceCheck::NX)
            .with_expiration(::redis::SetExpiry::PX(millis));
        let mut conn = self.conn.clone();
        let set: Option<String> = conn.set_options(resource, owner, opts).await.map_err(backend)?;
        Ok(set.is_some())
    }

    async fn unlock(&self, resource: &str, owner: &str) -> crate::Result<Unlocked> {
        let mut conn = self.conn.clone();
        let code: i64 = self
            .release
            .key(resource)
            .arg(owner)
            .invoke_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(match code {
            0 => Unlocked::Success,
            1 => Unlocked::NotFound,
            _ => Unlocked::OtherOwner,
        })
    }
}
