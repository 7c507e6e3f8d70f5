//! `bindings.postgresql`: `exec` runs a statement and reports the rows it
//! affected, `query` returns the rows as a JSON array of arrays, `close`
//! closes the pool. The call's `sql` metadata holds the statement and
//! `params` a JSON array for its `$1`, `$2`… parameters, each converted to
//! the type PostgreSQL infers for it.

use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};

use super::{Binding, Request, Response};
use crate::{Error, Metadata, meta};

/// The PostgreSQL binding.
pub struct PostgresBinding {
    pool: Pool,
}

const OPERATIONS: &[&str] = &["exec", "query", "close"];

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

impl PostgresBinding {
    /// Connects (see [`crate::pg_conn`]).
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let (pool, _) = crate::pg_conn::pool(&crate::pg_conn::settings(metadata)?).await?;
        Ok(Self { pool })
    }
}

/// One JSON parameter as a value of the type PostgreSQL expects.
fn param(v: &Value, ty: &Type, n: usize) -> crate::Result<Box<dyn ToSql + Sync + Send>> {
    let bad = || Error::Invalid(format!("params[{n}] {v} cannot be a {ty} parameter"));
    if v.is_null() {
        return Ok(Box::new(Option::<String>::None));
    }
    let text = || v.as_str().map_or_else(|| v.to_string(), str::to_string);
    Ok(match *ty {
        Type::BOOL => Box::new(v.as_bool().or_else(|| text().parse().ok()).ok_or_else(bad)?),
        Type::INT2 => Box::new(
            i16::try_from(v.as_i64().or_else(|| text().parse().ok()).ok_or_else(bad)?).map_err(|_| bad())?,
        ),
        Type::INT4 => Box::new(
            i32::try_from(v.as_i64().or_else(|| text().parse().ok()).ok_or_else(bad)?).map_err(|_| bad())?,
        ),
        Type::INT8 => Box::new(v.as_i64().or_else(|| text().parse().ok()).ok_or_else(bad)?),
        Type::FLOAT4 => Box::new(v.as_f64().or_else(|| text().parse().ok()).ok_or_else(bad)? as f32),
        Type::FLOAT8 => Box::new(v.as_f64().or_else(|| text().parse().ok()).ok_or_else(bad)?),
        Type::JSON | Type::JSONB => Box::new(v.clone()),
        Type::BYTEA => Box::new(text().into_bytes()),
        _ => Box::new(text()),
    })
}

/// One column of a row as JSON.
fn column(row: &tokio_postgres::Row, i: usize) -> Value {
    let ty = row.columns()[i].type_().clone();
    let get = |r: Result<Option<Value>, tokio_postgres::Error>| r.ok().flatten().unwrap_or(Value::Null);
    match ty {
        Type::BOOL => get(row.try_get::<_, Option<bool>>(i).map(|v| v.map(Value::from))),
        Type::INT2 => get(row.try_get::<_, Option<i16>>(i).map(|v| v.map(Value::from))),
        Type::INT4 => get(row.try_get::<_, Option<i32>>(i).map(|v| v.map(Value::from))),
        Type::INT8 => get(row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::from))),
        Type::FLOAT4 => get(row.try_get::<_, Option<f32>>(i).map(|v| v.map(Value::from))),
        Type::FLOAT8 => get(row.try_get::<_, Option<f64>>(i).map(|v| v.map(Value::from))),
        Type::JSON | Type::JSONB => get(row.try_get::<_, Option<Value>>(i)),
        Type::BYTEA => get(row.try_get::<_, Option<Vec<u8>>>(i).map(|v| {
            v.map(|b| {
                Value::from(base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    b,
                ))
            })
        })),
        _ => get(row.try_get::<_, Option<String>>(i).map(|v| v.map(Value::from))),
    }
}

#[async_trait]
impl Binding for PostgresBinding {
    fn operations(&self) -> &'static [&'static str] {
        OPERATIONS
    }

    async fn run(&self, req: Request) -> crate::Result<Response> {
        if req.operation == "close" {
            self.pool.close();
            return Ok(Response::default());
        }
        let sql =
            meta(&req.metadata, "sql").ok_or_else(|| Error::Invalid("metadata sql is required".into()))?;
        let params: Vec<Value> = match meta(&req.metadata, "params") {
            None => Vec::new(),
            Some(p) => serde_json::from_str(p)
                .map_err(|e| Error::Invalid(format!("metadata params is not a JSON array: {e}")))?,
        };
        let started = (SystemTime::now(), Instant::now());
        let client = self.pool.get().await.map_err(backend)?;
        let stmt = client
            .prepare(sql)
            .await
            .map_err(|e| Error::Invalid(format!("sql: {e}")))?;
        if stmt.params().len() != params.len() {
            return Err(Error::Invalid(format!(
                "the statement takes {} parameters; params has {}",
                stmt.params().len(),
                params.len()
            )));
        }
        let values = params
            .iter()
            .zip(stmt.params())
            .enumerate()
            .map(|(n, (v, ty))| param(v, ty, n))
            .collect::<crate::Result<Vec<_>>>()?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect();
        let mut metadata = Metadata::from([
            ("operation".to_string(), req.operation.clone()),
            ("sql".to_string(), sql.to_string()),
            ("start-time".to_string(), crate::state::rfc3339(started.0)),
        ]);
        let data = if req.operation == "exec" {
            let n = client.execute(&stmt, &refs).await.map_err(backend)?;
            metadata.insert("rows-affected".into(), n.to_string());
            None
        } else {
            let rows = client.query(&stmt, &refs).await.map_err(backend)?;
            let out: Vec<Vec<Value>> = rows
                .iter()
                .map(|r| (0..r.columns().len()).map(|i| column(r, i)).collect())
                .collect();
            Some(Bytes::from(serde_json::to_vec(&out).map_err(backend)?))
        };
        metadata.insert("end-time".into(), crate::state::rfc3339(SystemTime::now()));
        metadata.insert("duration".into(), format!("{:?}", started.1.elapsed()));
        Ok(Response { data, metadata })
    }
}
