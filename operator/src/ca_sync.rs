//! Keeps the signing CA in step with the `dapr-trust-bundle` Secret and
//! ConfigMap: creates them once when there is no CA, publishes the anchors,
//! and picks up replaced material without a restart.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use time::OffsetDateTime;

use crate::{
    bootstrap::{self, Bootstrap, CA_CRT, ISSUER_CRT, ISSUER_KEY, TRUST_BUNDLE},
    sentry::CaState,
};

/// Where and what to create.
#[derive(Clone, Debug)]
pub struct CaSync {
    pub namespace: String,
    pub trust_domain: String,
    /// The ConfigMap (in `namespace`) that owns what is created here; see
    /// [`crate::owner`].
    pub owner: Option<String>,
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/part-of".to_string(), "daprs".to_string())])
}

fn meta(name: &str, namespace: &str, owner: Option<&OwnerReference>) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels()),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..Default::default()
    }
}

impl CaSync {
    /// One pass: read, decide, write if needed, update `state`. Returns what
    /// a person should know (refusals, expiry warnings).
    pub async fn once(&self, client: &kube::Client, state: &CaState) -> Result<Vec<String>, String> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &self.namespace);
        let secret = secrets
            .get_opt(TRUST_BUNDLE)
            .await
            .map_err(|e| format!("reading Secret {TRUST_BUNDLE}: {e}"))?;
        let map = maps
            .get_opt(TRUST_BUNDLE)
            .await
            .map_err(|e| format!("reading ConfigMap {TRUST_BUNDLE}: {e}"))?;
        let owner = crate::owner::lookup(client, &self.namespace, self.owner.as_deref()).await?;
        let owner = owner.as_ref();
        if let Some(s) = &secret {
            crate::owner::adopt(&secrets, s, owner).await?;
        }
        if let Some(m) = &map {
            crate::owner::adopt(&maps, m, owner).await?;
        }
        let data: Option<BTreeMap<String, Vec<u8>>> = secret.as_ref().map(|s| {
            s.data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .chain(
                    s.string_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
                )
                .collect()
        });
        let published = map
            .as_ref()
            .and_then(|m| m.data.as_ref())
            .and_then(|d| d.get(CA_CRT))
            .cloned();
        let now = OffsetDateTime::now_utc();
        let decision = bootstrap::decide(
            data.as_ref(),
            published.as_deref(),
            &self.trust_domain,
            &self.namespace,
            now,
        );
        let (ca, publish) = match decision {
            Bootstrap::Refuse(why) => {
                if let Ok(mut s) = state.write() {
                    *s = Err(why.clone());
                }
                return Ok(vec![why]);
            }
            Bootstrap::Use { ca, publish } => (ca, publish),
            Bootstrap::Create { ca, bundle } => {
                let secret = Secret {
                    metadata: meta(TRUST_BUNDLE, &self.namespace, owner),
                    type_: Some("Opaque".into()),
                    data: Some(BTreeMap::from([
                        (CA_CRT.to_string(), ByteString(bundle.ca_crt.clone().into_bytes())),
                        (
                            ISSUER_CRT.to_string(),
                            ByteString(bundle.issuer_crt.clone().into_bytes()),
                        ),
                        (
                            ISSUER_KEY.to_string(),
                            ByteString(bundle.issuer_key.clone().into_bytes()),
                        ),
                    ])),
                    ..Default::default()
                };
                // Create, never replace: if another replica got there first,
                // the next pass reads theirs.
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map_err(|e| format!("creating Secret {TRUST_BUNDLE}: {e}"))?;
                tracing::info!("created a new root and issuer in Secret {TRUST_BUNDLE}");
                (ca, Some(bundle.ca_crt))
            }
        };
        if let Some(anchors) = publish {
            match map {
                None => {
                    let cm = ConfigMap {
                        metadata: meta(TRUST_BUNDLE, &self.namespace, owner),
                        data: Some(BTreeMap::from([(CA_CRT.to_string(), anchors)])),
                        ..Default::default()
                    };
                    maps.create(&PostParams::default(), &cm)
                        .await
                        .map_err(|e| format!("creating ConfigMap {TRUST_BUNDLE}: {e}"))?;
                }
                Some(_) => {
                    let patch = serde_json::json!({"data": {CA_CRT: anchors}});
                    maps.patch(TRUST_BUNDLE, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| format!("publishing to ConfigMap {TRUST_BUNDLE}: {e}"))?;
                }
            }
            tracing::info!("published trust anchors in ConfigMap {TRUST_BUNDLE}");
        }
        let warnings = ca.expiry_warnings(now);
        if let Ok(mut s) = state.write() {
            *s = Ok(Arc::new(ca));
        }
        Ok(warnings)
    }

    /// Runs [`Self::once`] every `every`, logging what changes.
    pub async fn run(self, client: kube::Client, state: CaState, every: Duration) {
        let mut last: Option<Result<Vec<String>, String>> = None;
        loop {
            let now = self.once(&client, &state).await;
            if last.as_ref() != Some(&now) {
                match &now {
                    Ok(notes) if notes.is_empty() => tracing::info!("CA ready"),
                    Ok(notes) => {
                        let secret =
                            crate::events::reference("v1", "Secret", &self.namespace, TRUST_BUNDLE, None);
                        for n in notes {
                            tracing::warn!("CA: {n}");
                            crate::events::warn(&client, secret.clone(), "CertificateAuthority", n).await;
                        }
                    }
                    Err(e) => tracing::warn!("CA: {e}"),
                }
                last = Some(now);
            }
            tokio::time::sleep(every).await;
        }
    }
}
