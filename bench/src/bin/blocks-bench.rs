//! `blocks-bench`: the building blocks beside their direct paths, in one
//! run — an output binding round trip (`bindings.http` to a loopback
//! server vs calling the server), `TryLock`/`Unlock` pairs on Redis (vs the
//! same commands from a Rust Redis client), and a state query over 100,000
//! items in PostgreSQL (vs the equivalent SQL). Beside the binding, when
//! nginx is installed, the same POST through one nginx reverse-proxy hop:
//! what a plain proxy hop costs on this machine, for scale.
//!
//! Build `daprd` in release mode first; see BENCHMARKS.md.

// Shared with `daprs-bench`, which uses all of it.
#[path = "../nginx.rs"]
mod nginx;
#[allow(dead_code)]
#[path = "../sidecar.rs"]
mod sidecar;

use std::{
    convert::Infallible,
    future::Future,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use daprs_proto::runtime::{TryLockRequest, UnlockRequest, dapr_client::DaprClient};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use sidecar::Daprd;

#[derive(Parser)]
#[command(
    name = "blocks-bench",
    about = "Measure bindings, locks and state query through daprd against direct use"
)]
struct Args {
    /// The daprd binary (default: next to this program).
    #[arg(long)]
    daprd: Option<PathBuf>,
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Items in the queried table.
    #[arg(long, default_value_t = 100_000)]
    items: u32,
}

