//! The official Python and JavaScript SDKs' binding, configuration, lock
//! and state-query APIs against real daprd processes, as their
//! documentation shows them; a Python gRPC app takes input binding events.

use super::{
    harness::{Daprd, Spec, resources, temp_dir},
    sdk::{python_app, run_client, run_js, sdk_node, sdk_python},
};

const DB: &str = "9";

fn components(home: &std::path::Path) -> String {
    format!(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: files}}
spec:
  type: bindings.localstorage
  version: v1
  metadata: [{{name: rootPath, value: "{root}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: cache}}
spec:
  type: bindings.redis
  version: v1
  metadata: [{{name: redisHost, value: "127.0.0.1:6379"}}, {{name: redisDB, value: "{DB}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: config}}
spec:
  type: configuration.redis
  version: v1
  metadata: [{{name: redisHost, value: "127.0.0.1:6379"}}, {{name: redisDB, value: "{DB}"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: lockstore}}
spec:
  type: lock.redis
  version: v1
  metadata: [{{name: redisHost, value: "127.0.0.1:6379"}}]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: statestore}}
spec: {{type: state.in-memory, version: v1}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: ticker}}
spec:
  type: bindings.cron
  version: v1
  metadata: [{{name: schedule, value: "@every 200ms"}}]
"#,
        root = home.join("files").display()
    )
}

/// Writes a configuration item the way an operator of the store does.
fn redis_set(key: &str, value: &str) {
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).expect("client");
    let mut conn = client.get_connection().expect("connect");
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut conn)
        .expect("set");
}

#[tokio::test]
async fn python_sdk_bindings_configuration_locks_and_queries() {
    let Some(python) = sdk_python() else { return };
    let home = temp_dir("sdk-blocks");
    let res = resources(&home, &components(&home));
    let events = home.join("events.txt");
    let (_app, app_port) = python_app(&python, "blocks_app.py", &[events.as_os_str()]).await;
    let mut spec = Spec::new("py-blocks", &home);
    spec.resources = Some(&res);
    spec.app_port = Some(app_port);
    spec.protocol = "grpc";
    let d = Daprd::start(spec).await;
    let key = format!("py-cfg-{}", std::process::id());
    redis_set(&key, "v1||1");
    let stdout = run_client(&python, "blocks_client.py", &[&key], &d).await;
    for check in [
        "binding create",
        "binding get",
        "binding bad operation refused",
        "configuration get",
        "configuration change seen",
        "configuration unsubscribe",
        "lock taken",
        "lock held against others",
        "lock released by the context manager",
        "unlock of another owner refused",
        "unlock",
        "query first page",
        "query next page",
    ] {
        assert!(stdout.contains(&format!("ok {check}\n")), "{check}: {stdout}");
    }
    // The app built with dapr-ext-grpc took the cron binding's events.
    let ticks = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(ticks.lines().count() >= 2, "{ticks:?}");
}

#[tokio::test]
async fn js_sdk_bindings_configuration_locks_and_queries_over_http_and_grpc() {
    let Some(dir) = sdk_node() else { return };
    let home = temp_dir("sdk-js-blocks");
    let res = resources(&home, &components(&home));
    let mut spec = Spec::new("js-blocks", &home);
    spec.resources = Some(&res);
    let d = Daprd::start(spec).await;
    let key = format!("js-cfg-{}", std::process::id());
    redis_set(&key, "v1||1");
    let args = vec![d.http_port.to_string(), d.grpc_port.to_string(), key];
    let stdout = run_js(&dir, "blocks.mjs", args, vec![]).await;
    for via in ["http", "grpc"] {
        for check in ["binding send", "lock", "lock held", "unlock", "state query"] {
            assert!(
                stdout.contains(&format!("ok js {via} {check}\n")),
                "{via} {check}: {stdout}"
            );
        }
    }
    for check in ["configuration get", "configuration subscribe"] {
        assert!(
            stdout.contains(&format!("ok js grpc {check}\n")),
            "{check}: {stdout}"
        );
    }
}
