//! The per-stream state machine of TTHeader Streaming (spec §3 "Lifecycle"). Pure: the driver
//! calls [`StreamState::send`] before writing a frame and [`StreamState::recv`] for each frame
//! read, and acts on the returned [`RecvEvent`] or [`StreamError`].

use bytes::Bytes;

use super::error::StreamError;
use super::frame::{FrameKind, StreamFrame};
use super::header::Headers;
use super::keys::{kitex_code, str_key};
pub use super::kinds::Role;
use super::thrift_msg::{decode_exception_message, ApplicationException};

/// Why a stream finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishCause {
    /// Client: the server's Trailer arrived.
    RemoteTrailer,
    /// Server: we sent our Trailer.
    LocalTrailer,
    /// The peer sent Rst (client cancel on a server; proxy reset on a client).
    RemoteReset,
    /// Client: we sent Rst.
    LocalReset,
    /// The connection closed under the stream.
    ConnectionLost,
}

/// One direction of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    /// No Header yet.
    Idle,
    /// Header passed; Data may flow.
    Open,
    /// Trailer passed (client CloseSend, or the server's end).
    Closed,
}

/// What a received frame means for the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvEvent {
    /// The peer's Header: its metadata (client: `isn`, metainfo, user metadata, RPC_TIMEOUT;
    /// server: its header map).
    Headers(Headers),
    /// One message.
    Data(Bytes),
    /// A Meta frame; never changes state. Kitex servers ignore these.
    Meta {
        /// Its metadata.
        headers: Headers,
        /// Its payload.
        payload: Bytes,
    },
    /// Server only: the client half-closed (CloseSend); its recv now yields EOF.
    RemoteClosed,
    /// Client only: the server's Trailer ended the stream.
    Finished {
        /// The trailer map, including any `biz-*` keys
        /// ([`BizStatus::from_headers`](super::status::BizStatus::from_headers)).
        trailers: Headers,
        /// The error the handler ended with, if the Trailer carried one.
        error: Option<ApplicationException>,
    },
    /// The peer reset the stream.
    Reset {
        /// Kitex code (e.g. 12007 user cancel); [`kitex_code::EMPTY_RST`] for an empty payload.
        code: i32,
        /// Reason text.
        message: String,
        /// `ttscp`: comma-joined service names along the cancel path.
        cancel_path: Option<String>,
    },
    /// The stream has finished; the frame is dropped (spec: frames for finished streams are
    /// ignored, e.g. a Kitex client's empty Trailer answering the server's Trailer).
    Ignored,
}

/// State of one stream.
///
/// Each direction ("half") goes `Idle ─Header─► Open ─Trailer─► Closed`; the first frame in
/// each direction is the Header. On top, `finished` is terminal.
///
/// ```text
/// Client                                      Server
///  send: Idle ─Header─► Open ─Trailer─► Closed  recv: Idle ─Header─► Open ─Trailer─► Closed
///          (Data only while Open; Trailer =            (client CloseSend → RemoteClosed)
///           CloseSend, allowed once)
///  recv: Idle ─Header─► Open ─Trailer─► FINISHED send: Idle ─Header─► Open ─Trailer─► FINISHED
///          (a Trailer without Header is                (Trailer only after the Header;
///           tolerated, see recv())                      Data only while Open)
///  send Rst ────────────────────────► FINISHED   recv Rst ──────────────────────► FINISHED
///  recv Rst (proxy) ────────────────► FINISHED   (a server never sends Rst)
///
/// Either role: connection lost ─► FINISHED.
/// FINISHED: every received frame is Ignored; every send fails, except that a client whose
/// send half is still Open may send its Trailer (after its Rst, or answering the server's
/// Trailer, as Kitex clients do). Meta frames never change state.
/// ```
///
/// Errors leave the state unchanged (except for a malformed Trailer/Rst payload, whose frame
/// still ends the stream); the driver then ends the stream itself: a client sends Rst with
/// [`StreamError::kitex_code`] (and an empty Trailer if not yet half-closed), a server sends
/// [Header +] Trailer with an EXCEPTION of that code. CloseSend idempotency is the driver's
/// job: a second Trailer from the client is [`StreamError::SendAfterClose`] here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    role: Role,
    stream_id: i32,
    send: Half,
    recv: Half,
    finished: Option<FinishCause>,
}

