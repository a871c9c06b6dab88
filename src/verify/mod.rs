//! Verification of a folded model: run the original and the folded model in
//! tract on the same inputs and compare their outputs.
//!
//! The steps, each usable on its own:
//! 1. [`load_model`] parses encoded ONNX bytes, ignoring stored output shapes
//!    and `value_info`, and lists the real inputs as [`InputSpec`]s.
//! 2. [`read_input_args`] reads tensors the user has (`.npy`, `.npz`, ONNX
//!    `TensorProto` files, backend test directories).
//! 3. [`build_inputs`] completes them into an [`InputSet`]: sizes for symbolic
//!    dimensions and seeded random values for the inputs not given.
//! 4. [`run_model`] (or [`prepare_model`] then [`PreparedModel::run`]) runs a model in tract.
//! 5. [`compare_outputs`] compares two output sets within a [`Tolerance`].
//! 6. [`bench_model`] times repeated runs.
//!
//! [`verify_models`] chains steps 1 and 3 to 5 for an original and a folded model.
//!
//! Limits: tract 0.23 has no bfloat16 or 8-bit float types, so models with
//! such inputs fail to load, and string inputs and outputs are not handled.

mod compare;
mod files;
mod inputs;
mod load;
mod npy;
mod run;
#[cfg(test)]
mod test_models;

use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};
use tract_onnx::prelude::*;

pub use compare::{
    compare_outputs, compare_tensors, ComparisonReport, OutputComparison, OutputStatus, Tolerance,
    WorstElement,
};
pub use files::{
    read_input_args, read_named, read_tensor_proto, read_test_data_dir, read_unnamed, InputArg,
    InputFileError, UserTensors,
};
pub use inputs::{
    build_inputs, build_inputs_for_specs, ChosenDefault, InputError, InputOrigin, InputRequest,
    InputSet, InputValue, ParseShapeError, ShapeOrigin, ShapeOverride, DEFAULT_BATCH_DIM,
    DEFAULT_DIM, DEFAULT_SEED,
};
pub use load::{inside_tract_call, load_model, tract_error_line, Dim, InputSpec, LoadError, LoadedModel};
pub use run::{
    bench_model, prepare_model, run_model, BenchResult, PlanKind, PreparedModel, RunError,
};

/// A tensor with the name of the model input or output it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Input or output name.
    pub name: String,

    /// The values.
    pub tensor: Tensor,
}

/// The outputs of one model run, in the order the model declares them.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOutputs {
    /// Label of the model that produced them, or of the reference they come from.
    pub model: String,

    /// The outputs.
    pub outputs: Vec<NamedTensor>,
}

impl ModelOutputs {
    /// Looks up an output's tensor by name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.outputs
            .iter()
            .find(|output| output.name == name)
            .map(|output| &output.tensor)
    }
}

/// Names a tract datum type in lower case, such as `f32` or `bool`.
pub fn datum_type_name(datum_type: DatumType) -> String {
    format!("{datum_type:?}").to_ascii_lowercase()
}

fn serialize_datum_type<S: Serializer>(
    datum_type: &DatumType,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&datum_type_name(*datum_type))
}

/// Role of a model in a verification: the original or the folded one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelRole {
    /// The model before folding.
    Original,

    /// The model after folding.
    Folded,
}

impl fmt::Display for ModelRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRole::Original => f.write_str("original"),
            ModelRole::Folded => f.write_str("folded"),
        }
    }
}

/// An encoded model to verify.
#[derive(Clone, Copy, Debug)]
pub struct ModelSource<'a> {
    /// Label for errors and reports, such as the file name.
    pub label: &'a str,

    /// Encoded ONNX `ModelProto`.
    pub bytes: &'a [u8],

    /// Directory that external data locations are relative to.
    pub model_dir: Option<&'a Path>,
}

/// Inputs, tolerance and reference outputs of a verification.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Given tensors, shape overrides and seed for the inputs.
    pub inputs: InputRequest,

    /// Tolerance for every float output, instead of the per-type defaults.
    pub tolerance: Option<Tolerance>,

    /// Expected outputs of the original model, such as the `output_K.pb` files of a backend test directory.
    pub reference: Option<ModelOutputs>,
}

/// Failure of a verification before the outputs could be compared.
///
/// Each variant displays the full message of the error it wraps, which names
/// the model by its label, and `source()` returns `None` so that the message
/// is not printed twice by error reporters that walk the chain.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A model failed to load.
    #[error("{error}")]
    Load { role: ModelRole, error: LoadError },

    /// The input set could not be built from the original model's inputs.
    #[error("{error}")]
    Inputs { error: InputError },

    /// A model failed to plan or run.
    #[error("{error}")]
    Run { role: ModelRole, error: RunError },
}

