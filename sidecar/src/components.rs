//! Initialising the Components this app may use: resolve each one's
//! metadata, build it through the components crate's registry (within its
//! `initTimeout`), and file it under its building block for the APIs.

use std::{collections::HashMap, sync::Arc};

use daprs_api::{Resource, v1alpha1::Component};
use daprs_components::{
    Error, meta,
    pubsub::CONSUMER_ID,
    registry::{self, Built},
    secretstores::kubernetes::KubernetesStore,
    state::KeyPrefix,
};

use crate::{
    config::SidecarConfig,
    error::StartError,
    pubsub::scopes::TopicScopes,
    resiliency::Failure,
    resources::{Templates, env_secret_resolver, init_timeout, resolve_metadata},
    runtime::{Block, ComponentInfo, Loaded, LockEntry, PubSubEntry, Runtime, StoreEntry},
    settings::Settings,
};

/// A component call failed in a way resiliency counts: the backend, not the caller.
pub(crate) fn backend_failure<T>(r: &daprs_components::Result<T>) -> Option<Failure> {
    matches!(r, Err(Error::Backend(_))).then_some(Failure::Transport)
}

impl Runtime {
    /// Runs one call on component `name`, recording Dapr's metrics of `block`.
    pub(crate) async fn timed<T>(
        &self,
        block: crate::metrics::Block,
        name: &str,
        operation: &str,
        call: impl std::future::Future<Output = daprs_components::Result<T>>,
    ) -> daprs_components::Result<T> {
        if !self.metrics.enabled() {
            return call.await;
        }
        let start = std::time::Instant::now();
        let result = call.await;
        let ms = crate::metrics::elapsed_ms(start);
        self.metrics
            .component_call(block, name, operation, result.is_ok(), ms);
        result
    }

    /// Component `name`'s type as Dapr's resiliency metrics name it.
    fn component_type(&self, name: &str) -> &'static str {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let block = loaded.kind_of(name).and_then(|k| k.split('.').next());
        match block {
            Some("state") => "statestore",
            Some("pubsub") => "pubsub",
            Some("bindings") => "outputbinding",
            Some("secretstores") => "secretstore",
            Some("configuration") => "configuration",
            Some("lock") => "lock",
            _ => "component",
        }
    }

    /// Runs one call on component `name` under its outbound resiliency policy.
    pub(crate) async fn outbound<T, F, Fut>(
        &self,
        name: &str,
        op: F,
        failed: impl Fn(&daprs_components::Result<T>) -> Option<Failure> + Clone,
    ) -> daprs_components::Result<T>
    where
        F: Fn() -> Fut + Clone,
        Fut: std::future::Future<Output = daprs_components::Result<T>>,
    {
        use tower::{Layer, ServiceExt};
        let policy = self.resiliency.outbound(name, || self.component_type(name));
        if policy.is_empty() {
            // Every state call passes here; unwrapped, it costs 400 fewer
            // instructions (callgrind).
            return op().await;
        }
        let call = tower::service_fn(move |()| op());
        policy
            .layer(failed)
            .layer(call)
            .oneshot(())
            .await
            .map_err(|stop| stop.reason().unwrap_or_else(|halt| Error::Backend(halt.message)))
    }
}

