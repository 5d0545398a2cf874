//! `ai.onnx.preview.training::Gradient`: reverse-mode differentiation when importing.
//!
//! The node names a tensor `y` of the model's graph and the tensors `xs` (and `zs`) it
//! is a function of; its operands are the values of `xs` then `zs` at which to
//! differentiate, its outputs `dy/dx` for each `x` of `xs` (each of `x`'s shape). Like
//! ONNX's reference, the seed is a `y` of ones (the gradient of the sum of `y`'s
//! elements). The importer finds the nodes between them (walking back from `y`,
//! stopping at `xs` and `zs`; other values those nodes read are constants of the
//! differentiation), imports a copy of them that reads the node's operands instead of
//! `xs` and `zs`, then imports the backward pass as ordinary ONNX nodes: each node's
//! rule, in reverse order, adds its operands' contributions (summed over the dims
//! numpy broadcast them along) to their gradients. The result is a graph like any other:
//! the optimiser fuses and folds it, the kernels are the usual ones.
//!
//! The rules cover the ops training graphs differentiate through: Add, Sub, Mul, Div,
//! Neg, Identity, Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Pow, MatMul (operands of rank 2
//! or more), ReduceSum, ReduceMean, Reshape, Flatten, Squeeze, Unsqueeze, Transpose. A
//! path through any other op is refused, naming it. An `x` that `y` does not depend on
//! gets zeros.
use super::control::import_at;
use super::{BuildFn, NodeCx};
use crate::export::{attr, A};
use dlc_ir::{Dim, Value};
use onnx_protobuf::NodeProto;
use std::collections::{HashMap, HashSet};

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("ai.onnx.preview.training::Gradient", gradient);
}

/// The ops [`Backward::rule`] differentiates.
const DIFFERENTIABLE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Identity",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Pow",
    "MatMul",
    "ReduceSum",
    "ReduceMean",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
];

fn gradient(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let xs = cx.strings("xs")?;
    let zs = cx.strings("zs")?;
    let y = cx.string("y", "")?;
    if xs.is_empty() || y.is_empty() {
        return Err("needs the attributes 'xs' and 'y'".into());
    }
    if cx.node.input.len() != xs.len() + zs.len() {
        return Err(format!(
            "has {} operands; it takes one per name of 'xs' and 'zs' ({})",
            cx.node.input.len(),
            xs.len() + zs.len()
        ));
    }
    let graph = &cx.imp.model.graph;
    // The nodes between the leaves and y, in the graph's order.
    let leaves: HashMap<&str, usize> = xs.iter().chain(&zs).enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().filter(|o| !o.is_empty()).map(move |o| (o.as_str(), i)))
        .collect();
    if !leaves.contains_key(y.as_str()) && !producer.contains_key(y.as_str()) {
        return Err(format!("'y' = '{y}' is not computed by a node of the model's graph"));
    }
    let mut cone = HashSet::new();
    let mut stack = vec![y.as_str()];
    while let Some(v) = stack.pop() {
        if leaves.contains_key(v) {
            continue;
        }
        if let Some(&i) = producer.get(v) {
            if cone.insert(i) {
                stack.extend(graph.node[i].input.iter().map(|s| s.as_str()).filter(|s| !s.is_empty()));
            }
        }
    }
    let mut order: Vec<usize> = cone.into_iter().collect();
    order.sort_unstable();
    let nodes: Vec<NodeProto> = order.iter().map(|&i| graph.node[i].clone()).collect();

    let base = format!("{}::", cx.name);
    let operands = cx.node.input.clone();
    // A name of the differentiated graph as the copy reads it: a leaf is the node's
    // operand, a value the copy computes is its own, anything else is read as it is.
    let computed: HashSet<String> = nodes.iter().flat_map(|n| n.output.iter().cloned()).collect();
    let fwd = |n: &str| -> String {
        match leaves.get(n) {
            Some(&k) => operands[k].clone(),
            None if computed.contains(n) => format!("{base}f:{n}"),
            None => n.to_string(),
        }
    };
    let copies: Vec<NodeProto> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut c = n.clone();
            c.name = format!("{base}forward_{i}_{}", n.op_type);
            c.input = n.input.iter().map(|s| if s.is_empty() { s.clone() } else { fwd(s) }).collect();
            c.output = n.output.iter().map(|s| if s.is_empty() { s.clone() } else { fwd(s) }).collect();
            c
        })
        .collect();
    import_at(cx, &copies, None)?;

    // The values that depend on an x (only their gradients are needed).
    let mut depends: HashSet<String> = xs.iter().cloned().collect();
    for n in &nodes {
        if n.input.iter().any(|i| depends.contains(i)) {
            depends.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    let mut bw = Backward { cx, base: base.clone(), nodes: Vec::new(), grads: HashMap::new(), n: 0 };
    let yv = fwd(&y);
    let ones = bw.fill(&yv, 1.0);
    bw.grads.insert(y.clone(), ones);
    for n in nodes.iter().rev() {
        let Some(out) = n.output.first() else { continue };
        if !depends.contains(out) {
            continue;
        }
        let Some(g) = bw.grads.get(out).cloned() else { continue };
        if n.output.iter().filter(|o| !o.is_empty()).count() != 1 || !DIFFERENTIABLE.contains(&n.op_type.as_str()) {
            return Err(format!(
                "the path from 'xs' to 'y' goes through node '{}' ({}), which dlc does not differentiate (it does: {})",
                n.name,
                n.op_type,
                DIFFERENTIABLE.join(", ")
            ));
        }
        bw.rule(n, &g, &fwd, &depends)?;
        // A rule's nodes are imported as they are made: later rules read their types.
        bw.flush()?;
    }
    let mut outs = Vec::new();
    for x in &xs {
        let g = match bw.grads.get(x).cloned() {
            Some(g) => g,
            None => {
                let xv = fwd(x);
                bw.fill(&xv, 0.0)
            }
        };
        bw.flush()?;
        outs.push(bw.cx.imp.lookup(&g)?);
    }
    Ok(outs)
}

/// The backward pass being written: ONNX nodes (opset 18 forms) not yet imported, and
/// the name of each value's gradient so far.
struct Backward<'c, 'a, 'm> {
    cx: &'c mut NodeCx<'a, 'm>,
    base: String,
    nodes: Vec<NodeProto>,
    grads: HashMap<String, String>,
    n: usize,
}