impl StreamState {
    /// A fresh stream: nothing sent or received.
    pub fn new(role: Role, stream_id: i32) -> Self {
        StreamState {
            role,
            stream_id,
            send: Half::Idle,
            recv: Half::Idle,
            finished: None,
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The stream id.
    pub fn stream_id(&self) -> i32 {
        self.stream_id
    }

    /// Whether our Header has been sent.
    pub fn header_sent(&self) -> bool {
        self.send != Half::Idle
    }

    /// Whether the peer's Header has arrived.
    pub fn header_received(&self) -> bool {
        self.recv != Half::Idle
    }

    /// Whether we sent our Trailer (client: CloseSend).
    pub fn is_local_closed(&self) -> bool {
        self.send == Half::Closed
    }

    /// Whether the peer sent its Trailer (server: the client's CloseSend).
    pub fn is_remote_closed(&self) -> bool {
        self.recv == Half::Closed
    }

    /// Why the stream finished, if it has.
    pub fn finish_cause(&self) -> Option<FinishCause> {
        self.finished
    }

    /// Whether the stream has finished; its frames are then ignored and the driver may forget it.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// Checks and records sending a frame of `kind`. On error nothing must be sent.
    pub fn send(&mut self, kind: FrameKind) -> Result<(), StreamError> {
        let stream_id = self.stream_id;
        let finished = StreamError::StreamFinished { stream_id, kind };
        let not_sent = StreamError::HeaderNotSent { stream_id, kind };
        let after_close = StreamError::SendAfterClose { stream_id, kind };
        match (kind, self.role) {
            (FrameKind::Header, _) => {
                self.live(finished)?;
                if self.send != Half::Idle {
                    return Err(StreamError::HeaderAlreadySent { stream_id });
                }
                self.send = Half::Open;
            }
            (FrameKind::Data, _) => {
                self.live(finished)?;
                match self.send {
                    Half::Idle => return Err(not_sent),
                    Half::Closed => return Err(after_close),
                    Half::Open => {}
                }
            }
            (FrameKind::Trailer, Role::Client) => {
                // Allowed after our Rst or the server's Trailer (Kitex clients answer the
                // server's Trailer with their own), not after a peer Rst or connection loss.
                if matches!(
                    self.finished,
                    Some(FinishCause::RemoteReset | FinishCause::ConnectionLost)
                ) {
                    return Err(finished);
                }
                match self.send {
                    Half::Idle => return Err(not_sent),
                    Half::Closed => return Err(after_close),
                    Half::Open => self.send = Half::Closed,
                }
            }
            (FrameKind::Trailer, Role::Server) => {
                self.live(finished)?;
                // Spec §3: the server sends its Header before the Trailer even with no data
                // (Kitex #1887: a missing Header before an early error confuses clients).
                if self.send == Half::Idle {
                    return Err(not_sent);
                }
                self.send = Half::Closed;
                self.finished = Some(FinishCause::LocalTrailer);
            }
            (FrameKind::Rst, Role::Client) => {
                self.live(finished)?;
                if self.send == Half::Idle {
                    return Err(not_sent);
                }
                self.finished = Some(FinishCause::LocalReset);
            }
            (FrameKind::Rst, Role::Server) => {
                // Kitex servers never send Rst; Kitex clients accept it only from proxies.
                return Err(StreamError::NotAllowed {
                    stream_id,
                    role: self.role,
                    kind,
                });
            }
            (FrameKind::Meta, _) => {
                self.live(finished)?;
                if self.send == Half::Idle {
                    return Err(not_sent);
                }
            }
        }
        Ok(())
    }

    /// [`StreamState::recv`] for a Data frame already split off by
    /// [`StreamFrame::decode_data`]: the same rules, without building a frame.
    pub fn recv_data(&mut self, payload: Bytes) -> Result<RecvEvent, StreamError> {
        let stream_id = self.stream_id;
        if self.finished.is_some() {
            return Ok(RecvEvent::Ignored);
        }
        match self.recv {
            Half::Idle => Err(StreamError::DataBeforeHeader { stream_id }),
            Half::Open => Ok(RecvEvent::Data(payload)),
            Half::Closed => Err(StreamError::FrameAfterClose {
                stream_id,
                kind: FrameKind::Data,
            }),
        }
    }

    /// Applies a frame received for this stream.
    ///
    /// A client accepts the server's Trailer even before any Header: old Kitex servers send a
    /// bare Trailer on early errors (Kitex #1887), and failing the stream with "illegal frame"
    /// would hide the real error. Data before the Header is an error in both roles.
    pub fn recv(&mut self, frame: StreamFrame) -> Result<RecvEvent, StreamError> {
        let stream_id = self.stream_id;
        if self.finished.is_some() {
            return Ok(RecvEvent::Ignored);
        }
        match frame.kind {
            FrameKind::Meta => Ok(RecvEvent::Meta {
                headers: frame.headers,
                payload: frame.payload,
            }),
            FrameKind::Header => {
                if self.recv != Half::Idle {
                    // Spec §3: a stream error, not a connection kill.
                    return Err(StreamError::UnexpectedHeader { stream_id });
                }
                self.recv = Half::Open;
                Ok(RecvEvent::Headers(frame.headers))
            }
            FrameKind::Data => self.recv_data(frame.payload),
            FrameKind::Trailer => match self.role {
                Role::Client => {
                    self.recv = Half::Closed;
                    self.finished = Some(FinishCause::RemoteTrailer);
                    let error = if frame.payload.is_empty() {
                        None
                    } else {
                        Some(self.exception(&frame)?)
                    };
                    Ok(RecvEvent::Finished {
                        trailers: frame.headers,
                        error,
                    })
                }
                Role::Server => match self.recv {
                    Half::Idle => Err(StreamError::TrailerBeforeHeader { stream_id }),
                    Half::Open => {
                        // A client Trailer carries no KVs and no payload; anything there is
                        // not ours to interpret.
                        self.recv = Half::Closed;
                        Ok(RecvEvent::RemoteClosed)
                    }
                    // CloseSend is idempotent for the peer as well: a duplicate is harmless.
                    Half::Closed => Ok(RecvEvent::Ignored),
                },
            },
            FrameKind::Rst => {
                self.finished = Some(FinishCause::RemoteReset);
                let reason = if frame.payload.is_empty() {
                    // Spec §3: an empty Rst payload means code 13 "rst".
                    ApplicationException::new(kitex_code::EMPTY_RST, kitex_code::EMPTY_RST_MESSAGE)
                } else {
                    self.exception(&frame)?
                };
                Ok(RecvEvent::Reset {
                    code: reason.kind,
                    message: reason.message,
                    cancel_path: frame
                        .headers
                        .get_str(str_key::CANCEL_PATH)
                        .map(str::to_owned),
                })
            }
        }
    }

    /// Records that the connection closed. Returns the Kitex code the stream fails with (12013
    /// on a server, 12006 on a client, as Kitex does), or `None` if it had already finished.
    pub fn on_connection_lost(&mut self) -> Option<i32> {
        if self.finished.is_some() {
            return None;
        }
        self.finished = Some(FinishCause::ConnectionLost);
        Some(match self.role {
            Role::Server => kitex_code::CONNECTION_CLOSED,
            Role::Client => kitex_code::TRANSPORT_CLOSING,
        })
    }

    fn live(&self, finished: StreamError) -> Result<(), StreamError> {
        match self.finished {
            Some(_) => Err(finished),
            None => Ok(()),
        }
    }

    fn exception(&self, frame: &StreamFrame) -> Result<ApplicationException, StreamError> {
        decode_exception_message(&frame.payload)
            .map(|(_, exc)| exc)
            .map_err(|source| StreamError::MalformedPayload {
                stream_id: self.stream_id,
                kind: frame.kind,
                source,
            })
    }
}
