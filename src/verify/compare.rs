//! Comparison of two named output sets within a tolerance.
//!
//! Element `i` of a float output passes when
//! `|actual_i - expected_i| <= atol + rtol * max_j |expected_j|`: the relative
//! part scales with the magnitude of the whole expected output, not of each
//! element, because a fold reorders sums and so moves every element by an
//! error proportional to the output's scale. Integer and bool outputs must
//! match exactly.

use std::fmt;

use serde::Serialize;
use tract_onnx::prelude::tract_ndarray::Dimension;
use tract_onnx::prelude::*;

use super::{datum_type_name, ModelOutputs};

/// Allowed difference between two float outputs: `atol + rtol * max |expected|`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Relative part, a fraction of the largest magnitude in the expected output.
    pub rtol: f64,

    /// Absolute part, which only matters for outputs close to all zeros.
    pub atol: f64,
}

impl Tolerance {
    /// float16: rtol is about 10 machine epsilons (2^-10).
    pub const F16: Tolerance = Tolerance {
        rtol: 1e-2,
        atol: 1e-3,
    };

    /// float32: rtol is about 840 machine epsilons (2^-23), room for the long sums that a fold reorders.
    pub const F32: Tolerance = Tolerance {
        rtol: 1e-4,
        atol: 1e-6,
    };

    /// float64: rtol is about 4.5 million machine epsilons (2^-52), still far below float32 precision.
    pub const F64: Tolerance = Tolerance {
        rtol: 1e-9,
        atol: 1e-12,
    };

    /// Returns the default tolerance for a float type, or `None` for types compared exactly.
    ///
    /// tract 0.23 has no bfloat16 type, so bfloat16 outputs never reach this comparison.
    pub fn default_for(datum_type: DatumType) -> Option<Tolerance> {
        match datum_type {
            DatumType::F16 => Some(Tolerance::F16),
            DatumType::F32 => Some(Tolerance::F32),
            DatumType::F64 => Some(Tolerance::F64),
            _ => None,
        }
    }

    /// Returns the largest error allowed for an output whose largest expected magnitude is `magnitude`.
    pub fn threshold(&self, magnitude: f64) -> f64 {
        self.atol + self.rtol * magnitude
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rtol {:e}, atol {:e}", self.rtol, self.atol)
    }
}

/// Outcome of comparing one output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStatus {
    /// Same type and shape, every element within tolerance.
    Passed,

    /// Same type and shape, some elements out of tolerance.
    OutOfTolerance,

    /// The shapes differ.
    ShapeMismatch,

    /// The element types differ.
    TypeMismatch,

    /// The expected side has the output, the actual side does not.
    Missing,

    /// The actual side has an output the expected side does not.
    Extra,

    /// The element type cannot be compared here (strings, for one).
    Unsupported,
}

/// The element with the largest absolute error.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorstElement {
    /// Multi-dimensional index.
    pub index: Vec<usize>,

    /// Value on the expected side, converted to f64.
    pub expected: f64,

    /// Value on the actual side, converted to f64.
    pub actual: f64,
}

/// Result of comparing one output.
///
/// Errors are `f64::INFINITY` where a NaN or infinity differs from the other
/// side, and serde_json writes infinities as `null`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputComparison {
    /// Output name.
    pub name: String,

    /// Element type of the expected side, or of the actual side for an extra output.
    pub element_type: String,

    /// Element type of the actual side, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_element_type: Option<String>,

    /// Shape on the expected side, `None` for an extra output.
    pub expected_shape: Option<Vec<usize>>,

    /// Shape on the actual side, `None` for a missing output.
    pub actual_shape: Option<Vec<usize>>,

    /// Whether both sides have the same shape.
    pub shape_match: bool,

    /// Tolerance applied, `None` for an exact comparison.
    pub tolerance: Option<Tolerance>,

    /// Largest `|actual - expected|`.
    pub max_abs_error: f64,

    /// `max_abs_error` divided by the largest expected magnitude.
    pub max_rel_error: f64,

    /// The element with the largest error, `None` when no element was compared.
    pub worst: Option<WorstElement>,

    /// Number of elements out of tolerance.
    pub mismatched: usize,

    /// Number of elements compared.
    pub element_count: usize,

    /// Outcome.
    pub status: OutputStatus,

    /// Whether the output passed.
    pub passed: bool,
}

/// Result of comparing two output sets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComparisonReport {
    /// Label of the expected side, such as `original`.
    pub expected_model: String,

    /// Label of the actual side, such as `folded`.
    pub actual_model: String,

    /// One entry per output of either side: the expected outputs in order, then extra ones.
    pub outputs: Vec<OutputComparison>,

    /// Whether every output passed.
    pub passed: bool,
}

