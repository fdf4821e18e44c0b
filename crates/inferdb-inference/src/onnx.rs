//! ONNX protobuf reading without a runtime.
//!
//! [`proto`] holds the prost types generated at build time from
//! `proto/onnx_subset.proto` (our own subset of onnx.proto with the official
//! field numbers). [`decode_model`] turns bytes into a [`proto::ModelProto`];
//! [`Attrs`] gives typed, named access to a node's attributes for the
//! compilers in this crate, reporting a missing or mistyped attribute by name.

use prost::Message;

use crate::error::InferenceError;

/// Types generated from `proto/onnx_subset.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// The `ai.onnx.ml` operator domain.
pub const ML_DOMAIN: &str = "ai.onnx.ml";

/// Decodes model bytes; a model without a graph is an error.
pub fn decode_model(bytes: &[u8]) -> Result<proto::ModelProto, InferenceError> {
    let model =
        proto::ModelProto::decode(bytes).map_err(|e| InferenceError::Decode(e.to_string()))?;
    if model.graph.is_none() {
        return Err(InferenceError::InvalidModel(
            "the model has no graph".into(),
        ));
    }
    Ok(model)
}

/// Named access to a node's attributes.
pub struct Attrs<'a> {
    node: &'a proto::NodeProto,
}

impl<'a> Attrs<'a> {
    /// Wraps a node.
    pub fn new(node: &'a proto::NodeProto) -> Self {
        Attrs { node }
    }

    /// The attribute called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&'a proto::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// Names of all attributes, for rejecting ones we do not know.
    pub fn names(&self) -> impl Iterator<Item = &'a str> {
        self.node.attribute.iter().map(|a| a.name.as_str())
    }

    /// A list of ints; absent means empty.
    pub fn ints(&self, name: &str) -> &'a [i64] {
        self.get(name).map(|a| a.ints.as_slice()).unwrap_or(&[])
    }

    /// A list of floats; absent means empty.
    pub fn floats(&self, name: &str) -> &'a [f32] {
        self.get(name).map(|a| a.floats.as_slice()).unwrap_or(&[])
    }

    /// A list of strings (UTF-8); absent means empty.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, InferenceError> {
        let Some(a) = self.get(name) else {
            return Ok(Vec::new());
        };
        a.strings
            .iter()
            .map(|s| {
                String::from_utf8(s.clone()).map_err(|_| InferenceError::UnsupportedAttribute {
                    name: name.to_string(),
                    reason: "a value is not UTF-8".into(),
                })
            })
            .collect()
    }

    /// A single string, or `default` when absent.
    pub fn string_or(&self, name: &str, default: &str) -> Result<String, InferenceError> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(a) => {
                String::from_utf8(a.s.clone()).map_err(|_| InferenceError::UnsupportedAttribute {
                    name: name.to_string(),
                    reason: "value is not UTF-8".into(),
                })
            }
        }
    }

    /// A single int, or `default` when absent.
    pub fn int_or(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }
}
