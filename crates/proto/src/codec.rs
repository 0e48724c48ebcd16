//! The protobuf codec every generated client and server uses.
//!
//! It behaves like tonic-prost's codec except for one thing that clients rely on: a request
//! body that is not valid protobuf for the method's message is the caller's fault, so it is
//! answered with `INVALID_ARGUMENT` (naming what failed to decode) rather than `INTERNAL`.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A prost codec whose decode errors are `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = WireEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

/// Encodes prost messages.
#[derive(Debug)]
pub struct WireEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for WireEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(format!("failed to encode response: {e}")))
    }
}

/// Decodes prost messages; malformed input is `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct WireDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| {
            Status::invalid_argument(format!(
                "malformed {} message: {e}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("protobuf")
            ))
        })
    }
}
