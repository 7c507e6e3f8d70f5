//! The state building block, shared by the HTTP and gRPC APIs: store lookup,
//! key validation and prefixing, and mapping store failures to Dapr's errors.

use std::collections::BTreeMap;

use bytes::Bytes;
use daprs_proto::common::{StateItem, state_options::StateConcurrency};
use http::StatusCode;
use tonic::Code;

use daprs_components::state::{
    self, Concurrency, DeleteRequest, Item, Operation, SEPARATOR, SetRequest, StoreError,
};

use crate::{
    components::backend_failure,
    error::ApiError,
    metrics::Block,
    resiliency::Failure,
    runtime::{Runtime, StoreEntry},
};

/// One key to save, as both APIs describe it.
#[derive(Debug, Clone, Default)]
pub struct SaveItem {
    /// User key.
    pub key: String,
    /// Bytes to store.
    pub value: Bytes,
    /// Expected ETag.
    pub etag: Option<String>,
    /// Request metadata (`ttlInSeconds`, ...).
    pub metadata: BTreeMap<String, String>,
    /// Concurrency mode.
    pub concurrency: Concurrency,
}

impl From<StateItem> for SaveItem {
    /// A state item as the gRPC API carries it.
    fn from(item: StateItem) -> Self {
        let concurrency = match item.options.as_ref().map(|o| o.concurrency()) {
            Some(StateConcurrency::ConcurrencyFirstWrite) => Concurrency::FirstWrite,
            _ => Concurrency::LastWrite,
        };
        SaveItem {
            key: item.key,
            value: item.value,
            etag: item.etag.map(|e| e.value),
            metadata: item.metadata.into_iter().collect(),
            concurrency,
        }
    }
}

/// One key of a bulk read.
#[derive(Debug, Clone, Default)]
pub struct BulkItem {
    /// User key.
    pub key: String,
    /// Stored bytes, if found.
    pub data: Option<Bytes>,
    /// ETag, if found.
    pub etag: Option<String>,
    /// Per-key error.
    pub error: Option<String>,
    /// Response metadata.
    pub metadata: BTreeMap<String, String>,
}

/// A transaction step, as both APIs describe it.
#[derive(Debug, Clone)]
pub enum TxOp {
    /// Write.
    Upsert(SaveItem),
    /// Delete (key, etag, metadata).
    Delete(String, Option<String>, BTreeMap<String, String>),
}

/// Parses a concurrency option (`first-write`, `last-write`, or empty).
pub fn parse_concurrency(v: &str) -> Result<Concurrency, ApiError> {
    match v {
        "" | "last-write" => Ok(Concurrency::LastWrite),
        "first-write" => Ok(Concurrency::FirstWrite),
        other => Err(ApiError::malformed(format!(
            "unknown concurrency {other:?}: expected first-write or last-write"
        ))),
    }
}

/// Checks a consistency option (`eventual`, `strong`, or empty).
pub fn check_consistency(v: &str) -> Result<(), ApiError> {
    match v {
        "" | "eventual" | "strong" => Ok(()),
        other => Err(ApiError::malformed(format!(
            "unknown consistency {other:?}: expected eventual or strong"
        ))),
    }
}

/// Response metadata for an item (its expiry time, when it has one).
pub fn item_metadata(item: &Item) -> BTreeMap<String, String> {
    item.expires_at
        .map(|t| BTreeMap::from([("ttlExpireTime".to_string(), state::rfc3339(t))]))
        .unwrap_or_default()
}

fn store_error(code: &'static str, what: String, e: StoreError) -> ApiError {
    match e {
        StoreError::EtagMismatch(_) => {
            ApiError::new(code, StatusCode::CONFLICT, Code::Aborted, format!("{what}: {e}"))
        }
        StoreError::EtagInvalid(_) | StoreError::Invalid(_) => ApiError::new(
            code,
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("{what}: {e}"),
        ),
        StoreError::Backend(_) | StoreError::NotFound(_) | StoreError::Closed => {
            ApiError::internal(code, format!("{what}: {e}"))
        }
    }
}

impl Runtime {
    /// The named store, or Dapr's not-configured / not-found errors.
    pub fn state_store(&self, name: &str) -> Result<std::sync::Arc<StoreEntry>, ApiError> {
        let loaded = self
            .loaded
            .read()
            .map_err(|_| ApiError::internal("ERR_STATE_STORE_NOT_FOUND", "component table unavailable"))?;
        if loaded.stores.is_empty() {
            return Err(ApiError::new(
                "ERR_STATE_STORE_NOT_CONFIGURED",
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::FailedPrecondition,
                "state store is not configured",
            )
            .with_reason("DAPR_STATE_NOT_CONFIGURED"));
        }
        loaded.stores.get(name).cloned().ok_or_else(|| {
            ApiError::new(
                "ERR_STATE_STORE_NOT_FOUND",
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("state store {name} is not found"),
            )
            .with_reason("DAPR_STATE_NOT_FOUND")
        })
    }

