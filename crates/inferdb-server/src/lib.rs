//! The inferdb server: the HTTP API over the engine ([`api`]), its
//! configuration ([`config`]), metrics, and the CLI commands (`serve`,
//! `demo`, `gen`, `bench`) that `main.rs` dispatches to.

pub mod api;
pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod infer;
pub mod kserve;
pub mod loadgen;
pub mod metrics;
pub mod serve;
pub mod workload;
