//! Model execution for inferdb.
//!
//! This crate owns everything that turns a model file into numbers. Today that
//! is ONNX-ML tree ensembles: [`onnx`] decodes the ONNX protobuf with our own
//! minimal schema (no heavy runtime), and [`tree`] compiles an
//! `ai.onnx.ml` `TreeEnsembleClassifier`/`TreeEnsembleRegressor` graph into flat
//! node arrays and evaluates row-major `[N, F]` f32 batches into labels and
//! scores, matching onnxruntime's semantics (missing values, binary classes,
//! post transforms, aggregate functions).
//!
//! Data flow: model bytes → [`onnx::decode_model`] → [`TreeEnsemble::from_onnx_bytes`]
//! (validation + compilation, once per model load) → [`TreeEnsemble::predict`]
//! (per batch, no allocation beyond the caller's output vectors and one
//! scratch buffer).

pub mod batcher;
pub mod config;
mod dense;
pub mod error;
pub mod manager;
pub mod onnx;
pub mod repository;
pub mod runtime;
pub mod tensor;
pub mod tree;

pub use batcher::{Backend, Batcher, BatcherConfig, BatcherStats, Pending, Reply, Then};
pub use config::{
    DynamicBatching, EnsembleStep, ModelConfig, Platform, TensorConfig, VersionPolicy,
};
pub use error::InferenceError;
pub use manager::{IndexEntry, ManagerOptions, ModelHandle, ModelManager, ModelStats};
pub use repository::{ModelDir, scan_model, scan_repository};
pub use runtime::{CompiledModel, IoSpec, OnnxIo, OnnxSignature, onnx_signature};
pub use tensor::{DataType, Tensor};
pub use tree::{Aggregate, PostTransform, TreeEnsemble, TreeEnsembleKind};
