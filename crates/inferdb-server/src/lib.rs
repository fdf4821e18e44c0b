//! The inferdb server: the HTTP API over the engine ([`api`]), its
//! configuration ([`config`]), metrics, and the CLI commands (`serve`,
//! `demo`, `gen`, `bench`, `sql`) that `main.rs` dispatches to.

pub mod api;
pub mod bench;
pub mod bench_query;
pub mod client;
pub mod config;
pub mod demo;
pub mod infer;
pub mod json_rows;
pub mod kserve;
pub mod loadgen;
pub mod metrics;
pub mod serve;
pub mod sql;
pub mod training;
pub mod workload;