impl ComparisonReport {
    /// Returns the outputs that failed.
    pub fn failures(&self) -> impl Iterator<Item = &OutputComparison> {
        self.outputs.iter().filter(|output| !output.passed)
    }
}

impl fmt::Display for ComparisonReport {
    /// Writes one line per output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, output) in self.outputs.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{output}")?;
        }
        Ok(())
    }
}

impl fmt::Display for OutputComparison {
    /// Writes a one-line summary such as
    /// `PASS y f32 [1, 2, 8, 8]: max abs error 1.2e-7, max rel error 3.1e-8 at [0, 1, 3, 2] (expected 0.51, actual 0.5100001); 0 of 128 out of tolerance (rtol 1e-4, atol 1e-6)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{verdict} {} {}", self.name, self.element_type)?;

        match self.status {
            OutputStatus::Missing => write!(f, ": missing from the actual outputs"),
            OutputStatus::Extra => write!(f, ": not among the expected outputs"),
            OutputStatus::Unsupported => write!(f, ": outputs of this type are not compared"),
            OutputStatus::TypeMismatch => {
                write!(
                    f,
                    ": actual output is {}",
                    self.actual_element_type
                        .as_deref()
                        .unwrap_or("another type")
                )
            }
            OutputStatus::ShapeMismatch => {
                write!(
                    f,
                    ": expected shape {:?}, actual shape {:?}",
                    self.expected_shape.as_deref().unwrap_or(&[]),
                    self.actual_shape.as_deref().unwrap_or(&[])
                )
            }
            OutputStatus::Passed | OutputStatus::OutOfTolerance => self.fmt_errors(f),
        }
    }
}

impl OutputComparison {
    fn fmt_errors(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            " {:?}: max abs error {:.3e}, max rel error {:.3e}",
            self.expected_shape.as_deref().unwrap_or(&[]),
            self.max_abs_error,
            self.max_rel_error
        )?;
        if let Some(worst) = &self.worst {
            write!(
                f,
                " at {:?} (expected {}, actual {})",
                worst.index, worst.expected, worst.actual
            )?;
        }
        write!(
            f,
            "; {} of {} out of tolerance",
            self.mismatched, self.element_count
        )?;

        match &self.tolerance {
            Some(tolerance) => write!(f, " ({tolerance})"),
            None => write!(f, " (exact)"),
        }
    }

    fn without_values(name: &str, element_type: String, status: OutputStatus) -> OutputComparison {
        OutputComparison {
            name: name.to_string(),
            element_type,
            actual_element_type: None,
            expected_shape: None,
            actual_shape: None,
            shape_match: false,
            tolerance: None,
            max_abs_error: 0.0,
            max_rel_error: 0.0,
            worst: None,
            mismatched: 0,
            element_count: 0,
            status,
            passed: false,
        }
    }
}

/// Compares `actual` against `expected`, output by output, matched by name.
///
/// `tolerance` replaces the per-type default ([`Tolerance::default_for`]) for
/// every float output. Integer and bool outputs are always compared exactly.
pub fn compare_outputs(
    expected: &ModelOutputs,
    actual: &ModelOutputs,
    tolerance: Option<Tolerance>,
) -> ComparisonReport {
    let mut outputs = Vec::with_capacity(expected.outputs.len());

    for expected_output in &expected.outputs {
        let comparison = match actual.get(&expected_output.name) {
            Some(actual_tensor) => compare_tensors(
                &expected_output.name,
                &expected_output.tensor,
                actual_tensor,
                tolerance,
            ),
            None => {
                let element_type = datum_type_name(expected_output.tensor.datum_type());
                let mut missing = OutputComparison::without_values(
                    &expected_output.name,
                    element_type,
                    OutputStatus::Missing,
                );
                missing.expected_shape = Some(expected_output.tensor.shape().to_vec());
                missing
            }
        };
        outputs.push(comparison);
    }

    for extra in actual
        .outputs
        .iter()
        .filter(|output| expected.get(&output.name).is_none())
    {
        let mut comparison = OutputComparison::without_values(
            &extra.name,
            datum_type_name(extra.tensor.datum_type()),
            OutputStatus::Extra,
        );
        comparison.actual_shape = Some(extra.tensor.shape().to_vec());
        outputs.push(comparison);
    }

    let passed = outputs.iter().all(|output| output.passed);
    ComparisonReport {
        expected_model: expected.model.clone(),
        actual_model: actual.model.clone(),
        outputs,
        passed,
    }
}

