//! Service discovery on etcd, in the key/value layout of Kitex's registry
//! (`github.com/kitex-contrib/registry-etcd`), so Kitex services and ours find each other.
//!
//! # Layout
//!
//! One key per instance, attached to the registering process's lease:
//!
//! ```text
//! key:   kitex/registry-etcd/<service>/<address>
//! value: {"network":"tcp","address":"127.0.0.1:8888","weight":10,"tags":{"zone":"a"}}
//! ```
//!
//! * `<address>` is Go's `net.Addr.String()`: `HOST:PORT` for TCP (`[::1]:8888` for IPv6), the
//!   socket path for Unix sockets (`network` is then `"unix"`; we also write `"shm"` for the
//!   shared-memory transport's control socket, which Kitex ignores as an unknown network).
//! * `weight` is an integer; Kitex's default is 10 ([`rpc_core::discovery::DEFAULT_WEIGHT`]),
//!   and an entry with a weight of 0 or less is read as weight 1 here (Kitex's resolver skips
//!   it with a warning). `tags` is a string map; Kitex writes `null` when it has none, and we
//!   accept that, a missing field and `{}`.
//! * The lease's TTL is 60 s by default, as in Kitex (which reads it from
//!   `KITEX_ETCD_REGISTRY_LEASE_TTL`; [`EtcdRegistry::lease_ttl`] sets ours); the registrar
//!   keeps it alive at a third of the TTL. A crashed server stops keeping it alive and its keys
//!   disappear when the lease expires; a clean [`Registration::deregister`] deletes the keys and
//!   revokes the lease at once.
//!
//! Resolution reads the prefix `kitex/registry-etcd/<service>/` (the trailing slash keeps
//! `echo` from matching `echo2`) and then watches it from the revision read, so changes reach
//! clients without polling. When etcd is unreachable the resolver keeps the last set it had,
//! and when it comes back it reads the prefix again and watches anew; the registrar re-grants
//! its lease and re-puts its keys if the lease was lost meanwhile.
//!
//! # Bounds
//!
//! Values from etcd are untrusted: a value over [`MAX_VALUE_BYTES`] or not in the layout
//! above is skipped (with a warning), a service has at most [`MAX_INSTANCES`] instances, and
//! weights are clamped to `1..=`[`rpc_core::discovery::MAX_WEIGHT`]. A response from etcd is
//! at most [`rpc_transport_grpc::DEFAULT_MAX_RECV_MESSAGE`] (4 MiB), which bounds one read of
//! the prefix and one watch response.
//!
//! # Client
//!
//! etcd is spoken to through its v3 gRPC API (`KV` Range/Put/DeleteRange, `Watch`, `Lease`
//! Grant/Revoke/KeepAlive) with our own [`GrpcClient`] and stubs that rpc-codegen generates at
//! build time from a trimmed copy of etcd's `rpc.proto` and `kv.proto` (in this crate's
//! `proto/`, with etcd's packages and field numbers; the generated module is [`pb`]), rather
//! than with the `etcd-client` crate, because:
//!
//! * nothing outside Cargo is needed to build: the protos compile with protox, where
//!   `etcd-client`'s build script needs `protoc` on the machine;
//! * one gRPC stack: `etcd-client` brings tonic and hyper into every build of a service that
//!   registers itself, next to ours;
//! * it proves our gRPC client against a grpc-go server we did not write (etcd's), in every
//!   run of the discovery tests.
//!
//! One registration or resolution uses one HTTP/2 connection to the first endpoint that
//! answers, with keepalive PINGs every [`KEEPALIVE_INTERVAL`]. Endpoints are
//! `http://HOST:PORT` or `HOST:PORT`; TLS endpoints are not supported yet.

#![forbid(unsafe_code)]

/// The etcd v3 API messages and clients this crate uses (`etcdserverpb`, `mvccpb`), generated
/// by rpc-codegen from the trimmed copies of etcd's protos in this crate's `proto/` folder.
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/etcd.rs"));
}

