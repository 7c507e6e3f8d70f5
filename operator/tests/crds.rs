//! The committed CRDs in charts/daprs/crds are exactly what the types generate.
//! After changing a type: `cargo run -p daprs-operator -- crdgen --out charts/daprs/crds`.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/daprs/crds");
    for (file, crd) in daprs_api::crds::all().expect("crds") {
        let want = daprs_api::crds::to_yaml(&crd).expect("yaml");
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            have == want,
            "charts/daprs/crds/{file} is out of date; run `cargo run -p daprs-operator -- crdgen --out charts/daprs/crds`"
        );
    }
}

#[test]
fn crds_have_status_and_printer_columns_where_users_look() {
    let crds = daprs_api::crds::all().expect("crds");
    let (_, components) = crds
        .iter()
        .find(|(f, _)| *f == "components.yaml")
        .expect("components");
    let v = &components.spec.versions[0];
    assert!(v.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
    let columns: Vec<_> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Type", "Ready", "Version", "Age"]);
    let (_, subs) = crds
        .iter()
        .find(|(f, _)| *f == "subscriptions.yaml")
        .expect("subscriptions");
    let mut versions: Vec<_> = subs
        .spec
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.storage))
        .collect();
    versions.sort();
    assert_eq!(versions, [("v1alpha1", false), ("v2alpha1", true)]);
}