impl VerifyError {
    /// Returns the step that failed: `load`, `inputs` or `run`.
    pub fn stage(&self) -> &'static str {
        match self {
            VerifyError::Load { .. } => "load",
            VerifyError::Inputs { .. } => "inputs",
            VerifyError::Run { .. } => "run",
        }
    }

    /// Returns the model the failure concerns, `None` for input errors.
    pub fn role(&self) -> Option<ModelRole> {
        match self {
            VerifyError::Load { role, .. } | VerifyError::Run { role, .. } => Some(*role),
            VerifyError::Inputs { .. } => None,
        }
    }
}

impl Serialize for VerifyError {
    /// Serializes as `{"stage": ..., "model": ..., "message": ...}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Failure {
            stage: &'static str,
            model: Option<ModelRole>,
            message: String,
        }

        Failure {
            stage: self.stage(),
            model: self.role(),
            message: self.to_string(),
        }
        .serialize(serializer)
    }
}

/// Result of a verification that got as far as comparing outputs.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// The inputs both models ran on.
    pub inputs: InputSet,

    /// The form of the original model that tract ran.
    pub original_plan: PlanKind,

    /// The form of the folded model that tract ran.
    pub folded_plan: PlanKind,

    /// Folded outputs (actual) against original outputs (expected).
    pub comparison: ComparisonReport,

    /// Original outputs (actual) against the reference outputs (expected), when a reference was given.
    pub reference: Option<ComparisonReport>,
}

impl Verification {
    /// Returns `true` when the folded model matches the original, and the original matches the reference if any.
    pub fn passed(&self) -> bool {
        self.comparison.passed
            && self
                .reference
                .as_ref()
                .is_none_or(|reference| reference.passed)
    }
}

/// Loads both models, then runs [`verify_loaded`].
pub fn verify_models(
    original: &ModelSource,
    folded: &ModelSource,
    options: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let original_model =
        load_model(original.label, original.bytes, original.model_dir).map_err(|error| {
            VerifyError::Load {
                role: ModelRole::Original,
                error,
            }
        })?;
    let folded_model =
        load_model(folded.label, folded.bytes, folded.model_dir).map_err(|error| {
            VerifyError::Load {
                role: ModelRole::Folded,
                error,
            }
        })?;

    verify_loaded(&original_model, &folded_model, options)
}

/// Builds inputs from the original model's specs, runs both models on them and compares the outputs.
pub fn verify_loaded(
    original: &LoadedModel,
    folded: &LoadedModel,
    options: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let inputs =
        build_inputs(original, &options.inputs).map_err(|error| VerifyError::Inputs { error })?;

    let (original_outputs, original_plan) = run_role(original, &inputs, ModelRole::Original)?;
    let (folded_outputs, folded_plan) = run_role(folded, &inputs, ModelRole::Folded)?;

    let comparison = compare_outputs(&original_outputs, &folded_outputs, options.tolerance);
    let reference = options
        .reference
        .as_ref()
        .map(|reference| compare_outputs(reference, &original_outputs, options.tolerance));

    log::debug!(
        "verified `{}` against `{}`: {}",
        folded.label(),
        original.label(),
        if comparison.passed {
            "outputs match"
        } else {
            "outputs differ"
        }
    );
    Ok(Verification {
        inputs,
        original_plan,
        folded_plan,
        comparison,
        reference,
    })
}

