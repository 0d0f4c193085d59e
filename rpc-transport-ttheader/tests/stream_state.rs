//! The per-stream state machine, one test per rule of spec §3 "Lifecycle".

use bytes::Bytes;
use rpc_transport_ttheader::proto::keys::kitex_code;
use rpc_transport_ttheader::proto::{
    ApplicationException, FinishCause, FrameKind, Headers, Initiator, RecvEvent, Role, StreamError,
    StreamFrame, StreamProtocol, StreamState,
};

const ID: i32 = 7;

fn f(kind: FrameKind) -> StreamFrame {
    StreamFrame::new(kind, ID, "Echo", StreamProtocol::Thrift)
}

fn data(b: &'static [u8]) -> StreamFrame {
    StreamFrame::data(ID, "Echo", StreamProtocol::Thrift, Bytes::from_static(b))
}

fn server_trailer_with_error(exc: &ApplicationException) -> StreamFrame {
    StreamFrame::trailer(ID, "Echo", StreamProtocol::Thrift, [], None, Some(exc)).unwrap()
}

/// A server stream that has received the client's Header.
fn server_open() -> StreamState {
    let mut s = StreamState::new(Role::Server, ID);
    assert!(matches!(
        s.recv(f(FrameKind::Header)),
        Ok(RecvEvent::Headers(_))
    ));
    s
}

/// A client stream that has sent its Header.
fn client_open() -> StreamState {
    let mut c = StreamState::new(Role::Client, ID);
    c.send(FrameKind::Header).unwrap();
    c
}

// ---- first frame in each direction is a Header ----

#[test]
fn peer_data_before_header_is_a_stream_error() {
    for role in [Role::Client, Role::Server] {
        let mut s = StreamState::new(role, ID);
        let err = s.recv(data(b"\x00")).unwrap_err();
        assert_eq!(err, StreamError::DataBeforeHeader { stream_id: ID });
        assert_eq!(err.initiator(), Initiator::Remote);
        assert_eq!(err.kitex_code(), kitex_code::ILLEGAL_FRAME);
        assert!(!s.is_finished(), "errors leave the state unchanged");
        // A Header afterwards still works.
        assert!(matches!(
            s.recv(f(FrameKind::Header)),
            Ok(RecvEvent::Headers(_))
        ));
    }
}

#[test]
fn local_data_before_header_is_rejected() {
    for role in [Role::Client, Role::Server] {
        let mut s = StreamState::new(role, ID);
        let err = s.send(FrameKind::Data).unwrap_err();
        assert_eq!(
            err,
            StreamError::HeaderNotSent {
                stream_id: ID,
                kind: FrameKind::Data
            }
        );
        assert_eq!(err.initiator(), Initiator::Local);
        assert_eq!(err.kitex_code(), kitex_code::ILLEGAL_OPERATION);
    }
}

#[test]
fn server_must_send_header_before_trailer() {
    let mut s = server_open();
    assert_eq!(
        s.send(FrameKind::Trailer),
        Err(StreamError::HeaderNotSent {
            stream_id: ID,
            kind: FrameKind::Trailer
        })
    );
    s.send(FrameKind::Header).unwrap();
    s.send(FrameKind::Trailer).unwrap();
    assert_eq!(s.finish_cause(), Some(FinishCause::LocalTrailer));
}

#[test]
fn second_header_from_peer_is_a_stream_error_not_a_connection_error() {
    for role in [Role::Client, Role::Server] {
        let mut s = StreamState::new(role, ID);
        s.recv(f(FrameKind::Header)).unwrap();
        let err = s.recv(f(FrameKind::Header)).unwrap_err();
        assert_eq!(err, StreamError::UnexpectedHeader { stream_id: ID });
        assert_eq!(err.kitex_code(), kitex_code::UNEXPECTED_HEADER);
        assert_eq!(err.stream_id(), ID);
        // The stream is still usable until the driver ends it.
        assert!(matches!(s.recv(data(b"x")), Ok(RecvEvent::Data(_))));
    }
}

