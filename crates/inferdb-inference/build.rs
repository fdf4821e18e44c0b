//! Compiles the crate's protobuf schemas into Rust types with prost-build,
//! using the protoc binary shipped inside the `protoc-bin-vendored` crate so
//! that the build needs no system protoc and no download:
//!
//! - `proto/onnx_subset.proto`: the ONNX model file ([`onnx`](src/onnx.rs)).
//! - `proto/model_config.proto`: our subset of Triton's `config.pbtxt` schema
//!   ([`config`](src/config.rs)). Besides the Rust types it writes the file
//!   descriptor set `model_config.bin` that prost-reflect needs to parse the
//!   protobuf text format and to print the proto3 JSON mapping.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    config.compile_protos(&["proto/onnx_subset.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/onnx_subset.proto");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    config.file_descriptor_set_path(out_dir.join("model_config.bin"));
    config.compile_protos(&["proto/model_config.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/model_config.proto");
    Ok(())
}
