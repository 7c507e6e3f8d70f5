//! The RPCs of building blocks this sidecar does not have. Each answers
//! UNIMPLEMENTED with a message naming the block, so a client learns at once
//! what is missing instead of reading a silent or misleading answer.

use tonic::Status;

/// Dapr's name of the RPC a generated method serves (`try_lock_alpha1` →
/// `TryLockAlpha1`).
pub fn rpc_name(method: &str) -> String {
    method
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The answer of an RPC of a block this sidecar does not have.
pub fn status(block: &str, method: &str) -> Status {
    Status::unimplemented(format!(
        "{}: the {block} API is not available in this sidecar",
        rpc_name(method)
    ))
}

/// Writes the trait methods for the RPCs of one missing block, in the form
/// `#[tonic::async_trait]` gives the trait (it cannot see methods a macro
/// writes inside the impl).
macro_rules! unbuilt {
    ($block:literal: $($method:ident($req:ty) -> $res:ty;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: tonic::Request<$req>,
            ) -> std::pin::Pin<Box<dyn std::future::Future<
                Output = Result<tonic::Response<$res>, tonic::Status>,
            > + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(std::future::ready(Err($crate::grpc_api::unbuilt::status(
                    $block,
                    stringify!($method),
                ))))
            }
        )*
    };
}

