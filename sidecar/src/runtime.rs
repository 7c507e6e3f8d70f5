//! The sidecar's shared state: settings, loaded components, app channel,
//! invocation router, health and lifecycle. Both APIs and the internal server
//! hold an `Arc<Runtime>`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use daprs_components::{
    bindings::Binding,
    configuration::ConfigurationStore,
    lock::LockStore,
    pubsub::PubSub,
    secretstores::SecretStore,
    state::{KeyPrefix, StateStore},
};
use daprs_proto::internals::{InternalInvokeRequest, InternalInvokeResponse};
use tokio::sync::watch;

use crate::{
    app_channel::AppChannel, config::SidecarConfig, error::ApiError, invoke::Invoker, registry::Target,
    settings::Settings,
};

/// A loaded state store.
pub struct StoreEntry {
    /// The implementation.
    pub store: Arc<dyn StateStore>,
    /// How keys are prefixed.
    pub prefix: KeyPrefix,
}

/// A loaded pub/sub broker.
pub struct PubSubEntry {
    /// The implementation.
    pub broker: Arc<dyn PubSub>,
    /// Which topics this app may publish and subscribe to.
    pub scopes: crate::pubsub::scopes::TopicScopes,
}

/// A loaded lock store.
pub struct LockEntry {
    /// The implementation.
    pub store: Arc<dyn LockStore>,
    /// How resource ids are prefixed.
    pub prefix: KeyPrefix,
}

/// A loaded binding.
pub struct BindingEntry {
    /// The implementation.
    pub binding: Arc<dyn Binding>,
    /// Serves output calls (the binding has operations and `direction` allows it).
    pub output: bool,
    /// Delivers events to the app (an input binding and `direction` allows it).
    pub input: bool,
    /// The app's route for events: `route` metadata, else the component name.
    pub route: String,
}

/// A component as the metadata API lists it.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    /// Component name.
    pub name: String,
    /// Component type, e.g. `state.redis`.
    pub kind: String,
    /// Component version.
    pub version: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
}

/// The components in use, replaced as a whole entry at a time when the
/// control plane changes one.
#[derive(Default)]
pub struct Loaded {
    /// State stores by component name.
    pub stores: HashMap<String, Arc<StoreEntry>>,
    /// Secret stores by component name.
    pub secret_stores: HashMap<String, Arc<dyn SecretStore>>,
    /// Pub/sub brokers by component name.
    pub pubsubs: HashMap<String, Arc<PubSubEntry>>,
    /// Lock stores by component name.
    pub locks: HashMap<String, Arc<LockEntry>>,
    /// Configuration stores by component name.
    pub configs: HashMap<String, Arc<dyn ConfigurationStore>>,
    /// Bindings by component name.
    pub bindings: HashMap<String, Arc<BindingEntry>>,
    /// Every loaded component.
    pub components: Vec<ComponentInfo>,
}

/// What a component provides besides its entry in the metadata API.
pub enum Block {
    State(StoreEntry),
    Secrets(Arc<dyn SecretStore>),
    PubSub(PubSubEntry),
    Lock(LockEntry),
    Configuration(Arc<dyn ConfigurationStore>),
    Binding(BindingEntry),
}

impl Loaded {
    /// Adds a component, or replaces the one of the same name.
    pub fn put(&mut self, info: ComponentInfo, block: Block) {
        self.remove(&info.name);
        match block {
            Block::State(s) => {
                self.stores.insert(info.name.clone(), Arc::new(s));
            }
            Block::Secrets(s) => {
                self.secret_stores.insert(info.name.clone(), s);
            }
            Block::PubSub(p) => {
                self.pubsubs.insert(info.name.clone(), Arc::new(p));
            }
            Block::Lock(l) => {
                self.locks.insert(info.name.clone(), Arc::new(l));
            }
            Block::Configuration(c) => {
                self.configs.insert(info.name.clone(), c);
            }
            Block::Binding(b) => {
                self.bindings.insert(info.name.clone(), Arc::new(b));
            }
        }
        self.components.push(info);
    }

    /// The type of the component called `name`, if one is loaded: an API
    /// that cannot find `name` among its own block says what it is instead.
    pub fn kind_of(&self, name: &str) -> Option<&str> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.kind.as_str())
    }

    /// Removes a component; false when there was none of that name.
    pub fn remove(&mut self, name: &str) -> bool {
        self.stores.remove(name);
        self.secret_stores.remove(name);
        self.pubsubs.remove(name);
        self.locks.remove(name);
        self.configs.remove(name);
        self.bindings.remove(name);
        let before = self.components.len();
        self.components.retain(|c| c.name != name);
        before != self.components.len()
    }
}

/// Readiness flags.
#[derive(Default)]
pub struct Health {
    /// Components loaded and API servers listening.
    pub outbound: AtomicBool,
    /// The app's port accepted a connection (or there is no app port).
    pub app_ready: AtomicBool,
    /// The last health probes succeeded (true when probing is off).
    pub app_healthy: AtomicBool,
}

