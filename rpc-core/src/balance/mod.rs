//! Client-side load balancing over a [`Resolution`], for every
//! transport.
//!
//! [`Balanced`] is itself a [`ClientTransport`]: each [`open`](ClientTransport::open) — one per
//! unary call, one per stream — picks an instance with the client's [`Policy`] and opens the
//! stream on that instance's own transport client (its connection pool). A stream therefore
//! stays on the instance it was opened on for its whole life, and every layer above (unary
//! layers, retries, stream middleware) works unchanged. Make one with
//! [`Balanced::connect`] for any [`Connect`] transport, and hand it to [`Client::new`](crate::Client::new) or to a
//! generated client's `new`.
//!
//! * **Policies**: smooth weighted round robin ([`Policy::RoundRobin`]), power of two choices
//!   on in-flight streams divided by weight ([`Policy::P2c`]), consistent hashing on a request
//!   key ([`Policy::ConsistentHash`]: the call's [`HashKey`] extension, else the metadata entry
//!   [`HASH_METADATA_KEY`]; a call with neither gets a random instance).
//! * **Ejection**: a failed open (connection refused or timed out: nothing was sent) ejects the
//!   instance at once and the open is tried on another instance, up to
//!   [`MAX_OPEN_ATTEMPTS`]; each instance has a circuit breaker ([`Breaker`]) that also counts
//!   streams ending `UNAVAILABLE` (a connection lost under them). An ejected instance is tried
//!   again after a backoff that doubles per failed probe (100 ms up to 10 s by default). If
//!   every instance is ejected the balancer picks among all of them rather than refuse.
//! * **Updates**: a background task follows the resolution. A new set keeps the state (pool,
//!   in-flight count, breaker) of every address still in it and drops the others; a stream
//!   already open holds its own connection, so calls in flight on a removed instance finish
//!   undisturbed. An empty update from the resolver is applied (calls then fail `UNAVAILABLE`
//!   until instances come back); a resolver that stops keeps the last set.
//!
//! An open that could not be sent anywhere fails with a status marked
//! [`NotSent`], which tells the retry layer the request was never
//! processed.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::address::Address;
use crate::codec::Encodable;
use crate::context::CallContext;
use crate::discovery::{Instance, Resolution};
use crate::resilience::breaker::{Breaker, BreakerConfig};
use crate::resilience::NotSent;
use crate::status::{Code, Status};
use crate::transport::{BoxFuture, ClientEvent, ClientStreamRaw, ClientTransport, Connect};

/// How many instances one open tries before it fails (each failure ejects its instance).
pub const MAX_OPEN_ATTEMPTS: usize = 3;

/// The metadata entry consistent hashing reads when the call has no [`HashKey`] extension.
pub const HASH_METADATA_KEY: &str = "x-hash-key";

/// Virtual nodes per unit of weight on the consistent-hash ring (weight 10, the default, puts
/// 40 points on the ring: an even enough spread for a handful of instances, and a ring of at
/// most `MAX_WEIGHT * 4` points per instance).
pub const VNODES_PER_WEIGHT: u32 = 4;

/// How a balanced client picks an instance per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Power of two choices: two random instances, the one with fewer streams in flight per
    /// unit of weight.
    P2c,
    /// Consistent hashing on the call's key: the same key reaches the same instance while it
    /// is in the set, and an instance leaving moves only its own keys.
    ConsistentHash,
}

impl FromStr for Policy {
    type Err = String;
    /// `rr`, `p2c` or `hash`.
    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "rr" | "round-robin" => Ok(Policy::RoundRobin),
            "p2c" => Ok(Policy::P2c),
            "hash" | "consistent-hash" => Ok(Policy::ConsistentHash),
            _ => Err(format!("unknown balancing policy `{s}` (rr, p2c or hash)")),
        }
    }
}

/// The key of a call for [`Policy::ConsistentHash`], set as a call extension
/// (`ctx.extensions_mut().insert(HashKey::of(&user_id))`, from an interceptor or a layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKey(pub u64);

