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
//! - [`fold`] runs the pass and [`apply`] changes the model in one place;
//! - [`verify`] runs models in tract and compares their outputs.

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

pub use cost::Policy;
pub use error::{Error, Result};
pub use fold::{fold_model, FoldOptions};
pub use model::{load, Model};
pub use report::FoldReport;
