//! The user guide of the framework (`docs/guide/*.md`), one module per chapter, so that
//! `cargo test` compiles and runs every code block in it and `cargo doc -p guide` renders it.
//! The chapters read best on the repository's web view, where their links between each other
//! and to the examples resolve; `tests/links.rs` checks that they do.
//!
//! This page is the guide's table of contents:
#![doc = include_str!("../guide/README.md")]
#![forbid(unsafe_code)]

#[doc = include_str!("../guide/01-first-service.md")]
pub mod first_service {}

#[doc = include_str!("../guide/02-streaming.md")]
pub mod streaming {}

#[doc = include_str!("../guide/03-middleware.md")]
pub mod middleware {}

#[doc = include_str!("../guide/04-transports.md")]
pub mod transports {}

#[doc = include_str!("../guide/05-discovery.md")]
pub mod discovery {}

#[doc = include_str!("../guide/06-production.md")]
pub mod production {}

#[doc = include_str!("../guide/07-performance.md")]
pub mod performance {}

#[doc = include_str!("../guide/08-from-tonic.md")]
pub mod from_tonic {}

#[doc = include_str!("../guide/09-from-kitex.md")]
pub mod from_kitex {}

#[doc = include_str!("../guide/10-generic-calls.md")]
pub mod generic_calls {}

#[doc = include_str!("../guide/11-writing-a-transport.md")]
pub mod writing_a_transport {}

#[doc = include_str!("../guide/12-testing.md")]
pub mod testing {}

/// The repository's README, so that its example is compiled and run too.
#[doc = include_str!("../../README.md")]
pub mod readme {}
