//! Decoding Dapr resource files: YAML streams with one resource per document.

use serde::Deserialize;

use crate::{v1alpha1, v2alpha1};

/// One Dapr resource read from a file.
// Resources are read once at start-up; boxing the larger kinds would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Resource {
    /// `kind: Component`.
    Component(v1alpha1::Component),
    /// `kind: Configuration`.
    Configuration(v1alpha1::Configuration),
    /// `kind: Resiliency`.
    Resiliency(v1alpha1::Resiliency),
    /// `kind: HTTPEndpoint`.
    HttpEndpoint(v1alpha1::HTTPEndpoint),
    /// `kind: Subscription` in `dapr.io/v1alpha1`.
    SubscriptionV1(v1alpha1::Subscription),
    /// `kind: Subscription` in `dapr.io/v2alpha1`.
    SubscriptionV2(v2alpha1::Subscription),
}

impl Resource {
    /// The component, when this resource is one.
    pub fn as_component(&self) -> Option<&v1alpha1::Component> {
        match self {
            Self::Component(c) => Some(c),
            _ => None,
        }
    }

    /// The HTTPEndpoint, when this resource is one.
    pub fn as_http_endpoint(&self) -> Option<&v1alpha1::HTTPEndpoint> {
        match self {
            Self::HttpEndpoint(e) => Some(e),
            _ => None,
        }
    }

    /// The Resiliency, when this resource is one.
    pub fn as_resiliency(&self) -> Option<&v1alpha1::Resiliency> {
        match self {
            Self::Resiliency(r) => Some(r),
            _ => None,
        }
    }
}

/// Why a document could not be read as a Dapr resource.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The text is not YAML.
    #[error("document {doc}: invalid YAML: {source}")]
    Yaml {
        /// Position of the document in the stream, from 1.
        doc: usize,
        /// The parser's complaint.
        #[source]
        source: serde_yaml::Error,
    },
    /// The text nests deeper than any resource does; refused before parsing,
    /// which would take time that grows faster than the text.
    #[error("line {line}: YAML nested more than {limit} levels deep; no Dapr resource nests so deep")]
    TooDeep {
        /// Where the limit was passed, from 1.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// The document is YAML but not a valid resource of its kind.
    #[error("document {doc} ({kind} {name:?}): {source}")]
    Invalid {
        /// Position of the document in the stream, from 1.
        doc: usize,
        /// The document's `kind`.
        kind: String,
        /// The document's `metadata.name`.
        name: String,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
}

/// The deepest nesting of collections accepted in a resource file.
pub const MAX_NESTING: usize = 64;

/// The first line (from 1) where collections nest more than `limit` deep:
/// block collections by indentation (a `- ` item opening another counts
/// once more) and flow collections by their brackets, outside quotes and
/// comments. A bound, not a parser: it only has to be cheap and never below
/// the real depth of a valid resource.
pub fn nesting_exceeds(text: &str, limit: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start_matches(' ');
        if flow == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            // Each "- " that opens a nested item counts as a deeper level.
            let mut indent = line.len() - trimmed.len();
            let mut rest = trimmed;
            while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("-\t")) {
                indent += 2;
                rest = r.trim_start_matches(' ');
                while indents.last().is_some_and(|&i| i >= indent) {
                    indents.pop();
                }
                indents.push(indent);
            }
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        let (mut quote, mut prev) = (None::<char>, ' ');
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if prev == ' ' || prev == '\t' => break,
                (None, '[' | '{') => flow += 1,
                (None, ']' | '}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            prev = c;
            if indents.len() + flow > limit {
                return Some(n + 1);
            }
        }
        if indents.len() + flow > limit {
            return Some(n + 1);
        }
    }
    None
}

/// A document that is not a Dapr resource, returned so callers can say so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Position of the document in the stream, from 1.
    pub doc: usize,
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
}

/// What a YAML stream held.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    /// The Dapr resources, in order.
    pub resources: Vec<Resource>,
    /// Documents of other groups or kinds.
    pub skipped: Vec<Skipped>,
}

