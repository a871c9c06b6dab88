//! Reading a Conv node: its attributes, its constant weight and bias, and the
//! multiply-accumulate cost that the fold policy compares.

use crate::error::Error;
use crate::graph::{node_label, Constant, Scope};
use crate::onnx::{AttributeProto, NodeProto};
use crate::tensor::{checked_dims, data_type_name, FloatType};

/// The attributes of a Conv node that decide whether it can join a chain.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttributes {
    pub auto_pad: String,
    pub dilations: Vec<i64>,
    pub group: i64,
    pub kernel_shape: Option<Vec<i64>>,
    pub pads: Vec<i64>,
    pub strides: Vec<i64>,
}

impl ConvAttributes {
    /// Reads the attributes, with ONNX defaults for the absent ones.
    pub fn parse(node: &NodeProto) -> Result<Self, String> {
        let mut attributes = ConvAttributes {
            auto_pad: "NOTSET".to_string(),
            dilations: Vec::new(),
            group: 1,
            kernel_shape: None,
            pads: Vec::new(),
            strides: Vec::new(),
        };
        for attribute in &node.attribute {
            match attribute.name() {
                "auto_pad" => attributes.auto_pad = string_attribute(attribute)?,
                "dilations" => attributes.dilations = attribute.ints.clone(),
                "group" => attributes.group = attribute.i.ok_or("attribute 'group' holds no integer")?,
                "kernel_shape" => attributes.kernel_shape = Some(attribute.ints.clone()),
                "pads" => attributes.pads = attribute.ints.clone(),
                "strides" => attributes.strides = attribute.ints.clone(),
                _ => {}
            }
        }
        if attributes.group < 1 {
            return Err(format!("attribute 'group' is {}, it must be at least 1", attributes.group));
        }
        Ok(attributes)
    }

    /// Returns why a Conv with these attributes cannot follow another in a
    /// chain, or `None` when it is pointwise: kernel 1, stride 1, zero pads,
    /// group 1, auto_pad NOTSET or VALID.
    pub fn pointwise_violation(&self, kernel: &[usize]) -> Option<String> {
        if kernel.iter().any(|&k| k != 1) {
            return Some(format!("kernel {kernel:?} is not 1-wide"));
        }
        if self.strides.iter().any(|&s| s != 1) {
            return Some(format!("strides {:?} are not 1", self.strides));
        }
        if self.pads.iter().any(|&p| p != 0) {
            return Some(format!("pads {:?} are not 0", self.pads));
        }
        if self.group != 1 {
            return Some(format!("group is {}, not 1", self.group));
        }
        if !matches!(self.auto_pad.as_str(), "NOTSET" | "VALID") {
            return Some(format!("auto_pad is {}, not NOTSET or VALID", self.auto_pad));
        }
        None
    }
}

fn string_attribute(attribute: &AttributeProto) -> Result<String, String> {
    let bytes = attribute.s.as_ref().ok_or_else(|| format!("attribute '{}' holds no string", attribute.name()))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("attribute '{}' is not UTF-8", attribute.name()))
}

/// A Conv node whose weight and bias are constants, ready to join a chain.
pub struct ConvCandidate<'a> {
    pub index: usize,
    pub node: &'a NodeProto,
    pub label: String,
    pub input: &'a str,
    pub output: &'a str,
    pub weight: Constant<'a>,
    pub bias: Option<Constant<'a>>,
    /// Weight dims `[C_out, C_in / group, k...]`.
    pub weight_dims: Vec<usize>,
    pub elem: FloatType,
    pub attributes: ConvAttributes,
}

/// The reason a Conv cannot take part in a fold.
pub enum Rejection {
    /// A legal model that onnx-fold leaves alone (a weight that is not constant).
    NotFoldable(String),
    /// A malformed Conv: an error when it is linked to another Conv.
    Invalid(Error),
}

impl<'a> ConvCandidate<'a> {
    /// Checks a Conv node and reads what a fold needs, without decoding weights.
    pub fn new(scope: &Scope<'a>, index: usize, node: &'a NodeProto) -> Result<Self, Rejection> {
        let label = node_label(node);
        let invalid = |reason: String| {
            Rejection::Invalid(Error::InvalidNode {
                node: label.clone(),
                op_type: node.op_type().to_string(),
                reason,
            })
        };

        let input = node.input.first().filter(|name| !name.is_empty()).ok_or_else(|| invalid("input X is missing".to_string()))?;
        let weight_name = node.input.get(1).filter(|name| !name.is_empty()).ok_or_else(|| invalid("weight input W is missing".to_string()))?;
        let output = node.output.first().filter(|name| !name.is_empty()).ok_or_else(|| invalid("it has no output".to_string()))?;
        if node.output.len() > 1 {
            return Err(invalid(format!("it has {} outputs; Conv has one", node.output.len())));
        }
        let attributes = ConvAttributes::parse(node).map_err(invalid)?;

        let weight = scope
            .resolve_constant(weight_name)
            .map_err(|reason| Rejection::NotFoldable(format!("weight of '{label}': {reason}")))?;
        let (weight_dims, elem) = weight_shape(&weight, &attributes).map_err(invalid)?;
        let group = usize::try_from(attributes.group).unwrap_or(1);
        if let Some(channels) = stored_channels(scope, input) {
            if channels != weight_dims[1] * group {
                return Err(invalid(format!(
                    "input '{input}' has {channels} channels but weight dims {weight_dims:?} with group {group} need {}",
                    weight_dims[1] * group
                )));
            }
        }

        let bias = match node.input.get(2).filter(|name| !name.is_empty()) {
            None => None,
            Some(name) => {
                let bias = scope
                    .resolve_constant(name)
                    .map_err(|reason| Rejection::NotFoldable(format!("bias of '{label}': {reason}")))?;
                check_bias(&bias, weight_dims[0], elem).map_err(invalid)?;
                Some(bias)
            }
        };

        Ok(ConvCandidate {
            index,
            node,
            label,
            input,
            output,
            weight,
            bias,
            weight_dims,
            elem,
            attributes,
        })
    }

