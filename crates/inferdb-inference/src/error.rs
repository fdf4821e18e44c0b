//! The errors of model loading and execution, and their mapping onto
//! [`inferdb_types::ErrorKind`]. Loading errors name the op, attribute or
//! field at fault; execution errors name the expected and given shapes.

use inferdb_types::ErrorKind;

/// Errors raised while reading, compiling or running a model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InferenceError {
    /// The bytes are not a decodable ONNX protobuf.
    #[error("model is not a valid ONNX protobuf: {0}")]
    Decode(String),
    /// The model decodes but is inconsistent (missing graph, bad tree, ...).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The graph uses an operator this crate does not implement.
    #[error(
        "unsupported operator {domain}:{op_type} (node {node:?}); supported: ai.onnx.ml TreeEnsembleClassifier, TreeEnsembleRegressor, and Identity/Cast around them"
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
}

impl InferenceError {
    /// The kind of this error: every case is the caller's input (a model file
    /// or a batch), so retrying the same input fails again.
    pub fn kind(&self) -> ErrorKind {
        match self {
            InferenceError::Decode(_)
            | InferenceError::InvalidModel(_)
            | InferenceError::UnsupportedOp { .. }
            | InferenceError::UnsupportedAttribute { .. }
            | InferenceError::InputShape { .. } => ErrorKind::InvalidInput,
        }
    }
}