/// Compares two tensors of one output.
pub fn compare_tensors(
    name: &str,
    expected: &Tensor,
    actual: &Tensor,
    tolerance: Option<Tolerance>,
) -> OutputComparison {
    let expected_type = expected.datum_type();
    let mut comparison = OutputComparison::without_values(
        name,
        datum_type_name(expected_type),
        OutputStatus::Passed,
    );
    comparison.expected_shape = Some(expected.shape().to_vec());
    comparison.actual_shape = Some(actual.shape().to_vec());
    comparison.shape_match = expected.shape() == actual.shape();

    if actual.datum_type() != expected_type {
        comparison.actual_element_type = Some(datum_type_name(actual.datum_type()));
        comparison.status = OutputStatus::TypeMismatch;
        return comparison;
    }
    if !comparison.shape_match {
        comparison.status = OutputStatus::ShapeMismatch;
        return comparison;
    }

    comparison.tolerance = if expected_type.is_float() {
        tolerance.or(Tolerance::default_for(expected_type))
    } else {
        None
    };
    let errors = match element_errors(expected, actual, comparison.tolerance) {
        Some(errors) => errors,
        None => {
            comparison.status = OutputStatus::Unsupported;
            return comparison;
        }
    };

    comparison.max_abs_error = errors.max_abs_error;
    comparison.max_rel_error = relative(errors.max_abs_error, errors.magnitude);
    comparison.worst = errors.worst;
    comparison.mismatched = errors.mismatched;
    comparison.element_count = expected.len();
    comparison.passed = errors.mismatched == 0;
    comparison.status = if comparison.passed {
        OutputStatus::Passed
    } else {
        OutputStatus::OutOfTolerance
    };
    comparison
}

fn relative(abs_error: f64, magnitude: f64) -> f64 {
    if abs_error == 0.0 {
        0.0
    } else if magnitude > 0.0 {
        abs_error / magnitude
    } else {
        f64::INFINITY
    }
}

/// Element-wise errors of one output.
struct ElementErrors {
    magnitude: f64,
    max_abs_error: f64,
    worst: Option<WorstElement>,
    mismatched: usize,
}

/// Computes errors with `tolerance`, or exactly when it is `None`.
///
/// Returns `None` for element types that do not convert to numbers.
fn element_errors(
    expected: &Tensor,
    actual: &Tensor,
    tolerance: Option<Tolerance>,
) -> Option<ElementErrors> {
    if !(expected.datum_type().is_number() || expected.datum_type() == DatumType::Bool) {
        return None;
    }
    // Integers are compared as i64, exactly, so that i64 values above 2^53 do not round.
    let compare_type = if expected.datum_type().is_float() {
        DatumType::F64
    } else {
        DatumType::I64
    };
    let expected = expected.cast_to_dt(compare_type).ok()?;
    let actual = actual.cast_to_dt(compare_type).ok()?;

    if compare_type == DatumType::F64 {
        let expected = expected.to_plain_array_view::<f64>().ok()?;
        let actual = actual.to_plain_array_view::<f64>().ok()?;
        let magnitude = expected
            .iter()
            .filter(|value| value.is_finite())
            .fold(0.0f64, |max, value| max.max(value.abs()));
        let threshold = tolerance.map_or(0.0, |tolerance| tolerance.threshold(magnitude));
        let pairs = expected
            .indexed_iter()
            .zip(actual.iter())
            .map(|((index, &e), &a)| (index.slice().to_vec(), e, a, float_error(e, a)));
        Some(scan(pairs, magnitude, |error| error > threshold))
    } else {
        let expected = expected.to_plain_array_view::<i64>().ok()?;
        let actual = actual.to_plain_array_view::<i64>().ok()?;
        let magnitude = expected
            .iter()
            .fold(0.0f64, |max, value| max.max(value.unsigned_abs() as f64));
        let pairs = expected
            .indexed_iter()
            .zip(actual.iter())
            .map(|((index, &e), &a)| {
                (
                    index.slice().to_vec(),
                    e as f64,
                    a as f64,
                    e.abs_diff(a) as f64,
                )
            });
        Some(scan(pairs, magnitude, |error| error > 0.0))
    }
}

/// `|a - e|`, zero for two NaNs or two equal infinities, infinite when only one side is NaN or infinite.
fn float_error(expected: f64, actual: f64) -> f64 {
    if expected == actual || (expected.is_nan() && actual.is_nan()) {
        return 0.0;
    }

    let error = (actual - expected).abs();
    if error.is_nan() {
        f64::INFINITY
    } else {
        error
    }
}

