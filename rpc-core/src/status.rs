//! [`Status`] (the wire-level outcome of a call) and [`Error`] (typed library errors).
//!
//! A `Status` is what crosses the wire: a gRPC canonical [`Code`], a message, optional details
//! bytes and metadata. Every transport maps it to its own form (gRPC `grpc-status` trailers,
//! ttstream trailer exceptions and `biz-status` keys, shm close frames). Library failures that
//! happen locally (I/O, protocol violations, misuse) are [`Error`]s; they convert into a `Status`
//! with a fitting code and stay reachable through [`Status::library_error`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::metadata::Metadata;

/// gRPC canonical status codes (`google.rpc.Code`), shared by every transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Code {
    /// Not an error; returned on success.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity that a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller does not have permission to execute the operation.
    PermissionDenied = 7,
    /// Some resource has been exhausted (quota, memory, message size).
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented or not supported.
    Unimplemented = 12,
    /// Internal error: an invariant expected by the underlying system was broken.
    Internal = 13,
    /// The service is currently unavailable (connection lost, shutting down).
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request does not have valid authentication credentials.
    Unauthenticated = 16,
    /// A stream's `recv` waited longer than its recv timeout
    /// ([`TimeoutConfig`](crate::cancel::TimeoutConfig)). Not a `google.rpc.Code`: Kitex's
    /// extension (`codes.RecvDeadlineExceeded = 17` of its gRPC transport, the status its
    /// recv timeout returns; ttstream carries it as exception type 12014).
    RecvDeadlineExceeded = 17,
}

impl Code {
    /// Maps a wire integer to a code; values outside 0..=17 become [`Code::Unknown`]
    /// (gRPC spec: unknown status codes are treated as UNKNOWN; 17 is Kitex's
    /// [`Code::RecvDeadlineExceeded`]).
    pub fn from_i32(v: i32) -> Code {
        match v {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            17 => Code::RecvDeadlineExceeded,
            _ => Code::Unknown,
        }
    }

