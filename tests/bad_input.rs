//! Bad input never crashes onnx-fold and never loses data.
//!
//! Each test runs the built binary on a file made in a temporary directory.
//! A rejected input must end with exit code 1 and one `error:` line that
//! names the file, node or tensor at fault, with no panic, no output file,
//! the input byte-identical, and an output that already existed left
//! byte-identical. A broken part of a model that no foldable chain touches
//! must not stop the fold.

mod support;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use onnx_fold::onnx::tensor_proto::{DataLocation, DataType};
use onnx_fold::onnx::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};
use prost::Message;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_onnx-fold");

/// Longer than any run of these small models takes, short enough to show a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes written to a pre-existing output, which a failed run must keep.
const SENTINEL: &[u8] = b"an output file from an earlier run\n";

/// Channels of the test chain: 8 -> 16 -> 12 folds under the default
/// policy (96 MACs per position instead of 320), so its weights are read.
const FOLDABLE: &[i64] = &[8, 16, 12];

// ---------------------------------------------------------------------------
// Harness

/// The exit code and output of one run of the binary.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!("exit code {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A temporary directory with the input and output of a test.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        Workspace {
            dir: tempfile::Builder::new().prefix("onnx-fold-bad-input-").tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, bytes).unwrap();
        path
    }

    fn write_model(&self, name: &str, model: &ModelProto) -> PathBuf {
        self.write(name, &model.encode_to_vec())
    }

    /// Runs the binary with its working directory in the workspace.
    fn run(&self, args: &[OsString]) -> Run {
        run_in(self.dir.path(), args)
    }
}

/// Runs onnx-fold and kills it if it outlives [`RUN_TIMEOUT`]. Output goes
/// to files, so a chatty process cannot block on a full pipe.
fn run_in(dir: &Path, args: &[OsString]) -> Run {
    let mut command = vec![OsString::from(BIN)];
    command.extend_from_slice(args);
    run_program(dir, &command)
}

/// Runs `command[0]` with the other elements as arguments, as [`run_in`] does.
fn run_program(dir: &Path, command: &[OsString]) -> Run {
    let args = &command[1..];
    let logs = tempfile::tempdir().unwrap();
    let stdout_path = logs.path().join("stdout");
    let stderr_path = logs.path().join("stderr");
    let mut child = Command::new(&command[0])
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("onnx-fold {args:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    Run {
        code: status.code(),
        stdout: fs::read_to_string(&stdout_path).unwrap(),
        stderr: fs::read_to_string(&stderr_path).unwrap(),
    }
}

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|part| part.as_ref().to_os_string()).collect()
}

/// Snapshot of a path: its bytes when it is a file.
fn snapshot(path: &Path) -> Option<Vec<u8>> {
    path.is_file().then(|| fs::read(path).unwrap())
}

/// Files that a write left behind in a directory: onnx-fold's temporary files.
fn leftover_temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".onnx-fold-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks what every rejected run must show: exit code 1, exactly one
/// `error:` line containing each of `expected`, and no panic.
fn assert_one_error(run: &Run, expected: &[&str]) {
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{}", run.describe());

    let errors: Vec<&str> = run.stderr.lines().filter(|line| line.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line\n{}", run.describe());
    for part in expected {
        assert!(errors[0].contains(part), "the error does not contain {part:?}\n{}", run.describe());
    }
}

/// Runs `onnx-fold INPUT OUT extra...` twice, with OUT absent and with OUT
/// present, and checks that both runs are rejected as [`assert_one_error`]
/// describes without touching INPUT or OUT. Returns the first run.
fn assert_rejected(workspace: &Workspace, input: &Path, extra: &[&str], expected: &[&str]) -> Run {
    let out = workspace.path("out.onnx");
    let before = snapshot(input);
    let mut command = args(&[&input, &out]);
    command.extend(extra.iter().map(OsString::from));

    let _ = fs::remove_file(&out);
    let first = workspace.run(&command);
    assert_one_error(&first, expected);
    assert!(!out.exists(), "OUT was written\n{}", first.describe());
    assert_eq!(snapshot(input), before, "the input changed");

    fs::write(&out, SENTINEL).unwrap();
    let second = workspace.run(&command);
    assert_one_error(&second, expected);
    assert_eq!(fs::read(&out).unwrap(), SENTINEL, "a pre-existing OUT changed\n{}", second.describe());
    assert_eq!(snapshot(input), before, "the input changed");
    assert_eq!(leftover_temp_files(workspace.dir.path()), Vec::<String>::new());

    first
}

/// Decodes a written model.
fn read_model(path: &Path) -> ModelProto {
    ModelProto::decode(Bytes::from(fs::read(path).unwrap())).unwrap()
}

fn main_graph(model: &mut ModelProto) -> &mut GraphProto {
    model.graph.as_mut().unwrap()
}

fn foldable_model() -> ModelProto {
    model(conv1d_chain(FOLDABLE))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name).join("model.onnx")
}

