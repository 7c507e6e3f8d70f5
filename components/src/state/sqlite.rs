//! `state.sqlite`: a file database. Calls run on the blocking pool; every
//! operation set runs in one `BEGIN IMMEDIATE` transaction, so ETag checks and
//! writes are atomic.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{memory::check, *};

/// The SQLite store.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    table: String,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Table names are spliced into SQL, so only plain identifiers are accepted.
pub(crate) fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Puts the database in WAL mode (unless disabled) and creates the table.
fn prepare(conn: &Connection, table: &str, wal: bool) -> rusqlite::Result<()> {
    if wal {
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
    }
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            key TEXT NOT NULL PRIMARY KEY,
            value BLOB NOT NULL,
            etag TEXT NOT NULL,
            expires_at INTEGER
        )"
    ))
}

fn is_locked(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl SqliteStore {
    /// Opens (and creates) the database named by `connectionString`.
    pub async fn open(metadata: &BTreeMap<String, String>) -> Result<Self, String> {
        let target = meta(metadata, "connectionString")
            .ok_or("metadata connectionString is required (a file path or :memory:)")?
            .to_string();
        let table = meta(metadata, "tableName").unwrap_or("state").to_string();
        if !valid_identifier(&table) {
            return Err(format!(
                "tableName {table:?} must be letters, digits and underscores"
            ));
        }
        let busy = meta(metadata, "busyTimeout")
            .and_then(parse_duration)
            .unwrap_or(Duration::from_secs(2));
        let wal = !meta(metadata, "disableWAL").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let t = table.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, String> {
            let path = target.strip_prefix("file:").unwrap_or(&target);
            let path = path.split('?').next().unwrap_or(path);
            if path != ":memory:"
                && let Some(dir) = std::path::Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let conn = Connection::open_with_flags(path, OpenFlags::default())
                .map_err(|e| format!("cannot open {path}: {e}"))?;
            conn.busy_timeout(busy).map_err(|e| e.to_string())?;
            // Several sidecars share the default database. Switching to WAL and
            // creating the table take locks that SQLite's busy handler does not
            // always wait for, so a fresh file opened by two processes at once
            // needs a retry here rather than a failed start.
            let deadline = std::time::Instant::now() + busy.max(Duration::from_secs(5));
            loop {
                match prepare(&conn, &t, wal && path != ":memory:") {
                    Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    other => break other.map_err(|e| format!("cannot prepare table {t}: {e}"))?,
                }
            }
            Ok(conn)
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            table,
        })
    }

    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = self.conn.clone();
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&conn);
            f(&mut conn, &table)
        })
        .await
        .map_err(backend)?
    }
}

/// The item in columns `value, etag, expires_at` of a row, from column `at`.
fn item_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Item> {
    let data: Vec<u8> = row.get(at)?;
    let expires: Option<i64> = row.get(at + 2)?;
    Ok(Item {
        data: data.into(),
        etag: row.get(at + 1)?,
        expires_at: expires.map(|ms| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)),
    })
}

fn read(conn: &Connection, table: &str, key: &str, now: i64) -> StoreResult<Option<Item>> {
    conn.prepare_cached(&format!(
        "SELECT value, etag, expires_at FROM {table} WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)"
    ))
    .and_then(|mut stmt| {
        stmt.query_row(params![key, now], |row| item_at(row, 0))
            .optional()
    })
    .map_err(backend)
}

fn run_ops(conn: &mut Connection, table: &str, ops: Vec<Operation>) -> StoreResult<()> {
    let now = SystemTime::now();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    for op in ops {
        match op {
            Operation::Upsert(r) => {
                let current = read(&tx, table, &r.key, unix_millis(now))?;
                check(
                    current.as_ref().map(|i| i.etag.as_str()),
                    r.etag.as_deref(),
                    r.concurrency == Concurrency::FirstWrite,
                )?;
                let expires = r.ttl.map(|d| unix_millis(expiry(now, d)));
                tx.prepare_cached(&format!(
                    "INSERT INTO {table} (key, value, etag, expires_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, etag = excluded.etag,
                     expires_at = excluded.expires_at"
                ))
                .and_then(|mut s| s.execute(params![r.key, r.value.as_ref(), new_etag(), expires]))
                .map_err(backend)?;
            }
            Operation::Delete(r) => {
                let current = read(&tx, table, &r.key, unix_millis(now))?;
                check(
                    current.as_ref().map(|i| i.etag.as_str()),
                    r.etag.as_deref(),
                    false,
                )?;
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE key = ?1"))
                    .and_then(|mut s| s.execute(params![r.key]))
                    .map_err(backend)?;
            }
        }
    }
    tx.commit().map_err(backend)
}

#[async_trait]
impl StateStore for SqliteStore {
    fn features(&self) -> &'static [&'static str] {
        &[ETAG, TRANSACTIONAL, TTL, QUERY_API]
    }

    async fn scan(
        &self,
        prefix: &str,
        _: Option<&query::Filter>,
    ) -> StoreResult<Option<Vec<(String, Item)>>> {
        let prefix = prefix.to_string();
        self.with_conn(move |c, t| {
            let now = unix_millis(SystemTime::now());
            // A range on the primary key instead of LIKE, whose wildcards a
            // prefix could contain.
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT key, value, etag, expires_at FROM {t}
                     WHERE key >= ?1 AND (expires_at IS NULL OR expires_at > ?2) ORDER BY key"
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![prefix, now], |row| {
                    Ok((row.get::<_, String>(0)?, item_at(row, 1)?))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (k, item) = row.map_err(backend)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                out.push((k, item));
            }
            Ok(Some(out))
        })
        .await
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Item>> {
        let key = key.to_string();
        self.with_conn(move |c, t| read(c, t, &key, unix_millis(SystemTime::now())))
            .await
    }

    async fn set(&self, req: SetRequest) -> StoreResult<()> {
        self.transact(vec![Operation::Upsert(req)]).await
    }

    async fn delete(&self, req: DeleteRequest) -> StoreResult<()> {
        self.transact(vec![Operation::Delete(req)]).await
    }

    async fn transact(&self, ops: Vec<Operation>) -> StoreResult<()> {
        self.with_conn(move |c, t| run_ops(c, t, ops)).await
    }

    async fn bulk_get(&self, keys: &[String]) -> Vec<StoreResult<Option<Item>>> {
        let keys = keys.to_vec();
        let n = keys.len();
        let res = self
            .with_conn(move |c, t| {
                let now = unix_millis(SystemTime::now());
                Ok(keys.iter().map(|k| read(c, t, k, now)).collect::<Vec<_>>())
            })
            .await;
        match res {
            Ok(items) => items,
            Err(e) => (0..n).map(|_| Err(StoreError::Backend(e.to_string()))).collect(),
        }
    }
}
