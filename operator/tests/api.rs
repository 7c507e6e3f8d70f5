//! The sidecar-facing API answering from watch caches, with Secrets from an
//! in-memory API server.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::time::Duration;

use daprs_api::v1alpha1::{Component, Configuration, HTTPEndpoint, Resiliency};
use daprs_api::v2alpha1::Subscription;
use daprs_operator::api::{Caches, Change, OperatorApi, PeerId};
use daprs_proto::operator::{
    ComponentUpdateRequest, GetConfigurationRequest, ListComponentsRequest, ResourceEventType,
    operator_server::Operator,
};
use fake_api::FakeApi;
use futures_util::StreamExt;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};
use tonic::{Code, Request};

fn component(name: &str, ns: &str, scopes: &[&str], extra_meta: Value) -> Component {
    let mut v = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
        "spec": {"type": "state.redis", "version": "v1", "metadata": [{"name": "redisHost", "value": "redis:6379"}]},
        "scopes": scopes});
    if let (Some(m), Value::Array(extra)) = (v["spec"]["metadata"].as_array_mut(), extra_meta) {
        m.extend(extra);
    }
    serde_json::from_value(v).expect("component")
}

fn operator_api(
    components: Vec<Component>,
    fake: &FakeApi,
) -> (OperatorApi, tokio::sync::broadcast::Sender<Change>) {
    let (c_reader, mut c_writer) = reflector::store::<Component>();
    for c in components {
        c_writer.apply_watcher_event(&watcher::Event::Apply(c));
    }
    let (conf_reader, mut conf_writer) = reflector::store::<Configuration>();
    let conf: Configuration =
        serde_json::from_value(json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
        "metadata": {"name": "appconfig", "namespace": "prod"}, "spec": {"tracing": {"samplingRate": "1"}}}))
        .expect("configuration");
    conf_writer.apply_watcher_event(&watcher::Event::Apply(conf));
    let (s_reader, _s) = reflector::store::<Subscription>();
    let (r_reader, _r) = reflector::store::<Resiliency>();
    let (h_reader, _h) = reflector::store::<HTTPEndpoint>();
    let (tx, _) = tokio::sync::broadcast::channel(16);
    (
        OperatorApi {
            caches: Caches {
                components: c_reader,
                configurations: conf_reader,
                subscriptions: s_reader,
                resiliencies: r_reader,
                http_endpoints: h_reader,
            },
            kube: fake.client(),
            changes: tx.clone(),
        },
        tx,
    )
}

fn as_app<T>(msg: T, id: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(PeerId(id.map(str::to_string)));
    r
}

const ORDERS: Option<&str> = Some("spiffe://public/ns/prod/orders");

#[tokio::test]
async fn components_are_listed_by_namespace_and_scope_with_secrets_resolved() {
    let fake = FakeApi::default();
    fake.put(
        "/api/v1/namespaces/prod/secrets/redis",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "namespace": "prod"},
            "data": {"password": "czNjcmV0"}}),
    );
    let with_secret =
        json!([{"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}}]);
    let (api, _) = operator_api(
        vec![
            component("shared", "prod", &[], with_secret),
            component("mine", "prod", &["orders"], json!([])),
            component("theirs", "prod", &["payments"], json!([])),
            component("elsewhere", "staging", &[], json!([])),
        ],
        &fake,
    );
    let listed = api
        .list_components(as_app(
            ListComponentsRequest {
                namespace: "prod".into(),
            },
            ORDERS,
        ))
        .await
        .expect("list")
        .into_inner()
        .components;
    let objects: Vec<Value> = listed
        .iter()
        .map(|b| serde_json::from_slice(b).expect("json"))
        .collect();
    let mut names: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["mine", "shared"]);
    let shared = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "shared")
        .expect("shared");
    // base64 of the raw secret bytes ("s3cret"), as a JSON string.
    assert_eq!(shared["spec"]["metadata"][1]["value"], "czNjcmV0");

    // Without the Secret the whole call fails, naming it.
    let (api, _) = operator_api(
        vec![component(
            "shared",
            "prod",
            &[],
            json!([{"name": "p", "secretKeyRef": {"name": "gone"}}]),
        )],
        &FakeApi::default(),
    );
    let e = api
        .list_components(as_app(
            ListComponentsRequest {
                namespace: "prod".into(),
            },
            ORDERS,
        ))
        .await
        .expect_err("missing secret");
    assert!(e.message().contains("gone"), "{}", e.message());
}