/// Initialises one component; `all` are the components it may take secrets from.
pub(crate) async fn init(
    settings: &Settings,
    config: &SidecarConfig,
    c: &Component,
    all: &[&Component],
) -> Result<(ComponentInfo, Block), String> {
    let app_id = settings.flags.app_id.as_str();
    let templates = Templates {
        app_id,
        namespace: settings.namespace.as_deref(),
        env: &settings.env,
    };
    let resolver = env_secret_resolver(all, &templates);
    let spec = &c.spec.spec;
    if let Some(why) = config.component_denied(&spec.type_, &spec.version) {
        return Err(why);
    }
    let mut metadata = resolve_metadata(c, &templates, &resolver)?;
    if c.building_block() == "pubsub" && meta(&metadata, CONSUMER_ID).is_none() {
        // Replicas of one app share the messages; other apps get their own copy.
        metadata.insert(CONSUMER_ID.into(), app_id.into());
    }
    let ctx = registry::Context {
        env: &settings.env,
        namespace: settings.namespace.as_deref(),
    };
    let timeout = init_timeout(c);
    let built = tokio::time::timeout(
        timeout,
        registry::build(&spec.type_, &spec.version, &metadata, &ctx),
    )
    .await
    .map_err(|_| format!("init timed out after {timeout:?} (spec.initTimeout)"))??;
    let (capabilities, block) = match built {
        Built::State(store) => {
            let caps = store.features().iter().map(|s| s.to_string()).collect();
            let prefix = KeyPrefix::parse(meta(&metadata, "keyPrefix"));
            (caps, Block::State(StoreEntry { store, prefix }))
        }
        Built::SecretStore(store) => (vec![], Block::Secrets(store)),
        Built::Lock(store) => {
            let prefix = KeyPrefix::parse(meta(&metadata, "keyPrefix"));
            (vec![], Block::Lock(LockEntry { store, prefix }))
        }
        Built::Configuration(store) => (vec![], Block::Configuration(store)),
        Built::Binding(binding) => {
            let entry =
                crate::bindings_api::entry(binding, &metadata, &c.metadata.name.clone().unwrap_or_default())?;
            let mut caps = Vec::new();
            if entry.input {
                caps.push("INPUT_BINDING".to_string());
            }
            if entry.output {
                caps.push("OUTPUT_BINDING".to_string());
            }
            (caps, Block::Binding(entry))
        }
        Built::PubSub(broker) => {
            let caps = broker.features().iter().map(|s| s.to_string()).collect();
            let scopes = TopicScopes::parse(&metadata, app_id);
            (caps, Block::PubSub(PubSubEntry { broker, scopes }))
        }
    };
    let info = ComponentInfo {
        name: c.metadata.name.clone().unwrap_or_default(),
        kind: spec.type_.clone(),
        version: spec.version.clone(),
        capabilities,
    };
    Ok((info, block))
}

/// Loads and initialises the components this app may use; one that fails
/// stops the start unless it sets `spec.ignoreErrors`.
pub(crate) async fn init_all(
    settings: &Settings,
    config: &SidecarConfig,
    resources: &[Resource],
    metrics: &crate::metrics::Metrics,
) -> Result<Loaded, StartError> {
    let app_id = settings.flags.app_id.as_str();
    let comps: Vec<&Component> = resources
        .iter()
        .filter_map(Resource::as_component)
        .filter(|c| c.in_scope(app_id))
        .collect();
    let mut loaded = Loaded::default();
    let mut seen = std::collections::HashSet::new();
    for c in &comps {
        let name = c.metadata.name.clone().unwrap_or_default();
        let kind = c.spec.spec.type_.clone();
        if !seen.insert(name.clone()) {
            return Err(StartError::Resources(format!(
                "component name {name} is defined more than once"
            )));
        }
        match init(settings, config, c, &comps).await {
            Ok((info, block)) => {
                tracing::info!(component = %name, r#type = %kind, "component loaded");
                metrics.component_started(&kind);
                loaded.put(info, block);
            }
            Err(reason) if c.spec.spec.ignore_errors => {
                metrics.component_failed(&kind, &name, "init");
                tracing::error!(component = %name, r#type = %kind, %reason, "component failed to initialise; ignored because spec.ignoreErrors is true");
            }
            Err(reason) => {
                metrics.component_failed(&kind, &name, "init");
                return Err(StartError::Component { name, kind, reason });
            }
        }
    }
    Ok(loaded)
}

/// Every pod can read its namespace's Secrets through a store named
/// `kubernetes`, unless a component takes the name.
pub(crate) fn add_builtin_secret_store(
    loaded: &mut Loaded,
    env: &HashMap<String, String>,
    namespace: &str,
) -> Result<(), String> {
    if loaded.components.iter().any(|c| c.name == "kubernetes") {
        return Ok(());
    }
    let store = KubernetesStore::new(&Default::default(), env, Some(namespace))?;
    let info = ComponentInfo {
        name: "kubernetes".into(),
        kind: "secretstores.kubernetes".into(),
        version: "v1".into(),
        capabilities: vec![],
    };
    loaded.put(info, Block::Secrets(Arc::new(store)));
    Ok(())
}
