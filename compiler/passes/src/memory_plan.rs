//! Static memory plan: where every value lives while the model runs.
//!
//! Values computed inside the model get offsets in one arena (the workspace the caller
//! passes to `run`). Two values share bytes only when their live ranges (definition to
//! last use, in execution order) do not overlap. Placement is greedy by size, largest
//! first, at the lowest 64-byte-aligned offset free for the whole live range. A value
//! that is a model output is written straight into the caller's output buffer.
//!
//! Sizes that depend on run-time dims are planned the same way, in regions after the
//! fixed ones: a value of `c * K` bytes, where `K` is an expression of the symbols whose
//! coefficients share no factor (`N`, `N*S`) and `c` a constant, goes into the region of
//! `K`, planned with `c` bytes per unit of `K`. Every offset in that region is a multiple
//! of `K`, so the layout that holds for one unit holds for every value of the dims; the
//! region starts after the fixed arena and the regions before it, each scaled by its
//! own `K` at run time.
//!
//! Views cost nothing: the result of a Reshape, Flatten, Identity or Bind (row-major data is
//! unchanged) lives where its operand lives, and its uses extend the operand's live
//! range; no kernel runs for it. Only a view that is itself a model output is copied.
use dlc_ir::{Expr, Graph, NodeId, Op, TensorType, Value};
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
    /// `offset * K` bytes into region `region` of the arena, whose unit is `K` (see
    /// [`MemoryPlan::regions`]): a value whose size depends on run-time dims.
    Scaled {
        /// The region.
        region: u32,
        /// Offset in units of the region's `K`.
        offset: u64,
    },
}

/// A region of the arena for values whose sizes are multiples of one expression `K`
/// of run-time dims.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// `K`: an expression over symbols whose coefficients share no factor.
    pub unit: Expr,
    /// The region's size in units of `K`.
    pub size: u64,
}

/// The plan for one graph and one execution order.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    /// Execution order of the nodes.
    pub order: Vec<NodeId>,
    /// Location of every value.
    pub locations: HashMap<Value, Location>,
    /// Bytes of arena the model needs at every shape (the fixed part, before the
    /// regions).
    pub arena_bytes: u64,
    /// Regions for values whose sizes depend on run-time dims, after the fixed arena in
    /// this order (empty when every shape is fixed).
    pub regions: Vec<Region>,
    /// Sum of the sizes of fixed-size arena values, what a plan without reuse would
    /// need.
    pub unshared_bytes: u64,
    /// Nodes whose result shares its operand's bytes (no kernel runs for them).
    pub views: HashSet<NodeId>,
    /// Each loop's workspace (its state and its body's arena, see [`LoopLayout`]): where
    /// it starts. No other value shares it.
    pub loops: HashMap<NodeId, (Location, LoopLayout)>,
    /// Each if's workspace (its branches' arenas, see [`IfLayout`]): where it starts. No
    /// other value shares it.
    pub ifs: HashMap<NodeId, (Location, IfLayout)>,
}

/// An if's workspace: its branches' arenas (each branch's own plan; its inputs are the
/// if's operands and its outputs the if's results, which live outside it). Only one
/// branch runs, so they share it when both sizes are known when compiling, else the
/// else-branch's follows the then-branch's.
#[derive(Debug, Clone)]
pub struct IfLayout {
    /// Where the else-branch's arena starts (the then-branch's at 0).
    pub els: Expr,
    /// The workspace's size.
    pub bytes: Expr,
    /// The then-branch's plan.
    pub then_plan: Box<MemoryPlan>,
    /// The else-branch's plan.
    pub els_plan: Box<MemoryPlan>,
}

/// The workspace layout of if `op` (its branches planned by [`plan_memory`]).
pub fn if_layout(op: &dlc_ir::ops::If) -> Result<IfLayout, dlc_ir::IrError> {
    let (then_plan, els_plan) = (plan_memory(&op.then.0)?, plan_memory(&op.els.0)?);
    let (a, b) = (then_plan.arena_expr(), els_plan.arena_expr());
    let (els, bytes) = match (a.as_const(), b.as_const()) {
        (Some(x), Some(y)) => (Expr::c(0), Expr::c(x.max(y))),
        _ => {
            let at = align(&a);
            let end = &at + &b;
            (at, end)
        }
    };
    Ok(IfLayout { els, bytes, then_plan: Box::new(then_plan), els_plan: Box::new(els_plan) })
}

