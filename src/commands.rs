//! The fold and compare commands: load, fold, verify, report, save.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use onnx_fold::fold::FoldOptions;
use onnx_fold::model::{self, Model};
use onnx_fold::report::REPORT_VERSION;
use onnx_fold::verify::{
    self, bench_model, build_inputs, load_model, BenchResult, InputRequest, ModelOutputs, ModelSource, Tolerance, Verification,
    VerifyError, VerifyOptions,
};
use onnx_fold::{fold_model, FoldReport};
use serde::Serialize;

use crate::cli::{CompareArgs, FoldArgs, InputArgs, VerifyMode};
use crate::summary;

/// How a command failed, which decides the exit code.
pub enum Failure {
    /// Invalid input or an I/O error: exit code 1.
    Invalid(String),
    /// The outputs differ, or verification was required and could not run: exit code 3.
    Verification(String),
    /// Arguments that clap accepts but that contradict each other: exit code 2.
    Usage(String),
}

impl From<onnx_fold::Error> for Failure {
    fn from(error: onnx_fold::Error) -> Self {
        Failure::Invalid(error.to_string())
    }
}

/// The outcome of the whole-model verification.
#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VerificationStatus {
    /// Both models ran and their outputs match.
    Passed(Verification),
    /// Both models ran and their outputs differ.
    Failed(Verification),
    /// tract could not load or run a model.
    NotVerified { reason: String, error: Option<VerifyError> },
    /// Verification did not run.
    Skipped { reason: String },
}

/// The JSON document written by `--report`; docs/report.md describes it.
#[derive(Serialize)]
struct RunReport<'a> {
    version: u32,
    input: &'a Path,
    output: Option<&'a Path>,
    written: bool,
    fold: &'a FoldReport,
    verification: &'a VerificationStatus,
    bench: Option<[BenchResult; 2]>,
}

/// Folds `args.input` into `args.output`.
pub fn fold(args: &FoldArgs, quiet: bool) -> Result<(), Failure> {
    let (Some(input), Some(output)) = (args.input.as_deref(), args.output.as_deref()) else {
        return Err(Failure::Invalid("give an input and an output model path".to_string()));
    };
    if !args.dry_run {
        model::check_output_path(output)?;
    }
    if let Some(report) = &args.report {
        check_report_path(report, &[input, output])?;
    }

    let mut model = model::load(input)?;
    let options = FoldOptions {
        policy: args.policy,
        check_folds: !args.no_fold_check,
        fault: args.inject_bias_fault.then_some(onnx_fold::fold::Fault::BiasInWrongOrder),
    };
    let external = model.external_data();
    // Errors of the pass name a node or tensor but not the file, which a
    // pipeline that folds many models needs.
    let report = fold_model(&mut model.proto, &external, &options)
        .map_err(|error| Failure::Invalid(format!("cannot fold {}: {error}; nothing was written", input.display())))?;
    let bytes = if report.changed() { Bytes::from(model::encode(&model.proto)) } else { model.original.clone() };

    let status = verify_fold(args, &model, &bytes, &report)?;
    let bench = match (&status, args.bench) {
        (VerificationStatus::Passed(_), Some(runs)) => Some(bench_pair(&model, &bytes, &args.inputs, runs)?),
        _ => None,
    };
    if !quiet {
        summary::print_fold(input, &report, &status, bench.as_ref());
    }

    let verdict = verdict(&status, args.verify);
    let written = verdict.is_ok() && !args.dry_run;
    if written {
        model::save(&bytes, &model.proto, &model.dir(), output)?;
    }
    if let Some(path) = &args.report {
        let document = RunReport {
            version: REPORT_VERSION,
            input,
            output: (!args.dry_run).then_some(output),
            written,
            fold: &report,
            verification: &status,
            bench,
        };
        write_json(path, &document)?;
    }
    if written && !quiet {
        println!("wrote {}", output.display());
    }
    if args.dry_run && !quiet {
        println!("dry run: {} was not written", output.display());
    }
    verdict
}

fn verdict(status: &VerificationStatus, mode: VerifyMode) -> Result<(), Failure> {
    match status {
        VerificationStatus::Failed(verification) if !verification.comparison.passed => Err(Failure::Verification(format!(
            "the folded model's outputs differ from the original's, so it was not written:\n{}",
            verification.comparison
        ))),
        VerificationStatus::Failed(verification) => {
            let (source, lines) = match &verification.reference {
                Some(reference) => (reference.expected_model.clone(), reference.to_string()),
                None => ("--inputs".to_string(), String::new()),
            };
            Err(Failure::Verification(format!(
                "the original model's outputs differ from the expected outputs in {source}, so nothing was \
                 written; check that those files belong to this model:\n{lines}"
            )))
        }
        VerificationStatus::NotVerified { reason, .. } if mode == VerifyMode::Require => Err(Failure::Verification(format!(
            "verification is required but tract could not run the model, so it was not written: {reason}"
        ))),
        _ => Ok(()),
    }
}