#[test]
fn header_sent_twice_is_rejected() {
    let mut c = client_open();
    assert_eq!(
        c.send(FrameKind::Header),
        Err(StreamError::HeaderAlreadySent { stream_id: ID })
    );
    let mut s = server_open();
    s.send(FrameKind::Header).unwrap();
    s.send(FrameKind::Data).unwrap();
    assert_eq!(
        s.send(FrameKind::Header),
        Err(StreamError::HeaderAlreadySent { stream_id: ID })
    );
}

// ---- data flow ----

#[test]
fn data_flows_both_ways_while_open() {
    let mut c = client_open();
    let mut s = server_open();
    for _ in 0..3 {
        c.send(FrameKind::Data).unwrap();
        assert_eq!(
            s.recv(data(b"a")),
            Ok(RecvEvent::Data(Bytes::from_static(b"a")))
        );
    }
    s.send(FrameKind::Header).unwrap();
    assert_eq!(
        c.recv(f(FrameKind::Header)),
        Ok(RecvEvent::Headers(Headers::default()))
    );
    for _ in 0..3 {
        s.send(FrameKind::Data).unwrap();
        assert_eq!(
            c.recv(data(b"A")),
            Ok(RecvEvent::Data(Bytes::from_static(b"A")))
        );
    }
}

// ---- client half-close ----

#[test]
fn client_data_after_close_send_is_rejected() {
    let mut c = client_open();
    c.send(FrameKind::Data).unwrap();
    c.send(FrameKind::Trailer).unwrap();
    assert!(c.is_local_closed());
    assert!(!c.is_finished(), "CloseSend only half-closes");
    assert_eq!(
        c.send(FrameKind::Data),
        Err(StreamError::SendAfterClose {
            stream_id: ID,
            kind: FrameKind::Data
        })
    );
    // CloseSend idempotency is the driver's job: the second Trailer must not hit the wire.
    assert_eq!(
        c.send(FrameKind::Trailer),
        Err(StreamError::SendAfterClose {
            stream_id: ID,
            kind: FrameKind::Trailer
        })
    );
    // The receive side is still open.
    c.recv(f(FrameKind::Header)).unwrap();
    assert!(matches!(c.recv(data(b"A")), Ok(RecvEvent::Data(_))));
}

#[test]
fn server_sees_close_send_then_rejects_more_client_data() {
    let mut s = server_open();
    assert_eq!(s.recv(f(FrameKind::Trailer)), Ok(RecvEvent::RemoteClosed));
    assert!(s.is_remote_closed());
    assert!(!s.is_finished());
    assert_eq!(
        s.recv(data(b"late")),
        Err(StreamError::FrameAfterClose {
            stream_id: ID,
            kind: FrameKind::Data
        })
    );
    // A duplicate CloseSend is harmless.
    assert_eq!(s.recv(f(FrameKind::Trailer)), Ok(RecvEvent::Ignored));
    // The server can still answer.
    s.send(FrameKind::Header).unwrap();
    s.send(FrameKind::Data).unwrap();
    s.send(FrameKind::Trailer).unwrap();
}

#[test]
fn server_rejects_client_trailer_before_header() {
    let mut s = StreamState::new(Role::Server, ID);
    assert_eq!(
        s.recv(f(FrameKind::Trailer)),
        Err(StreamError::TrailerBeforeHeader { stream_id: ID })
    );
}

// ---- end of stream ----

#[test]
fn server_trailer_finishes_the_client_stream() {
    let mut c = client_open();
    c.recv(f(FrameKind::Header)).unwrap();
    let mut trailer = f(FrameKind::Trailer);
    trailer.headers.push_str("t", "v");
    let expected = trailer.headers.clone();
    assert_eq!(
        c.recv(trailer),
        Ok(RecvEvent::Finished {
            trailers: expected,
            error: None
        })
    );
    assert_eq!(c.finish_cause(), Some(FinishCause::RemoteTrailer));
    // A Kitex client answers with its own empty Trailer when it had not half-closed.
    c.send(FrameKind::Trailer).unwrap();
    // But nothing else.
    assert_eq!(
        c.send(FrameKind::Data),
        Err(StreamError::StreamFinished {
            stream_id: ID,
            kind: FrameKind::Data
        })
    );
}