// ---------------------------------------------------------------------------
// Files that are not models

#[test]
fn missing_input_file() {
    let workspace = Workspace::new();

    let run = assert_rejected(&workspace, &workspace.path("absent.onnx"), &[], &["absent.onnx", "No such file"]);

    assert!(!workspace.path("absent.onnx").exists(), "{}", run.describe());
}

#[test]
fn input_is_directory() {
    let workspace = Workspace::new();
    let input = workspace.path("model.onnx");
    fs::create_dir(&input).unwrap();

    assert_rejected(&workspace, &input, &[], &["model.onnx", "is a directory"]);

    assert!(input.is_dir());
}

#[test]
fn empty_input_file() {
    let workspace = Workspace::new();
    let input = workspace.write("empty.onnx", b"");

    assert_rejected(&workspace, &input, &[], &["empty.onnx", "empty"]);
}

#[test]
fn random_bytes() {
    let workspace = Workspace::new();
    for seed in 1..=4u64 {
        let bytes: Vec<u8> = spread_values(4096, seed).iter().map(|value| (value.to_bits() >> 7) as u8).collect();
        let input = workspace.write("random.onnx", &bytes);

        assert_rejected(&workspace, &input, &[], &["random.onnx", "not a valid ONNX model"]);
    }
}

#[test]
fn truncated_model() {
    let workspace = Workspace::new();
    let bytes = fs::read(fixture("chain1d_bias_all")).unwrap();
    for cut in [1, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let input = workspace.write("truncated.onnx", &bytes[..cut]);

        assert_rejected(&workspace, &input, &[], &["truncated.onnx", "truncated"]);
    }
}

/// Every prefix of a model must load or fail with an error, never panic.
/// A prefix that cuts the graph message must fail.
#[test]
fn every_prefix_of_model_loads_or_fails() {
    let bytes = fs::read(fixture("chain1d_bias_all")).unwrap();
    let full = read_model(&fixture("chain1d_bias_all"));
    let graph_len = full.graph.as_ref().unwrap().encoded_len();
    let path = Path::new("prefix.onnx");

    let mut loaded = 0;
    for cut in 0..bytes.len() {
        let prefix = Bytes::copy_from_slice(&bytes[..cut]);
        let load = || onnx_fold::model::load_bytes(prefix, path).map(|_| ());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load));

        let result = result.unwrap_or_else(|_| panic!("loading the first {cut} bytes panicked"));
        if cut < graph_len {
            assert!(result.is_err(), "the first {cut} bytes cut the graph but loaded");
        }
        loaded += usize::from(result.is_ok());
    }
    assert!(loaded < bytes.len() / 2, "{loaded} of {} prefixes loaded", bytes.len());
}

#[test]
fn text_file() {
    let workspace = Workspace::new();
    let input = workspace.write("notes.onnx", b"This is a text file, not a model.\nSecond line.\n");

    assert_rejected(&workspace, &input, &[], &["notes.onnx", "not a valid ONNX model"]);
}

/// A ModelProto without a graph, or without IR version and opsets, decodes
/// because protobuf has no required fields, so the loader checks for them.
#[test]
fn protobuf_without_graph() {
    let workspace = Workspace::new();
    let mut incomplete = foldable_model();
    incomplete.graph = None;
    let input = workspace.write_model("no_graph.onnx", &incomplete);

    assert_rejected(&workspace, &input, &[], &["no_graph.onnx", "no graph"]);
}