    /// The wire integer of this code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical upper-case name (`"DEADLINE_EXCEEDED"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::RecvDeadlineExceeded => "RECV_DEADLINE_EXCEEDED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a call or stream as it travels on the wire.
///
/// One pointer wide, so that `Result<T, Status>` stays small on the happy path. A plain OK
/// status (code OK, no message, details, metadata, transport code or source) is the null
/// pointer rather than a box, so ending a call with [`Status::ok`] does not allocate; it takes
/// a box as soon as anything is set on it. (The null pointer being taken, `Option<Status>` and
/// `Result<(), Status>` are two words.)
#[derive(Clone)]
pub struct Status(Option<Box<Inner>>);

#[derive(Clone)]
struct Inner {
    code: Code,
    message: String,
    details: Bytes,
    metadata: Metadata,
    transport_code: Option<i32>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    cancellation: Option<Arc<Cancellation>>,
}

/// What an unboxed (plain OK) status reads as.
static PLAIN_OK: Inner = Inner {
    code: Code::Ok,
    message: String::new(),
    details: Bytes::new(),
    metadata: Metadata::new(),
    transport_code: None,
    source: None,
    cancellation: None,
};

macro_rules! ctor {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message` and nothing else.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        let message = message.into();
        if code == Code::Ok && message.is_empty() {
            return Status::ok();
        }
        Status(Some(Box::new(Inner {
            code,
            message,
            details: Bytes::new(),
            metadata: Metadata::new(),
            transport_code: None,
            source: None,
            cancellation: None,
        })))
    }

    /// The OK status (used for successful stream ends). Does not allocate.
    pub const fn ok() -> Status {
        Status(None)
    }

    /// The fields, a plain OK status reading as [`PLAIN_OK`].
    fn inner(&self) -> &Inner {
        self.0.as_deref().unwrap_or(&PLAIN_OK)
    }

    /// The fields for changing, boxing a plain OK status first.
    fn inner_mut(&mut self) -> &mut Inner {
        self.0.get_or_insert_with(|| Box::new(PLAIN_OK.clone()))
    }

    ctor! {
        /// `CANCELLED` with a message.
        cancelled => Cancelled,
        /// `UNKNOWN` with a message.
        unknown => Unknown,
        /// `INVALID_ARGUMENT` with a message.
        invalid_argument => InvalidArgument,
        /// `DEADLINE_EXCEEDED` with a message.
        deadline_exceeded => DeadlineExceeded,
        /// `NOT_FOUND` with a message.
        not_found => NotFound,
        /// `PERMISSION_DENIED` with a message.
        permission_denied => PermissionDenied,
        /// `RESOURCE_EXHAUSTED` with a message.
        resource_exhausted => ResourceExhausted,
        /// `FAILED_PRECONDITION` with a message.
        failed_precondition => FailedPrecondition,
        /// `ABORTED` with a message.
        aborted => Aborted,
        /// `UNIMPLEMENTED` with a message.
        unimplemented => Unimplemented,
        /// `INTERNAL` with a message.
        internal => Internal,
        /// `UNAVAILABLE` with a message.
        unavailable => Unavailable,
        /// `DATA_LOSS` with a message.
        data_loss => DataLoss,
        /// `UNAUTHENTICATED` with a message.
        unauthenticated => Unauthenticated,
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.inner().code
    }

    /// Whether the code is [`Code::Ok`].
    pub fn is_ok(&self) -> bool {
        self.inner().code == Code::Ok
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.inner().message
    }

    /// Opaque details bytes (gRPC `grpc-status-details-bin`).
    pub fn details(&self) -> &Bytes {
        &self.inner().details
    }

    /// Metadata that travels with the status (trailers).
    pub fn metadata(&self) -> &Metadata {
        &self.inner().metadata
    }

    /// Mutable access to the status metadata.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.inner_mut().metadata
    }

    /// The transport's own numeric error code when the status came from one (for example a
    /// Kitex ttstream code such as 12007, or a TApplicationException type).
    pub fn transport_code(&self) -> Option<i32> {
        self.inner().transport_code
    }

    /// Sets the details bytes.
    pub fn with_details(mut self, details: Bytes) -> Status {
        if self.0.is_none() && details.is_empty() {
            return self;
        }
        self.inner_mut().details = details;
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        if self.0.is_none() && metadata.is_empty() {
            return self;
        }
        self.inner_mut().metadata = metadata;
        self
    }

    /// Records the transport's numeric code (see [`Status::transport_code`]).
    pub fn with_transport_code(mut self, code: i32) -> Status {
        self.inner_mut().transport_code = Some(code);
        self
    }

    /// Attaches the local error that caused this status.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Status {
        self.inner_mut().source = Some(Arc::new(source));
        self
    }

    /// The local error behind this status, if any (downcast to [`Error`] for library errors).
    pub fn source_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.inner().source.as_deref()
    }

    /// How the stream was cancelled, when this status is a cancellation or a stream timeout
    /// ([`crate::cancel`]): who cancelled (the user, upstream, downstream, a returning handler,
    /// a timeout), the cancel path (the services the cancel passed through, Kitex `ttscp`) and
    /// the Kitex code it travels with.
    pub fn cancellation(&self) -> Option<&Cancellation> {
        self.inner().cancellation.as_deref()
    }

    /// Attaches how the stream was cancelled (see [`Status::cancellation`]).
    pub fn with_cancellation(mut self, cancellation: Cancellation) -> Status {
        self.inner_mut().cancellation = Some(Arc::new(cancellation));
        self
    }

    /// The library error behind this status, if it was produced by one.
    pub fn library_error(&self) -> Option<&Error> {
        self.source_error().and_then(|e| e.downcast_ref::<Error>())
    }

    /// A business status error, Kitex's `kerrors.NewBizStatusError(code, message)` (with
    /// `extra`: `NewBizStatusErrorWithExtra`, the extra map as a JSON object text): the call
    /// reached the handler and the business said no, which monitoring should not count as an
    /// RPC failure. The status has code `UNKNOWN`, the message, [`Status::transport_code`]
    /// `Some(code)` and the [`BIZ_STATUS_KEY`], [`BIZ_MESSAGE_KEY`] and [`BIZ_EXTRA_KEY`]
    /// entries in its metadata; [`Status::biz_status`] reads them back.
    ///
    /// Each transport carries it as Kitex does: TTHeader as the `biz-*` string keys on a normal
    /// reply or trailer; gRPC as `grpc-status: 13` (INTERNAL), `grpc-message` and the
    /// `biz-status` and `biz-extra` trailers. A client of ours gets the same `Status` back from
    /// either.
    ///
    /// ```
    /// use rpc_core::Status;
    ///
    /// let s = Status::biz_error(4001, "insufficient balance", Some(r#"{"k":"v"}"#.into()));
    /// let biz = s.biz_status().expect("a business status");
    /// assert_eq!((biz.code, biz.message.as_str()), (4001, "insufficient balance"));
    /// assert_eq!(biz.extra.as_deref(), Some(r#"{"k":"v"}"#));
    /// assert_eq!(s.transport_code(), Some(4001));
    /// ```
    pub fn biz_error(code: i32, message: impl Into<String>, extra: Option<String>) -> Status {
        let message = message.into();
        let mut md = Metadata::new();
        md.insert(BIZ_STATUS_KEY, code.to_string());
        md.insert(BIZ_MESSAGE_KEY, message.clone());
        if let Some(extra) = extra {
            md.insert(BIZ_EXTRA_KEY, extra);
        }
        Status::unknown(message)
            .with_metadata(md)
            .with_transport_code(code)
    }

    /// The business status this status carries (made by [`Status::biz_error`], or received
    /// from a peer that sent one): `None` without a decimal [`BIZ_STATUS_KEY`] entry. The
    /// message is [`BIZ_MESSAGE_KEY`]'s, or the status message when absent (Kitex's gRPC
    /// transport sends it as `grpc-message` only).
    pub fn biz_status(&self) -> Option<BizStatus> {
        let md = self.metadata();
        let code = md.get_str(BIZ_STATUS_KEY)?.trim().parse().ok()?;
        Some(BizStatus {
            code,
            message: md
                .get_str(BIZ_MESSAGE_KEY)
                .unwrap_or(self.message())
                .to_owned(),
            extra: md.get_str(BIZ_EXTRA_KEY).map(str::to_owned),
        })
    }
}

/// Metadata key of a business status code (decimal `i32`), Kitex's `biz-status`.
pub const BIZ_STATUS_KEY: &str = "biz-status";
/// Metadata key of a business status message, Kitex's `biz-message`.
pub const BIZ_MESSAGE_KEY: &str = "biz-message";
/// Metadata key of a business status's extra map as a JSON object text, Kitex's `biz-extra`.
pub const BIZ_EXTRA_KEY: &str = "biz-extra";

/// A business status ([`Status::biz_error`], [`Status::biz_status`]): Kitex's
/// `BizStatusErrorIface` (`BizStatusCode`, `BizMessage`, `BizExtra`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BizStatus {
    /// The business code.
    pub code: i32,
    /// The business message.
    pub message: String,
    /// The extra map as a JSON object text (`{"k":"v"}`), if any.
    pub extra: Option<String>,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Status");
        d.field("code", &self.inner().code)
            .field("message", &self.inner().message);
        if !self.inner().details.is_empty() {
            d.field("details", &self.inner().details);
        }
        if !self.inner().metadata.is_empty() {
            d.field("metadata", &self.inner().metadata);
        }
        if let Some(c) = self.inner().transport_code {
            d.field("transport_code", &c);
        }
        if let Some(s) = &self.inner().source {
            d.field("source", s);
        }
        if let Some(c) = &self.inner().cancellation {
            d.field("cancellation", c);
        }
        d.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner().code, self.inner().message)
    }
}

