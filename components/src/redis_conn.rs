//! The connection every Redis component shares, with Dapr's metadata names:
//! `redisHost`, `redisPassword`, `redisUsername`, `redisDB`, and TLS by
//! `enableTLS` (the server's certificate checked against the system's roots
//! unless `insecureSkipTLSVerify`), with a client certificate from
//! `clientCert` and `clientKey` (PEM).
//!
//! With `failover: true`, `redisHost` lists Redis Sentinels (comma-separated,
//! port 26379 when none is given) and `sentinelMasterName` names the master
//! they watch (`sentinelUsername`/`sentinelPassword` authenticate to them).
//! Commands go to the master Sentinel names. A task listens for Sentinel's
//! announcements, so commands move to a new master as soon as it is
//! promoted, not only once the old one stops taking writes (a write
//! there would be lost when it rejoins as a replica). A command that finds
//! the master gone or read-only also asks Sentinel again and is sent once
//! more to the new master.
//!
//! With `redisType: cluster`, `redisHost` lists some of the cluster's nodes
//! (comma-separated); commands go to the node that holds their key's slot.
//! A cluster has only database 0.

use std::{
    future::Future,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;

use ::redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    RedisError, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
};

use crate::{Metadata, meta};

/// Sentinel's own port, for addresses in `redisHost` that give none.
const SENTINEL_PORT: u16 = 26379;

