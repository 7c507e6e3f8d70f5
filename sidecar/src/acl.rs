//! Service-invocation access control (`spec.accessControl` of the
//! Configuration), applied by the callee's sidecar to every call that
//! arrives from another sidecar: HTTP invocation, `InvokeService` and
//! proxied gRPC alike.
//!
//! The caller is who its certificate says when mutual TLS is on, else who
//! its sidecar says it is. A policy names a caller (app-id, namespace,
//! trust domain); its operations are path patterns, where `*` stands for one
//! segment and `**` for any number, with optional HTTP verbs. The most
//! specific matching operation decides; else the policy's default action;
//! else the global one.

use std::collections::HashMap;

use daprs_api::v1alpha1::{AccessControlSpec, AppOperation};

/// The trust domain of apps when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Deny,
}

fn action(field: &str, v: &str) -> Result<Option<Action>, String> {
    match v.trim() {
        "" => Ok(None),
        v if v.eq_ignore_ascii_case("allow") => Ok(Some(Action::Allow)),
        v if v.eq_ignore_ascii_case("deny") => Ok(Some(Action::Deny)),
        v => Err(format!("{field}: {v:?} is neither allow nor deny")),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(String),
    /// `*`: one segment.
    One,
    /// `**`: any number of segments.
    Any,
}

#[derive(Clone, Debug)]
struct Operation {
    pattern: Vec<Seg>,
    /// Upper-case verbs; None for all.
    verbs: Option<Vec<String>>,
    action: Action,
}

impl Operation {
    /// Literal segments first, then single wildcards: the higher, the more specific.
    fn specificity(&self) -> (usize, usize, usize) {
        let lit = self.pattern.iter().filter(|s| matches!(s, Seg::Lit(_))).count();
        let one = self.pattern.iter().filter(|s| **s == Seg::One).count();
        (lit, one, self.pattern.len())
    }
}

fn matches(pattern: &[Seg], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(Seg::Any), _) => (0..=path.len()).any(|skip| matches(&pattern[1..], &path[skip..])),
        (Some(Seg::One), Some(_)) => matches(&pattern[1..], &path[1..]),
        (Some(Seg::Lit(l)), Some(p)) if l == p => matches(&pattern[1..], &path[1..]),
        _ => false,
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

#[derive(Clone, Debug)]
struct Policy {
    default: Option<Action>,
    trust_domain: String,
    operations: Vec<Operation>,
}

/// A parsed `accessControl`.
#[derive(Clone, Debug)]
pub struct AccessControl {
    default: Action,
    /// This app's trust domain.
    pub trust_domain: String,
    /// By (app-id, namespace).
    policies: HashMap<(String, String), Policy>,
}

/// Who is calling, as proven or as stated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub app_id: String,
    pub namespace: String,
    pub trust_domain: String,
}

/// The callee's first check of every call another sidecar sends, by any
/// path: it must name this sidecar's app.
pub fn check_callee(app_id: &str, callee: Option<&str>) -> Result<(), tonic::Status> {
    if callee == Some(app_id) {
        return Ok(());
    }
    // A value the caller chose is quoted at most 64 characters long.
    let shown = callee.map_or_else(
        || "no app".to_string(),
        |c| format!("{:?}", c.char_indices().nth(64).map_or(c, |(i, _)| &c[..i])),
    );
    Err(tonic::Status::permission_denied(format!(
        "this sidecar serves app {app_id:?}; the call is addressed to {shown}"
    )))
}

/// The callee's access check of a call another sidecar sends: `proven` is
/// the caller's certificate identity under mutual TLS, the others what its
/// sidecar states.
pub fn check_caller(
    access: Option<&AccessControl>,
    proven: Option<&daprs_mtls::SpiffeId>,
    stated_app: Option<&str>,
    stated_namespace: Option<&str>,
    operation: &str,
    verb: Option<&str>,
) -> Result<(), tonic::Status> {
    let Some(acl) = access else { return Ok(()) };
    let who = Caller::of(proven, stated_app, stated_namespace);
    acl.check(who.as_ref(), operation, verb)
        .map_err(tonic::Status::permission_denied)
}

impl Caller {
    /// The caller of a call from another sidecar: the identity its
    /// certificate proves under mutual TLS, else what its sidecar states.
    pub fn of(
        proven: Option<&daprs_mtls::SpiffeId>,
        app_id: Option<&str>,
        namespace: Option<&str>,
    ) -> Option<Self> {
        match proven {
            Some(id) => Some(Self {
                app_id: id.app_id.clone(),
                namespace: id.namespace.clone(),
                trust_domain: id.trust_domain.clone(),
            }),
            None => Some(Self {
                app_id: app_id.filter(|a| !a.is_empty())?.to_string(),
                namespace: namespace
                    .filter(|n| !n.is_empty())
                    .unwrap_or(crate::registry::DEFAULT_NAMESPACE)
                    .to_string(),
                trust_domain: DEFAULT_TRUST_DOMAIN.to_string(),
            }),
        }
    }
}

