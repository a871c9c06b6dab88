//! Indexes over one ONNX graph: who produces and who consumes each value,
//! which values nested subgraphs read, and how a name resolves to a constant
//! through the enclosing scopes.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::onnx::tensor_shape_proto::{dimension, Dimension};
use crate::onnx::type_proto::{Tensor as TensorType, Value as TypeValue};
use crate::onnx::{GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto};
use crate::tensor::constant_node_value;

/// Returns true for an operator of the default ONNX domain with the given type.
pub fn is_onnx_op(node: &NodeProto, op_type: &str) -> bool {
    node.op_type() == op_type && matches!(node.domain(), "" | "ai.onnx")
}

/// Returns a node's name for messages, or its first output when it has none.
pub fn node_label(node: &NodeProto) -> String {
    match node.name() {
        "" => format!("<unnamed, output {}>", node.output.first().map_or("?", String::as_str)),
        name => name.to_string(),
    }
}

/// Iterates over the subgraphs held in a node's attributes (If, Loop, Scan bodies).
pub fn subgraphs(node: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    node.attribute.iter().flat_map(|attribute| attribute.g.iter().chain(&attribute.graphs))
}

/// Adds every value name that a graph and its nested graphs read (node inputs
/// and graph outputs), whether or not the graph defines it itself.
pub fn collect_reads(graph: &GraphProto, reads: &mut HashSet<String>) {
    for node in &graph.node {
        reads.extend(node.input.iter().filter(|name| !name.is_empty()).cloned());
        for subgraph in subgraphs(node) {
            collect_reads(subgraph, reads);
        }
    }
    reads.extend(graph.output.iter().map(|output| output.name().to_string()));
}

/// Returns the names a graph and its nested graphs read from enclosing
/// graphs: what they read less what they define themselves.
pub fn outer_reads(graph: &GraphProto) -> HashSet<String> {
    let mut defined: HashSet<&str> = graph.input.iter().map(|value| value.name()).collect();
    defined.extend(graph.initializer.iter().map(|tensor| tensor.name()));
    defined.extend(graph.node.iter().flat_map(|node| node.output.iter().map(String::as_str)));

    let mut reads: HashSet<String> = graph.output.iter().map(|value| value.name().to_string()).collect();
    for node in &graph.node {
        reads.extend(node.input.iter().filter(|name| !name.is_empty()).cloned());
        for subgraph in subgraphs(node) {
            reads.extend(outer_reads(subgraph));
        }
    }
    reads.retain(|name| !defined.contains(name.as_str()));
    reads
}

/// Builds the `ValueInfoProto` of a tensor of element type `elem`, with
/// fixed dims, or with no shape when `dims` is `None`.
pub fn tensor_value_info(name: &str, elem: i32, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|&dim| Dimension {
                value: Some(dimension::Value::DimValue(dim)),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(elem),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A use of a value: the consuming node's index and its input slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    pub node: usize,
    pub slot: usize,
}

/// Producer and consumer index of one graph, borrowed from it.
pub struct GraphIndex<'a> {
    pub graph: &'a GraphProto,
    pub producer: HashMap<&'a str, usize>,
    pub consumers: HashMap<&'a str, Vec<Use>>,
    /// Values read inside a subgraph, mapped to the node holding that subgraph.
    pub subgraph_readers: HashMap<String, usize>,
    pub graph_outputs: HashSet<&'a str>,
    pub graph_inputs: HashSet<&'a str>,
    pub initializers: HashMap<&'a str, &'a TensorProto>,
    /// Initializer names defined more than once: which one a node reads is ambiguous.
    pub duplicate_initializers: HashSet<&'a str>,
    /// Values that more than one node produces, which breaks ONNX's single assignment.
    pub duplicate_producers: HashSet<&'a str>,
}

