use crate::{IrError, Op, TensorType};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::BTreeSet;

/// Identifies a node; stable across removals of other nodes.
pub type NodeId = NodeIndex<u32>;

/// One operation with the types of its outputs.
#[derive(Debug, Clone)]
pub struct Node {
    /// Name from the source model (ONNX node name or a generated one); used in errors.
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// Output types, one per output port.
    pub outputs: Vec<TensorType>,
}

/// A data edge: output `src_port` of the source feeds operand `dst_port` of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Output port of the producer.
    pub src_port: u32,
    /// Operand position at the consumer.
    pub dst_port: u32,
}

/// A value: one output of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    /// The producer.
    pub node: NodeId,
    /// Its output port.
    pub port: u32,
}

/// A dataflow graph with named inputs and outputs.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// Model name.
    pub name: String,
    g: StableDiGraph<Node, Edge>,
    inputs: Vec<NodeId>,
    outputs: Vec<(String, Value)>,
    /// The model inputs and outputs that are string tensors (docs/strings.md), by the
    /// name of their element table (`i64[..., 2]`); each is followed, among the inputs or
    /// outputs, by its bytes, named [`string_bytes_name`] of it.
    pub strings: std::collections::BTreeSet<String>,
    /// The model inputs and outputs that are sequences of tensors (ONNX
    /// `sequence_type`), each of a length fixed when compiling: its elements are the
    /// inputs or outputs named [`sequence_element_name`] of it (docs/sequences.md).
    pub sequences: Vec<SequenceIo>,
    /// Model inputs of optional type compiled as absent (`--absent`): the graph reads
    /// them as empty optionals and the artifact does not take them.
    pub absent_inputs: Vec<String>,
    /// Model outputs of optional type whose presence only the run knows: each is
    /// followed, among the outputs, by its flag, named [`optional_present_name`] of it.
    pub optional_outputs: Vec<String>,
}

/// A model input or output that is a sequence of `len` tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceIo {
    /// The sequence's name in the source model.
    pub name: String,
    /// An output (else an input).
    pub output: bool,
    /// Its number of elements (when `padded` is false).
    pub len: usize,
    /// A sequence whose length only the run knows (an output of a Loop that appends to
    /// it): two outputs, `name` (`T[n, b...]`, element `i` in the corner of row `i`) and
    /// [`sequence_shapes_name`] of it (`i64[n, rank]`, each element's dims).
    pub padded: bool,
}

/// The name of the bool output that says whether optional output `name` holds an element.
pub fn optional_present_name(name: &str) -> String {
    format!("{name}.present")
}

/// The name of the output holding the dims of each element of padded sequence `name`.
pub fn sequence_shapes_name(name: &str) -> String {
    format!("{name}.shapes")
}

/// The name of the bytes input or output of string tensor `name`.
pub fn string_bytes_name(name: &str) -> String {
    format!("{name}.bytes")
}

