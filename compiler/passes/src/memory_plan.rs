//! Static memory plan: where every value lives while the model runs.
//!
//! Values computed inside the model get offsets in one arena (the workspace the caller
//! passes to `run`). Two values share bytes only when their live ranges (definition to
//! last use, in execution order) do not overlap. Placement is greedy by size, largest
//! first, at the lowest 64-byte-aligned offset free for the whole live range. A value
//! that is a model output is written straight into the caller's output buffer.
//!
//! Sizes that depend on run-time dims go in regions after the fixed arena, each an
//! expression `K` of the symbols times a constant, laid out one of two ways (the one
//! smaller with every symbol at 224 is kept, `unit_regions` and `slot_regions`):
//! by unit, a value of `c * K` bytes in the region of `K`, packed as fixed values are
//! with `c` bytes per unit of `K` (every offset a multiple of `K`, so the layout that
//! holds for one unit holds for every value of the dims); or in slots, regions of one
//! unit whose `K` is the maximum of the sizes of the values that take turns in it
//! (values of different sizes share bytes, a CNN's layers at each of its scales).
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

/// A region of the arena for values whose sizes depend on run-time dims: `size` units
/// of an expression `K` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// `K`: an expression over symbols whose coefficients share no factor (regions by
    /// unit), or a slot's size in bytes (the maximum of its values' sizes; `size` 1).
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
    let state = ins[2..2 + n].iter().map(|t| take(value_bytes(t))).collect();
    let next = outs[first..first + n].iter().map(|t| take(value_bytes(t))).collect();
    let scans = outs[first + n..].iter().map(|t| take(value_bytes(t))).collect();
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
    units_of(value_bytes(t))
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

/// An arena value whose size depends on run-time dims.
struct Symbolic {
    v: Value,
    /// Its size in bytes.
    bytes: Expr,
    /// [`nominal_bytes`] of it.
    nominal: u64,
    def: usize,
    last: usize,
}

/// The dim every symbol takes where the plan compares sizes that depend on run-time dims
/// (which value is larger, which layout is smaller): an ImageNet-sized image, a
/// 224-token sequence, a batch of 224 (the plan holds at every value; only how
/// compact it is depends on this).
const NOMINAL_DIM: i64 = 224;

/// `e` with every symbol at [`NOMINAL_DIM`] (`u64::MAX` where that does not evaluate).
fn nominal_bytes(e: &Expr) -> u64 {
    let mut names = Vec::new();
    e.symbols(&mut names);
    let env: std::collections::BTreeMap<String, i64> = names.into_iter().map(|n| (n, NOMINAL_DIM)).collect();
    e.eval(&env).map_or(u64::MAX, |v| v.max(0) as u64)
}

/// The size of a value of type `t` in bytes.
fn value_bytes(t: &TensorType) -> Expr {
    t.shape.0.iter().fold(Expr::c(t.dtype.size() as i64), |a, d| &a * &d.expr())
}

/// Greedy placement of `(size, def, last)` values (largest first: the caller sorts),
/// each at the lowest 64-byte-aligned offset free for its whole live range: the offsets
/// and the bytes they span.
fn pack(items: impl Iterator<Item = (u64, usize, usize)>) -> (Vec<u64>, u64) {
    let mut placed: Vec<(u64, u64, usize, usize)> = Vec::new();
    let mut total = 0;
    let offsets = items
        .map(|(size, def, last)| {
            let size_al = size.div_ceil(ARENA_ALIGN) * ARENA_ALIGN;
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
            total = total.max(offset + size_al);
            offset
        })
        .collect();
    (offsets, total)
}

