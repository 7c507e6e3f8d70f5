//! `state.postgresql`: one row per key in a table created on first use
//! (`key text primary key, value bytea, etag text, expires_at timestamptz`).
//! Each conditional write is a single statement whose row count says whether
//! the ETag matched; a transaction runs those statements in one database
//! transaction and rolls back on the first failure.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::{error::SqlState, types::ToSql};

use super::{sqlite::valid_identifier, *};

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    sql: Statements,
}

struct Statements {
    get: String,
    upsert: String,
    update_if: String,
    insert_only: String,
    delete: String,
    delete_if: String,
    scan: String,
    /// The scan over values read as JSON (`doc`), to which a condition is appended.
    scan_where: String,
}

impl Statements {
    fn new(t: &str) -> Self {
        const LIVE: &str = "(expires_at IS NULL OR expires_at > now())";
        // $4: time to live in seconds; 0 means no expiry.
        const EXPIRY: &str = "CASE WHEN $4::bigint > 0 THEN now() + $4::bigint * interval '1 second' END";
        Self {
            get: format!("SELECT value, etag, expires_at FROM {t} WHERE key = $1 AND {LIVE}"),
            upsert: format!(
                "INSERT INTO {t} (key, value, etag, expires_at) VALUES ($1, $2, $3, {EXPIRY})
                 ON CONFLICT (key) DO UPDATE SET value = $2, etag = $3, expires_at = {EXPIRY}"
            ),
            update_if: format!(
                "UPDATE {t} SET value = $2, etag = $3, expires_at = {EXPIRY} WHERE key = $1 AND etag = $5 AND {LIVE}"
            ),
            insert_only: format!(
                "INSERT INTO {t} (key, value, etag, expires_at) VALUES ($1, $2, $3, {EXPIRY})
                 ON CONFLICT (key) DO UPDATE SET value = $2, etag = $3, expires_at = {EXPIRY}
                 WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at <= now()"
            ),
            delete: format!("DELETE FROM {t} WHERE key = $1"),
            delete_if: format!("DELETE FROM {t} WHERE key = $1 AND etag = $2 AND {LIVE}"),
            // starts_with, unlike LIKE, has no wildcards a prefix could contain.
            scan: format!(
                "SELECT key, value, etag, expires_at FROM {t} WHERE starts_with(key, $1) AND {LIVE}"
            ),
            scan_where: format!(
                "SELECT key, value, etag, expires_at FROM (SELECT key, value, etag, expires_at,
                 convert_from(value, 'UTF8')::jsonb AS doc FROM {t} WHERE starts_with(key, $1) AND {LIVE}) AS live
                 WHERE "
            ),
        }
    }
}

/// What PostgreSQL says when a value is not UTF-8 JSON.
const NOT_JSON: &[SqlState] = &[
    SqlState::INVALID_TEXT_REPRESENTATION,
    SqlState::CHARACTER_NOT_IN_REPERTOIRE,
    SqlState::UNTRANSLATABLE_CHARACTER,
];

/// The item in columns `value, etag, expires_at` of a row, from column `at`.
fn item_at(row: &tokio_postgres::Row, at: usize) -> StoreResult<Item> {
    Ok(Item {
        data: row.try_get::<_, Vec<u8>>(at).map_err(backend)?.into(),
        etag: row.try_get(at + 1).map_err(backend)?,
        expires_at: row.try_get(at + 2).map_err(backend)?,
    })
}