/// The name of element `i` of sequence input or output `name`: `name[i]`.
pub fn sequence_element_name(name: &str, i: usize) -> String {
    format!("{name}[{i}]")
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Default::default() }
    }

    /// An empty graph with `self`'s name and the facts about its inputs and outputs
    /// beyond their types (string tensors, sequences, absent optionals), for a pass that
    /// rebuilds the graph node by node.
    pub fn empty_like(&self) -> Graph {
        Graph {
            name: self.name.clone(),
            strings: self.strings.clone(),
            sequences: self.sequences.clone(),
            absent_inputs: self.absent_inputs.clone(),
            optional_outputs: self.optional_outputs.clone(),
            ..Default::default()
        }
    }

    /// Adds a model input of type `ty`.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> Value {
        let node = self.g.add_node(Node {
            name: name.into(),
            op: crate::ops::Input { ty: ty.clone() }.into(),
            outputs: vec![ty],
        });
        self.inputs.push(node);
        Value { node, port: 0 }
    }

    /// Adds a constant.
    pub fn add_const(&mut self, name: impl Into<String>, value: crate::TensorData) -> Value {
        let ty = value.ty().clone();
        let node =
            self.g.add_node(Node { name: name.into(), op: crate::ops::Const { value }.into(), outputs: vec![ty] });
        Value { node, port: 0 }
    }

    /// Adds a node computing `op` on `operands`; its output types come from the op's rule,
    /// and each must fit [`MAX_TENSOR_BYTES`] when its shape is known.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: impl Into<Op>,
        operands: &[Value],
    ) -> Result<Vec<Value>, IrError> {
        let name = name.into();
        let op = op.into();
        let types: Vec<TensorType> = operands.iter().map(|v| self.value_type(*v).clone()).collect();
        let outputs = op.infer(&name, &types)?;
        for (i, t) in outputs.iter().enumerate() {
            check_size(t).map_err(|m| IrError::shape(&name, op.mnemonic(), format!("output {i}: {m}")))?;
        }
        let n_out = outputs.len();
        let node = self.g.add_node(Node { name, op, outputs });
        for (i, v) in operands.iter().enumerate() {
            self.g.add_edge(v.node, node, Edge { src_port: v.port, dst_port: i as u32 });
        }
        Ok((0..n_out as u32).map(|port| Value { node, port }).collect())
    }

    /// Marks `value` as a model output named `name`.
    pub fn add_output(&mut self, name: impl Into<String>, value: Value) {
        self.outputs.push((name.into(), value));
    }

    /// Model input nodes, in declaration order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Model outputs, in declaration order.
    pub fn outputs(&self) -> &[(String, Value)] {
        &self.outputs
    }

    /// Keeps the first `n` model outputs only.
    pub fn truncate_outputs(&mut self, n: usize) {
        self.outputs.truncate(n);
    }

    /// Replaces the value of model output `i`.
    pub fn set_output(&mut self, i: usize, value: Value) {
        self.outputs[i].1 = value;
    }

    /// The node behind `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    /// Mutable access to a node (callers keep its output types true).
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    /// Whether the node exists.
    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    /// The type of a value.
    pub fn value_type(&self, v: Value) -> &TensorType {
        &self.g[v.node].outputs[v.port as usize]
    }

    /// Operands of `id`, ordered by operand position.
    pub fn operands(&self, id: NodeId) -> Vec<Value> {
        let mut es: Vec<(u32, Value)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().dst_port, Value { node: e.source(), port: e.weight().src_port }))
            .collect();
        es.sort_by_key(|(p, _)| *p);
        es.into_iter().map(|(_, v)| v).collect()
    }

    /// Raw operand edges of `id` as `(dst_port, value)`, unsorted; the verifier uses it.
    pub fn operand_edges(&self, id: NodeId) -> Vec<(u32, Value)> {
        self.g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().dst_port, Value { node: e.source(), port: e.weight().src_port }))
            .collect()
    }

    /// Consumers of `id`'s outputs as `(consumer, operand position, output port)`.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, u32, u32)> {
        let mut us: Vec<_> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), e.weight().dst_port, e.weight().src_port))
            .collect();
        us.sort();
        us
    }

    /// Every node id, in index order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.g.node_indices().collect()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Makes every use of `old` a use of `new` (model outputs included).
    pub fn replace_uses(&mut self, old: Value, new: Value) {
        self.rewire(old, new, None);
    }

    /// Makes operand `port` of `node` read `value`.
    pub fn set_operand(&mut self, node: NodeId, port: u32, value: Value) {
        let old: Vec<_> = self
            .g
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().dst_port == port)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        self.g.add_edge(value.node, node, Edge { src_port: value.port, dst_port: port });
    }

    /// Like [`Graph::replace_uses`], but leaves the uses by `except` alone.
    pub fn replace_uses_except(&mut self, old: Value, new: Value, except: NodeId) {
        self.rewire(old, new, Some(except));
    }

    fn rewire(&mut self, old: Value, new: Value, except: Option<NodeId>) {
        let edges: Vec<_> = self
            .g
            .edges_directed(old.node, Direction::Outgoing)
            .filter(|e| e.weight().src_port == old.port && Some(e.target()) != except)
            .map(|e| (e.id(), e.target(), e.weight().dst_port))
            .collect();
        for (id, target, dst_port) in edges {
            self.g.remove_edge(id);
            self.g.add_edge(new.node, target, Edge { src_port: new.port, dst_port });
        }
        for o in &mut self.outputs {
            if o.1 == old {
                o.1 = new;
            }
        }
    }

    /// Removes a node and its edges; model inputs cannot be removed.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        if self.inputs.contains(&id) {
            return None;
        }
        self.g.remove_node(id)
    }

    /// Nodes in topological order; ties are broken by node index (creation order), so the
    /// order is deterministic. A node whose result's dims name a symbol that a Bind
    /// computes comes after that Bind even without a data edge (a constant expanded to a
    /// count only the run knows). Fails when the graph has a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indeg: std::collections::HashMap<NodeId, usize> =
            self.g.node_indices().map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count())).collect();
        let after = self.symbol_edges();
        for targets in after.values() {
            for t in targets {
                *indeg.get_mut(t).expect("a node") += 1;
            }
        }
        let mut ready: BTreeSet<NodeId> = indeg.iter().filter(|(_, &d)| d == 0).map(|(&n, _)| n).collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            let implied = after.get(&n).into_iter().flatten().copied();
            for t in self.g.edges_directed(n, Direction::Outgoing).map(|e| e.target()).chain(implied) {
                let d = indeg.get_mut(&t).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(t);
                }
            }
        }
        if order.len() != self.g.node_count() {
            return Err(IrError::Invalid("the graph has a cycle".into()));
        }
        Ok(order)
    }
}

