//! What the gRPC API port says about itself: server reflection (v1 and
//! v1alpha) of the services it serves, or of the app's when `dapr-app-id`
//! names one, and health watches that follow the sidecar's status.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Request;

use super::{
    harness::{Daprd, Spec, temp_dir},
    proxy::pair,
};

/// The services a reflection endpoint lists, by v1 or v1alpha.
async fn listed(d: &Daprd, app: Option<&str>, alpha: bool) -> Vec<String> {
    use tonic_reflection::pb::{v1, v1alpha};
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", d.grpc_port))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    fn with_app<T>(app: Option<&str>, mut r: Request<T>) -> Request<T> {
        if let Some(app) = app {
            r.metadata_mut()
                .insert("dapr-app-id", app.parse().expect("app id"));
        }
        r
    }
    // v1 and v1alpha are the same protocol in two packages.
    macro_rules! list_services {
        ($v:ident) => {{
            let mut c = $v::server_reflection_client::ServerReflectionClient::new(channel);
            let req = $v::ServerReflectionRequest {
                host: String::new(),
                message_request: Some($v::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                )),
            };
            let mut replies = c
                .server_reflection_info(with_app(app, Request::new(tokio_stream::iter([req]))))
                .await
                .expect("reflection")
                .into_inner();
            match replies
                .next()
                .await
                .expect("a reply")
                .expect("ok")
                .message_response
            {
                Some($v::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
                    l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
                }
                other => panic!("{other:?}"),
            }
        }};
    }
    let mut names = if alpha {
        list_services!(v1alpha)
    } else {
        list_services!(v1)
    };
    names.sort();
    names
}

#[tokio::test]
async fn reflection_lists_what_the_port_serves_or_what_the_app_serves() {
    let (client_d, _server_d, _seen, app) = pair("px-reflect").await;
    let own = [
        "dapr.proto.runtime.v1.Dapr",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    assert_eq!(listed(&client_d, None, false).await, own);
    assert_eq!(listed(&client_d, None, true).await, own);
    // With dapr-app-id, the app's reflection answers through both sidecars.
    let app_services = listed(&client_d, Some(&app), true).await;
    assert!(
        app_services.contains(&"daprs.test.v1.Echo".to_string()),
        "{app_services:?}"
    );
    assert!(
        !app_services.iter().any(|s| s.starts_with("dapr.proto")),
        "{app_services:?}"
    );
}

#[tokio::test]
async fn health_watchers_see_the_sidecar_go_down() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let home = temp_dir("px-health");
    let d = Daprd::start(Spec::new("px-health", &home)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", d.grpc_port))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut c = HealthClient::new(channel);
    let mut watch = c
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("status").expect("ok");
    assert_eq!(first.status(), ServingStatus::Serving);
    let r = d.send("POST", "/v1.0/shutdown", &[], "").await;
    assert_eq!(r.status, 204);
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a change within 5 s");
    if let Some(Ok(status)) = next {
        assert_eq!(status.status(), ServingStatus::NotServing);
    }
}
