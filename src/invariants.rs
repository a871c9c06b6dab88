//! Graph invariants checked before and after a plan is applied: every node
//! input is defined before it is read, each value has one producer per graph,
//! and every graph keeps its outputs. A model that already broke one of these
//! is tolerated, but a fold must not add a new break.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::graph::{node_label, subgraphs};
use crate::onnx::{GraphProto, ModelProto};

/// The invariant breaks and graph outputs of a model.
pub struct Invariants {
    violations: HashSet<String>,
    outputs: Vec<Vec<String>>,
}

impl Invariants {
    /// Walks every graph of the model.
    pub fn of(model: &ModelProto) -> Self {
        let mut invariants = Invariants {
            violations: HashSet::new(),
            outputs: Vec::new(),
        };
        if let Some(graph) = &model.graph {
            invariants.walk(graph, &mut Vec::new(), "main");
        }
        invariants
    }

    /// Returns an error naming the first invariant that the fold broke.
    pub fn check_against(&self, before: &Invariants) -> Result<()> {
        if self.outputs != before.outputs {
            return Err(Error::Internal("the graph outputs changed".to_string()));
        }
        let mut new: Vec<&String> = self.violations.difference(&before.violations).collect();
        new.sort();
        match new.first() {
            Some(violation) => Err(Error::Internal(violation.to_string())),
            None => Ok(()),
        }
    }

    fn walk<'g>(&mut self, graph: &'g GraphProto, outer: &mut Vec<HashSet<&'g str>>, label: &str) {
        let mut defined: HashSet<&str> = graph.input.iter().map(|value| value.name()).collect();
        defined.extend(graph.initializer.iter().map(|tensor| tensor.name()));
        self.outputs.push(graph.output.iter().map(|value| value.name().to_string()).collect());

        for node in &graph.node {
            for input in node.input.iter().filter(|name| !name.is_empty()) {
                let known = defined.contains(input.as_str()) || outer.iter().any(|scope| scope.contains(input.as_str()));
                if !known {
                    self.violations
                        .insert(format!("in {label}, node '{}' reads '{input}' before it is defined", node_label(node)));
                }
            }
            if subgraphs(node).next().is_some() {
                outer.push(defined.clone());
                for subgraph in subgraphs(node) {
                    self.walk(subgraph, outer, &format!("{label}/{}", node_label(node)));
                }
                outer.pop();
            }
            for output in node.output.iter().filter(|name| !name.is_empty()) {
                if !defined.insert(output.as_str()) {
                    self.violations
                        .insert(format!("in {label}, '{output}' is produced twice (again by '{}')", node_label(node)));
                }
            }
        }

        for output in &graph.output {
            let known = defined.contains(output.name()) || outer.iter().any(|scope| scope.contains(output.name()));
            if !known {
                self.violations.insert(format!("in {label}, graph output '{}' has no producer", output.name()));
            }
        }
    }
}
