//! The real PaddleOCR models from the pinned rapidocr-onnxruntime 1.4.4 wheel,
//! fetched by scripts/fetch-models.sh. A missing model fails these tests.

mod common;

use common::*;
use onnx_fold::report::Decision;
use onnx_fold::verify::{self, InputRequest, ModelSource, VerifyOptions};
use onnx_fold::{model, Policy};

#[test]
fn ppocr_det_folds_one_chain() {
    let folded = fold_file(&real_model("ch_PP-OCRv4_det_infer.onnx"), Policy::Cheaper);

    let report = &folded.report;
    let decisions: Vec<(&str, Decision)> = report.chains.iter().map(|chain| (chain.nodes[0].as_str(), chain.decision)).collect();
    assert_eq!(
        decisions,
        [
            ("p2o.Conv.33", Decision::LeftAlone),
            ("p2o.Conv.34", Decision::LeftAlone),
            ("p2o.Conv.35", Decision::LeftAlone),
            ("p2o.Conv.36", Decision::Folded),
        ]
    );
    assert_eq!(report.chains[3].channels, [384, 360, 96]);
    assert_eq!(report.conv_count_before, 62);
    assert_eq!(report.conv_count_after, 61);
    assert!(report.chains[3].segments[0].check.as_ref().unwrap().passed);
    let graph = graph(&folded.proto);
    // p2o.Conv.36 has a weight and a bias, p2o.Conv.37 only a weight: two
    // Convs and three Constant nodes became one Conv.
    assert_eq!(graph.node.len(), 672 - 1 - 3);
    let constant_outputs: Vec<&str> = graph
        .node
        .iter()
        .filter(|node| node.op_type() == "Constant")
        .map(|node| node.output[0].as_str())
        .collect();
    for old in ["conv2d_134.w_0", "conv2d_134.b_0", "conv2d_153.w_0"] {
        assert!(!constant_outputs.contains(&old), "{old} should be removed");
    }
    let fused = convs(graph).into_iter().find(|node| node.name() == "p2o.Conv.37_folded").unwrap();
    assert_eq!(fused.input[0], "p2o.Add.215");
    assert_eq!(fused.output, ["conv2d_473.tmp_0"]);
}

#[test]
fn ppocr_det_outputs_unchanged_in_tract() {
    let path = real_model("ch_PP-OCRv4_det_infer.onnx");
    let folded = fold_file(&path, Policy::Cheaper);
    let bytes = model::encode(&folded.proto);
    let dir = folded.original.dir();
    let original = ModelSource { label: "original", bytes: &folded.original.original, model_dir: Some(&dir) };
    let candidate = ModelSource { label: "folded", bytes: &bytes, model_dir: Some(&dir) };
    let options = VerifyOptions {
        inputs: InputRequest { shapes: vec!["x=1,3,640,640".parse().unwrap()], ..Default::default() },
        ..Default::default()
    };

    let verification = verify::verify_models(&original, &candidate, &options).unwrap();

    assert!(verification.passed(), "{}", verification.comparison);
    assert_eq!(verification.comparison.outputs[0].expected_shape.as_deref(), Some(&[1, 1, 640, 640][..]));
}

#[test]
fn ppocr_cls_has_nothing_to_fold() {
    let folded = fold_file(&real_model("ch_ppocr_mobile_v2.0_cls_infer.onnx"), Policy::Always);

    assert!(!folded.report.changed());
    assert_eq!(folded.report.conv_count_before, 53);
    assert_eq!(folded.proto, folded.original.proto);
}
