//! `bindings.localstorage`: files in `rootPath`. `create` writes the data to
//! `fileName` (a new UUID when absent) and answers with the name, `get`
//! reads one, `list` names them all (JSON), `delete` removes one. A name
//! that would leave `rootPath` (`..`, absolute paths) is refused.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Binding, Request, Response};
use crate::{Error, Metadata, meta};

/// The local storage binding.
pub struct LocalStorage {
    root: PathBuf,
}

const OPERATIONS: &[&str] = &["create", "get", "list", "delete"];

impl LocalStorage {
    /// Reads `rootPath`, creating the folder when needed.
    pub fn new(metadata: &Metadata) -> Result<Self, String> {
        let root = PathBuf::from(meta(metadata, "rootPath").ok_or("metadata rootPath is required")?);
        std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        Ok(Self { root })
    }

    /// The file `name` names inside the root, refusing any way out of it.
    fn path(&self, name: &str) -> crate::Result<PathBuf> {
        let rel = Path::new(name);
        let inside = !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(Error::Invalid(format!(
                "fileName {name:?} must be a relative path inside rootPath, without .."
            )));
        }
        Ok(self.root.join(rel))
    }
}

fn file_name(req: &Request) -> crate::Result<&str> {
    meta(&req.metadata, "fileName").ok_or_else(|| Error::Invalid("metadata fileName is required".into()))
}

fn io(name: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("file {name} does not exist")),
        _ => Error::Backend(format!("file {name}: {e}")),
    }
}

#[async_trait]
impl Binding for LocalStorage {
    fn operations(&self) -> &'static [&'static str] {
        OPERATIONS
    }

    async fn run(&self, req: Request) -> crate::Result<Response> {
        match req.operation.as_str() {
            "create" => {
                let name = meta(&req.metadata, "fileName").map_or_else(crate::uuid_v4, str::to_string);
                let path = self.path(&name)?;
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await.map_err(io(&name))?;
                }
                tokio::fs::write(&path, &req.data).await.map_err(io(&name))?;
                Ok(Response {
                    data: Some(Bytes::from(serde_json::json!({ "fileName": name }).to_string())),
                    metadata: Metadata::from([("fileName".to_string(), name)]),
                })
            }
            "get" => {
                let name = file_name(&req)?;
                let data = tokio::fs::read(self.path(name)?).await.map_err(io(name))?;
                Ok(Response {
                    data: Some(data.into()),
                    metadata: Metadata::new(),
                })
            }
            "delete" => {
                let name = file_name(&req)?;
                tokio::fs::remove_file(self.path(name)?).await.map_err(io(name))?;
                Ok(Response::default())
            }
            _ => {
                let mut names = Vec::new();
                let mut dirs = vec![self.root.clone()];
                while let Some(dir) = dirs.pop() {
                    let mut entries = tokio::fs::read_dir(&dir).await.map_err(io("rootPath"))?;
                    while let Some(e) = entries.next_entry().await.map_err(io("rootPath"))? {
                        let path = e.path();
                        if e.file_type().await.map_err(io("rootPath"))?.is_dir() {
                            dirs.push(path);
                        } else if let Ok(rel) = path.strip_prefix(&self.root) {
                            names.push(rel.to_string_lossy().into_owned());
                        }
                    }
                }
                names.sort();
                Ok(Response {
                    data: Some(Bytes::from(serde_json::to_vec(&names).unwrap_or_default())),
                    metadata: Metadata::new(),
                })
            }
        }
    }
}
