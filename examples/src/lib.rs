//! The echo service used by the demo, the end-to-end tests and the benchmarks.