impl HashKey {
    /// The key of any hashable value (stable within one build).
    pub fn of(v: &impl Hash) -> HashKey {
        HashKey(stable_hash(v))
    }
}

fn stable_hash(v: &(impl Hash + ?Sized)) -> u64 {
    // DefaultHasher::new() has fixed keys: the same value hashes the same in every process of
    // one build, which is what a ring shared by a client's calls needs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Builds a transport client for one instance.
pub type MakeTransport =
    Arc<dyn Fn(&Instance) -> Result<Arc<dyn ClientTransport>, Status> + Send + Sync>;

/// One instance with its transport and health.
struct Endpoint {
    instance: Instance,
    transport: Arc<dyn ClientTransport>,
    in_flight: AtomicUsize,
    /// Streams opened on it.
    opened: AtomicU64,
    /// Opens that failed `UNAVAILABLE` on it (each ejected it).
    failed_opens: AtomicU64,
    breaker: Mutex<Breaker>,
    /// Whether the breaker may not be closed (set with every change that leaves it not
    /// closed): while false, picking skips the breaker's lock.
    suspect: std::sync::atomic::AtomicBool,
}

impl Endpoint {
    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn available(&self, now: Instant) -> bool {
        !self.suspect.load(Ordering::Acquire) || self.breaker().would_allow(now)
    }
    /// Changes the breaker and updates the fast-path flag.
    fn update<R>(&self, now: Instant, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut b = self.breaker();
        let r = f(&mut b);
        self.suspect.store(
            b.state(now) != crate::resilience::BreakerState::Closed,
            Ordering::Release,
        );
        r
    }
}

/// An immutable set of endpoints with the policy's precomputed state.
struct Snapshot {
    endpoints: Vec<Arc<Endpoint>>,
    /// Smooth WRR current weights, one per endpoint.
    wrr: Mutex<Vec<i64>>,
    /// Sorted (point, endpoint index).
    ring: Vec<(u64, usize)>,
}

impl Snapshot {
    fn new(endpoints: Vec<Arc<Endpoint>>, policy: Policy) -> Snapshot {
        let mut ring = Vec::new();
        if policy == Policy::ConsistentHash {
            for (i, e) in endpoints.iter().enumerate() {
                let addr = e.instance.address.to_string();
                for v in 0..e.instance.effective_weight() * VNODES_PER_WEIGHT {
                    ring.push((stable_hash(&(addr.as_str(), v)), i));
                }
            }
            ring.sort_unstable();
        }
        Snapshot {
            wrr: Mutex::new(vec![0; endpoints.len()]),
            endpoints,
            ring,
        }
    }
}

struct Shared {
    policy: Policy,
    snapshot: RwLock<Arc<Snapshot>>,
    make: MakeTransport,
    breaker: BreakerConfig,
    rng: AtomicU64,
    /// Set once the resolution's watcher task exists (aborted when the last clone drops).
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(t) = self
            .watcher
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

/// Per-instance breaker defaults for balancers: ejected for 100 ms after the first failure,
/// doubling per failed probe up to 10 s; opened by 50% `UNAVAILABLE` over at least 5 streams
/// in 5 s.
pub fn default_instance_breaker() -> BreakerConfig {
    BreakerConfig {
        window: Duration::from_secs(5),
        min_calls: 5,
        failure_ratio: 0.5,
        open_for: Duration::from_millis(100),
        max_open: Duration::from_secs(10),
        probes: 1,
    }
}

/// Counters of one instance of a [`Balanced`] transport.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The instance's address.
    pub address: Address,
    /// Streams open on it now.
    pub in_flight: usize,
    /// Streams opened on it since it joined the set.
    pub opened: u64,
    /// Opens that failed on it (connect refused or timed out), each ejecting it.
    pub failed_opens: u64,
    /// Whether it is ejected (its breaker open) now.
    pub ejected: bool,
}

/// A load-balanced [`ClientTransport`] over a resolved service. Cheap to clone (clones share
/// the instances); the resolution is followed until the last clone is dropped.
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("policy", &self.shared.policy)
            .field("instances", &self.instances())
            .finish()
    }
}