impl Backward<'_, '_, '_> {
    /// A node `op(inputs)` with attributes; returns its output's name.
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<onnx_protobuf::AttributeProto>) -> String {
        self.n += 1;
        let out = format!("{}b{}", self.base, self.n);
        let mut p = NodeProto::new();
        p.op_type = op.to_string();
        p.name = format!("{}backward_{}_{op}", self.base, self.n);
        p.input = inputs.iter().map(|s| s.to_string()).collect();
        p.output = vec![out.clone()];
        p.attribute = attrs;
        self.nodes.push(p);
        out
    }
    fn op(&mut self, op: &str, inputs: &[&str]) -> String {
        self.node(op, inputs, Vec::new())
    }
    fn ints(&mut self, v: &[i64]) -> String {
        self.node("Constant", &[], vec![attr("value_ints", A::Is(v.to_vec()))])
    }
    /// A scalar `v` of `like`'s type.
    fn scalar(&mut self, v: f32, like: &str) -> String {
        let c = self.node("Constant", &[], vec![attr("value_float", A::F(v))]);
        self.op("CastLike", &[&c, like])
    }
    /// A tensor of `like`'s shape and type filled with `v`.
    fn fill(&mut self, like: &str, v: f32) -> String {
        let c = self.scalar(v, like);
        let s = self.op("Shape", &[like]);
        self.op("Expand", &[&c, &s])
    }
    fn flush(&mut self) -> Result<(), String> {
        let nodes = std::mem::take(&mut self.nodes);
        import_at(self.cx, &nodes, Some(18))
    }
    /// The dims of the value the forward copy names `name`.
    fn dims(&mut self, name: &str) -> Result<Vec<Dim>, String> {
        let v = self.cx.imp.lookup(name)?;
        Ok(self.cx.ty(v).shape.0)
    }
    /// Adds `g` (of `x`'s shape, or one numpy broadcast `x` to) to the gradient of `x`
    /// (`xv` in the copy), summed back to `x`'s shape.
    fn accumulate(&mut self, x: &str, xv: &str, g: String) -> Result<(), String> {
        self.flush()?;
        let (gd, xd) = (self.dims(&g)?, self.dims(xv)?);
        let lead = gd.len().saturating_sub(xd.len());
        let mut axes: Vec<i64> = (0..lead as i64).collect();
        for (i, d) in xd.iter().enumerate() {
            if *d == Dim::Fixed(1) && gd.get(lead + i).is_some_and(|e| *e != Dim::Fixed(1)) {
                axes.push((lead + i) as i64);
            }
        }
        let g = if axes.is_empty() && gd.len() == xd.len() {
            g
        } else {
            let a = self.ints(&axes);
            let r = self.node("ReduceSum", &[&g, &a], vec![attr("keepdims", A::I(1))]);
            let s = self.op("Shape", &[xv]);
            self.op("Reshape", &[&r, &s])
        };
        let total = match self.grads.get(x).cloned() {
            Some(prev) => self.op("Add", &[&prev, &g]),
            None => g,
        };
        self.grads.insert(x.to_string(), total);
        Ok(())
    }

    /// Node `n`'s contributions to its operands' gradients, given `g`, its result's.
    fn rule(
        &mut self,
        n: &NodeProto,
        g: &str,
        fwd: &dyn Fn(&str) -> String,
        depends: &HashSet<String>,
    ) -> Result<(), String> {
        let ins: Vec<String> = n.input.iter().map(|s| fwd(s)).collect();
        let y = fwd(&n.output[0]);
        let wants = |i: usize| n.input.get(i).is_some_and(|s| depends.contains(s));
        let (a, b) = (ins.first().cloned().unwrap_or_default(), ins.get(1).cloned().unwrap_or_default());
        let op = n.op_type.as_str();
        // Each operand's contribution (of the shape the op broadcast it to).
        let mut parts: Vec<(usize, String)> = Vec::new();
        match op {
            "Add" | "Sub" => {
                parts.push((0, g.to_string()));
                if wants(1) {
                    let gb = if op == "Sub" { self.op("Neg", &[g]) } else { g.to_string() };
                    parts.push((1, gb));
                }
            }
            "Mul" => {
                if wants(0) {
                    parts.push((0, self.op("Mul", &[g, &b])));
                }
                if wants(1) {
                    parts.push((1, self.op("Mul", &[g, &a])));
                }
            }
            "Div" => {
                if wants(0) {
                    parts.push((0, self.op("Div", &[g, &b])));
                }
                if wants(1) {
                    // d(a/b)/db = -(a/b)/b.
                    let q = self.op("Div", &[&y, &b]);
                    let gq = self.op("Mul", &[g, &q]);
                    parts.push((1, self.op("Neg", &[&gq])));
                }
            }
            "Pow" => {
                if wants(0) {
                    // b a^(b-1)
                    let one = self.scalar(1.0, &b);
                    let bm1 = self.op("Sub", &[&b, &one]);
                    let p = self.op("Pow", &[&a, &bm1]);
                    let bp = self.op("Mul", &[&b, &p]);
                    parts.push((0, self.op("Mul", &[g, &bp])));
                }
                if wants(1) {
                    let l = self.op("Log", &[&a]);
                    let yl = self.op("Mul", &[&y, &l]);
                    parts.push((1, self.op("Mul", &[g, &yl])));
                }
            }
            "Neg" => parts.push((0, self.op("Neg", &[g]))),
            "Identity" => parts.push((0, g.to_string())),
            "Relu" => {
                let zero = self.scalar(0.0, &a);
                let pos = self.op("Greater", &[&a, &zero]);
                let zeros = self.fill(g, 0.0);
                parts.push((0, self.op("Where", &[&pos, g, &zeros])));
            }
            "Sigmoid" => {
                let one = self.scalar(1.0, &y);
                let c = self.op("Sub", &[&one, &y]);
                let d = self.op("Mul", &[&y, &c]);
                parts.push((0, self.op("Mul", &[g, &d])));
            }
            "Tanh" => {
                let one = self.scalar(1.0, &y);
                let y2 = self.op("Mul", &[&y, &y]);
                let d = self.op("Sub", &[&one, &y2]);
                parts.push((0, self.op("Mul", &[g, &d])));
            }
            "Exp" => parts.push((0, self.op("Mul", &[g, &y]))),
            "Log" => parts.push((0, self.op("Div", &[g, &a]))),
            "Sqrt" => {
                let two = self.scalar(2.0, &y);
                let d = self.op("Mul", &[&y, &two]);
                parts.push((0, self.op("Div", &[g, &d])));
            }
            "MatMul" => {
                self.flush()?;
                let (ra, rb) = (self.dims(&a)?.len(), self.dims(&b)?.len());
                if ra < 2 || rb < 2 {
                    return Err(format!(
                        "node '{}' (MatMul): dlc differentiates MatMul of operands of rank 2 or more, got {ra} and {rb}",
                        n.name
                    ));
                }
                let swap = |r: usize| -> Vec<i64> {
                    let mut p: Vec<i64> = (0..r as i64).collect();
                    p.swap(r - 1, r - 2);
                    p
                };
                if wants(0) {
                    let bt = self.node("Transpose", &[&b], vec![attr("perm", A::Is(swap(rb)))]);
                    parts.push((0, self.op("MatMul", &[g, &bt])));
                }
                if wants(1) {
                    let at = self.node("Transpose", &[&a], vec![attr("perm", A::Is(swap(ra)))]);
                    parts.push((1, self.op("MatMul", &[&at, g])));
                }
            }
            "ReduceSum" | "ReduceMean" => {
                self.flush()?;
                let rank = self.dims(&a)?.len() as i64;
                let keep = n.attribute.iter().find(|t| t.name == "keepdims").is_none_or(|t| t.i != 0);
                let axes: Vec<i64> = match n.input.get(1).filter(|s| !s.is_empty()) {
                    Some(_) => {
                        let v = self.cx.imp.lookup(&ins[1])?;
                        self.cx.imp.known.get(&v).and_then(|t| t.to_i64()).ok_or_else(|| {
                            format!("node '{}' ({op}): its axes must be constants to differentiate it", n.name)
                        })?
                    }
                    None => n.attribute.iter().find(|t| t.name == "axes").map(|t| t.ints.clone()).unwrap_or_default(),
                };
                let noop = n.attribute.iter().any(|t| t.name == "noop_with_empty_axes" && t.i != 0);
                if axes.is_empty() && noop {
                    parts.push((0, g.to_string()));
                } else {
                    let mut axes: Vec<i64> = if axes.is_empty() {
                        (0..rank).collect()
                    } else {
                        axes.iter().map(|&x| if x < 0 { x + rank } else { x }).collect()
                    };
                    axes.sort_unstable();
                    let kept = if keep {
                        g.to_string()
                    } else {
                        let ax = self.ints(&axes);
                        self.op("Unsqueeze", &[g, &ax])
                    };
                    let s = self.op("Shape", &[&a]);
                    let mut e = self.op("Expand", &[&kept, &s]);
                    if op == "ReduceMean" {
                        let (na, ny) = (self.op("Size", &[&a]), self.op("Size", &[&y]));
                        let k = self.op("Div", &[&na, &ny]);
                        let k = self.op("CastLike", &[&k, &e]);
                        e = self.op("Div", &[&e, &k]);
                    }
                    parts.push((0, e));
                }
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let s = self.op("Shape", &[&a]);
                parts.push((0, self.op("Reshape", &[g, &s])));
            }
            "Transpose" => {
                self.flush()?;
                let rank = self.dims(&a)?.len();
                let perm: Vec<i64> = n
                    .attribute
                    .iter()
                    .find(|t| t.name == "perm")
                    .map(|t| t.ints.clone())
                    .unwrap_or_else(|| (0..rank as i64).rev().collect());
                let mut inv = vec![0i64; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    *inv.get_mut(p as usize).ok_or("Transpose: perm out of range")? = i as i64;
                }
                parts.push((0, self.node("Transpose", &[g], vec![attr("perm", A::Is(inv))])));
            }
            other => return Err(format!("internal: no gradient rule for {other}")),
        }
        for (i, part) in parts {
            if wants(i) {
                self.accumulate(&n.input[i], &ins[i], part)?;
            }
        }
        Ok(())
    }
}
