//! Moves transposes down through per-element ops so that they meet and cancel.
//!
//! The int8 convolutions compute channels-last (`patches` reads an NHWC image,
//! `int_matmul` writes pixels by channels), and the importer moves each result back to
//! NCHW, as ONNX has it, with a transpose; the next convolution moves its input to NHWC
//! again. Between the two lie only per-element ops: the conv's scale and bias, the
//! activation, the residual add and the next layer's quantization, all of which give the
//! same values in either layout. This pass finds, for a transpose, the region of
//! per-element ops its result flows into (joining other transposes of the same
//! permutation that feed the same ops), and computes the region in the transposes'
//! input layout instead: constant operands are permuted to match, operands of one
//! element broadcast as before, and a transpose is put back only where a value leaves
//! the region for an op that needs the original layout. A transpose leaving the region
//! composes with the one moved down (none at all when the two cancel); the greatest or
//! least of all elements (DynamicQuantizeLinear's range) reads the region's values in
//! either layout, so it needs none.
//!
//! A region is rewritten only when that removes transposes: the seeds and the
//! transposes leaving it that cancel, against the values that need a transpose put back.
//! So a graph without such a pair (a float CNN in NCHW, a transformer whose transposes
//! feed matrix products) is left as it was.
//!
//! Contract: the rewritten graph computes the same values bit for bit (per-element ops
//! are evaluated on the same operand values, only stored in another order); every
//! applied rewrite leaves fewer transposes than it found.
use crate::{Changed, Pass, PassCx, PassError};
use dlc_ir::ops::{compose_perms, inverse_perm, is_identity_perm, Transpose};
use dlc_ir::{Dim, Graph, NodeId, Op, TensorData, TensorType, Value};
use std::collections::{HashMap, HashSet};

/// See the module doc.
pub struct TransposeSink;

impl Pass for TransposeSink {
    fn name(&self) -> &'static str {
        "transpose-sink"
    }

    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let invalid = |source| PassError::Invalid { pass: "transpose-sink", source: Box::new(source) };
        let mut changed = Changed::No;
        // Each rewrite removes at least one transpose, so this ends.
        loop {
            let order = g.topo_order().map_err(invalid)?;
            let found = order.iter().find_map(|&id| region(g, id).filter(|r| r.gain(g) > 0));
            let Some(r) = found else { break };
            apply(g, &r, &order).map_err(invalid)?;
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}

/// The transposes of one permutation and the per-element ops their results flow into.
struct Region {
    /// The permutation (`out[i] = in[perm[i]]`).
    perm: Vec<usize>,
    /// The transposes whose results enter the region.
    seeds: Vec<NodeId>,
    /// The per-element ops computed in the region.
    members: HashSet<NodeId>,
}

/// The permutation of transpose `id` when its operand's rank is known.
fn perm_of(g: &Graph, id: NodeId) -> Option<Vec<usize>> {
    let Op::Transpose(t) = &g.node(id).op else { return None };
    let x = *g.operands(id).first()?;
    Some(t.resolved_perm(g.value_type(x).shape.rank()))
}

/// Whether `op` gives each output element from the same-position elements of its
/// (broadcast) operands, whatever their layout.
fn per_element(op: &Op) -> bool {
    matches!(op, dlc_ir::pointwise!() | Op::Cast(_))
}

/// Whether node `n` gives the same result for its operand in any layout: the greatest
/// or least of all its elements (exact in any order).
fn layout_free(g: &Graph, n: NodeId, rank: usize) -> bool {
    let all = |axes: &[i64]| dlc_ir::ops::resolve_axes(axes, rank).is_some_and(|a| a.len() == rank);
    match &g.node(n).op {
        Op::ReduceMax(r) => all(&r.axes),
        Op::ReduceMin(r) => all(&r.axes),
        _ => false,
    }
}

/// Whether type `t` is one element (any rank): it broadcasts alike in any layout.
fn one_element(t: &TensorType) -> bool {
    t.shape.0.iter().all(|d| *d == Dim::Fixed(1))
}

