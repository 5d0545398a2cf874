//! Static memory plan: where every value lives while the model runs.
//!
//! Values computed inside the model get offsets in one arena (the workspace the caller
//! passes to `run`). Two values share bytes only when their live ranges (definition to
//! last use, in execution order) do not overlap. Placement is greedy by size, largest
//! first, at the lowest 64-byte-aligned offset free for the whole live range. A value
//! that is a model output is written straight into the caller's output buffer.
//!
//! Views cost nothing: the result of a Reshape, Flatten or Identity (row-major data is
//! unchanged) lives where its operand lives, and its uses extend the operand's live
//! range; no kernel runs for it. Only a view that is itself a model output is copied.
use dlc_ir::{Graph, NodeId, Op, Value};
use std::collections::{HashMap, HashSet};

/// Alignment of every arena offset, in bytes (a cache line; fits any vector width).
pub const ARENA_ALIGN: u64 = 64;

/// Where a value lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Model input number `i` (the caller's buffer).
    Input(usize),
    /// Model output number `i` (the caller's buffer).
    Output(usize),
    /// The constant of this node (read-only data in the artifact).
    Const(NodeId),
    /// `offset` bytes into the arena.
    Arena(u64),
}

/// The plan for one graph and one execution order.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    /// Execution order of the nodes.
    pub order: Vec<NodeId>,
    /// Location of every value.
    pub locations: HashMap<Value, Location>,
    /// Bytes of arena the model needs.
    pub arena_bytes: u64,
    /// Sum of the sizes of arena values, what a plan without reuse would need.
    pub unshared_bytes: u64,
    /// Nodes whose result shares its operand's bytes (no kernel runs for them).
    pub views: HashSet<NodeId>,
}

impl MemoryPlan {
    /// The location of `v`.
    pub fn loc(&self, v: Value) -> Location {
        self.locations[&v]
    }
}

