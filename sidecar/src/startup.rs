//! What daprd obtains before it serves, besides its components: its
//! certificate and the operator connection in Kubernetes mode, then the
//! Configuration, the Resiliency policies and the HTTPEndpoints, from the
//! resource folders or from the operator.

use std::sync::Arc;

use daprs_api::{Resource, v1alpha1::Component};

use crate::{
    app_channel::AppChannel,
    config::SidecarConfig,
    control_plane::{self, Operator},
    endpoints,
    error::StartError,
    flags::{Flags, Mode},
    identity::Svid,
    registry::{LocalRegistry, Resolver},
    resiliency,
    resources::{Templates, env_secret_resolver},
    settings::Settings,
};

/// The Resiliency documents for this app: from the resource folders, and in
/// Kubernetes mode from the operator.
pub(crate) async fn load_resiliency(
    app_id: &str,
    resources: &[Resource],
    operator: Option<&control_plane::Operator>,
) -> Result<resiliency::Resiliency, StartError> {
    let listed = match operator {
        Some(op) => op.resiliencies().await.map_err(StartError::ControlPlane)?,
        None => Vec::new(),
    };
    let docs = resources
        .iter()
        .filter_map(Resource::as_resiliency)
        .chain(&listed);
    let loaded = resiliency::Resiliency::load(docs, app_id).map_err(StartError::Config)?;
    if !loaded.names.is_empty() {
        tracing::info!(names = ?loaded.names, "resiliency policies loaded");
    }
    Ok(loaded)
}

/// The HTTPEndpoints this app may invoke: from the resource folders (their
/// secrets read from the loaded secret stores), and in Kubernetes mode from
/// the operator (secrets already resolved).
pub(crate) async fn load_endpoints(
    settings: &Settings,
    resources: &[Resource],
    operator: Option<&control_plane::Operator>,
) -> Result<endpoints::Endpoints, StartError> {
    let listed = match operator {
        Some(op) => op.http_endpoints().await.map_err(StartError::ControlPlane)?,
        None => Vec::new(),
    };
    let templates = Templates {
        app_id: &settings.flags.app_id,
        namespace: settings.namespace.as_deref(),
        env: &settings.env,
    };
    let comps: Vec<&Component> = resources.iter().filter_map(Resource::as_component).collect();
    let resolver = env_secret_resolver(&comps, &templates);
    let docs = resources
        .iter()
        .filter_map(Resource::as_http_endpoint)
        .chain(&listed);
    endpoints::Endpoints::load(docs, &settings.flags.app_id, &templates, &resolver)
        .map_err(StartError::Config)
}

/// The Configuration named by `--config`. In standalone mode that is a file
/// holding a `kind: Configuration` document; in Kubernetes mode it is a
/// resource name that the operator serves.
pub(crate) async fn load_config(
    flags: &Flags,
    operator: Option<&control_plane::Operator>,
) -> Result<SidecarConfig, StartError> {
    let name = flags.config.first().filter(|c| !c.is_empty());
    if let (Some(name), Some(op), Mode::Kubernetes) = (name, operator, flags.mode) {
        let c = op.configuration(name).await.map_err(StartError::ControlPlane)?;
        tracing::info!(name = %name, "loaded configuration from the operator");
        return SidecarConfig::from_configuration(Some(&c))
            .map_err(|e| StartError::Config(format!("Configuration {name}: {e}")));
    }
    let Some(path) = name.filter(|_| flags.mode == Mode::Standalone) else {
        return SidecarConfig::from_configuration(None).map_err(StartError::Config);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartError::Resources(format!("cannot read --config {path}: {e}")))?;
    let decoded = daprs_api::resource::decode_yaml(&text).map_err(|errs| {
        StartError::Resources(format!(
            "--config {path}: {}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    let found = decoded.resources.iter().find_map(|r| match r {
        Resource::Configuration(c) => Some(c),
        _ => None,
    });
    match found {
        Some(c) => {
            let config = SidecarConfig::from_configuration(Some(c))
                .map_err(|e| StartError::Config(format!("--config {path}: {e}")))?;
            tracing::info!(
                name = config.name.as_deref().unwrap_or(""),
                "loaded configuration from {path}"
            );
            Ok(config)
        }
        None => Err(StartError::Resources(format!(
            "--config {path}: no document of kind Configuration"
        ))),
    }
}

/// The workload certificate and the operator connection, in Kubernetes
/// mode. Identity comes first: the operator answers only callers that
/// prove who they are.
pub(crate) async fn control_plane(
    settings: &Settings,
    namespace: &str,
) -> Result<(Option<Arc<Svid>>, Option<Operator>), StartError> {
    let Some(cp) = &settings.control_plane else {
        return Ok((None, None));
    };
    let svid = Arc::new(
        Svid::obtain(cp, &settings.flags.app_id, namespace)
            .await
            .map_err(StartError::ControlPlane)?,
    );
    let operator = match &cp.operator_address {
        Some(addr) => Some(Operator::connect(cp, &svid, addr, namespace).map_err(StartError::ControlPlane)?),
        None => None,
    };
    Ok((Some(svid), operator))
}

/// The resources this sidecar starts with, and the Components among them
/// that came from the operator (which it then keeps up to date). Embedded
/// defaults are a laptop convenience; in Kubernetes the resources come from
/// the control plane (and the root file system is read-only), as with Dapr.
pub(crate) async fn resources(
    settings: &Settings,
    operator: Option<&Operator>,
) -> Result<(Vec<Resource>, Vec<Component>), StartError> {
    let mode = settings.flags.mode;
    let mut resources = match (settings.resources_paths.is_empty(), mode) {
        (true, Mode::Standalone) => crate::resources::embedded_defaults(&settings.env),
        (true, Mode::Kubernetes) => Vec::new(),
        (false, _) => crate::resources::load_paths(&settings.resources_paths)?,
    };
    let Some(op) = operator else {
        if mode == Mode::Kubernetes {
            tracing::warn!("no --control-plane-address: no components come from the cluster");
        }
        return Ok((resources, Vec::new()));
    };
    let listed = op.components().await.map_err(StartError::ControlPlane)?;
    tracing::info!(count = listed.len(), "components from the operator");
    resources.extend(listed.iter().cloned().map(Resource::Component));
    let subs = op.subscriptions().await.map_err(StartError::ControlPlane)?;
    resources.extend(subs.into_iter().map(Resource::SubscriptionV2));
    Ok((resources, listed))
}

/// Where other apps' sidecars are found: the registry folder on a laptop,
/// the `<app-id>-dapr` Services in Kubernetes.
pub(crate) fn resolver(settings: &Settings, data_dir: &std::path::Path) -> Resolver {
    match settings.flags.mode {
        Mode::Standalone => Resolver::Local(LocalRegistry::new(data_dir)),
        Mode::Kubernetes => Resolver::Kubernetes {
            cluster_domain: settings
                .env
                .get("DAPR_CLUSTER_DOMAIN")
                .cloned()
                .unwrap_or_else(|| "cluster.local".into()),
            port: settings.flags.dapr_internal_grpc_port.unwrap_or(50002),
        },
    }
}

/// The channel into the app, when it has a port.
pub(crate) fn app_channel(settings: &Settings) -> Result<Option<AppChannel>, StartError> {
    let flags = &settings.flags;
    let Some(port) = flags.app_port else {
        return Ok(None);
    };
    AppChannel::new(
        flags.app_protocol,
        &flags.app_channel_address,
        port,
        settings.app_token.as_deref(),
        settings.app_max_concurrency,
        settings.max_body_size,
    )
    .map(Some)
    .map_err(StartError::Config)
}