impl std::error::Error for Status {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner()
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Status {
    /// Two statuses are equal when code, message, details and metadata match (the source error
    /// and transport code are diagnostics, not part of the wire value).
    fn eq(&self, other: &Self) -> bool {
        self.inner().code == other.inner().code
            && self.inner().message == other.inner().message
            && self.inner().details == other.inner().details
            && self.inner().metadata == other.inner().metadata
    }
}

// -------------------------------------------- cancellations (see `crate::cancel`)

/// Kitex's ttstream exception codes for the ways a stream ends early
/// (`pkg/remote/trans/ttstream/exception.go`, Kitex v0.15.1+).
pub mod kitex_code {
    /// `errBizCancel`: the user cancelled (Kitex: `cancel()` of the stream's context).
    pub const USER_CANCEL: i32 = 12007;
    /// `errBizCancelWithCause`: cancelled with a cause.
    pub const CANCEL_WITH_CAUSE: i32 = 12008;
    /// `errDownstreamCancel`: the server we called reset the stream.
    pub const DOWNSTREAM_CANCEL: i32 = 12009;
    /// `errUpstreamCancel`: the call this stream was made from was cancelled.
    pub const UPSTREAM_CANCEL: i32 = 12010;
    /// `errInternalCancel`: cancelled for another reason (a non-ttstream parent).
    pub const INTERNAL_CANCEL: i32 = 12011;
    /// `errBizHandlerReturnCancel`: the handler the stream was made from returned.
    pub const HANDLER_RETURNED: i32 = 12012;
    /// `errConnectionClosedCancel`: the parent's connection closed.
    pub const CONNECTION_CLOSED: i32 = 12013;
    /// `errRecvTimeoutTypeId`: a recv waited longer than its recv timeout.
    pub const RECV_TIMEOUT: i32 = 12014;
    /// `errStreamTimeoutTypeId`: the stream timeout (or deadline) passed.
    pub const STREAM_TIMEOUT: i32 = 12015;
}

/// Who or what ended a stream early (Kitex's `errBizCancel`, `errUpstreamCancel`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelKind {
    /// This side's user cancelled: `cancel()` or a handle dropped before the end (12007).
    User,
    /// The peer that called us cancelled, or the call this stream was made from was (12010).
    Upstream,
    /// The server we called reset the stream (12009).
    Downstream,
    /// The handler this stream was made from returned while the stream was still open (12012).
    HandlerReturned,
    /// A `recv` waited longer than the recv timeout (12014).
    RecvTimeout,
    /// The client's stream timeout passed (12015).
    StreamTimeout,
    /// The call's deadline passed (Kitex has no separate code: 12015).
    Deadline,
}