impl Graph {
    /// For each Bind node, the nodes whose results' dims name a symbol it binds (other
    /// than itself): ordering edges [`Graph::topo_order`] adds to the data edges.
    fn symbol_edges(&self) -> std::collections::HashMap<NodeId, Vec<NodeId>> {
        let mut binder: std::collections::HashMap<&str, NodeId> = std::collections::HashMap::new();
        for id in self.g.node_indices() {
            if let Op::Bind(b) = &self.g[id].op {
                for s in b.symbols() {
                    binder.insert(s, id);
                }
            }
        }
        let mut out: std::collections::HashMap<NodeId, Vec<NodeId>> = std::collections::HashMap::new();
        if binder.is_empty() {
            return out;
        }
        let mut syms = Vec::new();
        for id in self.g.node_indices() {
            syms.clear();
            for t in &self.g[id].outputs {
                for d in &t.shape.0 {
                    if d.fixed().is_none() {
                        d.expr().symbols(&mut syms);
                    }
                }
            }
            let mut from: Vec<NodeId> = syms.iter().filter_map(|s| binder.get(s.as_str()).copied()).collect();
            from.sort();
            from.dedup();
            for b in from.into_iter().filter(|&b| b != id) {
                // Already ordered by a data edge: nothing to add.
                if self.g.find_edge(b, id).is_none() {
                    out.entry(b).or_default().push(id);
                }
            }
        }
        out
    }
}

/// The largest tensor dlc compiles, in bytes: 2^40 (1 TiB). Every size and offset the
/// generated code computes from a known shape then fits an i64 with room for strides,
/// and a model that asks for more is an error naming the node, not an overflow.
pub const MAX_TENSOR_BYTES: u64 = 1 << 40;

/// Checks that a tensor of type `t` has a byte size (in checked arithmetic) within
/// [`MAX_TENSOR_BYTES`], when its shape is known.
pub fn check_size(t: &TensorType) -> Result<(), String> {
    let Some(dims) = t.shape.as_fixed() else { return Ok(()) };
    match dims.iter().try_fold(t.dtype.size() as u64, |a, &d| a.checked_mul(d)) {
        Some(b) if b <= MAX_TENSOR_BYTES => Ok(()),
        Some(b) => Err(format!("{t} would take {b} bytes, more than dlc's limit of 2^40 bytes (1 TiB) per tensor")),
        None => Err(format!("{t} would take more than 2^64 bytes (its size overflows)")),
    }
}
