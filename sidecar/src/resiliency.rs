//! Resiliency (`kind: Resiliency`): timeouts, retries and circuit breakers
//! for calls to apps and to components, as Dapr documents them. Policies are
//! parsed once at start-up (an invalid one stops it, naming the field); every
//! path wraps its calls in the policy's tower layer ([`Policy::layer`]), so
//! the rules are written once. A circuit breaker is shared by every call to
//! its target.
//!
//! Lookup, as Dapr's: a policy named on the target; else the default policy
//! of its kind by name (`DefaultAppRetryPolicy`, then `DefaultRetryPolicy`,
//! and likewise for timeouts, breakers and component directions); for apps
//! with no retry policy, the built-in `DaprBuiltInServiceRetries`.

mod breaker;
mod layer;
mod policy;
mod retry;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use daprs_api::v1alpha1::{CircuitBreaker, EndpointPolicy, Resiliency as Document};

use self::{breaker::Breaker, policy::Tag};
pub use self::{
    breaker::Refused,
    layer::{PolicyLayer, Resilient},
    policy::{Failure, Halt, Policy, Stop},
    retry::Retry,
};
use crate::metrics::Metrics;

/// A named default policy, kept as its definition: each target it falls
/// back to gets a breaker of its own.
#[derive(Clone, Default)]
struct Defaults {
    timeout: Option<Duration>,
    retry: Option<Arc<Retry>>,
    breaker: Option<(String, CircuitBreaker)>,
    /// The last document that gave one of them.
    source: Option<Arc<str>>,
}

impl Defaults {
    fn is_empty(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none() && self.breaker.is_none()
    }
}

/// The loaded Resiliency documents that apply to this app.
pub struct Resiliency {
    /// Names of the loaded documents, for the metadata API.
    pub names: Vec<String>,
    apps: HashMap<String, Policy>,
    outbound: HashMap<String, Policy>,
    inbound: HashMap<String, Policy>,
    app_defaults: Defaults,
    outbound_defaults: Defaults,
    inbound_defaults: Defaults,
    built_in: Arc<Retry>,
    /// Breakers made from default policies, by target.
    default_breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Where policies' use is counted, once metrics are on.
    metrics: Option<Arc<Metrics>>,
}

/// Parses a Go-style duration (`500ms`, `5s`, `1m30s`).
pub(crate) fn duration(field: &str, v: &str) -> Result<Duration, String> {
    daprs_components::parse_duration(v)
        .ok_or_else(|| format!("{field}: {v:?} is not a duration such as 500ms or 5s"))
}

/// The named policies of one document.
struct Named {
    /// The document's name.
    doc: Arc<str>,
    timeouts: BTreeMap<String, Duration>,
    retries: BTreeMap<String, Arc<Retry>>,
    breakers: BTreeMap<String, CircuitBreaker>,
}

impl Named {
    fn parse(doc: &Document) -> Result<Self, String> {
        let p = &doc.spec.spec.policies;
        let name: Arc<str> = doc.metadata.name.as_deref().unwrap_or_default().into();
        let timeouts = p
            .timeouts
            .iter()
            .map(|(n, d)| Ok((n.clone(), duration(&format!("policies.timeouts.{n}"), d)?)))
            .collect::<Result<_, String>>()?;
        let retries = p
            .retries
            .iter()
            .map(|(n, r)| Ok((n.clone(), Arc::new(Retry::parse(n, r)?))))
            .collect::<Result<_, String>>()?;
        for (n, cb) in &p.circuit_breakers {
            Breaker::parse(n, cb)?;
        }
        Ok(Self {
            doc: name,
            timeouts,
            retries,
            breakers: p.circuit_breakers.clone(),
        })
    }

