//! The onnx-fold command end to end: exit codes, summary, report, written files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn onnx_fold(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnx-fold")).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn temp_out(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn seed_example_folds_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "seed_folded.onnx");
    let report = temp_out(&dir, "report.json");

    let output = onnx_fold(&[
        path_str(&fixture("seed")),
        path_str(&out),
        "--report",
        path_str(&report),
    ]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains("chain conv_a -> conv_b -> conv_c (512->2048->512->256, f32) in main: folded"), "{stdout}");
    assert!(stdout.contains("Conv nodes: 3 -> 1"), "{stdout}");
    assert!(stdout.contains("MACs per output position in chains: 2228224 -> 131072"), "{stdout}");
    assert!(stdout.contains("verification with tract passed"), "{stdout}");
    assert!(stdout.contains("PASS y f32 [1, 256, 1024]"), "{stdout}");
    let folded = onnx_fold::model::load(&out).unwrap();
    assert_eq!(convs(graph(&folded.proto)).len(), 1);

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["written"], true);
    assert_eq!(json["fold"]["chains"][0]["decision"], "folded");
    assert_eq!(json["fold"]["chains"][0]["nodes"], serde_json::json!(["conv_a", "conv_b", "conv_c"]));
    assert_eq!(json["fold"]["chains"][0]["segments"][0]["check"]["passed"], true);
    assert_eq!(json["verification"]["status"], "passed");
    assert_eq!(json["verification"]["comparison"]["outputs"][0]["name"], "y");
}

#[test]
fn nothing_to_fold_writes_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let output = onnx_fold(&[path_str(&fixture("nothing_to_fold")), path_str(&out)]);

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(fixture("nothing_to_fold")).unwrap());
    assert!(text(&output.stdout).contains("verification: skipped, nothing was folded"));
}

#[test]
fn wrong_fold_exits_3_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let report = temp_out(&dir, "report.json");

    let output = onnx_fold(&[
        path_str(&fixture("chain1d_bias_all")),
        path_str(&out),
        "--no-fold-check",
        "--inject-bias-fault",
        "--report",
        path_str(&report),
    ]);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("outputs differ from the original's, so it was not written"), "{stderr}");
    assert!(stderr.contains("FAIL y f32"), "{stderr}");
    assert!(!out.exists());
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["written"], false);
    assert_eq!(json["verification"]["status"], "failed");
}

#[test]
fn wrong_fold_rejected_by_per_fold_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let output = onnx_fold(&[path_str(&fixture("chain1d_bias_all")), path_str(&out), "--inject-bias-fault"]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("per-fold check of conv_a + conv_b failed"), "{stdout}");
    assert!(stdout.contains("Conv nodes: 2 -> 2"), "{stdout}");
    // A segment whose check failed was once counted as a folded link.
    assert!(stdout.contains("links folded: 0"), "{stdout}");
}

#[test]
fn dry_run_writes_report_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let report = temp_out(&dir, "report.json");

    let output = onnx_fold(&[
        path_str(&fixture("two_segments")),
        path_str(&out),
        "--dry-run",
        "--report",
        path_str(&report),
    ]);

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(!out.exists());
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["written"], false);
    assert_eq!(json["fold"]["chains"][0]["decision"], "partly_folded");
}