/// The region seeded by transpose `seed`, or `None` when `seed` is not a transpose.
fn region(g: &Graph, seed: NodeId) -> Option<Region> {
    let perm = perm_of(g, seed)?;
    let rank = perm.len();
    let mut r = Region { perm, seeds: vec![seed], members: HashSet::new() };
    let mut stack = vec![seed];
    while let Some(n) = stack.pop() {
        for (user, _, _) in g.users(n) {
            if r.members.contains(&user) || r.seeds.contains(&user) {
                continue;
            }
            let node = g.node(user);
            if !per_element(&node.op) || node.outputs.len() != 1 || node.outputs[0].shape.rank() != rank {
                continue;
            }
            // Every operand in the region's layout or free of layout (see `joinable`).
            let mut joins = Joins::default();
            if !g.operands(user).iter().all(|v| joinable(g, &r, *v, &mut joins)) {
                continue;
            }
            for j in joins.seeds {
                if !r.seeds.contains(&j) {
                    r.seeds.push(j);
                    stack.push(j);
                }
            }
            for m in joins.members {
                if r.members.insert(m) {
                    stack.push(m);
                }
            }
            r.members.insert(user);
            stack.push(user);
        }
    }
    Some(r)
}

/// What an operand brings into a region: transposes of its permutation and per-element
/// ops over them.
#[derive(Default)]
struct Joins {
    seeds: Vec<NodeId>,
    members: Vec<NodeId>,
}

/// Whether value `v` can be an operand of an op of region `r`: in the region; a
/// transpose of the same permutation (which joins it); a constant of at most the
/// region's rank (permuted); one element; or a per-element op whose operands all are
/// (a residual branch computed from another transpose: it joins too). Looks back at
/// most 64 ops.
fn joinable(g: &Graph, r: &Region, v: Value, joins: &mut Joins) -> bool {
    let (p, ty) = (v.node, g.value_type(v));
    let rank = r.perm.len();
    if r.contains(p) || joins.seeds.contains(&p) || joins.members.contains(&p) {
        return true;
    }
    if matches!(g.node(p).op, Op::Transpose(_)) && perm_of(g, p).as_ref() == Some(&r.perm) {
        joins.seeds.push(p);
        return true;
    }
    if (matches!(g.node(p).op, Op::Const(_)) && ty.shape.rank() <= rank) || one_element(ty) {
        return true;
    }
    let node = g.node(p);
    if !per_element(&node.op) || node.outputs.len() != 1 || ty.shape.rank() != rank || joins.members.len() >= 64 {
        return false;
    }
    let (s, m) = (joins.seeds.len(), joins.members.len());
    joins.members.push(p);
    let operands = g.operands(p);
    let ok = operands.iter().all(|o| joinable(g, r, *o, joins))
        // A branch that reads nothing in the region's layout (only constants) does not
        // join.
        && operands.iter().any(|o| {
            let n = o.node;
            r.contains(n) || joins.seeds.contains(&n) || joins.members.contains(&n)
        });
    if !ok {
        joins.seeds.truncate(s);
        joins.members.truncate(m);
    }
    ok
}

impl Region {
    fn contains(&self, n: NodeId) -> bool {
        self.members.contains(&n) || self.seeds.contains(&n)
    }

    /// The region's values with a use outside it: `(value, the transposes among those
    /// uses, whether another use or a model output needs the original layout)`; uses
    /// that read any layout ([`layout_free`]) need nothing.
    fn exits(&self, g: &Graph) -> Vec<(Value, Vec<NodeId>, bool)> {
        let mut out = Vec::new();
        let mut nodes: Vec<NodeId> = self.seeds.iter().chain(self.members.iter()).copied().collect();
        nodes.sort();
        for n in nodes {
            let v = Value { node: n, port: 0 };
            let mut transposes = Vec::new();
            let mut needs = g.outputs().iter().any(|(_, o)| *o == v);
            let mut free = false;
            for (user, _, _) in g.users(n) {
                if self.contains(user) {
                    continue;
                }
                if matches!(g.node(user).op, Op::Transpose(_)) {
                    if !transposes.contains(&user) {
                        transposes.push(user);
                    }
                } else if layout_free(g, user, self.perm.len()) {
                    free = true;
                } else {
                    needs = true;
                }
            }
            if needs || free || !transposes.is_empty() {
                out.push((v, transposes, needs));
            }
        }
        out
    }

