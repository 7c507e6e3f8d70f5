// Each test binary uses a different part of the fake.
#![allow(dead_code)]

//! A small in-memory API server for namespaced core objects (Secrets,
//! ConfigMaps, ...): GET, POST (create, 409 when present), PATCH (JSON merge)
//! and DELETE, answering with the shapes and Status objects the real one uses.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};

/// An open watch: the collection it covers and where its events go.
type Watch = (String, tokio::sync::mpsc::UnboundedSender<Value>);

#[derive(Clone, Default)]
pub struct FakeApi {
    pub objects: Arc<Mutex<BTreeMap<String, Value>>>,
    pub writes: Arc<Mutex<Vec<String>>>,
    watches: Arc<Mutex<Vec<Watch>>>,
}

fn status(code: u16, reason: &str, message: String) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Whether `path` names a collection rather than one object.
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => segs.get(2..),
        Some(&"apis") => segs.get(3..),
        _ => None,
    };
    matches!(rest, Some([_] | ["namespaces", _, _]))
}

/// Whether the object at `key` belongs to the collection at `path`, either
/// namespaced (`.../namespaces/<ns>/<plural>`) or cluster-wide (`.../<plural>`).
fn in_collection(path: &str, key: &str) -> bool {
    if let Some(rest) = key.strip_prefix(&format!("{path}/")) {
        return !rest.contains('/');
    }
    let Some((base, plural)) = path.rsplit_once('/') else {
        return false;
    };
    key.strip_prefix(&format!("{base}/namespaces/"))
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(_, rest)| rest.split_once('/'))
        .is_some_and(|(p, name)| p == plural && !name.contains('/'))
}

impl FakeApi {
    /// Stores an object, telling open watches of its collection.
    pub fn put(&self, path: &str, object: Value) {
        let existed = match self.objects.lock() {
            Ok(mut o) => o.insert(path.to_string(), object.clone()).is_some(),
            Err(_) => return,
        };
        self.notify(path, if existed { "MODIFIED" } else { "ADDED" }, object);
    }

    /// Deletes an object, telling open watches of its collection.
    pub fn remove(&self, path: &str) {
        let gone = self.objects.lock().ok().and_then(|mut o| o.remove(path));
        if let Some(object) = gone {
            self.notify(path, "DELETED", object);
        }
    }

    fn notify(&self, path: &str, kind: &str, object: Value) {
        if let Ok(mut w) = self.watches.lock() {
            let event = json!({"type": kind, "object": object});
            w.retain(|(collection, tx)| !in_collection(collection, path) || tx.send(event.clone()).is_ok());
        }
    }

    /// Makes `token` pass TokenReview as the service account `namespace/sa`
    /// of the pod `pod` (a bound, projected token).
    pub fn grant_token(&self, token: &str, namespace: &str, sa: &str, pod: &str) {
        self.put(
            &format!("tokens/{token}"),
            json!({"username": format!("system:serviceaccount:{namespace}:{sa}"), "uid": "u",
                "groups": ["system:serviceaccounts"],
                "extra": {"authentication.kubernetes.io/pod-name": [pod], "authentication.kubernetes.io/pod-uid": ["x"]}}),
        );
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().ok().and_then(|o| o.get(path).cloned())
    }

