//! Conversion of Subscriptions between `dapr.io/v1alpha1` (one `route`) and
//! `dapr.io/v2alpha1` (`routes.default` plus `routes.rules`), as the API
//! server's conversion webhook asks. Works on the JSON objects so every
//! field the types do not know survives.
//!
//! v1alpha1 has nowhere to put routing rules; they are kept in an
//! annotation so that reading an object through v1alpha1 and writing it back
//! loses nothing.

use serde_json::{Map, Value};

const V1: &str = "dapr.io/v1alpha1";
const V2: &str = "dapr.io/v2alpha1";
/// Where v1alpha1 objects keep the v2alpha1 routing rules.
pub const RULES_ANNOTATION: &str = "dapr.io/v2alpha1-routes-rules";

/// Converts one Subscription object to `desired` (`dapr.io/v1alpha1` or `dapr.io/v2alpha1`).
pub fn subscription(mut obj: Value, desired: &str) -> Result<Value, String> {
    let from = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    if obj["kind"] != "Subscription" {
        return Err(format!("cannot convert a {} object", obj["kind"]));
    }
    if ![V1, V2].contains(&desired) {
        return Err(format!("unknown version {desired:?}; expected {V1} or {V2}"));
    }
    if from == desired {
        return Ok(obj);
    }
    let spec = obj
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or("the Subscription has no spec")?;
    match (from.as_str(), desired) {
        (V1, V2) => {
            let mut routes = Map::new();
            if let Some(route) = spec
                .remove("route")
                .filter(|r| r.as_str().is_some_and(|s| !s.is_empty()))
            {
                routes.insert("default".into(), route);
            }
            let stashed = obj["metadata"]["annotations"][RULES_ANNOTATION]
                .as_str()
                .map(str::to_string);
            if let Some(text) = stashed {
                let rules: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("annotation {RULES_ANNOTATION} is not JSON: {e}"))?;
                routes.insert("rules".into(), rules);
                let emptied = obj["metadata"]["annotations"].as_object_mut().is_some_and(|a| {
                    a.remove(RULES_ANNOTATION);
                    a.is_empty()
                });
                if emptied && let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove("annotations");
                }
            }
            obj["spec"]["routes"] = Value::Object(routes);
        }
        (V2, V1) => {
            let routes = spec.remove("routes").unwrap_or(Value::Null);
            if let Some(default) = routes
                .get("default")
                .filter(|d| d.as_str().is_some_and(|s| !s.is_empty()))
            {
                spec.insert("route".into(), default.clone());
            }
            if let Some(rules) = routes
                .get("rules")
                .filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
            {
                let meta = obj["metadata"]
                    .as_object_mut()
                    .ok_or("the Subscription has no metadata")?;
                let annotations = meta
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Map::new()));
                annotations[RULES_ANNOTATION] = Value::String(rules.to_string());
            }
        }
        _ => return Err(format!("cannot convert from {from:?}")),
    }
    obj["apiVersion"] = Value::String(desired.into());
    Ok(obj)
}

/// Answers an `apiextensions.k8s.io/v1` ConversionReview.
pub fn review(review: &Value) -> Result<Value, String> {
    let request = review
        .get("request")
        .ok_or("the ConversionReview has no request")?;
    let uid = request["uid"]
        .as_str()
        .ok_or("the ConversionReview has no request.uid")?;
    let desired = request["desiredAPIVersion"].as_str().unwrap_or_default();
    let objects = request["objects"].as_array().cloned().unwrap_or_default();
    let converted: Result<Vec<Value>, String> =
        objects.into_iter().map(|o| subscription(o, desired)).collect();
    let response = match converted {
        Ok(objects) => {
            serde_json::json!({"uid": uid, "convertedObjects": objects, "result": {"status": "Success"}})
        }
        Err(message) => {
            serde_json::json!({"uid": uid, "convertedObjects": [], "result": {"status": "Failure", "message": message}})
        }
    };
    Ok(serde_json::json!({
        "apiVersion": review["apiVersion"].as_str().unwrap_or("apiextensions.k8s.io/v1"),
        "kind": "ConversionReview",
        "response": response,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn v1() -> Value {
        json!({"apiVersion": V1, "kind": "Subscription",
            "metadata": {"name": "order", "namespace": "default", "uid": "u", "resourceVersion": "7"},
            "spec": {"pubsubname": "pubsub", "topic": "orders", "route": "/orders", "metadata": {"rawPayload": "true"},
                "deadLetterTopic": "poison", "bulkSubscribe": {"enabled": true}},
            "scopes": ["checkout"]})
    }

    #[test]
    fn v1_to_v2_and_back_is_lossless() {
        let v2 = subscription(v1(), V2).expect("to v2");
        assert_eq!(v2["apiVersion"], V2);
        assert_eq!(v2["spec"]["routes"], json!({"default": "/orders"}));
        assert!(v2["spec"].get("route").is_none());
        assert_eq!(v2["spec"]["deadLetterTopic"], "poison");
        assert_eq!(v2["scopes"], json!(["checkout"]));
        assert_eq!(subscription(v2, V1).expect("back"), v1());
    }

    #[test]
    fn rules_survive_a_trip_through_v1() {
        let v2 = json!({"apiVersion": V2, "kind": "Subscription", "metadata": {"name": "s"},
            "spec": {"pubsubname": "p", "topic": "t", "routes": {"default": "/d",
                "rules": [{"match": "event.type == 'widget'", "path": "/widgets"}]}}});
        let old = subscription(v2.clone(), V1).expect("to v1");
        assert_eq!(old["spec"]["route"], "/d");
        assert!(old["metadata"]["annotations"][RULES_ANNOTATION].is_string());
        assert_eq!(subscription(old, V2).expect("to v2"), v2);
    }

    #[test]
    fn reviews_answer_every_object_or_fail_clearly() {
        let r = review(
            &json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": "abc", "desiredAPIVersion": V2, "objects": [v1(), v1()]}}),
        )
        .expect("review");
        assert_eq!(r["response"]["uid"], "abc");
        assert_eq!(r["response"]["result"]["status"], "Success");
        assert_eq!(
            r["response"]["convertedObjects"].as_array().map(Vec::len),
            Some(2)
        );
        let bad =
            review(&json!({"request": {"uid": "x", "desiredAPIVersion": "dapr.io/v9", "objects": [v1()]}}))
                .expect("review");
        assert_eq!(bad["response"]["result"]["status"], "Failure");
        assert!(
            bad["response"]["result"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("v9")
        );
        assert!(review(&json!({})).is_err());
    }
}
