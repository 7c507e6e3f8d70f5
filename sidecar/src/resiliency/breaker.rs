//! Circuit breakers, as Dapr's (after sony/gobreaker) behave: closed, they
//! count calls and open when the `trip` expression holds; open, they refuse
//! calls until `timeout` passes; half-open, they let `maxRequests` probes
//! through and close after that many successes, or open again on a failure.

use std::{sync::Mutex, time::Duration};

use daprs_api::v1alpha1::CircuitBreaker;
use tokio::time::Instant;

use super::duration;

/// The counts a trip expression reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub total_successes: u64,
    pub total_failures: u64,
    pub consecutive_successes: u64,
    pub consecutive_failures: u64,
}

impl Counts {
    fn get(&self, name: &str) -> Option<u64> {
        Some(match name {
            "requests" => self.requests,
            "totalSuccesses" => self.total_successes,
            "totalFailures" => self.total_failures,
            "consecutiveSuccesses" => self.consecutive_successes,
            "consecutiveFailures" => self.consecutive_failures,
            _ => return None,
        })
    }

    fn success(&mut self) {
        self.total_successes += 1;
        self.consecutive_successes += 1;
        self.consecutive_failures = 0;
    }

    fn failure(&mut self) {
        self.total_failures += 1;
        self.consecutive_failures += 1;
        self.consecutive_successes = 0;
    }
}

/// A trip expression: comparisons of counts with numbers, `&&`, `||`, `!`
/// and parentheses (the part of CEL that Dapr's documentation uses).
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Cmp(Operand, Op, Operand),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Count(String),
    Num(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(u64),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let two = b.get(i..i + 2);
        let (tok, len) = match b[i] {
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'(' => (Tok::Open, 1),
            b')' => (Tok::Close, 1),
            _ if two == Some(b"&&") => (Tok::And, 2),
            _ if two == Some(b"||") => (Tok::Or, 2),
            _ if two == Some(b">=") => (Tok::Op(Op::Ge), 2),
            _ if two == Some(b"<=") => (Tok::Op(Op::Le), 2),
            _ if two == Some(b"==") => (Tok::Op(Op::Eq), 2),
            _ if two == Some(b"!=") => (Tok::Op(Op::Ne), 2),
            b'>' => (Tok::Op(Op::Gt), 1),
            b'<' => (Tok::Op(Op::Lt), 1),
            b'!' => (Tok::Not, 1),
            c if c.is_ascii_digit() => {
                let end = b[i..]
                    .iter()
                    .position(|c| !c.is_ascii_digit())
                    .map_or(b.len(), |p| i + p);
                let n = s[i..end]
                    .parse()
                    .map_err(|_| format!("{:?} is too large", &s[i..end]))?;
                (Tok::Num(n), end - i)
            }
            c if c.is_ascii_alphabetic() => {
                let end = b[i..]
                    .iter()
                    .position(|c| !c.is_ascii_alphanumeric() && *c != b'_')
                    .map_or(b.len(), |p| i + p);
                (Tok::Ident(s[i..end].to_string()), end - i)
            }
            _ => return Err(format!("unexpected {:?} at {i}", char::from(b[i]))),
        };
        out.push(tok);
        i += len;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(Tok::Not) => {
                self.at += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Tok::Open) => {
                self.at += 1;
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("a ( is not closed".into()),
                }
            }
            _ => {
                let a = self.operand()?;
                let op = match self.next() {
                    Some(Tok::Op(op)) => op,
                    other => return Err(format!("expected a comparison, found {other:?}")),
                };
                Ok(Expr::Cmp(a, op, self.operand()?))
            }
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Tok::Num(n)) => Ok(Operand::Num(n)),
            Some(Tok::Ident(name)) if Counts::default().get(&name).is_some() => Ok(Operand::Count(name)),
            Some(Tok::Ident(name)) => Err(format!(
                "{name:?} is not one of requests, totalSuccesses, totalFailures, consecutiveSuccesses, consecutiveFailures"
            )),
            other => Err(format!("expected a count or a number, found {other:?}")),
        }
    }
}

