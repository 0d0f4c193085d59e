//! Error-code mapping between Kitex (`ApplicationException` types and 120xx stream codes) and
//! gRPC canonical codes, plus business status (`biz-*` string keys).
//!
//! gRPC codes are plain integers (0..=16) so this module does not depend on `rpc-core`; they are
//! numerically identical to `rpc_core::Code`. The driver should keep the Kitex number visible
//! to users next to the mapped code: the mapping is lossy in both directions.
//!
//! | Kitex code | meaning | gRPC |
//! |---|---|---|
//! | 0 | TApplicationException UNKNOWN | 2 UNKNOWN |
//! | 1 | unknown method | 12 UNIMPLEMENTED |
//! | 2, 3, 4, 5 | invalid message type, wrong method name, bad seqid, missing result | 13 INTERNAL |
//! | 6 | internal error (Kitex handler errors: `"biz error: ..."`) | 13 INTERNAL |
//! | 7 | protocol error | 13 INTERNAL |
//! | 8, 9, 10 | invalid transform, invalid protocol, unsupported client type | 12 UNIMPLEMENTED |
//! | 20, 21 | unknown service, no service name | 12 UNIMPLEMENTED |
//! | 13 | empty Rst payload ("rst") | 1 CANCELLED |
//! | 12001 | application exception | 2 UNKNOWN |
//! | 12002, 12004 | unexpected header, illegal frame | 13 INTERNAL |
//! | 12003 | illegal biz error (malformed `biz-*` trailer) | 13 INTERNAL |
//! | 12005 | illegal operation | 9 FAILED_PRECONDITION |
//! | 12006, 12013 | transport closing, connection closed | 14 UNAVAILABLE |
//! | 12007..=12012 | user / cause / downstream / upstream / internal / handler-return cancel | 1 CANCELLED |
//! | 12014, 12015 | recv timeout, stream timeout | 4 DEADLINE_EXCEEDED |
//! | anything else | | 2 UNKNOWN |

use super::error::InvalidBizStatus;
use super::header::Headers;
use super::keys::{kitex_code as kc, str_key};
use super::thrift_msg::ApplicationException as AppEx;

/// gRPC canonical status codes as plain integers (same numbers as `rpc_core::Code`).
pub mod grpc_code {
    /// Not an error.
    pub const OK: u8 = 0;
    /// Cancelled by the caller.
    pub const CANCELLED: u8 = 1;
    /// Unknown error.
    pub const UNKNOWN: u8 = 2;
    /// Invalid argument.
    pub const INVALID_ARGUMENT: u8 = 3;
    /// Deadline exceeded.
    pub const DEADLINE_EXCEEDED: u8 = 4;
    /// Not found.
    pub const NOT_FOUND: u8 = 5;
    /// Already exists.
    pub const ALREADY_EXISTS: u8 = 6;
    /// Permission denied.
    pub const PERMISSION_DENIED: u8 = 7;
    /// Resource exhausted.
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    /// Failed precondition.
    pub const FAILED_PRECONDITION: u8 = 9;
    /// Aborted.
    pub const ABORTED: u8 = 10;
    /// Out of range.
    pub const OUT_OF_RANGE: u8 = 11;
    /// Unimplemented.
    pub const UNIMPLEMENTED: u8 = 12;
    /// Internal error.
    pub const INTERNAL: u8 = 13;
    /// Unavailable.
    pub const UNAVAILABLE: u8 = 14;
    /// Data loss.
    pub const DATA_LOSS: u8 = 15;
    /// Unauthenticated.
    pub const UNAUTHENTICATED: u8 = 16;
}

use grpc_code as g;

/// Maps a Kitex code (an `ApplicationException` type or a 120xx stream code) to a gRPC code;
/// see the module table.
pub fn kitex_code_to_grpc(code: i32) -> u8 {
    match code {
        AppEx::UNKNOWN => g::UNKNOWN,
        AppEx::UNKNOWN_METHOD => g::UNIMPLEMENTED,
        AppEx::INVALID_MESSAGE_TYPE
        | AppEx::WRONG_METHOD_NAME
        | AppEx::BAD_SEQUENCE_ID
        | AppEx::MISSING_RESULT
        | AppEx::INTERNAL_ERROR
        | AppEx::PROTOCOL_ERROR => g::INTERNAL,
        AppEx::INVALID_TRANSFORM | AppEx::INVALID_PROTOCOL | AppEx::UNSUPPORTED_CLIENT_TYPE => {
            g::UNIMPLEMENTED
        }
        AppEx::UNKNOWN_SERVICE | AppEx::NO_SERVICE_NAME => g::UNIMPLEMENTED,
        kc::EMPTY_RST => g::CANCELLED,
        kc::APPLICATION_EXCEPTION => g::UNKNOWN,
        kc::UNEXPECTED_HEADER | kc::ILLEGAL_BIZ_ERROR | kc::ILLEGAL_FRAME => g::INTERNAL,
        kc::ILLEGAL_OPERATION => g::FAILED_PRECONDITION,
        kc::TRANSPORT_CLOSING | kc::CONNECTION_CLOSED => g::UNAVAILABLE,
        kc::USER_CANCEL..=kc::CANCELED_BY_HANDLER_RETURN => g::CANCELLED,
        kc::RECV_TIMEOUT | kc::STREAM_TIMEOUT => g::DEADLINE_EXCEEDED,
        _ => g::UNKNOWN,
    }
}