use pb::mvccpb::event::EventType;
use pb::watch_request::RequestUnion;
use pb::{
    DeleteRangeRequest, KvClient, LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, PutRequest, RangeRequest, WatchClient,
    WatchCreateRequest, WatchRequest, WatchResponse,
};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::discovery::{
    Instance, Instances, Registrar, Registration, Resolution, Resolver, MAX_WEIGHT,
};
use rpc_core::transport::BoxFuture;
use rpc_core::Address;
use rpc_core::{CallOptions, Client, Status};
use rpc_transport_grpc::{GrpcClient, GrpcClientConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The key prefix of every registration (Kitex's `etcdPrefixTpl` without the service).
pub const KEY_PREFIX: &str = "kitex/registry-etcd";

/// The default lease TTL, as in Kitex.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// The largest value read as an instance (a Kitex value is well under 1 KiB).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The most instances one service resolves to; entries beyond are ignored.
pub const MAX_INSTANCES: usize = 10_000;

/// How long connecting to etcd and each request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The first wait before reconnecting to etcd after a failure; doubles up to
/// [`MAX_RECONNECT_BACKOFF`].
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two reconnects.
pub const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);

/// The prefix every instance key of `service` starts with: `kitex/registry-etcd/<service>/`.
pub fn service_prefix(service: &str) -> String {
    format!("{KEY_PREFIX}/{service}/")
}

/// The key of one instance: `kitex/registry-etcd/<service>/<address>`.
pub fn instance_key(service: &str, instance: &Instance) -> String {
    format!(
        "{}{}",
        service_prefix(service),
        network_address(&instance.address).1
    )
}

/// The registry value of an instance, as Kitex writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// `tcp`, `unix` (or `shm`).
    pub network: String,
    /// `HOST:PORT` or a socket path.
    pub address: String,
    /// The weight (Go `int`).
    pub weight: i64,
    /// Labels; Kitex writes `null` for none.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
}

fn network_address(a: &Address) -> (&'static str, String) {
    match a {
        Address::Tcp { host, port } if host.contains(':') => ("tcp", format!("[{host}]:{port}")),
        Address::Tcp { host, port } => ("tcp", format!("{host}:{port}")),
        Address::Unix(p) => ("unix", p.display().to_string()),
        Address::Shm(p) => ("shm", p.display().to_string()),
        // `Address` is non-exhaustive; a future scheme registers under its URL.
        other => (other.scheme(), other.to_string()),
    }
}

impl InstanceInfo {
    /// The value for `instance`.
    pub fn from_instance(instance: &Instance) -> InstanceInfo {
        let (network, address) = network_address(&instance.address);
        InstanceInfo {
            network: network.to_owned(),
            address,
            weight: i64::from(instance.weight),
            tags: (!instance.tags.is_empty()).then(|| instance.tags.clone()),
        }
    }

    /// The instance this value describes, or why it cannot be used.
    pub fn to_instance(&self) -> Result<Instance, String> {
        let address: Address = match self.network.as_str() {
            "tcp" | "tcp4" | "tcp6" => format!("tcp://{}", self.address)
                .parse()
                .map_err(|e| format!("bad tcp address: {e}"))?,
            "unix" => format!("unix://{}", self.address)
                .parse()
                .map_err(|e| format!("bad unix address: {e}"))?,
            "shm" => format!("shm://{}", self.address)
                .parse()
                .map_err(|e| format!("bad shm address: {e}"))?,
            n => return Err(format!("unknown network `{n}`")),
        };
        let weight = self.weight.clamp(1, i64::from(MAX_WEIGHT)) as u32;
        Ok(Instance {
            address,
            weight,
            tags: self.tags.clone().unwrap_or_default(),
        })
    }

    /// Parses a value off etcd (bounded; see the crate docs).
    pub fn decode(value: &[u8]) -> Result<Instance, String> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("value of {} bytes over the limit", value.len()));
        }
        let info: InstanceInfo =
            serde_json::from_slice(value).map_err(|e| format!("not an instance: {e}"))?;
        info.to_instance()
    }

    /// The JSON text of this value.
    pub fn encode(&self) -> String {
        // Serializing strings, an integer and a string map cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Parses `etcd://HOST:PORT/SERVICE` (as the echo binaries take it) into the etcd endpoint
/// (`http://HOST:PORT`) and the service name.
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| format!("`{url}`: expected etcd://HOST:PORT/SERVICE"))?;
    let (hostport, service) = rest
        .split_once('/')
        .ok_or_else(|| format!("`{url}`: missing /SERVICE"))?;
    if hostport.is_empty() || !hostport.contains(':') {
        return Err(format!("`{url}`: expected HOST:PORT before /SERVICE"));
    }
    if service.is_empty() || service.contains('/') {
        return Err(format!("`{url}`: bad service name `{service}`"));
    }
    Ok((format!("http://{hostport}"), service.to_owned()))
}

