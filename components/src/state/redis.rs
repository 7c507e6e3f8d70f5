//! `state.redis`: each key is a hash `{data, version}` as Dapr lays it out, so
//! data written by either runtime reads back in the other. The ETag is the
//! integer `version`; checks and writes run inside one Lua script, so they are
//! atomic, and a transaction is one script call.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use ::redis::Script;
use async_trait::async_trait;

use super::*;

/// Validates every operation first, then applies them all. ARGV holds five
/// values per key: op (s|d), etag ("" = none), first-write (1|0), data, ttl seconds.
const APPLY: &str = r#"
for i = 1, #KEYS do
  local b = (i - 1) * 5
  local etag = ARGV[b + 2]
  local ver = redis.call("HGET", KEYS[i], "version")
  if etag ~= "" then
    if ver == false or ver ~= etag then
      return redis.error_reply("ETAG_MISMATCH " .. KEYS[i])
    end
  elseif ARGV[b + 3] == "1" and ver ~= false then
    return redis.error_reply("ETAG_MISMATCH " .. KEYS[i])
  end
end
for i = 1, #KEYS do
  local b = (i - 1) * 5
  if ARGV[b + 1] == "d" then
    redis.call("DEL", KEYS[i])
  else
    redis.call("HSET", KEYS[i], "data", ARGV[b + 4])
    redis.call("HINCRBY", KEYS[i], "version", 1)
    local ttl = tonumber(ARGV[b + 5])
    if ttl > 0 then
      redis.call("EXPIRE", KEYS[i], ttl)
    else
      redis.call("PERSIST", KEYS[i])
    end
  end
end
return #KEYS
"#;

/// The Redis store.
pub struct RedisStore {
    conn: crate::redis_conn::Conn,
    /// Whether keys live on different nodes (one pipeline per key then).
    cluster: bool,
    script: Script,
}

fn backend(e: ::redis::RedisError) -> StoreError {
    let text = e.to_string();
    if text.contains("ETAG_MISMATCH") {
        StoreError::EtagMismatch("the etag does not match the stored version".into())
    } else if e.code() == Some("CROSSSLOT") {
        StoreError::Backend(
            "in a Redis cluster the keys of one transaction must share a hash slot: \
             give them a common {tag} (the part in braces decides the slot)"
                .into(),
        )
    } else {
        StoreError::Backend(text)
    }
}

impl RedisStore {
    /// Connects to `redisHost` (`host:port`) with the optional password, username and database.
    pub async fn connect(metadata: &BTreeMap<String, String>) -> Result<Self, String> {
        let (redis, conn) = crate::redis_conn::connect(metadata).await?;
        Ok(Self {
            conn,
            cluster: redis.is_cluster(),
            script: Script::new(APPLY),
        })
    }

    async fn run(&self, ops: Vec<Operation>) -> StoreResult<()> {
        let mut inv = self.script.prepare_invoke();
        for op in &ops {
            let (key, etag) = match op {
                Operation::Upsert(r) => (&r.key, &r.etag),
                Operation::Delete(r) => (&r.key, &r.etag),
            };
            if let Some(e) = etag
                && e.parse::<u64>().is_err()
            {
                return Err(StoreError::EtagInvalid(e.clone()));
            }
            inv.key(key);
            match op {
                Operation::Upsert(r) => {
                    let first = if r.concurrency == Concurrency::FirstWrite {
                        "1"
                    } else {
                        "0"
                    };
                    let ttl = r.ttl.map_or(0, |d| d.as_secs().clamp(1, MAX_TTL_SECONDS as u64));
                    inv.arg("s")
                        .arg(r.etag.as_deref().unwrap_or(""))
                        .arg(first)
                        .arg(r.value.as_ref())
                        .arg(ttl);
                }
                Operation::Delete(r) => {
                    inv.arg("d")
                        .arg(r.etag.as_deref().unwrap_or(""))
                        .arg("0")
                        .arg("")
                        .arg(0);
                }
            }
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl StateStore for RedisStore {
    fn features(&self) -> &'static [&'static str] {
        &[ETAG, TRANSACTIONAL, TTL]
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Item>> {
        let mut conn = self.conn.clone();
        let (fields, pttl): ((Option<Vec<u8>>, Option<String>), i64) = ::redis::pipe()
            .cmd("HMGET")
            .arg(key)
            .arg("data")
            .arg("version")
            .cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let (Some(data), Some(version)) = fields else {
            return Ok(None);
        };
        let expires_at =
            (pttl > 0).then(|| expiry(SystemTime::now(), Duration::from_millis(pttl.unsigned_abs())));
        Ok(Some(Item {
            data: data.into(),
            etag: version,
            expires_at,
        }))
    }

    async fn set(&self, req: SetRequest) -> StoreResult<()> {
        self.run(vec![Operation::Upsert(req)]).await
    }

    async fn delete(&self, req: DeleteRequest) -> StoreResult<()> {
        self.run(vec![Operation::Delete(req)]).await
    }

    async fn transact(&self, ops: Vec<Operation>) -> StoreResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        self.run(ops).await
    }

    async fn bulk_get(&self, keys: &[String]) -> Vec<StoreResult<Option<Item>>> {
        if self.cluster {
            // A pipeline goes to one node; the keys' slots may be anywhere.
            return futures_util::future::join_all(keys.iter().map(|k| self.get(k))).await;
        }
        let mut pipe = ::redis::pipe();
        for k in keys {
            pipe.cmd("HMGET")
                .arg(k)
                .arg("data")
                .arg("version")
                .cmd("PTTL")
                .arg(k);
        }
        let mut conn = self.conn.clone();
        let res: Result<Vec<::redis::Value>, _> = pipe.query_async(&mut conn).await;
        match res {
            Ok(values) => values
                .chunks(2)
                .map(|pair| {
                    let [fields, pttl] = pair else {
                        return Err(StoreError::Backend("short reply from redis".into()));
                    };
                    let parse_err = |e: ::redis::ParsingError| StoreError::Backend(e.to_string());
                    let fields: (Option<Vec<u8>>, Option<String>) =
                        ::redis::from_redis_value_ref(fields).map_err(parse_err)?;
                    let pttl: i64 = ::redis::from_redis_value_ref(pttl).map_err(parse_err)?;
                    let (Some(data), Some(version)) = fields else {
                        return Ok(None);
                    };
                    let expires_at = (pttl > 0)
                        .then(|| expiry(SystemTime::now(), Duration::from_millis(pttl.unsigned_abs())));
                    Ok(Some(Item {
                        data: data.into(),
                        etag: version,
                        expires_at,
                    }))
                })
                .collect(),
            Err(e) => keys
                .iter()
                .map(|_| Err(StoreError::Backend(e.to_string())))
                .collect(),
        }
    }
}
