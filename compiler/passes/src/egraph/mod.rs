//! The equality-saturation optimiser (egg).
//!
//! The graph goes into an e-graph whole: inputs become leaves, constants constant nodes,
//! every single-result node an op node (identical nodes merge, so this is also CSE);
//! nodes with several results stay outside as they are, their results entering as
//! leaves. The rule families in [`rules`] run under node, iteration and time limits;
//! then the cheapest graph under the roofline [`cost`] model is extracted and rebuilt
//! (only what the outputs need, so this is also DCE).
//!
//! Determinism: insertion follows the graph's topological order, egg's hash maps use a
//! fixed hasher, and extraction breaks cost ties by e-node order, so one input gives one
//! output IR. The time limit is a safety net: with the default node and iteration
//! limits it is not reached on the reference models (the report says what stopped).
pub mod cost;
pub mod lang;
pub mod rules;
#[cfg(test)]
mod tests;

use crate::{Changed, Pass, PassCx, PassError};
use cost::{Cost, Roofline};
use dlc_ir::{Graph, NodeId, Op, Value};
use egg::{Extractor, Id, Runner, StopReason};
use lang::{add_const, op_key, EGraph, Facts, Node};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Limits of one optimiser run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Stop when the e-graph holds this many e-nodes.
    pub nodes: usize,
    /// Stop after this many rewrite iterations.
    pub iterations: usize,
    /// Stop after this long.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { nodes: 50_000, iterations: 12, time: Duration::from_millis(1500) }
    }
}

/// What one optimiser run did (report.json's `optimizer`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptReport {
    /// E-nodes at the end.
    pub egraph_nodes: usize,
    /// E-classes at the end.
    pub egraph_classes: usize,
    /// Rewrite iterations run.
    pub iterations: usize,
    /// `saturated`, `iteration_limit`, `node_limit` or `time_limit`.
    pub stop_reason: String,
    /// Wall time of the whole pass.
    pub seconds: f64,
    /// Applications per rule (rules that never fired are absent).
    pub rules_fired: BTreeMap<String, usize>,
    /// Roofline seconds of the graph before and after.
    pub cost_before: f64,
    /// Roofline seconds of the extracted graph.
    pub cost_after: f64,
}

/// The e-graph optimiser pass. Contract: the result computes the same outputs (up to
/// floating-point reassociation in folded weights) with the cheapest program found.
#[derive(Debug, Clone, Default)]
pub struct EGraphOpt {
    /// Budget.
    pub limits: Limits,
    /// Cost model numbers.
    pub roof: Roofline,
}

fn stop_name(s: &Option<StopReason>) -> String {
    match s {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(_)) => "iteration_limit".into(),
        Some(StopReason::NodeLimit(_)) => "node_limit".into(),
        Some(StopReason::TimeLimit(_)) => "time_limit".into(),
        Some(StopReason::Other(s)) => s.clone(),
        None => "none".into(),
    }
}

/// A graph in e-graph form, with what is needed to rebuild it.
struct Translated {
    /// E-class of every graph value the e-graph knows.
    class: HashMap<Value, Id>,
    /// The graph value behind each leaf.
    leaf_values: Vec<Value>,
}

fn translate(g: &Graph, invalid: impl Fn(dlc_ir::IrError) -> PassError) -> Result<(EGraph, Translated), PassError> {
    let mut egraph = EGraph::new(Facts::default());
    let mut class = HashMap::new();
    let mut leaf_values = Vec::new();
    let mut pinned = Vec::new();
    for id in g.topo_order().map_err(&invalid)? {
        let node = g.node(id);
        let leaf = |eg: &mut EGraph, lv: &mut Vec<Value>, v: Value| {
            eg.analysis.leaves.push(g.value_type(v).clone());
            lv.push(v);
            eg.add(Node::Leaf(lv.len() as u32 - 1))
        };
        let ids: Vec<Id> = match &node.op {
            Op::Input(_) => vec![leaf(&mut egraph, &mut leaf_values, Value { node: id, port: 0 })],
            Op::Const(c) => vec![add_const(&mut egraph, c.value.clone())],
            op if node.outputs.len() == 1 => {
                let children: Vec<Id> = g.operands(id).iter().map(|v| class[v]).collect();
                let key = op_key(op);
                egraph.analysis.ops.entry(key).or_insert_with(|| op.clone());
                vec![egraph.add(Node::Op(key, children))]
            }
            _ => {
                pinned.extend(g.operands(id).iter().map(|v| class[v]));
                (0..node.outputs.len() as u32)
                    .map(|port| leaf(&mut egraph, &mut leaf_values, Value { node: id, port }))
                    .collect()
            }
        };
        for (port, c) in ids.into_iter().enumerate() {
            if egraph[c].data.name.is_empty() {
                egraph[c].data.name = node.name.clone();
            }
            class.insert(Value { node: id, port: port as u32 }, c);
        }
    }
    pinned.extend(g.outputs().iter().map(|(_, v)| class[v]));
    for c in pinned {
        egraph[c].data.pinned = true;
    }
    egraph.rebuild();
    Ok((egraph, Translated { class, leaf_values }))
}

