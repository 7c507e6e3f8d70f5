//! Redis behind Sentinel (`failover: true`): the state, lock and pub/sub
//! suites against a master that Sentinel names, and a failover in the middle
//! that the components follow. Each test runs its own master, replica and
//! Sentinel processes on free ports.

use std::{process::Command, time::Duration};

use redis::AsyncCommands;

use super::{
    lock, pubsub,
    restart::{Broker, Cleanup, data_dir, free_port, quiet, redis_server},
    state,
};
use crate::unique;

const MASTER: &str = "daprs-master";

/// A master, optionally a replica of it, and one Sentinel watching them.
struct Deployment {
    master: u16,
    replica: Option<u16>,
    sentinel: u16,
    _servers: Vec<Broker>,
    _cleanup: Cleanup,
}

fn data_server(port: u16, dir: &std::path::Path, replica_of: Option<u16>) -> Broker {
    let mut args: Vec<String> = ["--appendonly", "no", "--dbfilename"].map(String::from).to_vec();
    args.push(format!("dump-{port}.rdb"));
    if let Some(m) = replica_of {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
    }
    redis_server(port, dir, args)
}

async fn query(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

/// Polls `check` every 50 ms for up to 30 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

impl Deployment {
    async fn start(with_replica: bool) -> Self {
        let dir = data_dir("daprs-sentinel");
        let master = free_port();
        let mut servers = vec![data_server(master, &dir, None)];
        servers[0].ready().await;
        let replica = if with_replica {
            let port = free_port();
            let r = data_server(port, &dir, Some(master));
            r.ready().await;
            servers.push(r);
            let info = redis::cmd("INFO").arg("replication").clone();
            until("the replica to sync", || async {
                let v = query(port, &info).await;
                matches!(v, Ok(redis::Value::BulkString(b)) if String::from_utf8_lossy(&b).contains("master_link_status:up"))
            })
            .await;
            Some(port)
        } else {
            None
        };
        let sentinel = free_port();
        let conf = dir.join(format!("sentinel-{sentinel}.conf"));
        let text = format!(
            "port {sentinel}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER} 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 5000\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("sentinel.conf");
        let s = Broker::new(sentinel, move || {
            quiet(Command::new("redis-server").arg(&conf).arg("--sentinel"))
        });
        s.ready().await;
        servers.push(s);
        let d = Self {
            master,
            replica,
            sentinel,
            _servers: servers,
            _cleanup: Cleanup(dir),
        };
        d.wait_for_master(master, "Sentinel to know the master").await;
        if let Some(r) = replica {
            let replicas = redis::cmd("SENTINEL").arg("replicas").arg(MASTER).clone();
            until("Sentinel to know the replica", || async {
                let v = query(sentinel, &replicas).await;
                matches!(v, Ok(v) if format!("{v:?}").contains(&r.to_string()))
            })
            .await;
        }
        d
    }

    /// Waits until Sentinel names the server on `port` as the master.
    async fn wait_for_master(&self, port: u16, what: &str) {
        let ask = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER)
            .clone();
        let named = || async {
            let v: Vec<String> = redis::from_redis_value(query(self.sentinel, &ask).await.ok()?).ok()?;
            v.get(1)?.parse::<u16>().ok()
        };
        until(what, || async { named().await == Some(port) }).await;
    }

    /// Component metadata that reaches the master through Sentinel; the
    /// Sentinel address without a port would mean 26379, so it has one.
    fn metadata(&self) -> Vec<(&'static str, String)> {
        vec![
            ("redisHost", format!("127.0.0.1:{}", self.sentinel)),
            ("failover", "true".into()),
            ("sentinelMasterName", MASTER.into()),
        ]
    }
}

fn pairs<'a>(md: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    md.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn the_suites_pass_through_sentinel() {
    let d = Deployment::start(false).await;
    let md = d.metadata();
    let md = pairs(&md);
    state::suite(state::open("state.redis", &md).await).await;
    lock::suite(
        lock::open("lock.redis", &md).await,
        lock::open("lock.redis", &md).await,
    )
    .await;
    let mut streams = md.clone();
    streams.extend([("processingTimeout", "200ms"), ("redeliverInterval", "100ms")]);
    let caps = pubsub::Caps {
        keeps: true,
        metadata: true,
    };
    pubsub::suite(pubsub::open("pubsub.redis", &streams).await, caps).await;
}

#[tokio::test]
async fn a_failover_is_followed_without_losing_a_write() {
    let d = Deployment::start(true).await;
    let replica = d.replica.expect("a replica");
    let md = d.metadata();
    let store = state::open("state.redis", &pairs(&md)).await;
    let key = unique("failover");
    store.set(state::set(&key, "before")).await.expect("set before");

    // The replica has the write before it is promoted.
    let wait = redis::cmd("WAIT").arg(1).arg(5000).clone();
    query(d.master, &wait).await.expect("WAIT");
    let failover = redis::cmd("SENTINEL").arg("failover").arg(MASTER).clone();
    // Sentinel promotes a replica only once it has heard from it itself.
    until("Sentinel to accept the failover", || async {
        query(d.sentinel, &failover).await.is_ok()
    })
    .await;
    d.wait_for_master(replica, "the replica to be promoted").await;

    // The old master turns into a replica (read-only) or goes away; the
    // store's next writes land on the new master either way.
    assert_eq!(state::value(&*store, &key).await.as_deref(), Some("before"));
    let mut written = false;
    for _ in 0..100 {
        if store.set(state::set(&key, "after")).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "no write succeeded after the failover");
    assert_eq!(state::value(&*store, &key).await.as_deref(), Some("after"));
    let client = redis::Client::open(format!("redis://127.0.0.1:{replica}/")).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let data: Option<String> = conn.hget(&key, "data").await.expect("HGET");
    assert_eq!(data.as_deref(), Some("after"), "the write is on the new master");
}
