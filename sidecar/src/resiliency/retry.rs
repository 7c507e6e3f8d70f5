//! Retry policies: when to try again (status-code matching) and how long to
//! wait first (constant or exponential back-off), with Dapr's defaults.

use std::time::Duration;

use daprs_api::v1alpha1::RetryPolicy;

use super::{Failure, duration};

/// Inclusive ranges of status codes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Codes(Vec<(u32, u32)>);

impl Codes {
    /// Parses `"429,500-599"`; each code within `lo..=hi`.
    pub fn parse(field: &str, v: &str, lo: u32, hi: u32) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let num = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (lo..=hi).contains(n))
                    .ok_or_else(|| format!("{field}: {part:?} is not a code or range within {lo}-{hi}"))
            };
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("{field}: the range {part:?} runs backwards"));
            }
            out.push((a, b));
        }
        Ok(Self(out))
    }

    fn contains(&self, code: u32) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&code))
    }
}

/// How long to wait before each retry.
#[derive(Clone, Debug, PartialEq)]
pub enum Backoff {
    Constant(Duration),
    /// Starts at 500 ms and grows by 1.5 with ±50% jitter, up to `max`.
    Exponential {
        max: Duration,
    },
}

/// A parsed retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub backoff: Backoff,
    /// None: no limit.
    pub max_retries: Option<u32>,
    http: Option<Codes>,
    grpc: Option<Codes>,
}

const INITIAL: Duration = Duration::from_millis(500);
const MULTIPLIER: f64 = 1.5;
const JITTER: f64 = 0.5;

impl Retry {
    /// Parses a named policy over Dapr's defaults (constant 5 s, no limit).
    pub fn parse(name: &str, p: &RetryPolicy) -> Result<Self, String> {
        let field = |f: &str| format!("policies.retries.{name}.{f}");
        let backoff = match p.policy.trim() {
            "" | "constant" => Backoff::Constant(match &p.duration {
                Some(d) => duration(&field("duration"), d)?,
                None => Duration::from_secs(5),
            }),
            "exponential" => Backoff::Exponential {
                max: match &p.max_interval {
                    Some(d) => duration(&field("maxInterval"), d)?,
                    None => Duration::from_secs(60),
                },
            },
            other => {
                return Err(format!(
                    "{}: {other:?} is neither constant nor exponential",
                    field("policy")
                ));
            }
        };
        let max_retries = match p.max_retries {
            None | Some(-1) => None,
            Some(n) => {
                Some(u32::try_from(n).map_err(|_| format!("{}: {n} is below -1", field("maxRetries")))?)
            }
        };
        let m = p.matching.as_ref();
        let http = m
            .and_then(|m| m.http_status_codes.as_deref())
            .filter(|s| !s.trim().is_empty())
            .map(|s| Codes::parse(&field("matching.httpStatusCodes"), s, 100, 599))
            .transpose()?;
        let grpc = m
            .and_then(|m| m.grpc_status_codes.as_deref())
            .filter(|s| !s.trim().is_empty())
            .map(|s| Codes::parse(&field("matching.gRPCStatusCodes"), s, 0, 16))
            .transpose()?;
        Ok(Self {
            backoff,
            max_retries,
            http,
            grpc,
        })
    }

    /// Dapr's built-in retry between sidecars: three more tries, a second
    /// apart, for transport failures only.
    pub fn built_in() -> Self {
        Self {
            backoff: Backoff::Constant(Duration::from_secs(1)),
            max_retries: Some(3),
            http: Some(Codes::default()),
            grpc: Some(Codes(vec![(14, 14)])),
        }
    }

    /// Whether `failure` is one this policy tries again.
    pub fn matches(&self, failure: &Failure) -> bool {
        match failure {
            Failure::Http(code) => self.http.as_ref().is_none_or(|c| c.contains(u32::from(*code))),
            Failure::Grpc(code) => self.grpc.as_ref().is_none_or(|c| c.contains(*code as u32)),
            Failure::Timeout | Failure::Transport => true,
        }
    }

