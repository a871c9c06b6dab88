//! Folds a model with the library API, compares it with the original in
//! tract, and writes it when the outputs match.
//!
//! cargo run --release --example fold_and_compare -- fixtures/seed/model.onnx /tmp/seed_folded.onnx

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use onnx_fold::verify::VerifyOptions;
use onnx_fold::FoldOptions;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: fold_and_compare IN.onnx OUT.onnx");
        return ExitCode::from(2);
    };
    match run(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &Path, output: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let original = onnx_fold::load(input)?;
    let mut folded = onnx_fold::load(input)?;

    let report = onnx_fold::fold(&mut folded, &FoldOptions::default())?;
    println!("{} links folded, Conv nodes {} -> {}", report.links_folded(), report.conv_count_before, report.conv_count_after);

    let verification = onnx_fold::compare(&original, &folded, &VerifyOptions::default())?;
    println!("{}", verification.comparison);
    if !verification.passed() {
        return Err("the folded model's outputs differ; it was not written".into());
    }

    onnx_fold::save(&folded, output)?;
    println!("wrote {}", output.display());
    Ok(())
}