impl CancelKind {
    /// The Kitex code a cancel of this kind starts with (a cascade keeps its origin's).
    pub fn kitex_code(self) -> i32 {
        match self {
            CancelKind::User => kitex_code::USER_CANCEL,
            CancelKind::Upstream => kitex_code::UPSTREAM_CANCEL,
            CancelKind::Downstream => kitex_code::DOWNSTREAM_CANCEL,
            CancelKind::HandlerReturned => kitex_code::HANDLER_RETURNED,
            CancelKind::RecvTimeout => kitex_code::RECV_TIMEOUT,
            CancelKind::StreamTimeout | CancelKind::Deadline => kitex_code::STREAM_TIMEOUT,
        }
    }

    /// The status code a stream ended this way reports.
    pub fn code(self) -> Code {
        match self {
            CancelKind::RecvTimeout => Code::RecvDeadlineExceeded,
            CancelKind::StreamTimeout | CancelKind::Deadline => Code::DeadlineExceeded,
            _ => Code::Cancelled,
        }
    }

    fn text(self) -> &'static str {
        match self {
            CancelKind::User => "canceled by the user",
            CancelKind::Upstream => "canceled by upstream",
            CancelKind::Downstream => "canceled by downstream",
            CancelKind::HandlerReturned => "canceled by the handler returning",
            CancelKind::RecvTimeout => "stream recv timeout",
            CancelKind::StreamTimeout => "stream timeout",
            CancelKind::Deadline => "deadline exceeded",
        }
    }
}

/// How a stream was cancelled: attached to the [`Status`] it ended with
/// ([`Status::cancellation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    kind: CancelKind,
    path: String,
    code: i32,
    cause: String,
}

impl Cancellation {
    /// A cancellation of `kind` whose path (comma-joined service names, as Kitex's `ttscp`) is
    /// `path`, travelling with Kitex code `code`, for `cause` (the origin's message).
    pub fn new(
        kind: CancelKind,
        path: impl Into<String>,
        code: i32,
        cause: impl Into<String>,
    ) -> Cancellation {
        Cancellation {
            kind,
            path: path.into(),
            code,
            cause: cause.into(),
        }
    }

