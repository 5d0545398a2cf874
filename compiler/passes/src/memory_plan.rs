//! Static memory plan: where every value lives while the model runs.
//!
//! Values computed inside the model get offsets in one arena (the workspace the caller
//! passes to `run`). Two values share bytes only when their live ranges (definition to
//! last use, in execution order) do not overlap. Placement is greedy by size, largest
//! first, at the lowest 64-byte-aligned offset free for the whole live range. A value
//! that is a model output is written straight into the caller's output buffer.
use dlc_ir::{Graph, NodeId, Op, Value};
use std::collections::HashMap;

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
    // Live ranges of arena values: [definition step, last use step].
    let mut ranges: Vec<(Value, u64, usize, usize)> = Vec::new();
    for &id in &order {
        let node = g.node(id);
        if let Op::Const(_) = node.op {
            locations.insert(Value { node: id, port: 0 }, Location::Const(id));
            continue;
        }
        for port in 0..node.outputs.len() as u32 {
            let v = Value { node: id, port };
            if locations.contains_key(&v) {
                continue;
            }
            let last = g.users(id).iter().filter(|u| u.2 == port).map(|u| step[&u.0]).max().unwrap_or(step[&id]);
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
    Ok(MemoryPlan { order, locations, arena_bytes, unshared_bytes })
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
}