/// Regions by unit: a value of `c * K` bytes, where `K` is an expression of the symbols
/// whose coefficients share no factor (`N`, `N*S`) and `c` a constant, goes into the
/// region of `K`, packed with `c` bytes per unit of `K`. Every offset in that region is a
/// multiple of `K`, so the layout that holds for one unit holds for every value of the
/// dims. Values of one unit share bytes as fixed ones do; values of two never.
fn unit_regions(values: &[Symbolic]) -> (Vec<Region>, Vec<Location>) {
    let units: Vec<(u64, Expr)> = values.iter().map(|s| units_of(s.bytes.clone())).collect();
    let mut distinct: Vec<&Expr> = Vec::new();
    for (_, u) in &units {
        if !distinct.contains(&u) {
            distinct.push(u);
        }
    }
    let mut locs = vec![Location::Arena(0); values.len()];
    let regions = distinct
        .iter()
        .enumerate()
        .map(|(r, &unit)| {
            let mut order: Vec<usize> = (0..values.len()).filter(|&i| units[i].1 == *unit).collect();
            order.sort_by(|&a, &b| units[b].0.cmp(&units[a].0).then(values[a].def.cmp(&values[b].def)));
            let (offsets, size) = pack(order.iter().map(|&i| (units[i].0, values[i].def, values[i].last)));
            for (&i, off) in order.iter().zip(offsets) {
                locs[i] = Location::Scaled { region: r as u32, offset: off };
            }
            Region { unit: unit.clone(), size }
        })
        .collect();
    (regions, locs)
}