fn verify_fold(args: &FoldArgs, model: &Model, folded: &Bytes, report: &FoldReport) -> Result<VerificationStatus, Failure> {
    if args.no_verify {
        return Ok(VerificationStatus::Skipped {
            reason: "--no-verify was given".to_string(),
        });
    }
    if !report.changed() {
        return Ok(VerificationStatus::Skipped {
            reason: "nothing was folded, the output is the input unchanged".to_string(),
        });
    }

    let original = OwnedSource {
        label: "original".to_string(),
        bytes: model.original.clone(),
        dir: model.dir(),
    };
    let folded = OwnedSource {
        label: "folded".to_string(),
        bytes: folded.clone(),
        dir: model.dir(),
    };
    verify_each_data_set(original, folded, &args.inputs)
}

/// Verifies once per `test_data_set_N` of `--inputs DIR` (or once, without
/// such a directory) and returns the first result that did not pass, else
/// the last one.
fn verify_each_data_set(original: OwnedSource, other: OwnedSource, args: &InputArgs) -> Result<VerificationStatus, Failure> {
    let data_sets = match &args.inputs_dir {
        Some(dir) => data_set_dirs(dir),
        None => vec![None],
    };
    let mut last = None;
    for data_set in data_sets {
        let mut data_set_args = args.clone();
        if let Some(dir) = &data_set {
            log::info!("verifying on {}", dir.display());
            data_set_args.inputs_dir = Some(dir.clone());
        }
        let status = run_with_timeout(original.clone(), other.clone(), &data_set_args)?;
        if !matches!(status, VerificationStatus::Passed(_)) {
            return Ok(status);
        }
        last = Some(status);
    }
    Ok(last.unwrap_or(VerificationStatus::Skipped {
        reason: "no test data set was found".to_string(),
    }))
}

/// Lists the `test_data_set_N` directories of `dir` in order of N, or `dir`
/// itself when it has none.
fn data_set_dirs(dir: &Path) -> Vec<Option<PathBuf>> {
    let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .filter_map(|path| {
            let number = path.file_name()?.to_str()?.strip_prefix("test_data_set_")?.parse().ok()?;
            Some((number, path))
        })
        .collect();
    numbered.sort();
    if numbered.is_empty() {
        return vec![Some(dir.to_path_buf())];
    }
    numbered.into_iter().map(|(_, path)| Some(path)).collect()
}

/// An encoded model that a verification thread can own.
#[derive(Clone)]
struct OwnedSource {
    label: String,
    bytes: Bytes,
    dir: PathBuf,
}

impl OwnedSource {
    fn source(&self) -> ModelSource<'_> {
        ModelSource {
            label: &self.label,
            bytes: &self.bytes,
            model_dir: Some(&self.dir),
        }
    }
}

