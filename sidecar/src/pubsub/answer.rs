//! The app's side of a delivery: the request an event becomes for a gRPC
//! app, and what the app's answer, HTTP or gRPC, means for the message.

use daprs_proto::runtime::{TopicEventRequest, topic_event_response::TopicEventResponseStatus};
use serde_json::{Map, Value};

/// What the app's answer means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Retry,
    Drop,
}

/// Reads an HTTP app's answer to a delivery, as Dapr does.
pub fn http_outcome(status: u16, body: &[u8]) -> Outcome {
    match status {
        200..=299 => {
            let status = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                v.get("status")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_uppercase)
            });
            match status.as_deref() {
                None | Some("SUCCESS") => Outcome::Success,
                Some("DROP") => Outcome::Drop,
                Some(_) => Outcome::Retry,
            }
        }
        404 => Outcome::Drop,
        _ => Outcome::Retry,
    }
}

/// Reads a gRPC app's answer to a delivery.
pub fn grpc_outcome(res: Result<i32, tonic::Code>) -> Outcome {
    match res {
        Ok(s) => match TopicEventResponseStatus::try_from(s) {
            Ok(TopicEventResponseStatus::Success) => Outcome::Success,
            Ok(TopicEventResponseStatus::Drop) => Outcome::Drop,
            _ => Outcome::Retry,
        },
        Err(tonic::Code::Unimplemented) => Outcome::Drop,
        Err(_) => Outcome::Retry,
    }
}

/// The event as the app's gRPC `OnTopicEvent` receives it.
pub fn topic_event_request(ce: &Map<String, Value>, path: &str) -> TopicEventRequest {
    let s = |k: &str| ce.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let content_type = s("datacontenttype");
    let data = if let Some(b64) = ce.get("data_base64").and_then(Value::as_str) {
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap_or_default()
    } else {
        match ce.get("data") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) if !content_type.contains("json") => text.clone().into_bytes(),
            Some(v) => serde_json::to_vec(v).unwrap_or_default(),
        }
    };
    const CORE: &[&str] = &[
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "data",
        "data_base64",
        "topic",
        "pubsubname",
    ];
    let extensions = ce
        .iter()
        .filter(|(k, _)| !CORE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), json_to_prost(v)))
        .collect();
    TopicEventRequest {
        id: s("id"),
        source: s("source"),
        r#type: s("type"),
        spec_version: s("specversion"),
        data_content_type: content_type,
        data: data.into(),
        topic: s("topic"),
        pubsub_name: s("pubsubname"),
        path: path.to_string(),
        extensions: Some(prost_types::Struct { fields: extensions }),
    }
}

fn json_to_prost(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_prost).collect(),
        }),
        Value::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_prost(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_follow_daprs_table() {
        assert_eq!(http_outcome(200, b""), Outcome::Success);
        assert_eq!(http_outcome(204, b"not json"), Outcome::Success);
        assert_eq!(http_outcome(200, br#"{"other": 1}"#), Outcome::Success);
        assert_eq!(http_outcome(200, br#"{"status": "SUCCESS"}"#), Outcome::Success);
        assert_eq!(http_outcome(200, br#"{"status": "retry"}"#), Outcome::Retry);
        assert_eq!(http_outcome(200, br#"{"status": "DROP"}"#), Outcome::Drop);
        assert_eq!(http_outcome(200, br#"{"status": "MAYBE"}"#), Outcome::Retry);
        assert_eq!(http_outcome(404, b""), Outcome::Drop);
        assert_eq!(http_outcome(500, br#"{"status": "SUCCESS"}"#), Outcome::Retry);
        assert_eq!(http_outcome(400, b""), Outcome::Retry);
    }

    #[test]
    fn grpc_answers() {
        assert_eq!(grpc_outcome(Ok(0)), Outcome::Success);
        assert_eq!(grpc_outcome(Ok(1)), Outcome::Retry);
        assert_eq!(grpc_outcome(Ok(2)), Outcome::Drop);
        assert_eq!(grpc_outcome(Ok(9)), Outcome::Retry);
        assert_eq!(grpc_outcome(Err(tonic::Code::Unimplemented)), Outcome::Drop);
        assert_eq!(grpc_outcome(Err(tonic::Code::Internal)), Outcome::Retry);
    }

    #[test]
    fn grpc_events_carry_data_and_extensions() {
        let ce: Map<String, Value> = serde_json::from_str(
            r#"{"id": "1", "source": "s", "type": "t", "specversion": "1.0", "datacontenttype": "application/json",
                "data": {"a": 1}, "topic": "o", "pubsubname": "ps", "traceparent": "tp", "custom": 5}"#,
        )
        .expect("json");
        let r = topic_event_request(&ce, "/orders");
        assert_eq!(&r.data[..], br#"{"a":1}"#);
        assert_eq!(
            (r.topic.as_str(), r.pubsub_name.as_str(), r.path.as_str()),
            ("o", "ps", "/orders")
        );
        let ext = r.extensions.expect("extensions").fields;
        assert!(ext.contains_key("traceparent") && ext.contains_key("custom") && !ext.contains_key("id"));
        let text: Map<String, Value> =
            serde_json::from_str(r#"{"datacontenttype": "text/plain", "data": "hi"}"#).expect("json");
        assert_eq!(&topic_event_request(&text, "").data[..], b"hi");
        let b64: Map<String, Value> = serde_json::from_str(r#"{"data_base64": "AQI="}"#).expect("json");
        assert_eq!(&topic_event_request(&b64, "").data[..], [1, 2]);
    }
}