#[test]
fn server_trailer_with_exception() {
    let mut c = client_open();
    c.recv(f(FrameKind::Header)).unwrap();
    let exc = ApplicationException::new(6, "biz error: boom");
    assert_eq!(
        c.recv(server_trailer_with_error(&exc)),
        Ok(RecvEvent::Finished {
            trailers: Headers::default(),
            error: Some(exc)
        })
    );
}

#[test]
fn client_tolerates_trailer_without_header() {
    // Old Kitex servers skip the Header before an early error (Kitex #1887).
    let mut c = client_open();
    let exc = ApplicationException::new(ApplicationException::UNKNOWN_METHOD, "no method");
    assert_eq!(
        c.recv(server_trailer_with_error(&exc)),
        Ok(RecvEvent::Finished {
            trailers: Headers::default(),
            error: Some(exc)
        })
    );
    assert!(c.is_finished());
}

#[test]
fn malformed_trailer_payload_still_finishes_the_stream() {
    let mut c = client_open();
    let mut t = f(FrameKind::Trailer);
    t.payload = Bytes::from_static(b"\x80\x01\x00\x03\x00");
    let err = c.recv(t).unwrap_err();
    assert!(matches!(
        err,
        StreamError::MalformedPayload {
            stream_id: ID,
            kind: FrameKind::Trailer,
            ..
        }
    ));
    assert_eq!(err.kitex_code(), kitex_code::ILLEGAL_FRAME);
    assert!(c.is_finished());
    assert_eq!(c.recv(data(b"x")), Ok(RecvEvent::Ignored));
}

// ---- reset ----

#[test]
fn client_rst_ends_the_stream_and_allows_the_trailing_close_send() {
    let mut c = client_open();
    c.send(FrameKind::Rst).unwrap();
    assert_eq!(c.finish_cause(), Some(FinishCause::LocalReset));
    assert_eq!(
        c.send(FrameKind::Data),
        Err(StreamError::StreamFinished {
            stream_id: ID,
            kind: FrameKind::Data
        })
    );
    assert_eq!(
        c.send(FrameKind::Rst),
        Err(StreamError::StreamFinished {
            stream_id: ID,
            kind: FrameKind::Rst
        })
    );
    // Spec §3: Rst, then an empty Trailer if not half-closed.
    c.send(FrameKind::Trailer).unwrap();
    // Whatever the server still had in flight is dropped.
    assert_eq!(c.recv(data(b"A")), Ok(RecvEvent::Ignored));
    assert_eq!(c.recv(f(FrameKind::Trailer)), Ok(RecvEvent::Ignored));
}

#[test]
fn client_rst_after_close_send_has_no_trailing_trailer() {
    let mut c = client_open();
    c.send(FrameKind::Trailer).unwrap();
    c.send(FrameKind::Rst).unwrap();
    assert!(c.send(FrameKind::Trailer).is_err());
}

#[test]
fn server_never_sends_rst() {
    let mut s = server_open();
    s.send(FrameKind::Header).unwrap();
    assert_eq!(
        s.send(FrameKind::Rst),
        Err(StreamError::NotAllowed {
            stream_id: ID,
            role: Role::Server,
            kind: FrameKind::Rst
        })
    );
}

#[test]
fn rst_from_client_ends_the_server_stream() {
    let mut s = server_open();
    let reason = ApplicationException::new(kitex_code::STREAM_TIMEOUT, "timeout");
    let rst = StreamFrame::rst(ID, "Echo", StreamProtocol::Thrift, Some("A,B"), &reason).unwrap();
    assert_eq!(
        s.recv(rst),
        Ok(RecvEvent::Reset {
            code: kitex_code::STREAM_TIMEOUT,
            message: "timeout".into(),
            cancel_path: Some("A,B".into())
        })
    );
    assert_eq!(s.finish_cause(), Some(FinishCause::RemoteReset));
    for kind in [FrameKind::Header, FrameKind::Data, FrameKind::Trailer] {
        assert_eq!(
            s.send(kind),
            Err(StreamError::StreamFinished {
                stream_id: ID,
                kind
            })
        );
    }
}