    /// The composition of the region's permutation and a transpose `t` after it.
    fn composed(&self, g: &Graph, t: NodeId) -> Vec<usize> {
        compose_perms(&self.perm, &perm_of(g, t).unwrap_or_default())
    }

    /// Transposes removed less transposes put back (0 when a seed reads a value of the
    /// region itself: such a region is left alone).
    fn gain(&self, g: &Graph) -> i64 {
        if self.seeds.iter().any(|&s| g.operands(s).iter().any(|v| self.contains(v.node))) {
            return 0;
        }
        let mut gain = self.seeds.len() as i64;
        for (_, transposes, needs) in self.exits(g) {
            gain -= needs as i64;
            for t in transposes {
                if is_identity_perm(&self.composed(g, t)) {
                    gain += 1;
                }
            }
        }
        gain
    }
}

/// A constant operand of a region op, in the layout before the transposes: aligned to
/// `rank` with leading ones, then permuted by the inverse of `perm`.
fn permuted_const(t: &TensorData, perm: &[usize]) -> Option<TensorData> {
    let dims = t.ty().shape.as_fixed()?;
    let rank = perm.len();
    let mut aligned = vec![1u64; rank - dims.len()];
    aligned.extend(&dims);
    let aligned = TensorData::new(TensorType::fixed(t.ty().dtype, &aligned), t.bytes().into())?;
    let inv = inverse_perm(perm);
    let op: Op = Transpose { perm: inv.iter().map(|&p| p as i64).collect() }.into();
    let out_dims: Vec<u64> = inv.iter().map(|&i| aligned.ty().shape.as_fixed().map(|d| d[i]).unwrap_or(1)).collect();
    let out = TensorType::fixed(t.ty().dtype, &out_dims);
    dlc_interp::eval(&op, &[aligned], &[out]).ok()?.pop()
}

