//! Property tests over random chains of pointwise Convs.
//!
//! A chain has 2 to 6 Convs with 1 to 64 channels each, 1 to 3 spatial axes,
//! float32 or float16 weights, and a bias on each Conv or not. Each
//! intermediate value may also be read by a second consumer (a Relu, or a
//! pointwise Conv branch) or be a graph output. The properties:
//!
//! - the folded model's outputs equal the original's in tract, within the
//!   default tolerance of the element type;
//! - no fold removes a value that was a graph output or had more than one
//!   consumer, and the policy `always` leaves exactly one Conv per run of
//!   Convs between such values.
//!
//! The fold runs without its per-fold check, so that the fold itself is what
//! is tested. `PROPTEST_CASES` sets the number of cases of each property.

mod support;

use std::collections::{HashMap, HashSet};

use onnx_fold::external::ExternalData;
use onnx_fold::onnx::{GraphProto, ModelProto, NodeProto, TensorProto};
use onnx_fold::verify::{verify_models, ModelSource, VerifyOptions};
use onnx_fold::{fold_model, FoldOptions, FoldReport, Policy};
use prost::Message;
use proptest::prelude::*;
use support::*;

/// Cases of the tract property: 8000 took 32 s in release mode on a 2-core
/// machine, and 10000 took 61 s with a fuzzer busy on the other core.
const TRACT_CASES: u32 = 8000;

/// Cases of the structural property, which runs no model.
const STRUCTURE_CASES: u32 = 20000;

/// What reads an intermediate value of the chain besides the next Conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Only the next Conv.
    Inner,
    /// Also a Relu whose output is a graph output.
    FanOutRelu,
    /// Also a pointwise Conv to 3 channels whose output is a graph output.
    FanOutConv,
    /// Also a graph output.
    GraphOutput,
}

impl Role {
    fn blocks_fold(self) -> bool {
        self != Role::Inner
    }
}

/// One random chain model.
#[derive(Clone, Debug)]
struct ChainSpec {
    /// Input channels, then the output channels of each Conv.
    channels: Vec<i64>,
    /// Batch size of the input.
    batch: i64,
    /// Spatial sizes of the input, one per axis.
    spatial: Vec<i64>,
    float16: bool,
    /// Whether each Conv has a bias.
    bias: Vec<bool>,
    /// The role of the output of each Conv but the last.
    roles: Vec<Role>,
    /// Seed of the weights.
    seed: u64,
}

impl ChainSpec {
    fn convs(&self) -> usize {
        self.channels.len() - 1
    }

    fn elem_type(&self) -> i32 {
        if self.float16 {
            FLOAT16
        } else {
            FLOAT
        }
    }
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        5 => Just(Role::Inner),
        1 => Just(Role::FanOutRelu),
        1 => Just(Role::FanOutConv),
        1 => Just(Role::GraphOutput),
    ]
}

fn chain_spec() -> impl Strategy<Value = ChainSpec> {
    let shape = (2usize..=6, 1usize..=3);
    shape.prop_flat_map(|(convs, axes)| {
        let max_size = [32, 8, 4][axes - 1];
        (
            prop::collection::vec(1i64..=64, convs + 1),
            1i64..=2,
            prop::collection::vec(1i64..=max_size, axes),
            any::<bool>(),
            prop::collection::vec(any::<bool>(), convs),
            prop::collection::vec(role(), convs - 1),
            any::<u64>(),
        )
            .prop_map(|(channels, batch, spatial, float16, bias, roles, seed)| ChainSpec {
                channels,
                batch,
                spatial,
                float16,
                bias,
                roles,
                seed,
            })
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![3 => Just(Policy::Always), 1 => Just(Policy::Cheaper)]
}

// ---------------------------------------------------------------------------
// Building the model

/// A normal random generator (splitmix64 and Box-Muller), so that the
/// weights follow from the seed that proptest reports.
struct Normal {
    state: u64,
}

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self, std_dev: f64) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        let normal = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        (normal * std_dev) as f32
    }

    fn samples(&mut self, count: i64, std_dev: f64) -> Vec<f32> {
        (0..count).map(|_| self.sample(std_dev)).collect()
    }
}

