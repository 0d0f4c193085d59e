//! The echo server answers the golden Kitex frames (`tests/data/*.hex`, copied from the shared
//! vectors, built from the Kitex sources) byte for byte where the answer is fixed: a Kitex
//! client opening `TestService.Echo`, sending `Request{1:'a'}` and closing gets the Header and
//! Trailer frames a Kitex server sends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::serve::Listener;
use rpc_core::{Codec, ThriftCodec};
use rpc_transport_ttheader::proto::{FrameKind, Limits, StreamFrame};
use rpc_transport_ttheader::TtHeaderProtocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn vector(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kitex_bidi_stream_gets_kitex_frames_back() {
    let h = Listener::new(examples::server())
        .protocol(TtHeaderProtocol::default())
        .bind("tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .start();
    let addr = h.local_addrs()[0].socket_addr().unwrap();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    for v in [
        "stream_c2s_header_open",
        "stream_data_request_a",
        "stream_trailer_empty",
    ] {
        sock.write_all(&vector(v)).await.unwrap();
    }
    // Read the three frames the server sends back, keeping their raw bytes.
    let mut buf = BytesMut::new();
    let mut raw = Vec::new();
    let read = async {
        while raw.len() < 3 {
            let before = buf.clone();
            if let Some(f) = StreamFrame::decode(&mut buf, &Limits::default()).unwrap() {
                let used = before.len() - buf.len();
                raw.push((f, Bytes::copy_from_slice(&before[..used])));
                continue;
            }
            assert!(
                sock.read_buf(&mut buf).await.unwrap() > 0,
                "connection closed"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no answer");
    let kinds: Vec<_> = raw.iter().map(|(f, _)| f.kind).collect();
    assert_eq!(
        kinds,
        [FrameKind::Header, FrameKind::Data, FrameKind::Trailer]
    );
    assert_eq!(
        &raw[0].1[..],
        &vector("stream_s2c_header_empty")[..],
        "Header frame bytes"
    );
    assert_eq!(
        &raw[2].1[..],
        &vector("stream_trailer_empty")[..],
        "Trailer frame bytes"
    );
    let res: examples::thrift::Response = ThriftCodec::decode(raw[1].0.payload.clone()).unwrap();
    assert_eq!((res.message.as_str(), res.index), ("a", Some(0)));
    h.shutdown(Duration::from_secs(1)).await;
}
