//! The whole of Dapr's runtime API is declared: RPCs and HTTP routes of
//! building blocks this sidecar does not have answer UNIMPLEMENTED / 501
//! naming the block, and the sidecar keeps serving.

use daprs_proto::runtime::{
    ConversationRequestAlpha2, GetJobRequest, InvokeActorRequest, StartWorkflowRequest, SubtleGetKeyRequest,
};
use tonic::Code;

use super::harness::{Daprd, Spec, temp_dir};

#[tokio::test]
async fn missing_building_blocks_answer_unimplemented_naming_the_block() {
    let home = temp_dir("runtime-api");
    let d = Daprd::start(Spec::new("api", &home)).await;
    let mut c = d.grpc().await;

    let s = c
        .invoke_actor(InvokeActorRequest::default())
        .await
        .expect_err("unimplemented");
    assert_eq!(s.code(), Code::Unimplemented);
    assert_eq!(
        s.message(),
        "InvokeActor: the actors API is not available in this sidecar"
    );
    let s = c
        .get_job(GetJobRequest::default())
        .await
        .expect_err("unimplemented");
    assert_eq!(
        (s.code(), s.message().contains("jobs API")),
        (Code::Unimplemented, true)
    );
    let s = c
        .start_workflow_beta1(StartWorkflowRequest::default())
        .await
        .expect_err("unimplemented");
    assert!(s.message().contains("workflows API"), "{s:?}");
    let s = c
        .subtle_get_key_alpha1(SubtleGetKeyRequest::default())
        .await
        .expect_err("unimplemented");
    assert!(s.message().contains("cryptography API"), "{s:?}");
    let s = c
        .converse_alpha2(ConversationRequestAlpha2::default())
        .await
        .expect_err("unimplemented");
    assert!(s.message().contains("conversation API"), "{s:?}");

    for (method, path, block) in [
        ("PUT", "/v1.0/actors/cart/1/method/add", "actors"),
        ("POST", "/v1.0-alpha1/jobs/nightly", "jobs"),
        ("GET", "/v1.0-beta1/workflows/dapr/abc", "workflows"),
        ("PUT", "/v1.0-alpha1/crypto/vault/encrypt", "cryptography"),
        ("POST", "/v1.0-alpha2/conversation/llm/converse", "conversation"),
    ] {
        let r = d.send(method, path, &[], "{}").await;
        assert_eq!(r.status, 501, "{path}");
        assert_eq!(r.error_code(), "ERR_API_UNIMPLEMENTED", "{path}");
        assert!(
            r.json()["message"].as_str().unwrap_or_default().contains(block),
            "{path}"
        );
    }
    // Still serving.
    assert_eq!(d.get("/v1.0/healthz/outbound").await.map(|r| r.status), Ok(204));
}