/// Rebuilds a graph from the cheapest e-node of every class the outputs need.
fn rebuild(
    g: &Graph,
    t: &Translated,
    egraph: &EGraph,
    ex: &Extractor<Cost, Node, Facts>,
    invalid: impl Fn(dlc_ir::IrError) -> PassError,
) -> Result<Graph, PassError> {
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Item {
        Class(Id),
        Opaque(NodeId),
    }
    let mut out = g.empty_like();
    let mut values: HashMap<Value, Value> = HashMap::new(); // old graph value -> new
    for &id in g.inputs() {
        let n = g.node(id);
        values.insert(Value { node: id, port: 0 }, out.add_input(n.name.clone(), n.outputs[0].clone()));
    }
    let mut done: HashMap<Item, Vec<Value>> = HashMap::new();
    let deps = |item: Item| -> Vec<Item> {
        match item {
            Item::Class(c) => match ex.find_best_node(c) {
                Node::Op(_, ch) => ch.iter().map(|c| Item::Class(egraph.find(*c))).collect(),
                Node::Leaf(i) => {
                    let v = t.leaf_values[*i as usize];
                    if matches!(g.node(v.node).op, Op::Input(_)) {
                        vec![]
                    } else {
                        vec![Item::Opaque(v.node)]
                    }
                }
                Node::Const(_) => vec![],
            },
            Item::Opaque(n) => g.operands(n).iter().map(|v| Item::Class(egraph.find(t.class[v]))).collect(),
        }
    };
    let roots: Vec<Item> = g.outputs().iter().map(|(_, v)| Item::Class(egraph.find(t.class[v]))).collect();
    let mut stack: Vec<(Item, bool)> = roots.iter().rev().map(|r| (*r, false)).collect();
    while let Some((item, expanded)) = stack.pop() {
        if done.contains_key(&item) {
            continue;
        }
        let ds = deps(item);
        if !expanded {
            stack.push((item, true));
            stack.extend(ds.iter().rev().filter(|d| !done.contains_key(d)).map(|d| (*d, false)));
            continue;
        }
        let vals: Vec<Value> = ds.iter().map(|d| done[d][0]).collect();
        let result = match item {
            Item::Class(c) => {
                let name = match egraph[c].data.name.as_str() {
                    "" => format!("n{c}"),
                    s => s.to_string(),
                };
                match ex.find_best_node(c) {
                    Node::Op(k, _) => {
                        let op = egraph.analysis.ops[k].clone();
                        vec![out.add_node(name, op, &vals).map_err(&invalid)?[0]]
                    }
                    Node::Const(i) => vec![out.add_const(name, egraph.analysis.consts[*i as usize].clone())],
                    Node::Leaf(i) => {
                        let v = t.leaf_values[*i as usize];
                        match values.get(&v) {
                            Some(nv) => vec![*nv],
                            None => vec![done[&Item::Opaque(v.node)][v.port as usize]],
                        }
                    }
                }
            }
            Item::Opaque(n) => {
                let node = g.node(n);
                out.add_node(node.name.clone(), node.op.clone(), &vals).map_err(&invalid)?
            }
        };
        done.insert(item, result);
    }
    for ((name, _), root) in g.outputs().iter().zip(roots) {
        out.add_output(name.clone(), done[&root][0]);
    }
    Ok(out)
}

impl Pass for EGraphOpt {
    fn name(&self) -> &'static str {
        "egraph"
    }

    fn run(&self, g: &mut Graph, cx: &mut PassCx) -> Result<Changed, PassError> {
        let invalid = |source| PassError::Invalid { pass: "egraph", source: Box::new(source) };
        let t0 = Instant::now();
        let cost_before = self.roof.graph(g);
        let (egraph, t) = translate(g, invalid)?;
        let rules = rules::all();
        let rewrites: Vec<_> = rules.iter().map(|r| r.rewrite()).collect();
        let runner = Runner::default()
            .with_node_limit(self.limits.nodes)
            .with_iter_limit(self.limits.iterations)
            .with_time_limit(self.limits.time)
            .with_egraph(egraph)
            .run(&rewrites);
        let mut fired: BTreeMap<String, usize> = BTreeMap::new();
        for it in &runner.iterations {
            for (rule, n) in &it.applied {
                *fired.entry(rule.to_string()).or_default() += n;
            }
        }
        let egraph = &runner.egraph;
        let ex = Extractor::new(egraph, Cost::new(egraph, self.roof));
        let new = rebuild(g, &t, egraph, &ex, invalid)?;
        let changed = if fired.is_empty() && new.node_count() == g.node_count() { Changed::No } else { Changed::Yes };
        *g = new;
        let report = OptReport {
            egraph_nodes: egraph.total_number_of_nodes(),
            egraph_classes: egraph.number_of_classes(),
            iterations: runner.iterations.len(),
            stop_reason: stop_name(&runner.stop_reason),
            seconds: t0.elapsed().as_secs_f64(),
            rules_fired: fired,
            cost_before,
            cost_after: self.roof.graph(g),
        };
        tracing::debug!(?report, "egraph optimiser");
        cx.optimizer = Some(report);
        Ok(changed)
    }
}
