//! One read of a connection's socket, bounded by the frame, idle and silence timeouts.

use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use rpc_core::limits::ServerLimits;
use rpc_core::Status;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::io::ReadHalf;
use crate::session::Limits;

/// Which timeout ended a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A frame's first bytes arrived and the rest did not within `frame_timeout`.
    Frame(Duration),
    /// Nothing in flight and no bytes for `idle_timeout`.
    Idle(Duration),
    /// Calls in flight and no bytes from the peer for `silence_timeout` (client side).
    Silent(Duration),
}

impl Expired {
    pub(crate) fn status(self) -> Status {
        match self {
            Expired::Frame(t) => Status::unavailable(format!(
                "a frame was not completed within {t:?}; connection closed"
            )),
            Expired::Idle(t) => Status::unavailable(format!("connection idle for {t:?}; closed")),
            Expired::Silent(t) => Status::unavailable(format!(
                "no bytes from the peer for {t:?} with calls in flight (peer dead or unreachable); connection closed"
            )),
        }
    }
}

/// The timeouts that bound a connection's reads (each `None`: never).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadTimeouts {
    /// From a frame's first byte to its last.
    pub(crate) frame: Option<Duration>,
    /// Nothing in flight and no bytes.
    pub(crate) idle: Option<Duration>,
    /// Something in flight and no bytes (a vanished or hung peer).
    pub(crate) silence: Option<Duration>,
}

impl ReadTimeouts {
    /// A server's: the frame and idle timeouts of its limits.
    pub(crate) fn server(limits: &ServerLimits) -> ReadTimeouts {
        ReadTimeouts {
            frame: Some(limits.frame_timeout),
            idle: limits.idle_timeout,
            silence: None,
        }
    }

    /// A client connection's: the frame and silence timeouts of its limits, and the idle
    /// timeout where the connection idles out by its reader (`idle`).
    pub(crate) fn client(limits: &Limits, idle: bool) -> ReadTimeouts {
        ReadTimeouts {
            frame: limits.frame_timeout,
            idle: if idle { limits.idle_timeout } else { None },
            silence: limits.silence_timeout,
        }
    }
}

/// The reader's clock: when the incomplete frame at the front of the buffer started, since
/// when the connection has been idle, and since when it has been silent with calls in flight.
///
/// One timer serves every read and is moved only when a deadline comes *earlier* than the one
/// it is set to. A deadline that moved later (a new frame started, the usual case under load)
/// leaves the timer where it is: when it fires early, the read re-checks and sets it to the
/// current deadline. Registering a fresh timer per read would cost a timer-wheel insert and
/// removal each time and, whenever it is the runtime's earliest timer, a wake of the I/O
/// driver (an `eventfd` write): one extra syscall per read.
pub(crate) struct ReadClock {
    frame_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    silence_timeout: Option<Duration>,
    frame_start: Option<Instant>,
    idle_since: Option<Instant>,
    silent_since: Option<Instant>,
    /// The timer, created on first use, and the instant it is set to.
    timer: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
}

impl ReadClock {
    pub(crate) fn new(t: ReadTimeouts) -> ReadClock {
        ReadClock {
            frame_timeout: t.frame,
            idle_timeout: t.idle,
            silence_timeout: t.silence,
            frame_start: None,
            idle_since: None,
            silent_since: None,
            timer: None,
            armed: None,
        }
    }

    /// Sets the timer to fire no later than `at` (never earlier than needed by more than the
    /// distance a deadline moved since it was set; see the type's docs).
    fn arm(&mut self, at: Instant) -> Pin<&mut Sleep> {
        let reset = self.armed.is_none_or(|armed| armed > at);
        if reset {
            self.armed = Some(at);
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if reset {
            timer.as_mut().reset(at);
        }
        timer.as_mut()
    }

    /// After parsing: `left` bytes of an incomplete frame remain; `decoded` says whether whole
    /// frames were taken (then what is left is a new frame, started with the last read).
    pub(crate) fn after_decode(&mut self, left: usize, decoded: bool) {
        if left == 0 {
            self.frame_start = None;
        } else if decoded || self.frame_start.is_none() {
            self.frame_start = Some(Instant::now());
        }
    }

    /// After the reader paused (our backpressure, not the peer's slowness): the incomplete
    /// frame's time starts again.
    pub(crate) fn after_pause(&mut self, left: usize) {
        self.frame_start = (left > 0).then(Instant::now);
    }

    /// When the next read must have completed, given whether anything is in flight.
    fn deadline(&mut self, idle: bool) -> Option<(Instant, Expired)> {
        if let (Some(start), Some(t)) = (self.frame_start, self.frame_timeout) {
            return Some((start + t, Expired::Frame(t)));
        }
        if !idle {
            self.idle_since = None;
            let t = self.silence_timeout?;
            let since = *self.silent_since.get_or_insert_with(Instant::now);
            return Some((since + t, Expired::Silent(t)));
        }
        self.silent_since = None;
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        self.idle_timeout.map(|t| (since + t, Expired::Idle(t)))
    }
}

/// What one read attempt ended with.
pub(crate) enum Read {
    /// Bytes were appended to the buffer.
    Bytes,
    /// `wake` was notified (in-flight work changed): re-check and read again.
    Woken,
    /// The connection ends with this status (EOF, error, timeout).
    End(Status),
    /// The idle timeout passed: the connection ends with this status if it can still be
    /// retired as idle (a client may be opening a call on it right now).
    Idle(Status),
}

/// Reads once into `buf`, bounded by the clock's deadline, or returns early when `wake` fires.
/// `is_idle` tells whether nothing is in flight; it is asked again when the timer fires (a
/// client opens calls without waking its reader, so "idle" may have ended meanwhile).
pub(crate) async fn read_some(
    rd: &mut ReadHalf,
    buf: &mut BytesMut,
    clock: &mut ReadClock,
    is_idle: impl Fn() -> bool,
    wake: &Notify,
) -> Read {
    let idle = is_idle();
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(64 * 1024);
    }
    let deadline = clock.deadline(idle);
    loop {
        let timer = deadline.map(|(at, _)| clock.arm(at));
        let expire = async {
            match timer {
                Some(t) => t.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read_buf(buf) => return match r {
                Ok(0) => Read::End(Status::unavailable("connection closed by peer")),
                Ok(_) => {
                    clock.idle_since = None;
                    clock.silent_since = None;
                    Read::Bytes
                }
                Err(e) => Read::End(Status::unavailable(format!("read failed: {e}"))),
            },
            () = expire => {}
            () = wake.notified() => return Read::Woken,
        }
        // The timer fired: at the deadline, or early (it was set for an earlier deadline that
        // has since moved later).
        clock.armed = None;
        if let Some((at, what)) = deadline {
            if is_idle() != idle {
                // In-flight work began or ended since this read started: re-evaluate.
                return Read::Woken;
            }
            if Instant::now() >= at {
                tracing::debug!(?what, "closing a connection on timeout");
                if let Expired::Idle(_) = what {
                    // The next read starts the idle clock afresh if the connection lives on.
                    clock.idle_since = None;
                    return Read::Idle(what.status());
                }
                return Read::End(what.status());
            }
        }
    }
}
