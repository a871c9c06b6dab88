//! Folding the generated fixtures: structure (Conv counts, names, removed
//! weights, reasons) and numbers (tract's outputs of the folded model against
//! onnxruntime's outputs of the original).

mod common;

use std::collections::HashSet;

use common::*;
use onnx_fold::fold::{Fault, FoldOptions};
use onnx_fold::onnx::tensor_proto::DataType;
use onnx_fold::report::Decision;
use onnx_fold::verify::Tolerance;
use onnx_fold::Policy;

#[test]
fn seed_folds_to_one_conv() {
    let folded = fold_file(&fixture("seed"), Policy::Cheaper);

    let graph = graph(&folded.proto);
    let convs = convs(graph);
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0].name(), "conv_c_folded");
    assert_eq!(convs[0].output, ["y"]);
    assert_eq!(convs[0].input, ["x", "conv_c_folded_W", "conv_c_folded_B"]);
    assert_eq!(initializer_names(graph), ["conv_c_folded_W", "conv_c_folded_B"]);
    let weight = &graph.initializer[0];
    assert_eq!(weight.dims, [256, 512, 1]);
    assert_eq!(folded.report.chains[0].macs_before, 512 * 2048 + 2048 * 512 + 512 * 256);
    assert_eq!(folded.report.chains[0].macs_after, 512 * 256);
    assert_matches_expected(&folded.proto, "seed", None);
}

#[test]
fn chain_variants_match_onnxruntime() {
    let cases = [
        ("chain1d_bias_all", 2, 1),
        ("chain2d_bias_some", 3, 1),
        ("chain3d_no_bias", 2, 1),
        ("spatial_first", 2, 1),
        ("constant_weights", 2, 1),
        ("two_segments", 4, 2),
        ("symbolic_batch", 3, 1),
        ("external_data", 3, 2),
        ("shared_weight", 6, 4),
        ("numeric_names", 4, 2),
        ("grouped_first", 4, 3),
        ("stop_reasons", 14, 12),
        ("f64", 2, 1),
    ];
    for (name, before, after) in cases {
        let folded = fold_file(&fixture(name), Policy::Cheaper);

        assert_eq!(folded.report.conv_count_before, before, "{name}");
        assert_eq!(folded.report.conv_count_after, after, "{name}");
        assert_eq!(convs(graph(&folded.proto)).len(), after, "{name}");
        // The f64 fixture's expected outputs were computed in float32.
        let tolerance = (name == "f64").then_some(Tolerance::F32);
        assert_matches_expected(&folded.proto, name, tolerance);
    }
}

#[test]
fn missing_bias_is_zero() {
    let folded = fold_file(&fixture("chain3d_no_bias"), Policy::Cheaper);

    let conv = convs(graph(&folded.proto))[0];

    assert_eq!(conv.input.len(), 2, "no Conv had a bias, so the fused one has none");
}

#[test]
fn some_bias_gives_fused_bias() {
    let folded = fold_file(&fixture("chain2d_bias_some"), Policy::Cheaper);

    let conv = convs(graph(&folded.proto))[0];

    assert_eq!(conv.input.len(), 3);
    assert_eq!(graph(&folded.proto).initializer[1].dims, [10]);
}

#[test]
fn spatial_first_keeps_attributes() {
    let folded = fold_file(&fixture("spatial_first"), Policy::Cheaper);

    let conv = convs(graph(&folded.proto))[0];
    let ints = |name: &str| conv.attribute.iter().find(|a| a.name() == name).map(|a| a.ints.clone());

    assert_eq!(ints("strides"), Some(vec![2, 2]));
    assert_eq!(ints("pads"), Some(vec![1, 1, 1, 1]));
    assert_eq!(graph(&folded.proto).initializer[0].dims, [4, 8, 3, 3]);
}

#[test]
fn constant_nodes_removed() {
    let folded = fold_file(&fixture("constant_weights"), Policy::Cheaper);

    let graph = graph(&folded.proto);
    let constants = graph.node.iter().filter(|node| node.op_type() == "Constant").count();

    assert_eq!(constants, 0, "the Constant nodes of the old weights must go");
    assert_eq!(graph.initializer.len(), 2);
}

#[test]
fn element_types_kept() {
    let cases = [("f64", DataType::Double), ("f16", DataType::Float16), ("bf16", DataType::Bfloat16)];
    for (name, data_type) in cases {
        let folded = fold_file(&fixture(name), Policy::Cheaper);

        let graph = graph(&folded.proto);

        assert_eq!(convs(graph).len(), 1, "{name}");
        for tensor in &graph.initializer {
            assert_eq!(tensor.data_type(), data_type as i32, "{name} {}", tensor.name());
        }
        let check = folded.report.chains[0].segments[0].check.as_ref().unwrap();
        assert!(check.passed, "{name}: {}", check.detail);
    }
}

