//! The two plain enums every layer of the core names — a frame's type and a stream's end —
//! kept apart from the codecs and the state machine so the error types can name them too
//! (re-exported from [`frame`](super::frame) and [`stream`](super::stream)).

/// The frame type carried in int key 27.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// `"1"`: metadata from a proxy (or our credit extension); a Kitex server ignores it.
    Meta,
    /// `"2"`: opens the stream (client) or carries the response headers (server).
    Header,
    /// `"3"`: one message.
    Data,
    /// `"4"`: client CloseSend (empty), or the server's end of stream.
    Trailer,
    /// `"5"`: cancel (client) or proxy reset.
    Rst,
}

impl FrameKind {
    /// Parses the value of int key 27: exactly one ASCII digit `"1"`..`"5"`.
    pub fn from_wire(value: &[u8]) -> Option<Self> {
        match value {
            b"1" => Some(FrameKind::Meta),
            b"2" => Some(FrameKind::Header),
            b"3" => Some(FrameKind::Data),
            b"4" => Some(FrameKind::Trailer),
            b"5" => Some(FrameKind::Rst),
            _ => None,
        }
    }

    /// The ASCII digit written in int key 27.
    pub fn as_ascii(self) -> u8 {
        match self {
            FrameKind::Meta => b'1',
            FrameKind::Header => b'2',
            FrameKind::Data => b'3',
            FrameKind::Trailer => b'4',
            FrameKind::Rst => b'5',
        }
    }
}

/// Which end of the stream we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opened the stream with a Header frame.
    Client,
    /// Accepted the stream.
    Server,
}