    /// The stored form of a user key.
    pub fn state_key(&self, store: &str, entry: &StoreEntry, key: &str) -> Result<String, ApiError> {
        if key.is_empty() {
            return Err(ApiError::malformed("a key is required").with_resource("state", store));
        }
        if key.contains(SEPARATOR) {
            return Err(ApiError::malformed(format!(
                "input key/keyPrefix '{key}' can't contain '{SEPARATOR}'"
            ))
            .with_reason("DAPR_STATE_ILLEGAL_KEY")
            .with_resource("state", store));
        }
        Ok(
            match entry
                .prefix
                .prefix(&self.app_id, store, self.namespace.as_deref())
            {
                Some(p) => format!("{p}{SEPARATOR}{key}"),
                None => key.to_string(),
            },
        )
    }

    /// The longest key a save accepts: one that, percent-encoded at worst,
    /// still fits in the request line of `GET /v1.0/state/{store}/{key}`
    /// under the `--read-buffer-size` limit, so every saved key can be read.
    pub fn max_key_len(&self) -> usize {
        (self
            .settings
            .read_buffer_size
            .max(crate::settings::MIN_READ_BUFFER)
            - 1024)
            / 3
    }

    fn set_request(&self, store: &str, entry: &StoreEntry, item: SaveItem) -> Result<SetRequest, ApiError> {
        let max = self.max_key_len();
        if item.key.len() > max {
            return Err(ApiError::malformed(format!(
                "the key is {} bytes; keys may be at most {max} bytes so that GET can read them \
                 back (raise --read-buffer-size for longer keys)",
                item.key.len()
            ))
            .with_resource("state", store));
        }
        let ttl = state::parse_ttl(&item.metadata)
            .map_err(|e| ApiError::malformed(e).with_resource("state", store))?;
        Ok(SetRequest {
            key: self.state_key(store, entry, &item.key)?,
            value: item.value,
            etag: item.etag,
            concurrency: item.concurrency,
            ttl,
        })
    }

    /// Reads one key.
    pub async fn get_state(&self, store: &str, key: &str) -> Result<Option<Item>, ApiError> {
        let entry = self.state_store(store)?;
        let full = self.state_key(store, &entry, key)?;
        self.timed(
            Block::State,
            store,
            "get",
            self.outbound(store, || entry.store.get(&full), backend_failure),
        )
        .await
        .map_err(|e| {
            store_error(
                "ERR_STATE_GET",
                format!("fail to get {key} from state store {store}"),
                e,
            )
        })
    }

    /// Reads many keys; per-key failures are reported in the items.
    pub async fn bulk_get_state(&self, store: &str, keys: &[String]) -> Result<Vec<BulkItem>, ApiError> {
        let entry = self.state_store(store)?;
        let mut full = Vec::with_capacity(keys.len());
        for k in keys {
            full.push(self.state_key(store, &entry, k)?);
        }
        let results = self
            .timed(
                Block::State,
                store,
                "bulk_get",
                self.outbound(
                    store,
                    || async { Ok(entry.store.bulk_get(&full).await) },
                    |r| {
                        r.as_ref()
                            .is_ok_and(|v| v.iter().any(|x| backend_failure(x).is_some()))
                            .then_some(Failure::Transport)
                    },
                ),
            )
            .await
            .unwrap_or_else(|e| {
                let e = e.to_string();
                full.iter().map(|_| Err(StoreError::Backend(e.clone()))).collect()
            });
        Ok(keys
            .iter()
            .zip(results)
            .map(|(key, r)| match r {
                Ok(Some(item)) => BulkItem {
                    key: key.clone(),
                    metadata: item_metadata(&item),
                    etag: Some(item.etag),
                    data: Some(item.data),
                    error: None,
                },
                Ok(None) => BulkItem {
                    key: key.clone(),
                    ..Default::default()
                },
                Err(e) => BulkItem {
                    key: key.clone(),
                    error: Some(e.to_string()),
                    ..Default::default()
                },
            })
            .collect())
    }

