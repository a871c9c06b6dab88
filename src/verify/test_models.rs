//! Small ONNX models built in tests with tract's protobuf types.

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};

/// Encodes any ONNX protobuf message.
pub fn encode(message: &impl Message) -> Vec<u8> {
    message.encode_to_vec()
}

/// Returns a fixed dimension.
pub fn fixed(size: i64) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimValue(size)),
        ..Default::default()
    }
}

/// Returns a named, symbolic dimension.
pub fn param(name: &str) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimParam(name.to_string())),
        ..Default::default()
    }
}

/// Returns a dimension with neither a value nor a name.
pub fn unknown() -> Dimension {
    Dimension::default()
}

/// Builder of a one-graph ONNX model at opset 13.
pub struct ModelBuilder {
    graph: pb::GraphProto,
}

impl ModelBuilder {
    pub fn new() -> ModelBuilder {
        ModelBuilder {
            graph: pb::GraphProto {
                name: "test".to_string(),
                ..Default::default()
            },
        }
    }

    pub fn input(&mut self, name: &str, data_type: DataType, dims: &[Dimension]) -> &mut Self {
        self.graph
            .input
            .push(value_info(name, data_type as i32, Some(dims.to_vec())));
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Self {
        self.graph.output.push(pb::ValueInfoProto {
            name: name.to_string(),
            ..Default::default()
        });
        self
    }

    pub fn output_with_shape(
        &mut self,
        name: &str,
        data_type: DataType,
        dims: &[i64],
    ) -> &mut Self {
        let dims = dims.iter().map(|&size| fixed(size)).collect();
        self.graph
            .output
            .push(value_info(name, data_type as i32, Some(dims)));
        self
    }

    pub fn value_info(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        let dims = dims.iter().map(|&size| fixed(size)).collect();
        self.graph
            .value_info
            .push(value_info(name, DataType::Float as i32, Some(dims)));
        self
    }

    pub fn initializer(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
        self.graph
            .initializer
            .push(float_tensor(name, dims, values));
        self
    }

    /// Adds an initializer that is also listed as a graph input, as older exporters do.
    pub fn initializer_as_input(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
        let shape = dims.iter().map(|&size| fixed(size)).collect();
        self.graph
            .input
            .push(value_info(name, DataType::Float as i32, Some(shape)));
        self.initializer(name, dims, values)
    }

    pub fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<pb::AttributeProto>,
    ) -> &mut Self {
        self.graph.node.push(pb::NodeProto {
            name: format!("{op_type}_{}", self.graph.node.len()),
            op_type: op_type.to_string(),
            input: inputs.iter().map(|name| name.to_string()).collect(),
            output: outputs.iter().map(|name| name.to_string()).collect(),
            attribute: attributes,
            ..Default::default()
        });
        self
    }

    pub fn model(&self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(self.graph.clone()),
            ..Default::default()
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(&self.model())
    }
}

fn value_info(name: &str, elem_type: i32, dims: Option<Vec<Dimension>>) -> pb::ValueInfoProto {
    let tensor_type = pb::type_proto::Tensor {
        elem_type,
        shape: dims.map(|dim| pb::TensorShapeProto { dim }),
    };
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(tensor_type)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Builds a float32 `TensorProto` with its values in `float_data`.
pub fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// Builds an integer-list attribute, such as Conv's `kernel_shape`.
pub fn ints_attribute(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// Returns deterministic weights: small values that differ between neighbouring elements.
pub fn ramp(count: usize, scale: f32) -> Vec<f32> {
    (0..count).map(|i| ((i % 7) as f32 - 3.0) * scale).collect()
}

/// Builds a chain of 1x1 Convs on input `x` of shape `[batch, in_channels, height, ?]`, ending in output `y`.
///
/// Each entry of `layers` names a weight and gives its output channel count.
pub fn conv_chain(layers: &[(&str, i64)], in_channels: i64) -> Vec<u8> {
    let mut builder = ModelBuilder::new();
    builder.input(
        "x",
        DataType::Float,
        &[
            param("batch"),
            fixed(in_channels),
            param("height"),
            unknown(),
        ],
    );

    let mut channels = in_channels;
    let mut previous = "x".to_string();
    for (index, (weight, out_channels)) in layers.iter().enumerate() {
        let weight_count = usize::try_from(out_channels * channels).unwrap_or(0);
        builder.initializer(
            weight,
            &[*out_channels, channels, 1, 1],
            &ramp(weight_count, 0.1),
        );

        let output = if index + 1 == layers.len() {
            "y".to_string()
        } else {
            format!("h{index}")
        };
        builder.node(
            "Conv",
            &[&previous, weight],
            &[&output],
            vec![ints_attribute("kernel_shape", &[1, 1])],
        );
        previous = output;
        channels = *out_channels;
    }

    builder.output("y");
    builder.encode()
}

/// Builds `y = x + bias`, where `bias` (float32, `[count]`) is stored as external data in `location`.
pub fn add_external_bias(location: &str, count: i64) -> Vec<u8> {
    let mut builder = ModelBuilder::new();
    builder.input("x", DataType::Float, &[fixed(count)]);
    builder.node("Add", &["x", "bias"], &["y"], vec![]);
    builder.output("y");

    let entry = |key: &str, value: &str| pb::StringStringEntryProto {
        key: key.to_string(),
        value: value.to_string(),
    };
    let bias = pb::TensorProto {
        name: "bias".to_string(),
        dims: vec![count],
        data_type: DataType::Float as i32,
        data_location: Some(pb::tensor_proto::DataLocation::External as i32),
        external_data: vec![
            entry("location", location),
            entry("offset", "0"),
            entry("length", &(count * 4).to_string()),
        ],
        ..Default::default()
    };

    let mut model = builder.model();
    if let Some(graph) = model.graph.as_mut() {
        graph.initializer.push(bias);
    }
    encode(&model)
}

/// Returns the values of a float32 tensor in row-major order.
pub fn values_f32(tensor: &tract_onnx::prelude::Tensor) -> Vec<f32> {
    tensor.to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}
