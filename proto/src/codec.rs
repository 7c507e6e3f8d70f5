//! The protobuf codec of every generated client and server: tonic's prost
//! codec, except that a message that cannot be decoded is the sender's
//! mistake (`INVALID_ARGUMENT`, naming the message type), not `INTERNAL`.

use tonic::{
    Code, Status,
    codec::{BufferSettings, DecodeBuf},
};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// See the module documentation.
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic::codec::Codec::encoder(&mut self.0)
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(tonic::codec::Codec::decoder(&mut self.0))
    }
}

/// The status of a message that does not decode as a `U`.
pub fn invalid<U>(why: impl std::fmt::Display) -> Status {
    let name = std::any::type_name::<U>();
    let name = name.rsplit("::").next().unwrap_or(name);
    Status::invalid_argument(format!("the message is not a valid {name}: {why}"))
}

/// Decodes `U`, reporting undecodable input as `INVALID_ARGUMENT`.
pub struct Decoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| match s.code() {
            Code::Internal => invalid::<U>(s.message()),
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