/// Builds the model: weights ~ N(0, 1/fan_in) so that values keep their
/// scale along the chain, biases ~ N(0, 0.5^2).
fn build_model(spec: &ChainSpec) -> ModelProto {
    let elem = spec.elem_type();
    let tensor = |name: &str, dims: &[i64], values: &[f32]| typed_tensor(spec, name, dims, values);
    let spatial_ones = vec![1i64; spec.spatial.len()];
    let mut input_dims = vec![spec.batch, spec.channels[0]];
    input_dims.extend(&spec.spatial);

    let mut random = Normal { state: spec.seed };
    let mut graph = GraphProto {
        name: Some("random_chain".to_string()),
        input: vec![value_info("x", elem, Some(&input_dims))],
        ..Default::default()
    };

    for k in 0..spec.convs() {
        let (c_in, c_out) = (spec.channels[k], spec.channels[k + 1]);
        let input = if k == 0 { "x".to_string() } else { format!("h_{}", k - 1) };
        let output = if k + 1 == spec.convs() { "y".to_string() } else { format!("h_{k}") };

        let weight_name = format!("w_{k}");
        let mut weight_dims = vec![c_out, c_in];
        weight_dims.extend(&spatial_ones);
        let weights = random.samples(c_out * c_in, 1.0 / (c_in as f64).sqrt());
        graph.initializer.push(tensor(&weight_name, &weight_dims, &weights));
        let mut inputs = vec![input, weight_name];
        if spec.bias[k] {
            let bias_name = format!("b_{k}");
            graph.initializer.push(tensor(&bias_name, &[c_out], &random.samples(c_out, 0.5)));
            inputs.push(bias_name);
        }

        graph.node.push(NodeProto {
            name: Some(format!("conv_{k}")),
            op_type: Some("Conv".to_string()),
            input: inputs,
            output: vec![output],
            attribute: vec![ints_attribute("kernel_shape", &spatial_ones)],
            ..Default::default()
        });
    }
    graph.output.push(value_info("y", elem, None));

    for (k, role) in spec.roles.iter().enumerate() {
        add_second_reader(&mut graph, spec, k, *role, &mut random);
    }
    model(graph)
}

/// Builds a tensor of the chain's element type.
fn typed_tensor(spec: &ChainSpec, name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    if spec.float16 {
        f16_tensor(name, dims, values)
    } else {
        f32_tensor(name, dims, values)
    }
}

/// Adds the second reader of `h_k` that `role` names.
fn add_second_reader(graph: &mut GraphProto, spec: &ChainSpec, k: usize, role: Role, random: &mut Normal) {
    let value = format!("h_{k}");
    let elem = spec.elem_type();
    match role {
        Role::Inner => {}
        Role::GraphOutput => graph.output.push(value_info(&value, elem, None)),
        Role::FanOutRelu => {
            let output = format!("relu_{k}");
            graph.node.push(node("Relu", &output, &[&value], &[&output]));
            graph.output.push(value_info(&output, elem, None));
        }
        Role::FanOutConv => {
            let c_in = spec.channels[k + 1];
            let (output, weight) = (format!("branch_{k}"), format!("branch_w_{k}"));
            let mut dims = vec![3, c_in];
            dims.extend(vec![1i64; spec.spatial.len()]);
            let values = random.samples(3 * c_in, 1.0 / (c_in as f64).sqrt());
            graph.initializer.push(typed_tensor(spec, &weight, &dims, &values));
            graph.node.push(node("Conv", &output, &[&value, &weight], &[&output]));
            graph.output.push(value_info(&output, elem, None));
        }
    }
}

// ---------------------------------------------------------------------------
// Properties

fn fold(model: &ModelProto, policy: Policy) -> (ModelProto, FoldReport) {
    let mut folded = model.clone();
    let options = FoldOptions {
        policy,
        check_folds: false,
        fault: None,
    };
    let report = fold_model(&mut folded, &ExternalData::none(), &options).expect("a well-formed chain must fold without error");
    (folded, report)
}