fn items(rows: Vec<tokio_postgres::Row>) -> StoreResult<Vec<(String, Item)>> {
    rows.into_iter()
        .map(|row| Ok((row.try_get(0).map_err(backend)?, item_at(&row, 1)?)))
        .collect()
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl PostgresStore {
    /// Connects with `connectionString` (see [`crate::pg_conn`]) and creates the table.
    pub async fn connect(metadata: &BTreeMap<String, String>) -> Result<Self, String> {
        let table = meta(metadata, "tableName")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}state", meta(metadata, "tablePrefix").unwrap_or("")));
        if !valid_identifier(&table) {
            return Err(format!(
                "tableName {table:?} must be letters, digits and underscores"
            ));
        }
        let (pool, client) = crate::pg_conn::pool(&crate::pg_conn::settings(metadata)?).await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    key text NOT NULL PRIMARY KEY,
                    value bytea NOT NULL,
                    etag text NOT NULL,
                    expires_at timestamptz
                )"
            ))
            .await
            .map_err(|e| format!("cannot create table {table}: {e}"))?;
        client
            .batch_execute(&format!(
                "SELECT key, value, etag, expires_at FROM {table} LIMIT 0"
            ))
            .await
            .map_err(|e| {
                format!("table {table} exists with another layout ({e}); choose another tableName")
            })?;
        let cleanup = meta(metadata, "cleanupInterval")
            .and_then(parse_duration)
            .unwrap_or(Duration::from_secs(3600));
        if !cleanup.is_zero() {
            let (pool, sql) = (
                pool.clone(),
                format!("DELETE FROM {table} WHERE expires_at <= now()"),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(cleanup);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Ok(c) = pool.get().await
                        && let Err(e) = c.execute(sql.as_str(), &[]).await
                    {
                        tracing::warn!(error = %e, "expired state cleanup failed");
                    }
                }
            });
        }
        Ok(Self {
            pool,
            sql: Statements::new(&table),
        })
    }

    async fn apply(&self, client: &impl deadpool_postgres::GenericClient, op: &Operation) -> StoreResult<()> {
        let mismatch = || StoreError::EtagMismatch("the etag does not match the stored row".into());
        match op {
            Operation::Upsert(r) => {
                let etag = new_etag();
                let ttl = r.ttl.map_or(0i64, |d| {
                    i64::try_from(d.as_secs().max(1)).unwrap_or(MAX_TTL_SECONDS)
                });
                let value: &[u8] = &r.value;
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&r.key, &value, &etag, &ttl];
                let sql = match (&r.etag, r.concurrency) {
                    (Some(e), _) => {
                        params.push(e);
                        &self.sql.update_if
                    }
                    (None, Concurrency::FirstWrite) => &self.sql.insert_only,
                    (None, Concurrency::LastWrite) => &self.sql.upsert,
                };
                let stmt = client.prepare_cached(sql).await.map_err(backend)?;
                let n = client.execute(&stmt, &params).await.map_err(backend)?;
                if n == 0 { Err(mismatch()) } else { Ok(()) }
            }
            Operation::Delete(r) => match &r.etag {
                Some(e) => {
                    let stmt = client
                        .prepare_cached(&self.sql.delete_if)
                        .await
                        .map_err(backend)?;
                    let n = client.execute(&stmt, &[&r.key, e]).await.map_err(backend)?;
                    if n == 0 { Err(mismatch()) } else { Ok(()) }
                }
                None => {
                    let stmt = client.prepare_cached(&self.sql.delete).await.map_err(backend)?;
                    client.execute(&stmt, &[&r.key]).await.map_err(backend).map(drop)
                }
            },
        }
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("no PostgreSQL connection: {e}")))
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    fn features(&self) -> &'static [&'static str] {
        &[ETAG, TRANSACTIONAL, TTL, QUERY_API]
    }

    async fn scan(
        &self,
        prefix: &str,
        filter: Option<&query::Filter>,
    ) -> StoreResult<Option<Vec<(String, Item)>>> {
        let client = self.client().await?;
        let mut params = Vec::new();
        // The filter's translatable part runs in the database, over the values
        // read as JSON; a table holding a value that is not JSON makes that
        // fail, and then every row comes back for the engine to sort out.
        if let Some(cond) = filter.and_then(|f| query::sql_prefilter(f, 1, &mut params)) {
            let sql = format!("{}{cond}", self.sql.scan_where);
            let mut args: Vec<&(dyn ToSql + Sync)> = vec![&prefix];
            args.extend(params.iter().map(|p| p as &(dyn ToSql + Sync)));
            match client.query(&sql, &args).await {
                Ok(rows) => return items(rows).map(Some),
                Err(e) if e.code().is_some_and(|c| NOT_JSON.contains(c)) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        let stmt = client.prepare_cached(&self.sql.scan).await.map_err(backend)?;
        items(client.query(&stmt, &[&prefix]).await.map_err(backend)?).map(Some)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Item>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(&self.sql.get).await.map_err(backend)?;
        let row = client.query_opt(&stmt, &[&key]).await.map_err(backend)?;
        row.map(|row| item_at(&row, 0)).transpose()
    }

    async fn set(&self, req: SetRequest) -> StoreResult<()> {
        let client = self.client().await?;
        self.apply(&client, &Operation::Upsert(req)).await
    }

    async fn delete(&self, req: DeleteRequest) -> StoreResult<()> {
        let client = self.client().await?;
        self.apply(&client, &Operation::Delete(req)).await
    }

    async fn transact(&self, ops: Vec<Operation>) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        for op in &ops {
            // Dropping the transaction on error rolls it back.
            self.apply(&tx, op).await?;
        }
        tx.commit().await.map_err(backend)
    }
}