/// Builds the plan. Every value must have a fixed shape (the caller checks).
pub fn plan_memory(g: &Graph) -> Result<MemoryPlan, dlc_ir::IrError> {
    let order = g.topo_order()?;
    let step: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut locations = HashMap::new();
    for (i, &id) in g.inputs().iter().enumerate() {
        locations.insert(Value { node: id, port: 0 }, Location::Input(i));
    }
    for (i, (_, v)) in g.outputs().iter().enumerate() {
        let computed = !matches!(g.node(v.node).op, Op::Input(_) | Op::Const(_));
        if computed && !locations.contains_key(v) {
            locations.insert(*v, Location::Output(i));
        }
    }
    // Views share their operand's location: `root` maps a view's result to the value
    // that owns the bytes.
    let mut root: HashMap<Value, Value> = HashMap::new();
    let mut views = HashSet::new();
    for &id in &order {
        let node = g.node(id);
        let v = Value { node: id, port: 0 };
        if matches!(node.op, Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_)) && !locations.contains_key(&v) {
            let u = g.operands(id)[0];
            root.insert(v, root.get(&u).copied().unwrap_or(u));
            views.insert(id);
        }
    }
    // The last step at which each owning value is read, through any of its views.
    let mut last_use: HashMap<Value, usize> = HashMap::new();
    for &id in &order {
        if views.contains(&id) {
            continue;
        }
        for u in g.operands(id) {
            let owner = root.get(&u).copied().unwrap_or(u);
            let e = last_use.entry(owner).or_insert(step[&id]);
            *e = (*e).max(step[&id]);
        }
    }
    for (_, v) in g.outputs() {
        // A view that is an output is copied at the end of `run`.
        let owner = root.get(v).copied().unwrap_or(*v);
        last_use.insert(owner, order.len());
    }
    // Live ranges of arena values: [definition step, last use step].
    let mut ranges: Vec<(Value, u64, usize, usize)> = Vec::new();
    for &id in &order {
        let node = g.node(id);
        if let Op::Const(_) = node.op {
            locations.insert(Value { node: id, port: 0 }, Location::Const(id));
            continue;
        }
        if views.contains(&id) {
            continue;
        }
        for port in 0..node.outputs.len() as u32 {
            let v = Value { node: id, port };
            if locations.contains_key(&v) {
                continue;
            }
            let last = last_use.get(&v).copied().unwrap_or(step[&id]);
            let size = g.value_type(v).size_bytes().unwrap_or(0);
            ranges.push((v, size, step[&id], last));
        }
    }
    ranges.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    let mut placed: Vec<(u64, u64, usize, usize)> = Vec::new(); // offset, size, def, last
    let mut arena_bytes = 0;
    let mut unshared_bytes = 0;
    for (v, size, def, last) in ranges {
        let size_al = size.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        unshared_bytes += size_al;
        let mut conflicts: Vec<(u64, u64)> =
            placed.iter().filter(|p| p.2 <= last && def <= p.3).map(|p| (p.0, p.0 + p.1)).collect();
        conflicts.sort();
        let mut offset = 0;
        for (lo, hi) in conflicts {
            if offset + size_al <= lo {
                break;
            }
            offset = offset.max(hi.div_ceil(ARENA_ALIGN) * ARENA_ALIGN);
        }
        placed.push((offset, size_al, def, last));
        arena_bytes = arena_bytes.max(offset + size_al);
        locations.insert(v, Location::Arena(offset));
    }
    for &id in &order {
        if views.contains(&id) {
            let v = Value { node: id, port: 0 };
            locations.insert(v, locations[&root[&v]]);
        }
    }
    Ok(MemoryPlan { order, locations, arena_bytes, unshared_bytes, views })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::Relu;
    use dlc_ir::{DType, TensorType};

    #[test]
    fn chain_reuses_arena_and_writes_output_directly() {
        let mut g = Graph::new("chain");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[16]));
        let mut v = x;
        for i in 0..4 {
            v = g.add_node(format!("r{i}"), Relu {}, &[v]).unwrap()[0];
        }
        g.add_output("y", v);
        let plan = plan_memory(&g).unwrap();
        assert_eq!(plan.loc(v), Location::Output(0));
        assert_eq!(plan.loc(x), Location::Input(0));
        // r0 -> r1 -> r2 -> y: at most two 64-byte slots are live at once.
        assert_eq!(plan.arena_bytes, 128);
        assert_eq!(plan.unshared_bytes, 192);
    }

    #[test]
    fn reshapes_are_views_that_keep_their_operand_alive() {
        use dlc_ir::ops::{Add, Reshape};
        let mut g = Graph::new("views");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[4, 4]));
        let a = g.add_node("a", Relu {}, &[x]).unwrap()[0];
        let r = g.add_node("r", Reshape { shape: vec![16], allowzero: false }, &[a]).unwrap()[0];
        let r2 = g.add_node("r2", Reshape { shape: vec![4, 4], allowzero: false }, &[r]).unwrap()[0];
        let b = g.add_node("b", Relu {}, &[x]).unwrap()[0];
        let c = g.add_node("c", Add {}, &[b, r2]).unwrap()[0];
        g.add_output("y", c);
        let plan = plan_memory(&g).unwrap();
        assert!(plan.views.contains(&r.node) && plan.views.contains(&r2.node));
        assert_eq!(plan.loc(r2), plan.loc(a));
        // `a` is read (through r2) after `b` is made, so they must not share bytes.
        assert_ne!(plan.loc(a), plan.loc(b));
        // A view that is a model output is not a view: it is copied into the output.
        let mut g2 = Graph::new("out_view");
        let x = g2.add_input("x", TensorType::fixed(DType::F32, &[4, 4]));
        let a = g2.add_node("a", Relu {}, &[x]).unwrap()[0];
        let r = g2.add_node("r", Reshape { shape: vec![16], allowzero: false }, &[a]).unwrap()[0];
        g2.add_output("y", r);
        let plan = plan_memory(&g2).unwrap();
        assert!(plan.views.is_empty());
        assert_eq!(plan.loc(r), Location::Output(0));
    }
}