    fn target(&self, field: &str, t: &EndpointPolicy) -> Result<Policy, String> {
        let find = |kind: &str, name: &Option<String>, known: bool| match name {
            Some(n) if !known => Err(format!("{field}.{kind}: no {kind} policy is named {n:?}")),
            _ => Ok(()),
        };
        find(
            "timeout",
            &t.timeout,
            t.timeout.as_ref().is_none_or(|n| self.timeouts.contains_key(n)),
        )?;
        find(
            "retry",
            &t.retry,
            t.retry.as_ref().is_none_or(|n| self.retries.contains_key(n)),
        )?;
        find(
            "circuitBreaker",
            &t.circuit_breaker,
            t.circuit_breaker
                .as_ref()
                .is_none_or(|n| self.breakers.contains_key(n)),
        )?;
        Ok(Policy {
            timeout: t.timeout.as_ref().and_then(|n| self.timeouts.get(n).copied()),
            retry: t.retry.as_ref().and_then(|n| self.retries.get(n).cloned()),
            breaker: match t
                .circuit_breaker
                .as_ref()
                .and_then(|n| self.breakers.get(n).map(|cb| (n, cb)))
            {
                Some((n, cb)) => Some(Arc::new(Breaker::parse(n, cb)?)),
                None => None,
            },
            built_in_retry: false,
            source: Some(self.doc.clone()),
            tag: None,
        })
    }

    /// The first of `names` (most specific first) defined as a policy.
    fn defaults(&self, names: &[&str]) -> Defaults {
        let pick = |kind: &'static str| names.iter().map(move |n| format!("Default{n}{kind}Policy"));
        Defaults {
            timeout: pick("Timeout").find_map(|n| self.timeouts.get(&n).copied()),
            retry: pick("Retry").find_map(|n| self.retries.get(&n).cloned()),
            breaker: pick("CircuitBreaker").find_map(|n| self.breakers.get(&n).map(|cb| (n, cb.clone()))),
            source: Some(self.doc.clone()),
        }
    }
}