#[test]
fn rst_after_client_half_close_still_resets() {
    let mut s = server_open();
    s.recv(f(FrameKind::Trailer)).unwrap();
    assert!(matches!(
        s.recv(f(FrameKind::Rst)),
        Ok(RecvEvent::Reset { .. })
    ));
    assert!(s.is_finished());
}

#[test]
fn empty_rst_means_code_13_rst() {
    let mut c = client_open();
    assert_eq!(
        c.recv(f(FrameKind::Rst)),
        Ok(RecvEvent::Reset {
            code: 13,
            message: "rst".into(),
            cancel_path: None
        })
    );
    // A proxy reset: no trailing Trailer from us.
    assert!(c.send(FrameKind::Trailer).is_err());
}

#[test]
fn malformed_rst_payload_still_resets() {
    let mut s = server_open();
    let mut rst = f(FrameKind::Rst);
    rst.payload = Bytes::from_static(b"garbage!");
    assert!(matches!(
        s.recv(rst),
        Err(StreamError::MalformedPayload {
            kind: FrameKind::Rst,
            ..
        })
    ));
    assert!(s.is_finished());
}

// ---- after finish ----

#[test]
fn frames_after_finish_are_ignored() {
    let mut s = server_open();
    s.send(FrameKind::Header).unwrap();
    s.send(FrameKind::Trailer).unwrap();
    assert!(s.is_finished());
    for kind in [
        FrameKind::Meta,
        FrameKind::Header,
        FrameKind::Data,
        FrameKind::Trailer,
        FrameKind::Rst,
    ] {
        assert_eq!(s.recv(f(kind)), Ok(RecvEvent::Ignored), "{kind:?}");
    }
    assert_eq!(s.finish_cause(), Some(FinishCause::LocalTrailer));
}

#[test]
fn connection_loss_finishes_with_the_kitex_code_per_role() {
    let mut s = server_open();
    assert_eq!(s.on_connection_lost(), Some(kitex_code::CONNECTION_CLOSED));
    assert_eq!(s.on_connection_lost(), None);
    assert_eq!(s.finish_cause(), Some(FinishCause::ConnectionLost));

    let mut c = client_open();
    assert_eq!(c.on_connection_lost(), Some(kitex_code::TRANSPORT_CLOSING));
    assert!(
        c.send(FrameKind::Trailer).is_err(),
        "nothing is sent after connection loss"
    );
    assert_eq!(c.recv(data(b"x")), Ok(RecvEvent::Ignored));

    let mut done = client_open();
    done.recv(f(FrameKind::Trailer)).unwrap();
    assert_eq!(done.on_connection_lost(), None);
    assert_eq!(done.finish_cause(), Some(FinishCause::RemoteTrailer));
}

// ---- meta ----

#[test]
fn meta_frames_pass_through_without_changing_state() {
    let mut c = client_open();
    let mut m = f(FrameKind::Meta);
    m.headers.push_str("credit", "65536");
    m.payload = Bytes::from_static(b"p");
    let before = c.clone();
    assert_eq!(
        c.recv(m.clone()),
        Ok(RecvEvent::Meta {
            headers: m.headers,
            payload: m.payload
        })
    );
    assert_eq!(c, before);
    // Sending Meta needs our Header first, and stays possible after CloseSend (credit for the
    // receive direction).
    let mut fresh = StreamState::new(Role::Server, ID);
    assert!(fresh.send(FrameKind::Meta).is_err());
    c.send(FrameKind::Trailer).unwrap();
    c.send(FrameKind::Meta).unwrap();
}

#[test]
fn accessors_track_progress() {
    let mut c = StreamState::new(Role::Client, ID);
    assert_eq!((c.role(), c.stream_id()), (Role::Client, ID));
    assert!(!c.header_sent() && !c.header_received());
    c.send(FrameKind::Header).unwrap();
    assert!(c.header_sent());
    c.recv(f(FrameKind::Header)).unwrap();
    assert!(c.header_received());
    assert!(!c.is_local_closed() && !c.is_remote_closed() && !c.is_finished());
}
