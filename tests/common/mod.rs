//! Helpers shared by the integration tests: fixture paths, folding a fixture
//! with the library, and checking tract's outputs of a model against the
//! expected outputs that onnxruntime computed for the fixture.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use onnx_fold::fold::FoldOptions;
use onnx_fold::onnx::{GraphProto, ModelProto, NodeProto};
use onnx_fold::verify::{self, compare_outputs, InputRequest, ModelOutputs, Tolerance};
use onnx_fold::{fold_model, model, FoldReport, Policy};

/// Path of a file under the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Path of a fixture's model.
pub fn fixture(name: &str) -> PathBuf {
    repo_path(&format!("fixtures/{name}/model.onnx"))
}

/// Path of a real model fetched by scripts/fetch-models.sh; panics with the
/// fetch command when it is missing, so a missing model fails the test.
pub fn real_model(file: &str) -> PathBuf {
    let path = repo_path(&format!("models/{file}"));
    assert!(
        path.is_file(),
        "{} is missing: run ./scripts/fetch-models.sh (it downloads the pinned rapidocr-onnxruntime 1.4.4 wheel from PyPI and checks its sha256)",
        path.display()
    );
    path
}

/// A model folded by the library, with the report.
pub struct Folded {
    pub original: model::Model,
    pub proto: ModelProto,
    pub report: FoldReport,
}

/// Folds a model file with the given policy and per-fold checks on.
pub fn fold_file(path: &Path, policy: Policy) -> Folded {
    let options = FoldOptions {
        policy,
        ..FoldOptions::default()
    };
    fold_file_with(path, &options)
}

/// Folds a model file with the given options.
pub fn fold_file_with(path: &Path, options: &FoldOptions) -> Folded {
    let original = model::load(path).unwrap();
    let mut proto = original.proto.clone();
    let report = fold_model(&mut proto, &original.external_data(), options).unwrap();
    Folded { original, proto, report }
}

/// Main graph of a model.
pub fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().unwrap()
}

/// Returns the Conv nodes of a graph, not counting subgraphs.
pub fn convs(graph: &GraphProto) -> Vec<&NodeProto> {
    graph.node.iter().filter(|node| node.op_type() == "Conv").collect()
}

/// Runs `model` in tract on each test data set of a fixture and compares its
/// outputs with onnxruntime's expected outputs. Returns the worst relative error.
pub fn assert_matches_expected(model: &ModelProto, fixture_name: &str, tolerance: Option<Tolerance>) -> f64 {
    let fixture_dir = repo_path(&format!("fixtures/{fixture_name}"));
    compare_with_expected(model, fixture_name, &fixture_dir, tolerance, None)
}

/// Like [`assert_matches_expected`] on one test data set only.
pub fn assert_data_set_matches(model: &ModelProto, fixture_name: &str, data_set: &str) -> f64 {
    let fixture_dir = repo_path(&format!("fixtures/{fixture_name}"));
    compare_with_expected(model, fixture_name, &fixture_dir, None, Some(data_set))
}

/// Like [`assert_matches_expected`], for a model whose external data is in `model_dir`.
pub fn assert_matches_expected_at(model: &ModelProto, fixture_name: &str, model_dir: &Path) -> f64 {
    compare_with_expected(model, fixture_name, model_dir, None, None)
}

fn compare_with_expected(
    model: &ModelProto,
    fixture_name: &str,
    model_dir: &Path,
    tolerance: Option<Tolerance>,
    only: Option<&str>,
) -> f64 {
    let bytes = model::encode(model);
    let fixture_dir = repo_path(&format!("fixtures/{fixture_name}"));
    let loaded = verify::load_model(fixture_name, &bytes, Some(model_dir)).unwrap();
    let input_names: Vec<String> = loaded.input_specs().iter().map(|spec| spec.name.clone()).collect();
    let mut worst: f64 = 0.0;

    let mut data_sets: Vec<PathBuf> = std::fs::read_dir(&fixture_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap().to_string_lossy().starts_with("test_data_set_"))
        .filter(|path| only.is_none_or(|name| path.ends_with(name)))
        .collect();
    data_sets.sort();
    assert!(!data_sets.is_empty(), "fixture {fixture_name} has no test data");

    for data_set in data_sets {
        let tensors = verify::read_test_data_dir(&data_set, fixture_name, &input_names, loaded.output_names()).unwrap();
        let request = InputRequest {
            tensors: tensors.inputs,
            ..Default::default()
        };
        let inputs = verify::build_inputs(&loaded, &request).unwrap();
        let actual = verify::run_model(&loaded, &inputs).unwrap();
        let expected = ModelOutputs {
            model: "onnxruntime".to_string(),
            outputs: tensors.expected_outputs,
        };

        let comparison = compare_outputs(&expected, &actual, tolerance);

        assert!(comparison.passed, "{fixture_name} {}:\n{comparison}", data_set.display());
        for output in &comparison.outputs {
            worst = worst.max(output.max_rel_error);
        }
    }
    worst
}

/// Returns the initializer names of a graph.
pub fn initializer_names(graph: &GraphProto) -> Vec<&str> {
    graph.initializer.iter().map(|tensor| tensor.name()).collect()
}
