//! Service discovery: the seam between a registry (etcd, DNS, a static list) and the client's
//! load balancer, and between a server's bound listeners and the registry.
//!
//! * A [`Resolver`] turns a service name into a [`Resolution`]: the live, watched set of its
//!   [`Instance`]s (address, weight, tags). The set is a `tokio::sync::watch` value — a reader
//!   always sees the latest complete set, never a queue of diffs, so a slow client can never
//!   make a resolver buffer. [`StaticResolver`] and [`DnsResolver`] live here; the etcd one
//!   lives in the `rpc-registry-etcd` crate so the etcd client's dependencies stay out of the
//!   core.
//! * A [`Registrar`] registers a server's instances and hands back a [`Registration`] whose
//!   [`Registration::deregister`] removes them. [`Registered`] ties one to a
//!   [`Running`] listener: it registers the addresses actually bound (a
//!   `tcp://127.0.0.1:0` listener registers its real port) and, on
//!   [`Registered::shutdown`], deregisters *before* draining, so clients stop choosing the
//!   instance while it still serves what they already sent.
//!
//! The balancer that consumes a [`Resolution`] is [`crate::balance`].

use std::collections::BTreeMap;
#[cfg(feature = "net")]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::address::Address;
#[cfg(feature = "net")]
use crate::serve::Running;
use crate::status::Status;
use crate::transport::BoxFuture;

/// The weight of an instance registered without one: Kitex's `registry.DefaultWeight`, so
/// instances of both frameworks weigh the same by default.
pub const DEFAULT_WEIGHT: u32 = 10;

/// The largest weight a balancer honours (a registry entry claiming more is clamped): keeps a
/// hostile or mistaken entry from taking every call or blowing up a hash ring.
pub const MAX_WEIGHT: u32 = 1000;

/// How long [`Registered::shutdown`] keeps serving after deregistering, before draining: the
/// time for the removal to reach clients through their watches (milliseconds on a LAN) plus a
/// margin, so a call a client picked this instance for just before the update still lands on a
/// server that accepts it.
pub const DEFAULT_DEREGISTER_DELAY: Duration = Duration::from_millis(300);

/// What an instance says besides its address — weight and tags — for
/// [`Registered::register`] and [`instances_for`], which take the addresses from what a
/// listener bound.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceMeta {
    /// Relative share of calls (1..=[`MAX_WEIGHT`]; 0 is read as 1 by balancers).
    pub weight: u32,
    /// Free-form labels (zone, version, ...).
    pub tags: BTreeMap<String, String>,
}

impl Default for InstanceMeta {
    fn default() -> InstanceMeta {
        InstanceMeta {
            weight: DEFAULT_WEIGHT,
            tags: BTreeMap::new(),
        }
    }
}