fn flag(metadata: &Metadata, key: &str) -> bool {
    meta(metadata, key).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Where a component's Redis is: one server, the master Sentinel names, or
/// a cluster.
#[derive(Clone)]
pub enum Redis {
    Node(Box<Client>),
    Failover(Arc<Sentinel>),
    Cluster(Box<ClusterClient>),
}

/// The Sentinels of one master, and how many switches they have announced.
pub struct Sentinel {
    /// A client for each Sentinel, in the order `redisHost` lists them.
    sentinels: Vec<Client>,
    master: String,
    /// How the master is connected to, wherever it is.
    node: Settings,
    switches: AtomicU64,
    watching: std::sync::OnceLock<()>,
}

impl Sentinel {
    /// Starts listening for a new master (once): each announcement for
    /// this master, and each time the listening connection is lost (an
    /// announcement may have been missed), counts as a switch.
    fn watch(self: &Arc<Self>) {
        self.watching.get_or_init(|| {
            tokio::spawn(listen(Arc::downgrade(self)));
        });
    }

    /// A client for the master the first Sentinel that answers names.
    /// (`get-master-addr-by-name` names a promoted replica from the moment
    /// it is promoted; the list of masters only once the failover ends.)
    async fn master(&self) -> RedisResult<Client> {
        let ask = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .clone();
        let mut last = RedisError::from((::redis::ErrorKind::Io, "no Sentinel is listed"));
        for sentinel in &self.sentinels {
            let answer = async {
                let mut conn = sentinel.get_multiplexed_async_connection().await?;
                ask.query_async::<Option<(String, u16)>>(&mut conn).await
            };
            match tokio::time::timeout(Duration::from_secs(2), answer).await {
                Ok(Ok(Some((host, port)))) => return node_client(&host, port, &self.node),
                Ok(Ok(None)) => {
                    last = RedisError::from((
                        ::redis::ErrorKind::Io,
                        "Sentinel does not know the master",
                        self.master.clone(),
                    ))
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = RedisError::from((::redis::ErrorKind::Io, "Sentinel did not answer in time"))
                }
            }
        }
        Err(last)
    }

    /// A connection to the first Sentinel that takes one.
    async fn any(&self) -> RedisResult<::redis::aio::PubSub> {
        let mut last = RedisError::from((::redis::ErrorKind::Io, "no Sentinel is listed"));
        for sentinel in &self.sentinels {
            match sentinel.get_async_pubsub().await {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Whether a Sentinel announcement is about `master`'s address changing:
/// `+promoted-slave` (`slave <ip>:<port> <ip> <port> @ <master> <ip> <port>`),
/// when the replica has become master, or `+switch-master` (`<master> <old
/// ip> <old port> <new ip> <new port>`), when the failover has ended.
fn announces(text: &str, master: &str) -> bool {
    let mut words = text.split(' ');
    match words.next() {
        Some("slave") => words.skip_while(|w| *w != "@").nth(1) == Some(master),
        first => first == Some(master),
    }
}

async fn listen(sentinel: Weak<Sentinel>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let pubsub = match sentinel.upgrade() {
            None => return,
            Some(s) => {
                async {
                    let mut pubsub = s.any().await?;
                    pubsub.subscribe(&["+promoted-slave", "+switch-master"]).await?;
                    RedisResult::Ok(pubsub)
                }
                .await
            }
        };
        if let Ok(pubsub) = pubsub {
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    msg = messages.next() => {
                        let Some(msg) = msg else { break };
                        let Some(s) = sentinel.upgrade() else { return };
                        let text: String = msg.get_payload().unwrap_or_default();
                        if announces(&text, &s.master) {
                            tracing::info!(announcement = %text, "Sentinel switched the Redis master");
                            s.switches.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                    _ = tick.tick() => {
                        if sentinel.strong_count() == 0 {
                            return;
                        }
                    }
                }
            }
        }
        match sentinel.upgrade() {
            None => return,
            Some(s) => s.switches.fetch_add(1, Ordering::AcqRel),
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What every connection to the data server is opened with.
#[derive(Clone)]
struct Settings {
    redis: RedisConnectionInfo,
    /// TLS, and whether the server's certificate goes unchecked.
    tls: Option<bool>,
    client_tls: Option<ClientTlsConfig>,
}

fn settings(metadata: &Metadata) -> Result<Settings, String> {
    let db: i64 = match meta(metadata, "redisDB") {
        Some(v) => v.parse().map_err(|_| format!("redisDB {v:?} is not a number"))?,
        None => 0,
    };
    let mut redis = RedisConnectionInfo::default().set_db(db);
    if let Some(pw) = meta(metadata, "redisPassword") {
        redis = redis.set_password(pw);
    }
    if let Some(user) = meta(metadata, "redisUsername") {
        redis = redis.set_username(user);
    }
    let tls = flag(metadata, "enableTLS").then(|| flag(metadata, "insecureSkipTLSVerify"));
    let client_tls = match crate::meta_pair(metadata, "clientCert", "clientKey")? {
        None => None,
        Some((cert, key)) if tls.is_some() => Some(ClientTlsConfig {
            client_cert: cert.as_bytes().to_vec(),
            client_key: key.as_bytes().to_vec(),
        }),
        Some(_) => return Err("clientCert and clientKey need enableTLS: true".into()),
    };
    Ok(Settings {
        redis,
        tls,
        client_tls,
    })
}

/// `host:port` (or `[v6]:port`, or a bare host with `default_port`).
fn host_port(host: &str, default_port: u16) -> Result<(String, u16), String> {
    let (h, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => {
            let port = p
                .parse()
                .map_err(|_| format!("redisHost {host:?} has an invalid port"))?;
            (h, port)
        }
        _ => (host, default_port),
    };
    let name = h.trim_matches(|c| c == '[' || c == ']');
    if name.is_empty() {
        return Err(format!("redisHost {host:?} names no host"));
    }
    Ok((name.to_string(), port))
}

/// The comma-separated `host:port` list of `redisHost` (a cluster's nodes,
/// or the Sentinels).
fn host_list(hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| host_port(h, default_port))
        .collect()
}

/// Where the metadata says Redis is, and `redisHost` for messages.
pub fn locate(metadata: &Metadata) -> Result<(Redis, String), String> {
    let host = meta(metadata, "redisHost").ok_or("metadata redisHost is required (host:port)")?;
    let s = settings(metadata)?;
    let cluster = match meta(metadata, "redisType").map(str::trim) {
        None | Some("") => false,
        Some(t) if t.eq_ignore_ascii_case("node") => false,
        Some(t) if t.eq_ignore_ascii_case("cluster") => true,
        Some(t) => return Err(format!("redisType {t:?} is neither node nor cluster")),
    };
    match (cluster, flag(metadata, "failover")) {
        (true, true) => return Err("failover (Sentinel) and redisType cluster exclude each other".into()),
        (true, false) => return cluster_client(host, &s).map(|c| (c, host.to_string())),
        (false, true) => return sentinel(metadata, host, s).map(|r| (r, host.to_string())),
        (false, false) => {}
    }
    let (h, port) = host_port(host, 6379)?;
    let client = node_client(&h, port, &s).map_err(|e| e.to_string())?;
    Ok((Redis::Node(Box::new(client)), host.to_string()))
}

/// A client for the data server at `host:port`.
fn node_client(host: &str, port: u16, s: &Settings) -> RedisResult<Client> {
    let addr = match s.tls {
        Some(insecure) => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(host.to_string(), port),
    };
    let info = addr.into_connection_info()?.set_redis_settings(s.redis.clone());
    match s.tls {
        Some(_) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: s.client_tls.clone(),
                root_cert: None,
            },
        ),
        None => Client::open(info),
    }
}

fn cluster_client(hosts: &str, s: &Settings) -> Result<Redis, String> {
    if s.redis.db() != 0 {
        return Err("a Redis cluster has only database 0: remove redisDB or set it to 0".into());
    }
    let nodes = host_list(hosts, 6379)?
        .into_iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host, port))
        .collect::<Vec<_>>();
    let mut b = ClusterClientBuilder::new(nodes).connection_timeout(Duration::from_secs(1));
    if let Some(user) = s.redis.username() {
        b = b.username(user);
    }
    if let Some(pw) = s.redis.password() {
        b = b.password(pw);
    }
    if let Some(insecure) = s.tls {
        b = b
            .tls(if insecure {
                TlsMode::Insecure
            } else {
                TlsMode::Secure
            })
            .certs(TlsCertificates {
                client_tls: s.client_tls.clone(),
                root_cert: None,
            });
    }
    let client = b.build().map_err(|e| e.to_string())?;
    Ok(Redis::Cluster(Box::new(client)))
}

fn sentinel(metadata: &Metadata, hosts: &str, node: Settings) -> Result<Redis, String> {
    let master = meta(metadata, "sentinelMasterName")
        .filter(|n| !n.trim().is_empty())
        .ok_or("failover: true needs sentinelMasterName, the master's name in Sentinel")?;
    // Sentinels take the same TLS as the master, and their own credentials.
    let mut own = RedisConnectionInfo::default();
    if let Some(user) = meta(metadata, "sentinelUsername") {
        own = own.set_username(user);
    }
    if let Some(pw) = meta(metadata, "sentinelPassword") {
        own = own.set_password(pw);
    }
    let at = Settings {
        redis: own,
        ..node.clone()
    };
    let sentinels = host_list(hosts, SENTINEL_PORT)?
        .into_iter()
        .map(|(host, port)| node_client(&host, port, &at).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Redis::Failover(Arc::new(Sentinel {
        sentinels,
        master: master.to_string(),
        node,
        switches: AtomicU64::new(0),
        watching: std::sync::OnceLock::new(),
    })))
}

impl Redis {
    /// A client for the server commands go to now: the master, under
    /// Sentinel. A cluster has no one such server.
    pub async fn client(&self) -> RedisResult<Client> {
        match self {
            Self::Node(c) => Ok((**c).clone()),
            Self::Failover(s) => s.master().await,
            Self::Cluster(_) => Err(RedisError::from((
                ::redis::ErrorKind::InvalidClientConfig,
                "this component needs one Redis server; redisType cluster is not supported for it",
            ))),
        }
    }

    /// Whether commands go to a cluster, where a multi-key command's keys
    /// must share a hash slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A new managed connection, reconnecting as `config` says.
    pub async fn open(&self, config: ConnectionManagerConfig) -> RedisResult<Conn> {
        match self {
            Self::Node(c) => Ok(Conn::Node(
                ConnectionManager::new_with_config((**c).clone(), config).await?,
            )),
            Self::Cluster(c) => {
                let mut cluster = ClusterConfig::new();
                if let Some(t) = config.response_timeout() {
                    cluster = cluster.set_response_timeout(t);
                }
                Ok(Conn::Cluster(c.get_async_connection_with_config(cluster).await?))
            }
            Self::Failover(sentinel) => {
                sentinel.watch();
                let switches = sentinel.switches.load(Ordering::Acquire);
                let conn =
                    ConnectionManager::new_with_config(sentinel.master().await?, config.clone()).await?;
                Ok(Conn::Failover(Arc::new(Failover {
                    sentinel: sentinel.clone(),
                    reconnecting: tokio::sync::Mutex::new(()),
                    current: std::sync::Mutex::new(Current {
                        generation: 0,
                        switches,
                        conn,
                    }),
                    config,
                })))
            }
        }
    }
}

/// Connection settings that fail a first connection within a second (so a
/// component whose server is down says so at once) and, once connected,
/// reconnect a few times with a short pause before a command fails.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(2)
        .set_min_delay(std::time::Duration::from_millis(100))
        .set_max_delay(std::time::Duration::from_secs(1))
}

/// Where the metadata says Redis is, and a managed connection to it, made
/// once to prove the server answers.
pub async fn connect(metadata: &Metadata) -> Result<(Redis, Conn), String> {
    let (redis, host) = locate(metadata)?;
    let conn = redis
        .open(manager_config())
        .await
        .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    Ok((redis, conn))
}

/// A managed connection to the server, or to whichever server is master.
/// Cloning shares it.
#[derive(Clone)]
pub enum Conn {
    Node(ConnectionManager),
    Failover(Arc<Failover>),
    Cluster(ClusterConnection),
}

/// The connection to the master Sentinel named last, and how to find the next.
pub struct Failover {
    sentinel: Arc<Sentinel>,
    /// Held while a new connection is made, so one is made at a time.
    reconnecting: tokio::sync::Mutex<()>,
    current: std::sync::Mutex<Current>,
    config: ConnectionManagerConfig,
}

#[derive(Clone)]
struct Current {
    /// Counts the connections made, so concurrent failures reconnect once.
    generation: u64,
    /// The switches Sentinel had announced before this master was asked for.
    switches: u64,
    conn: ConnectionManager,
}

/// Whether an error says the master is not where it was.
fn master_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.code() == Some("READONLY")
}