/// A loop's workspace: byte offsets from its start of the iteration number (8 bytes),
/// the condition and the body's condition (1 byte each), the carried values' current
/// and next values, each scan output's value for one iteration, then the body's arena
/// (the body's own plan).
#[derive(Debug, Clone)]
pub struct LoopLayout {
    /// The iteration number (i64).
    pub iter: Expr,
    /// The condition checked before each iteration.
    pub cond: Expr,
    /// The body's condition output.
    pub cond_out: Expr,
    /// The carried values (the body's inputs).
    pub state: Vec<Expr>,
    /// Their next values (the body's outputs).
    pub next: Vec<Expr>,
    /// One iteration's scan outputs.
    pub scans: Vec<Expr>,
    /// The body's arena.
    pub body: Expr,
    /// The workspace's size.
    pub bytes: Expr,
    /// The body's plan.
    pub plan: Box<MemoryPlan>,
}

/// `e` rounded up to [`ARENA_ALIGN`].
fn align(e: &Expr) -> Expr {
    let a = Expr::c(ARENA_ALIGN as i64);
    &(e + &Expr::c(ARENA_ALIGN as i64 - 1)).floor_div(&a) * &a
}

/// The workspace layout of loop `l` (its body planned by [`plan_memory`]).
pub fn loop_layout(l: &dlc_ir::ops::Loop) -> Result<LoopLayout, dlc_ir::IrError> {
    let g = &*l.body.0;
    let plan = plan_memory(g)?;
    let bytes_of = |t: &TensorType| t.shape.0.iter().fold(Expr::c(t.dtype.size() as i64), |a, d| &a * &d.expr());
    let mut at = Expr::c(0);
    let mut take = |size: Expr| {
        let here = at.clone();
        at = align(&(&at + &size));
        here
    };
    let (iter, cond, cond_out) = (take(Expr::c(8)), take(Expr::c(1)), take(Expr::c(1)));
    let n = l.carried as usize;
    let first = usize::from(l.check);
    let ins: Vec<TensorType> = g.inputs().iter().map(|&id| g.node(id).outputs[0].clone()).collect();
    let outs: Vec<TensorType> = g.outputs().iter().map(|(_, v)| g.value_type(*v).clone()).collect();
    let state = ins[2..2 + n].iter().map(|t| take(bytes_of(t))).collect();
    let next = outs[first..first + n].iter().map(|t| take(bytes_of(t))).collect();
    let scans = outs[first + n..].iter().map(|t| take(bytes_of(t))).collect();
    let body = take(plan.arena_expr());
    Ok(LoopLayout { iter, cond, cond_out, state, next, scans, body, bytes: at, plan: Box::new(plan) })
}

impl MemoryPlan {
    /// The location of `v`.
    pub fn loc(&self, v: Value) -> Location {
        self.locations[&v]
    }

    /// Where region `r` starts, in bytes (an expression of the run-time dims).
    pub fn region_start(&self, r: usize) -> Expr {
        self.regions[..r].iter().fold(Expr::c(self.arena_bytes as i64), |a, g| &a + &g.unit.scale(g.size as i64))
    }

    /// The arena's size in bytes (an expression of the run-time dims).
    pub fn arena_expr(&self) -> Expr {
        self.region_start(self.regions.len())
    }

    /// The byte offset of an arena location (`None` for other locations).
    pub fn offset_expr(&self, l: Location) -> Option<Expr> {
        match l {
            Location::Arena(off) => Some(Expr::c(off as i64)),
            Location::Scaled { region, offset } => {
                let r = region as usize;
                Some(&self.region_start(r) + &self.regions[r].unit.scale(offset as i64))
            }
            _ => None,
        }
    }
}

