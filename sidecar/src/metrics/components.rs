//! What components record: their start-up, and every call on a state
//! store, secret store, output binding, configuration store or lock, each
//! publish, each input-binding event and each delivery to the app, under
//! Dapr's names.

use super::{Block, Metrics, flag};

impl Metrics {
    /// A component that started (`kind`: its type, e.g. `state.redis`).
    pub fn component_started(&self, kind: &str) {
        if !self.enabled {
            return;
        }
        self.component_loaded.add(&[&self.app_id], 1.0);
        self.component_init.add(&[&self.app_id, kind], 1.0);
    }

    /// A component that failed to start.
    pub fn component_failed(&self, kind: &str, name: &str, reason: &str) {
        if !self.enabled {
            return;
        }
        self.component_init_fail
            .add(&[&self.app_id, kind, reason, name], 1.0);
    }

    /// One call on a component (`operation`: `get`, `set`, `delete`,
    /// `bulk_get`, `transaction`, `query`, an output binding's operation ...).
    pub fn component_call(&self, block: Block, name: &str, operation: &str, success: bool, ms: f64) {
        if !self.enabled {
            return;
        }
        let labels = [
            self.app_id.as_str(),
            name,
            self.namespace.as_str(),
            operation,
            flag(success),
        ];
        self.blocks[block as usize].observe(&labels, ms);
    }

    /// One publish to `topic` on `pubsub`.
    pub fn published(&self, pubsub: &str, topic: &str, success: bool, ms: f64) {
        if !self.enabled {
            return;
        }
        let labels = [
            self.app_id.as_str(),
            pubsub,
            self.namespace.as_str(),
            flag(success),
            topic,
        ];
        self.pubsub_egress_latencies.observe(&labels, ms);
    }

    /// One input binding event handed to the app.
    pub fn input_event(&self, binding: &str, success: bool, ms: f64) {
        if !self.enabled {
            return;
        }
        let labels = [
            self.app_id.as_str(),
            binding,
            self.namespace.as_str(),
            flag(success),
        ];
        self.input_binding_latencies.observe(&labels, ms);
    }

    /// One message delivered to the subscriber (`status`: `success`,
    /// `retry` or `drop`).
    pub fn delivered(&self, pubsub: &str, topic: &str, status: &str, ms: f64) {
        if !self.enabled {
            return;
        }
        let labels = [
            self.app_id.as_str(),
            pubsub,
            self.namespace.as_str(),
            status,
            topic,
        ];
        self.pubsub_ingress_latencies.observe(&labels, ms);
    }
}
