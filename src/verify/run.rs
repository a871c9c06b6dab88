//! Running a loaded model on an input set, and timing it.
//!
//! The input facts are pinned to the shapes of the input set before typing, so
//! tract plans for concrete shapes and no symbol survives into the plan.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};
use tract_onnx::prelude::*;

use super::inputs::InputSet;
use super::load::{call_tract, LoadedModel};
use super::{ModelOutputs, NamedTensor};

/// Failure to prepare or run a model.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input set has no tensor for one of the model's inputs.
    #[error("model `{model}` has input `{input}`, but the input set has no tensor for it; both models must have the same inputs")]
    MissingInput { model: String, input: String },

    /// tract could not infer types and shapes for the given input shapes.
    #[error("tract failed to type model `{model}` for inputs {inputs}: {reason}")]
    Typing {
        model: String,
        inputs: String,
        reason: String,
    },

    /// tract could not build an execution plan.
    #[error("tract failed to plan model `{model}`: {reason}")]
    Plan { model: String, reason: String },

    /// tract failed while running the plan.
    #[error("tract failed to run model `{model}` on inputs {inputs}: {reason}")]
    Execution {
        model: String,
        inputs: String,
        reason: String,
    },

    /// The plan returned another number of outputs than the model declares.
    #[error("model `{model}` declares {declared} outputs but tract returned {returned}")]
    OutputCount {
        model: String,
        declared: usize,
        returned: usize,
    },
}

/// Form of the model that tract runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// The optimized model, the default.
    Optimized,

    /// The decluttered model, used when optimizing failed.
    Decluttered,

    /// The typed model as translated, used when decluttering failed too.
    Typed,
}

/// A model planned by tract for the shapes of one input set.
#[derive(Debug)]
pub struct PreparedModel {
    label: String,
    plan: Arc<TypedRunnableModel>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    kind: PlanKind,
}

/// Latencies of repeated runs of one model, measured after one warm-up run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchResult {
    /// Model label.
    pub model: String,

    /// Number of timed runs.
    pub runs: usize,

    /// Median latency, serialized in seconds.
    #[serde(serialize_with = "serialize_seconds")]
    pub median: Duration,

    /// Fastest run, serialized in seconds.
    #[serde(serialize_with = "serialize_seconds")]
    pub min: Duration,

    /// Slowest run, serialized in seconds.
    #[serde(serialize_with = "serialize_seconds")]
    pub max: Duration,

    /// The form of the model that was timed.
    pub plan: PlanKind,
}

impl BenchResult {
    /// Returns `baseline.median / self.median`: above 1 when this model is faster.
    pub fn speedup_over(&self, baseline: &BenchResult) -> f64 {
        baseline.median.as_secs_f64() / self.median.as_secs_f64()
    }
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        write!(
            f,
            "{}: median {:.3} ms over {} runs (min {:.3} ms, max {:.3} ms)",
            self.model,
            ms(self.median),
            self.runs,
            ms(self.min),
            ms(self.max)
        )
    }
}

fn serialize_seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Types and plans `model` for the shapes of `inputs`.
///
/// The optimized model is used when tract can optimize it. Otherwise a warning
/// is logged and the decluttered model, or failing that the typed model, is planned.
pub fn prepare_model(model: &LoadedModel, inputs: &InputSet) -> Result<PreparedModel, RunError> {
    let label = model.label().to_string();
    let mut inference = model.inference_model().clone();

    let input_names = pin_input_facts(&mut inference, &label, inputs)?;
    let typed = call_tract(|| inference.into_typed()).map_err(|reason| RunError::Typing {
        model: label.clone(),
        inputs: describe_inputs(inputs),
        reason,
    })?;

    let (typed, kind) = optimize_or_fall_back(&label, typed);
    let plan = call_tract(|| typed.into_runnable()).map_err(|reason| RunError::Plan {
        model: label.clone(),
        reason,
    })?;

    let returned = plan.model().outputs.len();
    if returned != model.output_names().len() {
        return Err(RunError::OutputCount {
            model: label,
            declared: model.output_names().len(),
            returned,
        });
    }

    log::debug!(
        "planned model `{label}` ({kind:?}) for inputs {}",
        describe_inputs(inputs)
    );
    Ok(PreparedModel {
        label,
        plan,
        input_names,
        output_names: model.output_names().to_vec(),
        kind,
    })
}

/// Sets each input fact to the type and shape of its tensor, and returns the input names in model order.
fn pin_input_facts(
    model: &mut InferenceModel,
    label: &str,
    inputs: &InputSet,
) -> Result<Vec<String>, RunError> {
    let outlets = model
        .input_outlets()
        .map(<[OutletId]>::to_vec)
        .unwrap_or_default();

    let mut names = Vec::with_capacity(outlets.len());
    for (index, outlet) in outlets.iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let tensor = inputs.get(&name).ok_or_else(|| RunError::MissingInput {
            model: label.to_string(),
            input: name.clone(),
        })?;

        let fact = InferenceFact::dt_shape_from_tensor(tensor);
        call_tract(|| model.set_input_fact(index, fact)).map_err(|reason| RunError::Typing {
            model: label.to_string(),
            inputs: describe_inputs(inputs),
            reason,
        })?;
        names.push(name);
    }
    Ok(names)
}