    /// Whether there is a retry after `done` retries.
    pub fn allows(&self, done: u32) -> bool {
        self.max_retries.is_none_or(|max| done < max)
    }

    /// The wait before retry number `n` (0-based), `unit` a number in [0, 1) for the jitter.
    pub fn wait(&self, n: u32, unit: f64) -> Duration {
        match &self.backoff {
            Backoff::Constant(d) => *d,
            Backoff::Exponential { max } => {
                let base = INITIAL.as_secs_f64() * MULTIPLIER.powi(i32::try_from(n).unwrap_or(i32::MAX));
                let jittered = base * (1.0 - JITTER + 2.0 * JITTER * unit);
                Duration::try_from_secs_f64(jittered).map_or(*max, |d| d.min(*max))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use daprs_api::v1alpha1::RetryMatching;

    use super::*;

    #[test]
    fn defaults_and_matching() {
        let r = Retry::parse("r", &RetryPolicy::default()).expect("defaults");
        assert_eq!(r.backoff, Backoff::Constant(Duration::from_secs(5)));
        assert!(r.allows(1_000_000));
        assert!(r.matches(&Failure::Http(404)) && r.matches(&Failure::Grpc(2)));
        let p = RetryPolicy {
            max_retries: Some(3),
            matching: Some(RetryMatching {
                http_status_codes: Some("429,500-599".into()),
                grpc_status_codes: Some("1-4,14".into()),
            }),
            ..Default::default()
        };
        let r = Retry::parse("r", &p).expect("valid");
        assert!(r.allows(2) && !r.allows(3));
        assert!(r.matches(&Failure::Http(503)) && r.matches(&Failure::Http(429)));
        assert!(!r.matches(&Failure::Http(404)));
        assert!(r.matches(&Failure::Grpc(14)) && !r.matches(&Failure::Grpc(5)));
        assert!(r.matches(&Failure::Timeout));
        let b = Retry::built_in();
        assert!(b.matches(&Failure::Grpc(14)) && !b.matches(&Failure::Http(500)));
    }

    #[test]
    fn exponential_back_off_grows_with_jitter_up_to_the_cap() {
        let p = RetryPolicy {
            policy: "exponential".into(),
            max_interval: Some("3s".into()),
            ..Default::default()
        };
        let r = Retry::parse("r", &p).expect("valid");
        assert_eq!(r.wait(0, 0.5), Duration::from_millis(500));
        assert_eq!(r.wait(1, 0.5), Duration::from_millis(750));
        assert!(
            r.wait(0, 0.0) >= Duration::from_millis(250) && r.wait(0, 0.999) < Duration::from_millis(750)
        );
        assert_eq!(r.wait(30, 0.5), Duration::from_secs(3));
        assert_eq!(r.wait(u32::MAX, 0.5), Duration::from_secs(3));
    }

    #[test]
    fn invalid_fields_are_named() {
        for (p, field) in [
            (
                RetryPolicy {
                    policy: "linear".into(),
                    ..Default::default()
                },
                "retries.r.policy",
            ),
            (
                RetryPolicy {
                    duration: Some("soon".into()),
                    ..Default::default()
                },
                "retries.r.duration",
            ),
            (
                RetryPolicy {
                    max_retries: Some(-2),
                    ..Default::default()
                },
                "retries.r.maxRetries",
            ),
            (
                RetryPolicy {
                    matching: Some(RetryMatching {
                        http_status_codes: Some("600".into()),
                        grpc_status_codes: None,
                    }),
                    ..Default::default()
                },
                "matching.httpStatusCodes",
            ),
            (
                RetryPolicy {
                    matching: Some(RetryMatching {
                        http_status_codes: None,
                        grpc_status_codes: Some("9-2".into()),
                    }),
                    ..Default::default()
                },
                "matching.gRPCStatusCodes",
            ),
        ] {
            let e = Retry::parse("r", &p).expect_err(field);
            assert!(e.contains(field), "{e}");
        }
    }
}
