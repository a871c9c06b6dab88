//! The fold pass: plan every chain of every graph, compose the weights of the
//! segments the policy picks, check each fused Conv on its own, then apply
//! the whole plan at once and check the graph's invariants.

use log::{debug, info, warn};

use crate::apply::{apply, GraphStep, OldConstant, PreparedFold};
use crate::compose::{compose, ConvWeights};
use crate::conv::ConvCandidate;
use crate::cost::{self, LayerCost, Policy};
use crate::error::{Error, Result};
use crate::external::ExternalData;
use crate::graph::{node_label, subgraphs, ConstantSource, GraphIndex, NameGenerator, Scope};
use crate::invariants::Invariants;
use crate::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto};
use crate::plan::find_chains;
use crate::report::{ChainReport, Decision, FoldReport, SegmentReport};
use crate::tensor::{self, Weights};

/// A deliberate error in the composed weights, for tests that show the
/// per-fold check catches a wrong fold. Never set it outside tests.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Composes the bias as `W1 · b2 + b1` instead of `W2 · b1 + b2`.
    BiasInWrongOrder,
}

/// Settings of the fold pass.
#[derive(Clone, Debug)]
pub struct FoldOptions {
    pub policy: Policy,
    /// Checks every fused Conv against its original chain in tract before applying it.
    pub check_folds: bool,
    #[doc(hidden)]
    pub fault: Option<Fault>,
}

impl Default for FoldOptions {
    fn default() -> Self {
        FoldOptions {
            policy: Policy::Cheaper,
            check_folds: true,
            fault: None,
        }
    }
}

/// The originals and the fused Conv of one segment, for the per-fold check.
pub struct FoldCandidate<'a> {
    /// Each original Conv node with its decoded weight and bias.
    pub originals: Vec<(&'a NodeProto, &'a Weights, Option<&'a Weights>)>,
    pub fused: &'a NodeProto,
    pub weight: &'a Weights,
    pub bias: Option<&'a Weights>,
}

/// Folds every chain of the model in place and returns what was done.
///
/// The model is only changed after every fold was prepared and checked; an
/// error leaves it as it was.
pub fn fold_model(model: &mut ModelProto, external: &ExternalData, options: &FoldOptions) -> Result<FoldReport> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::Internal("the model has no graph".to_string()))?;
    let conv_count_before = count_convs(graph);
    let invariants_before = Invariants::of(model);
    let ambiguous = crate::graph::names_defined_twice(model);

    let mut planner = Planner {
        options,
        external,
        names: NameGenerator::for_model(model),
        ambiguous: &ambiguous,
        folds: Vec::new(),
        report: FoldReport {
            policy: options.policy,
            chains: Vec::new(),
            blocked_links: Vec::new(),
            conv_count_before,
            conv_count_after: conv_count_before,
            skipped: Vec::new(),
        },
    };
    planner.visit(graph, None, Vec::new(), "main".to_string())?;
    let Planner { folds, mut report, .. } = planner;

    if !folds.is_empty() {
        apply(model, folds)?;
        Invariants::of(model).check_against(&invariants_before)?;
    }
    report.conv_count_after = model.graph.as_ref().map_or(0, count_convs);
    log_summary(&report);
    Ok(report)
}

struct Planner<'o> {
    options: &'o FoldOptions,
    external: &'o ExternalData,
    names: NameGenerator,
    ambiguous: &'o std::collections::HashSet<String>,
    folds: Vec<PreparedFold>,
    report: FoldReport,
}

