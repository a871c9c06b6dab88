//! Applying a whole plan of prepared folds to a model in one place.
//!
//! Each fused Conv takes the position of the last Conv of its segment, which
//! keeps the node order topological: its input X is produced before the first
//! Conv, and its weight and bias are initializers. Old weights are removed
//! only when no node anywhere in the model still reads them.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::graph::{collect_reads, is_onnx_op};
use crate::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::report::FoldCheck;

/// One step from a graph into a subgraph: node index, attribute index, and
/// the position in the attribute's `graphs` list (`None` for its `g` field).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GraphStep {
    pub node: usize,
    pub attribute: usize,
    pub graph: Option<usize>,
}

/// A weight or bias that a fold stops using, and the graph that defines it.
#[derive(Clone, Debug)]
pub struct OldConstant {
    pub name: String,
    pub path: Vec<GraphStep>,
}

/// A composed, checked fold ready to be applied.
#[derive(Clone, Debug)]
pub struct PreparedFold {
    /// The graph the segment is in.
    pub path: Vec<GraphStep>,
    /// Node indices of every Conv in the segment.
    pub removed: Vec<usize>,
    /// Index of the last Conv, where the fused Conv goes.
    pub replaced: usize,
    pub node: NodeProto,
    /// The fused weight, then the fused bias if any.
    pub tensors: Vec<TensorProto>,
    /// Intermediate values that no longer exist.
    pub removed_values: Vec<String>,
    pub old_constants: Vec<OldConstant>,
    pub check: Option<FoldCheck>,
}

/// Applies every fold, deepest graphs first so that node indices in the
/// paths of the remaining folds stay valid, then removes unused weights.
pub fn apply(model: &mut ModelProto, folds: Vec<PreparedFold>) -> Result<()> {
    // IR < 4 requires every initializer to be a graph input too, which would
    // make the fused weights overridable; Constant nodes avoid that.
    let as_constant_nodes = model.ir_version() < 4;
    let old_constants: Vec<OldConstant> = folds.iter().flat_map(|fold| fold.old_constants.clone()).collect();

    let mut by_graph: BTreeMap<Vec<GraphStep>, Vec<PreparedFold>> = BTreeMap::new();
    for fold in folds {
        by_graph.entry(fold.path.clone()).or_default().push(fold);
    }
    let mut paths: Vec<Vec<GraphStep>> = by_graph.keys().cloned().collect();
    paths.sort_by_key(|path| std::cmp::Reverse(path.len()));

    for path in paths {
        let graph = graph_at(model, &path)?;
        let folds = by_graph.remove(&path).unwrap_or_default();
        apply_to_graph(graph, folds, as_constant_nodes);
    }

    remove_unused_constants(model, old_constants)
}

fn apply_to_graph(graph: &mut GraphProto, folds: Vec<PreparedFold>, as_constant_nodes: bool) {
    let mut removed = HashSet::new();
    let mut replacements: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut removed_values = HashSet::new();

    for fold in folds {
        removed.extend(fold.removed.iter().copied());
        removed_values.extend(fold.removed_values);
        let mut nodes = Vec::new();
        if as_constant_nodes {
            nodes.extend(fold.tensors.into_iter().map(constant_node));
        } else {
            graph.initializer.extend(fold.tensors);
        }
        nodes.push(fold.node);
        replacements.insert(fold.replaced, nodes);
    }

    let old_nodes = std::mem::take(&mut graph.node);
    for (index, node) in old_nodes.into_iter().enumerate() {
        if let Some(nodes) = replacements.remove(&index) {
            graph.node.extend(nodes);
        } else if !removed.contains(&index) {
            graph.node.push(node);
        }
    }
    graph.value_info.retain(|value| !removed_values.contains(value.name()));
}

fn constant_node(tensor: TensorProto) -> NodeProto {
    let name = tensor.name().to_string();
    NodeProto {
        name: Some(name.clone()),
        op_type: Some("Constant".to_string()),
        output: vec![name],
        attribute: vec![AttributeProto {
            name: Some("value".to_string()),
            r#type: Some(crate::onnx::attribute_proto::AttributeType::Tensor as i32),
            t: Some(tensor),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Removes old weights that nothing reads any more: an initializer, or the
/// Constant node that produced it. A weight another node shares is kept.
fn remove_unused_constants(model: &mut ModelProto, mut old_constants: Vec<OldConstant>) -> Result<()> {
    let mut reads = HashSet::new();
    if let Some(graph) = &model.graph {
        collect_reads(graph, &mut reads);
    }
    for function in &model.functions {
        reads.extend(function.node.iter().flat_map(|node| node.input.iter().cloned()));
    }

    old_constants.retain(|constant| !reads.contains(&constant.name));
    old_constants.sort_by_key(|constant| std::cmp::Reverse(constant.path.len()));
    for constant in old_constants {
        let graph = graph_at(model, &constant.path)?;
        let is_listed_input = graph.input.iter().any(|input| input.name() == constant.name);
        if is_listed_input {
            continue;
        }
        graph.initializer.retain(|tensor| tensor.name() != constant.name);
        graph
            .node
            .retain(|node| !(is_onnx_op(node, "Constant") && node.output.first() == Some(&constant.name)));
        graph.value_info.retain(|value| value.name() != constant.name);
    }
    Ok(())
}

/// Returns the graph at `path`, starting from the model's main graph.
pub fn graph_at<'m>(model: &'m mut ModelProto, path: &[GraphStep]) -> Result<&'m mut GraphProto> {
    let missing = || Error::Internal(format!("no subgraph at {path:?}"));
    let mut graph = model.graph.as_mut().ok_or_else(missing)?;
    for step in path {
        let attribute = graph
            .node
            .get_mut(step.node)
            .and_then(|node| node.attribute.get_mut(step.attribute))
            .ok_or_else(missing)?;
        graph = match step.graph {
            None => attribute.g.as_mut(),
            Some(k) => attribute.graphs.get_mut(k),
        }
        .ok_or_else(missing)?;
    }
    Ok(graph)
}