#[tokio::test]
async fn callers_only_read_their_own_namespace() {
    let fake = FakeApi::default();
    let (api, _) = operator_api(vec![], &fake);
    let e = api
        .list_components(as_app(
            ListComponentsRequest {
                namespace: "staging".into(),
            },
            ORDERS,
        ))
        .await
        .expect_err("other namespace");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = api
        .list_components(as_app(
            ListComponentsRequest {
                namespace: "prod".into(),
            },
            None,
        ))
        .await
        .expect_err("no certificate");
    assert_eq!(e.code(), Code::Unauthenticated);
    let got = api
        .get_configuration(as_app(
            GetConfigurationRequest {
                name: "appconfig".into(),
                namespace: "prod".into(),
            },
            ORDERS,
        ))
        .await
        .expect("configuration")
        .into_inner();
    let v: Value = serde_json::from_slice(&got.configuration).expect("json");
    assert_eq!(v["spec"]["tracing"]["samplingRate"], "1");
    let e = api
        .get_configuration(as_app(
            GetConfigurationRequest {
                name: "nope".into(),
                namespace: "prod".into(),
            },
            ORDERS,
        ))
        .await
        .expect_err("missing");
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn updates_follow_scope_changes() {
    let fake = FakeApi::default();
    let (api, tx) = operator_api(vec![], &fake);
    let mut stream = api
        .component_update(as_app(
            ComponentUpdateRequest {
                namespace: "prod".into(),
            },
            ORDERS,
        ))
        .await
        .expect("stream")
        .into_inner();
    let v = |scopes: &[&str]| serde_json::to_value(component("c", "prod", scopes, json!([]))).expect("json");
    let send = |old: Option<Value>, new: Option<Value>, ns: &str| {
        tx.send(Change {
            kind: "Component",
            namespace: ns.into(),
            old,
            new,
        })
        .expect("send");
    };
    send(None, Some(v(&[])), "staging"); // another namespace: not seen
    send(None, Some(v(&["payments"])), "prod"); // not for orders: not seen
    send(Some(v(&["payments"])), Some(v(&["payments", "orders"])), "prod"); // now in scope: CREATED
    send(Some(v(&["payments", "orders"])), Some(v(&[])), "prod"); // still in scope: UPDATED
    send(Some(v(&[])), Some(v(&["payments"])), "prod"); // out of scope: old object DELETED
    send(Some(v(&["payments"])), None, "prod"); // deleted, never ours: not seen
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("event in time")
            .expect("open")
            .expect("ok");
        let obj: Value = serde_json::from_slice(&ev.component).expect("json");
        seen.push((
            ResourceEventType::try_from(ev.r#type).expect("type"),
            obj["scopes"].clone(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            (ResourceEventType::Created, json!(["payments", "orders"])),
            (ResourceEventType::Updated, Value::Null),
            (ResourceEventType::Deleted, Value::Null),
        ]
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err(),
        "nothing else"
    );
}

#[tokio::test]
async fn update_events_carry_resolved_secrets_as_lists_do() {
    let fake = FakeApi::default();
    fake.put(
        "/api/v1/namespaces/prod/secrets/redis",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "redis", "namespace": "prod"},
            "data": {"password": "czNjcmV0"}}),
    );
    let (api, tx) = operator_api(vec![], &fake);
    let mut stream = api
        .component_update(as_app(
            ComponentUpdateRequest {
                namespace: "prod".into(),
            },
            ORDERS,
        ))
        .await
        .expect("stream")
        .into_inner();
    let with = |secret: &str| {
        serde_json::to_value(component(
            "c",
            "prod",
            &[],
            json!([{"name": "redisPassword", "secretKeyRef": {"name": secret, "key": "password"}}]),
        ))
        .expect("json")
    };
    // A Secret that does not exist: the event is left out.
    tx.send(Change {
        kind: "Component",
        namespace: "prod".into(),
        old: None,
        new: Some(with("missing")),
    })
    .expect("send");
    tx.send(Change {
        kind: "Component",
        namespace: "prod".into(),
        old: None,
        new: Some(with("redis")),
    })
    .expect("send");
    let ev = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("event in time")
        .expect("open")
        .expect("ok");
    let obj: Value = serde_json::from_slice(&ev.component).expect("json");
    let item = &obj["spec"]["metadata"][1];
    assert_eq!(item["name"], "redisPassword");
    assert_eq!(
        item["value"], "czNjcmV0",
        "base64 of the Secret's value, as in lists"
    );
}
