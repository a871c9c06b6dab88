//! The record of a fold's decisions and their reasons, as printed in the
//! summary and written as JSON by `--report`. docs/report.md describes the
//! JSON schema. Bump `REPORT_VERSION` when a field changes meaning or goes away.

use serde::Serialize;

use crate::cost::Policy;
use crate::plan::BlockedLink;
use crate::tensor::FloatType;

/// Version of the JSON report schema.
pub const REPORT_VERSION: u32 = 1;

/// The outcome of folding one model.
#[derive(Clone, Debug, Serialize)]
pub struct FoldReport {
    pub policy: Policy,
    pub chains: Vec<ChainReport>,
    /// Direct Conv -> Conv links that are in no chain, with the guard that stopped them.
    pub blocked_links: Vec<BlockedLink>,
    pub conv_count_before: usize,
    pub conv_count_after: usize,
    /// Parts of the model that were skipped because they are malformed but touch no chain.
    pub skipped: Vec<String>,
}

impl FoldReport {
    /// Links fused away, over all chains.
    pub fn links_folded(&self) -> usize {
        self.chains
            .iter()
            .flat_map(|chain| &chain.segments)
            .filter(|segment| segment.fused_node.is_some())
            .map(|segment| segment.nodes.len().saturating_sub(1))
            .sum()
    }

    /// Legal links that the policy or a failed check left alone.
    pub fn links_kept(&self) -> usize {
        let links: usize = self.chains.iter().map(|chain| chain.nodes.len() - 1).sum();
        links - self.links_folded()
    }

    /// MACs per output position over all chains, before and after.
    pub fn chain_macs(&self) -> (u64, u64) {
        let before = self.chains.iter().map(|chain| chain.macs_before).sum();
        let after = self.chains.iter().map(|chain| chain.macs_after).sum();
        (before, after)
    }

    /// True when the model was changed.
    pub fn changed(&self) -> bool {
        self.links_folded() > 0
    }
}

/// The decision on a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The whole chain became one Conv.
    Folded,
    /// Some links were fused, others kept.
    PartlyFolded,
    /// No link was fused.
    LeftAlone,
}

/// One chain: its Convs, the decision and the cost figures.
#[derive(Clone, Debug, Serialize)]
pub struct ChainReport {
    /// The graph holding the chain: "main", or a path such as "loop/body".
    pub graph: String,
    pub nodes: Vec<String>,
    /// Input channels of the first Conv, then the output channels of each Conv.
    pub channels: Vec<usize>,
    pub elem_type: FloatType,
    pub decision: Decision,
    pub reason: String,
    /// MACs per output position.
    pub macs_before: u64,
    pub macs_after: u64,
    /// The Convs that the chain became; single unfused Convs included.
    pub segments: Vec<SegmentReport>,
}

/// A run of Convs of a chain that became one Conv, or stayed one.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentReport {
    pub nodes: Vec<String>,
    /// Name of the fused Conv; `None` for a Conv left as it is.
    pub fused_node: Option<String>,
    pub macs_before: u64,
    pub macs_after: u64,
    /// The per-fold check of this segment, when one ran.
    pub check: Option<FoldCheck>,
    /// The reason a segment the policy chose was not fused, other than a failed check.
    pub not_folded: Option<String>,
}

/// Result of checking one fold on its own.
#[derive(Clone, Debug, Serialize)]
pub struct FoldCheck {
    pub passed: bool,
    /// One line: the worst element and the tolerance, or why the check could not run.
    pub detail: String,
    /// The comparison of the fused Conv (actual) with the chain (expected), when both ran.
    pub comparison: Option<crate::verify::ComparisonReport>,
}
