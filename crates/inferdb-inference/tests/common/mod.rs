//! ONNX graphs built in tests with the crate's own protobuf types.
#![allow(dead_code)]

use inferdb_inference::onnx::proto;
use prost::Message;

use proto::tensor_shape_proto::{Dimension, dimension};

/// xorshift64: graphs and data from one seed, no dependency needed. The
/// state must not be zero.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A float tensor `[batch, width]`; `batch` names the batch dim's
/// `dim_param`, or leaves it unknown (what `FloatTensorType([None, w])`
/// gives).
pub fn value_info(name: &str, batch: Option<&str>, width: usize) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(proto::TensorShapeProto {
                        dim: vec![
                            Dimension {
                                value: batch.map(|b| dimension::Value::DimParam(b.into())),
                                ..Default::default()
                            },
                            Dimension {
                                value: Some(dimension::Value::DimValue(width as i64)),
                                ..Default::default()
                            },
                        ],
                    }),
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The encoded model of one graph in the default domain at `opset`.
pub fn model_bytes(
    nodes: Vec<proto::NodeProto>,
    initializer: Vec<proto::TensorProto>,
    input: Vec<proto::ValueInfoProto>,
    output: Vec<proto::ValueInfoProto>,
    opset: i64,
) -> Vec<u8> {
    proto::ModelProto {
        ir_version: 8,
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(proto::GraphProto {
            node: nodes,
            name: "g".into(),
            initializer,
            input,
            output,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}
