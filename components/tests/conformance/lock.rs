//! The lock store contract, run against in-memory and Redis. Two handles
//! on one Redis server stand for two sidecars of one app.

use std::{sync::Arc, time::Duration};

use daprs_components::{
    lock::{LockStore, Unlocked},
    registry::Built,
};

use crate::unique;

pub async fn open(kind: &str, metadata: &[(&str, &str)]) -> Arc<dyn LockStore> {
    match crate::build(kind, metadata, &Default::default()).await {
        Built::Lock(l) => l,
        _ => panic!("{kind} is not a lock store"),
    }
}

const LONG: Duration = Duration::from_secs(30);

/// Everything a lock store promises; `a` and `b` may be the same store or
/// two clients of one server.
pub async fn suite(a: Arc<dyn LockStore>, b: Arc<dyn LockStore>) {
    let r = unique("res");

    // One owner at a time; not even the holder takes it twice.
    assert_eq!(a.try_lock(&r, "one", LONG).await, Ok(true));
    assert_eq!(b.try_lock(&r, "two", LONG).await, Ok(false));
    assert_eq!(a.try_lock(&r, "one", LONG).await, Ok(false));

    // Only the holder releases it.
    assert_eq!(b.unlock(&r, "two").await, Ok(Unlocked::OtherOwner));
    assert_eq!(a.unlock(&r, "one").await, Ok(Unlocked::Success));
    assert_eq!(a.unlock(&r, "one").await, Ok(Unlocked::NotFound));
    assert_eq!(b.try_lock(&r, "two", LONG).await, Ok(true));
    assert_eq!(b.unlock(&r, "two").await, Ok(Unlocked::Success));

    // Contention: of many concurrent takers exactly one wins.
    let c = unique("contended");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            s.try_lock(&c, &format!("o{i}"), LONG).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.expect("task") == Ok(true) {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one of the contenders holds the lock");

    // Expiry: a lease ends by itself, and the old owner cannot release the
    // lease a new owner took since.
    let e = unique("expiring");
    assert_eq!(a.try_lock(&e, "old", Duration::from_millis(300)).await, Ok(true));
    assert_eq!(b.try_lock(&e, "new", LONG).await, Ok(false));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(a.unlock(&e, "old").await, Ok(Unlocked::NotFound));
    assert_eq!(b.try_lock(&e, "new", LONG).await, Ok(true));
    assert_eq!(a.unlock(&e, "old").await, Ok(Unlocked::OtherOwner));
    assert_eq!(b.unlock(&e, "new").await, Ok(Unlocked::Success));
}

#[tokio::test]
async fn in_memory() {
    let s = open("lock.in-memory", &[]).await;
    suite(s.clone(), s).await;
}

#[tokio::test]
async fn redis() {
    let md = [("redisHost", "127.0.0.1:6379")];
    suite(open("lock.redis", &md).await, open("lock.redis", &md).await).await;
}
