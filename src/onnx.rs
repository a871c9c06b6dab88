//! Protobuf types generated from the vendored ONNX schema (onnx 1.23.2, onnx-ml.proto).

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