/// Runs `conns` callers of `op` for `seconds`; calls per second.
async fn rate<F, Fut>(seconds: u64, conns: usize, op: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < until {
                op((c as u64) << 40 | i).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let start = Instant::now();
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// A loopback HTTP server answering every request with a small JSON body.
async fn server() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(port)
}

fn line(what: &str, via: f64, direct: f64, unit: &str) {
    println!(
        "{what:<34} daprd {via:>10.0} {unit}   direct {direct:>10.0} {unit}   ratio {:.0}%",
        100.0 * via / direct
    );
}

async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    body: Bytes,
) -> anyhow::Result<()> {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let res = client.request(req).await?;
    let status = res.status();
    let _ = res.into_body().collect().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = sidecar::binary(args.daprd.as_ref())?;
    let home = std::env::temp_dir().join(format!("daprs-blocks-bench-{}", std::process::id()));
    let res = home.join("resources");
    std::fs::create_dir_all(&res)?;
    let web = server().await?;
    let table = format!("daprs_bench_query_{}", std::process::id());
    std::fs::write(
        res.join("components.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: web}}
spec:
  type: bindings.http
  version: v1
  metadata: [{{name: url, value: \"http://127.0.0.1:{web}\"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: locks}}
spec:
  type: lock.redis
  version: v1
  metadata: [{{name: redisHost, value: \"127.0.0.1:6379\"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: pg}}
spec:
  type: state.postgresql
  version: v1
  metadata:
  - {{name: connectionString, value: \"host=127.0.0.1 user=postgres database=test sslmode=disable\"}}
  - {{name: tableName, value: {table}}}
"
        ),
    )?;
    let d = Daprd::start_with(
        &binary,
        &home,
        "bench",
        None,
        &["--resources-path", &res.display().to_string()],
        &[],
    )
    .await?;
    let (secs, conns) = (args.seconds, args.conns);
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    // Output binding round trip.
    let json = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    let body = Bytes::from(json.clone());
    let via_url = format!("http://127.0.0.1:{}/v1.0/bindings/web", d.http_port);
    let call = Bytes::from(format!("{{\"operation\":\"post\",\"data\":{json}}}"));
    let (c, u, b) = (http.clone(), via_url.clone(), call.clone());
    let via = rate(secs, conns, move |_| {
        let (c, u, b) = (c.clone(), u.clone(), b.clone());
        async move { post(&c, &u, b).await }
    })
    .await?;
    let (c, u, b) = (http.clone(), format!("http://127.0.0.1:{web}/"), body.clone());
    let direct = rate(secs, conns, move |_| {
        let (c, u, b) = (c.clone(), u.clone(), b.clone());
        async move { post(&c, &u, b).await }
    })
    .await?;
    line("bindings.http round trip (1 KiB)", via, direct, "req/s");
    match nginx::binary() {
        Some(bin) => {
            let hop = nginx::Nginx::start(&bin, &home, "nginx", web).await?;
            let (c, u, b) = (
                http.clone(),
                format!("http://127.0.0.1:{}/", hop.port),
                body.clone(),
            );
            let proxied = rate(secs, conns, move |_| {
                let (c, u, b) = (c.clone(), u.clone(), b.clone());
                async move { post(&c, &u, b).await }
            })
            .await?;
            println!(
                "{:<34} nginx {proxied:>10.0} req/s   ratio {:.0}% (one reverse-proxy hop, for scale)",
                "the same POST through nginx",
                100.0 * proxied / direct
            );
        }
        None => println!("nginx not installed: the one-hop reference is skipped"),
    }

    // Lock pairs.
    let grpc = DaprClient::connect(format!("http://127.0.0.1:{}", d.grpc_port)).await?;
    let via = rate(secs, conns, move |i| {
        let mut g = grpc.clone();
        async move {
            let resource = format!("bench-{i}");
            let ok = g
                .try_lock_alpha1(TryLockRequest {
                    store_name: "locks".into(),
                    resource_id: resource.clone(),
                    lock_owner: "bench".into(),
                    expiry_in_seconds: 30,
                })
                .await?
                .into_inner()
                .success;
            anyhow::ensure!(ok, "lock {resource} not taken");
            g.unlock_alpha1(UnlockRequest {
                store_name: "locks".into(),
                resource_id: resource,
                lock_owner: "bench".into(),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let redis = redis::Client::open("redis://127.0.0.1:6379")?
        .get_multiplexed_async_connection()
        .await?;
    let release = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 0 end return 1",
    );
    let direct = rate(secs, conns, move |i| {
        let (mut r, release) = (redis.clone(), release.clone());
        async move {
            let key = format!("bench-direct-{i}");
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg("bench")
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query_async(&mut r)
                .await?;
            anyhow::ensure!(set.is_some(), "lock {key} not taken");
            let _: i64 = release.key(&key).arg("bench").invoke_async(&mut r).await?;
            Ok(())
        }
    })
    .await?;
    line("TryLock+Unlock pairs (lock.redis)", via, direct, "pairs/s");

    // State query over `items` rows.
    let (pg, conn) =
        tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    pg.execute(
        &format!(
            "INSERT INTO {table} (key, value, etag, expires_at)
             SELECT 'bench||k' || i, convert_to(json_build_object('group', 'g' || (i % 100), 'n', i)::text, 'UTF8'), md5(i::text), NULL
             FROM generate_series(1, $1::int) AS i"
        ),
        &[&(args.items as i32)],
    )
    .await?;
    let query = Bytes::from(
        r#"{"filter":{"EQ":{"group":"g7"}},"sort":[{"key":"n","order":"DESC"}],"page":{"limit":100}}"#,
    );
    let q_url = format!("http://127.0.0.1:{}/v1.0-alpha1/state/pg/query", d.http_port);
    let (c, u, b) = (http.clone(), q_url, query);
    let via = rate(secs, 2, move |_| {
        let (c, u, b) = (c.clone(), u.clone(), b.clone());
        async move { post(&c, &u, b).await }
    })
    .await?;
    let sql = format!(
        "SELECT key, value, etag FROM {table}
         WHERE starts_with(key, 'bench||') AND (expires_at IS NULL OR expires_at > now())
           AND convert_from(value, 'UTF8')::jsonb ->> 'group' = 'g7'
         ORDER BY (convert_from(value, 'UTF8')::jsonb ->> 'n')::numeric DESC LIMIT 100"
    );
    let pg = Arc::new(pg);
    let direct = rate(secs, 2, move |_| {
        let (pg, sql) = (pg.clone(), sql.clone());
        async move {
            let rows = pg.query(&sql, &[]).await?;
            anyhow::ensure!(rows.len() == 100, "{} rows", rows.len());
            Ok(())
        }
    })
    .await?;
    line(
        &format!("state query over {} items (pg)", args.items),
        via,
        direct,
        "q/s",
    );
    let (pg, conn) =
        tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    pg.execute(&format!("DROP TABLE {table}"), &[]).await?;
    Ok(())
}
