//! The runtime API's request messages that carry free-form data. Property:
//! what decodes re-encodes to bytes that decode to the same message.
#![no_main]

use daprs_proto::runtime::{
    DeleteStateRequest, ExecuteStateTransactionRequest, GetBulkStateRequest, GetStateRequest,
    InvokeServiceRequest, SaveStateRequest, SetMetadataRequest,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(m) = M::decode(data) {
        let again = M::decode(m.encode_to_vec().as_slice()).expect("re-encoded message decodes");
        assert_eq!(m, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<SaveStateRequest>(data);
    round_trip::<GetStateRequest>(data);
    round_trip::<GetBulkStateRequest>(data);
    round_trip::<DeleteStateRequest>(data);
    round_trip::<ExecuteStateTransactionRequest>(data);
    round_trip::<InvokeServiceRequest>(data);
    round_trip::<SetMetadataRequest>(data);
    if let Ok(req) = InvokeServiceRequest::decode(data)
        && let Some(m) = req.message
    {
        let _ = daprs_sidecar::invoke::clean_method(&m.method);
    }
});
