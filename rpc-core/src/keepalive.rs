//! TCP keepalive settings for every TCP socket, client and server (applied by `net`, the
//! settings are part of [`ServerLimits`](crate::ServerLimits) whether or not it is built).

use std::time::Duration;

/// Idle time before the first keepalive probe. Linux's default is two hours, far too long to
/// notice a peer that vanished without a FIN (a crashed host, a dropped NAT or load-balancer
/// entry); 30 s is below every common middlebox idle timeout (AWS NLB 350 s, GCP 600 s,
/// conntrack 432,000 s for established flows but often tuned to minutes), so the probes also
/// keep those entries alive on idle connections.
pub const DEFAULT_KEEPALIVE_TIME: Duration = Duration::from_secs(30);
/// Time between unanswered probes. With [`DEFAULT_KEEPALIVE_RETRIES`] a dead peer on an idle
/// connection is noticed 30 + 3 × 10 = 60 s after the last byte.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel declares the connection dead (the next read fails
/// with `ETIMEDOUT`). Three rides out one or two lost packets.
pub const DEFAULT_KEEPALIVE_RETRIES: u32 = 3;

/// TCP keepalive settings (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`).
///
/// Keepalive only finds a peer whose *kernel* stopped answering (host down, network path
/// gone). A peer process that hangs, or a proxy that stops forwarding while its own kernel
/// still acknowledges, is found by the protocols' idle timeouts (TTHeader) or pings (HTTP/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Idle time before the first probe ([`DEFAULT_KEEPALIVE_TIME`]).
    pub time: Duration,
    /// Time between probes ([`DEFAULT_KEEPALIVE_INTERVAL`]).
    pub interval: Duration,
    /// Probes before giving up ([`DEFAULT_KEEPALIVE_RETRIES`]).
    pub retries: u32,
}

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive {
            time: DEFAULT_KEEPALIVE_TIME,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            retries: DEFAULT_KEEPALIVE_RETRIES,
        }
    }
}

impl TcpKeepalive {
    /// How long after the last byte a dead peer of an idle connection is noticed at most.
    pub fn detection_time(&self) -> Duration {
        self.time + self.interval * self.retries
    }

    /// Turns keepalive on for `socket` with these settings.
    #[cfg(feature = "net")]
    pub fn apply(&self, socket: &tokio::net::TcpStream) -> std::io::Result<()> {
        let ka = socket2::TcpKeepalive::new()
            .with_time(self.time)
            .with_interval(self.interval)
            .with_retries(self.retries);
        socket2::SockRef::from(socket).set_tcp_keepalive(&ka)
    }
}