fn count_convs(model: &ModelProto) -> usize {
    count_ops(model.graph.as_ref().unwrap(), "Conv")
}

/// Values that no fold may remove: graph outputs and values read by more than one node.
fn protected_values(graph: &GraphProto) -> HashSet<String> {
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for input in graph.node.iter().flat_map(|node| &node.input) {
        *readers.entry(input.as_str()).or_default() += 1;
    }
    let shared = readers.into_iter().filter(|&(_, count)| count > 1).map(|(name, _)| name.to_string());
    graph.output.iter().map(|output| output.name().to_string()).chain(shared).collect()
}

/// Checks that every protected value of the original still has a producer,
/// that no fused segment ran through one, and that graph outputs are kept.
fn check_structure(spec: &ChainSpec, original: &ModelProto, folded: &ModelProto, report: &FoldReport) -> Result<(), TestCaseError> {
    let before = original.graph.as_ref().unwrap();
    let after = folded.graph.as_ref().unwrap();
    let protected = protected_values(before);
    let produced: HashSet<&str> = after.node.iter().flat_map(|node| &node.output).map(String::as_str).collect();
    for value in &protected {
        prop_assert!(produced.contains(value.as_str()), "'{value}' was a graph output or had several readers, and is gone");
    }

    let outputs = |graph: &GraphProto| graph.output.iter().map(|output| output.name().to_string()).collect::<Vec<_>>();
    prop_assert_eq!(outputs(after), outputs(before));

    let output_of: HashMap<&str, &str> = before.node.iter().map(|node| (node.name(), node.output[0].as_str())).collect();
    for segment in report.chains.iter().flat_map(|chain| &chain.segments) {
        if segment.fused_node.is_none() {
            continue;
        }
        for removed in &segment.nodes[..segment.nodes.len() - 1] {
            let value = output_of[removed.as_str()];
            prop_assert!(!protected.contains(value), "the fold of {:?} removed protected value '{value}'", segment.nodes);
        }
    }

    let blocked = spec.roles.iter().filter(|role| role.blocks_fold()).count();
    let branches = spec.roles.iter().filter(|&&role| role == Role::FanOutConv).count();
    prop_assert_eq!(count_convs(original), spec.convs() + branches);
    prop_assert_eq!(report.conv_count_after, count_convs(folded));
    let fewest = blocked + 1 + branches;
    if report.policy == Policy::Always {
        prop_assert_eq!(count_convs(folded), fewest, "policy always must fold each run between blocked values");
    } else {
        prop_assert!(count_convs(folded) >= fewest && count_convs(folded) <= count_convs(original));
    }
    Ok(())
}

/// Runs the original and folded model in tract on the same random inputs.
fn check_outputs(original: &ModelProto, folded: &ModelProto) -> Result<(), TestCaseError> {
    let (original_bytes, folded_bytes) = (original.encode_to_vec(), folded.encode_to_vec());
    let source = |label, bytes| ModelSource {
        label,
        bytes,
        model_dir: None,
    };

    let verification = verify_models(&source("original", &original_bytes), &source("folded", &folded_bytes), &VerifyOptions::default())
        .map_err(|error| TestCaseError::fail(format!("tract could not run the models: {error}")))?;

    prop_assert!(verification.passed(), "outputs differ:\n{}", verification.comparison);
    Ok(())
}

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(TRACT_CASES))]

    /// The folded model computes what the original computes.
    #[test]
    fn folded_outputs_match_tract(spec in chain_spec(), policy in policy()) {
        let original = build_model(&spec);
        let (folded, report) = fold(&original, policy);

        check_structure(&spec, &original, &folded, &report)?;
        if report.changed() {
            check_outputs(&original, &folded)?;
        }
    }
}

proptest! {
    #![proptest_config(config(STRUCTURE_CASES))]

    /// No fold crosses a fan-out or a graph output, under either policy.
    #[test]
    fn folds_stop_at_shared_values(spec in chain_spec(), policy in policy()) {
        let original = build_model(&spec);
        let (folded, report) = fold(&original, policy);

        check_structure(&spec, &original, &folded, &report)?;
    }
}
