//! The per-fold check: every fused Conv is run in tract against the chain it
//! replaces, on a small model of its own, before it is applied.
//!
//! Both small models read one input `x` of shape `[1, C_in, s...]`, with each
//! spatial size `s` large enough for the first Conv to produce at least three
//! positions per axis, and seeded random values. This check runs even when
//! tract cannot run the whole model.
//!
//! tract 0.23 has no bfloat16, so a bfloat16 fold is checked in float32: its
//! weights convert to float32 exactly, and the fused weight's single rounding
//! to bfloat16 is covered by a looser tolerance.

use crate::fold::FoldCandidate;
use crate::graph::tensor_value_info;
use crate::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use crate::report::FoldCheck;
use crate::tensor::{encode, rounded, FloatType, Weights};
use crate::verify::{verify_models, ModelSource, Tolerance, VerifyOptions};

/// Tolerance of a bfloat16 fold run in float32: bfloat16 keeps 8 significant
/// bits (relative spacing 2^-7), and a fused weight is rounded once more.
const BF16_IN_F32: Tolerance = Tolerance { rtol: 3e-2, atol: 1e-2 };

/// Runs the chain and the fused Conv of a candidate in tract and compares them.
pub fn check_fold(candidate: &FoldCandidate) -> FoldCheck {
    let Some((first_node, first_weight, _)) = candidate.originals.first() else {
        return failed("the fold has no original Convs".to_string());
    };
    let input_dims = match input_dims(first_node, first_weight) {
        Ok(dims) => dims,
        Err(reason) => return failed(format!("the check did not run: {reason}")),
    };
    let is_bf16 = first_weight.elem == FloatType::BF16;
    let run_type = if is_bf16 { FloatType::F32 } else { first_weight.elem };

    let chain = chain_model(candidate, &input_dims, run_type);
    let fused = fused_model(candidate, &input_dims, run_type);
    let original = ModelSource {
        label: "original chain",
        bytes: &chain,
        model_dir: None,
    };
    let folded = ModelSource {
        label: "fused Conv",
        bytes: &fused,
        model_dir: None,
    };

    let options = VerifyOptions {
        tolerance: is_bf16.then_some(BF16_IN_F32),
        ..Default::default()
    };
    match verify_models(&original, &folded, &options) {
        Ok(verification) => FoldCheck {
            passed: verification.passed(),
            detail: verification.comparison.to_string(),
            comparison: Some(verification.comparison),
        },
        Err(error) => failed(format!("tract could not run the check: {error}")),
    }
}

fn failed(detail: String) -> FoldCheck {
    FoldCheck {
        passed: false,
        detail,
        comparison: None,
    }
}

/// Largest input of a per-fold check, in elements (64 MiB of float32). A
/// first Conv with strides or dilations that need more is not checked, so
/// its chain is left unfolded.
const MAX_CHECK_INPUT_ELEMENTS: i64 = 1 << 24;

/// `[1, C_in, s...]` with `s = dilation · (k - 1) + 1 + 2 · stride` per axis,
/// so every axis has at least three output positions. Returns a reason when
/// that input has more than [`MAX_CHECK_INPUT_ELEMENTS`] elements.
fn input_dims(first: &NodeProto, weight: &Weights) -> Result<Vec<i64>, String> {
    let ints = |name: &str| -> Vec<i64> {
        first
            .attribute
            .iter()
            .find(|attribute| attribute.name() == name)
            .map(|attribute| attribute.ints.clone())
            .unwrap_or_default()
    };
    let (strides, dilations) = (ints("strides"), ints("dilations"));
    let group = first
        .attribute
        .iter()
        .find(|attribute| attribute.name() == "group")
        .and_then(|attribute| attribute.i)
        .unwrap_or(1);
    let too_large = || {
        format!(
            "its input for kernel {:?}, strides {strides:?} and dilations {dilations:?} would have more than {MAX_CHECK_INPUT_ELEMENTS} elements",
            &weight.dims[2..]
        )
    };

    let channels = i64::try_from(weight.dims[1]).ok().and_then(|c_in| c_in.checked_mul(group));
    let mut dims = vec![1, channels.ok_or_else(too_large)?];
    let mut elements = dims[1];
    for (axis, &kernel) in weight.dims[2..].iter().enumerate() {
        let stride = strides.get(axis).copied().unwrap_or(1).max(1);
        let dilation = dilations.get(axis).copied().unwrap_or(1).max(1);
        let size = i64::try_from(kernel)
            .ok()
            .and_then(|kernel| dilation.checked_mul(kernel - 1))
            .and_then(|extent| extent.checked_add(1))
            .and_then(|extent| stride.checked_mul(2).and_then(|margin| extent.checked_add(margin)))
            .ok_or_else(too_large)?;
        elements = elements.checked_mul(size).ok_or_else(too_large)?;
        dims.push(size);
    }
    if elements > MAX_CHECK_INPUT_ELEMENTS {
        return Err(too_large());
    }
    Ok(dims)
}

fn chain_model(candidate: &FoldCandidate, input_dims: &[i64], run_type: FloatType) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let count = candidate.originals.len();

    for (index, (node, weight, bias)) in candidate.originals.iter().enumerate() {
        let input = if index == 0 { "x".to_string() } else { format!("h{}", index - 1) };
        let output = if index + 1 == count { "y".to_string() } else { format!("h{index}") };
        let mut inputs = vec![input, format!("w{index}")];
        initializers.push(encode(&format!("w{index}"), &as_type(weight, run_type)));
        if let Some(bias) = bias {
            inputs.push(format!("b{index}"));
            initializers.push(encode(&format!("b{index}"), &as_type(bias, run_type)));
        }
        nodes.push(conv_node(node, inputs, output));
    }
    small_model(nodes, initializers, input_dims, run_type.onnx())
}

/// The fused model, with the fused weights rounded to their stored type
/// first, so that the check runs the values the written model will contain.
fn fused_model(candidate: &FoldCandidate, input_dims: &[i64], run_type: FloatType) -> Vec<u8> {
    let stored = |weights: &Weights| as_type(&rounded(weights), run_type);
    let mut inputs = vec!["x".to_string(), "w".to_string()];
    let mut initializers = vec![encode("w", &stored(candidate.weight))];
    if let Some(bias) = candidate.bias {
        inputs.push("b".to_string());
        initializers.push(encode("b", &stored(bias)));
    }
    let node = conv_node(candidate.fused, inputs, "y".to_string());
    small_model(vec![node], initializers, input_dims, run_type.onnx())
}

fn as_type(weights: &Weights, elem: FloatType) -> Weights {
    Weights {
        elem,
        ..weights.clone()
    }
}

fn conv_node(template: &NodeProto, input: Vec<String>, output: String) -> NodeProto {
    NodeProto {
        op_type: Some("Conv".to_string()),
        input,
        output: vec![output],
        attribute: template.attribute.clone(),
        ..Default::default()
    }
}

fn small_model(node: Vec<NodeProto>, initializer: Vec<crate::onnx::TensorProto>, input_dims: &[i64], elem: i32) -> Vec<u8> {
    let graph = GraphProto {
        name: Some("fold_check".to_string()),
        node,
        initializer,
        input: vec![tensor_value_info("x", elem, Some(input_dims))],
        output: vec![tensor_value_info("y", elem, None)],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    crate::model::encode(&model)
}