#[test]
fn in_place_fold() {
    let dir = tempfile::tempdir().unwrap();
    let model = temp_out(&dir, "m.onnx");
    std::fs::copy(fixture("chain2d_bias_some"), &model).unwrap();

    let output = onnx_fold(&[path_str(&model), path_str(&model)]);

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let folded = onnx_fold::model::load(&model).unwrap();
    assert_eq!(convs(graph(&folded.proto)).len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
}

#[test]
fn backend_test_inputs_compared_with_expected() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let output = onnx_fold(&[
        path_str(&fixture("symbolic_batch")),
        path_str(&out),
        "--inputs",
        path_str(&repo_path("fixtures/symbolic_batch")),
    ]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains("inputs images [2, 3, 16, 16] (given)"), "{stdout}");
    assert!(stdout.contains("original model against the expected outputs:"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn symbolic_dims_from_input_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let output = onnx_fold(&[
        path_str(&fixture("symbolic_batch")),
        path_str(&out),
        "--input-shape",
        "images=3,3,16,16",
    ]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("inputs images [3, 3, 16, 16] (random)"), "{stdout}");
}

#[test]
fn unverifiable_model_warns_or_fails_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let required_out = temp_out(&dir, "required.onnx");

    let auto = onnx_fold(&[path_str(&fixture("bf16")), path_str(&out)]);
    let required = onnx_fold(&[path_str(&fixture("bf16")), path_str(&required_out), "--verify", "require"]);

    assert_eq!(auto.status.code(), Some(0));
    assert!(text(&auto.stdout).contains("NOT VERIFIED"));
    assert!(text(&auto.stderr).contains("was not verified"));
    assert!(out.exists());
    assert_eq!(required.status.code(), Some(3));
    assert!(text(&required.stderr).contains("verification is required"));
    assert!(!required_out.exists());
}

#[test]
fn compare_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let folded = temp_out(&dir, "folded.onnx");
    let faulty = temp_out(&dir, "faulty.onnx");
    let original = fixture("chain1d_bias_all");
    assert_eq!(onnx_fold(&[path_str(&original), path_str(&folded)]).status.code(), Some(0));
    let options = onnx_fold::fold::FoldOptions {
        check_folds: false,
        fault: Some(onnx_fold::fold::Fault::BiasInWrongOrder),
        ..Default::default()
    };
    let wrong = fold_file_with(&original, &options);
    std::fs::write(&faulty, onnx_fold::model::encode(&wrong.proto)).unwrap();

    let same = onnx_fold(&["compare", path_str(&original), path_str(&folded)]);
    let different = onnx_fold(&["compare", path_str(&original), path_str(&faulty)]);
    let missing = onnx_fold(&["compare", path_str(&original), "/nonexistent.onnx"]);

    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert_eq!(different.status.code(), Some(3));
    assert!(text(&different.stderr).contains("differ"), "{}", text(&different.stderr));
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn usage_error_exits_2() {
    let output = onnx_fold(&["only-one-argument.onnx"]);

    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn quiet_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let output = onnx_fold(&["-q", path_str(&fixture("chain1d_bias_all")), path_str(&out)]);

    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(out.exists());
}

#[test]
fn external_data_copied_next_to_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let output = onnx_fold(&[path_str(&fixture("external_data")), path_str(&out)]);

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let folded = onnx_fold::model::load(&out).unwrap();
    let still_external = onnx_fold::external::locations(&folded.proto);
    assert_eq!(still_external.into_iter().collect::<Vec<_>>(), ["weights.bin"], "conv_c's weights stay external");
    let copied = std::fs::read(dir.path().join("weights.bin")).unwrap();
    assert_eq!(copied, std::fs::read(repo_path("fixtures/external_data/weights.bin")).unwrap());
    assert_matches_expected_at(&folded.proto, "external_data", dir.path());
}

#[test]
fn bench_prints_both_medians() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let report = temp_out(&dir, "report.json");

    let output = onnx_fold(&[
        path_str(&fixture("chain1d_bias_all")),
        path_str(&out),
        "--bench",
        "3",
        "--report",
        path_str(&report),
    ]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("benchmark: original: median"), "{stdout}");
    assert!(stdout.contains("benchmark: folded: median"), "{stdout}");
    assert!(stdout.contains("x the speed of the original"), "{stdout}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["bench"][0]["runs"], 3);
    assert!(json["bench"][1]["median"].as_f64().unwrap() > 0.0);
}

#[test]
fn tensor_proto_input_used() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let input = repo_path("fixtures/chain1d_bias_all/test_data_set_0/input_0.pb");

    let output = onnx_fold(&[
        path_str(&fixture("chain1d_bias_all")),
        path_str(&out),
        "--input",
        &format!("x={}", input.display()),
    ]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains("inputs x [1, 8, 10] (given)"), "{stdout}");
}

#[test]
fn unknown_input_name_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let output = onnx_fold(&[
        path_str(&fixture("chain1d_bias_all")),
        path_str(&out),
        "--input-shape",
        "images=1,8,10",
    ]);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no such input"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn compare_runs_bool_if_condition() {
    let model = fixture("subgraph_reads");
    let data = repo_path("fixtures/subgraph_reads");

    let output = onnx_fold(&["compare", path_str(&model), path_str(&model), "--inputs", path_str(&data)]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains("cond [] (given)"), "{stdout}");
    assert!(stdout.contains("PASS z f32 [1, 16, 6]"), "{stdout}");
}

#[test]
fn different_data_file_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let other_data = temp_out(&dir, "weights.bin");
    std::fs::write(&other_data, b"someone else's weights").unwrap();

    let output = onnx_fold(&[path_str(&fixture("external_data")), path_str(&out)]);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a different file is already there"), "{stderr}");
    assert_eq!(std::fs::read(&other_data).unwrap(), b"someone else's weights");
    assert!(!out.exists());
}