    fn handle(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let mut objects = match self.objects.lock() {
            Ok(o) => o,
            Err(_) => return status(500, "InternalError", "lock".into()),
        };
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if (method, path) == ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") {
            let token = body["spec"]["token"].as_str().unwrap_or_default();
            let review = match objects.get(&format!("tokens/{token}")) {
                Some(user) => {
                    json!({"authenticated": true, "user": user, "audiences": body["spec"]["audiences"]})
                }
                None => json!({"authenticated": false, "error": "invalid bearer token"}),
            };
            return (
                201,
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": body["spec"], "status": review}),
            );
        }
        match method {
            "GET" => match objects.get(path) {
                Some(v) => (200, v.clone()),
                None => {
                    let items: Vec<Value> = objects
                        .iter()
                        .filter(|(k, _)| in_collection(path, k))
                        .map(|(_, v)| v.clone())
                        .collect();
                    if !is_collection(path) {
                        return status(404, "NotFound", format!("{path} not found"));
                    }
                    (
                        200,
                        json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
                    )
                }
            },
            "POST" => {
                let mut body = body;
                if body["metadata"]["name"].as_str().unwrap_or_default().is_empty()
                    && let Some(prefix) = body["metadata"]["generateName"].as_str()
                {
                    let n = objects.len();
                    body["metadata"]["name"] = json!(format!("{prefix}{n:05}"));
                }
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let key = format!("{path}/{name}");
                if objects.contains_key(&key) {
                    return status(409, "AlreadyExists", format!("{name} already exists"));
                }
                if let Ok(mut w) = self.writes.lock() {
                    w.push(format!("POST {key}"));
                }
                body["metadata"]["resourceVersion"] = json!("1");
                objects.insert(key, body.clone());
                (201, body)
            }
            // Server-side apply creates what is missing.
            "PATCH"
                if !objects.contains_key(path)
                    && body.get("kind").is_some()
                    && !path.ends_with("/status") =>
            {
                if let Ok(mut w) = self.writes.lock() {
                    w.push(format!("APPLY {path}"));
                }
                objects.insert(path.to_string(), body.clone());
                (201, body)
            }
            "PATCH" if path.ends_with("/status") => {
                let parent = path.trim_end_matches("/status");
                match objects.get_mut(parent) {
                    Some(v) => {
                        merge(v, &body);
                        if let Ok(mut w) = self.writes.lock() {
                            w.push(format!("STATUS {parent}"));
                        }
                        (200, v.clone())
                    }
                    None => status(404, "NotFound", format!("{parent} not found")),
                }
            }
            "PATCH" => match objects.get_mut(path) {
                Some(v) if body.is_array() => {
                    let ops: json_patch::Patch = match serde_json::from_value(body.clone()) {
                        Ok(p) => p,
                        Err(e) => return status(400, "BadRequest", e.to_string()),
                    };
                    if let Err(e) = json_patch::patch(v, &ops) {
                        return status(422, "Invalid", e.to_string());
                    }
                    if let Ok(mut w) = self.writes.lock() {
                        w.push(format!("JSONPATCH {path}"));
                    }
                    (200, v.clone())
                }
                Some(v) => {
                    merge(v, &body);
                    if let Ok(mut w) = self.writes.lock() {
                        w.push(format!("PATCH {path}"));
                    }
                    (200, v.clone())
                }
                None => status(404, "NotFound", format!("{path} not found")),
            },
            // Replace, with optimistic concurrency on resourceVersion.
            "PUT" => {
                let Some(stored) = objects.get(path) else {
                    return status(404, "NotFound", format!("{path} not found"));
                };
                let have = stored["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("0")
                    .to_string();
                if body["metadata"]["resourceVersion"].as_str() != Some(have.as_str()) {
                    return status(409, "Conflict", format!("{path}: the object has been modified"));
                }
                let next = have.parse::<u64>().unwrap_or(0) + 1;
                let mut body = body;
                body["metadata"]["resourceVersion"] = json!(next.to_string());
                if let Ok(mut w) = self.writes.lock() {
                    w.push(format!("PUT {path}"));
                }
                objects.insert(path.to_string(), body.clone());
                (200, body)
            }
            "DELETE" => match objects.remove(path) {
                Some(v) => (200, v),
                None => status(404, "NotFound", format!("{path} not found")),
            },
            _ => status(405, "MethodNotAllowed", method.into()),
        }
    }

    /// A kube client talking to this fake. Watches stay open and carry
    /// what [`FakeApi::put`] and [`FakeApi::remove`] change.
    pub fn client(&self) -> kube::Client {
        use http_body_util::{BodyExt, combinators::BoxBody};
        type Out = BoxBody<bytes::Bytes, std::io::Error>;
        let me = self.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let me = me.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let watching = req
                    .uri()
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
                if method == "GET" && watching {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
                    if let Ok(mut w) = me.watches.lock() {
                        w.push((path, tx));
                    }
                    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
                        let event = rx.recv().await?;
                        let line = bytes::Bytes::from(format!("{event}\n"));
                        Some((Ok::<_, std::io::Error>(hyper::body::Frame::data(line)), rx))
                    });
                    let body: Out = http_body_util::StreamBody::new(lines).boxed();
                    return http::Response::builder()
                        .status(200)
                        .header("content-type", "application/json")
                        .body(body);
                }
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let (code, answer) = me.handle(&method, &path, &body);
                let body: Out = http_body_util::Full::new(bytes::Bytes::from(answer.to_string()))
                    .map_err(|never| match never {})
                    .boxed();
                http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(body)
            }
        });
        kube::Client::new(svc, "default")
    }
}
