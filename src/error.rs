//! The error type of onnx-fold: every variant names the file, node or tensor
//! it concerns, so that a message read in a pipeline log can be acted on.

use std::path::PathBuf;

/// Errors raised while loading, folding or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a valid ONNX model.
    #[error("{path} is not a valid ONNX model: {reason}")]
    InvalidModel { path: PathBuf, reason: String },

    /// A tensor's stored data does not agree with its type and dims.
    #[error("tensor '{tensor}' is invalid: {reason}")]
    InvalidTensor { tensor: String, reason: String },

    /// A node that onnx-fold has to read is malformed.
    #[error("node '{node}' ({op_type}) is invalid: {reason}")]
    InvalidNode {
        node: String,
        op_type: String,
        reason: String,
    },

    /// An external data reference is unsafe or cannot be read.
    #[error("external data of tensor '{tensor}': {reason}")]
    ExternalData { tensor: String, reason: String },

    /// The folded graph broke an invariant: a bug in onnx-fold, never written out.
    #[error("internal error, the folded model was not written: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with the action and the path it failed on.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
