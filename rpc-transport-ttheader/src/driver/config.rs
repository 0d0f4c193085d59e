//! Driver-only settings (connect timeout, pool sizes, unary idle time) and the byte charges of
//! a socket connection's reader and unary calls. The limits every session enforces are the
//! session's ([`crate::session::Limits`]).

use std::time::Duration;

/// How long a client waits for a TCP or Unix connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per endpoint in the client pool, for each of unary and streaming: more than one,
/// so a single connection's reader or writer task does not cap throughput (see h2 issue 531).
pub const DEFAULT_POOL_SIZE: usize = 4;
/// Pooled-mode unary connections per endpoint at most. A pooled connection carries one call at a
/// time, so this caps the calls in flight to one endpoint; calls beyond it wait (bounded by
/// their deadline) for a connection to come free. 512 is above the concurrency one process
/// usually drives to one server, and far below both `ulimit -n` and a server's connection cap
/// (`rpc_core::limits::DEFAULT_MAX_CONNECTIONS`), so one busy client cannot take them all.
pub const DEFAULT_MAX_UNARY_CONNECTIONS: usize = 512;
/// How long a pooled-mode unary connection may sit unused in the pool before it is closed.
/// 30 s is Kitex's default idle time for its connection pool, and well below a server's idle
/// timeout (`rpc_core::limits::DEFAULT_IDLE_TIMEOUT`, 5 min), so the client closes first and
/// never picks a connection the server is about to close.
pub const DEFAULT_UNARY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a server reader's buffer holds (the capacity of its allocation), charged to the
/// server-wide budget; released when dropped. Client readers have no budget: nothing is
/// charged, only counted.
#[derive(Debug)]
pub(crate) struct RxCharge {
    budget: Option<std::sync::Arc<rpc_core::limits::ByteBudget>>,
    n: usize,
}

impl RxCharge {
    pub(crate) fn new(budget: Option<std::sync::Arc<rpc_core::limits::ByteBudget>>) -> RxCharge {
        RxCharge { budget, n: 0 }
    }

    /// Charges or releases so that exactly `n` bytes are charged (past the budget's limit if
    /// need be: for memory already allocated, or allowed by the connection's reserve).
    pub(crate) fn set(&mut self, n: usize) {
        if let Some(b) = &self.budget {
            if n > self.n {
                b.charge(n - self.n);
            } else if n < self.n {
                b.release(self.n - n);
            }
        }
        self.n = n;
    }

    /// Charges up to `n` bytes in all if the budget has room for the increase; says whether
    /// it did.
    pub(crate) fn try_grow(&mut self, n: usize) -> bool {
        if n <= self.n {
            return true;
        }
        if let Some(b) = &self.budget {
            if !b.try_charge(n - self.n) {
                return false;
            }
        }
        self.n = n;
        true
    }

    /// Bytes charged now.
    pub(crate) fn get(&self) -> usize {
        self.n
    }

    /// The budget charged, if any.
    pub(crate) fn budget(&self) -> Option<&rpc_core::limits::ByteBudget> {
        self.budget.as_deref()
    }
}

impl Drop for RxCharge {
    fn drop(&mut self) {
        self.set(0);
    }
}
