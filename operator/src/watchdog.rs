//! The watchdog: pods that should have a sidecar but were created while the
//! injector was unreachable. Each gets a Warning Event on its owner and, when
//! enabled, is deleted so its controller recreates it through the webhook.
//! Deletions are rate-limited and only ever touch controller-owned pods.

use std::time::{Duration, Instant};

use daprs_api::contract::truthy;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};

/// A pod the watchdog acts on, and its controller.
#[derive(Debug, PartialEq)]
pub struct Missing {
    pub namespace: String,
    pub pod: String,
    pub owner: OwnerReference,
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

fn message(m: &Missing, deleted: bool) -> (&'static str, String) {
    if deleted {
        (
            "DaprSidecarRestarted",
            format!(
                "pod {} was created without the daprd sidecar (the injector was unreachable); it was deleted so that it is recreated with one",
                m.pod
            ),
        )
    } else {
        (
            "DaprSidecarMissing",
            format!(
                "pod {} runs without the daprd sidecar (the injector was unreachable when it was created); delete it to have it recreated with one",
                m.pod
            ),
        )
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
                let (reason, text) = message(&m, delete);
                let owner = crate::events::reference(
                    &m.owner.api_version,
                    &m.owner.kind,
                    &m.namespace,
                    &m.owner.name,
                    Some(m.owner.uid.clone()),
                );
                crate::events::warn(client, owner, reason, &text).await;
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
