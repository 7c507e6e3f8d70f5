//! Dapr's resiliency families: documents loaded, policies applied to
//! calls, and policies activated (a retry, a timeout firing, a circuit
//! breaker changing state).

use daprs_telemetry::registry::Family;

const POLICY: &[&str] = &[
    "app_id",
    "flow_direction",
    "name",
    "namespace",
    "policy",
    "status",
    "target",
];

pub struct ResiliencyFamilies {
    pub(super) loaded: Family,
    pub(super) count: Family,
    pub(super) activations: Family,
}

/// One policy applied to one target: what its counts are labelled with.
#[derive(Clone, Copy, Debug)]
pub struct PolicyLabels<'a> {
    /// The Resiliency document's name.
    pub name: &'a str,
    /// `outbound` (to an app or component) or `inbound` (into the app).
    pub direction: &'static str,
    /// `app_<id>`, or the component's type and name (`statestore_redis`).
    pub target: &'a str,
}

impl ResiliencyFamilies {
    pub(super) fn new() -> Self {
        Self {
            loaded: Family::counter(
                "dapr_resiliency_loaded",
                "The number of Resiliency documents loaded.",
                &["app_id", "name", "namespace"],
            ),
            count: Family::counter(
                "dapr_resiliency_count",
                "The number of times a resiliency policy has been applied to a call.",
                POLICY,
            ),
            activations: Family::counter(
                "dapr_resiliency_activations_total",
                "The number of times a resiliency policy has been activated after a failure or a state change.",
                POLICY,
            ),
        }
    }
}

impl super::Metrics {
    /// A Resiliency document in use.
    pub fn resiliency_in_use(&self, name: &str) {
        if self.enabled {
            self.resiliency
                .loaded
                .add(&[&self.app_id, name, &self.namespace], 1.0);
        }
    }

    fn policy_labels<'a>(&'a self, l: &PolicyLabels<'a>, policy: &'a str, status: &'a str) -> [&'a str; 7] {
        [
            &self.app_id,
            l.direction,
            l.name,
            &self.namespace,
            policy,
            status,
            l.target,
        ]
    }

    /// `policy` (`timeout`, `retry`, `circuitbreaker`) applied to one call;
    /// a breaker's `status` is its state.
    pub fn resiliency_applied(&self, l: &PolicyLabels<'_>, policy: &str, status: &str) {
        if self.enabled {
            self.resiliency
                .count
                .add(&self.policy_labels(l, policy, status), 1.0);
        }
    }

    /// `policy` acted: a retry, a timeout, a breaker moving to `status`.
    pub fn resiliency_activated(&self, l: &PolicyLabels<'_>, policy: &str, status: &str) {
        if self.enabled {
            self.resiliency
                .activations
                .add(&self.policy_labels(l, policy, status), 1.0);
        }
    }
}
