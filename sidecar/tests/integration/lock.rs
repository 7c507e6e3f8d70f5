//! Distributed locks through daprd over HTTP and gRPC: two sidecars of one
//! app contend for a Redis lock, leases expire, and bad requests get
//! Dapr's error codes while the sidecar keeps serving.

use daprs_proto::runtime::{TryLockRequest, UnlockRequest};
use tonic::Code;

use super::harness::{Daprd, Spec, resources, temp_dir};

const LOCKS: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: redislock}
spec:
  type: lock.redis
  version: v1
  metadata:
  - {name: redisHost, value: "127.0.0.1:6379"}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec: {type: state.in-memory, version: v1}
"#;

fn body(resource: &str, owner: &str, expiry: i64) -> String {
    serde_json::json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry}).to_string()
}

#[tokio::test]
async fn two_sidecars_of_one_app_contend_for_a_redis_lock() {
    let home = temp_dir("lock");
    let res = resources(&home, LOCKS);
    let start = |home| {
        let mut s = Spec::new("locker", home);
        s.resources = Some(&res);
        Daprd::start(s)
    };
    let (a, b) = (start(&home).await, start(&home).await);
    let resource = format!("order-{}", std::process::id());

    let r = a
        .send(
            "POST",
            "/v1.0-alpha1/lock/redislock",
            &[],
            body(&resource, "a", 30),
        )
        .await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"success": true})));
    // The other replica of the same app sees the same lock.
    let r = b
        .send(
            "POST",
            "/v1.0-alpha1/lock/redislock",
            &[],
            body(&resource, "b", 30),
        )
        .await;
    assert_eq!(r.json(), serde_json::json!({"success": false}));
    let mut grpc = b.grpc().await;
    let unlock = |owner: &str| UnlockRequest {
        store_name: "redislock".into(),
        resource_id: resource.clone(),
        lock_owner: owner.into(),
    };
    let s = grpc
        .unlock_alpha1(unlock("b"))
        .await
        .expect("unlock")
        .into_inner();
    assert_eq!(s.status, 2, "LOCK_BELONGS_TO_OTHERS");
    let r = a
        .send(
            "POST",
            "/v1.0-alpha1/unlock/redislock",
            &[],
            body(&resource, "a", 0),
        )
        .await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"status": 0})));
    let s = grpc
        .unlock_alpha1(unlock("a"))
        .await
        .expect("unlock")
        .into_inner();
    assert_eq!(s.status, 1, "LOCK_DOES_NOT_EXIST");

    // gRPC, with snake_case JSON on HTTP as protojson allows; a one-second lease expires.
    let taken = grpc
        .try_lock_alpha1(TryLockRequest {
            store_name: "redislock".into(),
            resource_id: resource.clone(),
            lock_owner: "b".into(),
            expiry_in_seconds: 1,
        })
        .await
        .expect("try lock")
        .into_inner();
    assert!(taken.success);
    let snake = serde_json::json!({"resource_id": resource, "lock_owner": "a", "expiry_in_seconds": "5"});
    let r = a
        .send("POST", "/v1.0-alpha1/lock/redislock", &[], snake.to_string())
        .await;
    assert_eq!(r.json()["success"], false);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = a
        .send("POST", "/v1.0-alpha1/lock/redislock", &[], snake.to_string())
        .await;
    assert_eq!(r.json()["success"], true, "the lease of b expired");
    // b's lease is over: b cannot release a's.
    let s = grpc
        .unlock_alpha1(unlock("b"))
        .await
        .expect("unlock")
        .into_inner();
    assert_eq!(s.status, 2);

    // Keys are prefixed with the app id, as Dapr stores them.
    assert_eq!(
        redis_get(&format!("lock||locker||{resource}")).await.as_deref(),
        Some("a")
    );

    // Bad requests.
    for (path, b, status, code) in [
        (
            "/v1.0-alpha1/lock/nolock",
            body("r", "o", 5),
            400,
            "ERR_LOCK_STORE_NOT_FOUND",
        ),
        (
            "/v1.0-alpha1/lock/statestore",
            body("r", "o", 5),
            400,
            "ERR_LOCK_STORE_NOT_FOUND",
        ),
        (
            "/v1.0-alpha1/lock/redislock",
            body("r", "", 5),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "/v1.0-alpha1/lock/redislock",
            body("", "o", 5),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "/v1.0-alpha1/lock/redislock",
            body("r", "o", 0),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "/v1.0-alpha1/lock/redislock",
            body("r", "o", -3),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "/v1.0-alpha1/lock/redislock",
            "{not json".into(),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (
            "/v1.0-alpha1/unlock/redislock",
            body("r", "", 0),
            400,
            "ERR_MALFORMED_REQUEST",
        ),
    ] {
        let r = a.send("POST", path, &[], b.clone()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (status, code.to_string()),
            "{path} {b}"
        );
    }
    let r = a
        .send("POST", "/v1.0-alpha1/lock/statestore", &[], body("r", "o", 5))
        .await;
    assert!(r.text().contains("state.in-memory"), "{}", r.text());
    let s = grpc
        .try_lock_alpha1(TryLockRequest {
            store_name: "redislock".into(),
            resource_id: "r".into(),
            lock_owner: "o".into(),
            expiry_in_seconds: 0,
        })
        .await
        .expect_err("no expiry");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(a.get("/v1.0/healthz/outbound").await.map(|r| r.status), Ok(204));
}

#[tokio::test]
async fn a_sidecar_without_lock_stores_says_none_is_configured() {
    let home = temp_dir("nolock");
    let d = Daprd::start(Spec::new("nolock", &home)).await;
    let r = d
        .send("POST", "/v1.0-alpha1/lock/any", &[], body("r", "o", 5))
        .await;
    assert_eq!(
        (r.status, r.error_code()),
        (500, "ERR_LOCK_STORE_NOT_CONFIGURED".to_string())
    );
}

/// One key read straight from Redis.
async fn redis_get(key: &str) -> Option<String> {
    let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("get")
}