/// Everything the request handlers share.
pub struct Runtime {
    /// Validated settings.
    pub settings: Settings,
    /// This app's id.
    pub app_id: String,
    /// `NAMESPACE`, if set.
    pub namespace: Option<String>,
    /// The components in use.
    pub loaded: RwLock<Loaded>,
    /// Attributes set through `PUT /v1.0/metadata/{key}`.
    pub extended: RwLock<BTreeMap<String, String>>,
    /// Readiness.
    pub health: Health,
    /// The app, when `--app-port` is set.
    pub app: Option<AppChannel>,
    /// Routes invocations to other sidecars.
    pub invoker: Invoker,
    /// Set to true to begin a graceful shutdown.
    pub shutdown: watch::Sender<bool>,
    /// Port the internal gRPC server listens on.
    pub internal_port: u16,
    /// What the `--config` Configuration changes.
    pub config: SidecarConfig,
    /// Timeouts, retries and circuit breakers for apps and components.
    pub resiliency: crate::resiliency::Resiliency,
    /// Services outside Dapr that apps invoke by name or URL.
    pub endpoints: crate::endpoints::Endpoints,
    /// The subscriptions delivering to the app or a subscriber stream, for the metadata API.
    pub subscriptions: Subscriptions,
    /// Names of components added, replaced or removed while running, so
    /// the subscriptions and input bindings on them move to the new one.
    pub components_changed: tokio::sync::broadcast::Sender<String>,
    /// Configuration subscriptions by id, for unsubscribing.
    pub config_watches: crate::configuration_api::Watches,
    /// What is recorded for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Starts the spans of calls that begin here (deliveries, input
    /// bindings) or arrive from other sidecars.
    pub tracer: daprs_telemetry::trace::Tracer,
}

/// The status an invocation's metrics carry: the app's (HTTP status, or gRPC
/// code), or the HTTP status of the error that kept it from the app.
pub fn invocation_status(result: &Result<InternalInvokeResponse, ApiError>) -> i32 {
    match result {
        Ok(res) => res.status.as_ref().map_or(200, |s| s.code),
        Err(e) => i32::from(e.http.as_u16()),
    }
}

/// The subscriptions in use, each under a token that removes it.
#[derive(Default)]
pub struct Subscriptions {
    next: std::sync::atomic::AtomicU64,
    list: std::sync::Mutex<Vec<(u64, Arc<crate::pubsub::subscriptions::Subscription>)>>,
}

impl Subscriptions {
    /// The subscriptions in the order they started.
    pub fn list(&self) -> Vec<Arc<crate::pubsub::subscriptions::Subscription>> {
        daprs_components::lock(&self.list)
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }
}

/// How an API names its component kind and its two lookup errors.
pub struct Lookup {
    /// e.g. `lock store`.
    pub what: &'static str,
    /// Code when no component of the kind is loaded (500 / FAILED_PRECONDITION).
    pub not_configured: &'static str,
    /// Code when the named one is not (400 / INVALID_ARGUMENT).
    pub not_found: &'static str,
}

impl Runtime {
    /// The component `name` from one block's table (`pick`), or the block's
    /// not-configured / not-found error; a name that belongs to another block
    /// says which type it is.
    pub fn lookup<T: Clone>(
        &self,
        name: &str,
        l: &Lookup,
        pick: impl Fn(&Loaded) -> &HashMap<String, T>,
    ) -> Result<T, ApiError> {
        let loaded = self
            .loaded
            .read()
            .map_err(|_| ApiError::internal(l.not_found, "component table unavailable"))?;
        let table = pick(&loaded);
        if let Some(found) = table.get(name) {
            return Ok(found.clone());
        }
        let other = loaded.kind_of(name);
        if table.is_empty() && other.is_none() {
            return Err(ApiError::new(
                l.not_configured,
                http::StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::FailedPrecondition,
                format!("{} is not configured", l.what),
            ));
        }
        let why = match other {
            Some(kind) => format!("{} {name} is not found: {name} is a {kind} component", l.what),
            None => format!("{} {name} is not found", l.what),
        };
        Err(ApiError::new(
            l.not_found,
            http::StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            why,
        ))
    }

    /// The loaded components, as the metadata API lists them.
    pub fn components(&self) -> Vec<ComponentInfo> {
        self.loaded
            .read()
            .map(|l| l.components.clone())
            .unwrap_or_default()
    }

    /// The app channel, or the error Dapr gives when there is none.
    pub fn app(&self) -> Result<&AppChannel, ApiError> {
        self.app.as_ref().ok_or_else(|| {
            ApiError::internal(
                "ERR_APP_CHANNEL_NIL",
                "app channel is not initialized: daprd was started without --app-port",
            )
        })
    }