/// Builds a [`Balanced`] transport.
pub struct BalancedBuilder {
    policy: Policy,
    breaker: BreakerConfig,
    make: MakeTransport,
}

impl std::fmt::Debug for BalancedBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedBuilder")
            .field("policy", &self.policy)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl BalancedBuilder {
    /// The picking policy (default round robin).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The per-instance circuit breaker (default [`default_instance_breaker`]).
    pub fn instance_breaker(mut self, cfg: BreakerConfig) -> Self {
        self.breaker = cfg;
        self
    }

    /// Starts balancing over `resolution` (spawns the task that follows it: call inside a
    /// tokio runtime).
    pub fn build(self, mut resolution: Resolution) -> Balanced {
        let shared = Arc::new(Shared {
            policy: self.policy,
            snapshot: RwLock::new(Arc::new(Snapshot::new(Vec::new(), self.policy))),
            make: self.make,
            breaker: self.breaker,
            rng: AtomicU64::new(seed()),
            watcher: Mutex::new(None),
        });
        shared.apply(&resolution.current_and_mark_seen());
        let weak = Arc::downgrade(&shared);
        let task = tokio::spawn(async move {
            while resolution.changed().await {
                let set = resolution.current_and_mark_seen();
                match weak.upgrade() {
                    Some(s) => s.apply(&set),
                    None => return,
                }
            }
        });
        *shared.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Balanced { shared }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    stable_hash(&(t, std::process::id())) | 1
}

impl Shared {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the set, keeping the endpoint of every address still present.
    fn apply(&self, set: &[Instance]) {
        let old = self.snapshot();
        let mut by_addr: HashMap<&Address, &Arc<Endpoint>> = old
            .endpoints
            .iter()
            .map(|e| (&e.instance.address, e))
            .collect();
        let mut endpoints = Vec::with_capacity(set.len());
        let mut seen = std::collections::HashSet::new();
        for inst in set {
            if !seen.insert(&inst.address) {
                continue; // one endpoint per address
            }
            match by_addr.remove(&inst.address) {
                Some(e) if e.instance == *inst => endpoints.push(e.clone()),
                Some(e) => endpoints.push(Arc::new(Endpoint {
                    // New weight or tags: same pool, new description.
                    instance: inst.clone(),
                    transport: e.transport.clone(),
                    in_flight: AtomicUsize::new(e.in_flight.load(Ordering::Relaxed)),
                    opened: AtomicU64::new(e.opened.load(Ordering::Relaxed)),
                    failed_opens: AtomicU64::new(e.failed_opens.load(Ordering::Relaxed)),
                    breaker: Mutex::new(e.breaker().clone()),
                    suspect: std::sync::atomic::AtomicBool::new(true),
                })),
                None => match (self.make)(inst) {
                    Ok(transport) => endpoints.push(Arc::new(Endpoint {
                        instance: inst.clone(),
                        transport,
                        in_flight: AtomicUsize::new(0),
                        opened: AtomicU64::new(0),
                        failed_opens: AtomicU64::new(0),
                        breaker: Mutex::new(Breaker::new(self.breaker.clone())),
                        suspect: std::sync::atomic::AtomicBool::new(false),
                    })),
                    Err(e) => {
                        tracing::warn!(address = %inst.address, error = %e, "instance skipped: no transport for it")
                    }
                },
            }
        }
        let snap = Arc::new(Snapshot::new(endpoints, self.policy));
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snap;
    }

    fn random(&self) -> u64 {
        // xorshift64*: fast, good enough to pick instances; the atomic update may race
        // between threads, which only repeats a number.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Picks an endpoint not in `tried`, preferring available (not ejected) ones. Allocates
    /// nothing.
    fn pick(
        &self,
        snap: &Snapshot,
        ctx: &CallContext,
        tried: &[usize],
        now: Instant,
    ) -> Option<usize> {
        self.pick_among(snap, ctx, |i| {
            !tried.contains(&i) && snap.endpoints[i].available(now)
        })
        // Everything ejected: better to try one than to refuse the call.
        .or_else(|| self.pick_among(snap, ctx, |i| !tried.contains(&i)))
    }

    fn pick_among(
        &self,
        snap: &Snapshot,
        ctx: &CallContext,
        ok: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = snap.endpoints.len();
        let nth_ok = |k: usize| (0..n).filter(|&i| ok(i)).nth(k);
        match self.policy {
            Policy::RoundRobin => {
                let mut cur = snap.wrr.lock().unwrap_or_else(|e| e.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in (0..n).filter(|&i| ok(i)) {
                    let w = i64::from(snap.endpoints[i].instance.effective_weight());
                    cur[i] += w;
                    total += w;
                    if best.is_none_or(|b| cur[i] > cur[b]) {
                        best = Some(i);
                    }
                }
                let best = best?;
                cur[best] -= total;
                Some(best)
            }
            Policy::P2c => {
                let count = (0..n).filter(|&i| ok(i)).count();
                if count <= 1 {
                    return nth_ok(0);
                }
                let ka = (self.random() % count as u64) as usize;
                let mut kb = (self.random() % (count as u64 - 1)) as usize;
                if kb >= ka {
                    kb += 1; // a second, different one
                }
                let (a, b) = (nth_ok(ka)?, nth_ok(kb)?);
                let load = |i: usize| {
                    let e = &snap.endpoints[i];
                    (
                        e.in_flight.load(Ordering::Relaxed) as u64 + 1,
                        u64::from(e.instance.effective_weight()),
                    )
                };
                let ((la, wa), (lb, wb)) = (load(a), load(b));
                Some(if la * wb <= lb * wa { a } else { b })
            }
            Policy::ConsistentHash => {
                let key = ctx.extensions().get::<HashKey>().map(|k| k.0).or_else(|| {
                    ctx.metadata()
                        .get_str(HASH_METADATA_KEY)
                        .map(|v| stable_hash(v.as_bytes()))
                });
                match key {
                    None => {
                        let count = (0..n).filter(|&i| ok(i)).count();
                        if count == 0 {
                            return None;
                        }
                        nth_ok((self.random() % count as u64) as usize)
                    }
                    Some(k) => {
                        let start = snap.ring.partition_point(|(p, _)| *p < k);
                        (0..snap.ring.len())
                            .map(|j| snap.ring[(start + j) % snap.ring.len()].1)
                            .find(|&i| ok(i))
                    }
                }
            }
        }
    }
}

impl Balanced {
    /// A builder whose instances get transports from `make`.
    pub fn builder(
        make: impl Fn(&Instance) -> Result<Arc<dyn ClientTransport>, Status> + Send + Sync + 'static,
    ) -> BalancedBuilder {
        BalancedBuilder {
            policy: Policy::default(),
            breaker: default_instance_breaker(),
            make: Arc::new(make),
        }
    }

    /// A builder whose instances get `T::connect(address)` transports (each its own pool).
    pub fn builder_for<T: Connect>() -> BalancedBuilder {
        Balanced::builder(|i: &Instance| {
            T::connect(&i.address.to_string()).map(|t| Arc::new(t) as Arc<dyn ClientTransport>)
        })
    }

    /// Balances `T` transports over `resolution` with `policy`.
    pub fn connect<T: Connect>(resolution: Resolution, policy: Policy) -> Balanced {
        Balanced::builder_for::<T>()
            .policy(policy)
            .build(resolution)
    }

    /// The instances in the current set.
    pub fn instances(&self) -> Vec<Instance> {
        self.shared
            .snapshot()
            .endpoints
            .iter()
            .map(|e| e.instance.clone())
            .collect()
    }

    /// Addresses currently ejected (their breaker open).
    pub fn ejected(&self) -> Vec<Address> {
        let now = Instant::now();
        self.shared
            .snapshot()
            .endpoints
            .iter()
            .filter(|e| !e.available(now))
            .map(|e| e.instance.address.clone())
            .collect()
    }

    /// Per-instance counters of the current set.
    pub fn stats(&self) -> Vec<EndpointStats> {
        let now = Instant::now();
        self.shared
            .snapshot()
            .endpoints
            .iter()
            .map(|e| EndpointStats {
                address: e.instance.address.clone(),
                in_flight: e.in_flight.load(Ordering::Relaxed),
                opened: e.opened.load(Ordering::Relaxed),
                failed_opens: e.failed_opens.load(Ordering::Relaxed),
                ejected: !e.available(now),
            })
            .collect()
    }
}

impl ClientTransport for Balanced {
    fn open(
        &self,
        ctx: &CallContext,
    ) -> BoxFuture<'static, Result<Arc<dyn ClientStreamRaw>, Status>> {
        let shared = self.shared.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            let snap = shared.snapshot();
            let mut tried: Vec<usize> = Vec::new();
            let mut last: Option<Status> = None;
            for _ in 0..MAX_OPEN_ATTEMPTS {
                let now = Instant::now();
                let Some(i) = shared.pick(&snap, &ctx, &tried, now) else {
                    break;
                };
                tried.push(i);
                let ep = snap.endpoints[i].clone();
                let probe = ep.update(now, |b| b.try_acquire(now));
                ep.in_flight.fetch_add(1, Ordering::Relaxed);
                let guard = InFlight(ep.clone());
                match ep.transport.open(&ctx).await {
                    Ok(stream) => {
                        ep.opened.fetch_add(1, Ordering::Relaxed);
                        return Ok(Arc::new(Tracked {
                            inner: stream,
                            guard,
                            counted: probe,
                            done: std::sync::atomic::AtomicBool::new(false),
                        }) as Arc<dyn ClientStreamRaw>);
                    }
                    Err(e) => {
                        drop(guard);
                        if e.code() != Code::Unavailable {
                            // Not an instance failure (bad metadata, deadline): no retry.
                            if probe {
                                let now = Instant::now();
                                ep.update(now, |b| b.record(now, true));
                            }
                            return Err(e);
                        }
                        tracing::debug!(address = %ep.instance.address, error = %e, "open failed; instance ejected");
                        let now = Instant::now();
                        ep.update(now, |b| b.trip(now));
                        ep.failed_opens.fetch_add(1, Ordering::Relaxed);
                        last = Some(e);
                    }
                }
            }
            let e = last.unwrap_or_else(|| {
                Status::unavailable(format!(
                    "no instance of {} to call",
                    ctx.method().full_service
                ))
            });
            Err(NotSent::mark(e))
        })
    }
}