#[test]
fn float16_matches_onnxruntime() {
    let folded = fold_file(&fixture("f16"), Policy::Cheaper);

    // onnxruntime rounds to float16 once at the end, the fold rounds the weights.
    let tolerance = Tolerance { rtol: 1e-2, atol: 1e-3 };
    assert_matches_expected(&folded.proto, "f16", Some(tolerance));
}

#[test]
fn bottleneck_left_alone_unless_always() {
    let cheaper = fold_file(&fixture("bottleneck"), Policy::Cheaper);
    let always = fold_file(&fixture("bottleneck"), Policy::Always);

    assert_eq!(convs(graph(&cheaper.proto)).len(), 2);
    assert_eq!(cheaper.report.chains[0].decision, Decision::LeftAlone);
    assert!(cheaper.report.chains[0].reason.contains("8192 as it is, 65536 as one Conv"));
    assert_eq!(convs(graph(&always.proto)).len(), 1);
    assert_eq!(always.report.chains[0].decision, Decision::Folded);
    assert_matches_expected(&always.proto, "bottleneck", None);
}

#[test]
fn two_segments_split_at_bottleneck() {
    let folded = fold_file(&fixture("two_segments"), Policy::Cheaper);

    let names: Vec<&str> = convs(graph(&folded.proto)).iter().map(|node| node.name()).collect();
    let chain = &folded.report.chains[0];

    assert_eq!(names, ["conv_b_folded", "conv_d_folded"]);
    assert_eq!(chain.decision, Decision::PartlyFolded);
    assert_eq!(chain.channels, [64, 256, 8, 256, 64]);
    assert_eq!(chain.macs_after, 64 * 8 + 8 * 64);
}

#[test]
fn blocked_links_say_why() {
    let cases = [
        ("fanout", "has 2 consumers"),
        ("intermediate_output", "is a graph output"),
        ("subgraph_reads", "is read inside a subgraph of 'if_node'"),
        ("ir3_overridable", "is also a graph input, so a caller can override it"),
        ("weight_input", "'w_b' is a graph input"),
    ];
    for (name, reason) in cases {
        let folded = fold_file(&fixture(name), Policy::Always);

        assert!(!folded.report.changed(), "{name}");
        assert_eq!(folded.report.blocked_links.len(), 1, "{name}");
        let blocked = &folded.report.blocked_links[0];
        assert!(blocked.reason.contains(reason), "{name}: {}", blocked.reason);
        assert_eq!((blocked.from.as_str(), blocked.to.as_str()), ("conv_a", "conv_b"), "{name}");
    }
}

#[test]
fn stop_reasons_name_the_attribute() {
    let folded = fold_file(&fixture("stop_reasons"), Policy::Always);

    let reasons: Vec<(&str, &str)> = folded
        .report
        .blocked_links
        .iter()
        .map(|link| (link.to.as_str(), link.reason.as_str()))
        .collect();
    let expected = [
        ("group2_b", "group is 2"),
        ("kernel3_b", "kernel [3]"),
        ("pads1_b", "pads [1, 1]"),
        ("same_upper_b", "auto_pad is SAME_UPPER"),
        ("stride2_b", "strides [2]"),
    ];

    assert_eq!(reasons.len(), expected.len());
    for ((node, reason), (expected_node, expected_reason)) in reasons.iter().zip(expected) {
        assert_eq!(*node, expected_node);
        assert!(reason.contains(expected_reason), "{node}: {reason}");
    }
    let folded_chains: Vec<&str> = folded.report.chains.iter().map(|chain| chain.nodes[0].as_str()).collect();
    assert_eq!(folded_chains, ["dilations2_a", "valid_a"]);
}

#[test]
fn shared_weight_kept_for_other_user() {
    let original = fold_file(&fixture("shared_weight"), Policy::Cheaper);

    let before: HashSet<&str> = initializer_names(graph(&original.original.proto)).into_iter().collect();
    let after: HashSet<&str> = initializer_names(graph(&original.proto)).into_iter().collect();
    let third_conv_weight = graph(&original.proto)
        .node
        .iter()
        .find(|node| node.op_type() == "Conv" && !node.name().starts_with("chain"))
        .map(|node| node.input[1].as_str())
        .unwrap();

    assert!(after.contains(third_conv_weight), "shared weight {third_conv_weight} was removed");
    assert!(before.contains(third_conv_weight));
    let unused: Vec<&&str> = after.iter().filter(|name| !is_read(&original.proto, name)).collect();
    assert!(unused.is_empty(), "unused initializers left: {unused:?}");
}