    /// Hands a call to the local app, unless probes say the app is unhealthy.
    pub async fn invoke_local(&self, req: InternalInvokeRequest) -> Result<InternalInvokeResponse, ApiError> {
        let app = self.app()?;
        if !self.health.app_healthy.load(Ordering::Relaxed) {
            return Err(ApiError::new(
                "ERR_DIRECT_INVOKE",
                http::StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::FailedPrecondition,
                format!("app {} is not healthy", self.app_id),
            ));
        }
        if !self.metrics.enabled() {
            return app.invoke(req).await;
        }
        // The call to the app, as Dapr's HTTP or gRPC client metrics count it.
        let msg = req.message.as_ref();
        // The path is copied only when a label is made from it.
        let path = self
            .metrics
            .paths
            .uses_path()
            .then(|| format!("/{}", msg.map_or("", |m| m.method.as_str())));
        let verb = msg
            .and_then(|m| m.http_extension.as_ref())
            .and_then(|e| crate::app_channel::method_of(e.verb).ok())
            .unwrap_or(http::Method::POST);
        let sent = msg
            .and_then(|m| m.data.as_ref())
            .map_or(0, |d| d.value.len() as u64);
        let start = std::time::Instant::now();
        let result = app.invoke(req).await;
        let ms = crate::metrics::elapsed_ms(start);
        if app.protocol.is_grpc() {
            let code = match &result {
                Ok(r) => r.status.as_ref().map_or(0, |s| s.code),
                Err(_) => 14,
            };
            self.metrics.grpc_client(
                "/dapr.proto.runtime.v1.AppCallback/OnInvoke",
                daprs_telemetry::grpc_code_name(code),
                ms,
            );
        } else {
            let (status, received) = match &result {
                Ok(r) => (
                    r.status.as_ref().map_or(200, |s| s.code),
                    r.message
                        .as_ref()
                        .and_then(|m| m.data.as_ref())
                        .map_or(0, |d| d.value.len() as u64),
                ),
                Err(e) => (i32::from(e.http.as_u16()), 0),
            };
            let status = u16::try_from(status).unwrap_or(500);
            self.metrics.http_client(
                verb.as_str(),
                path.as_deref().unwrap_or(""),
                status,
                sent,
                received,
                ms,
            );
        }
        result
    }

    /// How API calls are logged, if they are: `--enable-api-logging` when
    /// given, else the Configuration's `spec.logging.apiLogging.enabled`.
    pub fn api_log(&self) -> Option<crate::observe::ApiLog> {
        let spec = self.config.api_logging.clone().unwrap_or_default();
        self.settings
            .flags
            .enable_api_logging
            .unwrap_or(spec.enabled)
            .then_some(crate::observe::ApiLog {
                omit_health_checks: spec.omit_health_checks,
                obfuscate_urls: spec.obfuscate_urls,
            })
    }

    /// Invokes `target` (self or another app) with a request the caller built.
    pub async fn invoke(
        &self,
        target: &Target,
        mut req: InternalInvokeRequest,
    ) -> Result<InternalInvokeResponse, ApiError> {
        if let Some(msg) = req.message.as_mut() {
            msg.method = crate::invoke::clean_method(&msg.method)?;
            if let Some(ext) = &msg.http_extension {
                crate::invoke::check_query(&ext.querystring)?;
            }
        }
        self.invoker.stamp(target, &mut req);
        // The clock is read only when something records the call.
        let start = self.metrics.enabled().then(std::time::Instant::now);
        let result = if self.invoker.is_self(target) {
            self.invoke_local(req).await
        } else {
            let policy = self.resiliency.app(&target.app_id);
            self.invoker.remote(target, req, policy).await
        };
        if let Some(start) = start {
            self.metrics.invocation_sent(
                &target.app_id,
                false,
                invocation_status(&result),
                crate::metrics::elapsed_ms(start),
            );
        }
        result
    }

    /// Records a running subscription; the token removes it.
    pub fn add_subscription(&self, sub: Arc<crate::pubsub::subscriptions::Subscription>) -> u64 {
        let token = self.subscriptions.next.fetch_add(1, Ordering::Relaxed);
        daprs_components::lock(&self.subscriptions.list).push((token, sub));
        token
    }

    /// Forgets a subscription that ended.
    pub fn remove_subscription(&self, token: u64) {
        daprs_components::lock(&self.subscriptions.list).retain(|(t, _)| *t != token);
    }

    /// Starts a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Handles a shutdown call from either API: graceful, or with
    /// `dapr-force-shutdown: true` an exit(1) shortly after the reply is sent.
    pub fn shutdown_requested(&self, force: bool) {
        if force {
            tracing::warn!("forced shutdown requested through the API");
            tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                std::process::exit(1);
            });
        } else {
            tracing::info!("shutdown requested through the API");
            self.begin_shutdown();
        }
    }

    /// The names of the targets that are not ready, for `/v1.0/healthz`.
    pub fn unready(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.health.outbound.load(Ordering::Relaxed) {
            out.push("outbound");
        }
        if !self.health.app_ready.load(Ordering::Relaxed) {
            out.push("app");
        }
        out
    }
}
