//! Redis in cluster mode (`redisType: cluster`): the state, lock and pub/sub
//! suites against three nodes that share the slots, and the clear errors
//! for what a cluster cannot do. The test runs its own cluster on free ports.

use std::{process::Command, time::Duration};

use daprs_components::state::{Concurrency, Operation, SetRequest};

use super::{
    lock, pubsub,
    restart::{Broker, Cleanup, data_dir, free_port, redis_server},
    state,
};
use crate::unique;

/// Three master nodes with the slots spread over them.
struct Cluster {
    ports: Vec<u16>,
    _nodes: Vec<Broker>,
    _cleanup: Cleanup,
}

impl Cluster {
    async fn start() -> Self {
        let dir = data_dir("daprs-cluster");
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..3 {
            // The bus port is set too: the default, port + 10000, may not exist.
            let (port, bus) = (free_port(), free_port());
            let args = ["--appendonly", "no", "--cluster-enabled", "yes", "--cluster-port"];
            let mut args: Vec<String> = args.map(String::from).to_vec();
            args.extend([
                bus.to_string(),
                "--cluster-config-file".into(),
                format!("nodes-{port}.conf"),
            ]);
            let node = redis_server(port, &dir, args);
            node.ready().await;
            nodes.push(node);
            ports.push(port);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
            let mut ok = false;
            for _ in 0..600 {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .unwrap_or_default();
                    if info.contains("cluster_state:ok") {
                        ok = true;
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(ok, "node {port} did not see the cluster become ok");
        }
        Self {
            ports,
            _nodes: nodes,
            _cleanup: Cleanup(dir),
        }
    }

    /// Two of the three nodes, as a user lists some seeds of a cluster.
    fn hosts(&self) -> String {
        format!("127.0.0.1:{},127.0.0.1:{}", self.ports[0], self.ports[1])
    }
}

#[tokio::test]
async fn the_suites_pass_on_a_cluster() {
    let c = Cluster::start().await;
    let hosts = c.hosts();
    let md = [("redisHost", hosts.as_str()), ("redisType", "cluster")];
    let store = state::open("state.redis", &md).await;
    state::suite(store.clone()).await;
    lock::suite(
        lock::open("lock.redis", &md).await,
        lock::open("lock.redis", &md).await,
    )
    .await;
    let streams = [
        md[0],
        md[1],
        ("processingTimeout", "200ms"),
        ("redeliverInterval", "100ms"),
    ];
    let caps = pubsub::Caps {
        keeps: true,
        metadata: true,
    };
    pubsub::suite(pubsub::open("pubsub.redis", &streams).await, caps).await;

    // Keys on several nodes read back in bulk, in the order asked for.
    let keys: Vec<String> = (0..20).map(|i| unique(&format!("spread{i}"))).collect();
    for k in &keys {
        store.set(state::set(k, k)).await.expect("set");
    }
    let got = store.bulk_get(&keys).await;
    for (k, item) in keys.iter().zip(got) {
        let item = item.expect("bulk get").expect("present");
        assert_eq!(item.data.as_ref(), k.as_bytes());
    }

    // A transaction over keys of different slots is refused, saying why,
    // and changes nothing.
    let upsert = |key: &str| {
        Operation::Upsert(SetRequest {
            concurrency: Concurrency::LastWrite,
            ..state::set(key, "tx")
        })
    };
    let err = store
        .transact(keys.iter().map(|k| upsert(k)).collect())
        .await
        .expect_err("a cross-slot transaction");
    assert!(err.to_string().contains("hash slot"), "{err}");
    assert_eq!(
        state::value(&*store, &keys[0]).await.as_deref(),
        Some(keys[0].as_str())
    );

    // What a cluster cannot be asked for is refused when the component starts.
    let with_db = [md[0], md[1], ("redisDB", "2")];
    let err = crate::try_build("state.redis", &with_db, &Default::default())
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("database 0"), "{err}");
    let err = crate::try_build("configuration.redis", &md, &Default::default())
        .await
        .err()
        .unwrap_or_default();
    assert!(err.contains("redisType cluster"), "{err}");
}
