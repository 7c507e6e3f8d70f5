//! HTTP path and method labels as Dapr's `spec.metric.http` sets them:
//! `pathMatching` templates, `increasedCardinality` and `excludeVerbs`.
//! Pure functions; the label set stays bounded unless a user asks otherwise.

use std::borrow::Cow;

use daprs_api::v1alpha1::MetricHttpSpec;

/// The label an unmatched path gets when path matching is on and
/// cardinality is low.
pub const UNMATCHED: &str = "_";

/// One `pathMatching` template, e.g. `/orders/{orderID}` or `/static/`.
#[derive(Clone, Debug)]
struct Template {
    text: String,
    segments: Vec<Segment>,
    /// Ends in `/` or `{name...}`: matches the rest of any path below it.
    prefix: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(String),
    Wildcard,
}

impl Template {
    fn parse(text: &str) -> Self {
        let trimmed = text.trim_start_matches('/');
        let mut prefix = trimmed.is_empty() || trimmed.ends_with('/');
        let mut segments = Vec::new();
        for s in trimmed.split('/').filter(|s| !s.is_empty()) {
            if s.starts_with('{') && s.ends_with("...}") {
                prefix = true;
                break;
            }
            segments.push(if s.starts_with('{') && s.ends_with('}') {
                Segment::Wildcard
            } else {
                Segment::Literal(s.to_string())
            });
        }
        Self {
            text: text.to_string(),
            segments,
            prefix,
        }
    }

    fn matches(&self, parts: &[&str]) -> bool {
        let fits = |n: usize| {
            if self.prefix {
                n >= self.segments.len()
            } else {
                n == self.segments.len()
            }
        };
        fits(parts.len())
            && self.segments.iter().zip(parts).all(|(s, p)| match s {
                Segment::Literal(l) => l == p,
                Segment::Wildcard => !p.is_empty(),
            })
    }

    /// Exact templates before prefixes; more literal segments first.
    fn rank(&self) -> (bool, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (
            self.prefix,
            std::cmp::Reverse(self.segments.len()),
            std::cmp::Reverse(literals),
        )
    }
}

/// How HTTP requests are labelled.
#[derive(Clone, Debug, Default)]
pub struct PathLabels {
    increased: bool,
    exclude_verbs: bool,
    templates: Vec<Template>,
}

impl PathLabels {
    /// From `spec.metric.http` (low cardinality when unset, as in Dapr 1.15 and later).
    pub fn new(spec: Option<&MetricHttpSpec>) -> Self {
        let Some(spec) = spec else {
            return Self::default();
        };
        let mut templates: Vec<Template> = spec.path_matching.iter().map(|t| Template::parse(t)).collect();
        templates.sort_by_key(Template::rank);
        Self {
            increased: spec.increased_cardinality.unwrap_or(false),
            exclude_verbs: spec.exclude_verbs.unwrap_or(false),
            templates,
        }
    }

    /// Whether labels are made from the path at all (otherwise it is "").
    pub fn uses_path(&self) -> bool {
        self.increased || !self.templates.is_empty()
    }

    /// The `path` label of a request for `path`.
    pub fn path<'a>(&'a self, path: &'a str) -> Cow<'a, str> {
        if !self.templates.is_empty() {
            let parts: Vec<&str> = path
                .trim_start_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(t) = self.templates.iter().find(|t| t.matches(&parts)) {
                return Cow::Borrowed(&t.text);
            }
            if !self.increased {
                return Cow::Borrowed(UNMATCHED);
            }
        }
        if self.increased {
            without_ids(path)
        } else {
            Cow::Borrowed("")
        }
    }

    /// The `method` label.
    pub fn method<'a>(&self, method: &'a str) -> &'a str {
        if self.exclude_verbs { "" } else { method }
    }
}

/// With increased cardinality, Dapr still drops the parts of its own API
/// paths that are data rather than routes: state keys, secret names and
/// actor ids.
fn without_ids(path: &str) -> Cow<'_, str> {
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(6, '/').collect();
    if parts.len() < 3 {
        return Cow::Borrowed(path);
    }
    if parts[0] == "actors" {
        let mut p = parts.clone();
        p[2] = "{id}";
        return Cow::Owned(p.join("/"));
    }
    match parts[1] {
        "state" | "secrets" => Cow::Owned(format!("/{}", parts[..3].join("/"))),
        "actors" if parts.len() >= 5 => {
            let mut p = parts[..5].to_vec();
            p[3] = "{id}";
            Cow::Owned(format!("/{}", p.join("/")))
        }
        _ => Cow::Borrowed(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(increased: Option<bool>, matching: &[&str], exclude: bool) -> PathLabels {
        PathLabels::new(Some(&MetricHttpSpec {
            increased_cardinality: increased,
            path_matching: matching.iter().map(|s| s.to_string()).collect(),
            exclude_verbs: Some(exclude),
        }))
    }

    #[test]
    fn low_cardinality_drops_paths_unless_a_template_matches() {
        let l = PathLabels::new(None);
        assert_eq!(l.path("/v1.0/invoke/orders/method/orders/1"), "");
        let l = labels(None, &["/orders/{orderID}"], false);
        assert_eq!(l.path("/orders/12"), "/orders/{orderID}");
        assert_eq!(l.path("/orders/12/items"), UNMATCHED);
        assert_eq!(l.path("/users/1"), UNMATCHED);
    }

    #[test]
    fn high_cardinality_keeps_paths_without_keys_and_ids() {
        let l = labels(Some(true), &[], false);
        assert_eq!(l.path("/orders/1"), "/orders/1");
        assert_eq!(l.path("/v1.0/state/statestore/key-1"), "/v1.0/state/statestore");
        assert_eq!(l.path("/v1.0/secrets/vault/db-password"), "/v1.0/secrets/vault");
        assert_eq!(
            l.path("/v1.0/actors/Cart/42/method/add"),
            "/v1.0/actors/Cart/{id}/method"
        );
        let l = labels(Some(true), &["/orders/{orderID}"], false);
        assert_eq!(l.path("/orders/1"), "/orders/{orderID}");
        assert_eq!(l.path("/users/1"), "/users/1");
    }

    #[test]
    fn templates_prefer_the_most_specific_and_verbs_can_go() {
        let l = labels(
            None,
            &["/static/", "/orders/{id}", "/orders/special", "/files/{rest...}"],
            true,
        );
        assert_eq!(l.path("/orders/special"), "/orders/special");
        assert_eq!(l.path("/orders/7"), "/orders/{id}");
        assert_eq!(l.path("/static/css/site.css"), "/static/");
        assert_eq!(l.path("/files/a/b/c"), "/files/{rest...}");
        assert_eq!(l.method("GET"), "");
        assert_eq!(PathLabels::new(None).method("GET"), "GET");
    }
}
