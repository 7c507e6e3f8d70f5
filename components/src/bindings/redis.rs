//! `bindings.redis`: `create` sets the call's `key` to the data (with
//! `ttlInSeconds`), `get` reads it, `delete` removes it, `increment` adds
//! one, as Dapr's Redis binding does.

use ::redis::AsyncCommands;

use crate::redis_conn::Conn;
use async_trait::async_trait;

use super::{Binding, Request, Response};
use crate::{Error, Metadata, meta};

/// The Redis binding.
pub struct RedisBinding {
    conn: Conn,
}

const OPERATIONS: &[&str] = &["create", "get", "delete", "increment"];

impl RedisBinding {
    /// Connects with the shared Redis metadata.
    pub async fn connect(metadata: &Metadata) -> Result<Self, String> {
        let (_, conn) = crate::redis_conn::connect(metadata).await?;
        Ok(Self { conn })
    }
}

fn backend(e: ::redis::RedisError) -> Error {
    Error::Backend(e.to_string())
}

#[async_trait]
impl Binding for RedisBinding {
    fn operations(&self) -> &'static [&'static str] {
        OPERATIONS
    }

    async fn run(&self, req: Request) -> crate::Result<Response> {
        let key =
            meta(&req.metadata, "key").ok_or_else(|| Error::Invalid("metadata key is required".into()))?;
        let mut conn = self.conn.clone();
        let mut out = Response::default();
        match req.operation.as_str() {
            "create" => {
                let ttl = crate::state::parse_ttl(&req.metadata).map_err(Error::Invalid)?;
                match ttl {
                    Some(t) => conn.set_ex::<_, _, ()>(key, req.data.as_ref(), t.as_secs()).await,
                    None => conn.set::<_, _, ()>(key, req.data.as_ref()).await,
                }
                .map_err(backend)?;
            }
            "get" => {
                let v: Option<Vec<u8>> = conn.get(key).await.map_err(backend)?;
                out.data = v.map(Into::into);
            }
            "delete" => conn.del::<_, ()>(key).await.map_err(backend)?,
            _ => {
                let n: i64 = conn.incr(key, 1).await.map_err(backend)?;
                out.data = Some(n.to_string().into());
            }
        }
        Ok(out)
    }
}