fn is_read(model: &onnx_fold::onnx::ModelProto, name: &str) -> bool {
    graph(model).node.iter().any(|node| node.input.iter().any(|input| input == name))
}

#[test]
fn new_names_are_unique() {
    let folded = fold_file(&fixture("numeric_names"), Policy::Cheaper);

    let graph = graph(&folded.proto);
    let node_names: Vec<&str> = graph.node.iter().map(|node| node.name()).filter(|name| !name.is_empty()).collect();
    let unique_nodes: HashSet<&&str> = node_names.iter().collect();
    let outputs: Vec<&String> = graph.node.iter().flat_map(|node| &node.output).collect();
    let unique_outputs: HashSet<&&String> = outputs.iter().collect();
    let fused: Vec<&str> = convs(graph).iter().map(|node| node.name()).collect();

    assert_eq!(node_names.len(), unique_nodes.len(), "{node_names:?}");
    assert_eq!(outputs.len(), unique_outputs.len());
    assert_eq!(fused, ["509_folded_1", "conv_b_folded_1"]);
    for initializer in initializer_names(graph) {
        assert!(!outputs.iter().any(|output| *output == initializer), "{initializer} is also a node output");
    }
}

#[test]
fn grouped_head_expanded_only_when_cheaper() {
    let folded = fold_file(&fixture("grouped_first"), Policy::Cheaper);

    let chains = &folded.report.chains;
    let fused = convs(graph(&folded.proto)).into_iter().find(|node| node.name() == "grouped_b_folded").unwrap();
    let group = fused.attribute.iter().find(|attribute| attribute.name() == "group");

    assert_eq!(chains[0].nodes, ["grouped_a", "grouped_b"]);
    assert_eq!(chains[0].decision, Decision::Folded);
    assert_eq!(chains[1].nodes, ["depthwise_a", "depthwise_b"]);
    assert_eq!(chains[1].decision, Decision::LeftAlone);
    assert!(group.is_none(), "the expanded Conv must have group 1");
}

#[test]
fn chains_in_subgraphs_folded() {
    let in_if = fold_file(&fixture("chain_in_subgraph"), Policy::Cheaper);
    let in_loop = fold_file(&fixture("loop_body"), Policy::Cheaper);

    let if_graphs: Vec<&str> = in_if.report.chains.iter().map(|chain| chain.graph.as_str()).collect();
    assert_eq!(if_graphs, ["main/if_node/else_branch", "main/if_node/then_branch"]);
    assert_eq!(in_if.report.conv_count_after, 2);
    assert_eq!(in_loop.report.chains[0].graph, "main/loop/body");
    assert_eq!(in_loop.report.conv_count_after, 1);
    for chain in in_if.report.chains.iter().chain(&in_loop.report.chains) {
        let check = chain.segments[0].check.as_ref().unwrap();
        assert!(check.passed, "{}: {}", chain.graph, check.detail);
    }
}

#[test]
fn metadata_kept() {
    let folded = fold_file(&fixture("seed"), Policy::Cheaper);

    let (before, after) = (&folded.original.proto, &folded.proto);

    assert_eq!(before.ir_version, after.ir_version);
    assert_eq!(before.opset_import, after.opset_import);
    assert_eq!(before.producer_name, after.producer_name);
    assert_eq!(before.producer_version, after.producer_version);
    assert_eq!(before.metadata_props, after.metadata_props);
    assert_eq!(before.doc_string, after.doc_string);
    assert_eq!(graph(before).output, graph(after).output);
    assert_eq!(graph(before).input, graph(after).input);
}

#[test]
fn wrong_bias_order_caught_by_check() {
    let options = FoldOptions {
        fault: Some(Fault::BiasInWrongOrder),
        ..FoldOptions::default()
    };

    let folded = fold_file_with(&fixture("chain1d_bias_all"), &options);

    let chain = &folded.report.chains[0];
    let check = chain.segments[0].check.as_ref().unwrap();
    assert!(!check.passed, "{}", check.detail);
    assert!(check.detail.contains("FAIL"), "{}", check.detail);
    assert_eq!(chain.decision, Decision::LeftAlone);
    assert_eq!(convs(graph(&folded.proto)).len(), 2, "a fold that fails its check must not be applied");
}

#[test]
fn wrong_bias_order_caught_by_onnxruntime_outputs() {
    // Without the per-fold check, the fault reaches the model: this shows the
    // fixture comparison itself can fail.
    let options = FoldOptions {
        fault: Some(Fault::BiasInWrongOrder),
        check_folds: false,
        ..FoldOptions::default()
    };
    let folded = fold_file_with(&fixture("chain1d_bias_all"), &options);

    let result = std::panic::catch_unwind(|| assert_matches_expected(&folded.proto, "chain1d_bias_all", None));

    assert!(result.is_err(), "the wrong bias went unnoticed");
}