#[test]
fn report_path_of_a_model_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = temp_out(&dir, "m.onnx");
    let out = temp_out(&dir, "out.onnx");
    std::fs::copy(fixture("chain1d_bias_all"), &model).unwrap();
    let original = std::fs::read(&model).unwrap();

    let over_input = onnx_fold(&[path_str(&model), path_str(&out), "--report", path_str(&model)]);
    let over_output = onnx_fold(&[path_str(&model), path_str(&out), "--report", path_str(&out)]);
    let over_compared = onnx_fold(&["compare", path_str(&model), path_str(&model), "--report", path_str(&model)]);

    assert_eq!(over_input.status.code(), Some(2), "{}", text(&over_input.stderr));
    assert!(text(&over_input.stderr).contains("is the model file"));
    assert_eq!(over_output.status.code(), Some(2));
    assert_eq!(over_compared.status.code(), Some(2));
    assert_eq!(std::fs::read(&model).unwrap(), original);
    assert!(!out.exists());
}

#[test]
fn report_in_missing_directory_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let report = dir.path().join("missing").join("report.json");

    let output = onnx_fold(&[path_str(&fixture("chain1d_bias_all")), path_str(&out), "--report", path_str(&report)]);

    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("--report"), "{}", text(&output.stderr));
    assert!(!out.exists(), "OUT was written although the run failed");
}

#[cfg(unix)]
#[test]
fn symlink_output_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let target = temp_out(&dir, "target.onnx");
    let link = temp_out(&dir, "link.onnx");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let output = onnx_fold(&[path_str(&fixture("chain1d_bias_all")), path_str(&link)]);

    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("symlink or a special file"), "{}", text(&output.stderr));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

#[test]
fn nan_tolerance_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    let nan = onnx_fold(&[path_str(&fixture("chain1d_bias_all")), path_str(&out), "--rtol", "nan"]);
    let negative = onnx_fold(&[path_str(&fixture("chain1d_bias_all")), path_str(&out), "--atol", "-1"]);

    assert_eq!(nan.status.code(), Some(2));
    assert_eq!(negative.status.code(), Some(2));
    assert!(!out.exists());
}

#[test]
fn verification_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");

    // tract 0.23.9 does not finish optimizing this Scan model.
    let output = onnx_fold(&[path_str(&fixture("scan_body")), path_str(&out), "--verify-timeout", "2"]);

    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("tract did not finish within 2 s"), "{stdout}");
    assert!(out.exists());
}

#[test]
fn wrong_expected_outputs_blamed_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let data = dir.path().join("data").join("test_data_set_0");
    std::fs::create_dir_all(&data).unwrap();
    let source = repo_path("fixtures/chain1d_bias_all/test_data_set_0");
    std::fs::copy(source.join("input_0.pb"), data.join("input_0.pb")).unwrap();
    // The expected outputs of another fixture with the same output name and shape.
    std::fs::copy(repo_path("fixtures/bottleneck/test_data_set_0/output_0.pb"), data.join("output_0.pb")).unwrap();

    let output = onnx_fold(&[path_str(&fixture("chain1d_bias_all")), path_str(&out), "--inputs", path_str(&data)]);

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the original model's outputs differ from the expected outputs"), "{stderr}");
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn new_output_follows_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let command = format!("umask 077 && exec '{}' -q '{}' '{}'", env!("CARGO_BIN_EXE_onnx-fold"), path_str(&fixture("chain1d_bias_all")), path_str(&out));

    let status = Command::new("sh").args(["-c", &command]).status().unwrap();

    assert!(status.success());
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn every_data_set_verified() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_out(&dir, "out.onnx");
    let source = repo_path("fixtures/chain1d_bias_all/test_data_set_0");
    for (set, expected) in [("test_data_set_0", source.join("output_0.pb")), ("test_data_set_1", repo_path("fixtures/bottleneck/test_data_set_0/output_0.pb"))] {
        let data = dir.path().join("data").join(set);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::copy(source.join("input_0.pb"), data.join("input_0.pb")).unwrap();
        std::fs::copy(expected, data.join("output_0.pb")).unwrap();
    }

    // Only test_data_set_1 has wrong expected outputs; it used to be ignored.
    let output = onnx_fold(&[path_str(&fixture("chain1d_bias_all")), path_str(&out), "--inputs", path_str(&dir.path().join("data"))]);

    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stdout));
    assert!(text(&output.stderr).contains("test_data_set_1"), "{}", text(&output.stderr));
    assert!(!out.exists());
}
