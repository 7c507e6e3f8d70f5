//! Delivery to a gRPC app: `ListTopicSubscriptions`, `OnTopicEvent` and
//! `OnBulkTopicEvent`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use daprs_proto::runtime::TopicEventResponse;
use serde_json::{Value, json};

use super::{
    harness::{Daprd, Spec, resources, temp_dir},
    pubsub::{IN_MEMORY, post, subscribed},
};

/// A gRPC subscriber: one plain subscription (`plain`) and one bulk
/// (`batch`), and the input bindings it names.
#[derive(Clone, Default)]
pub struct GrpcSubscriber {
    events: Arc<Mutex<Vec<daprs_proto::runtime::TopicEventRequest>>>,
    bulk: Arc<Mutex<Vec<daprs_proto::runtime::TopicEventBulkRequest>>>,
    /// Serve bulk deliveries only under the Alpha1 name, as SDKs built on
    /// Dapr 1.16's protos do.
    alpha_only: bool,
    /// What `ListInputBindings` answers.
    pub input_bindings: Vec<String>,
    /// The binding events received.
    pub binding_events: Arc<Mutex<Vec<daprs_proto::runtime::BindingEventRequest>>>,
}

impl GrpcSubscriber {
    /// An app that takes the events of `names`.
    pub fn with_input_bindings(names: &[&str]) -> Self {
        Self {
            input_bindings: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Serves the app on a fresh loopback port; returns the port.
    pub async fn serve(&self) -> u16 {
        // Port 0: a port found free first could be taken by a parallel test.
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let svc = daprs_proto::runtime::app_callback_server::AppCallbackServer::new(self.clone());
        let alpha =
            daprs_proto::runtime::app_callback_alpha_server::AppCallbackAlphaServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .add_service(alpha)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        port
    }

    fn record_bulk(
        &self,
        req: daprs_proto::runtime::TopicEventBulkRequest,
    ) -> Result<tonic::Response<daprs_proto::runtime::TopicEventBulkResponse>, tonic::Status> {
        let statuses = req
            .entries
            .iter()
            .map(|e| daprs_proto::runtime::TopicEventBulkResponseEntry {
                entry_id: e.entry_id.clone(),
                status: 0,
            })
            .collect();
        self.bulk.lock().expect("lock").push(req);
        Ok(tonic::Response::new(
            daprs_proto::runtime::TopicEventBulkResponse { statuses },
        ))
    }
}

#[tonic::async_trait]
impl daprs_proto::runtime::app_callback_alpha_server::AppCallbackAlpha for GrpcSubscriber {
    async fn on_bulk_topic_event_alpha1(
        &self,
        req: tonic::Request<daprs_proto::runtime::TopicEventBulkRequest>,
    ) -> Result<tonic::Response<daprs_proto::runtime::TopicEventBulkResponse>, tonic::Status> {
        self.record_bulk(req.into_inner())
    }
    async fn on_job_event_alpha1(
        &self,
        _: tonic::Request<daprs_proto::runtime::JobEventRequest>,
    ) -> Result<tonic::Response<daprs_proto::runtime::JobEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no jobs"))
    }
}

#[tonic::async_trait]
impl daprs_proto::runtime::app_callback_server::AppCallback for GrpcSubscriber {
    async fn on_invoke(
        &self,
        _: tonic::Request<daprs_proto::common::InvokeRequest>,
    ) -> Result<tonic::Response<daprs_proto::common::InvokeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no methods"))
    }
    async fn list_topic_subscriptions(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<daprs_proto::runtime::ListTopicSubscriptionsResponse>, tonic::Status> {
        use daprs_proto::runtime::{BulkSubscribeConfig, TopicSubscription};
        let sub = |topic: &str, bulk: bool| TopicSubscription {
            pubsub_name: "pubsub".into(),
            topic: topic.into(),
            bulk_subscribe: bulk.then_some(BulkSubscribeConfig {
                enabled: true,
                max_messages_count: 10,
                max_await_duration_ms: 200,
            }),
            ..Default::default()
        };
        Ok(tonic::Response::new(
            daprs_proto::runtime::ListTopicSubscriptionsResponse {
                subscriptions: vec![sub("plain", false), sub("batch", true)],
            },
        ))
    }
    async fn on_topic_event(
        &self,
        req: tonic::Request<daprs_proto::runtime::TopicEventRequest>,
    ) -> Result<tonic::Response<TopicEventResponse>, tonic::Status> {
        self.events.lock().expect("lock").push(req.into_inner());
        Ok(tonic::Response::new(TopicEventResponse { status: 0 }))
    }
    async fn list_input_bindings(
        &self,
        _: tonic::Request<()>,
    ) -> Result<tonic::Response<daprs_proto::runtime::ListInputBindingsResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            daprs_proto::runtime::ListInputBindingsResponse {
                bindings: self.input_bindings.clone(),
            },
        ))
    }
    async fn on_binding_event(
        &self,
        req: tonic::Request<daprs_proto::runtime::BindingEventRequest>,
    ) -> Result<tonic::Response<daprs_proto::runtime::BindingEventResponse>, tonic::Status> {
        self.binding_events.lock().expect("lock").push(req.into_inner());
        Ok(tonic::Response::new(Default::default()))
    }
    async fn on_bulk_topic_event(
        &self,
        req: tonic::Request<daprs_proto::runtime::TopicEventBulkRequest>,
    ) -> Result<tonic::Response<daprs_proto::runtime::TopicEventBulkResponse>, tonic::Status> {
        if self.alpha_only {
            return Err(tonic::Status::unimplemented("only the Alpha1 name"));
        }
        self.record_bulk(req.into_inner())
    }
    async fn on_job_event(
        &self,
        _: tonic::Request<daprs_proto::runtime::JobEventRequest>,
    ) -> Result<tonic::Response<daprs_proto::runtime::JobEventResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no jobs"))
    }
}

