//! `daprs-operator`: keeps the Dapr resources checked and the per-app
//! Services in place. The reconcile decisions are pure functions over the
//! Kubernetes objects ([`service`], [`validate`], [`scope`]); the controllers
//! that read and write the API server sit on top of them.

pub mod api;
pub mod bootstrap;
pub mod ca;
pub mod ca_sync;
pub mod controllers;
pub mod events;
pub mod identity;
pub mod leader;
pub mod scope;
pub mod sentry;
pub mod serve;
pub mod service;
pub mod tls;
pub mod validate;
pub mod watch;
pub mod watchdog;
pub mod webhook_tls;
