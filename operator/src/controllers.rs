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
    api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, Preconditions},
    runtime::{
        Controller,
        controller::Action,
        reflector::{self, Store},
        watcher,
    },
};

use daprs_telemetry::trace::{SpanKind, Tracer};

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
    /// The Services the operator made (labelled `dapr.io/enabled=true`),
    /// metadata only: where stale ones are found.
    pub services: Store<PartialObjectMeta<Service>>,
    /// A span per reconcile, when a collector is configured.
    pub tracer: Tracer,
}

/// Runs one reconcile of `kind` `ns/name` under its own span, the name
/// under `name_key` (`k8s.deployment.name`).
async fn traced(
    ctx: &Ctx,
    (kind, name_key): (&str, &'static str),
    meta: &ObjectMeta,
    work: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let mut span = ctx.tracer.start(SpanKind::Internal, None);
    if let Some(s) = span.as_mut().filter(|s| s.recording()) {
        s.set_name_parts(&["reconcile ", kind]);
        s.set_attribute(
            "k8s.namespace.name",
            meta.namespace.as_deref().unwrap_or_default(),
        );
        s.set_attribute(name_key, meta.name.as_deref().unwrap_or_default());
    }
    let out = work.await;
    if let Some(mut s) = span {
        if let Err(e) = &out {
            s.set_error(&e.to_string());
        }
        s.end();
    }
    out
}

/// Applies the Service a workload should have, or reports why it cannot,
/// then deletes the ones it made for the workload that are no longer wanted.
async fn apply_service(
    ctx: &Ctx,
    meta: &ObjectMeta,
    desired: Option<Result<Service, String>>,
    what: String,
) -> Result<Action, Error> {
    let ns = meta
        .namespace
        .clone()
        .ok_or_else(|| Error::NoNamespace(what.clone()))?;
    let services = Api::<Service>::namespaced(ctx.client.clone(), &ns);
    let (keep, action) = match desired {
        None => (None, Action::await_change()),
        Some(Err(why)) => {
            tracing::warn!(workload = %what, "no Dapr Service: {why}");
            (None, Action::requeue(Duration::from_secs(300)))
        }
        Some(Ok(svc)) => {
            let name = svc.name_any();
            let existed = ctx.services.state().iter().any(|s| {
                s.metadata.name.as_deref() == Some(&name) && s.metadata.namespace.as_deref() == Some(&ns)
            });
            services
                .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&svc))
                .await?;
            let app_id = name.trim_end_matches("-dapr");
            let m = &crate::metrics::METRICS;
            if existed {
                m.service_updated.add(&[app_id], 1.0);
            } else {
                m.service_created.add(&[app_id], 1.0);
            }
            tracing::debug!(service = %name, workload = %what, "Service applied");
            (Some(name), Action::requeue(Duration::from_secs(3600)))
        }
    };
    if let Some(uid) = meta.uid.as_deref() {
        let made = ctx.services.state();
        let stale = service::stale(made.iter().map(|s| &s.metadata), &ns, uid, keep.as_deref());
        for name in stale {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: made
                        .iter()
                        .find(|s| s.metadata.name.as_deref() == Some(&name))
                        .and_then(|s| s.metadata.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match services.delete(&name, &params).await {
                Ok(_) => {
                    crate::metrics::METRICS
                        .service_deleted
                        .add(&[name.trim_end_matches("-dapr")], 1.0);
                    tracing::info!(service = %name, workload = %what, "Service deleted: the workload no longer has it");
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(action)
}

pub async fn reconcile_deployment(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let what = format!(
        "Deployment {}/{}",
        d.namespace().unwrap_or_default(),
        d.name_any()
    );
    let work = apply_service(&ctx, &d.metadata, service::for_deployment(&d), what);
    traced(&ctx, ("Deployment", "k8s.deployment.name"), &d.metadata, work).await
}

pub async fn reconcile_statefulset(s: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let what = format!(
        "StatefulSet {}/{}",
        s.namespace().unwrap_or_default(),
        s.name_any()
    );
    let work = apply_service(&ctx, &s.metadata, service::for_statefulset(&s), what);
    traced(&ctx, ("StatefulSet", "k8s.statefulset.name"), &s.metadata, work).await
}

/// Writes the Component's `Ready` condition when it changed.
pub async fn reconcile_component(c: Arc<Component>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    traced(
        &ctx,
        ("Component", "k8s.component.name"),
        &c.metadata,
        component_status(&c, &ctx),
    )
    .await
}

async fn component_status(c: &Component, ctx: &Ctx) -> Result<Action, Error> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let status = validate::status(c, &now);
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

/// Runs every controller until the process ends; reconciles are traced
/// when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector.
pub async fn run(client: kube::Client) {
    use kube::runtime::WatchStreamExt;
    let tracer = daprs_telemetry::trace::export::from_env("dapr-operator");
    // The Services the operator made wake their workload; their metadata is
    // enough, and is kept to find the stale ones.
    let owned = || {
        let (store, writer) = reflector::store();
        let stream = watcher(
            Api::<PartialObjectMeta<Service>>::all(client.clone()),
            watcher::Config::default().labels("dapr.io/enabled=true"),
        )
        .default_backoff()
        .reflect(writer)
        .touched_objects();
        (store, stream)
    };
    let (reader, writer) = reflector::store();
    let slim = watcher(Api::<Deployment>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(slim_deployment)
        .reflect(writer)
        .touched_objects();
    let (services, stream) = owned();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        services,
        tracer: tracer.clone(),
    });
    let deployments = Controller::for_stream(slim, reader)
        .owns_stream(stream)
        .run(reconcile_deployment, retry, ctx)
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
    let (services, stream) = owned();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        services,
        tracer: tracer.clone(),
    });
    let statefulsets = Controller::for_stream(slim, reader)
        .owns_stream(stream)
        .run(reconcile_statefulset, retry, ctx)
        .for_each(|_| async {});
    let (reader, writer) = reflector::store();
    let components = watcher(Api::<Component>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|c: &mut Component| c.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        services: reflector::store().0,
        tracer,
    });
    let components = Controller::for_stream(components, reader)
        .run(reconcile_component, retry, ctx)
        .for_each(|_| async {});
    tokio::join!(deployments, statefulsets, components);
}
