//! Wire constants: magic, flags, protocol ids, info block ids, int and string keys, frame types
//! and Kitex stream error codes. Numbers follow the spec (`ttheader.md` §1 and §3) and, for
//! cancel and timeouts, the section below (the spec predates Kitex v0.15.1).
//!
//! # §3.6 Cascading cancel (`ttscp`) and stream timeouts
//!
//! Taken from Kitex's source (`pkg/remote/trans/ttstream`: `exception.go`,
//! `stream_client.go`, `stream_server.go`, `stream.go`, `codec.go`; Kitex v0.15.1–v0.16.2):
//!
//! * **Rst frame** (key 27 = `"5"`, client → server; a client accepts one from a proxy):
//!   string key `ttscp` = the cancel path, service names joined by `,` (`"A,B"`; omitted when
//!   empty); payload = a Thrift EXCEPTION message (`80 01 00 03`, the method, seqid = stream
//!   id) holding `TApplicationException{1: message, 2: type}` (`EncodeException`: type =
//!   the exception's code, message = its cause's text). An empty payload means type 13 `"rst"`.
//! * **Who writes what** (`clientStream.parseCancelErr`): a user cancel sends type 12007
//!   and `ttscp` = the client's own service name; a stream timeout 12015 and the same path;
//!   a recv timeout 12014 (unless `DisableCancelRemote`: then nothing is sent and the stream
//!   lives on); a cascade — the handler's call was cancelled, so its client streams are —
//!   sends the **origin's** type (12007 stays 12007 down the chain) and `ttscp` = the path it
//!   received with its own service name appended. A parent that is not ttstream gives 12011
//!   with the path `non-ttstream path,<name>` in Kitex; we give the code of the parent's end
//!   (12007 cancelled, 12015 deadline, 12013 connection lost, 12011 otherwise) and the names
//!   we know. A handler that returns while its client streams are open ends them with 12012.
//! * **Who reads it** (`onReadRstFrame`): a server reports "canceled by upstream"
//!   (`errUpstreamCancel`, category 12010) with type = the Rst's type and the path; a client
//!   "canceled by downstream" (12009). Kitex formats it as
//!   `[ttstream error, code=12007] [server-side stream] [canceled path: A -> B] <message>`;
//!   we give a `Status` whose [`rpc_core::Cancellation`] has the kind, the path and the code,
//!   and whose message is `canceled by upstream [canceled path: A -> B]: <message>`.
//! * **Codes** (`exception.go` constants): 12007 user cancel, 12008 cancel with cause, 12009
//!   downstream, 12010 upstream, 12011 internal, 12012 handler returned, 12013 connection
//!   closed, 12014 recv timeout, 12015 stream timeout, 12016 stream internal. (Some Kitex
//!   branches number the timeouts 12014 stream / 12015 recv / 12016 send in their tests; the
//!   released constants are the ones above.)
//! * **Recv timeout status**: Kitex's client-side wrapper returns gRPC-style code 17
//!   `RecvDeadlineExceeded` (`pkg/remote/trans/nphttp2/codes`, `client/stream.go`
//!   `callWithTimeout`) locally; on the ttstream wire the cancel is the Rst type 12014, and a
//!   handler that ends with that status sends exception type 12014 with our exact-code key
//!   (`rpc-code: 17`). A received 12014 maps to `DEADLINE_EXCEEDED`.

/// TTHeader magic at bytes 4..6 of every packet.
pub const MAGIC: u16 = 0x1000;

/// FLAGS bit: out-of-order (mux) unary client; replies are matched by sequence id.
pub const FLAGS_MUX: u16 = 0x0001;
/// FLAGS bit: TTHeader Streaming. Set on every ttstream frame.
pub const FLAGS_STREAMING: u16 = 0x0002;