    /// Who or what cancelled, seen from this side.
    pub fn kind(&self) -> CancelKind {
        self.kind
    }

    /// The cancel path as it travels: service names joined by `,` (`"A,B"`), empty when no
    /// name is known.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The services on the cancel path, origin first.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.path.split(',').filter(|s| !s.is_empty())
    }

    /// The Kitex code the cancel travels with: its origin's (12007 when a user started it).
    pub fn kitex_code(&self) -> i32 {
        self.code
    }

    /// The origin's message.
    pub fn cause(&self) -> &str {
        &self.cause
    }

    /// The status this cancellation ends a stream with: the kind's code, a message naming the
    /// path (`canceled by upstream [canceled path: A -> B]: <cause>`), the Kitex code as the
    /// transport code.
    pub fn into_status(self) -> Status {
        let code = self.kind.code();
        self.into_status_with(code)
    }

    /// As [`Cancellation::into_status`] with the status code `code` (a peer's reset keeps
    /// the code its transport maps the Kitex code to: 12015 is `DEADLINE_EXCEEDED`).
    pub fn into_status_with(self, code: Code) -> Status {
        let message = self.to_string();
        Status::new(code, message)
            .with_transport_code(self.code)
            .with_cancellation(self)
    }

    /// The message a transport sends with the cancel (Kitex's `getMessage`): the origin's
    /// cause, or what the kind means when there is none.
    pub fn wire_message(&self) -> &str {
        if self.cause.is_empty() {
            self.kind.text()
        } else {
            &self.cause
        }
    }

    /// The same cancel seen from a stream this one cascades to: kind `kind`, this hop's `name`
    /// appended to the path, the origin's code and cause kept.
    pub(crate) fn cascade(&self, kind: CancelKind, name: &str) -> Cancellation {
        Cancellation {
            kind,
            path: append_path(&self.path, name),
            code: self.code,
            cause: self.cause.clone(),
        }
    }

    /// The same cancel as the peer that received it sees it (kind `kind`, path and code kept).
    pub fn received_as(&self, kind: CancelKind) -> Cancellation {
        Cancellation {
            kind,
            ..self.clone()
        }
    }
}

impl fmt::Display for Cancellation {
    /// `canceled by upstream [canceled path: A -> B]: user canceled` (Kitex writes the path the
    /// same way: names joined by ` -> `).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.text())?;
        if !self.path.is_empty() {
            f.write_str(" [canceled path: ")?;
            for (i, n) in self.path.split(',').enumerate() {
                if i > 0 {
                    f.write_str(" -> ")?;
                }
                f.write_str(n)?;
            }
            f.write_str("]")?;
        }
        if !self.cause.is_empty() {
            write!(f, ": {}", self.cause)?;
        }
        Ok(())
    }
}

/// `path` with `name` appended (Kitex `appendCancelPath`): `"A"` + `"B"` = `"A,B"`; an empty
/// name adds nothing.
pub fn append_path(path: &str, name: &str) -> String {
    match (path.is_empty(), name.is_empty()) {
        (_, true) => path.to_owned(),
        (true, false) => name.to_owned(),
        (false, false) => format!("{path},{name}"),
    }
}

/// Who caused an error: this side or the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This process.
    Local,
    /// The remote peer.
    Remote,
}