/// Decodes every document of a YAML stream. Empty documents are ignored, as are
/// documents whose `apiVersion` is not in the `dapr.io` group (they are listed in
/// [`Decoded::skipped`]). The first invalid document fails the whole stream, so a
/// half-read file never loads.
pub fn decode_yaml(text: &str) -> Result<Decoded, Vec<ResourceError>> {
    if let Some(line) = nesting_exceeds(text, MAX_NESTING) {
        return Err(vec![ResourceError::TooDeep {
            line,
            limit: MAX_NESTING,
        }]);
    }
    let mut out = Decoded::default();
    let mut errors = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        let value = match serde_json::Value::deserialize(de) {
            Ok(serde_json::Value::Null) => continue,
            Ok(v) => v,
            Err(source) => {
                errors.push(ResourceError::Yaml { doc, source });
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        match decode_value(doc, value) {
            Ok(Ok(r)) => out.resources.push(r),
            Ok(Err(s)) => out.skipped.push(s),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn decode_value(doc: usize, value: serde_json::Value) -> Result<Result<Resource, Skipped>, ResourceError> {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let api_version = text("apiVersion");
    let kind = text("kind");
    let name = value
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let invalid = |source| ResourceError::Invalid {
        doc,
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    let is_dapr = api_version.starts_with("dapr.io/");
    if is_dapr && name.is_empty() {
        let why = match value.pointer("/metadata/name") {
            Some(serde_json::Value::Number(n)) => {
                format!("metadata.name must be a string: write it quoted, name: \"{n}\"")
            }
            Some(v) if !v.is_null() && !v.is_string() => "metadata.name must be a string".to_string(),
            _ => "metadata.name is required".to_string(),
        };
        return Err(invalid(serde::de::Error::custom(why)));
    }
    let resource = match (api_version.as_str(), kind.as_str()) {
        ("dapr.io/v1alpha1", "Component") => {
            Resource::Component(serde_json::from_value(value).map_err(invalid)?)
        }
        ("dapr.io/v1alpha1", "Configuration") => {
            Resource::Configuration(serde_json::from_value(value).map_err(invalid)?)
        }
        ("dapr.io/v1alpha1", "Resiliency") => {
            Resource::Resiliency(serde_json::from_value(value).map_err(invalid)?)
        }
        ("dapr.io/v1alpha1", "HTTPEndpoint") => {
            Resource::HttpEndpoint(serde_json::from_value(value).map_err(invalid)?)
        }
        ("dapr.io/v1alpha1", "Subscription") => {
            Resource::SubscriptionV1(serde_json::from_value(value).map_err(invalid)?)
        }
        ("dapr.io/v2alpha1", "Subscription") => {
            Resource::SubscriptionV2(serde_json::from_value(value).map_err(invalid)?)
        }
        _ => {
            return Ok(Err(Skipped {
                doc,
                api_version,
                kind,
            }));
        }
    };
    Ok(Ok(resource))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATESTORE: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: redisPassword
    value: ""
  - name: actorStateStore
    value: "true"
  - name: redisDB
    value: 3
  - name: password
    secretKeyRef:
      name: redis
      key: password
auth:
  secretStore: local
scopes:
- orders
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders-sub
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    rules:
    - match: event.type == "order.created"
      path: /orders/created
    default: /orders
scopes: [order-processor]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
"#;

    #[test]
    fn decodes_multi_document_dapr_yaml() {
        let decoded = decode_yaml(STATESTORE).expect("valid");
        assert_eq!(decoded.resources.len(), 2);
        let Resource::Component(c) = &decoded.resources[0] else {
            panic!("not a component")
        };
        assert_eq!(c.spec.spec.type_, "state.redis");
        assert_eq!(c.building_block(), "state");
        assert_eq!(c.spec.scopes, ["orders"]);
        assert!(c.in_scope("orders") && !c.in_scope("other"));
        assert_eq!(
            c.spec.auth.as_ref().map(|a| a.secret_store.as_str()),
            Some("local")
        );
        let values: Vec<_> = c.spec.spec.metadata.iter().map(|m| m.inline_value()).collect();
        assert_eq!(values[0].as_deref(), Some("localhost:6379"));
        assert_eq!(values[3].as_deref(), Some("3"), "numbers are read as their text");
        let r = c.spec.spec.metadata[4].secret_key_ref.as_ref().expect("ref");
        assert_eq!((r.name.as_str(), r.key.as_str()), ("redis", "password"));
        let Resource::SubscriptionV2(s) = &decoded.resources[1] else {
            panic!("not a subscription")
        };
        assert_eq!(s.spec.spec.routes.rules[0].path, "/orders/created");
        assert_eq!(decoded.skipped[0].kind, "ConfigMap");
    }

    #[test]
    fn round_trips_component_yaml_with_top_level_scopes() {
        let decoded = decode_yaml(STATESTORE).expect("valid");
        let Resource::Component(c) = &decoded.resources[0] else {
            panic!("not a component")
        };
        let json = serde_json::to_value(c).expect("serialise");
        assert_eq!(json["scopes"][0], "orders");
        assert_eq!(json["spec"]["type"], "state.redis");
        assert_eq!(json["auth"]["secretStore"], "local");
    }

    #[test]
    fn reports_invalid_documents_with_position_and_name() {
        let text =
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: broken}\nspec: {version: v1}\n";
        let errors = decode_yaml(text).expect_err("missing spec.type");
        let msg = errors[0].to_string();
        assert!(
            msg.contains("document 1") && msg.contains("broken") && msg.contains("type"),
            "{msg}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_at_once_and_real_files_pass() {
        assert_eq!(nesting_exceeds(STATESTORE, MAX_NESTING), None);
        let flow = format!("a: {}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let e = decode_yaml(&flow).expect_err("too deep");
        assert!(matches!(e[..], [ResourceError::TooDeep { line: 1, .. }]));
        let block: String = (0..1_000).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert!(matches!(
            decode_yaml(&block).expect_err("deep")[..],
            [ResourceError::TooDeep { .. }]
        ));
        let dashes = format!("{}x\n", "- ".repeat(100_000));
        assert!(matches!(
            decode_yaml(&dashes).expect_err("deep")[..],
            [ResourceError::TooDeep { .. }]
        ));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Brackets in quotes and comments do not count.
        let quoted = format!("a: \"{}\" # {}\n", "[".repeat(500), "{".repeat(500));
        assert_eq!(nesting_exceeds(&quoted, MAX_NESTING), None);
        // A document at the limit still decodes.
        let ok = format!("a: {}1{}", "[".repeat(60), "]".repeat(60));
        assert!(decode_yaml(&ok).is_ok());
    }

    #[test]
    fn rejects_nameless_resources_and_bad_yaml() {
        let nameless = "apiVersion: dapr.io/v1alpha1\nkind: Component\nspec: {type: state.in-memory}\n";
        assert!(
            decode_yaml(nameless).expect_err("no name")[0]
                .to_string()
                .contains("metadata.name")
        );
        let numeric = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: 123}\nspec: {type: state.in-memory}\n";
        let e = decode_yaml(numeric).expect_err("numeric name")[0].to_string();
        assert!(e.contains("must be a string") && e.contains("\"123\""), "{e}");
        assert!(matches!(
            decode_yaml("a: [b").expect_err("bad yaml")[..],
            [ResourceError::Yaml { .. }]
        ));
    }
}
