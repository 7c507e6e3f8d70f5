//! Topic scoping from a pub/sub component's metadata, as Dapr reads it:
//! `allowedTopics` limits every app; `publishingScopes` and
//! `subscriptionScopes` (`app1=t1,t2;app2=`) limit the apps they name; a
//! topic in `protectedTopics` is open only to apps whose scope lists it.

use std::collections::HashSet;

use daprs_components::{Metadata, meta};

/// The topics one app may use on one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicScopes {
    allowed: Option<HashSet<String>>,
    protected: HashSet<String>,
    publish: Option<HashSet<String>>,
    subscribe: Option<HashSet<String>>,
}

fn list(v: &str) -> HashSet<String> {
    v.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// This app's entry in a `app=t1,t2;other=t3` list, if it has one.
fn app_scope(v: Option<&str>, app_id: &str) -> Option<HashSet<String>> {
    v?.split(';').find_map(|entry| {
        let (app, topics) = entry.split_once('=')?;
        (app.trim() == app_id).then(|| list(topics))
    })
}

impl TopicScopes {
    /// Reads the component metadata for `app_id`.
    pub fn parse(metadata: &Metadata, app_id: &str) -> Self {
        Self {
            allowed: meta(metadata, "allowedTopics").map(list),
            protected: meta(metadata, "protectedTopics").map(list).unwrap_or_default(),
            publish: app_scope(meta(metadata, "publishingScopes"), app_id),
            subscribe: app_scope(meta(metadata, "subscriptionScopes"), app_id),
        }
    }

    fn allows(&self, own: Option<&HashSet<String>>, topic: &str) -> bool {
        if self.allowed.as_ref().is_some_and(|a| !a.contains(topic)) {
            return false;
        }
        match own {
            Some(topics) => topics.contains(topic),
            None => !self.protected.contains(topic),
        }
    }

    /// Whether the app may publish to `topic`.
    pub fn may_publish(&self, topic: &str) -> bool {
        self.allows(self.publish.as_ref(), topic)
    }

    /// Whether the app may subscribe to `topic`.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.allows(self.subscribe.as_ref(), topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(pairs: &[(&str, &str)], app: &str) -> TopicScopes {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TopicScopes::parse(&m, app)
    }

    #[test]
    fn no_metadata_allows_everything() {
        let s = scopes(&[], "a");
        assert!(s.may_publish("t") && s.may_subscribe("t"));
    }

    #[test]
    fn app_scopes_limit_only_the_apps_they_name() {
        let m = [("publishingScopes", "a=t1,t2;b="), ("subscriptionScopes", "a=t3")];
        let a = scopes(&m, "a");
        assert!(a.may_publish("t1") && a.may_publish("t2") && !a.may_publish("t3"));
        assert!(a.may_subscribe("t3") && !a.may_subscribe("t1"));
        let b = scopes(&m, "b");
        assert!(!b.may_publish("t1"), "an empty list allows nothing");
        assert!(b.may_subscribe("anything"));
        assert!(scopes(&m, "c").may_publish("t9"));
    }

    #[test]
    fn allowed_and_protected_topics() {
        let m = [
            ("allowedTopics", "t1, t2,p"),
            ("protectedTopics", "p"),
            ("publishingScopes", "owner=p"),
        ];
        let other = scopes(&m, "x");
        assert!(other.may_publish("t1") && !other.may_publish("t3"));
        assert!(!other.may_publish("p") && !other.may_subscribe("p"));
        assert!(scopes(&m, "owner").may_publish("p"));
    }
}
