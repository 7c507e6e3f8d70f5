//! Name resolution: app-id → address of that app's sidecar (its internal gRPC port).
//!
//! - Standalone: a zero-configuration registry in the data folder. Each sidecar
//!   writes `registry/<namespace>/<app-id>/<pid>` holding `host:port` and removes it
//!   on exit; entries of processes that are gone are ignored and cleaned up.
//! - Kubernetes: the operator's headless Service
//!   `<app-id>-dapr.<namespace>.svc.<cluster-domain>:<port>`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Namespace used when `NAMESPACE` is unset.
pub const DEFAULT_NAMESPACE: &str = "default";

/// An app-id, optionally qualified with a namespace (`app.ns`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The app-id.
    pub app_id: String,
    /// The namespace, or None for the caller's own.
    pub namespace: Option<String>,
}

impl Target {
    /// Parses `app` or `app.namespace`; more than one dot is an error.
    pub fn parse(id: &str) -> Result<Self, String> {
        let id = id.trim();
        match id.split('.').collect::<Vec<_>>()[..] {
            [""] => Err("app id is empty".into()),
            [app] => Ok(Self {
                app_id: app.into(),
                namespace: None,
            }),
            [app, ns] if !app.is_empty() && !ns.is_empty() => Ok(Self {
                app_id: app.into(),
                namespace: Some(ns.into()),
            }),
            _ => Err(format!(
                "invalid app id {id:?}: expected app-id or app-id.namespace"
            )),
        }
    }
}

/// The Kubernetes DNS name of an app's sidecar.
pub fn kubernetes_address(app_id: &str, namespace: &str, cluster_domain: &str, port: u16) -> String {
    format!("{app_id}-dapr.{namespace}.svc.{cluster_domain}:{port}")
}

/// Resolves app-ids to sidecar addresses.
pub enum Resolver {
    /// The local folder registry.
    Local(LocalRegistry),
    /// Cluster DNS.
    Kubernetes {
        /// e.g. `cluster.local`.
        cluster_domain: String,
        /// The internal gRPC port of every sidecar.
        port: u16,
    },
}

impl Resolver {
    /// Addresses (`host:port`) for a target in `namespace`.
    pub fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, String> {
        match self {
            Self::Local(r) => r.resolve(app_id, namespace),
            Self::Kubernetes { cluster_domain, port } => {
                Ok(kubernetes_address(app_id, namespace, cluster_domain, *port))
            }
        }
    }

    /// Forgets cached addresses of an app after a connection failure.
    pub fn invalidate(&self, app_id: &str, namespace: &str) {
        if let Self::Local(r) = self {
            r.invalidate(app_id, namespace);
        }
    }
}

/// Addresses read for each app-id and namespace, and when; looked up by
/// `&str` at every call, so without allocating a key.
type AddressCache = HashMap<String, HashMap<String, (Instant, Vec<String>)>>;

/// The standalone registry folder.
pub struct LocalRegistry {
    root: PathBuf,
    cache: Mutex<AddressCache>,
    next: AtomicUsize,
}

/// How long resolved addresses are reused before the folder is read again.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// A registration that is removed when dropped.
pub struct Registration {
    path: PathBuf,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one entry: a socket address, which is short. Whatever else is in
/// the folder is never read whole nor passed on.
fn read_entry(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_ENTRY as u64 + 1)
        .read_to_string(&mut text)
        .ok()?;
    let addr = text.trim();
    (text.len() <= MAX_ENTRY && addr.parse::<std::net::SocketAddr>().is_ok()).then(|| addr.to_string())
}

/// The longest registry entry read.
const MAX_ENTRY: usize = 128;

fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    // Without /proc (macOS, Windows) a dead entry is found by a failed connection instead.
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