/// Rewrites region `r` (see the module doc); `order` is a topological order of `g`.
fn apply(g: &mut Graph, r: &Region, order: &[NodeId]) -> Result<(), dlc_ir::IrError> {
    let exits = r.exits(g);
    let mut new: HashMap<NodeId, Value> = HashMap::new();
    for &s in &r.seeds {
        new.insert(s, g.operands(s)[0]);
    }
    for &n in order.iter().filter(|n| r.members.contains(n)) {
        let mut operands = Vec::new();
        for v in g.operands(n) {
            let p = v.node;
            let o = if let Some(&nv) = new.get(&p) {
                nv
            } else if let (Op::Const(c), false) = (&g.node(p).op, one_element(g.value_type(v))) {
                let t = permuted_const(&c.value, &r.perm)
                    .ok_or_else(|| dlc_ir::IrError::Invalid(format!("cannot permute constant '{}'", g.node(p).name)))?;
                let name = format!("{}/permuted", g.node(p).name);
                g.add_const(name, t)
            } else {
                v
            };
            operands.push(o);
        }
        let (name, op) = (g.node(n).name.clone(), g.node(n).op.clone());
        new.insert(n, g.add_node(name, op, &operands)?[0]);
    }
    let perm: Vec<i64> = r.perm.iter().map(|&p| p as i64).collect();
    for (v, transposes, needs) in exits {
        let nv = new[&v.node];
        for (user, port, _) in g.users(v.node) {
            if !r.contains(user) && layout_free(g, user, r.perm.len()) {
                g.set_operand(user, port, nv);
            }
        }
        for t in transposes {
            let q = r.composed(g, t);
            let out = Value { node: t, port: 0 };
            if is_identity_perm(&q) {
                g.replace_uses(out, nv);
            } else {
                let name = g.node(t).name.clone();
                let op = Transpose { perm: q.iter().map(|&p| p as i64).collect() };
                let c = g.add_node(name, op, &[nv])?[0];
                g.replace_uses(out, c);
            }
            g.remove_node(t);
        }
        if needs {
            let name = format!("{}/layout", g.node(v.node).name);
            let back = g.add_node(name, Transpose { perm: perm.clone() }, &[nv])?[0];
            // Every use left outside the region (the region's own are removed below).
            for (user, port, _) in g.users(v.node) {
                if !r.contains(user) {
                    g.set_operand(user, port, back);
                }
            }
            for i in 0..g.outputs().len() {
                if g.outputs()[i].1 == v {
                    g.set_output(i, back);
                }
            }
        }
    }
    // The old region, last user first.
    for &n in order.iter().rev() {
        if r.contains(n) && g.users(n).is_empty() {
            g.remove_node(n);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::{Add, Mul, Relu, Softmax};
    use dlc_ir::DType;

    fn transpose(g: &mut Graph, name: &str, perm: &[i64], x: Value) -> Value {
        g.add_node(name, Transpose { perm: perm.to_vec() }, &[x]).unwrap()[0]
    }

    fn transposes(g: &Graph) -> usize {
        g.node_ids().iter().filter(|&&n| matches!(g.node(n).op, Op::Transpose(_))).count()
    }

    /// Runs the pass; checks the outputs are bit for bit those of the graph before it.
    fn sink(g: &mut Graph, inputs: &[TensorData]) -> Changed {
        let before = dlc_interp::run_graph(g, inputs).unwrap();
        let changed = TransposeSink.run(g, &mut PassCx::default()).unwrap();
        dlc_ir::verify(g).unwrap();
        let after = dlc_interp::run_graph(g, inputs).unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.ty(), a.ty());
            assert_eq!(b.bytes(), a.bytes(), "values changed");
        }
        changed
    }

    fn input(g: &mut Graph, name: &str, dims: &[u64]) -> (Value, TensorData) {
        let v = g.add_input(name, TensorType::fixed(DType::F32, dims));
        let n: u64 = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37).collect();
        (v, TensorData::from_f32(dims, &data).unwrap())
    }

    /// An NHWC result moved to NCHW, scaled per channel, biased, activated, and moved
    /// to NHWC again for the next layer: no transpose is left.
    #[test]
    fn a_transpose_cancels_with_its_inverse_through_per_channel_ops() {
        let mut g = Graph::new("t");
        let (x, xd) = input(&mut g, "x", &[2, 3, 4, 5]);
        let nchw = transpose(&mut g, "nchw", &[0, 3, 1, 2], x);
        let scale: Vec<f32> = (0..5).map(|c| 0.5 + c as f32).collect();
        let scale = g.add_const("scale", TensorData::from_f32(&[5, 1, 1], &scale).unwrap());
        let y = g.add_node("scaled", Mul {}, &[nchw, scale]).unwrap()[0];
        let one = g.add_const("one", TensorData::from_f32(&[], &[1.0]).unwrap());
        let y = g.add_node("biased", Add {}, &[y, one]).unwrap()[0];
        let y = g.add_node("relu", Relu {}, &[y]).unwrap()[0];
        let nhwc = transpose(&mut g, "nhwc", &[0, 2, 3, 1], y);
        g.add_output("y", nhwc);
        assert_eq!(sink(&mut g, &[xd]), Changed::Yes);
        assert_eq!(transposes(&g), 0);
    }

    /// A residual add of two branches, each from its own transpose, whose sum feeds both
    /// a model output (NCHW) and the next layer (NHWC): the two transposes become the
    /// one the output needs.
    #[test]
    fn branches_from_transposes_of_one_permutation_join() {
        let mut g = Graph::new("t");
        let (a, ad) = input(&mut g, "a", &[1, 3, 4, 6]);
        let (b, bd) = input(&mut g, "b", &[1, 3, 4, 6]);
        let ta = transpose(&mut g, "ta", &[0, 3, 1, 2], a);
        let tb = transpose(&mut g, "tb", &[0, 3, 1, 2], b);
        let rb = g.add_node("rb", Relu {}, &[tb]).unwrap()[0];
        let sum = g.add_node("sum", Add {}, &[ta, rb]).unwrap()[0];
        let next = transpose(&mut g, "next", &[0, 2, 3, 1], sum);
        let r = g.add_node("r", Relu {}, &[next]).unwrap()[0];
        g.add_output("sum", sum);
        g.add_output("next", r);
        assert_eq!(sink(&mut g, &[ad, bd]), Changed::Yes);
        assert_eq!(transposes(&g), 1);
    }

    /// A transpose whose result only reaches an op that needs its layout (a softmax
    /// over the last axis) and a model output: moving it would remove nothing.
    #[test]
    fn a_transpose_with_nothing_to_cancel_stays() {
        let mut g = Graph::new("t");
        let (x, xd) = input(&mut g, "x", &[2, 3, 4]);
        let t = transpose(&mut g, "t", &[0, 2, 1], x);
        let y = g.add_node("relu", Relu {}, &[t]).unwrap()[0];
        let s = g.add_node("softmax", Softmax { axis: -1, mode: dlc_ir::ops::SoftmaxMode::Softmax }, &[y]).unwrap()[0];
        g.add_output("s", s);
        g.add_output("y", y);
        let before = dlc_ir::print_graph(&g).unwrap();
        assert_eq!(sink(&mut g, &[xd]), Changed::No);
        assert_eq!(dlc_ir::print_graph(&g).unwrap(), before);
    }

    /// A transpose of another permutation after the region composes with the one moved
    /// down: still one transpose, with the composed permutation, and the same values.
    #[test]
    fn a_transpose_after_the_region_composes() {
        let mut g = Graph::new("t");
        let (a, ad) = input(&mut g, "a", &[2, 3, 4]);
        let (b, bd) = input(&mut g, "b", &[2, 3, 4]);
        let ta = transpose(&mut g, "ta", &[2, 0, 1], a);
        let tb = transpose(&mut g, "tb", &[2, 0, 1], b);
        let m = g.add_node("m", Mul {}, &[ta, tb]).unwrap()[0];
        let out = transpose(&mut g, "out", &[0, 2, 1], m);
        g.add_output("out", out);
        assert_eq!(sink(&mut g, &[ad, bd]), Changed::Yes);
        assert_eq!(transposes(&g), 1);
    }

    /// A dynamically quantized layer: the range of all elements (layout-free) and the
    /// codes from them, which the next layer moves to NHWC: the range reads the NHWC
    /// values and no transpose is left.
    #[test]
    fn the_range_of_all_elements_reads_either_layout() {
        use dlc_ir::ops::{Div, ReduceMax, Round};
        let mut g = Graph::new("t");
        let (x, xd) = input(&mut g, "x", &[1, 4, 4, 3]);
        let t = transpose(&mut g, "nchw", &[0, 3, 1, 2], x);
        let hi = g.add_node("hi", ReduceMax { axes: vec![0, 1, 2, 3], keepdims: false }, &[t]).unwrap()[0];
        let q = g.add_node("q", Div {}, &[t, hi]).unwrap()[0];
        let q = g.add_node("r", Round {}, &[q]).unwrap()[0];
        let next = transpose(&mut g, "nhwc", &[0, 2, 3, 1], q);
        g.add_output("q", next);
        g.add_output("hi", hi);
        assert_eq!(sink(&mut g, &[xd]), Changed::Yes);
        assert_eq!(transposes(&g), 0);
    }
}
