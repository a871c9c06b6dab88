//! Command-line arguments of onnx-fold.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use onnx_fold::verify::{InputArg, ShapeOverride};
use onnx_fold::Policy;

/// Folds chains of pointwise Conv layers in an ONNX model into single Convs,
/// then checks with tract that the model's outputs did not change.
///
/// Exit codes: 0 success (also when nothing was foldable), 1 invalid input or
/// I/O error, 2 usage error, 3 verification failed (OUT is not written).
#[derive(Debug, Parser)]
#[command(name = "onnx-fold", version, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub fold: FoldArgs,

    /// Print debug details (-v) or trace details (-vv) on stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Print only errors: no summary, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run two models in tract on the same inputs and compare their outputs.
    /// Exit code 0 when they match within tolerance, 3 when they do not.
    Compare(CompareArgs),
}

/// Arguments of the fold command.
#[derive(Debug, Args)]
pub struct FoldArgs {
    /// The ONNX model to fold.
    #[arg(required = true)]
    pub input: Option<PathBuf>,

    /// Path of the folded model; it may be the input itself.
    #[arg(required = true)]
    pub output: Option<PathBuf>,

    /// Fold policy: `cheaper` folds only where multiply-accumulates
    /// go down, picking the cheapest segmentation of each chain; `always`
    /// folds every legal link.
    #[arg(long, value_enum, default_value_t = Policy::Cheaper)]
    pub policy: Policy,

    /// Skip running the whole original and folded models in tract. Each fused
    /// Conv is still checked on its own (see --no-fold-check).
    #[arg(long)]
    pub no_verify: bool,

    /// Skip checking each fused Conv against its chain in tract.
    #[arg(long)]
    pub no_fold_check: bool,

    /// Behaviour when tract cannot load or run the whole model: `auto` warns
    /// and writes OUT unverified, `require` fails with exit code 3.
    #[arg(long, value_enum, default_value_t = VerifyMode::Auto, conflicts_with = "no_verify")]
    pub verify: VerifyMode,

    /// Write a JSON report of every chain, decision and check to this file.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Plan, compose and verify, print the summary and write the report, but
    /// do not write OUT.
    #[arg(long)]
    pub dry_run: bool,

    /// After verifying, run the original and folded models N times each after
    /// a warm-up run and print their median latencies.
    #[arg(long, value_name = "N", conflicts_with = "no_verify")]
    pub bench: Option<std::num::NonZeroUsize>,

    #[command(flatten)]
    pub inputs: InputArgs,

    /// Composes every bias in the wrong order, so that tests can show that a
    /// wrong fold is caught. Never use it on real work.
    #[arg(long, hide = true)]
    pub inject_bias_fault: bool,
}

/// Whether verification may be skipped when tract cannot run the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VerifyMode {
    Auto,
    Require,
}

/// Arguments of the compare command.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The reference model.
    pub expected: PathBuf,

    /// The model compared against it.
    pub actual: PathBuf,

    /// Write the comparison as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    #[command(flatten)]
    pub inputs: InputArgs,
}

/// Inputs of a tract run and the tolerance of the comparison.
#[derive(Clone, Debug, Args)]
pub struct InputArgs {
    /// An input tensor: NAME=FILE with FILE a .npy, a .npz or an ONNX
    /// TensorProto .pb file, or a bare .npz or .pb file whose arrays or
    /// tensor name the inputs. Repeatable. Inputs not given get seeded random
    /// values: floats uniform in [-1, 1], integers 0..4, booleans true.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub input_tensors: Vec<InputArg>,

    /// A directory in the ONNX backend test layout (test_data_set_N/input_K.pb,
    /// and output_K.pb, which the original model's outputs are also compared with).
    #[arg(long = "inputs", value_name = "DIR")]
    pub inputs_dir: Option<PathBuf>,

    /// The shape of an input, which also sets its symbolic dims, e.g.
    /// images=1,3,640,640. Repeatable. Dims that nothing sets are 1 for a
    /// batch-like name and 8 otherwise.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shape: Vec<ShapeOverride>,

    /// Relative tolerance, a fraction of the largest magnitude of each output.
    /// Default by element type: 1e-4 for float32, 1e-2 for float16, 1e-9 for float64.
    #[arg(long, value_parser = parse_tolerance)]
    pub rtol: Option<f64>,

    /// Absolute tolerance. Default by element type: 1e-6 for float32, 1e-3 for
    /// float16, 1e-12 for float64.
    #[arg(long, value_parser = parse_tolerance)]
    pub atol: Option<f64>,

    /// Time limit in seconds for running both models in tract; past it the
    /// run counts as not verified (see --verify). 0 means no limit.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub verify_timeout: u64,

    /// Seed of the random input values.
    #[arg(long, default_value_t = onnx_fold::verify::DEFAULT_SEED)]
    pub seed: u64,
}

/// Parses a tolerance: a finite number, zero or more. NaN would make every
/// comparison pass.
fn parse_tolerance(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| format!("'{text}' is not a number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text} is not a finite number of zero or more"));
    }
    Ok(value)
}