impl Failover {
    /// Runs `call` on the current master's connection; if the master has
    /// moved, once more on the new one.
    async fn send<T, Fut>(&self, call: impl Fn(ConnectionManager) -> Fut) -> RedisResult<T>
    where
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut current = crate::lock(&self.current).clone();
        let switches = self.sentinel.switches.load(Ordering::Acquire);
        if current.switches != switches {
            match self.reconnect(current.generation).await {
                Ok(fresh) => current = fresh,
                Err(e) => {
                    // Sentinel is away: go on with the master known last,
                    // and ask again at the next announcement.
                    tracing::warn!(error = %e, "asking Sentinel for the master failed");
                    crate::lock(&self.current).switches = switches;
                }
            }
        }
        let seen = current.generation;
        match call(current.conn).await {
            Err(e) if master_moved(&e) => match self.reconnect(seen).await {
                Ok(fresh) => call(fresh.conn).await,
                Err(again) => {
                    tracing::warn!(error = %again, "asking Sentinel for the master failed");
                    Err(e)
                }
            },
            other => other,
        }
    }

    /// A connection to the master Sentinel names now; made once for all the
    /// commands that failed on generation `seen`.
    async fn reconnect(&self, seen: u64) -> RedisResult<Current> {
        let _one = self.reconnecting.lock().await;
        {
            let current = crate::lock(&self.current);
            if current.generation != seen {
                return Ok(current.clone());
            }
        }
        let switches = self.sentinel.switches.load(Ordering::Acquire);
        let client = self.sentinel.master().await?;
        let fresh = Current {
            generation: seen.wrapping_add(1),
            switches,
            conn: ConnectionManager::new_with_config(client, self.config.clone()).await?,
        };
        *crate::lock(&self.current) = fresh.clone();
        Ok(fresh)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Failover(f) => {
                Box::pin(f.send(move |mut c| async move { c.req_packed_command(cmd).await }))
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Failover(f) => Box::pin(
                f.send(move |mut c| async move { c.req_packed_commands(pipeline, offset, count).await }),
            ),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Failover(f) => crate::lock(&f.current).conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(pairs: &[(&str, &str)]) -> String {
        let md: Metadata = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        locate(&md).err().unwrap_or_default()
    }

    #[test]
    fn announcements_are_matched_to_their_master() {
        let promoted = "slave 127.0.0.1:6380 127.0.0.1 6380 @ orders 127.0.0.1 6379";
        let switched = "orders 127.0.0.1 6379 127.0.0.1 6380";
        for text in [promoted, switched] {
            assert!(announces(text, "orders"), "{text}");
            assert!(!announces(text, "other"), "{text}");
        }
        assert!(!announces("", "orders"));
        assert!(!announces("slave 127.0.0.1:6380 127.0.0.1 6380", "orders"));
    }

    #[test]
    fn settings_it_cannot_honour_are_refused_by_name() {
        let host = ("redisHost", "127.0.0.1:6379");
        for (extra, named) in [
            (("failover", "true"), "sentinelMasterName"),
            (("redisType", "sharded"), "redisType"),
            (("clientCert", "PEM"), "clientKey"),
            (("redisDB", "first"), "redisDB"),
        ] {
            let e = refused(&[host, extra]);
            assert!(e.contains(named), "{extra:?}: {e}");
        }
        let e = refused(&[host, ("clientCert", "PEM"), ("clientKey", "PEM")]);
        assert!(e.contains("enableTLS"), "{e}");
        assert!(refused(&[("redisHost", "127.0.0.1:port")]).contains("port"));
    }
}
