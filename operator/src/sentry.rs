//! `dapr.proto.sentry.v1.CA`: signs workload certificates for callers whose
//! projected service-account token the API server vouches for.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use daprs_api::v1alpha1::Configuration;
use daprs_mtls::SpiffeId;
use daprs_proto::sentry::{
    SignCertificateRequest, SignCertificateResponse, ca_server::Ca as CaService,
    sign_certificate_request::TokenValidator,
};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    core::v1::Pod,
};
use kube::{Api, api::PostParams};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::{
    ca::{Ca, CaError},
    identity::{self, Refusal, Reviewed},
};

/// The CA as currently loaded, or why it cannot sign.
pub type CaState = Arc<RwLock<Result<Arc<Ca>, String>>>;

/// The CA if it can sign, or why not. Writers only ever replace the whole
/// value, so a poisoned lock still holds a consistent one.
pub fn current(state: &CaState) -> Result<Arc<Ca>, String> {
    state.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Settings of the signing service.
#[derive(Clone, Debug)]
pub struct SentrySettings {
    pub control_plane_namespace: String,
    pub control_plane_trust_domain: String,
    pub workload_ttl: Duration,
    pub allowed_skew: Duration,
}

impl SentrySettings {
    /// The audience projected tokens are minted for (the injector sets it).
    pub fn audience(&self) -> String {
        SpiffeId::new(
            &self.control_plane_trust_domain,
            &self.control_plane_namespace,
            "dapr-sentry",
        )
        .to_string()
    }
}

pub struct Sentry {
    pub kube: kube::Client,
    pub ca: CaState,
    pub settings: SentrySettings,
}

fn api_error(what: &str, e: kube::Error) -> Status {
    Status::unavailable(format!("{what}: the API server could not be asked: {e}"))
}

impl Sentry {
    async fn review(&self, token: &str) -> Result<Reviewed, Status> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.settings.audience()]),
            },
            ..Default::default()
        };
        let done = Api::<TokenReview>::all(self.kube.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| api_error("TokenReview", e))?;
        let status = done.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        Ok(Reviewed {
            authenticated: status.authenticated.unwrap_or(false),
            username: user.username.unwrap_or_default(),
            pod_name: user
                .extra
                .and_then(|e| e.get("authentication.kubernetes.io/pod-name").cloned())
                .and_then(|v| v.into_iter().next()),
            error: status.error,
        })
    }

    /// The app's trust domain: its Configuration's `accessControl.trustDomain`, else `public`.
    async fn trust_domain(&self, namespace: &str, pod: &Pod) -> Result<String, Status> {
        let Some(name) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("dapr.io/config"))
        else {
            return Ok("public".into());
        };
        let found = Api::<Configuration>::namespaced(self.kube.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| api_error("Configuration", e))?;
        match found {
            None => Err(Status::permission_denied(format!(
                "the pod names Configuration {name:?} (dapr.io/config), which does not exist in {namespace:?}"
            ))),
            Some(c) => Ok(c
                .spec
                .access_control
                .map(|a| a.trust_domain)
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "public".into())),
        }
    }
}

#[tonic::async_trait]
impl CaService for Sentry {
    async fn sign_certificate(
        &self,
        request: Request<SignCertificateRequest>,
    ) -> Result<Response<SignCertificateResponse>, Status> {
        let m = &crate::metrics::METRICS;
        m.sign_requests.add(&[], 1.0);
        let signed = self.sign(request.into_inner()).await;
        match &signed {
            Ok(_) => m.sign_success.add(&[], 1.0),
            Err(status) => m
                .sign_failure
                .add(&[daprs_telemetry::grpc_code_name(status.code() as i32)], 1.0),
        }
        signed
    }
}

impl Sentry {
    /// Checks and signs one request.
    async fn sign(&self, req: SignCertificateRequest) -> Result<Response<SignCertificateResponse>, Status> {
        identity::check_request(&req.id, &req.namespace, &req.certificate_signing_request)?;
        match req.token_validator() {
            TokenValidator::Unknown | TokenValidator::Kubernetes => {}
            other => {
                return Err(Status::invalid_argument(format!(
                    "token validator {} is not available here; send a Kubernetes service-account token",
                    other.as_str_name()
                )));
            }
        }
        if req.token.is_empty() {
            return Err(Refusal::InvalidArgument("token is required".into()).into());
        }
        let ca =
            current(&self.ca).map_err(|why| Status::unavailable(format!("the CA cannot sign: {why}")))?;
        let reviewed = self.review(&req.token).await?;
        let sa = identity::service_account(&reviewed)?;
        let Some(pod_name) = reviewed.pod_name.clone() else {
            return Err(Refusal::PermissionDenied(
                "the token is not bound to a pod; use a projected service-account token".into(),
            )
            .into());
        };
        let pod = Api::<Pod>::namespaced(self.kube.clone(), &sa.0)
            .get_opt(&pod_name)
            .await
            .map_err(|e| api_error("Pod", e))?
            .ok_or_else(|| {
                Status::permission_denied(format!("the token's pod {}/{pod_name} does not exist", sa.0))
            })?;
        let entitled = identity::entitled(
            &req.id,
            &req.namespace,
            &sa,
            &pod,
            &self.settings.control_plane_namespace,
        )?;
        let (trust_domain, dns) = match &entitled.control_plane {
            Some(name) => {
                let ns = &self.settings.control_plane_namespace;
                let dns = match name.as_str() {
                    "injector" => vec![format!("daprs-injector.{ns}.svc")],
                    "operator" => vec![format!("dapr-webhook.{ns}.svc")],
                    _ => vec![],
                };
                (self.settings.control_plane_trust_domain.clone(), dns)
            }
            None => (self.trust_domain(&req.namespace, &pod).await?, vec![]),
        };
        let id = SpiffeId::new(&trust_domain, &req.namespace, &entitled.app_id).to_string();
        let signed = ca
            .sign(
                &req.certificate_signing_request,
                &id,
                &dns,
                self.settings.workload_ttl,
                self.settings.allowed_skew,
                OffsetDateTime::now_utc(),
            )
            .map_err(|e| match e {
                CaError::BadRequest(m) => Status::invalid_argument(m),
                CaError::Material(m) | CaError::Internal(m) => Status::internal(m),
            })?;
        tracing::info!(%id, "workload certificate signed");
        Ok(Response::new(SignCertificateResponse {
            workload_certificate: signed.chain_pem.into_bytes().into(),
            trust_chain_certificates: vec![ca.trust_anchors.clone().into_bytes().into()],
            valid_until: Some(prost_types::Timestamp {
                seconds: signed.not_after.unix_timestamp(),
                nanos: 0,
            }),
            jwt: None,
            per_audience_jwts: Default::default(),
        }))
    }
}