/// Runs [`run_verification`] on a thread and stops waiting after
/// `--verify-timeout` seconds: tract's optimizer can loop forever on some
/// graphs (seen with a Scan body), and a pipeline must not hang. The thread is
/// left behind and ends with the process.
fn run_with_timeout(original: OwnedSource, other: OwnedSource, args: &InputArgs) -> Result<VerificationStatus, Failure> {
    let seconds = args.verify_timeout;
    let args = args.clone();
    let (sender, receiver) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new().name("verify".to_string()).spawn(move || {
        let _ = sender.send(run_verification(&original.source(), &other.source(), &args));
    });
    if let Err(error) = worker {
        return Err(Failure::Invalid(format!("cannot start the verification thread: {error}")));
    }

    let received = match seconds {
        0 => receiver.recv().map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
        _ => receiver.recv_timeout(std::time::Duration::from_secs(seconds)),
    };
    match received {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Ok(not_verified_because(format!(
            "tract did not finish within {seconds} s; raise --verify-timeout, or use --no-verify and rely on the per-fold checks"
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Ok(not_verified_because("the verification thread stopped without a result".to_string()))
        }
    }
}

fn not_verified_because(reason: String) -> VerificationStatus {
    log::warn!("the model was not verified: {reason}");
    VerificationStatus::NotVerified { reason, error: None }
}

/// Runs both models on the same inputs; tract's failures become `NotVerified`,
/// invalid user inputs an error.
fn run_verification(original: &ModelSource, other: &ModelSource, args: &InputArgs) -> Result<VerificationStatus, Failure> {
    let loaded = match load_model(original.label, original.bytes, original.model_dir) {
        Ok(loaded) => loaded,
        Err(error) => return Ok(not_verified(VerifyError::Load { role: verify::ModelRole::Original, error })),
    };
    let options = verify_options(&loaded, args)?;

    let other_loaded = match load_model(other.label, other.bytes, other.model_dir) {
        Ok(loaded) => loaded,
        Err(error) => return Ok(not_verified(VerifyError::Load { role: verify::ModelRole::Folded, error })),
    };

    match verify::verify_loaded(&loaded, &other_loaded, &options) {
        Ok(verification) if verification.passed() => Ok(VerificationStatus::Passed(verification)),
        Ok(verification) => Ok(VerificationStatus::Failed(verification)),
        Err(VerifyError::Inputs { error }) => Err(Failure::Invalid(error.to_string())),
        Err(error) => Ok(not_verified(error)),
    }
}

fn not_verified(error: VerifyError) -> VerificationStatus {
    let mut reason = error.to_string();
    if error.stage() == "run" {
        // Symbolic dims get small defaults, which some models cannot run with.
        reason.push_str("; if the model needs real input sizes, give them with --input-shape NAME=d0,d1,... or --input");
    }
    log::warn!("the model was not verified: {reason}");
    VerificationStatus::NotVerified {
        reason,
        error: Some(error),
    }
}

/// Reads the user's input files against the original model's inputs.
fn verify_options(model: &verify::LoadedModel, args: &InputArgs) -> Result<VerifyOptions, Failure> {
    let mut input_args = args.input_tensors.clone();
    if let Some(dir) = &args.inputs_dir {
        input_args.push(verify::InputArg::Unnamed { path: dir.clone() });
    }
    let tensors = verify::read_input_args(model, &input_args).map_err(|error| Failure::Invalid(error.to_string()))?;

    let reference = (!tensors.expected_outputs.is_empty()).then(|| ModelOutputs {
        model: tensors
            .expected_outputs_dir
            .as_ref()
            .map_or_else(|| "expected outputs".to_string(), |dir| dir.display().to_string()),
        outputs: tensors.expected_outputs,
    });
    let tolerance = (args.rtol.is_some() || args.atol.is_some()).then(|| Tolerance {
        rtol: args.rtol.unwrap_or(Tolerance::F32.rtol),
        atol: args.atol.unwrap_or(Tolerance::F32.atol),
    });
    Ok(VerifyOptions {
        inputs: InputRequest {
            tensors: tensors.inputs,
            shapes: args.input_shape.clone(),
            seed: args.seed,
        },
        tolerance,
        reference,
    })
}

fn bench_pair(model: &Model, folded: &[u8], args: &InputArgs, runs: std::num::NonZeroUsize) -> Result<[BenchResult; 2], Failure> {
    let dir = model.dir();
    let bench = |label: &str, bytes: &[u8]| -> Result<BenchResult, Failure> {
        let failed = |message: String| Failure::Invalid(format!("benchmark of the {label} model failed: {message}"));
        let loaded = load_model(label, bytes, Some(&dir)).map_err(|error| failed(error.to_string()))?;
        let options = verify_options(&loaded, args)?;
        let inputs = build_inputs(&loaded, &options.inputs).map_err(|error| failed(error.to_string()))?;
        bench_model(&loaded, &inputs, runs).map_err(|error| failed(error.to_string()))
    };
    Ok([bench("original", &model.original)?, bench("folded", folded)?])
}

/// Compares two models on the same inputs.
pub fn compare(args: &CompareArgs, quiet: bool) -> Result<(), Failure> {
    if let Some(report) = &args.report {
        check_report_path(report, &[&args.expected, &args.actual])?;
    }
    let expected = model::load(&args.expected)?;
    let actual = model::load(&args.actual)?;
    let expected_label = args.expected.display().to_string();
    let actual_label = args.actual.display().to_string();
    let expected_source = OwnedSource {
        label: expected_label.clone(),
        bytes: expected.original.clone(),
        dir: expected.dir(),
    };
    let actual_source = OwnedSource {
        label: actual_label.clone(),
        bytes: actual.original.clone(),
        dir: actual.dir(),
    };

    let status = verify_each_data_set(expected_source, actual_source, &args.inputs)?;
    if !quiet {
        summary::print_verification(&status);
    }
    if let Some(path) = &args.report {
        write_json(path, &serde_json::json!({ "version": REPORT_VERSION, "comparison": &status }))?;
    }
    match status {
        VerificationStatus::Passed(_) => Ok(()),
        VerificationStatus::Failed(verification) => Err(Failure::Verification(format!(
            "{} and {} differ:\n{}",
            expected_label, actual_label, verification.comparison
        ))),
        VerificationStatus::NotVerified { reason, .. } | VerificationStatus::Skipped { reason } => {
            Err(Failure::Verification(format!("the models could not be compared: {reason}")))
        }
    }
}

/// Rejects a report path that would overwrite one of the models, and one that
/// cannot be written, before any work is done.
fn check_report_path(report: &Path, models: &[&Path]) -> Result<(), Failure> {
    if let Some(model) = models.iter().find(|model| model::same_file(report, model)) {
        return Err(Failure::Usage(format!(
            "--report {} is the model file {}; give the report its own path",
            report.display(),
            model.display()
        )));
    }
    model::check_output_path(report).map_err(|error| Failure::Invalid(format!("--report: {error}")))
}

fn write_json(path: &Path, document: &impl Serialize) -> Result<(), Failure> {
    let mut text = serde_json::to_string_pretty(document).map_err(|error| Failure::Invalid(format!("cannot encode the report: {error}")))?;
    text.push('\n');
    model::check_output_path(path)?;
    model::write_atomically(text.as_bytes(), path)?;
    Ok(())
}
