//! The cost model: multiply-accumulates (MACs) per output position, and the
//! segmentation of a chain that minimises them.
//!
//! Every Conv in a chain after the first is pointwise with stride 1, so all of
//! them run at the same output positions and their per-position costs add up.
//! A Conv costs `C_out · C_in / group · Π kernel`. Fusing layers `i..=j` gives a
//! dense Conv with the first layer's kernel: `C_out(j) · C_in(i) · Π kernel(i)`.
//! That is cheaper for expanding-then-shrinking chains (512->2048->512) and
//! dearer for low-rank bottlenecks (256->16->256).

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// The rule that picks which links of a legal chain are folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Fold only where MACs go down, with the cheapest segmentation of each chain.
    Cheaper,
    /// Fold every legal link, whatever it costs.
    Always,
}

/// The per-position cost figures of one Conv in a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerCost {
    /// MACs of the Conv as it is.
    pub macs: u64,
    /// Output channels.
    pub c_out: u64,
    /// `C_in · Π kernel`: the MACs per output channel of this Conv made dense.
    pub dense_macs_per_output: u64,
}

/// MACs per output position of layers `range` fused into one Conv
/// (or of the single layer as it is).
pub fn segment_macs(layers: &[LayerCost], range: Range<usize>) -> u64 {
    let (first, last) = (range.start, range.end - 1);
    if first == last {
        return layers[first].macs;
    }
    layers[last].c_out.saturating_mul(layers[first].dense_macs_per_output)
}

/// MACs per output position of a chain split into `segments`.
pub fn total_macs(layers: &[LayerCost], segments: &[Range<usize>]) -> u64 {
    segments.iter().map(|range| segment_macs(layers, range.clone())).sum()
}

/// Splits a chain into consecutive segments, each to become one Conv.
pub fn segments(layers: &[LayerCost], policy: Policy) -> Vec<Range<usize>> {
    match policy {
        Policy::Always => std::iter::once(0..layers.len()).collect(),
        Policy::Cheaper => cheapest_segments(layers),
    }
}

/// Dynamic programming over split points: `best[j]` is the cheapest cost of
/// layers `0..j`. A longer segment replaces the unfused choice only when it is
/// strictly cheaper, so ties leave the model as it is.
fn cheapest_segments(layers: &[LayerCost]) -> Vec<Range<usize>> {
    let n = layers.len();
    let mut best = vec![0u64; n + 1];
    let mut start_of = vec![0usize; n + 1];

    for end in 1..=n {
        best[end] = best[end - 1].saturating_add(layers[end - 1].macs);
        start_of[end] = end - 1;
        for start in (0..end - 1).rev() {
            let cost = best[start].saturating_add(segment_macs(layers, start..end));
            if cost < best[end] {
                best[end] = cost;
                start_of[end] = start;
            }
        }
    }

    let mut segments = Vec::new();
    let mut end = n;
    while end > 0 {
        segments.push(start_of[end]..end);
        end = start_of[end];
    }
    segments.reverse();
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pointwise layers with the given channel sequence.
    fn pointwise(channels: &[u64]) -> Vec<LayerCost> {
        channels
            .windows(2)
            .map(|pair| LayerCost {
                macs: pair[0] * pair[1],
                c_out: pair[1],
                dense_macs_per_output: pair[0],
            })
            .collect()
    }

    #[test]
    fn expanding_chain_folds_to_one() {
        let layers = pointwise(&[512, 2048, 512, 256]);

        let segments = segments(&layers, Policy::Cheaper);

        assert_eq!(segments, vec![0..3]);
        assert_eq!(total_macs(&layers, &segments), 512 * 256);
    }

    #[test]
    fn bottleneck_left_alone() {
        let layers = pointwise(&[256, 16, 256]);

        let segments = segments(&layers, Policy::Cheaper);

        assert_eq!(segments, vec![0..1, 1..2]);
    }

    #[test]
    fn bottleneck_in_middle_gives_two_segments() {
        let layers = pointwise(&[64, 256, 8, 256, 64]);

        let segments = segments(&layers, Policy::Cheaper);

        assert_eq!(segments, vec![0..2, 2..4]);
        assert_eq!(total_macs(&layers, &segments), 64 * 8 + 8 * 64);
    }

    #[test]
    fn always_folds_bottleneck() {
        let layers = pointwise(&[256, 16, 256]);

        let segments = segments(&layers, Policy::Always);

        assert_eq!(segments, vec![0..2]);
    }

    #[test]
    fn equal_cost_left_alone() {
        // Unfused 8 + 8 = 16 MACs; fused 8 · 2 = 16 MACs.
        let layers = vec![
            LayerCost { macs: 8, c_out: 4, dense_macs_per_output: 2 },
            LayerCost { macs: 8, c_out: 8, dense_macs_per_output: 4 },
        ];

        let segments = segments(&layers, Policy::Cheaper);

        assert_eq!(segment_macs(&layers, 0..2), 16);
        assert_eq!(segments, vec![0..1, 1..2]);
    }

    #[test]
    fn grouped_head_uses_dense_cost() {
        // Depthwise 3x3 over 16 channels, then 16 -> 16 pointwise.
        let layers = vec![
            LayerCost { macs: 16 * 9, c_out: 16, dense_macs_per_output: 16 * 9 },
            LayerCost { macs: 256, c_out: 16, dense_macs_per_output: 16 },
        ];

        let segments = segments(&layers, Policy::Cheaper);

        assert_eq!(segment_macs(&layers, 0..2), 16 * 16 * 9);
        assert_eq!(segments, vec![0..1, 1..2]);
    }
}
