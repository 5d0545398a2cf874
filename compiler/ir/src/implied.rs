//! Run-time dims that a graph ties to fixed extents.
//!
//! Broadcasting a run-time dim `S` against a fixed extent `128` (numpy rules: equal, or
//! one of them 1) gives `128`, and a contraction whose inner dims are `S` and `128`
//! accepts them: both only make sense when `S = 128` (ONNX Runtime fails at any other
//! value). The kernels index such operands as if the dims were equal, so a graph must
//! not keep the symbol free: [`implied_extents`] finds these equalities and
//! [`fix_symbols`] substitutes them, after which the model's inputs declare the fixed
//! extent and a run with another value is refused at the input, naming the dim.
use crate::{Dim, Expr, Graph, IrError, Op, OpKind, Shape, TensorType};
use std::collections::BTreeMap;

/// Right-aligned pairs of `operand`'s dims with `result`'s.
fn aligned<'a>(operand: &'a [Dim], result: &'a [Dim]) -> impl Iterator<Item = (&'a Dim, &'a Dim)> {
    let k = operand.len().min(result.len());
    operand[operand.len() - k..].iter().zip(&result[result.len() - k..])
}

/// Records `d == n` for operand dim `d` of node `node`.
fn tie(
    out: &mut BTreeMap<String, (u64, String)>,
    data: &[String],
    node: &str,
    op: &'static str,
    d: &Dim,
    n: u64,
) -> Result<(), IrError> {
    let Dim::Sym(e) = d else { return Ok(()) };
    let mut syms = Vec::new();
    e.symbols(&mut syms);
    if let Some(s) = syms.iter().find(|s| data.contains(s)) {
        return Err(IrError::shape(
            node,
            op,
            format!(
                "dim {e} is computed from tensor values at run time ({s}) and must equal {n} here; \
                 broadcasting such dims is not supported yet (give the values that decide it as constants)"
            ),
        ));
    }
    // An expression of run-time dims: checked when the model runs ([`constraints`]).
    let Some(s) = e.as_symbol().map(str::to_string) else { return Ok(()) };
    match out.get(&s) {
        Some((m, first)) if *m != n => Err(IrError::shape(
            node,
            op,
            format!("run-time dim {s} must equal {n} here but {m} at node '{first}': no value fits"),
        )),
        Some(_) => Ok(()),
        None => {
            out.insert(s, (n, node.to_string()));
            Ok(())
        }
    }
}

/// The dims of node `op`'s operands that must equal another dim when it runs, as
/// `(operand dim, the dim it must equal)` pairs that differ as written: an elementwise
/// operand's dim broadcast to the result (numpy rules: equal, or 1), a MatMul's inner
/// dims and its batch dims broadcast to the result's, a Concat's operands outside its
/// axis. Other ops use operands at their own shapes, or broadcast only where the op's
/// rule checks it with fixed dims (Gemm's C, norms' scales, attention's masks).
fn required_equal(op: &Op, operands: &[TensorType], res: &[Dim]) -> Vec<(Dim, Dim)> {
    let mut pairs = Vec::new();
    let mut broadcast = |x: &[Dim], r: &[Dim]| {
        for (d, r) in aligned(x, r) {
            if d != r && *d != Dim::Fixed(1) {
                pairs.push((d.clone(), r.clone()));
            }
        }
    };
    match op.kind() {
        OpKind::Elementwise => {
            for x in operands {
                broadcast(&x.shape.0, res);
            }
            // A fused node's steps broadcast among themselves too (an `expand` to a
            // run-time extent added to another: the two extents must agree).
            if let Op::Fused(f) = op {
                if let Ok(types) = f.step_types("", operands) {
                    for (s, t) in f.steps.iter().zip(&types) {
                        let args: Vec<TensorType> = s
                            .args
                            .iter()
                            .filter_map(|a| match *a {
                                crate::ops::Arg::Operand(i) => operands.get(i as usize).cloned(),
                                crate::ops::Arg::Step(k) => types.get(k as usize).cloned(),
                            })
                            .collect();
                        pairs.extend(required_equal(&s.op, &args, &t.shape.0));
                    }
                }
            }
        }
        OpKind::Contraction if matches!(op, Op::MatMul(_)) => {
            let (a, b) = (&operands[0].shape.0, &operands[1].shape.0);
            let batch = res.len().saturating_sub(2);
            for x in [a, b] {
                if x.len() > 2 {
                    broadcast(&x[..x.len() - 2], &res[..batch]);
                }
            }
            let kb = if b.len() >= 2 { b.get(b.len() - 2) } else { b.first() };
            if let (Some(ka), Some(kb)) = (a.last(), kb) {
                if ka != kb {
                    pairs.push((ka.clone(), kb.clone()));
                }
            }
        }
        // ScatterND's updates against the index tuples' and the data's slices' extents.
        OpKind::Movement if matches!(op, Op::ScatterND(_)) => {
            let (id, dd, upd) = (&operands[1].shape.0, &operands[0].shape.0, &operands[2].shape.0);
            if let Some(k) = id.last().and_then(Dim::fixed) {
                let want = id[..id.len() - 1].iter().chain(dd.get(k as usize..).unwrap_or(&[]));
                for (u, w) in upd.iter().zip(want) {
                    if u != w {
                        pairs.push((u.clone(), w.clone()));
                    }
                }
            }
        }
        // A view's element counts (equal as numbers, not as expressions: see `View`).
        OpKind::Movement if matches!(op, Op::View(_)) => {
            let (from, to) = (Dim::product(&operands[0].shape.0), Dim::product(res));
            if from != to {
                pairs.push((from, to));
            }
        }
        OpKind::Movement if matches!(op, Op::Concat(_)) => {
            let Op::Concat(c) = op else { return pairs };
            let Some(axis) = crate::ops::normalize_axis(c.axis, res.len()) else { return pairs };
            for x in operands {
                for (i, (d, r)) in x.shape.0.iter().zip(res).enumerate() {
                    if i != axis && d != r {
                        pairs.push((d.clone(), r.clone()));
                    }
                }
            }
        }
        OpKind::Contraction
        | OpKind::Source
        | OpKind::Window
        | OpKind::Normalization
        | OpKind::Reduction
        | OpKind::Movement
        | OpKind::Control => {}
    }
    pairs
}