/// Counts a stream in flight on its endpoint until dropped.
struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream on a balanced instance: reports its end to the instance's breaker.
struct Tracked {
    inner: Arc<dyn ClientStreamRaw>,
    guard: InFlight,
    /// Whether the breaker admitted it (its outcome is recorded).
    counted: bool,
    done: std::sync::atomic::AtomicBool,
}

impl Tracked {
    fn record(&self, success: bool) {
        if self.counted && !self.done.swap(true, Ordering::Relaxed) {
            let now = Instant::now();
            self.guard.0.update(now, |b| b.record(now, success));
        }
    }
}

impl ClientStreamRaw for Tracked {
    fn poll_send_ready(&self, cx: &mut Context<'_>, len: usize) -> Poll<Result<(), Status>> {
        self.inner.poll_send_ready(cx, len)
    }
    fn send(&self, msg: &mut dyn Encodable) -> Result<(), Status> {
        self.inner.send(msg)
    }
    fn poll_send(&self, cx: &mut Context<'_>, msg: &mut dyn Encodable) -> Poll<Result<(), Status>> {
        self.inner.poll_send(cx, msg)
    }
    fn close_send(&self) -> Result<(), Status> {
        self.inner.close_send()
    }
    fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ClientEvent> {
        let ev = self.inner.poll_event(cx);
        if let Poll::Ready(ClientEvent::End(status, _)) = &ev {
            self.record(status.code() != Code::Unavailable);
        }
        ev
    }
    fn reset(&self, status: &Status) {
        self.inner.reset(status)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Ended without an end from the instance (a local cancel or deadline): that says
        // nothing against the instance, and a half-open probe must give its slot back.
        self.record(true);
    }
}

#[cfg(all(test, feature = "inproc"))]
mod tests;
