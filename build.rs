//! Compiles the vendored ONNX schema (proto/onnx-ml.proto) into prost types.
//! protox parses the schema in Rust, so no protoc install is needed.

use std::io::Result;

fn main() -> Result<()> {
    println!("cargo:rerun-if-changed=proto/onnx-ml.proto");

    let descriptors = protox::compile(["proto/onnx-ml.proto"], ["proto"])
        .map_err(|error| std::io::Error::other(error.to_string()))?;

    let mut config = prost_build::Config::new();
    // Tensor payloads as `Bytes`: decoding a model read into one buffer then
    // slices raw_data out of it instead of copying every weight.
    config.bytes(["."]);
    config.compile_fds(descriptors)
}
