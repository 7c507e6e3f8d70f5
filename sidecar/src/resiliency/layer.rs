//! A policy as a tower layer. Every path that calls an app, a component or
//! the app on a component's behalf wraps its call in one, so timeouts,
//! retries and breakers are applied by this code alone. Each request to the
//! wrapped service is one call; each attempt sends the inner service a clone
//! of the request, so requests are cheap to clone: references, `Bytes`, or
//! `()` where the service holds what it sends.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use futures_util::{
    TryFutureExt,
    future::{Either, MapErr},
};
use tokio::time::Sleep;
use tower::{ServiceExt, util::Oneshot};

use super::{Failure, Policy, Stop};

/// Wraps services in a policy; `classify` names the outcomes that failed.
pub struct PolicyLayer<C> {
    policy: Policy,
    classify: C,
}

impl Policy {
    /// This policy as a layer, `classify` telling which outcomes are
    /// failures (recorded by the breaker, retried where the retry policy
    /// matches them).
    pub fn layer<C>(self, classify: C) -> PolicyLayer<C> {
        PolicyLayer {
            policy: self,
            classify,
        }
    }
}

impl<S, C: Clone> tower::Layer<S> for PolicyLayer<C> {
    type Service = Resilient<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Resilient {
            inner,
            policy: self.policy.clone(),
            classify: self.classify.clone(),
        }
    }
}

/// A service whose every call runs under a policy.
#[derive(Clone)]
pub struct Resilient<S, C> {
    inner: S,
    policy: Policy,
    classify: C,
}

impl<S, C, R> tower::Service<R> for Resilient<S, C>
where
    S: tower::Service<R> + Clone,
    R: Clone,
    C: Fn(&Result<S::Response, S::Error>) -> Option<Failure> + Clone,
{
    type Response = S::Response;
    type Error = Stop<S::Error>;
    type Future = Either<Direct<S, R>, Call<S, R, C>>;

    /// Always ready: each attempt waits for the inner service on its own.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        // With nothing to apply, the call is the inner service's alone.
        if self.policy.is_empty() {
            let stopped: fn(S::Error) -> Stop<S::Error> = Stop::Failed;
            return Either::Left(self.inner.clone().oneshot(req).map_err(stopped));
        }
        self.policy.started();
        Either::Right(Call {
            inner: self.inner.clone(),
            req,
            policy: self.policy.clone(),
            classify: self.classify.clone(),
            retries: 0,
            state: State::Admit,
        })
    }
}

/// A call under an empty policy: the inner service's own.
pub type Direct<S, R> =
    MapErr<Oneshot<S, R>, fn(<S as tower::Service<R>>::Error) -> Stop<<S as tower::Service<R>>::Error>>;

pin_project_lite::pin_project! {
    /// One call under the policy. A hand-written future rather than an
    /// async block: its `Send` follows from its fields, so callers whose
    /// inner services borrow (closures over references) stay `Send`.
    pub struct Call<S: tower::Service<R>, R, C> {
        inner: S,
        req: R,
        policy: Policy,
        classify: C,
        retries: u32,
        #[pin]
        state: State<S::Future>,
    }
}

pin_project_lite::pin_project! {
    #[project = Step]
    enum State<F> {
        // Through the breaker, then waiting for the inner service.
        Admit,
        Ready,
        Attempt { #[pin] call: F },
        Timed { #[pin] call: F, #[pin] limit: Sleep, after: Duration },
        Backoff { #[pin] wait: Sleep },
    }
}

impl<S, R, C> Future for Call<S, R, C>
where
    S: tower::Service<R>,
    R: Clone,
    C: Fn(&Result<S::Response, S::Error>) -> Option<Failure>,
{
    type Output = Result<S::Response, Stop<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // How the attempt ended: its outcome, or the timeout that cut it off.
            let ended: Result<Result<S::Response, S::Error>, Duration> = match this.state.as_mut().project() {
                Step::Admit => {
                    if let Err(refused) = this.policy.admit() {
                        return Poll::Ready(Err(Stop::Refused(refused)));
                    }
                    this.state.set(State::Ready);
                    continue;
                }
                Step::Ready => match ready!(this.inner.poll_ready(cx)) {
                    Ok(()) => {
                        let call = this.inner.call(this.req.clone());
                        this.state.set(match this.policy.timeout {
                            Some(after) => State::Timed {
                                call,
                                limit: tokio::time::sleep(after),
                                after,
                            },
                            None => State::Attempt { call },
                        });
                        continue;
                    }
                    Err(e) => Ok(Err(e)),
                },
                Step::Attempt { call } => Ok(ready!(call.poll(cx))),
                Step::Timed { call, limit, after } => match call.poll(cx) {
                    Poll::Ready(out) => Ok(out),
                    Poll::Pending => {
                        ready!(limit.poll(cx));
                        Err(*after)
                    }
                },
                Step::Backoff { wait } => {
                    ready!(wait.poll(cx));
                    this.state.set(State::Admit);
                    continue;
                }
            };
            let failure = match &ended {
                Ok(out) => (this.classify)(out),
                Err(_) => Some(Failure::Timeout),
            };
            match (this.policy.judge(failure, *this.retries), ended) {
                (Some(wait), _) => {
                    // Dropping the attempt's future cancels it.
                    *this.retries += 1;
                    this.state.set(State::Backoff {
                        wait: tokio::time::sleep(wait),
                    });
                }
                (None, Ok(out)) => return Poll::Ready(out.map_err(Stop::Failed)),
                (None, Err(after)) => return Poll::Ready(Err(Stop::TimedOut(after))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use tower::{Layer, ServiceExt};

    use super::*;

    /// Counts its calls; each answers with the count so far.
    fn counting(
        calls: &AtomicU32,
    ) -> impl tower::Service<(), Response = u32, Error = (), Future: Send> + Clone {
        tower::service_fn(move |()| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(n) }
        })
    }

    #[tokio::test]
    async fn an_empty_policy_makes_one_attempt_whatever_the_outcome() {
        let calls = AtomicU32::new(0);
        let always_failed = |_: &Result<u32, ()>| Some(Failure::Http(503));
        let svc = Policy::default().layer(always_failed).layer(counting(&calls));
        assert_eq!(svc.oneshot(()).await.ok(), Some(0));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_drops_the_attempt_it_cuts_off() {
        // The attempt's future holds one count of `held`; dropping it lets go.
        let held = Arc::new(());
        let slow = tower::service_fn(|()| {
            let guard = held.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                drop(guard);
                Ok::<_, ()>(())
            }
        });
        let policy = Policy {
            timeout: Some(Duration::from_millis(250)),
            ..Policy::default()
        };
        let started = tokio::time::Instant::now();
        let res = policy.layer(|_: &_| None).layer(slow).oneshot(()).await;
        assert!(matches!(res, Err(Stop::TimedOut(t)) if t == Duration::from_millis(250)));
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert_eq!(Arc::strong_count(&held), 1, "the cut-off attempt was dropped");
    }
}
