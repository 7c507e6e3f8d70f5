//! `daprs-operator`: the certificate authority of the sidecars ([`ca`],
//! [`sentry`]), the resources they load ([`api`]), the per-app Services and
//! Component status ([`controllers`]), and the watchdog. Decisions are pure
//! functions over Kubernetes objects ([`service`], [`validate`], [`scope`],
//! [`identity`], [`bootstrap`]); the I/O sits on top of them ([`serve`]).

pub mod api;
pub mod bootstrap;
pub mod ca;
pub mod ca_sync;
pub mod controllers;
pub mod events;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod owner;
pub mod scope;
pub mod sentry;
pub mod serve;
pub mod service;
pub mod tls;
pub mod validate;
pub mod watch;
pub mod watchdog;
pub mod webhook_tls;
