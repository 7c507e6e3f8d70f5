//! Leader election on a `coordination.k8s.io` Lease, so that of several
//! replicas only one runs the controllers (every replica signs certificates).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;

/// What to do with the lease now.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Write this lease (create when there was none, else replace).
    Write(LeaseSpec),
    /// Someone else holds it and it has not expired.
    Follow { holder: String },
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// Decides from the current lease spec (`None` when there is no lease).
pub fn step(current: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> Step {
    let fresh = |transitions: i32| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(seconds(duration)),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(cur) = current else {
        return Step::Write(fresh(0));
    };
    let holder = cur.holder_identity.clone().unwrap_or_default();
    if holder == me {
        let mut renewed = cur.clone();
        renewed.renew_time = Some(MicroTime(now));
        renewed.lease_duration_seconds = Some(seconds(duration));
        return Step::Write(renewed);
    }
    let held_for = cur.lease_duration_seconds.unwrap_or(0).max(0);
    let expired = match &cur.renew_time {
        Some(MicroTime(renewed)) => renewed.as_second() + i64::from(held_for) < now.as_second(),
        None => true,
    };
    if holder.is_empty() || expired {
        Step::Write(fresh(cur.lease_transitions.unwrap_or(0) + 1))
    } else {
        Step::Follow { holder }
    }
}

/// Campaigns for `name` in `namespace` forever, publishing whether this
/// replica leads. A conflicting write means another replica moved first.
pub async fn campaign(
    client: kube::Client,
    namespace: String,
    name: String,
    me: String,
    duration: Duration,
    leading: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let renew_every = duration / 3;
    loop {
        let result: Result<bool, kube::Error> = async {
            let current = api.get_opt(&name).await?;
            match step(
                current.as_ref().and_then(|l| l.spec.as_ref()),
                &me,
                Timestamp::now(),
                duration,
            ) {
                Step::Follow { .. } => Ok(false),
                Step::Write(spec) => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(namespace.clone()),
                            resource_version: current
                                .as_ref()
                                .and_then(|l| l.metadata.resource_version.clone()),
                            ..Default::default()
                        },
                        spec: Some(spec),
                    };
                    match current {
                        None => api.create(&PostParams::default(), &lease).await?,
                        Some(_) => api.replace(&name, &PostParams::default(), &lease).await?,
                    };
                    Ok(true)
                }
            }
        }
        .await;
        let now_leading = match result {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if e.code == 409 => false,
            Err(e) => {
                tracing::warn!(error = %e, "lease {namespace}/{name} could not be read or written");
                false
            }
        };
        if *leading.borrow() != now_leading {
            tracing::info!(leading = now_leading, "leadership changed");
            let _ = leading.send(now_leading);
        }
        tokio::time::sleep(renew_every).await;
    }
}
