//! The injector's serving certificate and the webhook's `caBundle`, both
//! from the operator's CA: the Secret `daprs-injector-tls` holds a
//! certificate for `daprs-injector.<ns>.svc`, renewed at half its life or
//! when the CA changes, and the MutatingWebhookConfiguration `daprs-injector`
//! trusts the published anchors.

use std::{collections::BTreeMap, time::Duration};

use base64::Engine;
use daprs_mtls::SpiffeId;
use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Secret},
};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use time::OffsetDateTime;

use crate::ca::Ca;

pub const SECRET: &str = "daprs-injector-tls";
pub const WEBHOOK: &str = "daprs-injector";
const ISSUED_FOR: &str = "daprs.dev/issued-for-anchors";
const RENEW_AFTER: &str = "daprs.dev/renew-after";
const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A short fingerprint of the anchors a certificate was issued under.
fn fingerprint(anchors: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, anchors.as_bytes());
    digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the stored Secret needs a new certificate.
pub fn needs_renewal(secret: Option<&Secret>, anchors: &str, now: OffsetDateTime) -> bool {
    let Some(s) = secret else { return true };
    let annotations = s.metadata.annotations.clone().unwrap_or_default();
    let has_pair = s
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key("tls.crt") && d.contains_key("tls.key"));
    let same_ca = annotations.get(ISSUED_FOR) == Some(&fingerprint(anchors));
    let fresh = annotations
        .get(RENEW_AFTER)
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|after| now.unix_timestamp() < after);
    !(has_pair && same_ca && fresh)
}

/// Issues the serving pair for the injector's Service name.
pub fn issue(ca: &Ca, namespace: &str, trust_domain: &str, now: OffsetDateTime) -> Result<Secret, String> {
    let dns = vec![
        format!("daprs-injector.{namespace}.svc"),
        format!("daprs-injector.{namespace}.svc.cluster.local"),
    ];
    let (signed, key) = ca
        .issue_own(
            &SpiffeId::new(trust_domain, namespace, "dapr-injector").to_string(),
            &dns,
            TTL,
            Duration::from_secs(900),
            now,
        )
        .map_err(|e| e.to_string())?;
    let renew_after = now + TTL / 2;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".into(),
                "daprs".into(),
            )])),
            annotations: Some(BTreeMap::from([
                (ISSUED_FOR.into(), fingerprint(&ca.trust_anchors)),
                (RENEW_AFTER.into(), renew_after.unix_timestamp().to_string()),
            ])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".into(), ByteString(signed.chain_pem.into_bytes())),
            ("tls.key".into(), ByteString(key.serialize_pem().into_bytes())),
        ])),
        ..Default::default()
    })
}

/// One pass: renew the Secret if needed and make the webhook trust the anchors.
pub async fn ensure(client: &kube::Client, ca: &Ca, sync: &crate::ca_sync::CaSync) -> Result<(), String> {
    let namespace = sync.namespace.as_str();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let current = secrets
        .get_opt(SECRET)
        .await
        .map_err(|e| format!("reading Secret {SECRET}: {e}"))?;
    let owner = crate::owner::lookup(client, namespace, sync.owner.as_deref()).await?;
    let now = OffsetDateTime::now_utc();
    if needs_renewal(current.as_ref(), &ca.trust_anchors, now) {
        let mut fresh = issue(ca, namespace, &sync.trust_domain, now)?;
        fresh.metadata.owner_references = owner.clone().map(|o| vec![o]);
        match current {
            None => {
                secrets
                    .create(&PostParams::default(), &fresh)
                    .await
                    .map_err(|e| format!("creating Secret {SECRET}: {e}"))?;
            }
            Some(old) => {
                fresh.metadata.resource_version = old.metadata.resource_version;
                secrets
                    .replace(SECRET, &PostParams::default(), &fresh)
                    .await
                    .map_err(|e| format!("renewing Secret {SECRET}: {e}"))?;
            }
        }
        tracing::info!("issued the injector's serving certificate");
    } else if let Some(c) = &current {
        crate::owner::adopt(&secrets, c, owner.as_ref()).await?;
    }
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(config) = hooks
        .get_opt(WEBHOOK)
        .await
        .map_err(|e| format!("reading MutatingWebhookConfiguration {WEBHOOK}: {e}"))?
    else {
        return Ok(());
    };
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca.trust_anchors);
    let webhooks = config.webhooks.unwrap_or_default();
    let stale: Vec<usize> = webhooks
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.client_config.ca_bundle.as_ref().map(|b| &b.0) != Some(&ca.trust_anchors.clone().into_bytes())
        })
        .map(|(i, _)| i)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let ops: Vec<serde_json::Value> = stale
        .iter()
        .map(|i| serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}))
        .collect();
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(|e| e.to_string())?;
    hooks
        .patch(WEBHOOK, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| format!("setting the caBundle of {WEBHOOK}: {e}"))?;
    tracing::info!("webhook {WEBHOOK} trusts the current anchors");
    Ok(())
}

/// Points the Subscription CRD's conversion webhook at this namespace and
/// makes it trust the anchors; skipped when both are already right.
pub async fn ensure_conversion(client: &kube::Client, ca: &Ca, namespace: &str) -> Result<(), String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let Some(crd) = crds
        .get_opt("subscriptions.dapr.io")
        .await
        .map_err(|e| format!("reading CRD subscriptions.dapr.io: {e}"))?
    else {
        return Ok(());
    };
    let Some(config) = crd
        .spec
        .conversion
        .as_ref()
        .and_then(|c| c.webhook.as_ref())
        .and_then(|w| w.client_config.as_ref())
    else {
        return Err(
            "CRD subscriptions.dapr.io has no conversion webhook; apply charts/daprs/crds/subscriptions.yaml"
                .into(),
        );
    };
    let current_ns = config.service.as_ref().map(|s| s.namespace.as_str());
    let current_bundle = config.ca_bundle.as_ref().map(|b| b.0.as_slice());
    if current_ns == Some(namespace) && current_bundle == Some(ca.trust_anchors.as_bytes()) {
        return Ok(());
    }
    let bundle = base64::engine::general_purpose::STANDARD.encode(&ca.trust_anchors);
    let ops = serde_json::json!([
        {"op": "add", "path": "/spec/conversion/webhook/clientConfig/service/namespace", "value": namespace},
        {"op": "add", "path": "/spec/conversion/webhook/clientConfig/caBundle", "value": bundle},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|e| e.to_string())?;
    crds.patch(
        "subscriptions.dapr.io",
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map_err(|e| format!("patching CRD subscriptions.dapr.io: {e}"))?;
    tracing::info!("Subscription conversion webhook trusts the current anchors");
    Ok(())
}
