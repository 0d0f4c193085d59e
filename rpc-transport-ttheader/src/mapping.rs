//! Mapping between `rpc_core` values (Status, Metadata) and their TTHeader wire forms.

use rpc_core::transport::Finish;
use rpc_core::{Code, Metadata, MetadataValue, Status};

use crate::proto::keys::{kitex_code, str_key};
use crate::proto::{
    grpc_to_kitex_code, kitex_code_to_grpc, ApplicationException, BizStatus, Headers,
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

/// Fails with `INVALID_ARGUMENT` naming the first binary value of `md`: TTHeader string KVs
/// carry text only, and dropping a value silently would lose what the caller meant to send.
pub(crate) fn text_only(md: &Metadata) -> Result<(), rpc_core::Status> {
    match md
        .iter()
        .find(|(_, v)| matches!(v, MetadataValue::Binary(_)))
    {
        None => Ok(()),
        Some((k, _)) => Err(rpc_core::Status::invalid_argument(format!(
            "metadata {k:?} is binary, and TTHeader carries text values only (encode it as text, or use the gRPC transport)"
        ))),
    }
}

/// `finish` with binary metadata (which TTHeader cannot carry) turned into the stream's
/// error: the status becomes that `INVALID_ARGUMENT`, and the header, the trailer and a last
/// message are dropped.
pub(crate) fn text_only_finish(finish: Finish<'_>) -> Finish<'_> {
    let checked = finish
        .header
        .as_ref()
        .map_or(Ok(()), text_only)
        .and_then(|()| text_only(&finish.trailer));
    match checked {
        Ok(()) => finish,
        Err(status) => Finish {
            header: None,
            message: None,
            status,
            trailer: Metadata::new(),
        },
    }
}

/// Text metadata as string KVs (binary values are refused earlier by [`text_only`]).
pub(crate) fn str_kvs(md: &Metadata) -> impl Iterator<Item = (String, String)> + '_ {
    md.iter().filter_map(|(k, v)| match v {
        MetadataValue::Text(s) => Some((k.to_owned(), s.clone())),
        MetadataValue::Binary(_) => None,
    })
}

/// String KVs as metadata, without the framework's own keys. Allocates nothing when no other
/// key is there (empty metadata holds no buffer).
pub(crate) fn metadata_of(headers: &Headers) -> Metadata {
    headers
        .str_kvs
        .iter_except(&[str_key::IDL_SERVICE_NAME, RPC_CODE_KEY])
        .collect()
}
