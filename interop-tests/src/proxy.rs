//! A recording TCP proxy: sits between a client and a server, forwards every byte unchanged and
//! keeps a copy of what went each way on each connection, so a test can look at the exact
//! frames two peers exchanged (and count the connections a client opened).
//!
//! Bytes are recorded *before* they are forwarded: once a client has its reply, the reply's
//! bytes and the request's are in the record, with no waiting.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    task::JoinHandle,
};

/// Which way bytes went through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the connecting peer (the client) to the upstream server.
    ToServer,
    /// From the upstream server back to the client.
    ToClient,
}

/// The bytes of one proxied connection, per direction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnRecord {
    /// Everything the client sent, in order.
    pub to_server: Vec<u8>,
    /// Everything the server sent, in order.
    pub to_client: Vec<u8>,
}

impl ConnRecord {
    /// The bytes that went `dir`.
    pub fn bytes(&self, dir: Direction) -> &[u8] {
        match dir {
            Direction::ToServer => &self.to_server,
            Direction::ToClient => &self.to_client,
        }
    }
}

type Records = Arc<Mutex<Vec<ConnRecord>>>;

/// A recording proxy on `127.0.0.1:0` in front of one upstream address.
///
/// Dropping it stops accepting; connections already proxied run until either side closes.
#[derive(Debug)]
pub struct RecordingProxy {
    addr: SocketAddr,
    records: Records,
    accept: JoinHandle<()>,
}

impl RecordingProxy {
    /// Starts a proxy that forwards every connection it accepts to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let records = Records::default();
        let accept = tokio::spawn(accept_loop(listener, upstream, records.clone()));
        Ok(Self {
            addr,
            records,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections the proxy has accepted so far.
    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    /// A copy of what has gone through connection `index` (in accept order) so far.
    pub fn record(&self, index: usize) -> Option<ConnRecord> {
        self.lock().get(index).cloned()
    }

    /// A copy of what has gone through every connection so far, in accept order.
    pub fn records(&self) -> Vec<ConnRecord> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ConnRecord>> {
        // A panicking test thread cannot leave a record half-written (appends are single
        // `extend_from_slice` calls), so a poisoned lock still holds consistent data.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, records: Records) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!("recording proxy: accept failed: {e}");
                return;
            }
        };
        let index = {
            let mut records = records.lock().unwrap_or_else(PoisonError::into_inner);
            records.push(ConnRecord::default());
            records.len() - 1
        };
        tokio::spawn(proxy_conn(client, upstream, records.clone(), index));
    }
}

async fn proxy_conn(client: TcpStream, upstream: SocketAddr, records: Records, index: usize) {
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(e) => {
            tracing::warn!("recording proxy: connect to {upstream} failed: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        records.clone(),
        index,
        Direction::ToServer,
    );
    let down = pump(
        server_read,
        client_write,
        records,
        index,
        Direction::ToClient,
    );
    let _ = tokio::join!(up, down);
}

/// Copies `from` to `to`, recording every chunk before writing it; half-closes `to` at EOF.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    records: Records,
    index: usize,
    dir: Direction,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let chunk = &buf[..n];
        {
            let mut records = records.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(record) = records.get_mut(index) {
                match dir {
                    Direction::ToServer => record.to_server.extend_from_slice(chunk),
                    Direction::ToClient => record.to_client.extend_from_slice(chunk),
                }
            }
        }
        to.write_all(chunk).await?;
    }
}
