//! Mapping between `rpc_core` values (Status, Metadata) and their TTHeader wire forms.

use rpc_core::{Code, Metadata, MetadataValue, Status};

use crate::proto::keys::{kitex_code, str_key};
use crate::proto::{
    grpc_to_kitex_code, kitex_code_to_grpc, ApplicationException, BizStatus, Headers, StrKvs,
};

/// String key carrying the exact gRPC code of an error between two of our peers (Kitex maps
/// every handler error to one exception type; this keeps `NOT_FOUND` a `NOT_FOUND`). Kitex peers
/// see it as ordinary trailer metadata.
pub const RPC_CODE_KEY: &str = "rpc-code";

/// A business-status error (Kitex `kerrors.NewBizStatusError`): travels as `biz-status`,
/// `biz-message` and `biz-extra` string keys on a normal reply or trailer, not as an exception.
/// The client sees a `Status` with code `UNKNOWN`, the message, the keys in its metadata and
/// `transport_code() == Some(code)`. The same as [`rpc_core::Status::biz_error`], which every
/// transport carries (this name stays for existing callers).
pub fn biz_status_error(code: i32, message: impl Into<String>, extra: Option<String>) -> Status {
    Status::biz_error(code, message, extra)
}

/// The biz status a `Status` carries, if it was made by [`biz_status_error`] (or received).
pub(crate) fn biz_of(status: &Status) -> Option<BizStatus> {
    let code = status
        .metadata()
        .get_str(str_key::BIZ_STATUS)?
        .parse()
        .ok()?;
    Some(BizStatus {
        code,
        message: status
            .metadata()
            .get_str(str_key::BIZ_MESSAGE)
            .unwrap_or_default()
            .to_owned(),
        extra: status
            .metadata()
            .get_str(str_key::BIZ_EXTRA)
            .map(str::to_owned),
    })
}

/// The status a received business status means.
pub(crate) fn status_from_biz(biz: &BizStatus, trailer: Metadata) -> Status {
    Status::unknown(biz.message.clone())
        .with_metadata(trailer)
        .with_transport_code(biz.code)
}

/// The exception an error status travels as: its gRPC code mapped to the Kitex code, message
/// as is (the exact code rides along in [`RPC_CODE_KEY`]).
pub(crate) fn exception_of(status: &Status) -> ApplicationException {
    let kind = status
        .transport_code()
        .filter(|c| *c != 0)
        .or_else(|| grpc_to_kitex_code(status.code().as_i32() as u8))
        .unwrap_or(kitex_code::APPLICATION_EXCEPTION);
    ApplicationException::new(kind, status.message())
}

/// The status a received exception means. `exact` is the value of [`RPC_CODE_KEY`], if sent.
pub(crate) fn status_from_exception(exc: &ApplicationException, exact: Option<&str>) -> Status {
    let code = exact
        .and_then(|c| c.parse::<i32>().ok())
        .map(Code::from_i32)
        .unwrap_or_else(|| Code::from_i32(i32::from(kitex_code_to_grpc(exc.kind))));
    Status::new(code, exc.message.clone()).with_transport_code(exc.kind)
}

/// Status for a Kitex stream code (Rst, connection loss).
pub(crate) fn status_from_kitex(code: i32, message: impl Into<String>) -> Status {
    Status::new(Code::from_i32(i32::from(kitex_code_to_grpc(code))), message)
        .with_transport_code(code)
}

/// Appends `md` to string KVs: text values as text, binary values as their bytes (Kitex
/// carries binary metainfo this way: its values are Go strings, any bytes, with no prefix or
/// encoding; a value over 64 KiB fails when the packet is encoded, as text does).
pub(crate) fn extend_kvs(kvs: &mut StrKvs, md: &Metadata) {
    for (k, v) in md.iter() {
        match v {
            MetadataValue::Text(s) => kvs.push(k.to_owned(), s.clone()),
            MetadataValue::Binary(b) => kvs.push_bytes(k.to_owned(), b.clone()),
        }
    }
}

/// String KVs as metadata, without the framework's own keys: a value is binary when it is
/// not UTF-8 or its key ends in `-bin` (the gRPC convention, so binary metadata between two of
/// our peers keeps its kind even when its bytes happen to be UTF-8), text otherwise. Allocates
/// nothing when no other key is there (empty metadata holds no buffer).
pub(crate) fn metadata_of(headers: &Headers) -> Metadata {
    let mut md = Metadata::new();
    for (k, v) in headers
        .str_kvs
        .iter_raw_except(&[str_key::IDL_SERVICE_NAME, RPC_CODE_KEY])
    {
        match std::str::from_utf8(v) {
            Ok(text) if !k.ends_with("-bin") => md.append(k, text.to_owned()),
            _ => md.append(k, bytes::Bytes::copy_from_slice(v)),
        }
    }
    md
}