/// Finds the worst element (the first one on ties) and counts those `out_of_tolerance` accepts.
fn scan(
    pairs: impl Iterator<Item = (Vec<usize>, f64, f64, f64)>,
    magnitude: f64,
    out_of_tolerance: impl Fn(f64) -> bool,
) -> ElementErrors {
    let mut errors = ElementErrors {
        magnitude,
        max_abs_error: 0.0,
        worst: None,
        mismatched: 0,
    };

    for (index, expected, actual, error) in pairs {
        if out_of_tolerance(error) {
            errors.mismatched += 1;
        }
        if errors.worst.is_none() || error > errors.max_abs_error {
            errors.max_abs_error = error;
            errors.worst = Some(WorstElement {
                index,
                expected,
                actual,
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::NamedTensor;

    fn outputs(model: &str, tensors: Vec<(&str, Tensor)>) -> ModelOutputs {
        let outputs = tensors
            .into_iter()
            .map(|(name, tensor)| NamedTensor {
                name: name.to_string(),
                tensor,
            })
            .collect();
        ModelOutputs {
            model: model.to_string(),
            outputs,
        }
    }

    fn ramp_tensor(shape: &[usize]) -> Tensor {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|i| (i as f32 - 10.0) / 4.0).collect();
        Tensor::from_shape(shape, &values).unwrap()
    }

    fn perturb(tensor: &Tensor, flat_index: usize, delta: f32) -> Tensor {
        let mut perturbed = tensor.clone();
        let mut view = perturbed.to_plain_array_view_mut::<f32>().unwrap();
        if let Some(value) = view.iter_mut().nth(flat_index) {
            *value += delta;
        }
        perturbed
    }

    #[test]
    fn identical_outputs_pass() {
        let expected = outputs("original", vec![("y", ramp_tensor(&[2, 3, 4]))]);

        let report = compare_outputs(&expected, &expected.clone(), None);

        let y = &report.outputs[0];
        assert!(report.passed);
        assert_eq!(y.status, OutputStatus::Passed);
        assert_eq!(y.max_abs_error, 0.0);
        assert_eq!(y.element_count, 24);
        assert_eq!(y.tolerance, Some(Tolerance::F32));
    }

    #[test]
    fn perturbed_element_is_located() {
        let base = ramp_tensor(&[2, 3, 4]);
        let mut actual = perturb(&base, 17, 0.5);
        actual = perturb(&actual, 3, 0.01);
        let expected = outputs("original", vec![("y", base.clone())]);

        let report = compare_outputs(&expected, &outputs("folded", vec![("y", actual)]), None);

        let y = &report.outputs[0];
        assert!(!report.passed);
        assert_eq!(y.status, OutputStatus::OutOfTolerance);
        assert_eq!(y.mismatched, 2);
        let worst = y.worst.as_ref().unwrap();
        assert_eq!(worst.index, [1, 1, 1], "flat index 17 of shape [2, 3, 4]");
        assert_eq!(worst.expected, 1.75);
        assert_eq!(worst.actual, 2.25);
        assert!((y.max_abs_error - 0.5).abs() < 1e-6, "{y}");
        // The largest expected magnitude is |23 - 10| / 4 = 3.25.
        assert!((y.max_rel_error - 0.5 / 3.25).abs() < 1e-6, "{y}");
    }

    #[test]
    fn tolerance_scales_with_output_magnitude() {
        // An error of 5e-4 on a small element passes because the output's largest magnitude is 10.
        let expected = tensor1(&[10.0f32, 0.001]);
        let actual = tensor1(&[10.0f32, 0.0015]);

        let loose = compare_tensors("y", &expected, &actual, None);
        let strict = compare_tensors(
            "y",
            &expected,
            &actual,
            Some(Tolerance {
                rtol: 1e-5,
                atol: 0.0,
            }),
        );

        assert!(loose.passed, "{loose}");
        assert!(!strict.passed, "{strict}");
        assert_eq!(strict.mismatched, 1);
    }

    #[test]
    fn integer_outputs_compare_exactly() {
        let expected = tensor1(&[1i64, 2, 3, i64::MAX]);
        let actual = tensor1(&[1i64, 2, 4, i64::MAX - 1]);

        let comparison = compare_tensors(
            "ids",
            &expected,
            &actual,
            Some(Tolerance {
                rtol: 1.0,
                atol: 10.0,
            }),
        );

        assert_eq!(comparison.tolerance, None);
        assert_eq!(comparison.mismatched, 2);
        assert_eq!(comparison.worst.as_ref().unwrap().index, [2]);
        assert!(!comparison.passed);
    }

    #[test]
    fn bool_outputs_compare_exactly() {
        let comparison = compare_tensors(
            "mask",
            &tensor1(&[true, false]),
            &tensor1(&[true, true]),
            None,
        );

        assert_eq!(comparison.mismatched, 1);
        assert_eq!(comparison.worst.as_ref().unwrap().index, [1]);
    }

    #[test]
    fn nan_matches_only_nan() {
        let expected = tensor1(&[f32::NAN, 1.0, f32::INFINITY]);
        let same = tensor1(&[f32::NAN, 1.0, f32::INFINITY]);
        let different = tensor1(&[0.0f32, 1.0, f32::INFINITY]);

        let pass = compare_tensors("y", &expected, &same, None);
        let fail = compare_tensors("y", &expected, &different, None);

        assert!(pass.passed, "{pass}");
        assert!(!fail.passed, "{fail}");
        assert_eq!(fail.max_abs_error, f64::INFINITY);
        assert_eq!(fail.worst.as_ref().unwrap().index, [0]);
    }

    #[test]
    fn f16_uses_looser_default() {
        let expected = tensor1(&[f16::from_f32(1.0), f16::from_f32(-1.0)]);
        let actual = tensor1(&[f16::from_f32(1.005), f16::from_f32(-1.0)]);

        let comparison = compare_tensors("y", &expected, &actual, None);

        assert_eq!(comparison.tolerance, Some(Tolerance::F16));
        assert!(comparison.passed, "{comparison}");
    }

    #[test]
    fn shape_and_type_mismatches_fail() {
        let shape = compare_tensors("y", &ramp_tensor(&[2, 3]), &ramp_tensor(&[3, 2]), None);
        let datum = compare_tensors("y", &tensor1(&[1.0f32]), &tensor1(&[1.0f64]), None);

        assert_eq!(shape.status, OutputStatus::ShapeMismatch);
        assert!(!shape.passed);
        assert!(!shape.shape_match);
        assert!(
            shape
                .to_string()
                .contains("expected shape [2, 3], actual shape [3, 2]"),
            "{shape}"
        );
        assert_eq!(datum.status, OutputStatus::TypeMismatch);
        assert!(
            datum.to_string().contains("f32: actual output is f64"),
            "{datum}"
        );
    }

    #[test]
    fn missing_and_extra_outputs_fail() {
        let expected = outputs(
            "original",
            vec![("a", tensor1(&[1.0f32])), ("b", tensor1(&[2.0f32]))],
        );
        let actual = outputs(
            "folded",
            vec![("a", tensor1(&[1.0f32])), ("c", tensor1(&[2.0f32]))],
        );

        let report = compare_outputs(&expected, &actual, None);

        let statuses: Vec<(&str, OutputStatus)> = report
            .outputs
            .iter()
            .map(|o| (o.name.as_str(), o.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("a", OutputStatus::Passed),
                ("b", OutputStatus::Missing),
                ("c", OutputStatus::Extra)
            ]
        );
        assert!(!report.passed);
        assert_eq!(report.failures().count(), 2);
    }

    #[test]
    fn display_is_one_line_per_output() {
        let expected = outputs("original", vec![("y", tensor1(&[1.0f32, 2.0]))]);
        let actual = outputs("folded", vec![("y", tensor1(&[1.0f32, 2.5]))]);

        let report = compare_outputs(&expected, &actual, None);

        assert_eq!(
            report.to_string(),
            "FAIL y f32 [2]: max abs error 5.000e-1, max rel error 2.500e-1 at [1] (expected 2, actual 2.5); 1 of 2 out of tolerance (rtol 1e-4, atol 1e-6)"
        );
    }

    #[test]
    fn report_serializes_to_json() {
        let expected = outputs("original", vec![("y", tensor1(&[1.0f32, f32::NAN]))]);
        let actual = outputs("folded", vec![("y", tensor1(&[1.0f32, 0.0]))]);

        let json = serde_json::to_value(compare_outputs(&expected, &actual, None)).unwrap();

        assert_eq!(json["passed"], false);
        assert_eq!(json["outputs"][0]["status"], "out_of_tolerance");
        assert_eq!(json["outputs"][0]["worst"]["index"], serde_json::json!([1]));
        assert_eq!(
            json["outputs"][0]["max_abs_error"],
            serde_json::Value::Null,
            "infinity is written as null"
        );
        assert_eq!(json["outputs"][0]["tolerance"]["rtol"], 1e-4);
    }
}