fn operation(i: usize, j: usize, op: &AppOperation) -> Result<Operation, String> {
    let field = format!("accessControl.policies[{i}].operations[{j}]");
    let name = op.name.trim();
    if !name.starts_with('/') {
        return Err(format!("{field}.name: {name:?} must be a path starting with /"));
    }
    let pattern = segments(name)
        .into_iter()
        .map(|s| match s {
            "*" => Seg::One,
            "**" => Seg::Any,
            s => Seg::Lit(s.to_string()),
        })
        .collect();
    let mut verbs = Vec::new();
    for v in &op.http_verb {
        let v = v.trim().to_ascii_uppercase();
        match v.as_str() {
            "*" => return operation_with(pattern, None, &field, &op.action),
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => {
                verbs.push(v)
            }
            other => return Err(format!("{field}.httpVerb: {other:?} is not an HTTP method")),
        }
    }
    let verbs = (!verbs.is_empty()).then_some(verbs);
    operation_with(pattern, verbs, &field, &op.action)
}

fn operation_with(
    pattern: Vec<Seg>,
    verbs: Option<Vec<String>>,
    field: &str,
    act: &str,
) -> Result<Operation, String> {
    let action = action(&format!("{field}.action"), act)?
        .ok_or_else(|| format!("{field}.action is required (allow or deny)"))?;
    Ok(Operation {
        pattern,
        verbs,
        action,
    })
}

impl AccessControl {
    /// Parses the spec; an invalid document is an error naming the field.
    pub fn parse(spec: &AccessControlSpec) -> Result<Self, String> {
        let default = action("accessControl.defaultAction", &spec.default_action)?.unwrap_or(Action::Allow);
        let trust_domain = match spec.trust_domain.trim() {
            "" => DEFAULT_TRUST_DOMAIN.to_string(),
            t => t.to_string(),
        };
        let mut policies = HashMap::new();
        for (i, p) in spec.policies.iter().enumerate() {
            let field = format!("accessControl.policies[{i}]");
            let app_id = p.app_id.trim();
            if app_id.is_empty() {
                return Err(format!("{field}.appId is required"));
            }
            let operations = p
                .operations
                .iter()
                .enumerate()
                .map(|(j, op)| operation(i, j, op))
                .collect::<Result<Vec<_>, _>>()?;
            let namespace = match p.namespace.trim() {
                "" => crate::registry::DEFAULT_NAMESPACE.to_string(),
                ns => ns.to_string(),
            };
            let policy = Policy {
                default: action(&format!("{field}.defaultAction"), &p.default_action)?,
                trust_domain: match p.trust_domain.trim() {
                    "" => DEFAULT_TRUST_DOMAIN.to_string(),
                    t => t.to_string(),
                },
                operations,
            };
            if policies
                .insert((app_id.to_string(), namespace.clone()), policy)
                .is_some()
            {
                return Err(format!(
                    "{field}: a second policy for app {app_id:?} in namespace {namespace:?}"
                ));
            }
        }
        Ok(Self {
            default,
            trust_domain,
            policies,
        })
    }

    /// Whether `caller` may call `operation` (the method path, with or
    /// without its leading `/`) with `verb` (HTTP calls only); the reason
    /// when not.
    pub fn check(&self, caller: Option<&Caller>, operation: &str, verb: Option<&str>) -> Result<(), String> {
        let (decided, by) = self.decide(caller, operation, verb);
        match decided {
            Action::Allow => Ok(()),
            Action::Deny => Err(format!(
                "access control policy has denied access to id: {} operation: /{}{}{by}",
                caller.map_or("(unknown)", |c| c.app_id.as_str()),
                operation.trim_start_matches('/'),
                verb.map(|v| format!(" verb: {v}")).unwrap_or_default(),
            )),
        }
    }