fn run_role(
    model: &LoadedModel,
    inputs: &InputSet,
    role: ModelRole,
) -> Result<(ModelOutputs, PlanKind), VerifyError> {
    let to_error = |error| VerifyError::Run { role, error };

    let prepared = prepare_model(model, inputs).map_err(to_error)?;
    let outputs = prepared.run(inputs).map_err(to_error)?;
    Ok((outputs, prepared.plan_kind()))
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::tensor_proto::DataType;

    use super::test_models::{self, fixed, ints_attribute, param, ModelBuilder};
    use super::*;

    /// Weights of the two-layer chain `x (3 channels) -> 4 -> 2` built by [`test_models::conv_chain`].
    fn chain_weights() -> (Vec<f32>, Vec<f32>) {
        (test_models::ramp(4 * 3, 0.1), test_models::ramp(2 * 4, 0.1))
    }

    /// Builds the 1x1 Conv with weight `W2 · W1`, which equals the chain, with `perturbation` added to one weight.
    fn folded_chain(perturbation: f32) -> Vec<u8> {
        let (w1, w2) = chain_weights();
        let mut folded = vec![0.0f32; 2 * 3];
        for out in 0..2 {
            for inner in 0..4 {
                for input in 0..3 {
                    folded[out * 3 + input] += w2[out * 4 + inner] * w1[inner * 3 + input];
                }
            }
        }
        folded[0] += perturbation;

        let mut builder = ModelBuilder::new();
        builder.input(
            "x",
            DataType::Float,
            &[
                param("batch"),
                fixed(3),
                param("height"),
                test_models::unknown(),
            ],
        );
        builder.initializer("w", &[2, 3, 1, 1], &folded);
        builder.node(
            "Conv",
            &["x", "w"],
            &["y"],
            vec![ints_attribute("kernel_shape", &[1, 1])],
        );
        builder.output("y");
        builder.encode()
    }

    fn source<'a>(label: &'a str, bytes: &'a [u8]) -> ModelSource<'a> {
        ModelSource {
            label,
            bytes,
            model_dir: None,
        }
    }

    #[test]
    fn verify_passes_for_equal_fold() {
        let original = test_models::conv_chain(&[("w1", 4), ("w2", 2)], 3);
        let folded = folded_chain(0.0);

        let verification = verify_models(
            &source("chain", &original),
            &source("folded", &folded),
            &VerifyOptions::default(),
        )
        .unwrap();

        assert!(verification.passed(), "{}", verification.comparison);
        assert_eq!(verification.original_plan, PlanKind::Optimized);
        let y = &verification.comparison.outputs[0];
        assert_eq!(y.expected_shape.as_deref(), Some(&[1, 2, 8, 8][..]));
        assert!(y.max_rel_error < 1e-6, "{y}");
        let defaults: Vec<String> = verification
            .inputs
            .chosen_defaults
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(defaults, ["batch=1", "height=8", "x[3]=8"]);
    }

    #[test]
    fn verify_detects_wrong_fold() {
        let original = test_models::conv_chain(&[("w1", 4), ("w2", 2)], 3);
        let folded = folded_chain(0.05);
        let options = VerifyOptions {
            inputs: InputRequest {
                shapes: vec!["x=2,3,4,5".parse().unwrap()],
                ..Default::default()
            },
            ..Default::default()
        };

        let verification = verify_models(
            &source("chain", &original),
            &source("folded", &folded),
            &options,
        )
        .unwrap();

        let y = &verification.comparison.outputs[0];
        assert!(!verification.passed());
        assert_eq!(y.status, OutputStatus::OutOfTolerance);
        assert_eq!(y.element_count, 2 * 2 * 4 * 5);
        // Only output channel 0 reads the perturbed weight, and its error is 0.05 * |x| at each pixel.
        assert_eq!(y.mismatched, 2 * 4 * 5);
        assert_eq!(y.worst.as_ref().unwrap().index[1], 0);
    }

    #[test]
    fn verify_compares_with_reference_outputs() {
        let original = test_models::conv_chain(&[("w1", 4), ("w2", 2)], 3);
        let x = Tensor::from_shape(&[1, 3, 1, 1], &[1.0f32, 0.0, 0.0]).unwrap();
        // With x = e0, y = W2 · (column 0 of W1).
        let (w1, w2) = chain_weights();
        let column: Vec<f32> = (0..4).map(|inner| w1[inner * 3]).collect();
        let y: Vec<f32> = (0..2)
            .map(|out| {
                (0..4)
                    .map(|inner| w2[out * 4 + inner] * column[inner])
                    .sum()
            })
            .collect();
        let mut wrong_y = y.clone();
        wrong_y[1] += 1.0;
        let reference = |values: &[f32]| ModelOutputs {
            model: "onnxruntime".into(),
            outputs: vec![NamedTensor {
                name: "y".into(),
                tensor: Tensor::from_shape(&[1, 2, 1, 1], values).unwrap(),
            }],
        };
        let options = |values: &[f32]| VerifyOptions {
            inputs: InputRequest {
                tensors: vec![NamedTensor {
                    name: "x".into(),
                    tensor: x.clone(),
                }],
                ..Default::default()
            },
            reference: Some(reference(values)),
            ..Default::default()
        };

        let good = verify_models(
            &source("chain", &original),
            &source("same", &original),
            &options(&y),
        )
        .unwrap();
        let bad = verify_models(
            &source("chain", &original),
            &source("same", &original),
            &options(&wrong_y),
        )
        .unwrap();

        assert!(good.passed());
        assert!(bad.comparison.passed);
        let bad_reference = bad.reference.as_ref().unwrap();
        assert!(!bad.passed());
        assert_eq!(
            bad_reference.outputs[0].worst.as_ref().unwrap().index,
            [0, 1, 0, 0]
        );
    }

    #[test]
    fn verify_reports_which_model_failed_to_load() {
        let original = test_models::conv_chain(&[("w1", 4)], 3);

        let err = verify_models(
            &source("chain", &original),
            &source("broken.onnx", b"\x08\x01\xff"),
            &VerifyOptions::default(),
        )
        .unwrap_err();

        assert_eq!(err.stage(), "load");
        assert_eq!(err.role(), Some(ModelRole::Folded));
        assert!(err.to_string().contains("`broken.onnx`"), "{err}");
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(json["model"], "folded");
    }

    #[test]
    fn verify_reports_which_model_failed_to_run() {
        let original = test_models::conv_chain(&[("w1", 4)], 3);
        let mut builder = ModelBuilder::new();
        builder.input(
            "x",
            DataType::Float,
            &[
                param("batch"),
                fixed(3),
                param("height"),
                test_models::unknown(),
            ],
        );
        builder.node("NoSuchOp", &["x"], &["y"], vec![]);
        builder.output("y");
        let folded = builder.encode();

        let err = verify_models(
            &source("chain", &original),
            &source("folded", &folded),
            &VerifyOptions::default(),
        )
        .unwrap_err();

        assert_eq!(err.stage(), "run");
        assert_eq!(err.role(), Some(ModelRole::Folded));
    }

    #[test]
    fn verify_reports_folded_model_with_other_inputs() {
        let original = test_models::conv_chain(&[("w1", 4)], 3);
        let mut builder = ModelBuilder::new();
        builder.input(
            "renamed",
            DataType::Float,
            &[
                param("batch"),
                fixed(3),
                param("height"),
                test_models::unknown(),
            ],
        );
        builder.node("Relu", &["renamed"], &["y"], vec![]);
        builder.output("y");
        let folded = builder.encode();

        let err = verify_models(
            &source("chain", &original),
            &source("folded", &folded),
            &VerifyOptions::default(),
        )
        .unwrap_err();

        assert!(
            matches!(
                err,
                VerifyError::Run {
                    role: ModelRole::Folded,
                    error: RunError::MissingInput { .. }
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn verify_rejects_input_name_model_lacks() {
        let original = test_models::conv_chain(&[("w1", 4)], 3);
        let options = VerifyOptions {
            inputs: InputRequest {
                shapes: vec!["images=1,3,8,8".parse().unwrap()],
                ..Default::default()
            },
            ..Default::default()
        };

        let err = verify_models(
            &source("chain", &original),
            &source("folded", &original),
            &options,
        )
        .unwrap_err();

        assert_eq!(err.stage(), "inputs");
        assert!(
            err.to_string()
                .contains("model `chain` has no such input; its inputs are: x"),
            "{err}"
        );
    }

    #[test]
    fn initializer_input_not_real_input() {
        let mut builder = ModelBuilder::new();
        builder.input("x", DataType::Float, &[fixed(2)]);
        builder.initializer_as_input("bias", &[2], &[1.0, 2.0]);
        builder.node("Add", &["x", "bias"], &["y"], vec![]);
        builder.output("y");
        let bytes = builder.encode();

        let verification = verify_models(
            &source("m", &bytes),
            &source("m", &bytes),
            &VerifyOptions::default(),
        )
        .unwrap();

        assert_eq!(verification.inputs.inputs.len(), 1);
        assert!(verification.passed());
    }

    #[test]
    fn read_input_args_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pb");
        let proto = test_models::float_tensor("x", &[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
        std::fs::write(&path, test_models::encode(&proto)).unwrap();
        let model = load_model("chain", &test_models::conv_chain(&[("w1", 4)], 3), None).unwrap();
        let args: Vec<InputArg> = [
            path.to_str().unwrap().to_string(),
            format!("x={}", path.display()),
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();

        let err = read_input_args(&model, &args).unwrap_err();

        assert!(
            matches!(err, InputFileError::DuplicateInput { ref input, .. } if input == "x"),
            "{err}"
        );
    }

    #[test]
    fn datum_type_names_are_lower_case() {
        assert_eq!(datum_type_name(DatumType::F16), "f16");
        assert_eq!(datum_type_name(DatumType::Bool), "bool");
        assert_eq!(datum_type_name(DatumType::U8), "u8");
    }
}