impl LocalRegistry {
    /// A registry rooted at `<data dir>/registry`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("registry"),
            cache: Mutex::default(),
            next: AtomicUsize::new(0),
        }
    }

    fn app_dir(&self, app_id: &str, namespace: &str) -> PathBuf {
        self.root.join(namespace).join(app_id)
    }

    /// Announces this process as `app_id` at `address`.
    pub fn register(&self, app_id: &str, namespace: &str, address: &str) -> std::io::Result<Registration> {
        let dir = self.app_dir(app_id, namespace);
        std::fs::create_dir_all(&dir)?;
        let pid = std::process::id();
        let tmp = dir.join(format!(".{pid}.tmp"));
        std::fs::write(&tmp, address)?;
        let path = dir.join(pid.to_string());
        std::fs::rename(&tmp, &path)?;
        Ok(Registration { path })
    }

    fn read(&self, app_id: &str, namespace: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.app_dir(app_id, namespace)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if !process_alive(pid) {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            match read_entry(&entry.path()) {
                Some(addr) => out.push(addr),
                None => tracing::debug!(path = %entry.path().display(), "registry entry is not an address"),
            }
        }
        out.sort();
        out
    }

    /// One address of `app_id`, spreading calls over its instances.
    pub fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, String> {
        let cached = self.cache.lock().ok().and_then(|c| {
            c.get(app_id)?
                .get(namespace)
                .filter(|(at, _)| at.elapsed() < CACHE_TTL)
                .and_then(|(_, a)| self.pick(a))
        });
        if let Some(addr) = cached {
            return Ok(addr);
        }
        let addrs = self.read(app_id, namespace);
        let picked = self.pick(&addrs).ok_or_else(|| {
            format!("app id {app_id} not found in namespace {namespace}: no sidecar with that id is running")
        })?;
        // An app not running yet is looked for again on the next call, so
        // one that starts is reached at once.
        if let Ok(mut c) = self.cache.lock() {
            c.entry(app_id.to_string())
                .or_default()
                .insert(namespace.to_string(), (Instant::now(), addrs));
        }
        Ok(picked)
    }

    /// The next of `addrs` in turn.
    fn pick(&self, addrs: &[String]) -> Option<String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        addrs.get(n.checked_rem(addrs.len())?).cloned()
    }

    /// Drops cached addresses of an app.
    pub fn invalidate(&self, app_id: &str, namespace: &str) {
        if let Ok(mut c) = self.cache.lock()
            && let Some(by_namespace) = c.get_mut(app_id)
        {
            by_namespace.remove(namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("a").expect("ok"),
            Target {
                app_id: "a".into(),
                namespace: None
            }
        );
        assert_eq!(
            Target::parse("a.ns").expect("ok").namespace.as_deref(),
            Some("ns")
        );
        assert!(Target::parse("a.b.c").is_err());
        assert!(Target::parse("").is_err());
        assert!(Target::parse("a.").is_err());
    }

    #[test]
    fn kubernetes_names() {
        assert_eq!(
            kubernetes_address("orders", "prod", "cluster.local", 50002),
            "orders-dapr.prod.svc.cluster.local:50002"
        );
    }

    #[test]
    fn register_resolve_and_unregister() {
        let dir = std::env::temp_dir().join(format!("daprs-registry-test-{}", std::process::id()));
        let reg = LocalRegistry::new(&dir);
        assert!(reg.resolve("svc", "default").is_err());
        let r = reg
            .register("svc", "default", "127.0.0.1:4000")
            .expect("register");
        reg.invalidate("svc", "default");
        assert_eq!(reg.resolve("svc", "default").as_deref(), Ok("127.0.0.1:4000"));
        assert!(reg.resolve("svc", "other").is_err(), "namespaces are separate");
        // A dead process's entry is ignored and removed.
        let stale = dir.join("registry/default/svc/999999999");
        std::fs::write(&stale, "127.0.0.1:1").expect("write");
        reg.invalidate("svc", "default");
        assert_eq!(reg.read("svc", "default"), ["127.0.0.1:4000"]);
        assert!(!stale.exists());
        // An entry that is not an address (here 10 MB) is skipped, not read whole.
        let mine = reg.app_dir("svc", "default").join(std::process::id().to_string());
        std::fs::write(&mine, "x".repeat(10 << 20)).expect("write");
        assert!(reg.read("svc", "default").is_empty());
        std::fs::write(&mine, "127.0.0.1:4000\n").expect("write");
        drop(r);
        reg.invalidate("svc", "default");
        assert!(reg.resolve("svc", "default").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