    /// Output channels.
    pub fn c_out(&self) -> usize {
        self.weight_dims[0]
    }

    /// Input channels of the Conv (all groups together).
    pub fn c_in(&self) -> usize {
        self.weight_dims[1] * self.group()
    }

    /// Spatial kernel dims.
    pub fn kernel(&self) -> &[usize] {
        &self.weight_dims[2..]
    }

    /// Group count, checked to be at least 1 when parsed.
    pub fn group(&self) -> usize {
        usize::try_from(self.attributes.group).unwrap_or(1)
    }

    /// Multiply-accumulates per output position: `C_out · C_in / group · Π k`.
    pub fn macs(&self) -> u64 {
        self.weight_dims.iter().map(|&dim| dim as u64).product()
    }

    /// Multiply-accumulates per output position of this Conv made dense.
    pub fn dense_macs(&self, c_out: usize) -> u64 {
        let kernel: u64 = self.kernel().iter().map(|&k| k as u64).product();
        c_out as u64 * self.c_in() as u64 * kernel
    }
}

/// Returns the channel count (dim 1) of a value when the graph stores it as a number.
fn stored_channels(scope: &Scope, name: &str) -> Option<usize> {
    let graph = scope.index.graph;
    let value = graph.input.iter().chain(&graph.value_info).find(|value| value.name() == name)?;
    let tensor_type = match value.r#type.as_ref()?.value.as_ref()? {
        crate::onnx::type_proto::Value::TensorType(tensor) => tensor,
        _ => return None,
    };
    let dim = tensor_type.shape.as_ref()?.dim.get(1)?;
    match dim.value.as_ref()? {
        crate::onnx::tensor_shape_proto::dimension::Value::DimValue(channels) => usize::try_from(*channels).ok(),
        _ => None,
    }
}

fn weight_shape(weight: &Constant, attributes: &ConvAttributes) -> Result<(Vec<usize>, FloatType), String> {
    let tensor = &weight.tensor;
    let elem = FloatType::from_onnx(tensor.data_type()).ok_or_else(|| {
        format!(
            "weight '{}' has element type {}; Conv needs float16, bfloat16, float or double",
            tensor.name(),
            data_type_name(tensor.data_type())
        )
    })?;
    let (dims, _) = checked_dims(tensor).map_err(|error| error.to_string())?;

    if dims.len() < 3 {
        return Err(format!("weight '{}' has dims {dims:?}; a Conv weight needs rank 3 or more", tensor.name()));
    }
    if dims[0] == 0 || dims[1] == 0 {
        return Err(format!("weight '{}' has dims {dims:?} with no channels", tensor.name()));
    }
    if dims[0] % usize::try_from(attributes.group).unwrap_or(1) != 0 {
        return Err(format!("{} output channels are not divisible by group {}", dims[0], attributes.group));
    }
    if let Some(kernel_shape) = &attributes.kernel_shape {
        let kernel: Vec<i64> = dims[2..].iter().map(|&k| k as i64).collect();
        if *kernel_shape != kernel {
            return Err(format!("kernel_shape {kernel_shape:?} disagrees with weight dims {dims:?}"));
        }
    }
    Ok((dims, elem))
}

fn check_bias(bias: &Constant, c_out: usize, elem: FloatType) -> Result<(), String> {
    let tensor = &bias.tensor;
    let (dims, _) = checked_dims(tensor).map_err(|error| error.to_string())?;
    if dims != [c_out] {
        return Err(format!("bias '{}' has dims {dims:?}, expected [{c_out}]", tensor.name()));
    }
    if FloatType::from_onnx(tensor.data_type()) != Some(elem) {
        return Err(format!(
            "bias '{}' has element type {}, unlike its weight",
            tensor.name(),
            data_type_name(tensor.data_type())
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto {
            name: Some(name.to_string()),
            ints: values.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn pointwise_defaults_accepted() {
        let node = NodeProto::default();

        let attributes = ConvAttributes::parse(&node).unwrap();

        assert_eq!(attributes.pointwise_violation(&[1, 1]), None);
    }

    #[test]
    fn each_attribute_names_its_violation() {
        let cases = [
            (ints("strides", &[2]), "strides"),
            (ints("pads", &[0, 1]), "pads"),
            (
                AttributeProto {
                    name: Some("group".to_string()),
                    i: Some(2),
                    ..Default::default()
                },
                "group",
            ),
            (
                AttributeProto {
                    name: Some("auto_pad".to_string()),
                    s: Some(bytes::Bytes::from_static(b"SAME_UPPER")),
                    ..Default::default()
                },
                "auto_pad",
            ),
        ];
        for (attribute, expected) in cases {
            let node = NodeProto {
                attribute: vec![attribute],
                ..Default::default()
            };

            let violation = ConvAttributes::parse(&node).unwrap().pointwise_violation(&[1]).unwrap();

            assert!(violation.contains(expected), "{violation}");
        }
    }

    #[test]
    fn wide_kernel_is_a_violation() {
        let attributes = ConvAttributes::parse(&NodeProto::default()).unwrap();

        let violation = attributes.pointwise_violation(&[3, 1]).unwrap();

        assert!(violation.contains("[3, 1]"), "{violation}");
    }

    #[test]
    fn zero_group_rejected() {
        let node = NodeProto {
            attribute: vec![AttributeProto {
                name: Some("group".to_string()),
                i: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        };

        assert!(ConvAttributes::parse(&node).is_err());
    }
}
