//! The circuit breaker state machine: pure and synchronous, time passed in, so tests drive it
//! with instants. [`super::CircuitBreakerLayer`] keeps one per method; the balancer
//! ([`crate::balance`]) keeps one per instance.

use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// The sliding window outcomes are counted over.
    pub window: Duration,
    /// Fewer calls than this in the window never open the breaker (a single failure of a
    /// quiet method is not a trend).
    pub min_calls: u32,
    /// Open when failures / calls in the window reach this ratio.
    pub failure_ratio: f64,
    /// How long the first opening lasts; each consecutive reopening (a failed half-open probe)
    /// doubles it, up to [`BreakerConfig::max_open`].
    pub open_for: Duration,
    /// The longest an opening lasts.
    pub max_open: Duration,
    /// Calls let through while half-open; all must succeed to close.
    pub probes: u32,
}

impl Default for BreakerConfig {
    /// A 10 s window, at least 20 calls, 50% failures; open 1 s doubling up to 30 s; one probe.
    fn default() -> Self {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(1),
            max_open: Duration::from_secs(30),
            probes: 1,
        }
    }
}

/// The state a breaker is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused until the instant.
    Open {
        /// When half-open probes may start.
        until: Instant,
    },
    /// Up to `probes` calls pass; their outcomes decide.
    HalfOpen,
}

/// Number of buckets the window is split into.
const BUCKETS: usize = 10;

/// A circuit breaker: an error-rate window while closed, an opening with exponential backoff,
/// half-open probes.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// Consecutive openings without a close (the backoff exponent).
    trips: u32,
    /// Half-open: probes let through and probes succeeded.
    probing: u32,
    probe_ok: u32,
    /// (bucket start, calls, failures), the newest last.
    buckets: [(Option<Instant>, u32, u32); BUCKETS],
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg,
            state: BreakerState::Closed,
            trips: 0,
            probing: 0,
            probe_ok: 0,
            buckets: [(None, 0, 0); BUCKETS],
        }
    }

    /// The state at `now` (an opening whose time passed reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Whether a call may pass at `now`, without taking a probe slot.
    pub fn would_allow(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => self.half_open_probing() < self.cfg.probes,
        }
    }

    fn half_open_probing(&self) -> u32 {
        match self.state {
            BreakerState::HalfOpen => self.probing,
            _ => 0,
        }
    }

    /// Asks to let a call pass at `now`; `true` admits it (taking a probe slot when
    /// half-open), and its outcome must then be given to [`Breaker::record`].
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        if let BreakerState::Open { until } = self.state {
            if now < until {
                return false;
            }
            self.state = BreakerState::HalfOpen;
            self.probing = 0;
            self.probe_ok = 0;
        }
        match self.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen if self.probing < self.cfg.probes => {
                self.probing += 1;
                true
            }
            _ => false,
        }
    }

    /// Records an admitted call's outcome.
    pub fn record(&mut self, now: Instant, success: bool) {
        match self.state {
            BreakerState::HalfOpen => {
                if !success {
                    self.open(now);
                    return;
                }
                self.probe_ok += 1;
                if self.probe_ok >= self.cfg.probes {
                    self.close();
                }
            }
            BreakerState::Open { .. } => {} // a call admitted before the opening ended late
            BreakerState::Closed => {
                let b = self.bucket(now);
                b.1 += 1;
                if !success {
                    b.2 += 1;
                }
                let (calls, failures) = self.totals(now);
                if calls >= self.cfg.min_calls.max(1)
                    && f64::from(failures) >= self.cfg.failure_ratio * f64::from(calls)
                {
                    self.open(now);
                }
            }
        }
    }

    /// Opens at once (a refused connect is decisive; no window needed).
    pub fn trip(&mut self, now: Instant) {
        if !matches!(self.state, BreakerState::Open { until } if now < until) {
            self.open(now);
        }
    }

    /// How many consecutive openings without a close.
    pub fn trips(&self) -> u32 {
        self.trips
    }

    fn open(&mut self, now: Instant) {
        let factor = 1u32 << self.trips.min(16);
        let d = self
            .cfg
            .open_for
            .saturating_mul(factor)
            .min(self.cfg.max_open);
        self.state = BreakerState::Open { until: now + d };
        self.trips = self.trips.saturating_add(1);
        self.probing = 0;
        self.probe_ok = 0;
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.trips = 0;
        self.buckets = [(None, 0, 0); BUCKETS];
    }

    fn bucket_len(&self) -> Duration {
        (self.cfg.window / BUCKETS as u32).max(Duration::from_millis(1))
    }

    /// The current bucket (rotating out the oldest when a new one starts).
    fn bucket(&mut self, now: Instant) -> &mut (Option<Instant>, u32, u32) {
        let len = self.bucket_len();
        let fresh = match self.buckets[BUCKETS - 1].0 {
            Some(start) => now.saturating_duration_since(start) >= len,
            None => true,
        };
        if fresh {
            self.buckets.rotate_left(1);
            self.buckets[BUCKETS - 1] = (Some(now), 0, 0);
        }
        &mut self.buckets[BUCKETS - 1]
    }

    fn totals(&self, now: Instant) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|(s, _, _)| matches!(s, Some(s) if now.saturating_duration_since(*s) < self.cfg.window))
            .fold((0, 0), |(c, f), (_, bc, bf)| (c + bc, f + bf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(1),
            max_open: Duration::from_secs(4),
            probes: 2,
        }
    }

    #[test]
    fn opens_at_the_failure_ratio_once_enough_calls_were_seen() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        for ok in [false, false, false] {
            assert!(b.try_acquire(t0));
            b.record(t0, ok);
        }
        assert_eq!(b.state(t0), BreakerState::Closed, "3 calls < min_calls");
        assert!(b.try_acquire(t0));
        b.record(t0, true);
        assert!(
            matches!(b.state(t0), BreakerState::Open { .. }),
            "3 of 4 failed"
        );
        assert!(!b.try_acquire(t0 + Duration::from_millis(999)));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        for _ in 0..3 {
            b.record(t0, false);
        }
        let later = t0 + Duration::from_secs(11);
        for _ in 0..3 {
            b.record(later, true);
        }
        b.record(later, false);
        assert_eq!(b.state(later), BreakerState::Closed, "1 of 4 in the window");
    }

    #[test]
    fn half_open_probes_close_it_or_reopen_it_for_twice_as_long() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        b.trip(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        assert!(b.try_acquire(t1) && b.try_acquire(t1));
        assert!(!b.try_acquire(t1), "only two probes");
        b.record(t1, true);
        b.record(t1, false);
        assert_eq!(
            b.state(t1),
            BreakerState::Open {
                until: t1 + Duration::from_secs(2)
            },
            "a failed probe reopens, with the backoff doubled"
        );
        let t2 = t1 + Duration::from_secs(2);
        b.trip(t2);
        assert_eq!(
            b.state(t2),
            BreakerState::Open {
                until: t2 + Duration::from_secs(4)
            }
        );
        let t3 = t2 + Duration::from_secs(4);
        b.trip(t3);
        assert_eq!(
            b.state(t3),
            BreakerState::Open {
                until: t3 + Duration::from_secs(4)
            },
            "capped at max_open"
        );
        let t4 = t3 + Duration::from_secs(4);
        assert!(b.try_acquire(t4) && b.try_acquire(t4));
        b.record(t4, true);
        b.record(t4, true);
        assert_eq!(b.state(t4), BreakerState::Closed);
        assert_eq!(b.trips(), 0, "a close resets the backoff");
    }
}
