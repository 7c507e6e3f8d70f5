//! Integration tests: real `daprd` processes on loopback ports, with small HTTP
//! and gRPC apps served from the test process, and the real Redis and
//! PostgreSQL on this machine.

#[path = "integration/acl.rs"]
mod acl;
#[path = "integration/apps.rs"]
mod apps;
#[path = "integration/bindings.rs"]
mod bindings;
#[path = "integration/broker_tls.rs"]
mod broker_tls;
#[path = "integration/collector.rs"]
mod collector;
#[path = "integration/configuration.rs"]
mod configuration;
#[path = "integration/endpoints.rs"]
mod endpoints;
#[path = "integration/flags.rs"]
mod flags;
#[path = "integration/hardening.rs"]
mod hardening;
#[path = "integration/harness.rs"]
mod harness;
#[path = "integration/invoke.rs"]
mod invoke;
#[path = "integration/lifecycle.rs"]
mod lifecycle;
#[path = "integration/lock.rs"]
mod lock;
#[path = "integration/logs.rs"]
mod logs;
#[path = "integration/metrics.rs"]
mod metrics;
#[path = "integration/proxy.rs"]
mod proxy;
#[path = "integration/proxy_links.rs"]
mod proxy_links;
#[path = "integration/proxy_reflection.rs"]
mod proxy_reflection;
#[path = "integration/pubsub.rs"]
mod pubsub;
#[path = "integration/pubsub_brokers.rs"]
mod pubsub_brokers;
#[path = "integration/pubsub_grpc.rs"]
mod pubsub_grpc;
#[path = "integration/query.rs"]
mod query;
#[path = "integration/resiliency.rs"]
mod resiliency;
#[path = "integration/runtime_api.rs"]
mod runtime_api;
#[path = "integration/sdk.rs"]
mod sdk;
#[path = "integration/sdk_blocks.rs"]
mod sdk_blocks;
#[path = "integration/secrets.rs"]
mod secrets;
#[path = "integration/startup.rs"]
mod startup;
#[path = "integration/state.rs"]
mod state;
#[path = "integration/tracing.rs"]
mod tracing;
