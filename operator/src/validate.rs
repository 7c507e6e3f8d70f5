//! Checking a Component before any sidecar loads it, so that `kubectl get
//! components` shows what is wrong and what to do about it.

use daprs_api::v1alpha1::{Component, ComponentStatus, Condition};

/// Building blocks a component type may start with.
const BLOCKS: &[&str] = &[
    "state",
    "pubsub",
    "bindings",
    "secretstores",
    "configuration",
    "lock",
    "middleware.http",
    "nameresolution",
    "crypto",
    "conversation",
    "workflowbackend",
];

/// Metadata a type cannot work without (any one name of each group).
const REQUIRED: &[(&str, &[&[&str]])] = &[
    ("state.redis", &[&["redisHost"]]),
    ("pubsub.redis", &[&["redisHost"]]),
    ("lock.redis", &[&["redisHost"]]),
    ("configuration.redis", &[&["redisHost"]]),
    ("state.postgresql", &[&["connectionString"]]),
    ("configuration.postgresql", &[&["connectionString"]]),
    ("state.mysql", &[&["connectionString"]]),
    ("state.sqlite", &[&["connectionString"]]),
    ("state.mongodb", &[&["host", "server"]]),
    ("pubsub.rabbitmq", &[&["connectionString", "host"]]),
    ("pubsub.kafka", &[&["brokers"]]),
    ("bindings.kafka", &[&["brokers"]]),
    ("pubsub.mqtt3", &[&["url"]]),
    ("pubsub.jetstream", &[&["natsURL"]]),
    ("bindings.http", &[&["url"]]),
    ("bindings.cron", &[&["schedule"]]),
    ("bindings.postgresql", &[&["connectionString", "url"]]),
    ("secretstores.local.file", &[&["secretsFile"]]),
];

/// Why a component cannot work, or `None` when it can.
pub fn problem(c: &Component) -> Option<(&'static str, String)> {
    let kind = c.spec.spec.type_.trim();
    if kind.is_empty() {
        return Some((
            "MissingType",
            "spec.type is empty; set it to e.g. state.redis".into(),
        ));
    }
    if !BLOCKS.iter().any(|b| {
        kind.strip_prefix(b)
            .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
    }) {
        return Some((
            "UnknownType",
            format!(
                "spec.type {kind:?} does not name a building block; it must start with one of {}",
                BLOCKS
                    .iter()
                    .map(|b| format!("{b}."))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let version = c.spec.spec.version.trim();
    let version_ok = version
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_digit()));
    if !version_ok {
        return Some((
            "InvalidVersion",
            format!("spec.version {version:?} must look like v1 or v2"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, m) in c.spec.spec.metadata.iter().enumerate() {
        if m.name.trim().is_empty() {
            return Some(("InvalidMetadata", format!("spec.metadata[{i}] has no name")));
        }
        if !seen.insert(m.name.as_str()) {
            return Some((
                "InvalidMetadata",
                format!("spec.metadata names {:?} twice", m.name),
            ));
        }
        let sources = usize::from(m.value.is_some())
            + usize::from(m.secret_key_ref.is_some())
            + usize::from(m.env_ref.is_some());
        if sources > 1 {
            return Some((
                "InvalidMetadata",
                format!(
                    "spec.metadata {:?} sets more than one of value, secretKeyRef and envRef",
                    m.name
                ),
            ));
        }
        if let Some(r) = &m.secret_key_ref
            && r.name.trim().is_empty()
        {
            return Some((
                "InvalidSecretKeyRef",
                format!("spec.metadata {:?}: secretKeyRef.name must name a secret", m.name),
            ));
        }
    }
    if let Some((_, groups)) = REQUIRED.iter().find(|(t, _)| *t == kind) {
        for group in *groups {
            let present = c.spec.spec.metadata.iter().any(|m| {
                group.iter().any(|g| m.name.eq_ignore_ascii_case(g))
                    && (m.secret_key_ref.is_some()
                        || m.env_ref.is_some()
                        || m.value
                            .as_ref()
                            .is_some_and(|v| !v.is_null() && v.as_str() != Some("")))
            });
            if !present {
                return Some((
                    "MissingMetadata",
                    format!("{kind} needs spec.metadata {}", group.join(" or ")),
                ));
            }
        }
    }
    None
}

/// The status to write: `Ready` true or false with the reason. The
/// transition time only moves when the condition's status changes.
pub fn status(c: &Component, now: &str) -> ComponentStatus {
    let (state, reason, message) = match problem(c) {
        None => ("True", "Valid", "the component is valid".to_string()),
        Some((reason, message)) => ("False", reason, message),
    };
    let previous = c
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let since = match previous {
        Some(p) if p.status == state => p.last_transition_time.clone(),
        _ => Some(now.to_string()),
    };
    ComponentStatus {
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: state.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: c.metadata.generation,
        }],
    }
}