impl<'a> GraphIndex<'a> {
    /// Builds the index of a graph.
    pub fn new(graph: &'a GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<Use>> = HashMap::new();
        let mut subgraph_readers = HashMap::new();
        let mut duplicate_producers = HashSet::new();

        for (index, node) in graph.node.iter().enumerate() {
            for output in node.output.iter().filter(|name| !name.is_empty()) {
                if producer.contains_key(output.as_str()) {
                    duplicate_producers.insert(output.as_str());
                } else {
                    producer.insert(output.as_str(), index);
                }
            }
            for (slot, input) in node.input.iter().enumerate().filter(|(_, name)| !name.is_empty()) {
                consumers.entry(input.as_str()).or_default().push(Use { node: index, slot });
            }
            let mut reads = HashSet::new();
            for subgraph in subgraphs(node) {
                collect_reads(subgraph, &mut reads);
            }
            for name in reads {
                subgraph_readers.entry(name).or_insert(index);
            }
        }

        let mut initializers = HashMap::new();
        let mut duplicate_initializers = HashSet::new();
        for tensor in &graph.initializer {
            if initializers.insert(tensor.name(), tensor).is_some() {
                duplicate_initializers.insert(tensor.name());
            }
        }

        GraphIndex {
            graph,
            producer,
            consumers,
            subgraph_readers,
            graph_outputs: graph.output.iter().map(|value| value.name()).collect(),
            graph_inputs: graph.input.iter().map(|value| value.name()).collect(),
            initializers,
            duplicate_initializers,
            duplicate_producers,
        }
    }

    /// Returns the uses of a value in this graph's own nodes.
    pub fn uses(&self, name: &str) -> &[Use] {
        self.consumers.get(name).map_or(&[], Vec::as_slice)
    }
}

/// The origin of a constant, so that it can be removed once unused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConstantSource {
    /// An initializer of the graph at this depth (0 = the resolving graph, 1 = its parent, ...).
    Initializer { depth: usize },
    /// The output of a Constant node of the graph at this depth.
    ConstantNode { depth: usize },
}

/// A name resolved to a constant tensor.
pub struct Constant<'a> {
    pub tensor: Cow<'a, TensorProto>,
    pub source: ConstantSource,
}

/// A graph with the chain of graphs that enclose it, innermost first.
pub struct Scope<'a> {
    pub index: GraphIndex<'a>,
    pub parent: Option<&'a Scope<'a>>,
    /// Names that more than one graph of the model defines (see [`names_defined_twice`]).
    pub ambiguous: &'a HashSet<String>,
}

impl<'a> Scope<'a> {
    /// Resolves a name to a constant tensor, or returns why it is not one.
    ///
    /// A graph input shadows an initializer of the same name (IR < 4 models
    /// list every initializer as an input, so a caller may override it), and a
    /// name defined in this graph shadows the enclosing graphs.
    pub fn resolve_constant(&self, name: &str) -> Result<Constant<'a>, String> {
        if self.ambiguous.contains(name) {
            return Err(format!(
                "'{name}' is defined in more than one graph of the model; engines disagree on which one a node reads"
            ));
        }
        let mut scope = self;
        let mut depth = 0;
        loop {
            if let Some(found) = scope.resolve_here(name, depth) {
                return found;
            }
            scope = scope.parent.ok_or_else(|| format!("'{name}' is not defined in the graph"))?;
            depth += 1;
        }
    }

    fn resolve_here(&self, name: &str, depth: usize) -> Option<Result<Constant<'a>, String>> {
        let index = &self.index;
        if let Some(&node_index) = index.producer.get(name) {
            let node = &index.graph.node[node_index];
            if !is_onnx_op(node, "Constant") {
                return Some(Err(format!("'{name}' is computed by node '{}' ({})", node_label(node), node.op_type())));
            }
            let constant = constant_node_value(node)
                .map(|tensor| Constant {
                    tensor,
                    source: ConstantSource::ConstantNode { depth },
                })
                .map_err(|reason| format!("Constant node '{}' of '{name}': {reason}", node_label(node)));
            return Some(constant);
        }

        if index.graph_inputs.contains(name) {
            let reason = if index.initializers.contains_key(name) {
                format!("initializer '{name}' is also a graph input, so a caller can override it")
            } else {
                format!("'{name}' is a graph input, not a constant")
            };
            return Some(Err(reason));
        }

        if index.duplicate_initializers.contains(name) {
            return Some(Err(format!("initializer '{name}' is defined more than once, so which one a node reads is ambiguous")));
        }
        index.initializers.get(name).map(|&tensor| {
            Ok(Constant {
                tensor: Cow::Borrowed(tensor),
                source: ConstantSource::Initializer { depth },
            })
        })
    }
}