/// The interval of HTTP/2 keepalive PINGs on an etcd connection, so a peer that vanished
/// without closing the connection is noticed. etcd's server refuses pings more frequent than
/// its `--grpc-keepalive-min-time` (5 s by default), so this stays above that.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

fn status(what: &str, e: Status) -> Status {
    Status::unavailable(format!("etcd {what}: {e}"))
}

/// The range end that makes `[prefix, end)` every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`: the prefix with its last byte below 0xff incremented, or `\0`, all keys
/// from `prefix` on, if every byte is 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `http://HOST:PORT` or `HOST:PORT` as our transport's `tcp://HOST:PORT` (and `unix://` as
/// is). TLS (`https://`) is not supported.
fn endpoint_address(endpoint: &str) -> Result<Address, Status> {
    let bad = |e: String| Status::invalid_argument(format!("etcd endpoint `{endpoint}`: {e}"));
    let url = if let Some(rest) = endpoint.strip_prefix("http://") {
        format!("tcp://{}", rest.trim_end_matches('/'))
    } else if endpoint.starts_with("https://") {
        return Err(bad("TLS endpoints are not supported".to_owned()));
    } else if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("tcp://{endpoint}")
    };
    url.parse()
        .map_err(|e: rpc_core::address::AddressError| bad(e.to_string()))
}

/// One etcd member, reached over one HTTP/2 connection of our gRPC client.
#[derive(Clone)]
struct Etcd {
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    timeout: Duration,
}

impl Etcd {
    fn new(address: Address, timeout: Duration) -> Etcd {
        let cfg = GrpcClientConfig::default()
            .connections(1)
            .connect_timeout(timeout)
            .keepalive(KEEPALIVE_INTERVAL, timeout);
        let client = Client::new(GrpcClient::with_config(address, cfg));
        Etcd {
            kv: KvClient::new(client.clone()),
            watch: WatchClient::new(client.clone()),
            lease: LeaseClient::new(client),
            timeout,
        }
    }

    /// The options of one unary request: bounded by the request timeout.
    fn unary(&self) -> CallOptions {
        CallOptions::new().timeout(self.timeout)
    }

    async fn range_prefix(&self, prefix: &str) -> Result<pb::RangeResponse, Status> {
        let req = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..RangeRequest::default()
        };
        self.kv
            .range_with(req, self.unary())
            .await
            .map(|r| r.into_inner())
            .map_err(|e| status("get", e))
    }

    async fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), Status> {
        let req = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
        };
        self.kv
            .put_with(req, self.unary())
            .await
            .map(drop)
            .map_err(|e| status("put", e))
    }

    async fn delete(&self, key: &str) -> Result<(), Status> {
        let req = DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
        };
        self.kv
            .delete_range_with(req, self.unary())
            .await
            .map(drop)
            .map_err(|e| status("delete", e))
    }

    async fn lease_grant(&self, ttl: i64) -> Result<i64, Status> {
        let r = self
            .lease
            .lease_grant_with(LeaseGrantRequest { ttl, id: 0 }, self.unary())
            .await
            .map_err(|e| status("lease grant", e))?
            .into_inner();
        if !r.error.is_empty() {
            return Err(Status::unavailable(format!(
                "etcd lease grant: {}",
                r.error
            )));
        }
        Ok(r.id)
    }

    /// Revokes `id`. A lease etcd no longer knows (expired, revoked by someone else) is
    /// already what a revoke wants: not an error.
    async fn lease_revoke(&self, id: i64) -> Result<(), Status> {
        match self
            .lease
            .lease_revoke_with(LeaseRevokeRequest { id }, self.unary())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == rpc_core::Code::NotFound => Ok(()),
            Err(e) => Err(status("lease revoke", e)),
        }
    }
}