/// The size of a value of type `t` in bytes, as `(c, K)`: `c` bytes per unit of `K`,
/// `K` an expression whose coefficients share no factor (`K = 1` for a fixed shape).
pub fn size_units(t: &TensorType) -> (u64, Expr) {
    units_of(t.shape.0.iter().fold(Expr::c(t.dtype.size() as i64), |a, d| &a * &d.expr()))
}

/// A size `e` in bytes as `(c, K)` (see [`size_units`]).
fn units_of(e: Expr) -> (u64, Expr) {
    if let Some(c) = e.as_const() {
        return (c.max(0) as u64, Expr::c(1));
    }
    let g = e.terms().fold(0i64, |g, (_, c)| {
        let (mut a, mut b) = (g.abs(), c.abs());
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    });
    (g as u64, e.floor_div(&Expr::c(g)))
}

/// Builds the plan.
pub fn plan_memory(g: &Graph) -> Result<MemoryPlan, dlc_ir::IrError> {
    let order = g.topo_order()?;
    let bounds = dlc_ir::bind::value_bounds(g)?;
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
        if matches!(
            node.op,
            Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_) | Op::BitCast(_) | Op::View(_) | Op::Bind(_)
        ) && !locations.contains_key(&v)
        {
            let u = g.operands(id)[0];
            root.insert(v, root.get(&u).copied().unwrap_or(u));
            views.insert(id);
        }
    }
    // The last step at which each owning value is read, through any of its views.
    let mut last_use: HashMap<Value, usize> = HashMap::new();
    for &id in &order {
        let operands = g.operands(id);
        // A view reads nothing, except a Bind: its kernel reads its shape operand.
        let read = match (&g.node(id).op, views.contains(&id)) {
            (_, false) => &operands[..],
            (Op::Bind(_), true) => &operands[1..],
            (_, true) => continue,
        };
        for &u in read {
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
    // Live ranges of arena values: [definition step, last use step], and their regions
    // (by unit; the fixed one first).
    let mut ranges: Vec<(Value, u64, usize, usize, usize)> = Vec::new();
    let mut units: Vec<Expr> = vec![Expr::c(1)];
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
            let (size, unit) = match bounds.get(&v) {
                // Dims computed from tensor values: planned at their bound.
                Some(n) => units_of(&Expr::c(g.value_type(v).dtype.size() as i64) * n),
                None => size_units(g.value_type(v)),
            };
            let region = match units.iter().position(|u| *u == unit) {
                Some(r) => r,
                None => {
                    units.push(unit);
                    units.len() - 1
                }
            };
            ranges.push((v, size, step[&id], last, region));
        }
    }
    ranges.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    // Per region (0: the fixed one): offset, size, def, last of what is placed.
    let mut placed: Vec<Vec<(u64, u64, usize, usize)>> = vec![Vec::new(); units.len()];
    let mut sizes = vec![0u64; units.len()];
    let mut unshared_bytes = 0;
    for (v, size, def, last, region) in ranges {
        let size_al = size.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
        if region == 0 {
            unshared_bytes += size_al;
        }
        let mut conflicts: Vec<(u64, u64)> =
            placed[region].iter().filter(|p| p.2 <= last && def <= p.3).map(|p| (p.0, p.0 + p.1)).collect();
        conflicts.sort();
        let mut offset = 0;
        for (lo, hi) in conflicts {
            if offset + size_al <= lo {
                break;
            }
            offset = offset.max(hi.div_ceil(ARENA_ALIGN) * ARENA_ALIGN);
        }
        placed[region].push((offset, size_al, def, last));
        sizes[region] = sizes[region].max(offset + size_al);
        let loc =
            if region == 0 { Location::Arena(offset) } else { Location::Scaled { region: region as u32 - 1, offset } };
        locations.insert(v, loc);
    }
    let mut arena_bytes = sizes[0];
    let mut regions: Vec<Region> =
        units.into_iter().zip(sizes).skip(1).map(|(unit, size)| Region { unit, size }).collect();
    // Each loop's workspace: after the fixed arena when its size is known, else in a
    // region of its own after the others.
    let (mut loops, mut ifs) = (HashMap::new(), HashMap::new());
    let mut place = |bytes: &Expr| match bytes.as_const() {
        Some(b) => {
            let off = arena_bytes.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
            arena_bytes = off + b.max(0) as u64;
            Location::Arena(off)
        }
        None => {
            let (size, unit) = units_of(bytes.clone());
            regions.push(Region { unit, size: size.div_ceil(ARENA_ALIGN) * ARENA_ALIGN });
            Location::Scaled { region: regions.len() as u32 - 1, offset: 0 }
        }
    };
    for &id in &order {
        match &g.node(id).op {
            Op::Loop(l) => {
                let layout = loop_layout(l)?;
                loops.insert(id, (place(&layout.bytes), layout));
            }
            Op::If(op) => {
                let layout = if_layout(op)?;
                ifs.insert(id, (place(&layout.bytes), layout));
            }
            _ => {}
        }
    }
    for &id in &order {
        if views.contains(&id) {
            let v = Value { node: id, port: 0 };
            locations.insert(v, locations[&root[&v]]);
        }
    }
    Ok(MemoryPlan { order, locations, arena_bytes, regions, unshared_bytes, views, loops, ifs })
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

    #[test]
    fn symbolic_sizes_get_regions_and_the_arena_is_an_expression() {
        use dlc_ir::ops::Concat;
        use dlc_ir::{Dim, Expr, Shape};
        let mut g = Graph::new("sym");
        let n = Dim::sym("N");
        let x = g.add_input("x", TensorType { dtype: DType::F32, shape: Shape(vec![n.clone(), Dim::Fixed(16)]) });
        let c = g.add_input("c", TensorType::fixed(DType::F32, &[8]));
        // Three N*64-byte values in a chain (two live at once), one 2*N*64-byte
        // concat of two of them, and fixed-size temporaries.
        let a = g.add_node("a", Relu {}, &[x]).unwrap()[0];
        let b = g.add_node("b", Relu {}, &[a]).unwrap()[0];
        let cat = g.add_node("cat", Concat { axis: 0 }, &[a, b]).unwrap()[0];
        let d = g.add_node("d", Relu {}, &[cat]).unwrap()[0];
        let f1 = g.add_node("f1", Relu {}, &[c]).unwrap()[0];
        let f2 = g.add_node("f2", Relu {}, &[f1]).unwrap()[0];
        g.add_output("y", d);
        g.add_output("z", f2);
        let plan = plan_memory(&g).unwrap();
        // One region in units of N (64-byte slots); fixed values in the constant part.
        assert_eq!(plan.regions.len(), 1);
        assert_eq!(plan.regions[0].unit, Expr::sym("N"));
        assert!(matches!(plan.loc(f1), Location::Arena(_)));
        let (la, lb, lcat) = (plan.loc(a), plan.loc(b), plan.loc(cat));
        for l in [la, lb, lcat] {
            assert!(matches!(l, Location::Scaled { region: 0, .. }), "{l:?}");
        }
        // a, b and cat are live together: 64 + 64 + 128 units of N, none overlapping.
        let span = |l: Location, units: u64| match l {
            Location::Scaled { offset, .. } => (offset, offset + units),
            _ => unreachable!(),
        };
        let spans = [span(la, 64), span(lb, 64), span(lcat, 128)];
        for i in 0..3 {
            for j in i + 1..3 {
                assert!(spans[i].1 <= spans[j].0 || spans[j].1 <= spans[i].0, "{spans:?}");
            }
        }
        assert_eq!(plan.regions[0].size, 256);
        assert_eq!(plan.arena_expr(), &Expr::c(plan.arena_bytes as i64) + &Expr::sym("N").scale(256));
        assert_eq!(
            plan.offset_expr(lb).unwrap(),
            &Expr::c(plan.arena_bytes as i64) + &Expr::sym("N").scale(span(lb, 0).0 as i64)
        );
    }
}
