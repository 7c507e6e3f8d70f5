//! Subscriptions from their three sources — declarative resources, the app's
//! own list (`GET /dapr/subscribe`, `ListTopicSubscriptions`), streaming
//! calls — in one shape, with their routes parsed.

use daprs_api::{Resource, v1alpha1::BulkSubscribe};
use daprs_components::Metadata;
use daprs_proto::runtime::{ListTopicSubscriptionsResponse, TopicSubscription};
use serde::Deserialize;
use serde_json::Value;

use super::routing::{self, Expr};

/// Where a subscription came from (the metadata API's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Declarative = 1,
    Programmatic = 2,
    Streaming = 3,
}

/// A routing rule, parsed.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The expression as written.
    pub source: String,
    pub expr: Expr,
    pub path: String,
}

/// One subscription of this app.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub pubsub: String,
    pub topic: String,
    /// Rules tried in order.
    pub rules: Vec<Rule>,
    /// The path of events no rule matches; None drops them.
    pub default_path: Option<String>,
    pub dead_letter_topic: Option<String>,
    /// Passed to the broker (and `rawPayload`).
    pub metadata: Metadata,
    pub bulk: Option<BulkSubscribe>,
    pub kind: Kind,
    /// The Subscription resource that declared it.
    pub name: Option<String>,
}

impl Subscription {
    /// The app path for an event, or None when no route takes it.
    pub fn route(&self, event: &serde_json::Map<String, Value>) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.source.trim().is_empty() || routing::truth(&r.expr, event))
            .map(|r| r.path.as_str())
            .or(self.default_path.as_deref())
    }

    /// Whether the subscription takes the broker's bytes as they are.
    pub fn raw_payload(&self) -> bool {
        self.metadata
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("rawPayload") && daprs_api::contract::truthy(v))
    }
}

/// Builds a subscription, parsing its rules; an empty `match` is a default.
#[allow(clippy::too_many_arguments)]
fn build(
    kind: Kind,
    pubsub: &str,
    topic: &str,
    rules: impl IntoIterator<Item = (String, String)>,
    default_path: Option<String>,
    dead_letter_topic: Option<String>,
    metadata: Metadata,
    bulk: Option<BulkSubscribe>,
) -> Result<Subscription, String> {
    if pubsub.is_empty() || topic.is_empty() {
        return Err("a subscription needs pubsubname and topic".into());
    }
    let mut default_path = default_path.filter(|p| !p.is_empty());
    let mut parsed = Vec::new();
    for (source, path) in rules {
        if source.trim().is_empty() {
            default_path.get_or_insert(path);
            continue;
        }
        let expr = routing::parse(&source).map_err(|e| format!("{pubsub}/{topic}: {e}"))?;
        parsed.push(Rule { source, expr, path });
    }
    Ok(Subscription {
        pubsub: pubsub.to_string(),
        topic: topic.to_string(),
        rules: parsed,
        default_path,
        dead_letter_topic: dead_letter_topic.filter(|t| !t.is_empty()),
        metadata,
        bulk,
        kind,
        name: None,
    })
}

