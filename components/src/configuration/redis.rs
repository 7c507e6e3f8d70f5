//! `configuration.redis`: each item is a Redis string `<value>||<version>`,
//! as Dapr stores them; subscriptions follow Redis keyspace notifications,
//! which this store turns on (`notify-keyspace-events`) if the server has
//! them off.

use std::collections::BTreeMap;

use ::redis::{AsyncCommands, aio::ConnectionLike};

use crate::redis_conn::{Conn, Redis};
use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{BACKLOG, ConfigurationStore, Item, Items, Watch};
use crate::{Error, Metadata};

/// The Redis configuration store.
pub struct RedisConfig {
    redis: Redis,
    conn: Conn,
    db: i64,
}

fn backend(e: ::redis::RedisError) -> Error {
    Error::Backend(e.to_string())
}

/// Splits `value||version`; a string without the separator is all value.
pub fn parse_item(raw: &str) -> Item {
    let (value, version) = raw.rsplit_once("||").unwrap_or((raw, ""));
    Item {
        value: value.to_string(),
        version: version.to_string(),
        metadata: BTreeMap::new(),
    }
}

impl RedisConfig {
    /// Connects with the shared Redis metadata (`redisHost`, `redisDB`, …).
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let (redis, conn) = crate::redis_conn::connect(metadata).await?;
        if redis.is_cluster() {
            // Keyspace notifications come from each node for its own keys.
            return Err(
                "configuration.redis needs one Redis server (its subscriptions listen to \
                        keyspace notifications); redisType cluster is not supported for it"
                    .into(),
            );
        }
        // The database the connection settled on (`redisDB`, already checked).
        let db = conn.get_db();
        Ok(Self { redis, conn, db })
    }

    async fn read(&self, keys: &[String]) -> crate::Result<Items> {
        if keys.is_empty() {
            return Ok(Items::new());
        }
        let mut conn = self.conn.clone();
        // MGET answers nil for absent keys and for keys of other types.
        let values: Vec<Option<String>> = conn.mget(keys).await.map_err(backend)?;
        Ok(keys
            .iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k.clone(), parse_item(&v?))))
            .collect())
    }

    /// Turns keyspace notifications for string and generic commands on,
    /// keeping whatever else the server already notifies.
    async fn ensure_notifications(&self) -> crate::Result<()> {
        let mut conn = self.conn.clone();
        let current: Vec<String> = ::redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let flags = current.get(1).cloned().unwrap_or_default();
        let has = |c: char| flags.contains(c);
        if has('K') && (has('A') || (has('$') && has('g'))) {
            return Ok(());
        }
        let wanted: String = flags.chars().chain("K$gx".chars()).collect();
        ::redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| {
                Error::Backend(format!(
                    "subscriptions need Redis keyspace notifications, and enabling them failed ({e}); \
                     run CONFIG SET notify-keyspace-events KA on the server"
                ))
            })
    }
}

#[async_trait]
impl ConfigurationStore for RedisConfig {
    async fn get(&self, keys: &[String], _metadata: &Metadata) -> crate::Result<Items> {
        if !keys.is_empty() {
            return self.read(keys).await;
        }
        let mut conn = self.conn.clone();
        let mut all = Vec::new();
        {
            let mut iter: ::redis::AsyncIter<'_, String> = conn.scan().await.map_err(backend)?;
            while let Some(k) = iter.next_item().await {
                all.push(k.map_err(backend)?);
            }
        }
        self.read(&all).await
    }

    async fn subscribe(&self, keys: &[String], _metadata: &Metadata) -> crate::Result<Watch> {
        self.ensure_notifications().await?;
        let client = self.redis.client().await.map_err(backend)?;
        let mut pubsub = client.get_async_pubsub().await.map_err(backend)?;
        let prefix = format!("__keyspace@{}__:", self.db);
        if keys.is_empty() {
            pubsub.psubscribe(format!("{prefix}*")).await.map_err(backend)?;
        } else {
            for k in keys {
                pubsub.subscribe(format!("{prefix}{k}")).await.map_err(backend)?;
            }
        }
        let (tx, rx) = mpsc::channel(BACKLOG);
        let conn = self.conn.clone();
        let task = tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(key) = msg.get_channel_name().strip_prefix(&prefix).map(str::to_string) else {
                    continue;
                };
                let event: String = msg.get_payload().unwrap_or_default();
                let item = match event.as_str() {
                    "del" | "expired" | "evicted" | "unlink" => Some(Item::default()),
                    _ => {
                        let mut c = conn.clone();
                        match c.get::<_, Option<String>>(&key).await {
                            Ok(Some(raw)) => Some(parse_item(&raw)),
                            Ok(None) => Some(Item::default()),
                            // Not a string: not a configuration item.
                            Err(e) if e.code() == Some("WRONGTYPE") => None,
                            Err(e) => {
                                tracing::warn!(%key, error = %e, "reading a changed configuration item failed");
                                None
                            }
                        }
                    }
                };
                if let Some(item) = item
                    && tx.send(Items::from([(key, item)])).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Watch::new(rx, task))
    }
}
