//! The errors of model loading and execution, and their mapping onto
//! [`inferdb_types::ErrorKind`]. Loading errors name the op, attribute or
//! field at fault; execution errors name the expected and given shapes.

use inferdb_types::ErrorKind;

/// Errors raised while reading, compiling or running a model.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum InferenceError {
    /// The bytes are not a decodable ONNX protobuf.
    #[error("model is not a valid ONNX protobuf: {0}")]
    Decode(String),
    /// The model decodes but is inconsistent (missing graph, bad tree, ...).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The graph uses an operator this crate does not implement.
    #[error(
        "unsupported operator {domain}:{op_type} (node {node:?}); supported: the ONNX operators tract implements, and ai.onnx.ml TreeEnsembleClassifier/TreeEnsembleRegressor (alone, with Identity/Cast around them)"
    )]
    UnsupportedOp {
        /// The node's domain (`ai.onnx.ml`, or empty for the default domain).
        domain: String,
        /// The node's operator.
        op_type: String,
        /// The node's name.
        node: String,
    },
    /// An attribute value (or attribute form) that is not supported.
    #[error("unsupported attribute {name}: {reason}")]
    UnsupportedAttribute {
        /// The attribute's name.
        name: String,
        /// Why it is not supported.
        reason: String,
    },
    /// The input batch does not have the shape the model needs.
    #[error("input has {got} values, expected {n} rows x {features} features = {expected}")]
    InputShape {
        /// Rows the caller declared.
        n: usize,
        /// Features per row the model needs.
        features: usize,
        /// `n * features`.
        expected: usize,
        /// Values the caller passed.
        got: usize,
    },
    /// A request has more rows than the batcher's `max_batch_size`.
    #[error("request of {rows} rows exceeds max_batch_size {max} of model {model}")]
    BatchTooLarge {
        /// The model (batcher) name.
        model: String,
        /// Rows in the request.
        rows: usize,
        /// The configured `max_batch_size`.
        max: usize,
    },
    /// A batcher configuration that cannot work (zero sizes, mismatched widths).
    #[error("invalid batcher config: {0}")]
    InvalidConfig(String),
    /// The model's queue is full; retry later.
    #[error("model {model} is overloaded: {max_queue_size} requests already queued")]
    Overloaded {
        /// The model (batcher) name.
        model: String,
        /// The configured `max_queue_size`.
        max_queue_size: usize,
    },
    /// The request's deadline passed before its batch started; it was not run.
    #[error("request to model {model} timed out before execution")]
    Timeout {
        /// The model (batcher) name.
        model: String,
    },
    /// The model is shutting down or its execution threads are gone.
    #[error("model {model} is unavailable: {reason}")]
    Unavailable {
        /// The model (batcher) name.
        model: String,
        /// Why.
        reason: String,
    },
    /// A backend broke its contract (panicked, wrong output length).
    #[error("internal error: {0}")]
    Internal(String),
    /// A request that does not fit the model (names, shapes, datatypes); the
    /// message names the tensor.
    #[error("{0}")]
    InvalidInput(String),
    /// No model (or no such version of it) is loaded under this name.
    #[error("unknown model {name}{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    UnknownModel {
        /// The requested model.
        name: String,
        /// The requested version, when one was named.
        version: Option<i64>,
    },
    /// A model's `config.pbtxt` (or its repository directory) is invalid or
    /// uses a field inferdb does not support; the message names the field.
    #[error("model {model}: {message}")]
    Config {
        /// The model (directory) name.
        model: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl InferenceError {
    /// The kind of this error: loading and shape errors are the caller's input
    /// (retrying the same input fails again); the batcher's queue adds
    /// overload, timeout, unavailability and backend faults.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InferenceError::Decode(_)
            | InferenceError::InvalidModel(_)
            | InferenceError::UnsupportedOp { .. }
            | InferenceError::UnsupportedAttribute { .. }
            | InferenceError::InputShape { .. }
            | InferenceError::BatchTooLarge { .. }
            | InferenceError::InvalidConfig(_)
            | InferenceError::Config { .. }
            | InferenceError::InvalidInput(_) => ErrorKind::InvalidInput,
            InferenceError::UnknownModel { .. } => ErrorKind::NotFound,
            InferenceError::Overloaded { .. } => ErrorKind::Overloaded,
            InferenceError::Timeout { .. } => ErrorKind::Timeout,
            InferenceError::Unavailable { .. } => ErrorKind::Unavailable,
            InferenceError::Internal(_) => ErrorKind::Internal,
        }
    }
}