/// `f(node, its mnemonic, pairs)` for every node of `g` in topological order, with the
/// pairs of [`required_equal`].
fn for_required_equal(
    g: &Graph,
    mut f: impl FnMut(&str, &'static str, Vec<(Dim, Dim)>) -> Result<(), IrError>,
) -> Result<(), IrError> {
    let Ok(order) = g.topo_order() else { return Ok(()) };
    for id in order {
        let node = g.node(id);
        let operands: Vec<TensorType> = g.operands(id).iter().map(|v| g.value_type(*v).clone()).collect();
        let Some(result) = node.outputs.first() else { continue };
        f(&node.name, node.op.mnemonic(), required_equal(&node.op, &operands, &result.shape.0))?;
    }
    Ok(())
}

/// The symbols the graph ties to fixed extents, each with its value and the first node
/// that ties it: a run-time dim that must equal a fixed one ([`required_equal`]).
pub fn implied_extents(g: &Graph) -> Result<BTreeMap<String, (u64, String)>, IrError> {
    let mut out = BTreeMap::new();
    let data = crate::bind::data_symbols(g);
    for_required_equal(g, |node, op, pairs| {
        for (a, b) in pairs {
            match (&a, &b) {
                (d @ Dim::Sym(_), Dim::Fixed(n)) | (Dim::Fixed(n), d @ Dim::Sym(_)) => {
                    tie(&mut out, &data, node, op, d, *n)?
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// An equality of run-time dim expressions that the graph's kernels rely on and that
/// dlc-runtime and the C ABI check before a run (a Concat of a tensor of height
/// `floordiv(H - 1, 16) + 1` with one of height 1 runs only where that is 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// One side.
    pub lhs: Expr,
    /// The other side.
    pub rhs: Expr,
    /// The first node that relies on it.
    pub node: String,
}

/// The equalities of run-time dims that `g` relies on beyond its symbols' values: an
/// operand dim that differs as an expression from the dim it must match (broadcast to
/// a fixed extent, a Concat's other dims, a MatMul's inner dims). After
/// [`fix_symbols`], symbols tied to fixed extents are gone, so these are expressions
/// (or two different symbols). An error names a node whose equality involves dims
/// computed from tensor values (which are only known mid-run).
pub fn constraints(g: &Graph) -> Result<Vec<Constraint>, IrError> {
    // Computed dims (a `values` Bind's: ConstantOfShape's shape, Range's length) are
    // known before the run (the artifact's prologue computes them), so equalities over
    // them are checked then; other data symbols are bound mid-run.
    let computed = crate::bind::computed_symbols(g);
    let data: Vec<String> = crate::bind::data_symbols(g).into_iter().filter(|s| !computed.contains(s)).collect();
    let mut out: Vec<Constraint> = Vec::new();
    for_required_equal(g, |node, op, pairs| {
        for (a, b) in pairs {
            if a.fixed().is_some() && b.fixed().is_some() {
                continue;
            }
            let (lhs, rhs) = (a.expr(), b.expr());
            let mut syms = Vec::new();
            lhs.symbols(&mut syms);
            rhs.symbols(&mut syms);
            if let Some(s) = syms.iter().find(|s| data.contains(s)) {
                return Err(IrError::shape(
                    node,
                    op,
                    format!(
                        "dims {lhs} and {rhs} must be equal here, and {s} is computed from tensor values in the \
                         middle of the run; dlc checks such equalities only for dims of the inputs and dims \
                         computed before the run (ConstantOfShape's shape, Range's length, Resize's sizes)"
                    ),
                ));
            }
            if !out.iter().any(|c| (c.lhs == lhs && c.rhs == rhs) || (c.lhs == rhs && c.rhs == lhs)) {
                out.push(Constraint { lhs, rhs, node: node.to_string() });
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// `t` with every symbol in `values` replaced by its value.
pub fn fix_type(t: &TensorType, values: &BTreeMap<String, u64>) -> TensorType {
    let dims = t
        .shape
        .0
        .iter()
        .map(|d| match d {
            Dim::Fixed(_) => d.clone(),
            Dim::Sym(e) => {
                let e = e.subst(&|a| match a {
                    dlc_sym::Atom::Sym(s) => values.get(s).map(|&v| Expr::c(v as i64)),
                    _ => None,
                });
                Dim::from_expr(e.clone()).unwrap_or(Dim::Sym(e))
            }
        })
        .collect();
    TensorType { dtype: t.dtype, shape: Shape(dims) }
}

/// Replaces the symbols in `values` by their values in every type of `g`.
pub fn fix_symbols(g: &mut Graph, values: &BTreeMap<String, u64>) {
    for id in g.node_ids() {
        let n = g.node_mut(id);
        for t in &mut n.outputs {
            *t = fix_type(t, values);
        }
        if let Op::Input(i) = &mut n.op {
            i.ty = fix_type(&i.ty, values);
        }
    }
}

/// The least value of each run-time dim for which every sliding window of the graph
/// fits its image (Conv, MaxPool, AveragePool, Patches: the output has at least one element),
/// with the node that asks for it. A window over an extent that is an expression of one
/// run-time dim (`floordiv(H - 1, 2) + 1` after a strided convolution) bounds that dim:
/// the least value where the expression reaches the window's need (the extents are
/// non-decreasing in their dim). Symbols missing from the map have minimum 0 (an empty
/// batch, an empty cache: ONNX's dims may be 0, and dlc's kernels run empty extents).
pub fn symbol_minimums(g: &Graph) -> BTreeMap<String, (u64, String)> {
    let mut out: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for id in g.node_ids() {
        let node = g.node(id);
        let operands = g.operands(id);
        let Some(x) = operands.first().map(|v| g.value_type(*v)) else { continue };
        let window = match &node.op {
            Op::Conv(op) if operands.len() >= 2 => op.window(&node.name, x, g.value_type(operands[1])).ok(),
            Op::MaxPool(op) => op.window(&node.name, x).ok(),
            Op::Patches(op) => op.window(&node.name, x).ok(),
            Op::AveragePool(op) => op.window(&node.name, x).ok(),
            _ => None,
        };
        // No extent of one run-time dim may be negative (`C - 6` positions of a trigram
        // with skips over a row of 3): it would size a buffer negatively. (An extent of
        // 0, an empty result, is a valid run.)
        for t in &node.outputs {
            for d in &t.shape.0 {
                if d.fixed().is_none() {
                    raise_minimum(&mut out, &d.expr(), 0, &node.name);
                }
            }
        }
        let Some(w) = window else { continue };
        for i in 0..2 {
            let span = (w.kernel[i] - 1) * w.dilations[i] + 1;
            let need = span.saturating_sub(w.pad_begin[i] + w.pad_end[i]).max(1) as i64;
            raise_minimum(&mut out, &w.input[i], need, &node.name);
        }
    }
    out
}

/// For an expression `e` of one run-time dim `s`: raises `s`'s minimum in `out` to the
/// least value where `e` reaches `need` (found by bisection over `[0, 2^40]`: extents are
/// non-decreasing in their dim), naming `node`. Expressions of several dims, and ones
/// that never reach `need`, are left alone.
fn raise_minimum(out: &mut BTreeMap<String, (u64, String)>, e: &Expr, need: i64, node: &str) {
    let mut syms = Vec::new();
    e.symbols(&mut syms);
    let [s] = syms.as_slice() else { return };
    let at = |v: i64| e.eval(&BTreeMap::from([(s.clone(), v)])).unwrap_or(i64::MIN);
    let (mut lo, mut hi) = (0i64, 1i64 << 40);
    if at(lo) >= need || at(hi) < need {
        return;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid) >= need {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if lo > 0 && out.get(s).is_none_or(|(m, _)| (lo as u64) > *m) {
        out.insert(s.clone(), (lo as u64, node.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Activation, Add, MatMul};
    use crate::{DType, TensorData};

    fn input(g: &mut Graph, name: &str, dims: Vec<Dim>) -> crate::Value {
        g.add_input(name, TensorType { dtype: DType::F32, shape: Shape(dims) })
    }

    /// Windows over run-time image dims: the symbolic shape rule agrees with the fixed
    /// one at every size (and refuses what it cannot express), and each symbol's minimum
    /// is the least size where every window of the chain still fits.
    #[test]
    fn windows_over_run_time_dims_bound_their_symbols() {
        use crate::ops::{AutoPad, Conv, MaxPool};
        let conv = |s: i64, p: i64, auto_pad: AutoPad| Conv {
            kernel_shape: vec![],
            strides: vec![s, s],
            pads: if auto_pad == AutoPad::NotSet { vec![p; 4] } else { vec![] },
            dilations: vec![],
            group: 1,
            auto_pad,
            act: Activation::None,
        };
        let weight = |g: &mut Graph, k: u64| {
            g.add_const("w", TensorData::from_f32(&[2, 2, k, k], &vec![0.5; (4 * k * k) as usize]).unwrap())
        };
        let mut g = Graph::new("m");
        let x = input(&mut g, "x", vec![Dim::sym("N"), Dim::Fixed(2), Dim::sym("H"), Dim::sym("W")]);
        let w3 = weight(&mut g, 3);
        let y = g.add_node("c1", conv(2, 1, AutoPad::NotSet), &[x, w3]).unwrap()[0];
        let w5 = weight(&mut g, 5);
        let y = g.add_node("c2", conv(1, 0, AutoPad::Valid), &[y, w5]).unwrap()[0];
        let pool = MaxPool {
            kernel_shape: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![],
            dilations: vec![],
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        let y = g.add_node("p", pool, &[y]).unwrap()[0];
        g.add_output("y", y);
        // c1 halves the image (ceil), c2 needs 5 of those rows and p then 2 of c2's:
        // 6 rows after c1, so at least 11 before.
        let mins = symbol_minimums(&g);
        assert_eq!(mins.get("H"), Some(&(11, "p".to_string())));
        assert_eq!(mins.get("W").map(|m| m.0), Some(11));
        assert!(!mins.contains_key("N"));
        // The shape rule at every size agrees with the fixed rule on the same sizes.
        let out = g.value_type(y).shape.clone();
        for h in 11..40i64 {
            let env = BTreeMap::from([("H".to_string(), h), ("W".to_string(), h + 3), ("N".to_string(), 2)]);
            let c1 = (h - 1) / 2 + 1;
            let c2 = c1 - 4;
            assert_eq!(out.0[2].expr().eval(&env).unwrap(), c2 / 2, "H = {h}");
            let w1 = (h + 3 - 1) / 2 + 1;
            assert_eq!(out.0[3].expr().eval(&env).unwrap(), (w1 - 4) / 2, "W = {}", h + 3);
        }
        // SAME padding at stride 2 depends on the extent: refused, naming the node.
        let mut g = Graph::new("m");
        let x = input(&mut g, "x", vec![Dim::Fixed(1), Dim::Fixed(2), Dim::sym("H"), Dim::Fixed(8)]);
        let w3 = weight(&mut g, 3);
        let e = g.add_node("same", conv(2, 0, AutoPad::SameUpper), &[x, w3]).unwrap_err().to_string();
        assert!(e.contains("same") && e.contains("depends on it"), "{e}");
    }

    #[test]
    fn a_broadcast_against_a_fixed_extent_fixes_the_symbol_everywhere() {
        let mut g = Graph::new("m");
        let x = input(&mut g, "x", vec![Dim::sym("N"), Dim::sym("S"), Dim::Fixed(4)]);
        let table = g.add_const("pos", TensorData::from_f32(&[8, 4], &[0.5; 32]).unwrap());
        let y = g.add_node("add", Add {}, &[x, table]).unwrap()[0];
        g.add_output("y", y);
        let tied = implied_extents(&g).unwrap();
        assert_eq!(tied.get("S"), Some(&(8, "add".to_string())));
        assert!(!tied.contains_key("N"), "a broadcast of N against 1 ties nothing");
        fix_symbols(&mut g, &tied.into_iter().map(|(s, (n, _))| (s, n)).collect());
        assert_eq!(g.value_type(x).shape.to_string(), "[N,8,4]");
        assert!(implied_extents(&g).unwrap().is_empty());
        crate::verify(&g).unwrap();
    }

    #[test]
    fn contractions_tie_inner_dims_and_require_two_free_ones_equal() {
        let mut g = Graph::new("m");
        let a = input(&mut g, "a", vec![Dim::sym("N"), Dim::sym("K")]);
        let w = g.add_const("w", TensorData::from_f32(&[3, 2], &[1.0; 6]).unwrap());
        let y = g.add_node("mm", MatMul { act: Activation::None }, &[a, w]).unwrap()[0];
        g.add_output("y", y);
        assert_eq!(implied_extents(&g).unwrap().get("K").map(|t| t.0), Some(3));

        let mut g = Graph::new("m");
        let a = input(&mut g, "a", vec![Dim::sym("N"), Dim::sym("K")]);
        let b = input(&mut g, "b", vec![Dim::sym("L"), Dim::Fixed(2)]);
        let y = g.add_node("mm", MatMul { act: Activation::None }, &[a, b]).unwrap()[0];
        g.add_output("y", y);
        assert!(implied_extents(&g).unwrap().is_empty());
        let c = constraints(&g).unwrap();
        assert_eq!(c, vec![Constraint { lhs: Expr::sym("K"), rhs: Expr::sym("L"), node: "mm".into() }]);
    }

    #[test]
    fn a_derived_dim_tied_to_a_constant_is_a_run_time_constraint() {
        let mut g = Graph::new("m");
        let x = input(&mut g, "x", vec![Dim::Sym(&Expr::sym("S") * &Expr::c(2))]);
        let c = g.add_const("c", TensorData::from_f32(&[6], &[1.0; 6]).unwrap());
        let y = g.add_node("add", Add {}, &[x, c]).unwrap()[0];
        g.add_output("y", y);
        assert!(implied_extents(&g).unwrap().is_empty());
        let c = constraints(&g).unwrap();
        assert_eq!(c, vec![Constraint { lhs: &Expr::sym("S") * &Expr::c(2), rhs: Expr::c(6), node: "add".into() }]);
    }

    #[test]
    fn concat_ties_symbols_and_requires_expressions_equal() {
        use crate::ops::Concat;
        let mut g = Graph::new("m");
        let a = input(&mut g, "a", vec![Dim::sym("N"), Dim::Fixed(4)]);
        let b = input(&mut g, "b", vec![Dim::Fixed(3), Dim::Fixed(2)]);
        let h = Dim::Sym(&Expr::sym("H").floor_div(&Expr::c(16)) + &Expr::c(1));
        let c = input(&mut g, "c", vec![h.clone(), Dim::Fixed(1)]);
        let y = g.add_node("cat", Concat { axis: 1 }, &[a, b, c]).unwrap()[0];
        assert_eq!(g.value_type(y).shape.0, vec![Dim::Fixed(3), Dim::Fixed(7)]);
        g.add_output("y", y);
        assert_eq!(implied_extents(&g).unwrap().get("N").map(|t| t.0), Some(3));
        let c = constraints(&g).unwrap();
        assert!(c.iter().any(|c| c.lhs == h.expr() && c.rhs == Expr::c(3) && c.node == "cat"), "{c:?}");
        // Two different fixed extents stay an error.
        let mut g = Graph::new("m");
        let a = input(&mut g, "a", vec![Dim::Fixed(2), Dim::Fixed(4)]);
        let b = input(&mut g, "b", vec![Dim::Fixed(3), Dim::Fixed(2)]);
        assert!(g.add_node("cat", Concat { axis: 1 }, &[a, b]).is_err());
    }
}