#[test]
fn protobuf_without_version_or_opsets() {
    let workspace = Workspace::new();
    let mut incomplete = foldable_model();
    incomplete.ir_version = None;
    incomplete.opset_import.clear();
    let input = workspace.write_model("no_version.onnx", &incomplete);

    assert_rejected(&workspace, &input, &[], &["no_version.onnx", "neither ir_version nor opset_import"]);
}

/// Graphs nested in If branches: each level adds three protobuf messages
/// (graph, node, attribute), so 40 levels pass prost's limit of 100.
#[test]
fn nesting_deeper_than_decoder_allows() {
    let workspace = Workspace::new();
    let input = workspace.write_model("deep.onnx", &model(nested_if_graph(40)));

    assert_rejected(&workspace, &input, &[], &["deep.onnx", "nested more than 100 levels deep"]);
}

/// Nesting just within prost's limit loads and is written unchanged.
#[test]
fn nesting_within_decoder_limit() {
    let workspace = Workspace::new();
    let input = workspace.write_model("nested.onnx", &model(nested_if_graph(30)));
    let out = workspace.path("out.onnx");

    let run = workspace.run(&args(&[&input, &out, &"--no-verify"]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(fs::read(&out).unwrap(), fs::read(&input).unwrap());
}

/// `levels` If nodes each holding the next in its then-branch. Level `k`
/// outputs `y_k`, and the innermost graph copies `x` to `y_0`.
fn nested_if_graph(levels: usize) -> GraphProto {
    let mut graph = GraphProto {
        name: Some("level_0".to_string()),
        node: vec![node("Identity", "copy_0", &["x"], &["y_0"])],
        output: vec![value_info("y_0", FLOAT, None)],
        ..Default::default()
    };
    for level in 1..=levels {
        let outer = format!("y_{level}");
        let else_branch = GraphProto {
            name: Some(format!("else_{level}")),
            node: vec![node("Identity", &format!("else_copy_{level}"), &["x"], &[&format!("e_{level}")])],
            output: vec![value_info(&format!("e_{level}"), FLOAT, None)],
            ..Default::default()
        };
        let mut branch = node("If", &format!("if_{level}"), &["cond"], &[&outer]);
        branch.attribute.push(graph_attribute("then_branch", graph));
        branch.attribute.push(graph_attribute("else_branch", else_branch));
        graph = GraphProto {
            name: Some(format!("level_{level}")),
            node: vec![branch],
            output: vec![value_info(&outer, FLOAT, None)],
            ..Default::default()
        };
    }
    graph.input = vec![
        value_info("cond", DataType::Bool as i32, Some(&[])),
        value_info("x", FLOAT, Some(&[1, 4])),
    ];
    graph
}

// ---------------------------------------------------------------------------
// Malformed tensors and Conv nodes in a foldable chain

#[test]
fn raw_data_length_mismatch() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    initializer(main_graph(&mut broken), "w_1").raw_data = Some(Bytes::from(vec![0u8; 100]));
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "tensor 'w_1'", "raw_data has 100 bytes", "need 768"]);
}

#[test]
fn typed_data_count_mismatch() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    let bias = initializer(main_graph(&mut broken), "b_0");
    bias.raw_data = None;
    bias.float_data = vec![0.5; 3];
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["tensor 'b_0'", "stores 3 values", "need 16"]);
}

#[test]
fn negative_dim() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    initializer(main_graph(&mut broken), "w_0").dims = vec![16, -8, 1];
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "conv_0", "w_0", "-8 is negative"]);
}

#[test]
fn dims_product_overflows() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    initializer(main_graph(&mut broken), "w_0").dims = vec![16, i64::MAX, 4];
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "conv_0", "w_0", "overflow"]);
}

/// A chain of 2^30 middle channels with 512 bytes of weights: the size
/// check must come before any allocation, or this run would abort or be killed.
#[test]
fn absurd_dims_rejected_before_allocation() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    let graph = main_graph(&mut broken);
    initializer(graph, "w_0").dims = vec![1 << 30, 8, 1];
    initializer(graph, "w_1").dims = vec![12, 1 << 30, 1];
    initializer(graph, "b_0").dims = vec![1 << 30];
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "tensor 'w_0'", "raw_data has 512 bytes"]);
}

