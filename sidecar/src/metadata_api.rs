//! The metadata API's view of the sidecar, built once for both protocols.

use daprs_proto::runtime::{
    ActorRuntime, AppConnectionHealthProperties, AppConnectionProperties, GetMetadataResponse,
    PubsubSubscription, PubsubSubscriptionRule, PubsubSubscriptionRules, PubsubSubscriptionType,
    RegisteredComponents, actor_runtime::ActorRuntimeStatus,
};
use serde_json::{Value, json};

use crate::{error::ApiError, runtime::Runtime};

/// Most extended-metadata entries an app may set.
pub const MAX_ENTRIES: usize = 100;
/// Longest key, in bytes.
pub const MAX_KEY: usize = 256;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 64 << 10;
/// Most bytes of keys and values together.
pub const MAX_TOTAL: usize = 1 << 20;

/// Sets one extended-metadata entry, within bounds: metadata is read whole by
/// every `GET /v1.0/metadata`, and on the public port anyone may write it.
pub fn set_extended(rt: &Runtime, key: String, value: String) -> Result<(), ApiError> {
    let too_large = |what: String| {
        ApiError::new(
            "ERR_METADATA_TOO_LARGE",
            http::StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
            what,
        )
    };
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(ApiError::bad_request(format!(
            "a metadata key must be 1 to {MAX_KEY} bytes, got {}",
            key.len()
        )));
    }
    if value.len() > MAX_VALUE {
        return Err(too_large(format!(
            "a metadata value may be at most {MAX_VALUE} bytes, got {}",
            value.len()
        )));
    }
    let mut map = rt
        .extended
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let total: usize = map
        .iter()
        .filter(|(k, _)| **k != key)
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if !map.contains_key(&key) && map.len() >= MAX_ENTRIES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_ENTRIES} metadata entries may be set"
        )));
    }
    if total + key.len() + value.len() > MAX_TOTAL {
        return Err(too_large(format!(
            "metadata may hold at most {MAX_TOTAL} bytes in all"
        )));
    }
    map.insert(key, value);
    Ok(())
}

/// Version reported as `runtimeVersion` and `daprRuntimeVersion`.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The gRPC `GetMetadataResponse`.
pub fn response(rt: &Runtime) -> GetMetadataResponse {
    let mut extended: std::collections::HashMap<String, String> = rt
        .extended
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    extended.insert("daprRuntimeVersion".into(), RUNTIME_VERSION.into());
    let f = &rt.settings.flags;
    let app = rt.app.as_ref().map(|a| AppConnectionProperties {
        port: i32::from(a.port),
        protocol: a.protocol.as_str().into(),
        channel_address: a.address.clone(),
        max_concurrency: rt.settings.app_max_concurrency.map_or(0, |n| n as i32),
        health: f.enable_app_health_check.then(|| AppConnectionHealthProperties {
            health_check_path: if a.protocol.is_grpc() {
                String::new()
            } else {
                f.app_health_check_path.clone()
            },
            health_probe_interval: format!("{}s", f.app_health_probe_interval),
            health_probe_timeout: format!("{}ms", f.app_health_probe_timeout),
            health_threshold: f.app_health_threshold as i32,
        }),
    });
    GetMetadataResponse {
        id: rt.app_id.clone(),
        registered_components: rt
            .components()
            .iter()
            .map(|c| RegisteredComponents {
                name: c.name.clone(),
                r#type: c.kind.clone(),
                version: c.version.clone(),
                capabilities: c.capabilities.clone(),
            })
            .collect(),
        extended_metadata: extended,
        subscriptions: rt.subscriptions.list().iter().map(|s| subscription(s)).collect(),
        app_connection_properties: app,
        runtime_version: RUNTIME_VERSION.into(),
        actor_runtime: Some(ActorRuntime {
            runtime_status: ActorRuntimeStatus::Disabled as i32,
            active_actors: vec![],
            host_ready: false,
            placement: String::new(),
        }),
        ..Default::default()
    }
}

fn subscription(s: &crate::pubsub::subscriptions::Subscription) -> PubsubSubscription {
    let mut rules: Vec<PubsubSubscriptionRule> = s
        .rules
        .iter()
        .map(|r| PubsubSubscriptionRule {
            r#match: r.source.clone(),
            path: r.path.clone(),
        })
        .collect();
    if let Some(path) = &s.default_path {
        rules.push(PubsubSubscriptionRule {
            r#match: String::new(),
            path: path.clone(),
        });
    }
    PubsubSubscription {
        pubsub_name: s.pubsub.clone(),
        topic: s.topic.clone(),
        metadata: s.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        rules: Some(PubsubSubscriptionRules { rules }),
        dead_letter_topic: s.dead_letter_topic.clone().unwrap_or_default(),
        r#type: s.kind as i32,
    }
}

/// The HTTP `GET /v1.0/metadata` body, with Dapr's field names; empty fields are left out.
pub fn http_json(rt: &Runtime) -> Value {
    let r = response(rt);
    let mut out = json!({
        "id": r.id,
        "runtimeVersion": r.runtime_version,
        "extended": r.extended_metadata,
        "actorRuntime": { "runtimeStatus": "DISABLED", "hostReady": false },
    });
    if !r.registered_components.is_empty() {
        out["components"] = r
            .registered_components
            .iter()
            .map(|c| json!({"name": c.name, "type": c.r#type, "version": c.version, "capabilities": c.capabilities}))
            .collect();
    }
    if !r.subscriptions.is_empty() {
        out["subscriptions"] = r
            .subscriptions
            .iter()
            .map(|s| {
                let kind = PubsubSubscriptionType::try_from(s.r#type)
                    .unwrap_or(PubsubSubscriptionType::Unknown)
                    .as_str_name();
                let rules: Vec<Value> = s
                    .rules
                    .iter()
                    .flat_map(|r| &r.rules)
                    .map(|r| json!({"match": r.r#match, "path": r.path}))
                    .collect();
                let mut v =
                    json!({"pubsubname": s.pubsub_name, "topic": s.topic, "rules": rules, "type": kind});
                if !s.metadata.is_empty() {
                    v["metadata"] = json!(s.metadata);
                }
                if !s.dead_letter_topic.is_empty() {
                    v["deadLetterTopic"] = s.dead_letter_topic.clone().into();
                }
                v
            })
            .collect();
    }
    if let Some(a) = r.app_connection_properties {
        let mut app = json!({ "port": a.port, "protocol": a.protocol, "channelAddress": a.channel_address });
        if a.max_concurrency > 0 {
            app["maxConcurrency"] = a.max_concurrency.into();
        }
        if let Some(h) = a.health {
            let mut health = json!({
                "healthProbeInterval": h.health_probe_interval,
                "healthProbeTimeout": h.health_probe_timeout,
                "healthThreshold": h.health_threshold,
            });
            if !h.health_check_path.is_empty() {
                health["healthCheckPath"] = h.health_check_path.into();
            }
            app["health"] = health;
        }
        out["appConnectionProperties"] = app;
    }
    out
}