/// Slots: each value goes into a slot whose values' live ranges it does not overlap
/// (the smallest at the nominal dims that is at least as large, else the largest), or
/// a new one; a slot's size is the maximum of its values' sizes, 64-byte aligned, and
/// is a region of one unit. Values of different shapes share bytes (a CNN's layers at
/// each scale, whose sizes are different expressions of the image dims) at the price
/// of each slot holding one value at a time. `values` come largest first.
fn slot_regions(values: &[Symbolic]) -> (Vec<Region>, Vec<Location>) {
    /// A slot: its size in bytes, that at the nominal dims, and its values' live ranges.
    struct Slot {
        bytes: Expr,
        nominal: u64,
        lives: Vec<(usize, usize)>,
    }
    let mut slots: Vec<Slot> = Vec::new();
    let locs = values
        .iter()
        .map(|s| {
            let free = |slot: &Slot| slot.lives.iter().all(|&(d, l)| l < s.def || s.last < d);
            let fits = (0..slots.len())
                .filter(|&i| free(&slots[i]) && slots[i].nominal >= s.nominal)
                .min_by_key(|&i| slots[i].nominal);
            let pick = fits.or_else(|| (0..slots.len()).filter(|&i| free(&slots[i])).max_by_key(|&i| slots[i].nominal));
            let bytes = align(&s.bytes);
            let i = match pick {
                Some(i) => {
                    let slot = &mut slots[i];
                    slot.bytes = slot.bytes.max_with(&bytes);
                    slot.nominal = slot.nominal.max(s.nominal);
                    slot.lives.push((s.def, s.last));
                    i
                }
                None => {
                    slots.push(Slot { bytes, nominal: s.nominal, lives: vec![(s.def, s.last)] });
                    slots.len() - 1
                }
            };
            Location::Scaled { region: i as u32, offset: 0 }
        })
        .collect();
    (slots.into_iter().map(|s| Region { unit: s.bytes, size: 1 }).collect(), locs)
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
    // Live ranges of arena values: [definition step, last use step]; fixed sizes in
    // the fixed arena, sizes that depend on run-time dims in regions after it.
    let mut fixed: Vec<(Value, u64, usize, usize)> = Vec::new();
    let mut symbolic: Vec<Symbolic> = Vec::new();
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
            let bytes = match bounds.get(&v) {
                // Dims computed from tensor values: planned at their bound.
                Some(n) => &Expr::c(g.value_type(v).dtype.size() as i64) * n,
                None => value_bytes(g.value_type(v)),
            };
            match bytes.as_const() {
                Some(c) => fixed.push((v, c.max(0) as u64, step[&id], last)),
                None => symbolic.push(Symbolic { v, nominal: nominal_bytes(&bytes), bytes, def: step[&id], last }),
            }
        }
    }
    fixed.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    let (offsets, mut arena_bytes) = pack(fixed.iter().map(|f| (f.1, f.2, f.3)));
    let unshared_bytes = fixed.iter().map(|f| f.1.div_ceil(ARENA_ALIGN) * ARENA_ALIGN).sum();
    for (f, off) in fixed.iter().zip(offsets) {
        locations.insert(f.0, Location::Arena(off));
    }
    symbolic.sort_by(|a, b| b.nominal.cmp(&a.nominal).then(a.def.cmp(&b.def)).then(a.v.cmp(&b.v)));
    // Two layouts for them, the one smaller at the nominal dims kept: regions by unit
    // (values of one unit share by offsets, values of two units never), or slots
    // (values of any sizes share a slot whose size is their maximum, one at a time).
    let by_unit = unit_regions(&symbolic);
    let slots = slot_regions(&symbolic);
    let nominal = |r: &(Vec<Region>, Vec<Location>)| -> u64 {
        r.0.iter().map(|g| nominal_bytes(&g.unit).saturating_mul(g.size)).fold(0u64, u64::saturating_add)
    };
    let (mut regions, locs) = if nominal(&slots) < nominal(&by_unit) { slots } else { by_unit };
    for (s, l) in symbolic.iter().zip(locs) {
        locations.insert(s.v, l);
    }
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

    #[test]
    fn values_of_different_run_time_sizes_share_slots() {
        use dlc_ir::{Dim, Shape};
        use std::collections::BTreeMap;
        // Two chains over inputs of run-time sizes N and M (two units, as a CNN's scales
        // are): each chain's two temporaries are live together, the chains one after
        // the other. Regions by unit need 128 bytes per N plus 128 per M; two slots
        // of max(64 N, 64 M) each hold one value of each chain.
        let mut g = Graph::new("scales");
        let row = |s: &str| TensorType { dtype: DType::F32, shape: Shape(vec![Dim::sym(s), Dim::Fixed(16)]) };
        let x = g.add_input("x", row("N"));
        let y = g.add_input("y", row("M"));
        let a = g.add_node("a", Relu {}, &[x]).unwrap()[0];
        let a2 = g.add_node("a2", Relu {}, &[a]).unwrap()[0];
        let a3 = g.add_node("a3", dlc_ir::ops::Add {}, &[a, a2]).unwrap()[0];
        let b = g.add_node("b", Relu {}, &[y]).unwrap()[0];
        let b2 = g.add_node("b2", Relu {}, &[b]).unwrap()[0];
        let b3 = g.add_node("b3", dlc_ir::ops::Add {}, &[b, b2]).unwrap()[0];
        g.add_output("p", a3);
        g.add_output("q", b3);
        let plan = plan_memory(&g).unwrap();
        assert_eq!(plan.regions.len(), 2, "{:?}", plan.regions);
        assert!(plan.regions.iter().all(|r| r.size == 1));
        // At any dims, values live together never overlap, and all lie in the arena.
        for (n, m) in [(1, 1), (3, 1000), (1000, 3), (7, 7)] {
            let env: BTreeMap<String, i64> = [("N".to_string(), n), ("M".to_string(), m)].into();
            let span = |v: Value, rows: i64| {
                let at = plan.offset_expr(plan.loc(v)).unwrap().eval(&env).unwrap();
                (at, at + rows * 64)
            };
            let arena = plan.arena_expr().eval(&env).unwrap();
            for (p, q, rows) in [(a, a2, n), (b, b2, m)] {
                let (sp, sq) = (span(p, rows), span(q, rows));
                assert!(sp.1 <= sq.0 || sq.1 <= sp.0, "{sp:?} {sq:?} at N={n} M={m}");
                assert!(sp.1 <= arena && sq.1 <= arena);
                assert_eq!(sp.0 % ARENA_ALIGN as i64, 0);
            }
            assert_eq!(arena, 2 * 64 * n.max(m), "at N={n} M={m}");
        }
    }
}
