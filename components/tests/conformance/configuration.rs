//! The configuration store contract, run against Redis and PostgreSQL. Each
//! test writes items the way an operator of that store does (a Redis
//! string `value||version`; a row in the user's table with the documented
//! notify trigger) and reads them through the store.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use daprs_components::{
    configuration::{ConfigurationStore, Item, Items},
    registry::Built,
};

use crate::{md, unique};

async fn open(kind: &str, metadata: &[(&str, &str)]) -> Arc<dyn ConfigurationStore> {
    match crate::build(kind, metadata, &Default::default()).await {
        Built::Configuration(s) => s,
        _ => panic!("{kind} is not a configuration store"),
    }
}

/// How a test changes the store's items behind its back.
#[async_trait]
trait Writer: Send + Sync {
    async fn write(&self, key: &str, value: &str, version: &str);
    async fn delete(&self, key: &str);
}

fn item(value: &str, version: &str) -> Item {
    Item {
        value: value.into(),
        version: version.into(),
        ..Item::default()
    }
}

async fn next(w: &mut daprs_components::configuration::Watch) -> Items {
    tokio::time::timeout(Duration::from_secs(1), w.updates.recv())
        .await
        .expect("a change arrives within 1 s of the write")
        .expect("watch open")
}

/// Everything a configuration store promises; `sub` is the subscription metadata.
async fn suite(s: Arc<dyn ConfigurationStore>, w: &dyn Writer, sub: &[(&str, &str)]) {
    let (a, b, c) = (unique("cfg-a"), unique("cfg-b"), unique("cfg-c"));
    w.write(&a, "blue", "1").await;
    w.write(&b, "42", "7").await;

    let got = s.get(&[a.clone(), c.clone()], &md(&[])).await.expect("get");
    assert_eq!(got.len(), 1, "absent keys are left out: {got:?}");
    assert_eq!(got[&a], item("blue", "1"));
    let all = s.get(&[], &md(&[])).await.expect("get all");
    assert_eq!(
        (all.get(&a), all.get(&b)),
        (Some(&item("blue", "1")), Some(&item("42", "7")))
    );

    // A watch on a and c sees their changes, not b's.
    let mut watch = s
        .subscribe(&[a.clone(), c.clone()], &md(sub))
        .await
        .expect("subscribe");
    w.write(&b, "43", "8").await;
    w.write(&a, "green", "2").await;
    assert_eq!(
        next(&mut watch).await,
        Items::from([(a.clone(), item("green", "2"))])
    );
    w.write(&c, "new", "1").await;
    assert_eq!(
        next(&mut watch).await,
        Items::from([(c.clone(), item("new", "1"))])
    );
    w.delete(&a).await;
    assert_eq!(
        next(&mut watch).await,
        Items::from([(a.clone(), Item::default())])
    );

    // A watch without keys sees every key.
    let mut every = s.subscribe(&[], &md(sub)).await.expect("subscribe all");
    w.write(&b, "44", "9").await;
    let mut seen = next(&mut every).await;
    while !seen.contains_key(&b) {
        seen = next(&mut every).await;
    }
    assert_eq!(seen[&b], item("44", "9"));

    // After the watch is dropped nothing more is read for it.
    drop(watch);
    w.write(&c, "after", "2").await;
}

struct RedisWriter(redis::aio::MultiplexedConnection);

#[async_trait]
impl Writer for RedisWriter {
    async fn write(&self, key: &str, value: &str, version: &str) {
        let mut c = self.0.clone();
        redis::cmd("SET")
            .arg(key)
            .arg(format!("{value}||{version}"))
            .query_async::<()>(&mut c)
            .await
            .expect("SET");
    }

    async fn delete(&self, key: &str) {
        let mut c = self.0.clone();
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut c)
            .await
            .expect("DEL");
    }
}

#[tokio::test]
async fn redis() {
    let client = redis::Client::open("redis://127.0.0.1:6379/5").expect("client");
    let conn = client.get_multiplexed_async_connection().await.expect("connect");
    let store = open(
        "configuration.redis",
        &[("redisHost", "127.0.0.1:6379"), ("redisDB", "5")],
    )
    .await;
    suite(store, &RedisWriter(conn), &[]).await;
}

struct PgWriter {
    client: tokio_postgres::Client,
    table: String,
}

#[async_trait]
impl Writer for PgWriter {
    async fn write(&self, key: &str, value: &str, version: &str) {
        let t = &self.table;
        let updated = self
            .client
            .execute(
                &format!("UPDATE {t} SET value = $2, version = $3 WHERE key = $1"),
                &[&key, &value, &version],
            )
            .await
            .expect("update");
        if updated > 0 {
            return;
        }
        self.client
            .execute(
                &format!("INSERT INTO {t} (key, value, version, metadata) VALUES ($1, $2, $3, '{{}}')"),
                &[&key, &value, &version],
            )
            .await
            .expect("insert");
    }

    async fn delete(&self, key: &str) {
        let t = &self.table;
        self.client
            .execute(&format!("DELETE FROM {t} WHERE key = $1"), &[&key])
            .await
            .expect("delete");
    }
}

/// The table, trigger function and trigger Dapr's documentation has users create.
fn schema(t: &str, channel: &str) -> String {
    format!(
        "CREATE TABLE {t} (key VARCHAR NOT NULL, value VARCHAR NOT NULL, version VARCHAR NOT NULL, metadata JSON);
         CREATE FUNCTION {t}_notify() RETURNS TRIGGER AS $$
         DECLARE row json;
         BEGIN
           IF (TG_OP = 'DELETE') THEN row = row_to_json(OLD); ELSE row = row_to_json(NEW); END IF;
           PERFORM pg_notify('{channel}', json_build_object('table', TG_TABLE_NAME, 'action', TG_OP, 'data', row)::text);
           RETURN NULL;
         END; $$ LANGUAGE plpgsql;
         CREATE TRIGGER {t}_changed AFTER INSERT OR UPDATE OR DELETE ON {t}
           FOR EACH ROW EXECUTE PROCEDURE {t}_notify();"
    )
}

#[tokio::test]
async fn postgresql() {
    let conn = "host=127.0.0.1 port=5432 user=postgres database=test";
    let direct = "host=127.0.0.1 port=5432 user=postgres dbname=test";
    let (client, connection) = tokio_postgres::connect(direct, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let table = unique("cfg").replace('-', "_");
    let channel = format!("{table}_ch");
    client
        .batch_execute(&schema(&table, &channel))
        .await
        .expect("schema");
    let store = open(
        "configuration.postgresql",
        &[("connectionString", conn), ("table", &table)],
    )
    .await;
    let w = PgWriter {
        client,
        table: table.clone(),
    };
    suite(store.clone(), &w, &[("pgNotifyChannel", &channel)]).await;
    // Subscribing needs the channel.
    assert!(store.subscribe(&[], &md(&[])).await.is_err());
    w.client
        .batch_execute(&format!("DROP TABLE {table}; DROP FUNCTION {table}_notify();"))
        .await
        .expect("clean up");
}
