use bytes::{BufMut, Bytes};

use super::Codec;
use crate::status::{Error, Status};

/// Protocol Buffers via `prost`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProstCodec;

impl<T: prost::Message + Default + 'static> Codec<T> for ProstCodec {
    const NAME: &'static str = "protobuf";

    fn encode<B: BufMut + ?Sized>(msg: &T, mut dst: &mut B) -> Result<(), Status> {
        // `BufMut` grows `BytesMut` on demand; a fixed slice that is too small is reported.
        msg.encode(&mut dst).map_err(|e| {
            Error::Encode {
                codec: "protobuf",
                reason: e.to_string(),
            }
            .into()
        })
    }

    fn decode(src: Bytes) -> Result<T, Status> {
        T::decode(src).map_err(|e| {
            Error::Decode {
                codec: "protobuf",
                reason: e.to_string(),
            }
            .into()
        })
    }

    fn encoded_len(msg: &T) -> Option<usize> {
        Some(msg.encoded_len())
    }
}