impl<'o> Planner<'o> {
    fn visit<'a>(&mut self, graph: &'a GraphProto, parent: Option<&'a Scope<'a>>, path: Vec<GraphStep>, label: String) -> Result<()>
    where
        'o: 'a,
    {
        let scope = Scope {
            index: GraphIndex::new(graph),
            parent,
            ambiguous: self.ambiguous,
        };

        let found = find_chains(&scope, &label)?;
        for link in &found.blocked {
            debug!("left alone: {} -> {} in {}: {}", link.from, link.to, link.graph, link.reason);
        }
        for message in &found.skipped {
            warn!("skipped a malformed Conv that is not linked to another Conv: {message}");
        }
        self.report.blocked_links.extend(found.blocked);
        self.report.skipped.extend(found.skipped);
        for chain in &found.chains {
            self.plan_chain(&chain.convs, &path, &label)?;
        }

        for (node_index, node) in graph.node.iter().enumerate() {
            for (attribute_index, attribute) in node.attribute.iter().enumerate() {
                let bodies = attribute.g.iter().map(|g| (None, g));
                let lists = attribute.graphs.iter().enumerate().map(|(k, g)| (Some(k), g));
                for (position, subgraph) in bodies.chain(lists) {
                    let mut sub_path = path.clone();
                    sub_path.push(GraphStep {
                        node: node_index,
                        attribute: attribute_index,
                        graph: position,
                    });
                    let sub_label = subgraph_label(&label, node, attribute, position);
                    self.visit(subgraph, Some(&scope), sub_path, sub_label)?;
                }
            }
        }
        Ok(())
    }

    fn plan_chain(&mut self, convs: &[ConvCandidate], path: &[GraphStep], label: &str) -> Result<()> {
        let layers: Vec<LayerCost> = convs.iter().map(layer_cost).collect();
        let segments = cost::segments(&layers, self.options.policy);
        let macs_before = layers.iter().map(|layer| layer.macs).sum();

        let mut segment_reports = Vec::new();
        for range in segments {
            let segment = &convs[range.clone()];
            let macs_unfused = range.clone().map(|i| layers[i].macs).sum();
            let mut segment_report = SegmentReport {
                nodes: segment.iter().map(|conv| conv.label.clone()).collect(),
                fused_node: None,
                macs_before: macs_unfused,
                macs_after: macs_unfused,
                check: None,
                not_folded: None,
            };
            if segment.len() > 1 {
                let fold = match self.prepare(segment, path)? {
                    Ok(fold) => fold,
                    Err(reason) => {
                        warn!("{} left unfolded: {reason}", segment_report.nodes.join(" + "));
                        segment_report.not_folded = Some(reason);
                        segment_reports.push(segment_report);
                        continue;
                    }
                };
                segment_report.check = fold.check.clone();
                if fold.check.as_ref().is_none_or(|check| check.passed) {
                    segment_report.fused_node = Some(fold.node.name().to_string());
                    segment_report.macs_after = cost::segment_macs(&layers, range);
                    self.folds.push(fold);
                }
            }
            segment_reports.push(segment_report);
        }

        let chain = chain_report(convs, label, self.options.policy, macs_before, segment_reports);
        debug!("chain {} in {label}: {:?}, {}", chain.nodes.join(" -> "), chain.decision, chain.reason);
        self.report.chains.push(chain);
        Ok(())
    }

    /// Decodes and composes a segment's weights and builds its fused Conv.
    /// The inner `Err` gives the reason the segment cannot be fused (a fused weight
    /// too large for one protobuf, say), and the segment is then left alone.
    fn prepare(&mut self, segment: &[ConvCandidate], path: &[GraphStep]) -> Result<Result<PreparedFold, String>> {
        let mut originals = Vec::with_capacity(segment.len());
        for conv in segment {
            let weight = tensor::decode(&conv.weight.tensor, self.external)?;
            let bias = match &conv.bias {
                Some(bias) => Some(tensor::decode(&bias.tensor, self.external)?),
                None => None,
            };
            originals.push((conv.node, weight, bias));
        }

        let layers: Vec<ConvWeights> = segment
            .iter()
            .zip(&originals)
            .map(|(conv, (_, weight, bias))| ConvWeights {
                weight,
                bias: bias.as_ref(),
                group: conv.group(),
            })
            .collect();
        let last = &segment[segment.len() - 1];
        let mut composed = match compose(&layers) {
            Ok(composed) => composed,
            Err(reason) => return Ok(Err(format!("its weights cannot be composed: {reason}"))),
        };
        if self.options.fault == Some(Fault::BiasInWrongOrder) {
            inject_bias_fault(&mut composed.bias, &originals);
        }

        let base = match last.node.name() {
            "" => last.output.to_string(),
            name => name.to_string(),
        };
        let node_name = self.names.fresh(&format!("{base}_folded"));
        let weight_name = self.names.fresh(&format!("{node_name}_W"));
        let bias_name = composed.bias.as_ref().map(|_| self.names.fresh(&format!("{node_name}_B")));
        let node = fused_node(segment, &node_name, &weight_name, bias_name.as_deref());

        let check = self.options.check_folds.then(|| {
            crate::check::check_fold(&FoldCandidate {
                originals: originals.iter().map(|(node, weight, bias)| (*node, weight, bias.as_ref())).collect(),
                fused: &node,
                weight: &composed.weight,
                bias: composed.bias.as_ref(),
            })
        });
        if let Some(check) = check.as_ref().filter(|check| !check.passed) {
            warn!("fold of {} not applied: the per-fold check failed: {}", node_name, check.detail);
        }

        let mut tensors = vec![tensor::encode(&weight_name, &composed.weight)];
        if let (Some(name), Some(bias)) = (&bias_name, &composed.bias) {
            tensors.push(tensor::encode(name, bias));
        }
        Ok(Ok(PreparedFold {
            path: path.to_vec(),
            removed: segment.iter().map(|conv| conv.index).collect(),
            replaced: last.index,
            node,
            tensors,
            removed_values: segment[..segment.len() - 1].iter().map(|conv| conv.output.to_string()).collect(),
            old_constants: old_constants(segment, path),
            check,
        }))
    }
}