/// Connects to the first of `endpoints` that answers a read within `timeout`.
async fn connect(endpoints: &[String], timeout: Duration) -> Result<Etcd, Status> {
    let mut last = Status::unavailable("etcd connect: no endpoints");
    for endpoint in endpoints {
        let etcd = Etcd::new(endpoint_address(endpoint)?, timeout);
        // A cheap request proves the member answers (the transport connects lazily).
        let probe = RangeRequest {
            key: KEY_PREFIX.as_bytes().to_vec(),
            count_only: true,
            ..RangeRequest::default()
        };
        match tokio::time::timeout(timeout, etcd.kv.range_with(probe, etcd.unary())).await {
            Ok(Ok(_)) => return Ok(etcd),
            Ok(Err(e)) => last = status(&format!("connect to {endpoint}"), e),
            Err(_) => last = Status::unavailable(format!("etcd connect to {endpoint}: timed out")),
        }
    }
    Err(last)
}

/// The etcd registry: a [`Registrar`] and a [`Resolver`] over the same endpoints.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    endpoints: Vec<String>,
    ttl: Duration,
    timeout: Duration,
}

impl EtcdRegistry {
    /// A registry at `endpoints` (`http://HOST:PORT` or `HOST:PORT`).
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdRegistry {
        EtcdRegistry {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ttl: DEFAULT_LEASE_TTL,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The lease TTL of registrations (whole seconds, at least 1; default 60 s): how long a
    /// crashed server stays in the set.
    pub fn lease_ttl(mut self, ttl: Duration) -> EtcdRegistry {
        self.ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// How long connecting and each request may take (default 3 s).
    pub fn request_timeout(mut self, t: Duration) -> EtcdRegistry {
        self.timeout = t;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Registration

struct Registered {
    keys: Vec<(String, String)>,
    ttl: i64,
}

/// Grants a lease and puts every key under it.
async fn put_all(etcd: &Etcd, reg: &Registered) -> Result<i64, Status> {
    let lease = etcd.lease_grant(reg.ttl).await?;
    put_keys(etcd, reg, lease).await?;
    Ok(lease)
}

/// Puts every key under `lease`.
async fn put_keys(etcd: &Etcd, reg: &Registered, lease: i64) -> Result<(), Status> {
    for (k, v) in &reg.keys {
        etcd.put(k, v, lease).await?;
    }
    Ok(())
}

/// One keepalive round trip on the stream: the lease's new TTL.
async fn keep_alive_once(
    call: &mut rpc_core::BidiStreamingClient<LeaseKeepAliveRequest, LeaseKeepAliveResponse>,
    lease: i64,
    timeout: Duration,
) -> Result<i64, Status> {
    call.send(LeaseKeepAliveRequest { id: lease })
        .await
        .map_err(|e| status("keepalive", e))?;
    match tokio::time::timeout(timeout, call.recv()).await {
        Ok(Ok(Some(r))) => Ok(r.ttl),
        Ok(Ok(None)) => Err(Status::unavailable("etcd keepalive stream ended")),
        Ok(Err(e)) => Err(status("keepalive", e)),
        Err(_) => Err(Status::unavailable("etcd keepalive: no answer in time")),
    }
}

/// Keeps `lease` alive every third of the TTL; on any failure, reconnects and re-registers
/// (a new lease) as soon as etcd answers again. Runs until aborted.
async fn keep_alive(
    mut etcd: Etcd,
    mut lease: i64,
    reg: Arc<Registered>,
    shared: LeaseCell,
    endpoints: Vec<String>,
    timeout: Duration,
) {
    let period = Duration::from_millis((reg.ttl as u64 * 1000 / 3).max(100));
    let mut backoff = RECONNECT_BACKOFF;
    loop {
        // One keepalive stream for as long as it works.
        let alive = async {
            let mut call = etcd
                .lease
                .lease_keep_alive()
                .await
                .map_err(|e| status("keepalive", e))?;
            loop {
                if keep_alive_once(&mut call, lease, timeout).await? <= 0 {
                    return Err(Status::not_found("lease expired"));
                }
                tokio::time::sleep(period).await;
            }
        };
        let alive: Result<std::convert::Infallible, Status> = alive.await;
        let Err(e) = alive;
        tracing::warn!(error = %e, "etcd lease keepalive failed; re-registering");
        // Re-register on a new connection: the lease may be gone (expired while etcd was
        // away) or still there.
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            match connect(&endpoints, timeout).await {
                Ok(c) => etcd = c,
                Err(e) => {
                    tracing::debug!(error = %e, "etcd reconnect failed; retrying");
                    continue;
                }
            }
            let new = match etcd.lease_grant(reg.ttl).await {
                Ok(new) => new,
                Err(e) => {
                    tracing::debug!(error = %e, "etcd re-registration failed; retrying");
                    continue;
                }
            };
            // Recorded before any key is put under it: a deregistration that aborts this task
            // from here on revokes the lease the keys are under.
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = new;
            match put_keys(&etcd, &reg, new).await {
                Ok(()) => {
                    let old = std::mem::replace(&mut lease, new);
                    // The old lease, if it survived, would keep duplicate keys: drop it.
                    let _ = etcd.lease_revoke(old).await;
                    backoff = RECONNECT_BACKOFF;
                    break;
                }
                Err(e) => {
                    *shared.lock().unwrap_or_else(|e| e.into_inner()) = lease;
                    let _ = etcd.lease_revoke(new).await;
                    tracing::debug!(error = %e, "etcd re-registration failed; retrying");
                }
            }
        }
    }
}

type LeaseCell = Arc<std::sync::Mutex<i64>>;

impl Registrar for EtcdRegistry {
    fn register(
        &self,
        service: &str,
        instances: Vec<Instance>,
    ) -> BoxFuture<'static, Result<Registration, Status>> {
        let this = self.clone();
        let service = service.to_owned();
        Box::pin(async move {
            let etcd = connect(&this.endpoints, this.timeout).await?;
            let reg = Arc::new(Registered {
                keys: instances
                    .iter()
                    .map(|i| {
                        (
                            instance_key(&service, i),
                            InstanceInfo::from_instance(i).encode(),
                        )
                    })
                    .collect(),
                ttl: this.ttl.as_secs().max(1) as i64,
            });
            let lease = put_all(&etcd, &reg).await?;
            let cell: LeaseCell = Arc::new(std::sync::Mutex::new(lease));
            let task = tokio::spawn(keep_alive(
                etcd,
                lease,
                reg.clone(),
                cell.clone(),
                this.endpoints.clone(),
                this.timeout,
            ));
            Ok(Registration::new(instances, move || {
                Box::pin(async move {
                    task.abort();
                    let _ = task.await;
                    let lease = *cell.lock().unwrap_or_else(|e| e.into_inner());
                    // A new connection: the registration's may be stale after an etcd restart.
                    let etcd = connect(&this.endpoints, this.timeout).await?;
                    for (k, _) in &reg.keys {
                        etcd.delete(k).await?;
                    }
                    etcd.lease_revoke(lease).await
                }) as BoxFuture<'static, Result<(), Status>>
            }))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution

/// The instances under a prefix, by key.
#[derive(Default)]
struct Set {
    by_key: BTreeMap<Vec<u8>, Instance>,
}

impl Set {
    fn put(&mut self, key: &[u8], value: &[u8]) {
        match InstanceInfo::decode(value) {
            Ok(i) => {
                if self.by_key.len() < MAX_INSTANCES || self.by_key.contains_key(key) {
                    self.by_key.insert(key.to_vec(), i);
                }
            }
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "etcd entry skipped");
                self.by_key.remove(key);
            }
        }
    }
    fn instances(&self) -> Instances {
        Arc::new(self.by_key.values().cloned().collect())
    }
}

/// Reads the prefix; returns the set and the revision it was read at.
async fn read(etcd: &Etcd, prefix: &str) -> Result<(Set, i64), Status> {
    let r = etcd.range_prefix(prefix).await?;
    let mut set = Set::default();
    for kv in &r.kvs {
        set.put(&kv.key, &kv.value);
    }
    let rev = r.header.map_or(0, |h| h.revision);
    Ok((set, rev))
}

/// A watch stream with one watcher on `prefix` from revision `rev + 1`.
async fn watch_from(
    etcd: &Etcd,
    prefix: &str,
    rev: i64,
) -> Result<rpc_core::BidiStreamingClient<WatchRequest, WatchResponse>, Status> {
    let mut call = etcd.watch.watch().await.map_err(|e| status("watch", e))?;
    let create = WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_end(prefix.as_bytes()),
        start_revision: rev + 1,
        progress_notify: false,
    };
    call.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    })
    .await
    .map_err(|e| status("watch", e))?;
    // The send side stays open: etcd ends the watch when the client closes it.
    Ok(call)
}

/// Applies one watch response to `set`; whether anything changed. `Err` when the watcher was
/// cancelled (compacted past our revision, or by the server): the caller reads anew.
fn apply(set: &mut Set, rev: &mut i64, resp: &WatchResponse) -> Result<bool, Status> {
    if resp.canceled {
        return Err(Status::aborted(format!(
            "watch cancelled (compact revision {}): {}",
            resp.compact_revision, resp.cancel_reason
        )));
    }
    if let Some(h) = &resp.header {
        *rev = (*rev).max(h.revision);
    }
    for ev in &resp.events {
        let Some(kv) = &ev.kv else { continue };
        match EventType::try_from(ev.r#type) {
            Ok(EventType::Put) => set.put(&kv.key, &kv.value),
            Ok(EventType::Delete) => {
                set.by_key.remove(&kv.key);
            }
            Err(_) => {
                tracing::warn!(
                    r#type = ev.r#type,
                    "etcd watch event of unknown type skipped"
                );
            }
        }
        *rev = (*rev).max(kv.mod_revision);
    }
    Ok(!resp.events.is_empty())
}

/// Follows the prefix until the receiver side is gone: applies watch events; on a watch
/// failure keeps the last set, reconnects with backoff, reads again and watches anew.
async fn follow(
    mut etcd: Etcd,
    endpoints: Vec<String>,
    timeout: Duration,
    prefix: String,
    mut set: Set,
    mut rev: i64,
    tx: watch::Sender<Instances>,
) {
    let mut backoff = RECONNECT_BACKOFF;
    loop {
        let failed = async {
            let mut stream = watch_from(&etcd, &prefix, rev).await?;
            loop {
                let resp = tokio::select! {
                    r = stream.recv() => r.map_err(|e| status("watch", e))?,
                    () = tx.closed() => return Ok(()), // nobody listens any more
                };
                let Some(resp) = resp else {
                    return Err(Status::unavailable("watch stream ended"));
                };
                if !apply(&mut set, &mut rev, &resp)? {
                    continue;
                }
                backoff = RECONNECT_BACKOFF;
                if tx.send(set.instances()).is_err() {
                    return Ok(()); // nobody listens any more
                }
            }
        }
        .await;
        match failed {
            Ok(()) => return,
            Err(e) => tracing::warn!(%prefix, error = %e, "etcd watch lost; keeping the last set"),
        }
        // Reconnect, read the whole prefix again, then watch from there.
        loop {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
            etcd = match connect(&endpoints, timeout).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "etcd reconnect failed");
                    continue;
                }
            };
            match read(&etcd, &prefix).await {
                Ok((s, r)) => {
                    set = s;
                    rev = r;
                    tx.send_replace(set.instances());
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "etcd read failed"),
            }
        }
    }
}