/// PROTOCOL ID: Thrift binary. Kitex always writes 0 for unary and sniffs the payload.
pub const PROTOCOL_THRIFT_BINARY: u8 = 0x00;
/// PROTOCOL ID: Thrift compact. Not supported by Kitex, so we reject it.
pub const PROTOCOL_THRIFT_COMPACT: u8 = 0x02;
/// PROTOCOL ID: Thrift compact v2. Kitex accepts it "just for compatibility"; so do we.
pub const PROTOCOL_THRIFT_COMPACT_V2: u8 = 0x03;
/// PROTOCOL ID: Kitex protobuf.
pub const PROTOCOL_KITEX_PROTOBUF: u8 = 0x04;
/// PROTOCOL ID: TTHeader Streaming with bare Thrift struct payloads.
pub const PROTOCOL_STREAM_THRIFT: u8 = 0x10;
/// PROTOCOL ID: TTHeader Streaming with protobuf message payloads.
pub const PROTOCOL_STREAM_PROTOBUF: u8 = 0x11;

/// Info block id: one byte of padding.
pub const INFO_PADDING: u8 = 0x00;
/// Info block id: string KVs (`u16 count`, `count × (str16, str16)`).
pub const INFO_STR_KVS: u8 = 0x01;
/// Info block id: int KVs (`u16 count`, `count × (u16, str16)`).
pub const INFO_INT_KVS: u8 = 0x10;
/// Info block id: ACL token (one str16, no key, no count).
pub const INFO_ACL_TOKEN: u8 = 0x11;

/// Int KV keys (u16). Unknown keys are kept as metadata, never errors.
pub mod int_key {
    /// `"framed"` / `"unframed"`.
    pub const TRANSPORT_TYPE: u16 = 1;
    /// Log id.
    pub const LOG_ID: u16 = 2;
    /// Caller service name. volo-thrift writes it with an empty value.
    pub const FROM_SERVICE: u16 = 3;
    /// Caller cluster.
    pub const FROM_CLUSTER: u16 = 4;
    /// Caller IDC.
    pub const FROM_IDC: u16 = 5;
    /// Callee service name.
    pub const TO_SERVICE: u16 = 6;
    /// Callee cluster.
    pub const TO_CLUSTER: u16 = 7;
    /// Callee IDC.
    pub const TO_IDC: u16 = 8;
    /// Method name; always present on streaming frames.
    pub const TO_METHOD: u16 = 9;
    /// Environment.
    pub const ENV: u16 = 10;
    /// Destination address.
    pub const DEST_ADDRESS: u16 = 11;
    /// RPC timeout, decimal milliseconds. We send the stream deadline here.
    pub const RPC_TIMEOUT: u16 = 12;
    /// Read timeout.
    pub const READ_TIMEOUT: u16 = 13;
    /// Ring hash key.
    pub const RING_HASH_KEY: u16 = 14;
    /// DDP tag.
    pub const DDP_TAG: u16 = 15;
    /// With-mesh-header marker.
    pub const WITH_MESH_HEADER: u16 = 16;
    /// Connect timeout, decimal milliseconds.
    pub const CONNECT_TIMEOUT: u16 = 17;
    /// Span context.
    pub const SPAN_CONTEXT: u16 = 18;
    /// Short-connection marker.
    pub const SHORT_CONNECTION: u16 = 19;
    /// Caller method name.
    pub const FROM_METHOD: u16 = 20;
    /// Stress (load test) tag.
    pub const STRESS_TAG: u16 = 21;
    /// Message type: ASCII `"1"`/`"2"`/`"3"` (Kitex) or one raw byte (volo-thrift).
    pub const MSG_TYPE: u16 = 22;
    /// HTTP content type.
    pub const HTTP_CONTENT_TYPE: u16 = 23;
    /// Raw ring hash key.
    pub const RAW_RING_HASH_KEY: u16 = 24;
    /// Load balancer type.
    pub const LB_TYPE: u16 = 25;
    /// Cluster shard id.
    pub const CLUSTER_SHARD_ID: u16 = 26;
    /// Streaming frame type, one ASCII digit (see [`FrameKind`](crate::proto::frame::FrameKind)).
    pub const FRAME_TYPE: u16 = 27;
    /// Ours, outside the keys Kitex assigns (peers ignore int keys they do not know): on the
    /// Header and Trailer of a stream a draining server refused before any handler saw it
    /// (value `"1"`), so the client may open it again on another connection. An int key,
    /// so no handler's metadata (string keys) can claim it.
    pub const REFUSED_UNPROCESSED: u16 = 0x7201;
}

