//! One target's policy and the loop that applies it to a call: the breaker
//! admits each attempt, the timeout bounds it, the retry policy decides
//! whether and when to try again.

use std::{sync::Arc, time::Duration};

use super::{Refused, Retry, breaker::Breaker};
use crate::metrics::{Metrics, resiliency::PolicyLabels};

/// Dapr's names for the policies in its metrics.
const TIMEOUT: &str = "timeout";
const RETRY: &str = "retry";
const BREAKER: &str = "circuitbreaker";

/// How an attempt failed, for retry matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The app answered with this HTTP status (400 and above).
    Http(u16),
    /// The app or a sidecar answered with this gRPC code (not OK).
    Grpc(i32),
    /// The attempt outlasted the policy's timeout.
    Timeout,
    /// The call could not be made.
    Transport,
}

/// Why a call ended without a usable answer.
#[derive(Debug)]
pub enum Stop<E> {
    /// The last attempt's own error.
    Failed(E),
    /// The circuit breaker let no call through.
    Refused(Refused),
    /// The last attempt timed out.
    TimedOut(Duration),
}

/// Why a policy ended a call before an attempt could answer: the gRPC code
/// that says so and a message, for each caller to put in its own error.
pub struct Halt {
    pub code: tonic::Code,
    pub message: String,
}

impl<E> Stop<E> {
    /// The last attempt's own error, or why the policy halted the call.
    pub fn reason(self) -> Result<E, Halt> {
        match self {
            Self::Failed(e) => Ok(e),
            Self::Refused(r) => Err(Halt {
                code: tonic::Code::Unavailable,
                message: r.to_string(),
            }),
            Self::TimedOut(t) => Err(Halt {
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer within the resiliency timeout of {t:?}"),
            }),
        }
    }
}

/// What applies to one target.
#[derive(Clone, Default)]
pub struct Policy {
    pub timeout: Option<Duration>,
    pub retry: Option<Arc<Retry>>,
    pub(super) breaker: Option<Arc<Breaker>>,
    /// The retry is the built-in one for transport failures, not the user's.
    pub(super) built_in_retry: bool,
    /// The Resiliency document the user's parts come from.
    pub(super) source: Option<Arc<str>>,
    /// Where the policy's use is counted, when metrics are on.
    pub(super) tag: Option<Arc<Tag>>,
}

/// A policy's labels in Dapr's resiliency metrics.
pub(super) struct Tag {
    pub(super) metrics: Arc<Metrics>,
    pub(super) name: Arc<str>,
    pub(super) direction: &'static str,
    pub(super) target: String,
}

impl Tag {
    fn labels(&self) -> PolicyLabels<'_> {
        PolicyLabels {
            name: &self.name,
            direction: self.direction,
            target: &self.target,
        }
    }

    fn activated(&self, policy: &str, status: &str) {
        self.metrics.resiliency_activated(&self.labels(), policy, status);
    }
}

fn jitter_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Policy {
    /// Whether there is anything to apply.
    pub fn is_empty(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none() && self.breaker.is_none()
    }

    /// Whether a user's policy would try a call more than once.
    pub fn user_retries(&self) -> bool {
        !self.built_in_retry && self.retry.as_ref().is_some_and(|r| r.allows(0))
    }

    /// The same policy with no retries.
    pub fn once(&self) -> Self {
        Self {
            retry: None,
            built_in_retry: false,
            ..self.clone()
        }
    }

    /// Counts one call under each of the user's policies.
    fn applied(&self, tag: &Tag) {
        let labels = tag.labels();
        if self.timeout.is_some() {
            tag.metrics.resiliency_applied(&labels, TIMEOUT, "");
        }
        if self.retry.is_some() && !self.built_in_retry {
            tag.metrics.resiliency_applied(&labels, RETRY, "");
        }
        if let Some(b) = &self.breaker {
            tag.metrics.resiliency_applied(&labels, BREAKER, b.state());
        }
    }

    /// Starts a call: counts it under each of the user's policies.
    pub(super) fn started(&self) {
        if let Some(t) = &self.tag {
            self.applied(t);
        }
    }

    /// A breaker's change of state is an activation, labelled with the new state.
    fn moved(&self, state: Option<&str>) {
        if let (Some(t), Some(s)) = (&self.tag, state) {
            t.activated(BREAKER, s);
        }
    }

    /// Lets one attempt through the breaker, if there is one.
    pub(super) fn admit(&self) -> Result<(), Refused> {
        if let Some(b) = &self.breaker {
            self.moved(b.admit()?);
        }
        Ok(())
    }

    /// Records how attempt number `retries` (from 0) ended, `None` being a
    /// success, and says how long to wait before the next one; `None` ends
    /// the call with this attempt's outcome.
    pub(super) fn judge(&self, failure: Option<Failure>, retries: u32) -> Option<Duration> {
        let tag = self.tag.as_deref();
        if let (Some(t), Some(Failure::Timeout)) = (tag, failure) {
            t.activated(TIMEOUT, "");
        }
        if let Some(b) = &self.breaker {
            self.moved(b.record(failure.is_none()));
        }
        let wait = match (&failure, &self.retry) {
            (Some(f), Some(r)) if r.matches(f) && r.allows(retries) => r.wait(retries, jitter_unit()),
            _ => return None,
        };
        if let Some(t) = tag.filter(|_| !self.built_in_retry) {
            t.activated(RETRY, "");
        }
        Some(wait)
    }
}