impl Resolver for EtcdRegistry {
    fn resolve(&self, service: &str) -> BoxFuture<'static, Result<Resolution, Status>> {
        let this = self.clone();
        let prefix = service_prefix(service);
        Box::pin(async move {
            let etcd = connect(&this.endpoints, this.timeout).await?;
            let (set, rev) = read(&etcd, &prefix).await?;
            let (tx, rx) = watch::channel(set.instances());
            let task = tokio::spawn(follow(
                etcd,
                this.endpoints.clone(),
                this.timeout,
                prefix,
                set,
                rev,
                tx,
            ));
            Ok(Resolution::with_task(rx, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kitex_json_both_ways() {
        let i = Instance::new("tcp://127.0.0.1:8888".parse().unwrap())
            .with_weight(7)
            .with_tag("zone", "a");
        assert_eq!(
            InstanceInfo::from_instance(&i).encode(),
            r#"{"network":"tcp","address":"127.0.0.1:8888","weight":7,"tags":{"zone":"a"}}"#
        );
        assert_eq!(
            instance_key("echo", &i),
            "kitex/registry-etcd/echo/127.0.0.1:8888"
        );
        // As Kitex writes it without tags.
        let kitex = br#"{"network":"tcp","address":"[::1]:9000","weight":10,"tags":null}"#;
        let got = InstanceInfo::decode(kitex).unwrap();
        assert_eq!(got.address.to_string(), "tcp://[::1]:9000");
        assert_eq!((got.weight, got.tags.len()), (10, 0));
        assert_eq!(
            instance_key("echo", &got),
            "kitex/registry-etcd/echo/[::1]:9000"
        );
        let unix = Instance::new("unix:///tmp/e.sock".parse().unwrap());
        assert_eq!(
            InstanceInfo::from_instance(&unix).encode(),
            r#"{"network":"unix","address":"/tmp/e.sock","weight":10,"tags":null}"#
        );
        assert_eq!(
            InstanceInfo::decode(br#"{"network":"unix","address":"/tmp/e.sock","weight":0}"#)
                .unwrap()
                .weight,
            1
        );
    }

    #[test]
    fn hostile_values_are_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"network":"udp","address":"1.2.3.4:5","weight":1}"#,
            br#"{"network":"tcp","address":"nohost","weight":1}"#,
            br#"{"network":"tcp","address":"1.2.3.4:5","weight":"heavy"}"#,
        ] {
            assert!(
                InstanceInfo::decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = vec![b' '; MAX_VALUE_BYTES + 1];
        assert!(InstanceInfo::decode(&big).is_err());
        let heavy = br#"{"network":"tcp","address":"1.2.3.4:5","weight":99999999999}"#;
        assert_eq!(InstanceInfo::decode(heavy).unwrap().weight, MAX_WEIGHT);
    }

    #[test]
    fn prefix_ranges_and_endpoints() {
        assert_eq!(prefix_end(b"a/b/"), b"a/b0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        for (e, want) in [
            ("http://127.0.0.1:2379", "tcp://127.0.0.1:2379"),
            ("http://127.0.0.1:2379/", "tcp://127.0.0.1:2379"),
            ("127.0.0.1:2379", "tcp://127.0.0.1:2379"),
            ("http://[::1]:2379", "tcp://[::1]:2379"),
            ("unix:///tmp/etcd.sock", "unix:///tmp/etcd.sock"),
        ] {
            assert_eq!(endpoint_address(e).unwrap().to_string(), want, "{e}");
        }
        for bad in ["https://127.0.0.1:2379", "http://nohost", ""] {
            assert!(endpoint_address(bad).is_err(), "{bad}");
        }
    }

    fn event(t: i32, key: &[u8], value: &[u8], rev: i64) -> pb::mvccpb::Event {
        pb::mvccpb::Event {
            r#type: t,
            kv: Some(pb::mvccpb::KeyValue {
                key: key.to_vec(),
                value: value.to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn watch_responses_apply_in_order_and_hostile_ones_are_contained() {
        let good = br#"{"network":"tcp","address":"127.0.0.1:1","weight":10}"#;
        let (mut set, mut rev) = (Set::default(), 5);
        // The creation response: nothing changes.
        let created = WatchResponse {
            created: true,
            ..Default::default()
        };
        assert!(!apply(&mut set, &mut rev, &created).unwrap());
        let resp = WatchResponse {
            events: vec![
                event(0, b"k1", good, 6),
                event(0, b"k2", b"garbage", 7),
                // An event type etcd does not define is skipped, not fatal.
                event(7, b"k3", good, 8),
                // An event without its key-value is skipped.
                pb::mvccpb::Event::default(),
            ],
            ..Default::default()
        };
        assert!(apply(&mut set, &mut rev, &resp).unwrap());
        assert_eq!(set.by_key.len(), 1);
        assert_eq!(rev, 8);
        let del = WatchResponse {
            events: vec![event(1, b"k1", b"", 9)],
            ..Default::default()
        };
        assert!(apply(&mut set, &mut rev, &del).unwrap());
        assert!(set.by_key.is_empty());
        let cancelled = WatchResponse {
            canceled: true,
            compact_revision: 3,
            ..Default::default()
        };
        assert_eq!(
            apply(&mut set, &mut rev, &cancelled).unwrap_err().code(),
            rpc_core::Code::Aborted
        );
    }

    #[test]
    fn etcd_urls() {
        assert_eq!(
            parse_url("etcd://127.0.0.1:2379/echo").unwrap(),
            ("http://127.0.0.1:2379".to_owned(), "echo".to_owned())
        );
        for bad in [
            "tcp://x:1/echo",
            "etcd://127.0.0.1:2379",
            "etcd://127.0.0.1:2379/",
            "etcd://host/echo",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
