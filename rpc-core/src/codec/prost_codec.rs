use bytes::{BufMut, Bytes};

use super::Codec;
use crate::status::{Error, Status};

/// `BufMut::remaining_mut` of a buffer that grows on demand (`BytesMut` and `Vec` report
/// `isize::MAX` minus what they hold); no fixed slice is ever this large.
const GROWABLE: usize = (isize::MAX as usize) / 2;

/// Protocol Buffers via `prost`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProstCodec;

impl<T: prost::Message + Default + 'static> Codec<T> for ProstCodec {
    const NAME: &'static str = "protobuf";

    fn encode<B: BufMut + ?Sized>(msg: &T, mut dst: &mut B) -> Result<(), Status> {
        if dst.remaining_mut() >= GROWABLE {
            // A growable buffer (`BytesMut`, `Vec`): `encode`'s room check (which computes
            // the encoded length once more) cannot fail.
            msg.encode_raw(&mut dst);
            return Ok(());
        }
        // A fixed slice that is too small is reported.
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
