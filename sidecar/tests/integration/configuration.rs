//! The configuration API through daprd over HTTP and gRPC, on Redis and
//! PostgreSQL: reads, subscriptions pushed to an HTTP app and streamed to
//! a gRPC client, unsubscribing, and Dapr's errors.

use std::time::Duration;

use daprs_proto::runtime::{
    GetConfigurationRequest, SubscribeConfigurationRequest, UnsubscribeConfigurationRequest,
};
use serde_json::json;
use tonic::Code;

use super::{
    harness::{Daprd, Spec, resources, temp_dir},
    pubsub::subscriber,
};

const DB: &str = "7";

fn stores() -> String {
    format!(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: redisconfig}}
spec:
  type: configuration.redis
  version: v1
  metadata:
  - {{name: redisHost, value: "127.0.0.1:6379"}}
  - {{name: redisDB, value: "{DB}"}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: statestore}}
spec: {{type: state.in-memory, version: v1}}
"#
    )
}

async fn redis_set(key: &str, value: &str) {
    let client = redis::Client::open(format!("redis://127.0.0.1:6379/{DB}")).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(&mut conn)
        .await
        .expect("set");
}

#[tokio::test]
async fn redis_configuration_over_http_and_grpc() {
    let home = temp_dir("configuration");
    let res = resources(&home, &stores());
    let (inbox, app_port) = subscriber(json!([])).await;
    let mut spec = Spec::new("cfg", &home);
    spec.resources = Some(&res);
    spec.app_port = Some(app_port);
    let d = Daprd::start(spec).await;
    let k = |n: &str| format!("{n}-{}", std::process::id());
    let (color, size, absent) = (k("color"), k("size"), k("absent"));
    redis_set(&color, "blue||1").await;
    redis_set(&size, "10").await;

    let r = d
        .get(&format!(
            "/v1.0/configuration/redisconfig?key={color}&key={size}&key={absent}"
        ))
        .await
        .expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({ color.clone(): {"value": "blue", "version": "1"}, size.clone(): {"value": "10"} })
    );
    let r = d
        .get(&format!("/v1.0-alpha1/configuration/redisconfig?key={absent}"))
        .await
        .expect("get");
    assert_eq!(r.status, 204);

    // An HTTP subscription: the app gets one POST per changed key.
    let r = d
        .get(&format!("/v1.0/configuration/redisconfig/subscribe?key={color}"))
        .await
        .expect("subscribe");
    assert_eq!(r.status, 200);
    let id = r.json()["id"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty());
    redis_set(&color, "green||2").await;
    let path = format!("/configuration/redisconfig/{color}");
    let got = inbox.wait(&path, 1).await;
    assert_eq!(
        got[0].event,
        json!({"id": id, "items": { color.clone(): {"value": "green", "version": "2"} }})
    );
    let r = d
        .get(&format!("/v1.0/configuration/redisconfig/{id}/unsubscribe"))
        .await
        .expect("unsubscribe");
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    redis_set(&color, "red||3").await;
    let r = d
        .get(&format!("/v1.0/configuration/redisconfig/{id}/unsubscribe"))
        .await
        .expect("unsubscribe again");
    assert_eq!(r.status, 500);
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains(&id)));

    // gRPC: read, then a stream whose first message is the id.
    let mut grpc = d.grpc().await;
    let got = grpc
        .get_configuration(GetConfigurationRequest {
            store_name: "redisconfig".into(),
            keys: vec![size.clone()],
            metadata: Default::default(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.items[&size].value, "10");
    let mut stream = grpc
        .subscribe_configuration(SubscribeConfigurationRequest {
            store_name: "redisconfig".into(),
            keys: vec![size.clone()],
            metadata: Default::default(),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first = stream.message().await.expect("first").expect("message");
    assert!(first.items.is_empty() && !first.id.is_empty());
    redis_set(&size, "11||5").await;
    let changed = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("within 1 s of the write")
        .expect("ok")
        .expect("message");
    assert_eq!(
        (changed.id.as_str(), changed.items[&size].value.as_str()),
        (first.id.as_str(), "11")
    );
    assert_eq!(changed.items[&size].version, "5");
    let un = grpc
        .unsubscribe_configuration(UnsubscribeConfigurationRequest {
            store_name: "redisconfig".into(),
            id: first.id.clone(),
        })
        .await
        .expect("unsubscribe")
        .into_inner();
    assert!(un.ok);
    let end = tokio::time::timeout(Duration::from_secs(2), stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    // The app got nothing after the HTTP unsubscribe.
    assert_eq!(inbox.at(&path).len(), 1);

    // Errors.
    for (path, status, code) in [
        (
            "/v1.0/configuration/nostore?key=a",
            400,
            "ERR_CONFIGURATION_STORE_NOT_FOUND",
        ),
        (
            "/v1.0/configuration/statestore?key=a",
            400,
            "ERR_CONFIGURATION_STORE_NOT_FOUND",
        ),
        (
            "/v1.0/configuration/nostore/subscribe",
            400,
            "ERR_CONFIGURATION_STORE_NOT_FOUND",
        ),
    ] {
        let r = d.get(path).await.expect(path);
        assert_eq!((r.status, r.error_code()), (status, code.to_string()), "{path}");
    }
    let s = grpc
        .get_configuration(GetConfigurationRequest {
            store_name: "statestore".into(),
            keys: vec![],
            metadata: Default::default(),
        })
        .await
        .expect_err("a state store");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("state.in-memory"), "{s:?}");
}

#[tokio::test]
async fn http_subscriptions_need_an_app_and_stores_must_exist() {
    let home = temp_dir("configuration-errors");
    let res = resources(&home, &stores());
    let mut spec = Spec::new("cfgnoapp", &home);
    spec.resources = Some(&res);
    let d = Daprd::start(spec).await;
    let r = d
        .get("/v1.0/configuration/redisconfig/subscribe?key=a")
        .await
        .expect("subscribe");
    assert_eq!(
        (r.status, r.error_code()),
        (500, "ERR_APP_CHANNEL_NIL".to_string())
    );
    let plain = Daprd::start(Spec::new("cfgnone", &home)).await;
    let r = plain.get("/v1.0/configuration/any?key=a").await.expect("get");
    assert_eq!(
        (r.status, r.error_code()),
        (500, "ERR_CONFIGURATION_STORE_NOT_CONFIGURED".to_string())
    );
}

#[tokio::test]
async fn postgresql_configuration_through_daprd() {
    let (pg, conn) =
        tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", tokio_postgres::NoTls)
            .await
            .expect("connect");
    tokio::spawn(conn);
    let table = format!("daprs_it_cfg_{}", std::process::id());
    let channel = format!("{table}_ch");
    // The table, trigger function and trigger as Dapr's documentation has users create them.
    pg.batch_execute(&format!(
        "CREATE TABLE {table} (key VARCHAR NOT NULL, value VARCHAR NOT NULL, version VARCHAR NOT NULL, metadata JSON);
         CREATE FUNCTION {table}_notify() RETURNS TRIGGER AS $$
         DECLARE row json;
         BEGIN
           IF (TG_OP = 'DELETE') THEN row = row_to_json(OLD); ELSE row = row_to_json(NEW); END IF;
           PERFORM pg_notify('{channel}', json_build_object('table', TG_TABLE_NAME, 'action', TG_OP, 'data', row)::text);
           RETURN NULL;
         END; $$ LANGUAGE plpgsql;
         CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE ON {table}
           FOR EACH ROW EXECUTE PROCEDURE {table}_notify();
         INSERT INTO {table} VALUES ('greeting', 'hello', '1', '{{\"lang\": \"en\"}}');"
    ))
    .await
    .expect("schema");
    let home = temp_dir("configuration-pg");
    let res = resources(
        &home,
        &format!(
            r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: pgconfig}}
spec:
  type: configuration.postgresql
  version: v1
  metadata:
  - {{name: connectionString, value: "host=127.0.0.1 user=postgres database=test connect_timeout=10"}}
  - {{name: table, value: "{table}"}}
"#
        ),
    );
    let mut spec = Spec::new("cfgpg", &home);
    spec.resources = Some(&res);
    let d = Daprd::start(spec).await;
    let r = d
        .get("/v1.0/configuration/pgconfig?key=greeting")
        .await
        .expect("get");
    assert_eq!(
        r.json(),
        json!({"greeting": {"value": "hello", "version": "1", "metadata": {"lang": "en"}}})
    );
    let mut grpc = d.grpc().await;
    let sub = |metadata: Vec<(String, String)>| SubscribeConfigurationRequest {
        store_name: "pgconfig".into(),
        keys: vec!["greeting".into()],
        metadata: metadata.into_iter().collect(),
    };
    // Without the channel the subscription is refused, saying what it needs.
    let s = grpc
        .subscribe_configuration(sub(vec![]))
        .await
        .expect_err("no channel");
    assert!(s.message().contains("pgNotifyChannel"), "{s:?}");
    let mut stream = grpc
        .subscribe_configuration(sub(vec![("pgNotifyChannel".into(), channel.clone())]))
        .await
        .expect("subscribe")
        .into_inner();
    stream.message().await.expect("first").expect("id");
    pg.execute(&format!("UPDATE {table} SET value = 'hola', version = '2'"), &[])
        .await
        .expect("update");
    let changed = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("within 1 s of the write")
        .expect("ok")
        .expect("message");
    assert_eq!(
        (
            changed.items["greeting"].value.as_str(),
            changed.items["greeting"].version.as_str()
        ),
        ("hola", "2")
    );
    drop(stream);
    pg.batch_execute(&format!("DROP TABLE {table}; DROP FUNCTION {table}_notify();"))
        .await
        .expect("clean up");
}