impl InstanceMeta {
    /// [`DEFAULT_WEIGHT`] and no tags.
    pub fn new() -> InstanceMeta {
        InstanceMeta::default()
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> InstanceMeta {
        self.weight = weight;
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> InstanceMeta {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Instance {
    /// Where to connect.
    pub address: Address,
    /// Relative share of calls (1..=[`MAX_WEIGHT`]; 0 is read as 1 by balancers).
    pub weight: u32,
    /// Free-form labels (zone, version, ...).
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    /// An instance at `address` with [`DEFAULT_WEIGHT`] and no tags.
    pub fn new(address: Address) -> Instance {
        Instance {
            address,
            weight: DEFAULT_WEIGHT,
            tags: BTreeMap::new(),
        }
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Instance {
        self.weight = weight;
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Instance {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The weight a balancer uses: clamped to `1..=MAX_WEIGHT`.
    pub fn effective_weight(&self) -> u32 {
        self.weight.clamp(1, MAX_WEIGHT)
    }
}

/// A set of instances as one resolver update delivers it.
pub type Instances = Arc<Vec<Instance>>;

/// The live set of instances of one service: the latest set now, and a wait for the next
/// change. Dropping it stops the resolver's background work for this service.
#[derive(Debug)]
pub struct Resolution {
    rx: watch::Receiver<Instances>,
    _task: Option<AbortOnDrop>,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Resolution {
    /// A resolution fed by `rx`, kept alive by nothing else (the sender's owner keeps it
    /// current).
    pub fn from_watch(rx: watch::Receiver<Instances>) -> Resolution {
        Resolution { rx, _task: None }
    }

    /// A resolution fed by `rx`, whose background `task` (a watcher, a poller) is aborted when
    /// the resolution is dropped.
    pub fn with_task(rx: watch::Receiver<Instances>, task: JoinHandle<()>) -> Resolution {
        Resolution {
            rx,
            _task: Some(AbortOnDrop(task)),
        }
    }

    /// A resolution that never changes.
    pub fn fixed(instances: Vec<Instance>) -> Resolution {
        let (tx, rx) = watch::channel(Arc::new(instances));
        // The sender is dropped: the receiver keeps the last value and `changed` reports the
        // end, which balancers read as "no more updates", not as "no instances".
        drop(tx);
        Resolution::from_watch(rx)
    }

    /// The current set.
    pub fn current(&self) -> Instances {
        self.rx.borrow().clone()
    }

    /// The current set, marked as seen (the next [`Resolution::changed`] waits for a newer one).
    pub fn current_and_mark_seen(&mut self) -> Instances {
        self.rx.borrow_and_update().clone()
    }

    /// Waits for a set newer than the last one seen; `false` once the resolver has stopped for
    /// good (the last set stays current).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// Turns a service name into the live set of its instances.
pub trait Resolver: Send + Sync + 'static {
    /// Starts resolving `service`. The returned resolution holds the first set (which may be
    /// empty when the registry knows no instance yet) and follows changes until dropped. An
    /// error means the registry could not be asked at all.
    fn resolve(&self, service: &str) -> BoxFuture<'static, Result<Resolution, Status>>;
}

/// Registers a server's instances under a service name.
pub trait Registrar: Send + Sync + 'static {
    /// Registers `instances` under `service`; they stay registered until
    /// [`Registration::deregister`] (or, for registries with leases, until the process stops
    /// keeping them alive).
    fn register(
        &self,
        service: &str,
        instances: Vec<Instance>,
    ) -> BoxFuture<'static, Result<Registration, Status>>;
}

type Deregister = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), Status>> + Send>;

/// Instances registered by a [`Registrar`]. Deregister with [`Registration::deregister`];
/// dropping it without that leaves the removal to the registry (a lease expiring).
pub struct Registration {
    instances: Vec<Instance>,
    deregister: Option<Deregister>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// A registration of `instances` that `deregister` removes.
    pub fn new(
        instances: Vec<Instance>,
        deregister: impl FnOnce() -> BoxFuture<'static, Result<(), Status>> + Send + 'static,
    ) -> Registration {
        Registration {
            instances,
            deregister: Some(Box::new(deregister)),
        }
    }

    /// What was registered.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Removes the instances from the registry now.
    pub async fn deregister(mut self) -> Result<(), Status> {
        match self.deregister.take() {
            Some(f) => f().await,
            None => Ok(()),
        }
    }
}

/// The instances to register for a listener's bound addresses: each address as bound (with its
/// real port), weight and tags from `meta`. A `tcp://` address bound to an unspecified IP
/// (`0.0.0.0`, `[::]`) is not reachable as such: pass `advertise_host` to register that host
/// instead (a `tcp://0.0.0.0:0` listener with host `10.0.0.5` registers `tcp://10.0.0.5:PORT`).
pub fn instances_for(
    addrs: &[Address],
    advertise_host: Option<&str>,
    meta: &InstanceMeta,
) -> Vec<Instance> {
    addrs
        .iter()
        .map(|a| {
            let address = match (a, advertise_host) {
                (Address::Tcp { port, .. }, Some(host)) => Address::Tcp {
                    host: host.to_owned(),
                    port: *port,
                },
                _ => a.clone(),
            };
            Instance {
                address,
                weight: meta.weight,
                tags: meta.tags.clone(),
            }
        })
        .collect()
}

/// A [`Running`] listener registered in a registry: deregisters before it drains (feature
/// `net`).
#[cfg(feature = "net")]
#[derive(Debug)]
pub struct Registered {
    running: Running,
    registration: Registration,
    delay: Duration,
}

#[cfg(feature = "net")]
impl Registered {
    /// Registers every address `running` actually bound under `service`, with `meta`'s
    /// weight and tags (see [`instances_for`] for `advertise_host`).
    pub async fn register(
        running: Running,
        registrar: &dyn Registrar,
        service: &str,
        advertise_host: Option<&str>,
        meta: InstanceMeta,
    ) -> Result<Registered, (Running, Status)> {
        let instances = instances_for(&running.local_addrs(), advertise_host, &meta);
        match registrar.register(service, instances).await {
            Ok(registration) => Ok(Registered {
                running,
                registration,
                delay: DEFAULT_DEREGISTER_DELAY,
            }),
            Err(e) => Err((running, e)),
        }
    }

    /// How long to keep serving between deregistering and draining (default
    /// [`DEFAULT_DEREGISTER_DELAY`]).
    pub fn deregister_delay(mut self, delay: Duration) -> Registered {
        self.delay = delay;
        self
    }

    /// The listener.
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// The registered instances.
    pub fn instances(&self) -> &[Instance] {
        self.registration.instances()
    }

    /// Graceful stop: deregister (clients' watches drop the instance), keep serving for the
    /// deregister delay, then [`Running::shutdown`] with `grace`. A failed deregistration is
    /// returned after the shutdown (the registry's lease removes the entry later).
    pub async fn shutdown(self, grace: Duration) -> Result<(), Status> {
        let deregistered = self.registration.deregister().await;
        if deregistered.is_ok() && !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.running.shutdown(grace).await;
        deregistered
    }
}

/// A resolver over a fixed list of instances (the same list for every service name).
#[derive(Debug, Clone)]
pub struct StaticResolver {
    instances: Vec<Instance>,
}

impl StaticResolver {
    /// A resolver that always yields `instances`.
    pub fn new(instances: Vec<Instance>) -> StaticResolver {
        StaticResolver { instances }
    }

    /// A resolver over addresses with the default weight.
    pub fn from_addresses(addrs: impl IntoIterator<Item = Address>) -> StaticResolver {
        StaticResolver::new(addrs.into_iter().map(Instance::new).collect())
    }
}

impl Resolver for StaticResolver {
    fn resolve(&self, _service: &str) -> BoxFuture<'static, Result<Resolution, Status>> {
        let r = Resolution::fixed(self.instances.clone());
        Box::pin(std::future::ready(Ok(r)))
    }
}

/// How often [`DnsResolver`] looks a name up again by default: DNS has no watch, so changes
/// reach clients within this period.
pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(30);

/// The most addresses one DNS answer contributes (a name with more is truncated, in the
/// order the system resolver returned them).
pub const MAX_DNS_ADDRESSES: usize = 256;

/// A resolver that looks `HOST:PORT` up with [`tokio::net::lookup_host`] and re-resolves it
/// periodically; each address is an instance with the default weight. A failed lookup keeps
/// the last set (a DNS outage does not empty the client).
#[cfg(feature = "net")]
#[derive(Debug, Clone)]
pub struct DnsResolver {
    interval: Duration,
}

#[cfg(feature = "net")]
impl Default for DnsResolver {
    fn default() -> Self {
        DnsResolver {
            interval: DEFAULT_DNS_INTERVAL,
        }
    }
}

#[cfg(feature = "net")]
impl DnsResolver {
    /// A resolver that re-resolves every `interval`.
    pub fn new(interval: Duration) -> DnsResolver {
        DnsResolver { interval }
    }
}

#[cfg(feature = "net")]
async fn lookup(name: &str) -> std::io::Result<Vec<Instance>> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(name)
        .await?
        .take(MAX_DNS_ADDRESSES)
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs
        .into_iter()
        .map(|a| Instance::new(Address::tcp(a)))
        .collect())
}

#[cfg(feature = "net")]
impl Resolver for DnsResolver {
    /// `service` is `HOST:PORT` (or `tcp://HOST:PORT`).
    fn resolve(&self, service: &str) -> BoxFuture<'static, Result<Resolution, Status>> {
        let name = service.strip_prefix("tcp://").unwrap_or(service).to_owned();
        let interval = self.interval;
        Box::pin(async move {
            let first = lookup(&name)
                .await
                .map_err(|e| Status::unavailable(format!("resolve {name}: {e}")))?;
            let (tx, rx) = watch::channel(Arc::new(first));
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    match lookup(&name).await {
                        Ok(set) => {
                            tx.send_if_modified(|cur| {
                                let changed = **cur != set;
                                if changed {
                                    *cur = Arc::new(set);
                                }
                                changed
                            });
                        }
                        Err(e) => {
                            tracing::warn!(%name, error = %e, "DNS re-resolution failed; keeping the last set")
                        }
                    }
                }
            });
            Ok(Resolution::with_task(rx, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_static_resolution_holds_its_set_and_reports_no_more_changes() {
        let a: Address = "tcp://127.0.0.1:1".parse().unwrap();
        let mut r = StaticResolver::from_addresses([a.clone()])
            .resolve("any")
            .await
            .unwrap();
        assert_eq!(r.current()[0].address, a);
        assert_eq!(r.current()[0].weight, DEFAULT_WEIGHT);
        assert!(!r.changed().await, "a fixed set never changes");
        assert_eq!(r.current().len(), 1, "the last set stays");
    }

    #[cfg(feature = "net")]
    #[tokio::test]
    async fn dns_resolves_localhost_to_tcp_instances() {
        let r = DnsResolver::default()
            .resolve("localhost:4321")
            .await
            .unwrap();
        let set = r.current();
        assert!(!set.is_empty());
        for i in set.iter() {
            let sa = i.address.socket_addr().expect("an IP address");
            assert!(sa.ip().is_loopback() && sa.port() == 4321, "{i:?}");
        }
        assert!(DnsResolver::default().resolve("no-port").await.is_err());
    }

    #[test]
    fn instances_for_bound_addresses_keep_the_real_port_and_advertise_a_host() {
        let bound: Vec<Address> = vec![
            "tcp://0.0.0.0:4000".parse().unwrap(),
            "unix:///tmp/x.sock".parse().unwrap(),
        ];
        let meta = InstanceMeta::new().with_weight(5).with_tag("zone", "a");
        let v = instances_for(&bound, Some("10.0.0.5"), &meta);
        assert_eq!(v[0].address.to_string(), "tcp://10.0.0.5:4000");
        assert_eq!(v[1].address, bound[1]);
        assert!(v.iter().all(|i| i.weight == 5 && i.tags["zone"] == "a"));
        assert_eq!(
            Instance::new(bound[1].clone())
                .with_weight(0)
                .effective_weight(),
            1
        );
        assert_eq!(
            Instance::new(bound[1].clone())
                .with_weight(u32::MAX)
                .effective_weight(),
            MAX_WEIGHT
        );
    }
}