/// Picks the Kitex code to put on the wire for a gRPC code; `None` for OK (nothing to send).
///
/// Codes with a Kitex counterpart map to it (CANCELLED → 12007, DEADLINE_EXCEEDED → 12015,
/// FAILED_PRECONDITION → 12005, UNIMPLEMENTED → 1 unknown method, INTERNAL → 6, UNAVAILABLE →
/// 12006); the rest, and values above 16, become 12001 application exception, so
/// `kitex_code_to_grpc(grpc_to_kitex_code(c))` is `c` for those six codes and UNKNOWN.
pub fn grpc_to_kitex_code(code: u8) -> Option<i32> {
    Some(match code {
        g::OK => return None,
        g::CANCELLED => kc::USER_CANCEL,
        g::DEADLINE_EXCEEDED => kc::STREAM_TIMEOUT,
        g::FAILED_PRECONDITION => kc::ILLEGAL_OPERATION,
        g::UNIMPLEMENTED => AppEx::UNKNOWN_METHOD,
        g::INTERNAL => AppEx::INTERNAL_ERROR,
        g::UNAVAILABLE => kc::TRANSPORT_CLOSING,
        _ => kc::APPLICATION_EXCEPTION,
    })
}

/// A business status error: string keys `biz-status` (decimal i32), `biz-message`, `biz-extra`
/// (a JSON object, kept as text) on a normal unary REPLY or a streaming Trailer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BizStatus {
    /// `biz-status`.
    pub code: i32,
    /// `biz-message`; empty when absent.
    pub message: String,
    /// `biz-extra`, JSON text.
    pub extra: Option<String>,
}

impl BizStatus {
    /// Reads the `biz-*` keys; `Ok(None)` without `biz-status`. A non-decimal `biz-status` is
    /// an error (Kitex: 12003 illegal biz error).
    pub fn from_headers(headers: &Headers) -> Result<Option<Self>, InvalidBizStatus> {
        let Some(code) = headers.get_str(str_key::BIZ_STATUS) else {
            return Ok(None);
        };
        let code = code.parse().map_err(|_| InvalidBizStatus {
            value: code.to_owned(),
        })?;
        Ok(Some(BizStatus {
            code,
            message: headers
                .get_str(str_key::BIZ_MESSAGE)
                .unwrap_or_default()
                .to_owned(),
            extra: headers.get_str(str_key::BIZ_EXTRA).map(str::to_owned),
        }))
    }

    /// Appends the `biz-*` keys (`biz-message` only when non-empty).
    pub fn push_to(&self, headers: &mut Headers) {
        headers.push_str(str_key::BIZ_STATUS, self.code.to_string());
        if !self.message.is_empty() {
            headers.push_str(str_key::BIZ_MESSAGE, self.message.clone());
        }
        if let Some(extra) = &self.extra {
            headers.push_str(str_key::BIZ_EXTRA, extra.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kitex_to_grpc_table() {
        let cases = [
            (0, g::UNKNOWN),
            (1, g::UNIMPLEMENTED),
            (2, g::INTERNAL),
            (3, g::INTERNAL),
            (4, g::INTERNAL),
            (5, g::INTERNAL),
            (6, g::INTERNAL),
            (7, g::INTERNAL),
            (8, g::UNIMPLEMENTED),
            (9, g::UNIMPLEMENTED),
            (10, g::UNIMPLEMENTED),
            (13, g::CANCELLED),
            (20, g::UNIMPLEMENTED),
            (21, g::UNIMPLEMENTED),
            (12001, g::UNKNOWN),
            (12002, g::INTERNAL),
            (12003, g::INTERNAL),
            (12004, g::INTERNAL),
            (12005, g::FAILED_PRECONDITION),
            (12006, g::UNAVAILABLE),
            (12007, g::CANCELLED),
            (12008, g::CANCELLED),
            (12009, g::CANCELLED),
            (12010, g::CANCELLED),
            (12011, g::CANCELLED),
            (12012, g::CANCELLED),
            (12013, g::UNAVAILABLE),
            (12014, g::DEADLINE_EXCEEDED),
            (12015, g::DEADLINE_EXCEEDED),
            (11, g::UNKNOWN),
            (12016, g::UNKNOWN),
            (-1, g::UNKNOWN),
        ];
        for (kitex, grpc) in cases {
            assert_eq!(kitex_code_to_grpc(kitex), grpc, "kitex code {kitex}");
        }
    }

    #[test]
    fn grpc_to_kitex_round_trips_where_a_counterpart_exists() {
        assert_eq!(grpc_to_kitex_code(g::OK), None);
        for c in 1..=16u8 {
            let k = grpc_to_kitex_code(c).unwrap();
            let back = kitex_code_to_grpc(k);
            match c {
                g::CANCELLED
                | g::UNKNOWN
                | g::DEADLINE_EXCEEDED
                | g::FAILED_PRECONDITION
                | g::UNIMPLEMENTED
                | g::INTERNAL
                | g::UNAVAILABLE => assert_eq!(back, c, "grpc {c}"),
                _ => assert_eq!(k, kc::APPLICATION_EXCEPTION, "grpc {c}"),
            }
        }
        assert_eq!(grpc_to_kitex_code(200), Some(kc::APPLICATION_EXCEPTION));
    }

    #[test]
    fn biz_status_round_trip_and_errors() {
        let mut h = Headers::new();
        assert_eq!(BizStatus::from_headers(&h), Ok(None));
        let b = BizStatus {
            code: 10001,
            message: "insufficient balance".into(),
            extra: Some(r#"{"k":"v"}"#.into()),
        };
        b.push_to(&mut h);
        assert_eq!(BizStatus::from_headers(&h), Ok(Some(b)));
        h.push_str("biz-status", "x1");
        assert_eq!(
            BizStatus::from_headers(&h),
            Err(InvalidBizStatus { value: "x1".into() })
        );
    }
}
