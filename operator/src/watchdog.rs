//! The watchdog: pods that should have a sidecar but were created while the
//! injector was unreachable. Each gets a Warning Event on its owner and, when
//! enabled, is deleted so its controller recreates it through the webhook.
//! Deletions are rate-limited and only ever touch controller-owned pods.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{OwnerReference, Time},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};

/// A pod the watchdog acts on, and its controller.
#[derive(Debug, PartialEq)]
pub struct Missing {
    pub namespace: String,
    pub pod: String,
    pub owner: OwnerReference,
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "t" | "true" | "y" | "yes" | "on"
    )
}

/// Whether `pod` is Dapr-enabled, lacks daprd, and has a controller to recreate it.
pub fn missing_sidecar(pod: &Pod) -> Option<Missing> {
    let meta = &pod.metadata;
    if meta.deletion_timestamp.is_some() {
        return None;
    }
    let enabled = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get("dapr.io/enabled"))
        .is_some_and(|v| truthy(v));
    if !enabled
        || meta
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("dapr.io/sidecar-injected"))
    {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let has_daprd = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == "daprd");
    if has_daprd {
        return None;
    }
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))?
        .clone();
    Some(Missing {
        namespace: meta.namespace.clone()?,
        pod: meta.name.clone()?,
        owner,
    })
}

/// Settings of the watchdog.
#[derive(Clone, Debug)]
pub struct Watchdog {
    pub every: Duration,
    /// Delete the pods (otherwise only report them).
    pub delete: bool,
    /// At most this many deletions per minute (0: no limit).
    pub max_per_minute: u32,
}

/// Admits at most `max` actions per minute.
pub struct RateLimit {
    max: u32,
    window: Instant,
    used: u32,
}

impl RateLimit {
    pub fn new(max: u32) -> Self {
        Self {
            max,
            window: Instant::now(),
            used: 0,
        }
    }

    pub fn allow(&mut self, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        if now.duration_since(self.window) >= Duration::from_secs(60) {
            self.window = now;
            self.used = 0;
        }
        if self.used < self.max {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

fn event(m: &Missing, deleted: bool) -> Event {
    let now = Timestamp::now();
    let message = if deleted {
        format!(
            "pod {} was created without the daprd sidecar (the injector was unreachable); it was deleted so that it is recreated with one",
            m.pod
        )
    } else {
        format!(
            "pod {} runs without the daprd sidecar (the injector was unreachable when it was created); delete it to have it recreated with one",
            m.pod
        )
    };
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", m.owner.name)),
            namespace: Some(m.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(m.owner.api_version.clone()),
            kind: Some(m.owner.kind.clone()),
            name: Some(m.owner.name.clone()),
            namespace: Some(m.namespace.clone()),
            uid: Some(m.owner.uid.clone()),
            ..Default::default()
        },
        reason: Some(
            if deleted {
                "DaprSidecarRestarted"
            } else {
                "DaprSidecarMissing"
            }
            .into(),
        ),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("daprs-operator".into()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

impl Watchdog {
    /// One pass over every pod; returns the pods acted on.
    pub async fn pass(
        &self,
        client: &kube::Client,
        limit: &mut RateLimit,
    ) -> Result<Vec<Missing>, kube::Error> {
        let pods: Api<Pod> = Api::all(client.clone());
        let mut acted = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = pods.list(&params).await?;
            for pod in &page.items {
                let Some(m) = missing_sidecar(pod) else { continue };
                let delete = self.delete && limit.allow(Instant::now());
                if delete {
                    Api::<Pod>::namespaced(client.clone(), &m.namespace)
                        .delete(&pod.name_any(), &DeleteParams::default())
                        .await?;
                }
                let ev = event(&m, delete);
                if let Err(e) = Api::<Event>::namespaced(client.clone(), &m.namespace)
                    .create(&PostParams::default(), &ev)
                    .await
                {
                    tracing::warn!(error = %e, "cannot record an Event");
                }
                tracing::warn!(namespace = %m.namespace, pod = %m.pod, deleted = delete, "pod without daprd");
                acted.push(m);
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(acted)
    }

    pub async fn run(self, client: kube::Client) {
        let mut limit = RateLimit::new(self.max_per_minute);
        loop {
            if let Err(e) = self.pass(&client, &mut limit).await {
                tracing::warn!(error = %e, "watchdog pass failed");
            }
            tokio::time::sleep(self.every).await;
        }
    }
}
