//! Compiles `proto/onnx_subset.proto` into Rust types with prost-build, using
//! the protoc binary shipped inside the `protoc-bin-vendored` crate so that
//! the build needs no system protoc and no download.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.compile_protos(&["proto/onnx_subset.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/onnx_subset.proto");
    Ok(())
}