/// Typed library errors. Each converts into a [`Status`] with the code documented on the variant.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `send` was called after `close_send` (`FAILED_PRECONDITION`; Kitex 12005).
    #[error("send after close_send: the stream is half-closed, nothing was sent")]
    SendAfterClose,
    /// An operation on a stream that has already ended (`FAILED_PRECONDITION`).
    #[error("the stream has already finished")]
    StreamFinished,
    /// Header metadata was set after the header had already been sent (`FAILED_PRECONDITION`).
    #[error("header metadata set after the header was sent")]
    HeaderAlreadySent,
    /// A message could not be encoded (`INTERNAL`).
    #[error("encode {codec} message: {reason}")]
    Encode {
        /// The codec (`"protobuf"`, `"thrift"`).
        codec: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A message off the wire could not be decoded (`INTERNAL`, as in gRPC).
    #[error("decode {codec} message: {reason}")]
    Decode {
        /// The codec (`"protobuf"`, `"thrift"`).
        codec: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A message exceeded a configured size limit (`RESOURCE_EXHAUSTED`).
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The message size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A unary call received a second response message (`INTERNAL`).
    #[error("unary call received more than one response message")]
    UnaryTooManyResponses,
    /// A unary call ended without a response message (`INTERNAL`).
    #[error("call ended without a response message")]
    MissingResponse,
    /// A request stream ended without the request message (`INVALID_ARGUMENT`).
    #[error("stream ended without a request message")]
    MissingRequest,
    /// A middleware replaced a message with a value of another type (`INTERNAL`).
    #[error("middleware changed the message type (expected {expected})")]
    MessageTypeMismatch {
        /// The expected type name.
        expected: &'static str,
    },
    /// An I/O error on a connection (`UNAVAILABLE`).
    #[error("{initiator:?} I/O error: {source}")]
    Io {
        /// Who failed.
        initiator: Initiator,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer violated the protocol (`INTERNAL`).
    #[error("protocol error ({initiator:?}): {reason}")]
    Protocol {
        /// Who broke the protocol.
        initiator: Initiator,
        /// What was wrong.
        reason: String,
    },
    /// A handler panicked (`INTERNAL`).
    #[error("handler panicked: {0}")]
    HandlerPanic(String),
}

impl Error {
    /// The status code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Error::SendAfterClose | Error::StreamFinished | Error::HeaderAlreadySent => {
                Code::FailedPrecondition
            }
            Error::MessageTooLarge { .. } => Code::ResourceExhausted,
            Error::MissingRequest => Code::InvalidArgument,
            Error::Io { .. } => Code::Unavailable,
            Error::Encode { .. }
            | Error::Decode { .. }
            | Error::UnaryTooManyResponses
            | Error::MissingResponse
            | Error::MessageTypeMismatch { .. }
            | Error::Protocol { .. }
            | Error::HandlerPanic(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string()).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_round_trips_and_unknown_values_map_to_unknown() {
        for v in 0..=17 {
            assert_eq!(Code::from_i32(v).as_i32(), v);
        }
        // 17 is Kitex's RecvDeadlineExceeded; the first value past the known codes is UNKNOWN.
        assert_eq!(Code::from_i32(18), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
    }

    #[test]
    fn library_error_keeps_its_type_inside_status() {
        let s: Status = Error::SendAfterClose.into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(matches!(s.library_error(), Some(Error::SendAfterClose)));
        assert_eq!(std::mem::size_of::<Status>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn plain_ok_reads_and_changes_like_a_boxed_one() {
        let ok = Status::ok();
        assert!(ok.0.is_none(), "Status::ok() does not allocate");
        assert!(Status::new(Code::Ok, "").0.is_none());
        assert!(ok.is_ok() && ok.code() == Code::Ok && ok.message().is_empty());
        assert!(ok.details().is_empty() && ok.metadata().is_empty());
        assert_eq!(ok.transport_code(), None);
        assert!(ok.source_error().is_none());
        assert_eq!(ok.to_string(), "OK: ");
        assert_eq!(format!("{ok:?}"), r#"Status { code: Ok, message: "" }"#);
        assert_eq!(ok, Status::new(Code::Ok, String::new()));
        assert_ne!(ok, Status::new(Code::Ok, "done"));
        assert!(Status::ok().with_metadata(Metadata::new()).0.is_none());

        let mut md = Status::ok();
        md.metadata_mut().insert("k", "v");
        assert_eq!(md.metadata().get_str("k"), Some("v"));
        assert_ne!(md, ok);
        let s = Status::ok()
            .with_details(Bytes::from_static(b"d"))
            .with_transport_code(7)
            .with_source(Error::StreamFinished);
        assert!(s.is_ok());
        assert_eq!(&s.details()[..], b"d");
        assert_eq!(s.transport_code(), Some(7));
        assert!(matches!(s.library_error(), Some(Error::StreamFinished)));
        assert_eq!(ok.clone(), ok);
    }
}
