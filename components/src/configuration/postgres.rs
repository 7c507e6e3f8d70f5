//! `configuration.postgresql`: items are rows of a table the user creates
//! (`key`, `value`, `version`, `metadata` json), as Dapr documents it.
//! Subscriptions LISTEN on the channel named by the subscription's
//! `pgNotifyChannel` metadata, where the user's trigger `pg_notify`s each
//! changed row as `{"table": …, "action": …, "data": {row}}`.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::{BACKLOG, ConfigurationStore, Item, Items, Watch};
use crate::{Error, Metadata, meta, state::sqlite::valid_identifier};

/// The PostgreSQL configuration store.
pub struct PostgresConfig {
    pool: Pool,
    table: String,
    /// Where subscriptions open their own LISTEN connection.
    settings: crate::pg_conn::Settings,
    /// The component's `notifyChannel`, used when a subscription names none.
    channel: Option<String>,
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

/// A JSON object's members as strings (nested values as JSON text).
fn string_map(v: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    match v {
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                (k.clone(), s)
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The key and item of a notification from the user's trigger, if it is a
/// change of `table`. Column names are case-folded, as PostgreSQL folds them.
pub fn parse_notification(payload: &str, table: &str) -> Option<(String, Item)> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    if !v["table"].as_str()?.eq_ignore_ascii_case(table) {
        return None;
    }
    let data = v.get("data")?.as_object()?;
    let field = |name: &str| {
        data.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let text = |name: &str| {
        field(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let key = text("key");
    if key.is_empty() {
        return None;
    }
    let deleted = v["action"]
        .as_str()
        .is_some_and(|a| a.eq_ignore_ascii_case("DELETE"));
    let item = if deleted {
        Item::default()
    } else {
        Item {
            value: text("value"),
            version: text("version"),
            metadata: string_map(field("metadata")),
        }
    };
    Some((key, item))
}

impl PostgresConfig {
    /// Connects (see [`crate::pg_conn`]) and checks that `table` has the layout Dapr documents.
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let table = meta(metadata, "table")
            .ok_or("metadata table is required (the table holding key, value, version and metadata)")?
            .to_string();
        if !valid_identifier(&table) {
            return Err(format!("table {table:?} must be letters, digits and underscores"));
        }
        let settings = crate::pg_conn::settings(metadata)?;
        let (pool, client) = crate::pg_conn::pool(&settings).await?;
        client
            .batch_execute(&format!("SELECT key, value, version, metadata FROM {table} LIMIT 0"))
            .await
            .map_err(|e| {
                format!("table {table} cannot be read as a configuration table (key, value, version, metadata): {e}")
            })?;
        Ok(Self {
            pool,
            table,
            settings,
            channel: meta(metadata, "notifyChannel").map(str::to_string),
        })
    }
}

#[async_trait]
impl ConfigurationStore for PostgresConfig {
    async fn get(&self, keys: &[String], _metadata: &Metadata) -> crate::Result<Items> {
        let client = self.pool.get().await.map_err(backend)?;
        let t = &self.table;
        let rows = if keys.is_empty() {
            client
                .query(
                    &format!("SELECT key, value, version, metadata::text FROM {t}"),
                    &[],
                )
                .await
        } else {
            client
                .query(
                    &format!("SELECT key, value, version, metadata::text FROM {t} WHERE key = ANY($1)"),
                    &[&keys],
                )
                .await
        }
        .map_err(backend)?;
        let mut out = Items::new();
        for row in rows {
            let key: String = row.try_get(0).map_err(backend)?;
            let meta_json: Option<String> = row.try_get(3).map_err(backend)?;
            let metadata = meta_json
                .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
                .map(|m| string_map(Some(&m)))
                .unwrap_or_default();
            out.insert(
                key,
                Item {
                    value: row.try_get(1).map_err(backend)?,
                    version: row.try_get(2).map_err(backend)?,
                    metadata,
                },
            );
        }
        Ok(out)
    }

    async fn subscribe(&self, keys: &[String], metadata: &Metadata) -> crate::Result<Watch> {
        let channel = meta(metadata, "pgNotifyChannel")
            .or(self.channel.as_deref())
            .ok_or_else(|| {
                Error::Invalid(
                    "subscribing needs metadata pgNotifyChannel: the channel your table's trigger notifies"
                        .into(),
                )
            })?
            .to_string();
        if !valid_identifier(&channel) {
            return Err(Error::Invalid(format!(
                "pgNotifyChannel {channel:?} must be letters, digits and underscores"
            )));
        }
        let (client, mut connection) = self.settings.connect().await.map_err(backend)?;
        let (note_tx, mut notes) = mpsc::unbounded_channel();
        // The connection delivers notifications while it is polled.
        let conn_task = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let AsyncMessage::Notification(n) = m
                    && note_tx.send(n.payload().to_string()).is_err()
                {
                    return;
                }
            }
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {channel}")).await {
            conn_task.abort();
            return Err(backend(e));
        }
        let (tx, rx) = mpsc::channel(BACKLOG);
        let wanted: HashSet<String> = keys.iter().cloned().collect();
        let table = self.table.clone();
        let task = tokio::spawn(async move {
            // Holding the client keeps the session, and so the LISTEN, open.
            let _client = client;
            let _conn = AbortOnDrop(conn_task);
            while let Some(payload) = notes.recv().await {
                let Some((key, item)) = parse_notification(&payload, &table) else {
                    continue;
                };
                if (wanted.is_empty() || wanted.contains(&key))
                    && tx.send(Items::from([(key, item)])).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Watch::new(rx, task))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_from_the_documented_trigger() {
        let p = r#"{"table":"configtable","action":"UPDATE","data":{"key":"k","value":"v","version":"2","metadata":{"a":"b","n":1}}}"#;
        let (k, item) = parse_notification(p, "CONFIGTABLE").expect("change");
        assert_eq!(
            (k.as_str(), item.value.as_str(), item.version.as_str()),
            ("k", "v", "2")
        );
        assert_eq!(item.metadata.get("n").map(String::as_str), Some("1"));
        let del = r#"{"table":"configtable","action":"DELETE","data":{"key":"k","value":"v","version":"2"}}"#;
        assert_eq!(
            parse_notification(del, "configtable"),
            Some(("k".into(), Item::default()))
        );
        assert_eq!(parse_notification(p, "other"), None);
        assert_eq!(parse_notification("not json", "configtable"), None);
    }
}