impl Expr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser { toks: lex(s)?, at: 0 };
        let e = p.or()?;
        match p.peek() {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {t:?} after the expression")),
        }
    }

    pub fn eval(&self, c: &Counts) -> bool {
        let val = |o: &Operand| match o {
            Operand::Num(n) => *n,
            Operand::Count(name) => c.get(name).unwrap_or(0),
        };
        match self {
            Self::Cmp(a, op, b) => {
                let (a, b) = (val(a), val(b));
                match op {
                    Op::Gt => a > b,
                    Op::Ge => a >= b,
                    Op::Lt => a < b,
                    Op::Le => a <= b,
                    Op::Eq => a == b,
                    Op::Ne => a != b,
                }
            }
            Self::And(a, b) => a.eval(c) && b.eval(c),
            Self::Or(a, b) => a.eval(c) || b.eval(c),
            Self::Not(a) => !a.eval(c),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

struct Inner {
    state: State,
    counts: Counts,
    /// When the closed-state counts next reset (`interval`), if they do.
    reset_at: Option<Instant>,
    in_flight_probes: u32,
}

/// One breaker, shared by every call to its target.
pub struct Breaker {
    name: String,
    max_requests: u32,
    interval: Option<Duration>,
    timeout: Duration,
    trip: Expr,
    inner: Mutex<Inner>,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("circuit breaker {0:?} is open")]
    Open(String),
    #[error("circuit breaker {0:?} is half-open and its probes are taken")]
    TooManyRequests(String),
}

impl Breaker {
    /// Parses a named breaker over Dapr's defaults.
    pub fn parse(name: &str, cb: &CircuitBreaker) -> Result<Self, String> {
        let field = |f: &str| format!("policies.circuitBreakers.{name}.{f}");
        let interval = cb
            .interval
            .as_deref()
            .map(|d| duration(&field("interval"), d))
            .transpose()?
            .filter(|d| !d.is_zero());
        let timeout = match &cb.timeout {
            Some(d) => duration(&field("timeout"), d)?,
            None => Duration::from_secs(60),
        };
        let trip = Expr::parse(cb.trip.as_deref().unwrap_or("consecutiveFailures > 5"))
            .map_err(|e| format!("{}: {e}", field("trip")))?;
        Ok(Self {
            name: name.to_string(),
            max_requests: cb.max_requests.unwrap_or(1).max(1),
            interval,
            timeout,
            trip,
            inner: Mutex::new(Inner {
                state: State::Closed,
                counts: Counts::default(),
                reset_at: None,
                in_flight_probes: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state's name, as Dapr's metrics label it.
    pub fn state(&self) -> &'static str {
        self.lock().state.name()
    }

    /// Asks to let a call through; `Some(state)` when asking moved the
    /// breaker to `state` (an open breaker whose timeout passed).
    pub fn admit(&self) -> Result<Option<&'static str>, Refused> {
        let now = Instant::now();
        let mut g = self.lock();
        let mut changed = None;
        match g.state {
            State::Open { until } if now < until => return Err(Refused::Open(self.name.clone())),
            State::Open { .. } => {
                g.state = State::HalfOpen;
                g.counts = Counts::default();
                g.in_flight_probes = 0;
                changed = Some(g.state.name());
            }
            State::Closed => {
                if g.reset_at.is_some_and(|r| now >= r) {
                    g.counts = Counts::default();
                    g.reset_at = None;
                }
                if g.reset_at.is_none() {
                    g.reset_at = self.interval.map(|i| now + i);
                }
            }
            State::HalfOpen => {}
        }
        if g.state == State::HalfOpen {
            if g.in_flight_probes >= self.max_requests {
                return Err(Refused::TooManyRequests(self.name.clone()));
            }
            g.in_flight_probes += 1;
        }
        g.counts.requests += 1;
        Ok(changed)
    }

    /// Records how an admitted call ended; `Some(state)` when that moved
    /// the breaker to `state`.
    pub fn record(&self, ok: bool) -> Option<&'static str> {
        let now = Instant::now();
        let mut g = self.lock();
        let before = g.state.name();
        match g.state {
            State::Closed if ok => g.counts.success(),
            State::Closed => {
                g.counts.failure();
                if self.trip.eval(&g.counts) {
                    tracing::warn!(breaker = %self.name, "circuit breaker opened");
                    g.state = State::Open {
                        until: now + self.timeout,
                    };
                }
            }
            State::HalfOpen if ok => {
                g.counts.success();
                g.in_flight_probes = g.in_flight_probes.saturating_sub(1);
                if g.counts.consecutive_successes >= u64::from(self.max_requests) {
                    tracing::info!(breaker = %self.name, "circuit breaker closed");
                    g.state = State::Closed;
                    g.counts = Counts::default();
                    g.reset_at = None;
                }
            }
            State::HalfOpen => {
                tracing::warn!(breaker = %self.name, "circuit breaker opened again");
                g.state = State::Open {
                    until: now + self.timeout,
                };
            }
            // A call admitted before the breaker opened changes nothing now.
            State::Open { .. } => {}
        }
        let after = g.state.name();
        (after != before).then_some(after)
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trip_expressions_parse_and_evaluate() {
        let c = Counts {
            requests: 10,
            total_failures: 4,
            consecutive_failures: 3,
            ..Default::default()
        };
        for (e, want) in [
            ("consecutiveFailures > 5", false),
            ("consecutiveFailures >= 3", true),
            ("totalFailures > 3 && requests >= 10", true),
            (
                "totalFailures > 9 || (requests == 10 && !(consecutiveFailures < 2))",
                true,
            ),
            ("requests != 10", false),
        ] {
            assert_eq!(Expr::parse(e).expect(e).eval(&c), want, "{e}");
        }
        for bad in [
            "",
            "failures > 5",
            "consecutiveFailures >",
            "(requests > 1",
            "requests > 1 &",
            "requests ~ 1",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
    }

    fn breaker(trip: &str, timeout: &str) -> Breaker {
        Breaker::parse(
            "cb",
            &CircuitBreaker {
                max_requests: Some(1),
                interval: None,
                timeout: Some(timeout.into()),
                trip: Some(trip.into()),
            },
        )
        .expect("valid")
    }

    #[tokio::test(start_paused = true)]
    async fn opens_then_half_opens_after_its_timeout() {
        let b = breaker("consecutiveFailures >= 2", "5s");
        assert_eq!(b.admit(), Ok(None));
        assert_eq!(b.record(false), None);
        assert_eq!(b.admit(), Ok(None));
        // Each change of state is reported once, as metrics count it.
        assert_eq!(b.record(false), Some("open"));
        assert_eq!(b.state(), "open");
        assert_eq!(b.admit(), Err(Refused::Open("cb".into())));
        tokio::time::advance(Duration::from_secs(5)).await;
        // Half-open: one probe at a time.
        assert_eq!(b.admit(), Ok(Some("half-open")));
        assert!(matches!(b.admit(), Err(Refused::TooManyRequests(_))));
        assert_eq!(b.record(false), Some("open"));
        assert!(
            matches!(b.admit(), Err(Refused::Open(_))),
            "a failed probe opens it again"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        b.admit().expect("probe");
        assert_eq!(b.record(true), Some("closed"));
        for _ in 0..10 {
            b.admit().expect("closed again");
            b.record(true);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn interval_resets_the_closed_counts() {
        let b = Breaker::parse(
            "cb",
            &CircuitBreaker {
                interval: Some("1s".into()),
                trip: Some("totalFailures >= 3".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        for _ in 0..2 {
            b.admit().expect("closed");
            b.record(false);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..2 {
            b.admit().expect("counts were reset");
            b.record(false);
        }
        b.admit().expect("still closed");
    }
}