impl Resiliency {
    /// Loads the documents that apply to `app_id` (by their `scopes`).
    pub fn load<'a>(docs: impl IntoIterator<Item = &'a Document>, app_id: &str) -> Result<Self, String> {
        let mut out = Self {
            names: Vec::new(),
            apps: HashMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            app_defaults: Defaults::default(),
            outbound_defaults: Defaults::default(),
            inbound_defaults: Defaults::default(),
            built_in: Arc::new(Retry::built_in()),
            default_breakers: Mutex::default(),
            metrics: None,
        };
        for doc in docs {
            if !doc.spec.scopes.is_empty() && !doc.spec.scopes.iter().any(|s| s == app_id) {
                continue;
            }
            let name = doc.metadata.name.clone().unwrap_or_default();
            let fail = |e: String| format!("Resiliency {name}: spec.{e}");
            let named = Named::parse(doc).map_err(fail)?;
            for (id, t) in &doc.spec.spec.targets.apps {
                let p = named.target(&format!("targets.apps.{id}"), t).map_err(fail)?;
                out.apps.insert(id.clone(), p);
            }
            for (c, t) in &doc.spec.spec.targets.components {
                if let Some(o) = &t.outbound {
                    let p = named
                        .target(&format!("targets.components.{c}.outbound"), o)
                        .map_err(fail)?;
                    out.outbound.insert(c.clone(), p);
                }
                if let Some(i) = &t.inbound {
                    let p = named
                        .target(&format!("targets.components.{c}.inbound"), i)
                        .map_err(fail)?;
                    out.inbound.insert(c.clone(), p);
                }
            }
            merge(&mut out.app_defaults, named.defaults(&["App", ""]));
            merge(
                &mut out.outbound_defaults,
                named.defaults(&["ComponentOutbound", "Component", ""]),
            );
            merge(
                &mut out.inbound_defaults,
                named.defaults(&["ComponentInbound", "Component", ""]),
            );
            if let Some(r) = named.retries.get("DaprBuiltInServiceRetries") {
                if r.max_retries.is_some_and(|n| n < 3) {
                    return Err(fail(
                        "policies.retries.DaprBuiltInServiceRetries: maxRetries may not be below 3".into(),
                    ));
                }
                out.built_in = r.clone();
            }
            out.names.push(name);
        }
        Ok(out)
    }

    /// The default policy for a target with none of its own; `key` names the
    /// target's breaker and is only built when there is one.
    fn fallback(&self, key: impl FnOnce() -> String, d: &Defaults) -> Policy {
        let breaker = d.breaker.as_ref().and_then(|(name, cb)| {
            let key = key();
            let mut cache = self
                .default_breakers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(b) = cache.get(&key) {
                return Some(b.clone());
            }
            let b = Arc::new(Breaker::parse(name, cb).ok()?);
            cache.insert(key, b.clone());
            Some(b)
        });
        Policy {
            timeout: d.timeout,
            retry: d.retry.clone(),
            breaker,
            built_in_retry: false,
            source: d.source.clone().filter(|_| !d.is_empty()),
            tag: None,
        }
    }

    /// Counts what the policies do in `metrics`, when they are on.
    pub fn observe(&mut self, metrics: &Arc<Metrics>) {
        self.metrics = metrics.enabled().then(|| metrics.clone());
    }

    /// `p` labelled for the metrics, when they are on and `p` is the user's.
    fn tagged(&self, mut p: Policy, direction: &'static str, target: impl FnOnce() -> String) -> Policy {
        if let (Some(metrics), Some(name)) = (&self.metrics, &p.source) {
            p.tag = Some(Arc::new(Tag {
                metrics: metrics.clone(),
                name: name.clone(),
                direction,
                target: target(),
            }));
        }
        p
    }

    /// What applies to calls to app `app_id`.
    pub fn app(&self, app_id: &str) -> Policy {
        let mut p = match self.apps.get(app_id) {
            Some(p) => p.clone(),
            None => self.fallback(|| format!("app/{app_id}"), &self.app_defaults),
        };
        if p.retry.is_none() {
            p.retry = Some(self.built_in.clone());
            p.built_in_retry = true;
        }
        self.tagged(p, "outbound", || format!("app_{app_id}"))
    }

    /// What applies to calls from the sidecar to component `name`; `kind`
    /// gives its type (`statestore`, `pubsub` ...) for the metrics. With no
    /// policy for components at all, nothing is looked up: this is on the
    /// path of every state call.
    pub fn outbound(&self, name: &str, kind: impl FnOnce() -> &'static str) -> Policy {
        if self.outbound.is_empty() && self.outbound_defaults.is_empty() {
            return Policy::default();
        }
        let p = match self.outbound.get(name) {
            Some(p) => p.clone(),
            None => self.fallback(|| format!("out/{name}"), &self.outbound_defaults),
        };
        self.tagged(p, "outbound", || format!("{}_{name}", kind()))
    }

    /// What applies to calls from component `name` of type `kind` into the app.
    pub fn inbound(&self, name: &str, kind: &str) -> Policy {
        if self.inbound.is_empty() && self.inbound_defaults.is_empty() {
            return Policy::default();
        }
        let p = match self.inbound.get(name) {
            Some(p) => p.clone(),
            None => self.fallback(|| format!("in/{name}"), &self.inbound_defaults),
        };
        self.tagged(p, "inbound", || format!("{kind}_{name}"))
    }
}

