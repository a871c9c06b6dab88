//! Builders for small ONNX models made of prost types, shared by the
//! integration tests. Each test crate uses only some of them.

#![allow(dead_code)]

use bytes::Bytes;
use half::f16;
use onnx_fold::onnx::attribute_proto::AttributeType;
use onnx_fold::onnx::tensor_proto::DataType;
use onnx_fold::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
};

/// ONNX `TensorProto.DataType` code of float32.
pub const FLOAT: i32 = DataType::Float as i32;

/// ONNX `TensorProto.DataType` code of float16.
pub const FLOAT16: i32 = DataType::Float16 as i32;

/// Builds a float32 tensor stored little-endian in `raw_data`.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw: Vec<u8> = values.iter().flat_map(|value| value.to_le_bytes()).collect();
    raw_tensor(name, FLOAT, dims, raw)
}

/// Builds a float16 tensor stored little-endian in `raw_data`, rounded from `values`.
pub fn f16_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw: Vec<u8> = values.iter().flat_map(|&value| f16::from_f32(value).to_le_bytes()).collect();
    raw_tensor(name, FLOAT16, dims, raw)
}

/// Builds a tensor with the given type code, dims and raw bytes, consistent or not.
pub fn raw_tensor(name: &str, data_type: i32, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        data_type: Some(data_type),
        dims: dims.to_vec(),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

pub use onnx_fold::graph::tensor_value_info as value_info;

/// Builds a node of the default ONNX domain.
pub fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.to_string()),
        op_type: Some(op_type.to_string()),
        input: inputs.iter().map(|input| input.to_string()).collect(),
        output: outputs.iter().map(|output| output.to_string()).collect(),
        ..Default::default()
    }
}

/// Builds an integer-list attribute such as `kernel_shape` or `strides`.
pub fn ints_attribute(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// Builds a graph-valued attribute such as an If branch.
pub fn graph_attribute(name: &str, graph: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(graph),
        ..Default::default()
    }
}

/// Wraps a graph in a model of IR version 8 and opset 17.
pub fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        producer_name: Some("onnx-fold tests".to_string()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// Returns deterministic values spread over [-1, 1) from a seed (xorshift, not
/// a statistical generator).
pub fn spread_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Builds a Conv1d chain `x [1, channels[0], 6] -> ... -> y` of pointwise Convs
/// named `conv_0`, `conv_1`, ... with float32 weights `w_k` and biases `b_k`.
/// Intermediate values are `h_k`.
pub fn conv1d_chain(channels: &[i64]) -> GraphProto {
    let convs = channels.len() - 1;
    let mut graph = GraphProto {
        name: Some("chain".to_string()),
        input: vec![value_info("x", FLOAT, Some(&[1, channels[0], 6]))],
        output: vec![value_info("y", FLOAT, None)],
        ..Default::default()
    };

    for k in 0..convs {
        let (c_in, c_out) = (channels[k], channels[k + 1]);
        let input = if k == 0 { "x".to_string() } else { format!("h_{}", k - 1) };
        let output = if k + 1 == convs { "y".to_string() } else { format!("h_{k}") };
        let (weight, bias) = (format!("w_{k}"), format!("b_{k}"));

        let scale = 1.0 / (c_in as f32).sqrt();
        let weights: Vec<f32> = spread_values((c_out * c_in) as usize, k as u64 + 1).iter().map(|v| v * scale).collect();
        graph.initializer.push(f32_tensor(&weight, &[c_out, c_in, 1], &weights));
        graph.initializer.push(f32_tensor(&bias, &[c_out], &spread_values(c_out as usize, k as u64 + 100)));

        let mut conv = node("Conv", &format!("conv_{k}"), &[&input, &weight, &bias], &[&output]);
        conv.attribute.push(ints_attribute("kernel_shape", &[1]));
        graph.node.push(conv);
    }
    graph
}

/// Finds an initializer by name.
pub fn initializer<'g>(graph: &'g mut GraphProto, name: &str) -> &'g mut TensorProto {
    graph
        .initializer
        .iter_mut()
        .find(|tensor| tensor.name() == name)
        .unwrap_or_else(|| panic!("the test graph has no initializer '{name}'"))
}

/// Counts the nodes of a graph (not of its subgraphs) with the given op type.
pub fn count_ops(graph: &GraphProto, op_type: &str) -> usize {
    graph.node.iter().filter(|node| node.op_type() == op_type).count()
}