/// The declarative subscriptions in `resources` scoped to `app_id`. A bad
/// one is reported in `errors` and left out; the rest load.
pub fn declarative(resources: &[Resource], app_id: &str, errors: &mut Vec<String>) -> Vec<Subscription> {
    let in_scope = |scopes: &[String]| scopes.is_empty() || scopes.iter().any(|s| s == app_id);
    let mut out = Vec::new();
    for r in resources {
        let built = match r {
            Resource::SubscriptionV1(s) if in_scope(&s.spec.scopes) => {
                let spec = &s.spec.spec;
                build(
                    Kind::Declarative,
                    &spec.pubsubname,
                    &spec.topic,
                    [],
                    Some(spec.route.clone()),
                    spec.dead_letter_topic.clone(),
                    spec.metadata.clone(),
                    spec.bulk_subscribe.clone(),
                )
            }
            Resource::SubscriptionV2(s) if in_scope(&s.spec.scopes) => {
                let spec = &s.spec.spec;
                build(
                    Kind::Declarative,
                    &spec.pubsubname,
                    &spec.topic,
                    spec.routes
                        .rules
                        .iter()
                        .map(|r| (r.match_.clone(), r.path.clone())),
                    spec.routes.default.clone(),
                    spec.dead_letter_topic.clone(),
                    spec.metadata.clone(),
                    spec.bulk_subscribe.clone(),
                )
            }
            _ => continue,
        };
        let name = match r {
            Resource::SubscriptionV1(s) => s.metadata.name.clone(),
            Resource::SubscriptionV2(s) => s.metadata.name.clone(),
            _ => None,
        }
        .unwrap_or_default();
        match built {
            Ok(mut s) => {
                s.name = Some(name);
                out.push(s);
            }
            Err(e) => errors.push(format!("Subscription {name}: {e}")),
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppRules {
    #[serde(default)]
    rules: Vec<AppRule>,
    #[serde(default)]
    default: String,
}

#[derive(Deserialize)]
struct AppRule {
    #[serde(default, rename = "match")]
    match_: String,
    #[serde(default)]
    path: String,
}

/// One entry of an HTTP app's `GET /dapr/subscribe` answer.
#[derive(Deserialize)]
struct AppSubscription {
    #[serde(default)]
    pubsubname: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    routes: Option<AppRules>,
    #[serde(default, rename = "deadLetterTopic")]
    dead_letter_topic: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default, rename = "bulkSubscribe")]
    bulk_subscribe: Option<BulkSubscribe>,
}

/// An HTTP app's subscriptions. A bad entry is reported and left out.
pub fn from_http_app(body: &[u8], errors: &mut Vec<String>) -> Vec<Subscription> {
    let list: Vec<Value> = match serde_json::from_slice(body) {
        Ok(l) => l,
        Err(e) => {
            errors.push(format!("GET /dapr/subscribe did not answer a JSON array: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for item in list {
        let s: AppSubscription = match serde_json::from_value(item) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("GET /dapr/subscribe: invalid entry: {e}"));
                continue;
            }
        };
        let (rules, default) = match s.routes {
            Some(r) => (r.rules, Some(r.default).filter(|d| !d.is_empty())),
            None => (Vec::new(), None),
        };
        let built = build(
            Kind::Programmatic,
            &s.pubsubname,
            &s.topic,
            rules.into_iter().map(|r| (r.match_, r.path)),
            default.or(Some(s.route)),
            Some(s.dead_letter_topic),
            s.metadata,
            s.bulk_subscribe,
        );
        match built {
            Ok(b) if b.default_path.is_none() && b.rules.is_empty() => errors.push(format!(
                "subscription to {}/{} has no route; it is ignored",
                b.pubsub, b.topic
            )),
            Ok(b) => out.push(b),
            Err(e) => errors.push(e),
        }
    }
    out
}

/// A gRPC app's subscriptions. Without routes, events go to path `""`.
pub fn from_grpc_app(res: ListTopicSubscriptionsResponse, errors: &mut Vec<String>) -> Vec<Subscription> {
    let mut out = Vec::new();
    for s in res.subscriptions {
        let TopicSubscription {
            pubsub_name,
            topic,
            metadata,
            routes,
            dead_letter_topic,
            bulk_subscribe,
        } = s;
        let routes = routes.unwrap_or_default();
        let built = build(
            Kind::Programmatic,
            &pubsub_name,
            &topic,
            routes.rules.into_iter().map(|r| (r.r#match, r.path)),
            Some(routes.default),
            Some(dead_letter_topic),
            metadata.into_iter().collect(),
            bulk_subscribe.map(|b| BulkSubscribe {
                enabled: b.enabled,
                max_messages_count: Some(b.max_messages_count).filter(|n| *n > 0),
                max_await_duration_ms: Some(b.max_await_duration_ms).filter(|n| *n > 0),
            }),
        );
        match built {
            Ok(mut b) => {
                if b.default_path.is_none() {
                    b.default_path = Some(String::new());
                }
                out.push(b);
            }
            Err(e) => errors.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn http_app_lists_with_routes_and_rules() {
        let body = br#"[
          {"pubsubname": "ps", "topic": "a", "route": "/a"},
          {"pubsubname": "ps", "topic": "b", "routes": {"rules": [{"match": "event.type == \"x\"", "path": "/x"}], "default": "/b"},
           "deadLetterTopic": "dead", "metadata": {"rawPayload": "true"}},
          {"pubsubname": "ps", "topic": "c"},
          {"pubsubname": "ps", "topic": "d", "routes": {"rules": [{"match": "event.type ==", "path": "/x"}]}},
          {"topic": "e", "route": "/e"},
          "nonsense"
        ]"#;
        let mut errors = Vec::new();
        let subs = from_http_app(body, &mut errors);
        assert_eq!(subs.len(), 2, "{errors:?}");
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("no route")));
        assert!(errors.iter().any(|e| e.contains("invalid match")));
        let b = &subs[1];
        assert_eq!(b.route(&event(serde_json::json!({"type": "x"}))), Some("/x"));
        assert_eq!(b.route(&event(serde_json::json!({"type": "y"}))), Some("/b"));
        assert_eq!(b.dead_letter_topic.as_deref(), Some("dead"));
        assert!(b.raw_payload() && !subs[0].raw_payload());
        assert!(from_http_app(b"{}", &mut errors).is_empty());
    }

    #[test]
    fn declarative_resources_follow_scopes() {
        let yaml = r#"
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: orders}
spec:
  pubsubname: ps
  topic: orders
  routes:
    rules: [{match: 'event.data.total > 100', path: /big}]
    default: /orders
scopes: [shop]
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata: {name: v1}
spec: {pubsubname: ps, topic: legacy, route: /legacy}
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata: {name: broken}
spec:
  pubsubname: ps
  topic: t
  routes: {rules: [{match: 'event.type = 1', path: /t}]}
"#;
        let resources = daprs_api::resource::decode_yaml(yaml).expect("yaml").resources;
        let mut errors = Vec::new();
        let shop = declarative(&resources, "shop", &mut errors);
        assert_eq!(shop.len(), 2);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("Subscription broken"), "{errors:?}");
        let big = event(serde_json::json!({"data": {"total": 101}}));
        assert_eq!(shop[0].route(&big), Some("/big"));
        assert_eq!(shop[1].route(&big), Some("/legacy"));
        let other = declarative(&resources, "other", &mut Vec::new());
        assert_eq!(other.len(), 1);
    }

    #[test]
    fn grpc_subscriptions_default_to_the_empty_path() {
        let res = ListTopicSubscriptionsResponse {
            subscriptions: vec![TopicSubscription {
                pubsub_name: "ps".into(),
                topic: "t".into(),
                ..Default::default()
            }],
        };
        let subs = from_grpc_app(res, &mut Vec::new());
        assert_eq!(subs[0].route(&serde_json::Map::new()), Some(""));
    }
}
