//! A broker restart in the middle of a stream loses no message whose
//! publish was acknowledged. Each test runs its own broker process (with
//! its own port and data folder), since restarting the shared one would
//! disturb every other test.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use daprs_components::{
    Error,
    pubsub::{CONSUMER_ID, Handler, Message, PubSub, Subscription},
};

use super::pubsub::open;
use crate::{md, unique};

/// A broker process, stopped (SIGTERM, so it saves its data) on drop.
pub struct Broker {
    child: Option<Child>,
    start: Box<dyn Fn() -> Child + Send>,
    port: u16,
    /// Where a broker started through a wrapper writes the pid of the
    /// process that must get the signal.
    pid_file: Option<PathBuf>,
}

impl Broker {
    pub fn new(port: u16, start: impl Fn() -> Child + Send + 'static) -> Self {
        let child = Some(start());
        Self {
            child,
            start: Box::new(start),
            port,
            pid_file: None,
        }
    }

    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let server = self
            .pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|p| p.trim().to_string());
        let pid = server.clone().unwrap_or_else(|| c.id().to_string());
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if let Some(pid) = server {
            // Not our child: wait for it to go, then for its wrapper.
            let proc = PathBuf::from(format!("/proc/{pid}"));
            for _ in 0..600 {
                if !proc.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
        }
        let _ = c.wait();
    }

    async fn restart(&mut self) {
        self.stop();
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_err(),
            "the broker on {} is still up after it was stopped",
            self.port
        );
        self.child = Some((self.start)());
        self.ready().await;
    }

    pub async fn ready(&self) {
        // RabbitMQ takes seconds to start on a busy machine.
        for _ in 0..2400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("broker on {} did not start", self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

/// Removes a broker's data folder when the test ends (after the broker stopped).
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A redis-server on `port`, keeping its files in `dir`, with `args` added.
pub fn redis_server(port: u16, dir: &std::path::Path, args: Vec<String>) -> Broker {
    let dir = dir.to_path_buf();
    Broker::new(port, move || {
        quiet(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(&args)
                .arg("--dir")
                .arg(&dir),
        )
    })
}

pub fn quiet(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the broker")
}

/// Publishes 0..40 with a restart after 20; every publish that returned Ok
/// must be delivered. Publishes that fail while the broker is away are
/// tried again, as an app would.
async fn no_acknowledged_message_lost(mut broker: Broker, kind: &str, metadata: &[(&str, &str)]) {
    broker.ready().await;
    let p: Arc<dyn PubSub> = open(kind, metadata).await;
    let topic = unique("restart");
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let handler: Handler = {
        let seen = seen.clone();
        Arc::new(move |m: Message| {
            let seen = seen.clone();
            Box::pin(async move {
                seen.lock()
                    .map_err(|_| Error::Closed)?
                    .insert(String::from_utf8_lossy(&m.data).into_owned());
                Ok(())
            })
        })
    };
    let sub = Subscription {
        topic: topic.clone(),
        metadata: md(&[(CONSUMER_ID, &unique("g"))]),
    };
    let running = p.subscribe(sub, handler).await.expect("subscribe");
    let mut acknowledged = BTreeSet::new();
    for i in 0..40 {
        if i == 20 {
            broker.restart().await;
        }
        let text = format!("m{i:02}");
        let msg = Message {
            topic: topic.clone(),
            data: text.clone().into(),
            content_type: None,
            metadata: md(&[]),
        };
        for _ in 0..100 {
            if p.publish(msg.clone()).await.is_ok() {
                acknowledged.insert(text.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(acknowledged.len() >= 30, "the broker came back: {acknowledged:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = seen.lock().expect("lock").clone();
        if acknowledged.is_subset(&got) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lost: {:?}",
            acknowledged.difference(&got).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}

#[tokio::test]
async fn redis_streams_survive_a_restart() {
    let (port, dir) = (free_port(), data_dir("daprs-restart-redis"));
    let _cleanup = Cleanup(dir.clone());
    let always = ["--appendonly", "yes", "--appendfsync", "always"];
    let broker = redis_server(port, &dir, always.map(String::from).to_vec());
    let host = format!("127.0.0.1:{port}");
    let md = [
        ("redisHost", host.as_str()),
        ("redeliverInterval", "200ms"),
        ("processingTimeout", "1s"),
    ];
    no_acknowledged_message_lost(broker, "pubsub.redis", &md).await;
}

#[tokio::test]
async fn jetstream_survives_a_restart() {
    let (port, dir) = (free_port(), data_dir("daprs-restart-nats"));
    let _cleanup = Cleanup(dir.clone());
    let broker = Broker::new(port, move || {
        quiet(
            Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&dir),
        )
    });
    let url = format!("nats://127.0.0.1:{port}");
    no_acknowledged_message_lost(broker, "pubsub.jetstream", &[("natsURL", url.as_str())]).await;
}

#[tokio::test]
async fn mqtt_survives_a_restart() {
    let (port, dir) = (free_port(), data_dir("daprs-restart-mqtt"));
    let _cleanup = Cleanup(dir.clone());
    let conf = dir.join("mosquitto.conf");
    let text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nuser root\n",
        dir.display()
    );
    std::fs::write(&conf, text).expect("config");
    let broker = Broker::new(port, move || {
        quiet(Command::new("mosquitto").arg("-c").arg(&conf))
    });
    let url = format!("tcp://127.0.0.1:{port}");
    let id = unique("restart");
    no_acknowledged_message_lost(
        broker,
        "pubsub.mqtt3",
        &[("url", url.as_str()), ("consumerID", id.as_str())],
    )
    .await;
}

/// A RabbitMQ node of its own: its own name, ports, config and data folder
/// (`dir`, which holds any files `conf` names), run as the rabbitmq user as
/// the server's wrapper insists. `conf` is the node's `rabbitmq.conf`,
/// `plugins` its enabled plugins. Its port is `port`.
pub fn rabbitmq_node(dir: &std::path::Path, port: u16, conf: &str, plugins: &str) -> Broker {
    let dist = free_port();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("config");
    write("rabbitmq.conf", conf);
    write("enabled_plugins", &format!("[{plugins}].\n"));
    write(
        "env.conf",
        &format!("NODENAME=daprs{port}@localhost\nERL_EPMD_ADDRESS=127.0.0.1\n"),
    );
    let owned = Command::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(owned.success());
    let start_dir = dir.to_path_buf();
    let mut broker = Broker::new(port, move || {
        let d = |name: &str| start_dir.join(name);
        quiet(
            Command::new("rabbitmq-server")
                .current_dir(&start_dir)
                .env("RABBITMQ_CONF_ENV_FILE", d("env.conf"))
                .env("RABBITMQ_CONFIG_FILE", d("rabbitmq.conf"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
                .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
                .env("RABBITMQ_LOG_BASE", d("log"))
                .env("RABBITMQ_PID_FILE", d("pid"))
                .env("RABBITMQ_DIST_PORT", dist.to_string()),
        )
    });
    broker.pid_file = Some(dir.join("pid"));
    broker
}

#[tokio::test]
async fn rabbitmq_survives_a_restart() {
    let (port, dir) = (free_port(), data_dir("daprs-restart-rabbit"));
    let _cleanup = Cleanup(dir.clone());
    let conf = format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n");
    let broker = rabbitmq_node(&dir, port, &conf, "");
    let url = format!("amqp://guest:guest@127.0.0.1:{port}");
    let md = [
        ("connectionString", url.as_str()),
        ("durable", "true"),
        ("deletedWhenUnused", "false"),
        ("deliveryMode", "2"),
        ("reconnectWaitSeconds", "1"),
    ];
    no_acknowledged_message_lost(broker, "pubsub.rabbitmq", &md).await;
}