fn optimize_or_fall_back(label: &str, typed: TypedModel) -> (TypedModel, PlanKind) {
    let optimize_error = match call_tract(|| typed.clone().into_optimized()) {
        Ok(optimized) => return (optimized, PlanKind::Optimized),
        Err(reason) => reason,
    };
    log::warn!("tract failed to optimize model `{label}` ({optimize_error}); running the decluttered model instead");

    match call_tract(|| typed.clone().into_decluttered()) {
        Ok(decluttered) => (decluttered, PlanKind::Decluttered),
        Err(reason) => {
            log::warn!("tract failed to declutter model `{label}` ({reason}); running the typed model as translated");
            (typed, PlanKind::Typed)
        }
    }
}

/// Formats input names and shapes, such as `x: f32 [1, 3, 8, 8]`, for messages.
fn describe_inputs(inputs: &InputSet) -> String {
    let parts: Vec<String> = inputs
        .inputs
        .iter()
        .map(|input| {
            format!(
                "{}: {} {:?}",
                input.name,
                super::datum_type_name(input.tensor.datum_type()),
                input.tensor.shape()
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

impl PreparedModel {
    /// Label of the model.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Returns the form of the model this plan runs.
    pub fn plan_kind(&self) -> PlanKind {
        self.kind
    }

    /// Runs the plan once on `inputs` and names the outputs.
    pub fn run(&self, inputs: &InputSet) -> Result<ModelOutputs, RunError> {
        let values = self.input_values(inputs)?;
        let outputs = self.run_values(values, inputs)?;

        let named = self
            .output_names
            .iter()
            .zip(outputs)
            .map(|(name, value)| NamedTensor {
                name: name.clone(),
                tensor: value.into_tensor(),
            })
            .collect();
        Ok(ModelOutputs {
            model: self.label.clone(),
            outputs: named,
        })
    }

    /// Runs the plan once to warm up, then `runs` times, and reports the median latency.
    pub fn bench(&self, inputs: &InputSet, runs: NonZeroUsize) -> Result<BenchResult, RunError> {
        let values = self.input_values(inputs)?;
        self.run_values(values.clone(), inputs)?;

        let mut latencies = Vec::with_capacity(runs.get());
        for _ in 0..runs.get() {
            let run_inputs = values.clone();
            let start = Instant::now();
            self.run_values(run_inputs, inputs)?;
            latencies.push(start.elapsed());
        }

        latencies.sort();
        Ok(BenchResult {
            model: self.label.clone(),
            runs: latencies.len(),
            median: median(&latencies),
            min: latencies.first().copied().unwrap_or_default(),
            max: latencies.last().copied().unwrap_or_default(),
            plan: self.kind,
        })
    }

    fn input_values(&self, inputs: &InputSet) -> Result<TVec<TValue>, RunError> {
        self.input_names
            .iter()
            .map(|name| {
                let tensor = inputs.get(name).ok_or_else(|| RunError::MissingInput {
                    model: self.label.clone(),
                    input: name.clone(),
                })?;
                Ok(tensor.clone().into_tvalue())
            })
            .collect()
    }

    fn run_values(
        &self,
        values: TVec<TValue>,
        inputs: &InputSet,
    ) -> Result<TVec<TValue>, RunError> {
        let outputs =
            call_tract(|| self.plan.run(values)).map_err(|reason| RunError::Execution {
                model: self.label.clone(),
                inputs: describe_inputs(inputs),
                reason,
            })?;

        if outputs.len() != self.output_names.len() {
            return Err(RunError::OutputCount {
                model: self.label.clone(),
                declared: self.output_names.len(),
                returned: outputs.len(),
            });
        }
        Ok(outputs)
    }
}

/// Median of sorted durations: the mean of the two middle ones for an even count.
fn median(sorted: &[Duration]) -> Duration {
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => Duration::ZERO,
        len if len % 2 == 1 => sorted[middle],
        _ => (sorted[middle - 1] + sorted[middle]) / 2,
    }
}

/// Plans `model` for `inputs` and runs it once.
pub fn run_model(model: &LoadedModel, inputs: &InputSet) -> Result<ModelOutputs, RunError> {
    prepare_model(model, inputs)?.run(inputs)
}

/// Plans `model` for `inputs`, runs it once to warm up, then times `runs` runs.
///
/// Planning and the warm-up run are not timed.
pub fn bench_model(
    model: &LoadedModel,
    inputs: &InputSet,
    runs: NonZeroUsize,
) -> Result<BenchResult, RunError> {
    prepare_model(model, inputs)?.bench(inputs, runs)
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::tensor_proto::DataType;

    use super::*;
    use crate::verify::inputs::{build_inputs, InputRequest};
    use crate::verify::load::load_model;
    use crate::verify::test_models::{self, fixed, param, values_f32, ModelBuilder};

    /// `y = x * 2 + 1` on `x: [n, 2]`, with a stored output shape that is wrong on purpose.
    fn affine_model() -> Vec<u8> {
        let mut builder = ModelBuilder::new();
        builder.input("x", DataType::Float, &[param("n"), fixed(2)]);
        builder.initializer("two", &[], &[2.0]);
        builder.initializer("one", &[], &[1.0]);
        builder.node("Mul", &["x", "two"], &["doubled"], vec![]);
        builder.node("Add", &["doubled", "one"], &["y"], vec![]);
        builder.output_with_shape("y", DataType::Float, &[5, 5]);
        builder.encode()
    }

    #[test]
    fn run_computes_named_outputs() {
        let model = load_model("affine", &affine_model(), None).unwrap();
        let x = test_models::float_tensor("x", &[3, 2], &[0.0, 1.0, -1.0, 0.5, 2.0, -3.0]);
        let given = crate::verify::NamedTensor {
            name: "x".into(),
            tensor: tract_onnx::tensor::load_tensor(
                &tract_onnx::data_resolver::MmapDataResolver,
                &x,
                None,
            )
            .unwrap(),
        };
        let inputs = build_inputs(
            &model,
            &InputRequest {
                tensors: vec![given],
                ..Default::default()
            },
        )
        .unwrap();

        let outputs = run_model(&model, &inputs).unwrap();

        assert_eq!(outputs.model, "affine");
        assert_eq!(outputs.outputs[0].name, "y");
        assert_eq!(outputs.outputs[0].tensor.shape(), &[3, 2]);
        assert_eq!(
            values_f32(&outputs.outputs[0].tensor),
            [1.0, 3.0, -1.0, 2.0, 5.0, -5.0]
        );
    }

    #[test]
    fn run_uses_optimized_plan() {
        let model = load_model(
            "chain",
            &test_models::conv_chain(&[("w1", 4), ("w2", 2)], 3),
            None,
        )
        .unwrap();
        let inputs = build_inputs(&model, &InputRequest::default()).unwrap();

        let prepared = prepare_model(&model, &inputs).unwrap();
        let outputs = prepared.run(&inputs).unwrap();

        assert_eq!(prepared.plan_kind(), PlanKind::Optimized);
        assert_eq!(outputs.outputs[0].tensor.shape(), &[1, 2, 8, 8]);
    }

    #[test]
    fn run_reports_missing_input() {
        let model = load_model("affine", &affine_model(), None).unwrap();
        let empty = InputSet {
            inputs: Vec::new(),
            chosen_defaults: Vec::new(),
            seed: 0,
        };

        let err = run_model(&model, &empty).unwrap_err();

        assert!(
            matches!(err, RunError::MissingInput { ref input, .. } if input == "x"),
            "{err}"
        );
    }

    #[test]
    fn run_reports_unsupported_operator() {
        let mut builder = ModelBuilder::new();
        builder.input("x", DataType::Float, &[fixed(2)]);
        builder.node("NoSuchOp", &["x"], &["y"], vec![]);
        builder.output("y");
        let model = load_model("odd", &builder.encode(), None).unwrap();
        let inputs = build_inputs(&model, &InputRequest::default()).unwrap();

        let err = run_model(&model, &inputs).unwrap_err();

        let text = err.to_string();
        assert!(matches!(err, RunError::Typing { .. }), "{text}");
        assert!(text.contains("`odd`"), "{text}");
        assert!(text.contains("NoSuchOp"), "{text}");
        assert!(text.contains("x: f32 [2]"), "{text}");
    }

    #[test]
    fn bench_reports_ordered_latencies() {
        let model = load_model("affine", &affine_model(), None).unwrap();
        let inputs = build_inputs(&model, &InputRequest::default()).unwrap();
        let runs = NonZeroUsize::new(5).unwrap();

        let result = bench_model(&model, &inputs, runs).unwrap();

        assert_eq!(result.runs, 5);
        assert!(result.min <= result.median, "{result}");
        assert!(result.median <= result.max, "{result}");
        assert!(result.max > Duration::ZERO, "{result}");
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        let ms = Duration::from_millis;

        assert_eq!(median(&[ms(1), ms(2), ms(9)]), ms(2));
        assert_eq!(median(&[ms(1), ms(3), ms(5), ms(9)]), ms(4));
        assert_eq!(median(&[]), Duration::ZERO);
    }

    #[test]
    fn speedup_divides_medians() {
        let result = |median_ms| BenchResult {
            model: "m".into(),
            runs: 1,
            median: Duration::from_millis(median_ms),
            min: Duration::ZERO,
            max: Duration::ZERO,
            plan: PlanKind::Optimized,
        };

        assert_eq!(result(5).speedup_over(&result(10)), 2.0);
    }
}