    /// Saves items in order; the first failure stops the rest.
    pub async fn save_state(&self, store: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
        let entry = self.state_store(store)?;
        let mut reqs = Vec::with_capacity(items.len());
        for item in items {
            reqs.push(self.set_request(store, &entry, item)?);
        }
        for req in reqs {
            let key = state::original_key(&req.key).to_string();
            self.timed(
                Block::State,
                store,
                "set",
                self.outbound(store, || entry.store.set(req.clone()), backend_failure),
            )
            .await
            .map_err(|e| {
                store_error(
                    "ERR_STATE_SAVE",
                    format!("failed saving state {key} in state store {store}"),
                    e,
                )
            })?;
        }
        Ok(())
    }

    /// Deletes one key.
    pub async fn delete_state(&self, store: &str, key: &str, etag: Option<String>) -> Result<(), ApiError> {
        let entry = self.state_store(store)?;
        let full = self.state_key(store, &entry, key)?;
        let req = DeleteRequest { key: full, etag };
        self.timed(
            Block::State,
            store,
            "delete",
            self.outbound(store, || entry.store.delete(req.clone()), backend_failure),
        )
        .await
        .map_err(|e| {
            store_error(
                "ERR_STATE_DELETE",
                format!("failed deleting state with key {key}"),
                e,
            )
        })
    }

    /// Applies a transaction atomically.
    pub async fn transact_state(&self, store: &str, ops: Vec<TxOp>) -> Result<(), ApiError> {
        let entry = self.state_store(store)?;
        if !entry.store.features().contains(&state::TRANSACTIONAL) {
            return Err(ApiError::internal(
                "ERR_STATE_STORE_NOT_SUPPORTED",
                format!("state store {store} doesn't support transactions"),
            )
            .with_reason("DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED"));
        }
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            out.push(match op {
                TxOp::Upsert(item) => Operation::Upsert(self.set_request(store, &entry, item)?),
                TxOp::Delete(key, etag, _) => Operation::Delete(DeleteRequest {
                    key: self.state_key(store, &entry, &key)?,
                    etag,
                }),
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        self.timed(
            Block::State,
            store,
            "transaction",
            self.outbound(store, || entry.store.transact(out.clone()), backend_failure),
        )
        .await
        .map_err(|e| {
            store_error(
                "ERR_STATE_TRANSACTION",
                format!("error while executing state transaction on {store}"),
                e,
            )
        })
    }

    /// Runs a query (Dapr's query language, as JSON text) over this app's
    /// items in `store`: the page of results and the next page's token.
    pub async fn query_state(&self, store: &str, query: &[u8]) -> Result<QueryPage, ApiError> {
        let entry = self.state_store(store)?;
        if !entry.store.features().contains(&state::QUERY_API) {
            return Err(ApiError::internal(
                "ERR_STATE_STORE_NOT_SUPPORTED",
                format!("state store {store} doesn't support query"),
            )
            .with_reason("DAPR_STATE_QUERYING_NOT_SUPPORTED")
            .with_resource("state", store));
        }
        let q = state::query::parse(query).map_err(|e| {
            ApiError::malformed(format!("failed to parse the query: {e}")).with_resource("state", store)
        })?;
        // Only this app's items: the keys under its prefix.
        let prefix = entry
            .prefix
            .prefix(&self.app_id, store, self.namespace.as_deref())
            .map(|p| format!("{p}{SEPARATOR}"))
            .unwrap_or_default();
        let failed = |e: StoreError| {
            ApiError::internal(
                "ERR_STATE_QUERY",
                format!("failed query in state store {store}: {e}"),
            )
            .with_reason("DAPR_STATE_QUERY_FAILED")
            .with_resource("state", store)
        };
        let items = self
            .timed(
                Block::State,
                store,
                "query",
                self.outbound(
                    store,
                    || entry.store.scan(&prefix, q.filter.as_ref()),
                    backend_failure,
                ),
            )
            .await
            .map_err(failed)?
            .unwrap_or_default();
        let rows = items
            .into_iter()
            .map(|(k, item)| {
                let v = serde_json::from_slice(&item.data).unwrap_or(serde_json::Value::Null);
                (k, v, item)
            })
            .collect();
        let (page, token) = state::query::run(&q, rows);
        Ok(QueryPage {
            results: page
                .into_iter()
                .map(|(k, item)| (state::original_key(&k).to_string(), item))
                .collect(),
            token,
        })
    }
}

/// One page of query results: (user key, item) pairs and the next page's token.
pub struct QueryPage {
    pub results: Vec<(String, Item)>,
    pub token: Option<String>,
}
