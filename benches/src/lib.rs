//! The benchmark harnesses' shared pieces: the `allocs`, `grpc_vs_tonic`, `load` and
//! `observe` binaries, the `codec` and `shm` benches, and the `server_allocs` guard test.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use examples::EchoIdl;

/// `in_flight` tasks make `calls` echo pingpong calls of flavour `I` through `client`
/// between them (100-character messages), and each checks its reply. What the `allocs`
/// bench and the `server_allocs` test drive the server with.
pub async fn pingpong_calls<I: EchoIdl>(client: &I::Client, calls: u64, in_flight: usize) {
    let left = Arc::new(AtomicU64::new(calls));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let client = client.clone();
            let left = left.clone();
            tokio::spawn(async move {
                let req = examples::EchoRequest {
                    message: "x".repeat(100),
                    ..Default::default()
                };
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let resp = I::ping_pong(&client, req.clone(), rpc_core::CallOptions::new())
                        .await
                        .expect("pingpong");
                    assert_eq!(resp.message.len(), 100, "echoed message");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("calling task");
    }
}

/// One transport's pingpong, as the `allocs` bench and the `server_allocs` test run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// Unary TTHeader, thrift payloads (`TtHeaderClient`, mux, framed).
    TtHeader,
    /// TTHeader Streaming, protobuf payloads.
    TtStream,
    /// gRPC, protobuf payloads (`GrpcClient`, one h2 connection).
    Grpc,
    /// Shared memory, protobuf payloads (`ShmClient`, one session); Linux only.
    Shm,
}

/// A row's client, typed by the IDL flavour its payloads use.
pub enum RowClient {
    /// Thrift payloads.
    Thrift(<examples::idl::Thrift as EchoIdl>::Client),
    /// Protobuf payloads.
    Proto(<examples::idl::Proto as EchoIdl>::Client),
}

/// Starts the echo server (`examples::server()`) for `row` on `server_rt` (loopback TCP, or
/// a Unix socket path under the temp dir for shm), builds the row's client (on first use it
/// connects from whatever runtime calls it), runs `run` with it, then shuts the server down.
pub fn with_row<R>(
    row: Row,
    server_rt: &tokio::runtime::Runtime,
    run: impl FnOnce(RowClient) -> R,
) -> R {
    use examples::idl::{Proto, Thrift};
    use rpc_core::serve::Listener;
    use rpc_core::Client;
    use rpc_transport_grpc::{GrpcClient, GrpcClientConfig, GrpcProtocol};
    use rpc_transport_ttheader::{ConnectionMode, Framing, TtHeaderClient, TtHeaderProtocol};

    let shm_path = std::env::temp_dir().join(format!(
        "rpc-bench-{}-{:?}.shm",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    ));
    let handle = server_rt.block_on(async {
        let listener = Listener::new(examples::server());
        let (listener, at) = match row {
            Row::TtHeader | Row::TtStream => (listener.protocol(TtHeaderProtocol::default()), None),
            Row::Grpc => (listener.protocol(GrpcProtocol::default()), None),
            Row::Shm => (
                listener.protocol(rpc_transport_shm::ShmProtocol::default()),
                Some(rpc_core::Address::Shm(shm_path.clone())),
            ),
        };
        let at = at.unwrap_or_else(|| "tcp://127.0.0.1:0".parse().expect("address"));
        listener.bind(at).await.expect("listen").start()
    });
    let addr = || {
        handle.local_addrs()[0]
            .socket_addr()
            .expect("a TCP listener has an address")
    };
    let tt = || {
        Client::new(
            TtHeaderClient::builder(addr())
                .pool_size(1)
                .connection_mode(ConnectionMode::Multiplexed)
                .unary_framing(Framing::Framed)
                .build(),
        )
    };
    let client = match row {
        Row::TtHeader => RowClient::Thrift(Thrift::client(tt())),
        Row::TtStream => RowClient::Proto(Proto::client(tt())),
        Row::Grpc => RowClient::Proto(Proto::client(Client::new(GrpcClient::with_config(
            addr(),
            GrpcClientConfig::default().connections(1),
        )))),
        Row::Shm => RowClient::Proto(Proto::client(Client::new(
            rpc_transport_shm::ShmClient::builder(rpc_core::Address::shm(&shm_path))
                .pool_size(1)
                .build(),
        ))),
    };
    let out = run(client);
    server_rt.block_on(handle.shutdown(std::time::Duration::from_millis(100)));
    let _ = std::fs::remove_file(&shm_path);
    out
}

/// A server runtime and a client runtime of one worker thread each, as the allocation
/// counters use them: `on_server_thread` runs on the server's threads as they start (to mark
/// them as the ones whose allocations count).
pub fn one_worker_runtimes(
    on_server_thread: impl Fn() + Send + Sync + 'static,
) -> (tokio::runtime::Runtime, tokio::runtime::Runtime) {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(on_server_thread)
        .enable_all()
        .build()
        .expect("server runtime");
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    (server, client)
}