/// Returns the value names that more than one graph of the model defines as
/// an input, an initializer or a node output.
///
/// The ONNX IR forbids a subgraph to reuse an outer name, but onnx.checker
/// accepts it. Engines then disagree: onnxruntime 1.31 reads the outer
/// initializer where tract 0.23 reads the inner one. Which one onnxruntime
/// picks can also change when another graph stops reading the name, so a
/// weight with such a name is never folded.
pub fn names_defined_twice(model: &crate::onnx::ModelProto) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut twice = HashSet::new();
    if let Some(graph) = &model.graph {
        collect_definitions(graph, &mut seen, &mut twice);
    }
    twice
}

fn collect_definitions(graph: &GraphProto, seen: &mut HashSet<String>, twice: &mut HashSet<String>) {
    let mut here: HashSet<&str> = graph.input.iter().map(|value| value.name()).collect();
    here.extend(graph.initializer.iter().map(|tensor| tensor.name()));
    here.extend(graph.node.iter().flat_map(|node| node.output.iter().map(String::as_str)));
    here.remove("");
    for name in here {
        if !seen.insert(name.to_string()) {
            twice.insert(name.to_string());
        }
    }
    for node in &graph.node {
        for subgraph in subgraphs(node) {
            collect_definitions(subgraph, seen, twice);
        }
    }
}

/// Every name used anywhere in a model, and a generator of names not in it.
#[derive(Debug, Default)]
pub struct NameGenerator {
    taken: HashSet<String>,
}

impl NameGenerator {
    /// Collects node names and value names of every graph, subgraph and function.
    pub fn for_model(model: &crate::onnx::ModelProto) -> Self {
        let mut generator = NameGenerator::default();
        if let Some(graph) = &model.graph {
            generator.add_graph(graph);
        }
        for function in &model.functions {
            generator.taken.extend(function.input.iter().cloned());
            generator.taken.extend(function.output.iter().cloned());
            for node in &function.node {
                generator.add_node(node);
            }
        }
        generator
    }

    fn add_graph(&mut self, graph: &GraphProto) {
        let values = graph.input.iter().chain(&graph.output).chain(&graph.value_info);
        self.taken.extend(values.map(|value| value.name().to_string()));
        self.taken.extend(graph.initializer.iter().map(|tensor| tensor.name().to_string()));
        for sparse in &graph.sparse_initializer {
            for tensor in sparse.values.iter().chain(&sparse.indices) {
                self.taken.insert(tensor.name().to_string());
            }
        }
        for node in &graph.node {
            self.add_node(node);
        }
    }

    fn add_node(&mut self, node: &NodeProto) {
        self.taken.insert(node.name().to_string());
        self.taken.extend(node.input.iter().cloned());
        self.taken.extend(node.output.iter().cloned());
        for subgraph in subgraphs(node) {
            self.add_graph(subgraph);
        }
    }

    /// Returns `base` if no part of the model uses it, else `base_1`, `base_2`, ...
    pub fn fresh(&mut self, base: &str) -> String {
        let mut candidate = base.to_string();
        let mut counter = 0;
        while self.taken.contains(&candidate) {
            counter += 1;
            candidate = format!("{base}_{counter}");
        }
        self.taken.insert(candidate.clone());
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_avoid_collisions() {
        let mut names = NameGenerator::default();
        names.taken.extend(["conv_folded".to_string(), "conv_folded_1".to_string()]);

        let first = names.fresh("conv_folded");
        let second = names.fresh("conv_folded");

        assert_eq!(first, "conv_folded_2");
        assert_eq!(second, "conv_folded_3");
    }
}
