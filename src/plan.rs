//! Finding chains: Conv nodes linked output-to-input with nothing between them,
//! where every link passes the guards below. Planning reads the graph and never
//! changes it.
//!
//! A link from Conv `a` to Conv `b` is legal when
//! 1. both Convs have constant weights and biases (initializers that no graph
//!    input can override, or Constant nodes, in this graph or an enclosing one);
//! 2. `a`'s output has exactly one consumer, `b`'s input X;
//! 3. that output is not a graph output;
//! 4. no subgraph (If, Loop, Scan body) reads that output by name;
//! 5. `b` is pointwise: kernel 1, stride 1, zero pads, group 1, auto_pad
//!    NOTSET or VALID;
//! 6. both Convs have the same element type and rank, and `b`'s input
//!    channels are `a`'s output channels.
//!
//! The first Conv of a chain keeps its own kernel, strides, pads, dilations
//! and group. A grouped first Conv is expanded to a dense weight if the chain
//! is folded.

use std::collections::HashMap;

use serde::Serialize;

use crate::conv::{ConvCandidate, Rejection};
use crate::error::Error;
use crate::graph::{is_onnx_op, node_label, Scope};

/// A maximal run of legally linked Convs, in graph order.
pub struct Chain<'a> {
    pub convs: Vec<ConvCandidate<'a>>,
}

/// A direct Conv -> Conv link that no chain contains, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockedLink {
    pub graph: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The chains of one graph and the links that were left alone.
pub struct GraphChains<'a> {
    pub chains: Vec<Chain<'a>>,
    pub blocked: Vec<BlockedLink>,
    /// Malformed Convs that are not linked to another Conv: skipped with a warning.
    pub skipped: Vec<String>,
}

/// Finds the chains of the graph in `scope`.
///
/// A malformed Conv that is linked to another Conv is an error, because the
/// user expects it to be folded. A malformed Conv with no such link is only
/// reported as skipped.
pub fn find_chains<'a>(scope: &Scope<'a>, graph_label: &str) -> Result<GraphChains<'a>, Error> {
    let graph = scope.index.graph;
    let mut candidates: HashMap<usize, Result<ConvCandidate<'a>, Rejection>> = HashMap::new();
    for (index, node) in graph.node.iter().enumerate() {
        if is_onnx_op(node, "Conv") {
            candidates.insert(index, ConvCandidate::new(scope, index, node));
        }
    }

    let mut next: HashMap<usize, usize> = HashMap::new();
    let mut blocked = Vec::new();
    let mut linked = Vec::new();
    for (&to, _) in candidates.iter() {
        let Some(from) = conv_producer(scope, &candidates, to) else { continue };
        linked.extend([from, to]);
        match check_link(scope, &candidates, from, to)? {
            None => {
                next.insert(from, to);
            }
            Some(reason) => blocked.push(BlockedLink {
                graph: graph_label.to_string(),
                from: node_label(&graph.node[from]),
                to: node_label(&graph.node[to]),
                reason,
            }),
        }
    }
    blocked.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));

    let skipped = unlinked_invalid(&candidates, &linked);
    let chains = collect_chains(candidates, &next);
    Ok(GraphChains { chains, blocked, skipped })
}

/// Returns the index of the Conv whose output is `to`'s input X, if any.
fn conv_producer(scope: &Scope, candidates: &HashMap<usize, Result<ConvCandidate, Rejection>>, to: usize) -> Option<usize> {
    let input = scope.index.graph.node[to].input.first()?;
    let &from = scope.index.producer.get(input.as_str())?;
    candidates.contains_key(&from).then_some(from)
}

/// Runs the guards on one link. `Ok(None)` means legal.
fn check_link(
    scope: &Scope,
    candidates: &HashMap<usize, Result<ConvCandidate, Rejection>>,
    from: usize,
    to: usize,
) -> Result<Option<String>, Error> {
    let (a, b) = match (&candidates[&from], &candidates[&to]) {
        (Err(Rejection::Invalid(error)), _) | (_, Err(Rejection::Invalid(error))) => {
            return Err(clone_error(error));
        }
        (Err(Rejection::NotFoldable(reason)), _) | (_, Err(Rejection::NotFoldable(reason))) => {
            return Ok(Some(reason.clone()));
        }
        (Ok(a), Ok(b)) => (a, b),
    };

    let index = &scope.index;
    let value = a.output;
    let uses = index.uses(value).len();
    if uses != 1 {
        return Ok(Some(format!("output '{value}' of '{}' has {uses} consumers", a.label)));
    }
    if index.duplicate_producers.contains(value) {
        return Ok(Some(format!("'{value}' is produced by more than one node")));
    }
    if index.graph_outputs.contains(value) {
        return Ok(Some(format!("output '{value}' of '{}' is a graph output", a.label)));
    }
    if let Some(&reader) = index.subgraph_readers.get(value) {
        let reader = node_label(&index.graph.node[reader]);
        return Ok(Some(format!("output '{value}' of '{}' is read inside a subgraph of '{reader}'", a.label)));
    }
    if let Some(violation) = b.attributes.pointwise_violation(b.kernel()) {
        return Ok(Some(format!("'{}' is not pointwise: {violation}", b.label)));
    }
    Ok(shape_mismatch(a, b))
}

fn shape_mismatch(a: &ConvCandidate, b: &ConvCandidate) -> Option<String> {
    if a.elem != b.elem {
        return Some(format!("'{}' has {:?} weights but '{}' has {:?}", a.label, a.elem, b.label, b.elem));
    }
    if a.weight_dims.len() != b.weight_dims.len() {
        return Some(format!("'{}' and '{}' have weights of different rank", a.label, b.label));
    }
    if b.c_in() != a.c_out() {
        return Some(format!(
            "'{}' has {} input channels but '{}' has {} output channels",
            b.label,
            b.c_in(),
            a.label,
            a.c_out()
        ));
    }
    None
}

/// Lists malformed Convs that no link involves, so they can be skipped.
fn unlinked_invalid(candidates: &HashMap<usize, Result<ConvCandidate, Rejection>>, linked: &[usize]) -> Vec<String> {
    let mut skipped: Vec<(usize, String)> = candidates
        .iter()
        .filter(|(index, _)| !linked.contains(index))
        .filter_map(|(&index, candidate)| match candidate {
            Err(Rejection::Invalid(error)) => Some((index, error.to_string())),
            _ => None,
        })
        .collect();
    skipped.sort();
    skipped.into_iter().map(|(_, message)| message).collect()
}

/// Follows legal links from every Conv that starts one, in graph order.
fn collect_chains<'a>(
    mut candidates: HashMap<usize, Result<ConvCandidate<'a>, Rejection>>,
    next: &HashMap<usize, usize>,
) -> Vec<Chain<'a>> {
    let has_previous: std::collections::HashSet<usize> = next.values().copied().collect();
    let mut starts: Vec<usize> = next.keys().copied().filter(|start| !has_previous.contains(start)).collect();
    starts.sort_unstable();

    let mut chains = Vec::new();
    for start in starts {
        let mut convs = Vec::new();
        let mut current = Some(start);
        while let Some(index) = current {
            if let Some(Ok(candidate)) = candidates.remove(&index) {
                convs.push(candidate);
            }
            current = next.get(&index).copied();
        }
        chains.push(Chain { convs });
    }
    chains
}

fn clone_error(error: &Error) -> Error {
    match error {
        Error::InvalidNode { node, op_type, reason } => Error::InvalidNode {
            node: node.clone(),
            op_type: op_type.clone(),
            reason: reason.clone(),
        },
        other => Error::Internal(other.to_string()),
    }
}