fn layer_cost(conv: &ConvCandidate) -> LayerCost {
    let kernel: u64 = conv.kernel().iter().map(|&k| k as u64).product();
    LayerCost {
        macs: conv.macs(),
        c_out: conv.c_out() as u64,
        dense_macs_per_output: conv.c_in() as u64 * kernel,
    }
}

/// Builds the fused Conv: the first Conv's attributes (group 1 once made dense),
/// its input X, the new weight and bias, and the last Conv's output.
fn fused_node(segment: &[ConvCandidate], name: &str, weight: &str, bias: Option<&str>) -> NodeProto {
    let first = &segment[0];
    let last = &segment[segment.len() - 1];
    let attribute: Vec<AttributeProto> = first
        .node
        .attribute
        .iter()
        .filter(|attribute| attribute.name() != "group")
        .cloned()
        .collect();

    let mut inputs = vec![first.input.to_string(), weight.to_string()];
    inputs.extend(bias.map(str::to_string));
    let folded: Vec<&str> = segment.iter().map(|conv| conv.label.as_str()).collect();
    NodeProto {
        name: Some(name.to_string()),
        op_type: Some("Conv".to_string()),
        domain: first.node.domain.clone(),
        input: inputs,
        output: vec![last.output.to_string()],
        attribute,
        doc_string: Some(format!("onnx-fold: fused {}", folded.join(", "))),
        ..Default::default()
    }
}

/// Weight and bias names of the segment with the graph that defines each.
fn old_constants(segment: &[ConvCandidate], path: &[GraphStep]) -> Vec<OldConstant> {
    let mut constants = Vec::new();
    for conv in segment {
        let sources = std::iter::once((&conv.node.input[1], &conv.weight.source))
            .chain(conv.bias.as_ref().map(|bias| (&conv.node.input[2], &bias.source)));
        for (name, source) in sources {
            let depth = match source {
                ConstantSource::Initializer { depth } | ConstantSource::ConstantNode { depth } => *depth,
            };
            constants.push(OldConstant {
                name: name.clone(),
                path: path[..path.len().saturating_sub(depth)].to_vec(),
            });
        }
    }
    constants
}

