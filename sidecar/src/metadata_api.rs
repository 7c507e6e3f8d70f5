//! The metadata API's view of the sidecar, built once for both protocols.

use daprs_proto::runtime::{
    ActorRuntime, AppConnectionHealthProperties, AppConnectionProperties, GetMetadataResponse,
    RegisteredComponents, actor_runtime::ActorRuntimeStatus,
};
use serde_json::{Value, json};

use crate::runtime::Runtime;

/// Version reported as `runtimeVersion` and `daprRuntimeVersion`.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The gRPC `GetMetadataResponse`.
pub fn response(rt: &Runtime) -> GetMetadataResponse {
    let mut extended: std::collections::HashMap<String, String> = rt
        .extended
        .read()
        .map(|m| m.clone().into_iter().collect())
        .unwrap_or_default();
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
