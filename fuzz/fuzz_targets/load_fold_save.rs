//! Fuzz target: decode arbitrary bytes as an ONNX model, fold it with both
//! policies, and encode the result. Any panic, abort, timeout or excessive
//! allocation is a bug: bad input must end in an `Err`.
//!
//! The model's directory is a temporary directory holding a copy of the
//! `external_data` fixture's `weights.bin`, so mutated external data
//! references (offsets, lengths, locations) are read for real.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use onnx_fold::fold::FoldOptions;
use onnx_fold::model::{encode, load_bytes};
use onnx_fold::Policy;

const WEIGHTS: &[u8] = include_bytes!("../../fixtures/external_data/weights.bin");

/// Returns the path that fuzzed models are loaded as. Its directory is made
/// on the first call and never removed, so each fuzzing process leaves one
/// small `onnx-fold-fuzz-*` directory in the system's temporary directory.
fn model_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("onnx-fold-fuzz-")
            .tempdir()
            .expect("cannot create the fuzz model directory")
            .keep();
        std::fs::write(dir.join("weights.bin"), WEIGHTS).expect("cannot write weights.bin");
        dir.join("model.onnx")
    })
}

fuzz_target!(|data: &[u8]| {
    let path = model_path();
    let Ok(model) = load_bytes(Bytes::copy_from_slice(data), path) else {
        return;
    };
    let external = model.external_data();

    for policy in [Policy::Cheaper, Policy::Always] {
        let options = FoldOptions {
            policy,
            check_folds: false,
            fault: None,
        };
        let mut proto = model.proto.clone();
        let Ok(report) = onnx_fold::fold_model(&mut proto, &external, &options) else {
            continue;
        };
        if !report.changed() {
            continue;
        }

        // A folded model must load again: decodable, with an acyclic graph.
        let encoded = encode(&proto);
        if let Err(error) = load_bytes(Bytes::from(encoded), path) {
            panic!("the folded model does not load again: {error}");
        }
    }
});