/// String KV keys with a protocol meaning.
pub mod str_key {
    /// IDL service name; routes a call when a server hosts several services.
    pub const IDL_SERVICE_NAME: &str = "isn";
    /// Remote IP.
    pub const REMOTE_IP: &str = "rip";
    /// Connection ready to reset: the server asks the client not to reuse the connection.
    pub const CONN_RESET: &str = "crrst";
    /// Business status code, decimal i32.
    pub const BIZ_STATUS: &str = "biz-status";
    /// Business status message.
    pub const BIZ_MESSAGE: &str = "biz-message";
    /// Business status extra data, a JSON object.
    pub const BIZ_EXTRA: &str = "biz-extra";
    /// Cancel path on a streaming Rst: comma-joined service names.
    pub const CANCEL_PATH: &str = "ttscp";
    /// The string key whose value travels as the ACL token block (info id 0x11).
    pub const GDPR_TOKEN: &str = "RPC_TRANSIT_gdpr-token";
    /// Prefix of transient metainfo (one hop).
    pub const TRANSIT_PREFIX: &str = "RPC_TRANSIT_";
    /// Prefix of persistent metainfo (whole call chain).
    pub const PERSIST_PREFIX: &str = "RPC_PERSIST_";
    /// Prefix of transient metainfo re-forwarded from upstream.
    pub const TRANSIT_UPSTREAM_PREFIX: &str = "RPC_TRANSIT_UPSTREAM_";
    /// Prefix of backward metainfo (server to client).
    pub const BACKWARD_PREFIX: &str = "RPC_BACKWARD_";
}

/// Kitex stream error codes: the `type` of the `ApplicationException` carried by a Rst or an
/// error Trailer.
pub mod kitex_code {
    /// Application exception (generic handler error).
    pub const APPLICATION_EXCEPTION: i32 = 12001;
    /// Unexpected Header frame.
    pub const UNEXPECTED_HEADER: i32 = 12002;
    /// Illegal business error (a malformed `biz-*` trailer).
    pub const ILLEGAL_BIZ_ERROR: i32 = 12003;
    /// Illegal frame.
    pub const ILLEGAL_FRAME: i32 = 12004;
    /// Illegal operation, e.g. send after CloseSend.
    pub const ILLEGAL_OPERATION: i32 = 12005;
    /// Transport closing; Kitex clients fail their streams with it on connection loss.
    pub const TRANSPORT_CLOSING: i32 = 12006;
    /// Canceled by the user.
    pub const USER_CANCEL: i32 = 12007;
    /// Canceled with a cause.
    pub const CANCEL_WITH_CAUSE: i32 = 12008;
    /// Canceled by a downstream service (`errDownstreamCancel`).
    pub const CANCELED_BY_DOWNSTREAM: i32 = 12009;
    /// Canceled by an upstream service (`errUpstreamCancel`).
    pub const CANCELED_BY_UPSTREAM: i32 = 12010;
    /// Internal cancellation.
    pub const INTERNAL_CANCEL: i32 = 12011;
    /// Canceled because the handler returned.
    pub const CANCELED_BY_HANDLER_RETURN: i32 = 12012;
    /// Connection closed; Kitex servers fail their streams with it on connection loss.
    pub const CONNECTION_CLOSED: i32 = 12013;
    /// Receive timeout.
    pub const RECV_TIMEOUT: i32 = 12014;
    /// Stream timeout (deadline).
    pub const STREAM_TIMEOUT: i32 = 12015;
    /// The code a Rst with an empty payload stands for (spec §3: "empty means code 13 `rst`").
    pub const EMPTY_RST: i32 = 13;
    /// The message a Rst with an empty payload stands for.
    pub const EMPTY_RST_MESSAGE: &str = "rst";
}
