//! The human-readable summary printed after a run.

use std::path::Path;

use onnx_fold::report::{ChainReport, Decision};
use onnx_fold::verify::BenchResult;
use onnx_fold::FoldReport;

use crate::commands::VerificationStatus;

/// Prints what was folded, what was left alone and why, and the verification.
pub fn print_fold(input: &Path, report: &FoldReport, status: &VerificationStatus, bench: Option<&[BenchResult; 2]>) {
    println!("onnx-fold {} (policy {})", input.display(), format!("{:?}", report.policy).to_lowercase());
    for chain in &report.chains {
        print_chain(chain);
    }
    for link in &report.blocked_links {
        println!("  link {} -> {} ({}) left alone: {}", link.from, link.to, link.graph, link.reason);
    }
    for skipped in &report.skipped {
        println!("  skipped: {skipped}");
    }

    let (macs_before, macs_after) = report.chain_macs();
    println!(
        "chains found: {}; links folded: {}; links left alone: {} in chains, {} blocked",
        report.chains.len(),
        report.links_folded(),
        report.links_kept(),
        report.blocked_links.len()
    );
    println!(
        "Conv nodes: {} -> {}; MACs per output position in chains: {macs_before} -> {macs_after}",
        report.conv_count_before, report.conv_count_after
    );
    print_verification(status);
    if let Some([original, folded]) = bench {
        println!("benchmark: {original}");
        println!("benchmark: {folded}");
        println!("benchmark: folded is {:.2}x the speed of the original", folded.speedup_over(original));
    }
}

fn print_chain(chain: &ChainReport) {
    let channels: Vec<String> = chain.channels.iter().map(ToString::to_string).collect();
    let decision = match chain.decision {
        Decision::Folded => "folded",
        Decision::PartlyFolded => "partly folded",
        Decision::LeftAlone => "left alone",
    };
    println!(
        "  chain {} ({}, {}) in {}: {decision}, {}",
        chain.nodes.join(" -> "),
        channels.join("->"),
        format!("{:?}", chain.elem_type).to_lowercase(),
        chain.graph,
        chain.reason
    );
    for segment in &chain.segments {
        if let Some(fused) = &segment.fused_node {
            println!("    {} -> {fused}", segment.nodes.join(" + "));
        }
        if let Some(reason) = &segment.not_folded {
            println!("    {} not fused: {reason}", segment.nodes.join(" + "));
        }
        if let Some(check) = segment.check.as_ref().filter(|check| !check.passed) {
            println!("    per-fold check of {} failed: {}", segment.nodes.join(" + "), check.detail);
        }
    }
}

/// Prints the verification result, one line per output.
pub fn print_verification(status: &VerificationStatus) {
    match status {
        VerificationStatus::Passed(verification) | VerificationStatus::Failed(verification) => {
            let verdict = if verification.passed() { "passed" } else { "FAILED" };
            let inputs: Vec<String> = verification
                .inputs
                .inputs
                .iter()
                .map(|input| format!("{} {:?} ({:?})", input.name, input.tensor.shape(), input.origin).to_lowercase())
                .collect();
            println!("verification with tract {verdict}: inputs {}", inputs.join(", "));
            if !verification.inputs.chosen_defaults.is_empty() {
                let defaults: Vec<String> = verification.inputs.chosen_defaults.iter().map(ToString::to_string).collect();
                println!("  symbolic dims set to defaults: {}", defaults.join(", "));
            }
            for line in verification.comparison.to_string().lines() {
                println!("  {line}");
            }
            if let Some(reference) = &verification.reference {
                println!("  original model against the expected outputs:");
                for line in reference.to_string().lines() {
                    println!("  {line}");
                }
            }
        }
        VerificationStatus::NotVerified { reason, .. } => println!("verification: NOT VERIFIED, tract could not run the model: {reason}"),
        VerificationStatus::Skipped { reason } => println!("verification: skipped, {reason}"),
    }
}