fn merge(into: &mut Defaults, from: Defaults) {
    let contributes = !from.is_empty();
    if from.timeout.is_some() {
        into.timeout = from.timeout;
    }
    if from.retry.is_some() {
        into.retry = from.retry;
    }
    if from.breaker.is_some() {
        into.breaker = from.breaker;
    }
    if contributes {
        into.source = from.source;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tower::{Layer, ServiceExt};

    use super::*;

    fn load(yaml: &str) -> Result<Resiliency, String> {
        let doc: Document = serde_yaml::from_str(yaml).expect("yaml");
        Resiliency::load([&doc], "me")
    }

    const DOC: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: myresiliency
spec:
  policies:
    timeouts:
      general: 5s
      fast: 100ms
    retries:
      retryThree:
        policy: constant
        duration: 10ms
        maxRetries: 3
      DefaultAppRetryPolicy:
        policy: constant
        duration: 1s
        maxRetries: 7
    circuitBreakers:
      simpleCB:
        maxRequests: 1
        timeout: 30s
        trip: consecutiveFailures >= 2
  targets:
    apps:
      orders:
        timeout: fast
        retry: retryThree
        circuitBreaker: simpleCB
    components:
      statestore:
        outbound:
          timeout: general
          retry: retryThree
"#;

    #[tokio::test(start_paused = true)]
    async fn a_target_policy_retries_times_out_and_trips() {
        let r = load(DOC).expect("valid");
        assert_eq!(r.names, ["myresiliency"]);
        let p = r.app("orders");
        let calls = AtomicU32::new(0);
        // Fails once, then succeeds: two calls.
        let counted = tower::service_fn(|()| async { Ok::<_, ()>(calls.fetch_add(1, Ordering::SeqCst)) });
        let first_fails = |r: &Result<u32, ()>| match r {
            Ok(0) => Some(Failure::Http(503)),
            _ => None,
        };
        let res = p.clone().layer(first_fails).layer(counted).oneshot(()).await;
        assert_eq!(res.ok(), Some(1));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Attempts that outlast the 100 ms timeout fail; the second
        // consecutive failure opens the breaker, which refuses the third.
        let slow = tower::service_fn(|()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, ()>(())
        });
        let slow = p.clone().layer(|_: &_| None).layer(slow).oneshot(()).await;
        assert!(matches!(slow, Err(Stop::Refused(Refused::Open(_)))));
        let fast = tower::service_fn(|()| async { Ok::<_, ()>(()) });
        let refused = p.layer(|_: &_| None).layer(fast).oneshot(()).await;
        assert!(matches!(refused, Err(Stop::Refused(Refused::Open(_)))));
    }

    #[test]
    fn defaults_and_built_in_retries() {
        let r = load(DOC).expect("valid");
        // An app with no target falls back to DefaultAppRetryPolicy.
        let other = r.app("billing");
        assert_eq!(other.retry.as_ref().map(|r| r.max_retries), Some(Some(7)));
        assert!(r.outbound("statestore", || "statestore").timeout == Some(Duration::from_secs(5)));
        assert!(r.outbound("other", || "statestore").is_empty());
        // With no Resiliency at all, apps get the built-in transport retries.
        let none = Resiliency::load([], "me").expect("empty");
        assert_eq!(none.app("x").retry.map(|r| r.max_retries), Some(Some(3)));
    }

    #[test]
    fn scopes_and_invalid_documents() {
        let scoped = DOC.replace("spec:\n  policies:", "scopes: [someone-else]\nspec:\n  policies:");
        let r = load(&scoped).expect("valid");
        assert!(r.names.is_empty() && r.outbound("statestore", || "statestore").is_empty());
        for (from, to, field) in [
            ("fast: 100ms", "fast: quick", "spec.policies.timeouts.fast"),
            (
                "retry: retryThree\n        circuitBreaker",
                "retry: nope\n        circuitBreaker",
                "spec.targets.apps.orders.retry",
            ),
            (
                "trip: consecutiveFailures >= 2",
                "trip: failures >= 2",
                "spec.policies.circuitBreakers.simpleCB.trip",
            ),
            (
                "maxRetries: 7",
                "maxRetries: -5",
                "DefaultAppRetryPolicy.maxRetries",
            ),
        ] {
            let e = load(&DOC.replace(from, to)).err().unwrap_or_default();
            assert!(
                e.contains("Resiliency myresiliency") && e.contains(field),
                "{field}: {e}"
            );
        }
    }
}
