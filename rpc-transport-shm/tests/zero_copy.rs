//! A 1 MiB message crosses a shared-memory session without being copied by the transport on
//! either side: the sender's codec writes it straight into the arena, the receiver's codec is
//! handed `Bytes` pointing into the peer's arena. A counting allocator sees every heap byte
//! allocated in the process (client and server run here): a round trip of 1 MiB each way
//! allocates a few KiB of bookkeeping, where a single copy would allocate 1 MiB.
#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes};
use rpc_core::codec::Codec;
use rpc_core::serve::Listener;
use rpc_core::transport::BoxFuture;
use rpc_core::{
    CallOptions, Client, IncomingCall, MethodDesc, Mode, PayloadKind, Server, Service, ServiceDesc,
    Status,
};
use rpc_transport_shm::{ShmClient, ShmProtocol};

struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `alloc` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Raw;

impl Codec<Bytes> for Raw {
    const NAME: &'static str = "raw";
    fn encode<B: BufMut + ?Sized>(msg: &Bytes, dst: &mut B) -> Result<(), Status> {
        dst.put_slice(msg);
        Ok(())
    }
    fn decode(src: Bytes) -> Result<Bytes, Status> {
        Ok(src)
    }
    fn encoded_len(msg: &Bytes) -> Option<usize> {
        Some(msg.len())
    }
}

static METHODS: [MethodDesc; 1] = [MethodDesc {
    package: "t",
    service: "Blob",
    full_service: "t.Blob",
    name: "Chat",
    path: "/t.Blob/Chat",
    mode: Mode::Bidi,
    payload: PayloadKind::Protobuf,
}];
static DESC: ServiceDesc = ServiceDesc {
    package: "t",
    name: "Blob",
    full_name: "t.Blob",
    methods: &METHODS,
};

struct Blob;

impl Service for Blob {
    fn descriptor(&self) -> &'static ServiceDesc {
        &DESC
    }
    fn call(&self, call: IncomingCall) -> BoxFuture<'static, Result<(), Status>> {
        Box::pin(call.bidi::<Raw, Bytes, Bytes, _, _>(|_, mut s| async move {
            while let Some(m) = s.recv().await? {
                s.send(m).await?;
            }
            Ok(())
        }))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_1mib_message_is_not_copied_on_send_or_receive() {
    let path = std::env::temp_dir().join(format!("rpc-shm-zc-{}.sock", std::process::id()));
    let protocol = ShmProtocol::default();
    let server_stats = protocol.stats().clone();
    let _running = Listener::new(Server::builder().add_service(Blob).build())
        .protocol(protocol)
        .bind(rpc_core::Address::Shm(path.clone()))
        .await
        .unwrap()
        .start();
    let shm = ShmClient::builder(rpc_core::Address::shm(&path))
        .pool_size(1)
        .build();
    let stats = shm.stats().clone();
    let client = Client::new(shm);
    let mut call = client
        .bidi::<Raw, Bytes, Bytes>(&METHODS[0], CallOptions::new())
        .await
        .unwrap();
    let msg: Bytes = (0..1 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    // Warm up: the stream, its queues and the runtime's buffers exist after one round trip.
    for _ in 0..3 {
        call.send(msg.clone()).await.unwrap();
        assert_eq!(call.recv().await.unwrap().unwrap(), msg);
    }
    let before = ALLOCATED.load(Ordering::Relaxed);
    call.send(msg.clone()).await.unwrap();
    let got = call.recv().await.unwrap().unwrap();
    let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
    assert_eq!(got, msg);
    assert!(
        allocated < 64 * 1024,
        "a 1 MiB round trip allocated {allocated} bytes: the payload was copied"
    );
    // The received bytes are not on our heap: they point into the server's arena, which
    // counts them as in use until we drop them.
    assert!(server_stats.arena_bytes_in_use() >= 1 << 20);
    drop(got);
    assert_eq!(
        stats.fallback_messages() + server_stats.fallback_messages(),
        0
    );
    eprintln!("1 MiB each way: {allocated} bytes allocated");
}
