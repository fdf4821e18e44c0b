//! Tensors as the model server passes them around: a name, a Triton data
//! type, a shape (batch dimension first for batched models) and the values.
//!
//! Decision: every numeric tensor is carried as `f32` between the protocol
//! layer, the batcher and the backends. The models inferdb runs (Gemm/MatMul
//! networks, tree ensembles) compute in f32; integer and boolean tensors are
//! converted at the edges and must be exactly representable as f32
//! (|v| ≤ 2^24), which the protocol layer checks and refuses with a 400
//! naming the tensor otherwise. `BYTES` (string) tensors are not supported.

use std::fmt;

/// A tensor element type, named as Triton names it (`TYPE_FP32` in
/// `config.pbtxt`, `FP32` in the KServe V2 protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

const ALL: [(DataType, &str); 13] = [
    (DataType::Bool, "BOOL"),
    (DataType::Uint8, "UINT8"),
    (DataType::Uint16, "UINT16"),
    (DataType::Uint32, "UINT32"),
    (DataType::Uint64, "UINT64"),
    (DataType::Int8, "INT8"),
    (DataType::Int16, "INT16"),
    (DataType::Int32, "INT32"),
    (DataType::Int64, "INT64"),
    (DataType::Fp16, "FP16"),
    (DataType::Fp32, "FP32"),
    (DataType::Fp64, "FP64"),
    (DataType::Bytes, "BYTES"),
];

impl DataType {
    /// The KServe V2 name (`FP32`).
    pub fn kserve_name(self) -> &'static str {
        ALL.iter()
            .find(|(d, _)| *d == self)
            .map(|(_, n)| *n)
            .unwrap_or("BYTES")
    }

    /// The `config.pbtxt` name (`TYPE_FP32`; `TYPE_STRING` for bytes).
    pub fn triton_name(self) -> String {
        match self {
            DataType::Bytes => "TYPE_STRING".to_string(),
            d => format!("TYPE_{}", d.kserve_name()),
        }
    }

    /// Parses a KServe V2 name (`FP32`).
    pub fn from_kserve(name: &str) -> Option<DataType> {
        ALL.iter().find(|(_, n)| *n == name).map(|(d, _)| *d)
    }

    /// Parses a `config.pbtxt` name (`TYPE_FP32`, `TYPE_STRING`).
    pub fn from_triton(name: &str) -> Option<DataType> {
        match name {
            "TYPE_STRING" => Some(DataType::Bytes),
            _ => name.strip_prefix("TYPE_").and_then(DataType::from_kserve),
        }
    }

    /// Bytes per element in the binary tensor data extension (`None` for
    /// `BYTES`, whose elements are length-prefixed).
    pub fn byte_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// Whether inferdb can carry this type (everything but `BYTES` and `FP16`).
    pub fn is_supported(self) -> bool {
        !matches!(self, DataType::Bytes | DataType::Fp16)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kserve_name())
    }
}

/// One named tensor. `data.len()` equals the product of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// Number of elements the shape holds (`None` when a dimension is
    /// negative or the product overflows).
    pub fn element_count(shape: &[i64]) -> Option<usize> {
        shape.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (d, n) in ALL {
            assert_eq!(DataType::from_kserve(n), Some(d));
            assert_eq!(d.kserve_name(), n);
            assert_eq!(DataType::from_triton(&d.triton_name()), Some(d));
        }
        assert_eq!(DataType::from_triton("TYPE_STRING"), Some(DataType::Bytes));
        assert_eq!(DataType::from_triton("FP32"), None);
        assert_eq!(DataType::from_kserve("TYPE_FP32"), None);
    }

    #[test]
    fn element_count_checks_shapes() {
        assert_eq!(Tensor::element_count(&[2, 3]), Some(6));
        assert_eq!(Tensor::element_count(&[]), Some(1));
        assert_eq!(Tensor::element_count(&[-1, 3]), None);
        assert_eq!(Tensor::element_count(&[i64::MAX, i64::MAX]), None);
    }
}
