//! Leader election on a Lease.

#[path = "support/fake_api.rs"]
mod fake_api;

use std::time::Duration;

use daprs_operator::leader::{Step, campaign, step};
use fake_api::FakeApi;
use k8s_openapi::{
    api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};

const FIFTEEN: Duration = Duration::from_secs(15);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("timestamp")
}

fn held_by(who: &str, renewed: i64) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(who.into()),
        lease_duration_seconds: Some(15),
        renew_time: Some(MicroTime(at(renewed))),
        lease_transitions: Some(2),
        ..Default::default()
    }
}

#[test]
fn the_lease_is_taken_renewed_or_left_alone() {
    let Step::Write(new) = step(None, "a", at(1000), FIFTEEN) else {
        panic!("take a missing lease")
    };
    assert_eq!(new.holder_identity.as_deref(), Some("a"));
    assert_eq!(new.lease_transitions, Some(0));

    let Step::Write(renewed) = step(Some(&held_by("a", 990)), "a", at(1000), FIFTEEN) else {
        panic!("renew own")
    };
    assert_eq!(renewed.renew_time, Some(MicroTime(at(1000))));
    assert_eq!(renewed.lease_transitions, Some(2), "renewing is not a transition");

    assert_eq!(
        step(Some(&held_by("b", 990)), "a", at(1000), FIFTEEN),
        Step::Follow { holder: "b".into() }
    );
    let Step::Write(taken) = step(Some(&held_by("b", 900)), "a", at(1000), FIFTEEN) else {
        panic!("take an expired lease")
    };
    assert_eq!(taken.holder_identity.as_deref(), Some("a"));
    assert_eq!(taken.lease_transitions, Some(3));
}

#[tokio::test]
async fn of_two_replicas_exactly_one_leads() {
    let api = FakeApi::default();
    let (a_tx, a_rx) = tokio::sync::watch::channel(false);
    let (b_tx, b_rx) = tokio::sync::watch::channel(false);
    let lease = || ("dapr-system".to_string(), "daprs-operator".to_string());
    let (ns, name) = lease();
    let a = tokio::spawn(campaign(
        api.client(),
        ns,
        name,
        "a".into(),
        Duration::from_secs(2),
        a_tx,
    ));
    let (ns, name) = lease();
    let b = tokio::spawn(campaign(
        api.client(),
        ns,
        name,
        "b".into(),
        Duration::from_secs(2),
        b_tx,
    ));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(*a_rx.borrow() ^ *b_rx.borrow(), "exactly one leader");
    let leader_was_a = *a_rx.borrow();

    // The leader goes away; the other takes over once the lease expires.
    if leader_was_a {
        a.abort()
    } else {
        b.abort()
    }
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let other = if leader_was_a { &b_rx } else { &a_rx };
    assert!(*other.borrow(), "the survivor leads");
    let holder = api
        .get("/apis/coordination.k8s.io/v1/namespaces/dapr-system/leases/daprs-operator")
        .expect("lease")["spec"]["holderIdentity"]
        .clone();
    assert_eq!(holder, if leader_was_a { "b" } else { "a" });
}
