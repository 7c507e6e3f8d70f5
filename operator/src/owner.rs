//! The object the CA material the operator creates belongs to. Kubernetes'
//! garbage collector deletes what an owner reference points from once the
//! owner is gone, so removing the installation (its owner ConfigMap)
//! removes the CA too, unless the installation keeps that ConfigMap.

use k8s_openapi::{
    api::core::v1::ConfigMap,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};

/// The reference to the ConfigMap `name` in `namespace`, when one is
/// configured and exists.
pub async fn lookup(
    client: &kube::Client,
    namespace: &str,
    name: Option<&str>,
) -> Result<Option<OwnerReference>, String> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("reading ConfigMap {name}: {e}"))?;
    Ok(map.and_then(|m| reference(&m)))
}

/// An owner reference to `map`.
pub fn reference(map: &ConfigMap) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: map.metadata.name.clone()?,
        uid: map.metadata.uid.clone()?,
        ..Default::default()
    })
}

/// The owner references `meta` should carry, when `owner` is not among them.
pub fn missing(meta: &ObjectMeta, owner: Option<&OwnerReference>) -> Option<Vec<OwnerReference>> {
    let owner = owner?;
    let refs = meta.owner_references.clone().unwrap_or_default();
    if refs.iter().any(|r| r.uid == owner.uid) {
        return None;
    }
    Some(refs.into_iter().chain([owner.clone()]).collect())
}

/// A merge patch that sets the owner references.
pub fn patch(refs: &[OwnerReference]) -> serde_json::Value {
    serde_json::json!({"metadata": {"ownerReferences": refs}})
}

/// Makes `owner` an owner of the existing object `obj`, if it is not yet.
pub async fn adopt<K>(api: &Api<K>, obj: &K, owner: Option<&OwnerReference>) -> Result<(), String>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(refs) = missing(obj.meta(), owner) else {
        return Ok(());
    };
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch(&refs)))
        .await
        .map(|_| ())
        .map_err(|e| format!("setting the owner of {} {name}: {e}", K::kind(&())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(uid: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "daprs-trust-bundle-owner", "namespace": "dapr-system", "uid": uid}
        }))
        .expect("configmap")
    }

    #[test]
    fn an_owner_is_added_once_beside_the_others() {
        let owner = reference(&map("u1")).expect("reference");
        let mut meta = ObjectMeta::default();
        let refs = missing(&meta, Some(&owner)).expect("missing");
        assert_eq!(refs.len(), 1);
        meta.owner_references = Some(refs);
        assert!(missing(&meta, Some(&owner)).is_none());
        // A reinstalled owner (a new uid) is added beside the old one, which
        // the collector ignores once it is gone.
        let again = reference(&map("u2")).expect("reference");
        assert_eq!(missing(&meta, Some(&again)).map(|r| r.len()), Some(2));
        assert!(missing(&meta, None).is_none());
        let p = patch(&[owner]);
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ConfigMap");
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], "u1");
    }
}