/// Every RPC of `Dapr` whose building block this sidecar does not have;
/// expanded inside the `impl`, where `R` is `daprs_proto::runtime`.
macro_rules! rpcs {
    () => {
        type SubscribeActorEventsAlpha1Stream = unbuilt::NoStream<R::SubscribeActorEventsResponseAlpha1>;
        type EncryptAlpha1Stream = unbuilt::NoStream<R::EncryptResponse>;
        type DecryptAlpha1Stream = unbuilt::NoStream<R::DecryptResponse>;
        type GetBinaryFileAlpha1Stream = unbuilt::NoStream<R::GetBinaryFileResponseAlpha1>;

        unbuilt::unbuilt! {
            "actors":
            register_actor_timer(R::RegisterActorTimerRequest) -> ();
            unregister_actor_timer(R::UnregisterActorTimerRequest) -> ();
            register_actor_reminder(R::RegisterActorReminderRequest) -> ();
            unregister_actor_reminder(R::UnregisterActorReminderRequest) -> ();
            unregister_actor_reminders_by_type(R::UnregisterActorRemindersByTypeRequest) -> R::UnregisterActorRemindersByTypeResponse;
            list_actor_reminders(R::ListActorRemindersRequest) -> R::ListActorRemindersResponse;
            list_actor_timers(R::ListActorTimersRequest) -> R::ListActorTimersResponse;
            get_actor_state(R::GetActorStateRequest) -> R::GetActorStateResponse;
            get_actor_reminder(R::GetActorReminderRequest) -> R::GetActorReminderResponse;
            get_actor_timer(R::GetActorTimerRequest) -> R::GetActorTimerResponse;
            execute_actor_state_transaction(R::ExecuteActorStateTransactionRequest) -> ();
            invoke_actor(R::InvokeActorRequest) -> R::InvokeActorResponse;
            subscribe_actor_events_alpha1(tonic::Streaming<R::SubscribeActorEventsRequestAlpha1>) -> Self::SubscribeActorEventsAlpha1Stream;
        }
        unbuilt::unbuilt! {
            "cryptography":
            encrypt_alpha1(tonic::Streaming<R::EncryptRequest>) -> Self::EncryptAlpha1Stream;
            decrypt_alpha1(tonic::Streaming<R::DecryptRequest>) -> Self::DecryptAlpha1Stream;
            subtle_get_key_alpha1(R::SubtleGetKeyRequest) -> R::SubtleGetKeyResponse;
            subtle_encrypt_alpha1(R::SubtleEncryptRequest) -> R::SubtleEncryptResponse;
            subtle_decrypt_alpha1(R::SubtleDecryptRequest) -> R::SubtleDecryptResponse;
            subtle_wrap_key_alpha1(R::SubtleWrapKeyRequest) -> R::SubtleWrapKeyResponse;
            subtle_unwrap_key_alpha1(R::SubtleUnwrapKeyRequest) -> R::SubtleUnwrapKeyResponse;
            subtle_sign_alpha1(R::SubtleSignRequest) -> R::SubtleSignResponse;
            subtle_verify_alpha1(R::SubtleVerifyRequest) -> R::SubtleVerifyResponse;
        }
        unbuilt::unbuilt! {
            "workflows":
            start_workflow_alpha1(R::StartWorkflowRequest) -> R::StartWorkflowResponse;
            get_workflow_alpha1(R::GetWorkflowRequest) -> R::GetWorkflowResponse;
            purge_workflow_alpha1(R::PurgeWorkflowRequest) -> ();
            terminate_workflow_alpha1(R::TerminateWorkflowRequest) -> ();
            pause_workflow_alpha1(R::PauseWorkflowRequest) -> ();
            resume_workflow_alpha1(R::ResumeWorkflowRequest) -> ();
            raise_event_workflow_alpha1(R::RaiseEventWorkflowRequest) -> ();
            start_workflow_beta1(R::StartWorkflowRequest) -> R::StartWorkflowResponse;
            get_workflow_beta1(R::GetWorkflowRequest) -> R::GetWorkflowResponse;
            purge_workflow_beta1(R::PurgeWorkflowRequest) -> ();
            terminate_workflow_beta1(R::TerminateWorkflowRequest) -> ();
            pause_workflow_beta1(R::PauseWorkflowRequest) -> ();
            resume_workflow_beta1(R::ResumeWorkflowRequest) -> ();
            raise_event_workflow_beta1(R::RaiseEventWorkflowRequest) -> ();
        }
        unbuilt::unbuilt! {
            "jobs":
            schedule_job_alpha1(R::ScheduleJobRequest) -> R::ScheduleJobResponse;
            schedule_job(R::ScheduleJobRequest) -> R::ScheduleJobResponse;
            get_job_alpha1(R::GetJobRequest) -> R::GetJobResponse;
            get_job(R::GetJobRequest) -> R::GetJobResponse;
            delete_job_alpha1(R::DeleteJobRequest) -> R::DeleteJobResponse;
            delete_job(R::DeleteJobRequest) -> R::DeleteJobResponse;
            delete_jobs_by_prefix_alpha1(R::DeleteJobsByPrefixRequestAlpha1) -> R::DeleteJobsByPrefixResponseAlpha1;
            delete_jobs_by_prefix(R::DeleteJobsByPrefixRequest) -> R::DeleteJobsByPrefixResponse;
            list_jobs_alpha1(R::ListJobsRequestAlpha1) -> R::ListJobsResponseAlpha1;
            list_jobs(R::ListJobsRequest) -> R::ListJobsResponse;
        }
        unbuilt::unbuilt! {
            "conversation":
            converse_alpha1(R::ConversationRequest) -> R::ConversationResponse;
            converse_alpha2(R::ConversationRequestAlpha2) -> R::ConversationResponseAlpha2;
        }
        unbuilt::unbuilt! {
            "search":
            create_index_alpha1(R::CreateIndexRequestAlpha1) -> ();
            get_index_alpha1(R::GetIndexRequestAlpha1) -> R::GetIndexResponseAlpha1;
            list_indexes_alpha1(R::ListIndexesRequestAlpha1) -> R::ListIndexesResponseAlpha1;
            delete_index_alpha1(R::DeleteIndexRequestAlpha1) -> ();
            index_documents_alpha1(R::IndexDocumentsRequestAlpha1) -> R::IndexDocumentsResponseAlpha1;
            get_documents_alpha1(R::GetDocumentsRequestAlpha1) -> R::GetDocumentsResponseAlpha1;
            delete_documents_alpha1(R::DeleteDocumentsRequestAlpha1) -> R::DeleteDocumentsResponseAlpha1;
            search_alpha1(R::SearchRequestAlpha1) -> R::SearchResponseAlpha1;
        }
        unbuilt::unbuilt! {
            "vector store":
            create_collection_alpha1(R::CreateCollectionRequestAlpha1) -> ();
            get_collection_alpha1(R::GetCollectionRequestAlpha1) -> R::GetCollectionResponseAlpha1;
            list_collections_alpha1(R::ListCollectionsRequestAlpha1) -> R::ListCollectionsResponseAlpha1;
            delete_collection_alpha1(R::DeleteCollectionRequestAlpha1) -> ();
            upsert_vectors_alpha1(R::UpsertVectorsRequestAlpha1) -> R::UpsertVectorsResponseAlpha1;
            delete_vectors_alpha1(R::DeleteVectorsRequestAlpha1) -> R::DeleteVectorsResponseAlpha1;
            get_vectors_alpha1(R::GetVectorsRequestAlpha1) -> R::GetVectorsResponseAlpha1;
            query_vectors_alpha1(R::QueryVectorsRequestAlpha1) -> R::QueryVectorsResponseAlpha1;
            batch_query_vectors_alpha1(R::BatchQueryVectorsRequestAlpha1) -> R::BatchQueryVectorsResponseAlpha1;
        }
        unbuilt::unbuilt! {
            "binary file store":
            set_binary_file_alpha1(tonic::Streaming<R::SetBinaryFileRequestAlpha1>) -> R::SetBinaryFileResponseAlpha1;
            get_binary_file_alpha1(R::GetBinaryFileRequestAlpha1) -> Self::GetBinaryFileAlpha1Stream;
            delete_binary_file_alpha1(R::DeleteBinaryFileRequestAlpha1) -> R::DeleteBinaryFileResponseAlpha1;
        }
    };
}

pub(crate) use {rpcs, unbuilt};

/// A response stream that never carries a message.
pub type NoStream<T> = futures_util::stream::Empty<Result<T, Status>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_and_messages() {
        assert_eq!(rpc_name("try_lock_alpha1"), "TryLockAlpha1");
        assert_eq!(rpc_name("register_actor_timer"), "RegisterActorTimer");
        let s = status("actors", "invoke_actor");
        assert_eq!(s.code(), tonic::Code::Unimplemented);
        assert_eq!(
            s.message(),
            "InvokeActor: the actors API is not available in this sidecar"
        );
    }
}