/// tract has no bfloat16, so the folded bfloat16 Conv is evaluated here as a
/// matrix product over channels, and compared with onnxruntime's output of
/// the float32 equivalent of the original model.
#[test]
fn bfloat16_matches_onnxruntime_float32() {
    use onnx_fold::external::ExternalData;
    use onnx_fold::onnx::TensorProto;
    use onnx_fold::tensor::decode;
    use prost::Message;

    let folded = fold_file(&fixture("bf16"), Policy::Cheaper);
    let read_pb = |file: &str| {
        let bytes = std::fs::read(repo_path(&format!("fixtures/bf16/test_data_set_0/{file}"))).unwrap();
        decode(&TensorProto::decode(bytes.as_slice()).unwrap(), &ExternalData::none()).unwrap()
    };
    let (x, expected) = (read_pb("input_0.pb"), read_pb("output_0.pb"));
    let graph = graph(&folded.proto);
    let weight = decode(&graph.initializer[0], &ExternalData::none()).unwrap();
    let bias = decode(&graph.initializer[1], &ExternalData::none()).unwrap();

    let (c_out, c_in) = (weight.dims[0], weight.dims[1]);
    let positions: usize = x.dims[2..].iter().product();
    let magnitude = expected.values.iter().fold(0.0f64, |max, value| max.max(value.abs()));
    let mut worst: f64 = 0.0;
    for o in 0..c_out {
        for p in 0..positions {
            let sum: f64 = (0..c_in).map(|i| weight.values[o * c_in + i] * x.values[i * positions + p]).sum();
            let actual = sum + bias.values[o];
            worst = worst.max((actual - expected.values[o * positions + p]).abs());
        }
    }

    assert_eq!(expected.dims, [1, c_out, 4, 4]);
    assert!(magnitude > 0.1, "degenerate expected output");
    assert!(worst <= 3e-2 * magnitude, "worst error {worst} against magnitude {magnitude}");
}

#[test]
fn removed_intermediates_leave_value_info() {
    let folded = fold_file(&fixture("symbolic_batch"), Policy::Cheaper);

    let before: Vec<&str> = graph(&folded.original.proto).value_info.iter().map(|value| value.name()).collect();
    let after: Vec<&str> = graph(&folded.proto).value_info.iter().map(|value| value.name()).collect();

    assert!(before.contains(&"stem_out"));
    assert!(before.contains(&"pointwise_a_out"));
    assert_eq!(after, ["pointwise_b_out", "head_reshaped"]);
}

#[test]
fn shadowed_weight_left_alone() {
    let folded = fold_file(&fixture("shadowed_weight"), Policy::Cheaper);

    let report = &folded.report;
    let blocked: Vec<&str> = report.blocked_links.iter().map(|link| link.to.as_str()).collect();

    // Both chains read a 'w2' that two graphs define. Folding even the
    // else-branch made onnxruntime 1.31 switch which 'w2' the then-branch reads.
    assert!(report.chains.is_empty());
    assert_eq!(blocked, ["else_conv_b", "then_conv_b"]);
    assert!(report.blocked_links.iter().all(|link| link.reason.contains("defined in more than one graph of the model")));
    assert_eq!(folded.proto, folded.original.proto);
}

#[test]
fn scan_body_chain_folded() {
    let folded = fold_file(&fixture("scan_body"), Policy::Cheaper);

    let chain = &folded.report.chains[0];

    assert_eq!(chain.graph, "main/scan/body");
    assert_eq!(chain.decision, Decision::Folded);
    assert!(chain.segments[0].check.as_ref().unwrap().passed);
}

#[test]
fn ir3_fused_weights_are_constant_nodes() {
    // IR < 4 lists every initializer as a graph input, which would make the
    // fused weights overridable, so they become Constant nodes instead.
    let mut model = onnx_fold::model::load(&fixture("constant_weights")).unwrap();
    model.proto.ir_version = Some(3);

    let report = onnx_fold::fold(&mut model, &FoldOptions::default()).unwrap();

    let graph = graph(&model.proto);
    let constants: Vec<&str> = graph
        .node
        .iter()
        .filter(|node| node.op_type() == "Constant")
        .map(|node| node.output[0].as_str())
        .collect();
    assert_eq!(report.links_folded(), 1);
    assert!(graph.initializer.is_empty());
    assert_eq!(constants, ["conv_b_folded_W", "conv_b_folded_B"]);
    assert_eq!(graph.node.last().unwrap().name(), "conv_b_folded");
    assert_matches_expected(&model.proto, "constant_weights", None);
}