fn chain_report(
    convs: &[ConvCandidate],
    label: &str,
    policy: Policy,
    macs_before: u64,
    segments: Vec<SegmentReport>,
) -> ChainReport {
    let macs_after: u64 = segments.iter().map(|segment| segment.macs_after).sum();
    let fused = segments.iter().filter(|segment| segment.fused_node.is_some()).count();
    let failed_check = segments.iter().any(|segment| segment.check.as_ref().is_some_and(|check| !check.passed));

    let (decision, reason) = if fused == 1 && segments.len() == 1 {
        let reason = match policy {
            Policy::Always => format!("policy 'always' folds every legal link (MACs per position {macs_before} -> {macs_after})"),
            Policy::Cheaper => format!("folding cuts MACs per position from {macs_before} to {macs_after}"),
        };
        (Decision::Folded, reason)
    } else if fused > 0 {
        (Decision::PartlyFolded, partial_reason(&segments, macs_before, macs_after, failed_check))
    } else if failed_check {
        (Decision::LeftAlone, "the per-fold check of the fused Conv failed, so the chain was kept".to_string())
    } else if let Some(reason) = segments.iter().find_map(|segment| segment.not_folded.clone()) {
        (Decision::LeftAlone, format!("the chain was kept because {reason}"))
    } else {
        let whole = cost::segment_macs(&convs.iter().map(layer_cost).collect::<Vec<_>>(), 0..convs.len());
        (Decision::LeftAlone, format!("no fold lowers MACs per position: {macs_before} as it is, {whole} as one Conv"))
    };

    ChainReport {
        graph: label.to_string(),
        nodes: convs.iter().map(|conv| conv.label.clone()).collect(),
        channels: std::iter::once(convs[0].c_in()).chain(convs.iter().map(|conv| conv.c_out())).collect(),
        elem_type: convs[0].elem,
        decision,
        reason,
        macs_before,
        macs_after,
        segments,
    }
}

fn partial_reason(segments: &[SegmentReport], macs_before: u64, macs_after: u64, failed_check: bool) -> String {
    let split: Vec<String> = segments.iter().map(|segment| segment.nodes.join("+")).collect();
    let mut reason = format!(
        "the cheapest split is [{}], MACs per position {macs_before} -> {macs_after}",
        split.join("] [")
    );
    if failed_check {
        reason.push_str("; a segment whose per-fold check failed was kept");
    }
    reason
}

fn subgraph_label(parent: &str, node: &NodeProto, attribute: &AttributeProto, position: Option<usize>) -> String {
    match position {
        None => format!("{parent}/{}/{}", node_label(node), attribute.name()),
        Some(k) => format!("{parent}/{}/{}[{k}]", node_label(node), attribute.name()),
    }
}

/// Counts Conv nodes in a graph and its subgraphs.
pub fn count_convs(graph: &GraphProto) -> usize {
    graph
        .node
        .iter()
        .map(|node| usize::from(crate::graph::is_onnx_op(node, "Conv")) + subgraphs(node).map(count_convs).sum::<usize>())
        .sum()
}

fn inject_bias_fault(bias: &mut Option<Weights>, originals: &[(&NodeProto, Weights, Option<Weights>)]) {
    if let (Some(bias), Some((_, _, Some(first_bias)))) = (bias.as_mut(), originals.first()) {
        for (value, original) in bias.values.iter_mut().zip(&first_bias.values) {
            *value += original;
        }
    }
}

fn log_summary(report: &FoldReport) {
    let (before, after) = report.chain_macs();
    info!(
        "{} chains, {} links folded, {} kept, {} blocked; Convs {} -> {}; MACs per position in chains {before} -> {after}",
        report.chains.len(),
        report.links_folded(),
        report.links_kept(),
        report.blocked_links.len(),
        report.conv_count_before,
        report.conv_count_after
    );
}
