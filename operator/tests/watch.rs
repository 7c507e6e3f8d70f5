//! Watch events to changes: what sidecars' update streams are fed.

use daprs_api::v1alpha1::Component;
use daprs_operator::watch::Tracker;
use kube::runtime::watcher::Event;

fn component(name: &str, version: &str) -> Component {
    serde_json::from_value(serde_json::json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": name, "namespace": "prod", "uid": format!("uid-{name}"), "resourceVersion": version},
        "spec": {"type": "state.redis", "version": "v1", "metadata": []}}))
    .expect("component")
}

#[test]
fn the_first_list_is_quiet_and_later_changes_are_reported() {
    let mut t = Tracker::new("Component");
    assert!(t.on(&Event::<Component>::Init).is_empty());
    assert!(t.on(&Event::InitApply(component("a", "1"))).is_empty());
    assert!(t.on(&Event::InitApply(component("b", "1"))).is_empty());
    assert!(t.on(&Event::<Component>::InitDone).is_empty());

    let created = t.on(&Event::Apply(component("c", "1")));
    assert_eq!(created.len(), 1);
    assert!(created[0].old.is_none() && created[0].new.is_some());
    assert!(
        t.on(&Event::Apply(component("c", "1"))).is_empty(),
        "same version: not news"
    );
    let updated = t.on(&Event::Apply(component("c", "2")));
    assert!(updated[0].old.is_some() && updated[0].new.is_some());
    let deleted = t.on(&Event::Delete(component("a", "1")));
    assert!(deleted[0].new.is_none() && deleted[0].old.is_some());
    assert_eq!(deleted[0].namespace, "prod");
}

#[test]
fn a_relist_reports_what_changed_while_the_watch_was_down() {
    let mut t = Tracker::new("Component");
    t.on(&Event::<Component>::Init);
    t.on(&Event::InitApply(component("a", "1")));
    t.on(&Event::InitApply(component("b", "1")));
    t.on(&Event::<Component>::InitDone);
    // The watch restarts: a changed, b gone.
    t.on(&Event::<Component>::Init);
    let changed = t.on(&Event::InitApply(component("a", "5")));
    assert_eq!(changed.len(), 1, "a changed while the watch was down");
    let gone = t.on(&Event::<Component>::InitDone);
    assert_eq!(gone.len(), 1);
    assert_eq!(
        gone[0].old.as_ref().map(|o| o["metadata"]["name"].clone()),
        Some("b".into())
    );
    assert!(gone[0].new.is_none());
}
