//! Shared-memory transport between processes on one Linux host: payloads in memfd regions,
//! a Unix socket for wakeups and fallback.
//!
//! Status: placeholder; the transport lands with its own issue.