/// A kernel of 2^40 positions in typed float_data: the value count is
/// compared before the values are converted.
#[test]
fn absurd_dims_typed_data() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    let graph = main_graph(&mut broken);
    drop_kernel_shape(graph, 0);
    let weight = initializer(graph, "w_0");
    weight.raw_data = None;
    weight.float_data = vec![0.25; 128];
    weight.dims = vec![16, 8, 1 << 40];
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "tensor 'w_0'", "stores 128 values"]);
}

/// Removes `kernel_shape` from a Conv, so that its weight's dims alone set the kernel.
fn drop_kernel_shape(graph: &mut GraphProto, node_index: usize) {
    graph.node[node_index].attribute.retain(|attribute| attribute.name() != "kernel_shape");
}

#[test]
fn integer_conv_weight() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    let weight = initializer(main_graph(&mut broken), "w_0");
    weight.data_type = Some(DataType::Int8 as i32);
    weight.raw_data = Some(Bytes::from(vec![1u8; 128]));
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "conv_0", "w_0", "int8"]);
}

#[test]
fn unknown_element_type_code() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    initializer(main_graph(&mut broken), "w_1").data_type = Some(999);
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "conv_1", "w_1", "999"]);
}

#[test]
fn conv_weight_input_missing() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    main_graph(&mut broken).node[1].input.truncate(1);
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "conv_1", "weight input W is missing"]);
}

#[test]
fn conv_weight_wrong_rank() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    initializer(main_graph(&mut broken), "w_1").dims = vec![12, 16];
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "conv_1", "w_1", "rank 3"]);
}

#[test]
fn bias_of_wrong_length() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    let bias = initializer(main_graph(&mut broken), "b_1");
    *bias = f32_tensor("b_1", &[5], &[0.0; 5]);
    let input = workspace.write_model("model.onnx", &broken);

    assert_rejected(&workspace, &input, &[], &["model.onnx", "conv_1", "b_1", "expected [12]"]);
}

// ---------------------------------------------------------------------------
// Graph order

#[test]
fn cycle_rejected() {
    let workspace = Workspace::new();
    let mut cyclic = foldable_model();
    let graph = main_graph(&mut cyclic);
    // conv_0 now reads conv_1's output, and conv_1 reads conv_0's.
    graph.node[0].input[0] = "y".to_string();
    graph.node.push(node("Identity", "tail", &["y"], &["z"]));
    graph.output = vec![value_info("z", FLOAT, None)];
    let input = workspace.write_model("cyclic.onnx", &cyclic);

    assert_rejected(&workspace, &input, &[], &["cyclic.onnx", "cycle", "conv_"]);
}

#[test]
fn node_reading_own_output_rejected() {
    let workspace = Workspace::new();
    let mut cyclic = foldable_model();
    main_graph(&mut cyclic).node[0].input[0] = "h_0".to_string();
    let input = workspace.write_model("self_loop.onnx", &cyclic);

    assert_rejected(&workspace, &input, &[], &["self_loop.onnx", "conv_0", "its own output"]);
}

#[test]
fn cycle_in_subgraph_rejected() {
    let workspace = Workspace::new();
    let mut branch_graph = conv1d_chain(FOLDABLE);
    branch_graph.node[0].input[0] = "y".to_string();
    branch_graph.input.clear();
    let mut branch = node("If", "branch", &["cond"], &["out"]);
    branch.attribute.push(graph_attribute("then_branch", branch_graph.clone()));
    branch.attribute.push(graph_attribute("else_branch", branch_graph));
    let outer = GraphProto {
        name: Some("outer".to_string()),
        node: vec![branch],
        input: vec![value_info("cond", DataType::Bool as i32, Some(&[])), value_info("x", FLOAT, Some(&[1, 8, 6]))],
        output: vec![value_info("out", FLOAT, None)],
        ..Default::default()
    };
    let input = workspace.write_model("cyclic_branch.onnx", &model(outer));

    assert_rejected(&workspace, &input, &[], &["cyclic_branch.onnx", "branch", "cycle"]);
}

