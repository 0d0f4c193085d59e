//! The go-away: a server that is leaving (a hot restart hands its socket to a successor, or a
//! plain graceful shutdown) tells each session's client to open no new stream on it.
//!
//! Negotiated at the handshake ([`FEATURE_GOAWAY`](crate::setup::FEATURE_GOAWAY)); it travels
//! over the session's Unix socket, next to the fallback frames, as a 4-byte big-endian length
//! of 8 and [`GOAWAY_BODY`]. A fallback frame is a TTHeader frame larger than the arena, never
//! 8 bytes, so the length alone tells the two apart; an 8-byte message that is not
//! [`GOAWAY_BODY`] ends the session (`INTERNAL`).
//!
//! What each side does with it (the client's draining state, `link::on_goaway`):
//!
//! | client session        | on                                 | becomes                  |
//! |-----------------------|------------------------------------|--------------------------|
//! | usable                | go-away received                   | draining: the pool skips it and opens a new session for new calls; streams already open (or opened in the race) carry on |
//! | draining              | its last stream ends               | retired and closed: an `open` that lost the race fails without sending and is retried on another session |
//! | draining              | the server's grace period ends     | lost (`UNAVAILABLE`) as any session whose server closed it |
//!
//! The server keeps serving every stream that arrives on a session it sent a go-away to (the
//! client may have opened it before the go-away arrived): nothing is refused, so a call that
//! had not started on the old server starts on the new one, and one that had finishes where
//! it started. The session ends when the client closes it or the grace period is over.

use rpc_core::Status;

/// The go-away's body: 8 bytes no TTHeader frame can be (a frame's length word is followed by
/// at least its 14-byte fixed header).
pub const GOAWAY_BODY: [u8; 8] = *b"RPCSHMGA";

/// The whole message on the socket: the length word (8, big-endian) and the body.
pub const GOAWAY: [u8; 12] = {
    let mut m = [0u8; 12];
    m[3] = GOAWAY_BODY.len() as u8;
    let mut i = 0;
    while i < GOAWAY_BODY.len() {
        m[4 + i] = GOAWAY_BODY[i];
        i += 1;
    }
    m
};

/// Checks an 8-byte socket message is the go-away (the only 8-byte message there is).
pub fn decode(body: &[u8; 8]) -> Result<(), Status> {
    if *body == GOAWAY_BODY {
        Ok(())
    } else {
        Err(Status::internal(format!(
            "shared memory session: unknown 8-byte control message {body:02x?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_goaway_message_is_a_length_word_and_its_body() {
        assert_eq!(&GOAWAY[..4], &8u32.to_be_bytes());
        assert_eq!(&GOAWAY[4..], &GOAWAY_BODY);
        assert!(decode(&GOAWAY_BODY).is_ok());
        let mut other = GOAWAY_BODY;
        other[7] ^= 1;
        assert_eq!(decode(&other).unwrap_err().code(), rpc_core::Code::Internal);
        // Never mistaken for a TTHeader frame: those carry the magic 0x1000 after the length.
        assert_ne!(&GOAWAY_BODY[..2], &[0x10, 0x00]);
    }
}
