//! Bindings: output bindings run an operation on an outside system and
//! return its answer; input bindings deliver outside events to a handler
//! (the app) and acknowledge each only once the handler took it.
//!
//! Semantics every binding honours:
//! - an output binding refuses an operation it does not list, naming the
//!   ones it has;
//! - an input binding redelivers an event the handler refused when its
//!   source can (a queue), and otherwise drops it with a warning;
//! - dropping the [`Reading`] an input binding returned stops it.

pub mod broker;
pub mod cron;
pub mod http;
pub mod localstorage;
pub mod mqtt;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod schedule;

use std::{future::Future, pin::Pin, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;

use crate::Metadata;

/// An output binding call.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `create`, `get`, … — what the binding lists.
    pub operation: String,
    /// The payload.
    pub data: Bytes,
    /// Per-call metadata.
    pub metadata: Metadata,
}

/// An output binding's answer.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// The payload, if the operation returns one.
    pub data: Option<Bytes>,
    /// Metadata about the call (status codes, names, counts).
    pub metadata: Metadata,
}

/// An event from an input binding.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub data: Bytes,
    pub metadata: Metadata,
}

/// Takes an event; `Err` means the app did not take it.
pub type Handler =
    Arc<dyn Fn(Event) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A running input binding; dropping it stops the reading.
pub struct Reading(#[allow(dead_code)] Box<dyn Send + Sync>);

/// Aborts tasks when dropped.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

impl Reading {
    /// Stops `tasks` when dropped.
    pub fn new(tasks: Vec<tokio::task::JoinHandle<()>>) -> Self {
        Self(Box::new(Tasks(tasks)))
    }

    /// Keeps `guard` (whose drop stops the reading).
    pub fn guard(guard: impl Send + Sync + 'static) -> Self {
        Self(Box::new(guard))
    }
}

/// A binding's two directions; a binding has one or both.
#[async_trait]
pub trait Binding: Send + Sync + 'static {
    /// The operations of the output direction; empty for input-only bindings.
    fn operations(&self) -> &'static [&'static str];

    /// Runs one output operation, one of [`Binding::operations`].
    async fn run(&self, req: Request) -> crate::Result<Response> {
        let _ = req;
        Err(crate::Error::Invalid(
            "this binding has no output direction".into(),
        ))
    }

    /// Runs one output operation, refusing one the binding does not list.
    async fn invoke(&self, req: Request) -> crate::Result<Response> {
        let ops = self.operations();
        if !ops.is_empty() && !ops.contains(&req.operation.as_str()) {
            return Err(crate::Error::Invalid(format!(
                "operation {:?} is not supported; this binding supports {}",
                req.operation,
                ops.join(", ")
            )));
        }
        self.run(req).await
    }

    /// Whether the binding can deliver events.
    fn is_input(&self) -> bool {
        false
    }

    /// Starts delivering events to `handler`.
    async fn read(&self, handler: Handler) -> crate::Result<Reading> {
        let _ = handler;
        Err(crate::Error::Invalid(
            "this binding has no input direction".into(),
        ))
    }
}
