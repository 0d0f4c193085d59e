//! What every TTHeader connection shares, whatever carries its bytes: the lost/draining/idle
//! lifecycle, id allocation, the deadline key, the refusal code of a routing miss and the wait
//! of a reader under backpressure. No sockets here: the ttstream session (socket or shared
//! memory) and the unary connections use the same pieces.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use rpc_core::limits::ByteBudget;
use rpc_core::server::RouteError;
use rpc_core::Status;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::proto::keys::int_key;
use crate::proto::{ApplicationException, Headers};

/// Locks `m`, ignoring poisoning (every critical section leaves its state consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next positive id of `counter` (stream ids, unary seq ids): after `i32::MAX` ids wrap
/// around to 1, as 0 is reserved (control frames) and negative ids are invalid.
pub(crate) fn next_id(counter: &AtomicI32) -> i32 {
    loop {
        let id = counter.fetch_add(1, Ordering::Relaxed);
        if id > 0 {
            return id;
        }
        // Wrapped around: restart at 1. Only one of the racing callers resets the counter.
        let _ =
            counter.compare_exchange(id.wrapping_add(1), 1, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The deadline a request carries (int key 12, `RPC_TIMEOUT`, decimal milliseconds), as a
/// local instant. Zero, missing or malformed means none.
pub(crate) fn deadline_of(headers: &Headers) -> Option<Instant> {
    headers
        .get_int_decimal(int_key::RPC_TIMEOUT)
        .filter(|ms| *ms > 0)
        .map(|ms| Instant::now() + Duration::from_millis(ms))
}

/// The value of `RPC_TIMEOUT` for a call timeout: whole milliseconds, at least 1 (0 would
/// mean "no deadline" to the peer).
pub(crate) fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The `TApplicationException` type a routing miss is answered with.
pub(crate) fn route_refusal(e: &RouteError) -> i32 {
    if e.is_unknown_service() {
        ApplicationException::UNKNOWN_SERVICE
    } else {
        ApplicationException::UNKNOWN_METHOD
    }
}

/// A connection's lifecycle: lost once (with the reason), draining for a graceful shutdown,
/// idle waiters, and the signal its reader waits on while paused or reading.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    lost: OnceLock<Status>,
    draining: AtomicBool,
    /// Wakes the reader: re-check whether it may read, or whether it is idle.
    reader: Notify,
    /// Wakes `drain` when the connection may have become idle.
    idle: Notify,
}

impl Lifecycle {
    pub(crate) fn new() -> Lifecycle {
        Lifecycle::default()
    }

    /// Records that the connection is lost; true only the first time (the caller then ends
    /// what the connection carries and calls [`Lifecycle::wake_all`]).
    pub(crate) fn lose(&self, status: &Status) -> bool {
        self.lost.set(status.clone()).is_ok()
    }

    /// Why the connection was lost, if it was.
    pub(crate) fn lost(&self) -> Option<&Status> {
        self.lost.get()
    }

    /// Why the connection was lost, or a generic `UNAVAILABLE`.
    pub(crate) fn lost_status(&self) -> Status {
        self.lost
            .get()
            .cloned()
            .unwrap_or_else(|| Status::unavailable("connection closed"))
    }

    /// After [`Lifecycle::lose`]: the reader stops and every `drain` returns.
    pub(crate) fn wake_all(&self) {
        self.reader.notify_one();
        self.idle.notify_waiters();
    }

    /// The reader's signal.
    pub(crate) fn reader(&self) -> &Notify {
        &self.reader
    }

    /// Graceful shutdown begins.
    pub(crate) fn start_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The connection carries nothing any more: wakes `drain` if it waits.
    pub(crate) fn became_idle(&self) {
        // Only `drain` waits for idleness, and it sets `draining` before it checks.
        if self.is_draining() {
            self.idle.notify_waiters();
        }
    }

    /// Starts draining and resolves once `is_idle` holds (or the connection is lost).
    pub(crate) async fn drain(&self, is_idle: impl Fn() -> bool) {
        self.start_drain();
        loop {
            let idle = self.idle.notified();
            if is_idle() || self.lost().is_some() {
                return;
            }
            idle.await;
        }
    }
}

/// Waits while `must_pause` holds, until one of the connection's own signals or the budget's
/// release wakes it; returns whether it paused. `stop` ends the wait early (connection lost).
pub(crate) async fn pause_while(
    budget: Option<&ByteBudget>,
    signals: [&Notify; 2],
    mut must_pause: impl FnMut() -> bool,
    mut stop: impl FnMut() -> bool,
) -> bool {
    let mut paused = false;
    loop {
        // Created before the check: a release in between is not lost (see `ByteBudget`).
        let released = budget.map(ByteBudget::notified);
        let a = signals[0].notified();
        let b = signals[1].notified();
        if stop() || !must_pause() {
            return paused;
        }
        paused = true;
        let released = async {
            match released {
                Some(n) => n.await,
                None => std::future::pending().await,
            }
        };
        first_of(released, a, b).await;
    }
}

async fn first_of(
    a: impl Future<Output = ()>,
    b: impl Future<Output = ()>,
    c: impl Future<Output = ()>,
) {
    tokio::select! {
        () = a => {}
        () = b => {}
        () = c => {}
    }
}

/// A map keyed by stream, sequence or call ids, hashed with foldhash's per-map seeded hasher
/// (a folded multiply, the one hashbrown uses) instead of std's SipHash. Its `quality`
/// flavour, not `fast`: hashbrown picks a bucket by the hash's low bits, and for about one
/// process seed in 25 `fast` leaves the low bits of consecutive ids (what clients send)
/// clustered (some of 64 buckets near empty, others at twice their share: measured over 2,000
/// processes); `quality`'s final mix costs a few instructions per hash and spreads them for
/// every seed tried.
///
/// Why not SipHash: ids are hashed several times per call (route a frame, drop a late one,
/// insert, remove) and SipHash costs ~100 instructions each on a 4-byte key. Why this is safe
/// with ids a peer chooses (a ttstream server's table): each map draws its own random seed,
/// which the peer never observes (no hash value or table order leaves the process), so it
/// cannot pick ids that collide short of guessing the seed; and even if it did, a server's
/// table holds at most `max_concurrent_streams` entries (`ServerLimits`), so a lookup compares
/// at most that many keys: the worst case is bounded and linear, never the unbounded growth
/// hash flooding aims at. Other tables hold ids this process allocated itself.
pub(crate) type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

/// A new, empty [`IdMap`] with its own random seed.
pub(crate) fn id_map<K, V>() -> IdMap<K, V> {
    IdMap::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_key_every_i32_and_spread_nearby_ids() {
        use std::hash::BuildHasher;
        let mut m = id_map::<i32, i32>();
        let ids = [0, 1, -1, i32::MAX, i32::MIN, 7, -7, 1 << 20];
        for id in ids {
            assert!(m.insert(id, id).is_none());
        }
        for id in ids {
            assert_eq!(m.get(&id), Some(&id));
            assert_eq!(m.remove(&id), Some(id));
        }
        assert!(m.is_empty());
        // Consecutive ids (what clients send) neither collide nor share their low bits
        // (a table's bucket index) more than chance allows.
        let s = foldhash::quality::RandomState::default();
        let hashes: Vec<u64> = (1..=4096i32).map(|id| s.hash_one(id)).collect();
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), hashes.len());
        let mut buckets = [0u32; 64];
        for h in &hashes {
            buckets[(h & 63) as usize] += 1;
        }
        // 64 per bucket expected; a clustering hash would leave some empty or far over.
        assert!(
            buckets.iter().all(|&n| (16..=160).contains(&n)),
            "{buckets:?}"
        );
        // Each map draws its own keys.
        assert_ne!(
            foldhash::quality::RandomState::default().hash_one(1i32),
            s.hash_one(1i32)
        );
        let u = id_map::<u64, ()>();
        assert_eq!(u.hasher().hash_one(5u64), u.hasher().hash_one(5u64));
    }

    #[test]
    fn ids_are_positive_and_wrap_to_one() {
        let c = AtomicI32::new(i32::MAX - 1);
        assert_eq!(next_id(&c), i32::MAX - 1);
        assert_eq!(next_id(&c), i32::MAX);
        assert_eq!(next_id(&c), 1);
        assert_eq!(next_id(&c), 2);
    }

    #[test]
    fn deadline_key() {
        let mut h = Headers::default();
        assert!(deadline_of(&h).is_none());
        h.push_int(int_key::RPC_TIMEOUT, "0");
        assert!(deadline_of(&h).is_none(), "0 means none");
        let mut h = Headers::default();
        h.push_int(int_key::RPC_TIMEOUT, "1500");
        let d = deadline_of(&h).expect("a deadline");
        assert!(d > Instant::now() + Duration::from_millis(1000));
        assert_eq!(timeout_ms(Duration::from_micros(10)), 1);
        assert_eq!(timeout_ms(Duration::from_millis(1500)), 1500);
    }
}