    fn decide(&self, caller: Option<&Caller>, operation: &str, verb: Option<&str>) -> (Action, &'static str) {
        let global = (self.default, " (global default action)");
        let Some(caller) = caller else { return global };
        let key = (caller.app_id.clone(), caller.namespace.clone());
        let Some(policy) = self.policies.get(&key) else {
            return global;
        };
        if policy.trust_domain != caller.trust_domain {
            return global;
        }
        let path = segments(operation);
        let best = policy
            .operations
            .iter()
            .filter(|op| matches(&op.pattern, &path))
            .max_by_key(|op| op.specificity());
        let fallback = policy
            .default
            .map_or(global, |a| (a, " (the caller's default action)"));
        match best {
            Some(op) => match (&op.verbs, verb) {
                (None, _) | (Some(_), None) => (op.action, " (operation rule)"),
                (Some(vs), Some(v)) if vs.iter().any(|x| x.eq_ignore_ascii_case(v)) => {
                    (op.action, " (operation rule)")
                }
                _ => fallback,
            },
            None => fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<AccessControl, String> {
        let spec: AccessControlSpec = serde_yaml::from_str(yaml).expect("yaml");
        AccessControl::parse(&spec)
    }

    fn caller(app: &str, ns: &str) -> Caller {
        Caller {
            app_id: app.into(),
            namespace: ns.into(),
            trust_domain: "public".into(),
        }
    }

    // The shape of Dapr's documented example.
    const DOC: &str = r#"
defaultAction: deny
trustDomain: "public"
policies:
- appId: app1
  defaultAction: allow
  trustDomain: 'public'
  namespace: "default"
  operations:
  - name: /op1
    httpVerb: ['POST', 'GET']
    action: deny
  - name: /op2/*
    httpVerb: ["*"]
    action: allow
- appId: app2
  defaultAction: deny
  namespace: "ns2"
  operations:
  - name: /op3/**
    action: allow
  - name: /op3/secret
    action: deny
"#;

    #[test]
    fn dapr_example_decides_as_documented() {
        let acl = parse(DOC).expect("valid");
        let app1 = caller("app1", "default");
        assert!(acl.check(Some(&app1), "/op1", Some("POST")).is_err());
        assert!(
            acl.check(Some(&app1), "/op1", Some("PUT")).is_ok(),
            "verb not listed: app default"
        );
        assert!(acl.check(Some(&app1), "/op2/x", Some("DELETE")).is_ok());
        assert!(
            acl.check(Some(&app1), "/op2/x/y", Some("GET")).is_ok(),
            "no rule: app default allow"
        );
        assert!(acl.check(Some(&app1), "/other", None).is_ok());
        let app2 = caller("app2", "ns2");
        assert!(acl.check(Some(&app2), "/op3/a/b/c", None).is_ok());
        assert!(
            acl.check(Some(&app2), "/op3", None).is_ok(),
            "** matches nothing too"
        );
        let e = acl
            .check(Some(&app2), "/op3/secret", None)
            .expect_err("most specific rule");
        assert!(e.contains("app2") && e.contains("/op3/secret"), "{e}");
        assert!(acl.check(Some(&app2), "/elsewhere", None).is_err());
        // Same app-id from another namespace or trust domain: the global default.
        assert!(
            acl.check(Some(&caller("app2", "default")), "/op3/a", None)
                .is_err()
        );
        let mut foreign = caller("app1", "default");
        foreign.trust_domain = "other".into();
        assert!(acl.check(Some(&foreign), "/op2/x", None).is_err());
        assert!(acl.check(None, "/op2/x", None).is_err(), "unknown caller");
        // gRPC proxied methods are paths too.
        assert!(acl.check(Some(&app2), "/op3/pkg.Service/Method", None).is_ok());
    }

    #[test]
    fn defaults_allow_and_namespace_defaults_to_default() {
        let acl = parse("policies:\n- appId: a\n  defaultAction: deny\n").expect("valid");
        assert_eq!(acl.trust_domain, "public");
        assert!(acl.check(Some(&caller("b", "default")), "/x", None).is_ok());
        assert!(acl.check(Some(&caller("a", "default")), "/x", None).is_err());
        assert!(acl.check(Some(&caller("a", "prod")), "/x", None).is_ok());
    }

    #[test]
    fn invalid_documents_name_the_field() {
        for (yaml, field) in [
            ("defaultAction: maybe", "accessControl.defaultAction"),
            ("policies:\n- appId: ''\n", "policies[0].appId"),
            (
                "policies:\n- appId: a\n  defaultAction: sometimes\n",
                "policies[0].defaultAction",
            ),
            (
                "policies:\n- appId: a\n  operations:\n  - name: op\n    action: allow\n",
                "operations[0].name",
            ),
            (
                "policies:\n- appId: a\n  operations:\n  - name: /op\n    action: perhaps\n",
                "operations[0].action",
            ),
            (
                "policies:\n- appId: a\n  operations:\n  - name: /op\n    httpVerb: [FETCH]\n    action: allow\n",
                "operations[0].httpVerb",
            ),
            ("policies:\n- appId: a\n- appId: a\n", "a second policy"),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.contains(field), "{yaml}: {e}");
        }
    }
}