/// A valid DAG stored out of order is sorted, folded and verified.
#[test]
fn unsorted_dag_is_sorted_and_folded() {
    let workspace = Workspace::new();
    let mut unsorted = foldable_model();
    main_graph(&mut unsorted).node.reverse();
    let input = workspace.write_model("unsorted.onnx", &unsorted);
    let out = workspace.path("out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("verification with tract passed"), "{}", run.describe());
    let folded = read_model(&out);
    assert_eq!(count_ops(folded.graph.as_ref().unwrap(), "Conv"), 1);
}

// ---------------------------------------------------------------------------
// Output paths and atomic writes

#[test]
fn output_in_missing_directory() {
    let workspace = Workspace::new();
    let input = workspace.write_model("model.onnx", &foldable_model());
    let before = fs::read(&input).unwrap();
    let out = workspace.path("absent_dir/out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_one_error(&run, &["absent_dir", "does not exist"]);
    assert!(!workspace.path("absent_dir").exists());
    assert_eq!(fs::read(&input).unwrap(), before);
}

#[test]
fn output_is_directory() {
    let workspace = Workspace::new();
    let input = workspace.write_model("model.onnx", &foldable_model());
    let before = fs::read(&input).unwrap();
    let out = workspace.path("out_dir");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("keep.txt"), SENTINEL).unwrap();

    let run = workspace.run(&args(&[&input, &out]));

    assert_one_error(&run, &["out_dir", "is a directory"]);
    assert!(out.is_dir());
    assert_eq!(fs::read(out.join("keep.txt")).unwrap(), SENTINEL);
    assert_eq!(fs::read(&input).unwrap(), before);
}

#[test]
fn in_place_fold_replaces_model() {
    let workspace = Workspace::new();
    let path = workspace.write_model("model.onnx", &foldable_model());
    let before = fs::read(&path).unwrap();

    let run = workspace.run(&args(&[&path, &path]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    let after = fs::read(&path).unwrap();
    assert_ne!(after, before);
    let folded = read_model(&path);
    assert_eq!(count_ops(folded.graph.as_ref().unwrap(), "Conv"), 1);
    assert_eq!(leftover_temp_files(workspace.dir.path()), Vec::<String>::new());
}

#[cfg(unix)]
#[test]
fn in_place_fold_keeps_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let workspace = Workspace::new();
    let path = workspace.write_model("model.onnx", &foldable_model());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

    let run = workspace.run(&args(&[&path, &path, &"--no-verify"]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
}

/// A failed in-place run leaves the old model byte for byte.
#[test]
fn in_place_failure_keeps_model() {
    let workspace = Workspace::new();
    let mut broken = foldable_model();
    initializer(main_graph(&mut broken), "w_1").raw_data = Some(Bytes::from(vec![0u8; 100]));
    let path = workspace.write_model("model.onnx", &broken);
    let before = fs::read(&path).unwrap();

    let run = workspace.run(&args(&[&path, &path]));

    assert_one_error(&run, &["tensor 'w_1'"]);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(leftover_temp_files(workspace.dir.path()), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// External data

/// Builds the foldable chain with `w_0` stored externally at `location`, and
/// returns it with the bytes of `w_0` that a correct reference would read.
fn external_weight_model(location: &str, offset: u64, length: u64) -> (ModelProto, Vec<u8>) {
    let mut external = foldable_model();
    let weight = initializer(main_graph(&mut external), "w_0");
    let data = weight.raw_data.take().unwrap().to_vec();
    set_external(weight, location, offset, length);
    (external, data)
}

fn set_external(tensor: &mut TensorProto, location: &str, offset: u64, length: u64) {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    };
    tensor.raw_data = None;
    tensor.data_location = Some(DataLocation::External as i32);
    tensor.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", length.to_string()),
    ];
}

#[test]
fn external_data_absolute_location() {
    let workspace = Workspace::new();
    let data_path = workspace.path("weights.bin");
    let (external, data) = external_weight_model(data_path.to_str().unwrap(), 0, 512);
    fs::write(&data_path, data).unwrap();
    let input = workspace.write_model("model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "absolute"]);
}

#[test]
fn external_data_parent_location() {
    let workspace = Workspace::new();
    let model_dir = workspace.path("model");
    fs::create_dir(&model_dir).unwrap();
    let (external, data) = external_weight_model("../weights.bin", 0, 512);
    fs::write(workspace.path("weights.bin"), data).unwrap();
    let input = workspace.write_model("model/model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "'..'"]);
}

#[cfg(unix)]
#[test]
fn external_data_symlink_out_of_directory() {
    let workspace = Workspace::new();
    let model_dir = workspace.path("model");
    fs::create_dir(&model_dir).unwrap();
    let (external, data) = external_weight_model("weights.bin", 0, 512);
    fs::write(workspace.path("outside.bin"), data).unwrap();
    std::os::unix::fs::symlink(workspace.path("outside.bin"), model_dir.join("weights.bin")).unwrap();
    let input = workspace.write_model("model/model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "outside the model directory"]);
}

/// A symlinked directory on the way out of the model directory counts too.
#[cfg(unix)]
#[test]
fn external_data_symlinked_directory_out_of_directory() {
    let workspace = Workspace::new();
    let model_dir = workspace.path("model");
    let outside_dir = workspace.path("outside");
    fs::create_dir(&model_dir).unwrap();
    fs::create_dir(&outside_dir).unwrap();
    let (external, data) = external_weight_model("data/weights.bin", 0, 512);
    fs::write(outside_dir.join("weights.bin"), data).unwrap();
    std::os::unix::fs::symlink(&outside_dir, model_dir.join("data")).unwrap();
    let input = workspace.write_model("model/model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "outside the model directory"]);
}

#[test]
fn external_data_file_missing() {
    let workspace = Workspace::new();
    let (external, _) = external_weight_model("weights.bin", 0, 512);
    let input = workspace.write_model("model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "weights.bin", "not found"]);
}

#[test]
fn external_data_offset_beyond_end() {
    let workspace = Workspace::new();
    let (external, data) = external_weight_model("weights.bin", 4096, 512);
    workspace.write("weights.bin", &data);
    let input = workspace.write_model("model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "beyond the end"]);
}

#[test]
fn external_data_length_beyond_end() {
    let workspace = Workspace::new();
    let (external, data) = external_weight_model("weights.bin", 0, 512);
    workspace.write("weights.bin", &data[..300]);
    let input = workspace.write_model("model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "beyond the end", "300 bytes"]);
}

#[test]
fn external_data_offset_overflows() {
    let workspace = Workspace::new();
    let (external, data) = external_weight_model("weights.bin", u64::MAX - 8, 512);
    workspace.write("weights.bin", &data);
    let input = workspace.write_model("model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "beyond the end"]);
}

#[test]
fn external_data_length_disagrees_with_dims() {
    let workspace = Workspace::new();
    let (external, data) = external_weight_model("weights.bin", 0, 256);
    workspace.write("weights.bin", &data);
    let input = workspace.write_model("model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "length 256", "512 bytes"]);
}

/// Absurd dims on an external tensor fail on the file's length, before any allocation.
#[test]
fn external_data_absurd_dims() {
    let workspace = Workspace::new();
    let (mut external, data) = external_weight_model("weights.bin", 0, 512);
    let graph = main_graph(&mut external);
    drop_kernel_shape(graph, 0);
    let weight = initializer(graph, "w_0");
    weight.dims = vec![16, 8, 1 << 50];
    weight.external_data.retain(|entry| entry.key() != "length");
    workspace.write("weights.bin", &data);
    let input = workspace.write_model("model.onnx", &external);

    assert_rejected(&workspace, &input, &[], &["tensor 'w_0'", "beyond the end"]);
}

/// A valid external weight in the model directory folds; the reference test
/// for the rejections above.
#[test]
fn external_data_valid_reference_folds() {
    let workspace = Workspace::new();
    let (external, data) = external_weight_model("weights.bin", 0, 512);
    workspace.write("weights.bin", &data);
    let input = workspace.write_model("model.onnx", &external);
    let out = workspace.path("out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("verification with tract passed"), "{}", run.describe());
}

/// A tensor that no fold reads, stored through a symlink that leaves the
/// model directory, must not be copied next to an output written elsewhere.
#[cfg(unix)]
#[test]
fn untouched_external_symlink_not_copied_out() {
    let workspace = Workspace::new();
    let model_dir = workspace.path("model");
    let out_dir = workspace.path("out");
    fs::create_dir(&model_dir).unwrap();
    fs::create_dir(&out_dir).unwrap();
    fs::write(workspace.path("secret.bin"), [7u8; 16]).unwrap();
    std::os::unix::fs::symlink(workspace.path("secret.bin"), model_dir.join("side.bin")).unwrap();
    let input = workspace.write_model("model/model.onnx", &model_with_side_add(|tensor| set_external(tensor, "side.bin", 0, 16)));
    let out = out_dir.join("out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_one_error(&run, &["side.bin", "outside the model directory"]);
    assert!(!out.exists(), "{}", run.describe());
    assert!(!out_dir.join("side.bin").exists(), "the data file was placed next to OUT\n{}", run.describe());
}

// ---------------------------------------------------------------------------
// Broken parts that no foldable chain touches

/// Builds the foldable chain plus `z = Add(v, side)`, with `side` a float32
/// [4] initializer that `corrupt` may break and `z` a second graph output.
fn model_with_side_add(corrupt: impl FnOnce(&mut TensorProto)) -> ModelProto {
    let mut graph = conv1d_chain(FOLDABLE);
    let mut side = f32_tensor("side", &[4], &[1.0, 2.0, 3.0, 4.0]);
    corrupt(&mut side);
    graph.initializer.push(side);
    graph.input.push(value_info("v", FLOAT, Some(&[4])));
    graph.node.push(node("Add", "side_add", &["v", "side"], &["z"]));
    graph.output.push(value_info("z", FLOAT, None));
    model(graph)
}

/// Runs a model whose side Add has a broken initializer and checks that the
/// chain was folded and the initializer written back unchanged.
fn assert_folds_around(corrupt: impl FnOnce(&mut TensorProto)) {
    let workspace = Workspace::new();
    let original = model_with_side_add(corrupt);
    let input = workspace.write_model("model.onnx", &original);
    let before = fs::read(&input).unwrap();
    let out = workspace.path("out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(!run.stderr.contains("panicked"), "{}", run.describe());
    assert_eq!(fs::read(&input).unwrap(), before);
    let folded = read_model(&out);
    let graph = folded.graph.as_ref().unwrap();
    assert_eq!(count_ops(graph, "Conv"), 1, "{}", run.describe());
    assert_eq!(count_ops(graph, "Add"), 1);
    let side = |graph: &GraphProto| graph.initializer.iter().find(|tensor| tensor.name() == "side").cloned();
    assert_eq!(side(graph), side(original.graph.as_ref().unwrap()), "the broken initializer changed");
}

#[test]
fn broken_raw_data_beside_chain() {
    assert_folds_around(|side| side.raw_data = Some(Bytes::from(vec![0u8; 5])));
}

#[test]
fn negative_dims_beside_chain() {
    assert_folds_around(|side| side.dims = vec![-4]);
}

#[test]
fn overflowing_dims_beside_chain() {
    assert_folds_around(|side| side.dims = vec![i64::MAX, i64::MAX]);
}

#[test]
fn unknown_type_beside_chain() {
    assert_folds_around(|side| side.data_type = Some(999));
}

/// A missing data file that only the side Add reads: the output is written
/// next to the input, so the reference stays as valid, or invalid, as it was.
#[test]
fn missing_data_file_beside_chain() {
    assert_folds_around(|side| set_external(side, "absent.bin", 0, 16));
}

/// The same missing data file with the output in another directory: there
/// is nothing to copy next to it, so a warning names the tensor and the
/// fold goes on.
#[test]
fn missing_external_data_written_elsewhere_warns() {
    let workspace = Workspace::new();
    let out_dir = workspace.path("out");
    fs::create_dir(&out_dir).unwrap();
    let input = workspace.write_model("model.onnx", &model_with_side_add(|side| set_external(side, "absent.bin", 0, 16)));
    let out = out_dir.join("out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stderr.contains("tensor 'side'"), "{}", run.describe());
    assert!(run.stderr.contains("does not exist"), "{}", run.describe());
    assert_eq!(count_ops(read_model(&out).graph.as_ref().unwrap(), "Conv"), 1);
    assert!(!out_dir.join("absent.bin").exists());
}

/// A malformed Conv that is not linked to another Conv is skipped with a
/// warning and listed in the summary; the chain still folds.
#[test]
fn unlinked_malformed_conv_is_skipped() {
    let workspace = Workspace::new();
    let mut graph = conv1d_chain(FOLDABLE);
    graph.node.push(node("Relu", "relu", &["y"], &["r"]));
    graph.node.push(node("Conv", "lonely_conv", &["r", "w_bad"], &["s"]));
    graph.initializer.push(raw_tensor("w_bad", DataType::Int8 as i32, &[2, 12, 1], vec![1; 24]));
    graph.output.push(value_info("s", FLOAT, None));
    let input = workspace.write_model("model.onnx", &model(graph));
    let out = workspace.path("out.onnx");

    let run = workspace.run(&args(&[&input, &out, &"--no-verify"]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stdout.contains("skipped"), "{}", run.describe());
    assert!(run.stdout.contains("lonely_conv"), "{}", run.describe());
    assert!(run.stderr.contains("lonely_conv"), "{}", run.describe());
    let folded = read_model(&out);
    let graph = folded.graph.as_ref().unwrap();
    assert_eq!(count_ops(graph, "Conv"), 2);
    assert!(graph.node.iter().any(|node| node.name() == "lonely_conv"));
}

/// A chain that the default policy leaves alone never decodes its weights,
/// so broken weight data there is not an error: the model is copied as it is.
#[test]
fn broken_weights_in_unfolded_chain_copied_unchanged() {
    let workspace = Workspace::new();
    let mut bottleneck = model(conv1d_chain(&[16, 2, 16]));
    initializer(main_graph(&mut bottleneck), "w_1").raw_data = Some(Bytes::from(vec![0u8; 3]));
    let input = workspace.write_model("model.onnx", &bottleneck);
    let out = workspace.path("out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(fs::read(&out).unwrap(), fs::read(&input).unwrap());
}

// ---------------------------------------------------------------------------
// Sizes that only verification would allocate

/// The per-fold check feeds the first Conv an input large enough for three
/// output positions per axis. With a stride of 2^40 that input cannot be
/// allocated, so the check must fail safe and leave the chain unfolded.
#[test]
fn huge_stride_check_left_unfolded() {
    let workspace = Workspace::new();
    let mut strided = foldable_model();
    main_graph(&mut strided).node[0].attribute.push(ints_attribute("strides", &[1 << 40]));
    let input = workspace.write_model("model.onnx", &strided);
    let out = workspace.path("out.onnx");

    let run = workspace.run(&args(&[&input, &out]));

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(run.stderr.contains("check"), "{}", run.describe());
    assert_eq!(fs::read(&out).unwrap(), fs::read(&input).unwrap());
}

/// A declared input of 2^43 elements cannot be filled with random values.
#[test]
fn huge_declared_input_rejected() {
    let workspace = Workspace::new();
    let mut huge = foldable_model();
    main_graph(&mut huge).input[0] = value_info("x", FLOAT, Some(&[1, 8, 1 << 40]));
    let input = workspace.write_model("model.onnx", &huge);

    assert_rejected(&workspace, &input, &[], &["input `x`", "2 GiB", "skip verification"]);
}

/// A chain 20000 -> 2 -> 20000 -> 2 folds to a [2, 20000] weight, but
/// multiplying its weights left to right makes a [20000, 20000] product
/// (3.2 GB of f64). Composition works in column blocks instead, so the fold
/// runs under a 1.5 GB address-space limit.
#[cfg(unix)]
#[test]
fn wide_middle_chain_folds_in_bounded_memory() {
    let workspace = Workspace::new();
    let input = workspace.write_model("model.onnx", &model(conv1d_chain(&[20000, 2, 20000, 2])));
    let out = workspace.path("out.onnx");
    let limited = format!("ulimit -v 1500000 && exec '{BIN}' \"$@\"");
    let mut command = args(&[&"-c", &limited, &"sh", &input, &out, &"--no-verify", &"--no-fold-check"]);
    command.insert(0, OsString::from("sh"));

    let run = run_program(workspace.dir.path(), &command);

    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(count_ops(read_model(&out).graph.as_ref().unwrap(), "Conv"), 1);
}