#[tokio::test]
async fn grpc_apps_get_on_topic_event_and_on_bulk_topic_event() {
    grpc_app_deliveries(false).await;
}

#[tokio::test]
async fn older_grpc_apps_get_bulk_deliveries_under_the_alpha1_name() {
    grpc_app_deliveries(true).await;
}

async fn grpc_app_deliveries(alpha_only: bool) {
    let app = GrpcSubscriber {
        alpha_only,
        ..Default::default()
    };
    let port = app.serve().await;
    let name = if alpha_only {
        "ps-grpc-alpha"
    } else {
        "ps-grpc-app"
    };
    let home = temp_dir(name);
    let res = resources(&home, IN_MEMORY);
    let mut spec = Spec::new(name, &home);
    spec.resources = Some(&res);
    spec.app_port = Some(port);
    spec.protocol = "grpc";
    let d = Daprd::start(spec).await;
    subscribed(&d, 2).await;
    let publish = |topic: &'static str, body: &'static str| {
        post(
            &d,
            format!("/v1.0/publish/pubsub/{topic}"),
            vec![("content-type", "application/json")],
            body.to_string(),
        )
    };
    assert_eq!(publish("plain", r#"{"k": 1}"#).await.status, 204);
    for _ in 0..3 {
        assert_eq!(publish("batch", r#"{"b": true}"#).await.status, 204);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let plain = app.events.lock().expect("lock").len();
        let batched: usize = app
            .bulk
            .lock()
            .expect("lock")
            .iter()
            .map(|b| b.entries.len())
            .sum();
        if plain >= 1 && batched >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "plain {plain}, batched {batched}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ev = app.events.lock().expect("lock")[0].clone();
    assert_eq!(
        (ev.topic.as_str(), ev.pubsub_name.as_str(), ev.path.as_str()),
        ("plain", "pubsub", "")
    );
    assert_eq!(ev.data_content_type, "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&ev.data).expect("json"),
        json!({"k": 1})
    );
    let bulk = app.bulk.lock().expect("lock")[0].clone();
    assert_eq!(
        (bulk.r#type.as_str(), bulk.topic.as_str()),
        ("com.dapr.event.sent.bulk", "batch")
    );
    let Some(daprs_proto::runtime::topic_event_bulk_request_entry::Event::CloudEvent(ce)) =
        &bulk.entries[0].event
    else {
        panic!("entries carry CloudEvents")
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&ce.data).expect("json"),
        json!({"b": true})
    );
}
