//! onnx-fold folds chains of Conv nodes with 1-wide kernels and nothing
//! nonlinear between them into one Conv, and verifies with tract that the
//! model's outputs did not change.
//!
//! The pipeline is load -> plan -> compose -> check -> apply -> verify -> save:
//!
//! - [`model`] reads a model (sorting unsorted graphs, rejecting cycles) and
//!   writes it atomically;
//! - [`plan`] finds chains and the guard that stops each other link;
//! - [`cost`] picks the segmentation of a chain with the fewest MACs;
//! - [`compose`] is the weight math, `W = W2 · W1`, `b = W2 · b1 + b2`;
//! - [`mod@fold`] runs the pass and [`apply`] changes the model in one place;
//! - [`verify`] runs models in tract and compares their outputs.
//!
//! # Using onnx-fold in a regression test
//!
//! With onnx-fold as a dev-dependency, a project can check in its own tests
//! that folding its model keeps the outputs, on inputs of its choice:
//!
//! ```no_run
//! use onnx_fold::verify::{InputRequest, VerifyOptions};
//! use onnx_fold::{FoldOptions, Policy};
//!
//! let original = onnx_fold::load("model.onnx".as_ref())?;
//! let mut folded = onnx_fold::load("model.onnx".as_ref())?;
//! let options = FoldOptions { policy: Policy::Cheaper, ..FoldOptions::default() };
//!
//! let report = onnx_fold::fold(&mut folded, &options)?;
//! let shapes = vec!["images=1,3,640,640".parse()?];
//! let verify = VerifyOptions { inputs: InputRequest { shapes, ..Default::default() }, ..Default::default() };
//! let verification = onnx_fold::compare(&original, &folded, &verify)?;
//!
//! assert!(report.links_folded() > 0);
//! assert!(verification.passed(), "{}", verification.comparison);
//! folded.save("model.folded.onnx".as_ref())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod apply;
pub mod check;
pub mod compose;
pub mod conv;
pub mod cost;
pub mod error;
pub mod external;
pub mod fold;
pub mod graph;
pub mod invariants;
pub mod model;
pub mod onnx;
pub mod plan;
pub mod report;
pub mod tensor;
pub mod verify;

use std::path::Path;

pub use cost::Policy;
pub use error::{Error, Result};
pub use fold::{fold_model, FoldOptions};
pub use model::{load, Model};
pub use report::FoldReport;

/// Folds every chain of a loaded model in place and returns what was done.
///
/// An error leaves the model unchanged.
pub fn fold(model: &mut Model, options: &FoldOptions) -> Result<FoldReport> {
    let external = model.external_data();
    let report = fold_model(&mut model.proto, &external, options)?;
    model.changed |= report.changed();
    Ok(report)
}

/// Writes a model atomically (see [`Model::save`]).
pub fn save(model: &Model, out: &Path) -> Result<()> {
    model.save(out)
}

/// Runs two models in tract on the same inputs, built from `expected`'s
/// inputs and `options`, and compares `actual`'s outputs with `expected`'s.
pub fn compare(
    expected: &Model,
    actual: &Model,
    options: &verify::VerifyOptions,
) -> std::result::Result<verify::Verification, verify::VerifyError> {
    let (expected_bytes, actual_bytes) = (expected.to_bytes(), actual.to_bytes());
    let (expected_dir, actual_dir) = (expected.dir(), actual.dir());
    let expected_label = expected.path.display().to_string();
    let actual_label = format!("{} (actual)", actual.path.display());
    let expected_source = verify::ModelSource {
        label: &expected_label,
        bytes: &expected_bytes,
        model_dir: Some(&expected_dir),
    };
    let actual_source = verify::ModelSource {
        label: &actual_label,
        bytes: &actual_bytes,
        model_dir: Some(&actual_dir),
    };
    verify::verify_models(&expected_source, &actual_source, options)
}
