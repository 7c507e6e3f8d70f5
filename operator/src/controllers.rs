//! The reconcilers: one `<app-id>-dapr` Service per Dapr-enabled Deployment
//! and StatefulSet (server-side applied, owned by the workload), and the
//! `Ready` condition of every Component.

use std::{sync::Arc, time::Duration};

use daprs_api::v1alpha1::Component;
use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{PodTemplateSpec, Service},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};

use crate::{service, validate};

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "daprs-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

pub struct Ctx {
    pub client: kube::Client,
}

/// Applies the Service a workload should have, or reports why it cannot.
async fn apply_service(
    client: &kube::Client,
    desired: Option<Result<Service, String>>,
    what: String,
) -> Result<Action, Error> {
    match desired {
        None => Ok(Action::await_change()),
        Some(Err(why)) => {
            tracing::warn!(workload = %what, "no Dapr Service: {why}");
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        Some(Ok(svc)) => {
            let name = svc.name_any();
            let ns = svc.namespace().ok_or_else(|| Error::NoNamespace(what.clone()))?;
            Api::<Service>::namespaced(client.clone(), &ns)
                .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&svc))
                .await?;
            tracing::debug!(service = %name, workload = %what, "Service applied");
            Ok(Action::requeue(Duration::from_secs(3600)))
        }
    }
}

pub async fn reconcile_deployment(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let what = format!(
        "Deployment {}/{}",
        d.namespace().unwrap_or_default(),
        d.name_any()
    );
    apply_service(&ctx.client, service::for_deployment(&d), what).await
}

pub async fn reconcile_statefulset(s: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let what = format!(
        "StatefulSet {}/{}",
        s.namespace().unwrap_or_default(),
        s.name_any()
    );
    apply_service(&ctx.client, service::for_statefulset(&s), what).await
}

/// Writes the Component's `Ready` condition when it changed.
pub async fn reconcile_component(c: Arc<Component>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let status = validate::status(&c, &now);
    if c.status.as_ref() == Some(&status) {
        return Ok(Action::await_change());
    }
    let ns = c.namespace().ok_or_else(|| Error::NoNamespace(c.name_any()))?;
    if let Some(cond) = status.conditions.first()
        && cond.status != "True"
    {
        tracing::warn!(component = %format!("{ns}/{}", c.name_any()), reason = %cond.reason, "{}", cond.message);
        let object = crate::events::reference("dapr.io/v1alpha1", "Component", &ns, &c.name_any(), c.uid());
        crate::events::warn(&ctx.client, object, &cond.reason, &cond.message).await;
    }
    let patch = serde_json::json!({"status": status});
    Api::<Component>::namespaced(ctx.client.clone(), &ns)
        .patch_status(&c.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Action::await_change())
}

fn retry<K>(_: Arc<K>, e: &Error, _: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Drops what the Service reconciler never reads from a workload: its
/// status, the pod spec, labels and annotations outside the pod template's
/// annotations, and field-manager bookkeeping. A cluster's Deployments are
/// held in memory, and most of each is its pod spec.
pub fn slim_deployment(d: &mut Deployment) {
    slim_meta(&mut d.metadata);
    d.status = None;
    if let Some(spec) = d.spec.as_mut() {
        slim_template(&mut spec.template);
    }
}

/// The same for a StatefulSet (its volume claim templates go too).
pub fn slim_statefulset(s: &mut StatefulSet) {
    slim_meta(&mut s.metadata);
    s.status = None;
    if let Some(spec) = s.spec.as_mut() {
        slim_template(&mut spec.template);
        spec.volume_claim_templates = None;
    }
}

fn slim_meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
}

fn slim_template(t: &mut PodTemplateSpec) {
    t.spec = None;
    if let Some(m) = t.metadata.as_mut() {
        m.labels = None;
        m.managed_fields = None;
    }
}

/// Runs every controller until the process ends.
pub async fn run(client: kube::Client) {
    use kube::{
        api::PartialObjectMeta,
        runtime::{WatchStreamExt, reflector},
    };
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    // Owned Services only wake their workload: their metadata is enough.
    let owned = || {
        watcher(
            Api::<PartialObjectMeta<Service>>::all(client.clone()),
            watcher::Config::default().labels("dapr.io/enabled=true"),
        )
        .default_backoff()
        .touched_objects()
    };
    let (reader, writer) = reflector::store();
    let slim = watcher(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(slim_deployment)
        .reflect(writer)
        .touched_objects();
    let deployments = Controller::for_stream(slim, reader)
        .owns_stream(owned())
        .run(reconcile_deployment, retry, ctx.clone())
        .for_each(|_| async {});
    let (reader, writer) = reflector::store();
    let slim = watcher(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim_statefulset)
    .reflect(writer)
    .touched_objects();
    let statefulsets = Controller::for_stream(slim, reader)
        .owns_stream(owned())
        .run(reconcile_statefulset, retry, ctx.clone())
        .for_each(|_| async {});
    let (reader, writer) = reflector::store();
    let components = watcher(Api::<Component>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|c: &mut Component| c.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    let components = Controller::for_stream(components, reader)
        .run(reconcile_component, retry, ctx)
        .for_each(|_| async {});
    tokio::join!(deployments, statefulsets, components);
}
