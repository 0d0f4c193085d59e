//! Benchmarks: criterion micro-benchmarks and an end-to-end load generator comparing against peers.
//!
//! Status: placeholder; benchmarks land with the transports they measure.

#![forbid(unsafe_code)]
