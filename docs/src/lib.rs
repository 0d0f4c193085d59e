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
