//! Tree ensembles (`ai.onnx.ml`): TreeEnsemble (opset 5) and TreeEnsembleRegressor
//! (opsets 1 and 3), the form scikit-learn, XGBoost and LightGBM converters write.
//!
//! Every tree is flattened at import into one table of entries (internal nodes, then
//! leaves), each entry a test `lo <= x[feature] <= hi` with the child taken when it
//! holds, the child taken when it does not, and the child taken when `x[feature]` is
//! NaN; leaves point to themselves. Each comparison mode becomes such an interval in
//! the compared type (`x < t` is `x <= ` the largest value below `t`, `x != t` is
//! `x == t` with the children swapped), and a set-membership node a chain of equality
//! nodes. The traversal is then branch-free tensor code, as Hummingbird's "tree
//! traversal" strategy runs trees: all rows and all trees advance together, one step
//! per level of the deepest tree, each step a handful of Gathers and a Where over
//! `[rows, trees]`. The leaves reached select rows of a `[leaves, targets]` table of
//! their votes, reduced over the trees (sum, average, min or max as ONNX Runtime
//! aggregates: a target no leaf voted for is 0), plus the base values, then the post
//! transform (NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT as ONNX Runtime computes them).
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("ai.onnx.ml::TreeEnsemble", tree_ensemble);
    reg.insert("ai.onnx.ml::TreeEnsembleRegressor", tree_ensemble_regressor);
    // Built by `classifier` (its label may be a string tensor); the entry says it is supported.
    reg.insert("ai.onnx.ml::TreeEnsembleClassifier", |_| {
        Err("internal: TreeEnsembleClassifier reached the tensor path".into())
    });
}

/// The deepest tree the traversal unrolls (one step per level).
const MAX_DEPTH: usize = 4096;

/// The most values the leaves' `[entries, targets]` table may hold (2^24).
const MAX_VOTES: usize = 1 << 24;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

#[derive(Clone, Copy, PartialEq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// A post transform, as ONNX Runtime computes it (`ml_common.h`).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Post {
    None,
    Softmax,
    Logistic,
    /// Softmax over the nonzero values (`|x| > 1e-7`); the others scaled by `exp(-max)`.
    SoftmaxZero,
    /// `sqrt(2) * erfinv(2 x - 1)`, with ONNX Runtime's closed-form erfinv approximation.
    Probit,
}

/// A child of a node as the attributes give it: another node or a leaf.
#[derive(Clone, Copy)]
enum Child {
    Node(usize),
    Leaf(usize),
}

/// One decision node as the attributes give it.
struct Split {
    mode: Mode,
    feature: i64,
    value: f64,
    /// Set-membership values (mode Member).
    members: Vec<f64>,
    yes: Child,
    no: Child,
    missing_true: bool,
}

/// An ensemble as the attributes give it: nodes, leaves with their votes, roots.
struct Forest {
    splits: Vec<Split>,
    /// Each leaf's votes: (target, weight).
    leaves: Vec<Vec<(usize, f64)>>,
    roots: Vec<Child>,
    n_targets: usize,
    aggregate: Aggregate,
    post: Post,
    base: Vec<f64>,
}

/// The flattened table the traversal reads.
#[derive(Default)]
struct Table {
    feature: Vec<i64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    inside: Vec<i64>,
    outside: Vec<i64>,
    nan: Vec<i64>,
    /// For each entry, its leaf's row in the votes table (0 for internal nodes).
    slot: Vec<i64>,
}

impl Table {
    fn push(&mut self, feature: i64, lo: f64, hi: f64) -> usize {
        self.feature.push(feature);
        self.lo.push(lo);
        self.hi.push(hi);
        self.inside.push(0);
        self.outside.push(0);
        self.nan.push(0);
        self.slot.push(0);
        self.feature.len() - 1
    }
}

/// The largest value of `dtype` (f32 or f64) at most `t` (`strict`: below `t`).
fn below(t: f64, dtype: DType, strict: bool) -> f64 {
    if dtype == DType::F64 {
        return if strict { t.next_down() } else { t };
    }
    let mut f = t as f32;
    if f64::from(f) > t || (strict && f64::from(f) == t) {
        f = f.next_down();
    }
    f64::from(f)
}

/// The smallest value of `dtype` at least `t` (`strict`: above `t`).
fn above(t: f64, dtype: DType, strict: bool) -> f64 {
    -below(-t, dtype, strict)
}

/// `t` when `dtype` represents it exactly, else `None`.
fn exact(t: f64, dtype: DType) -> Option<f64> {
    (dtype == DType::F64 || f64::from(t as f32) == t || t.is_nan()).then_some(t)
}

impl Forest {
    /// The table, each tree's root entry and the number of traversal steps (the
    /// deepest path, in entries); errors name cycles, bad ids and bad targets.
    fn flatten(&self, dtype: DType) -> Result<(Table, Vec<i64>, usize, usize), String> {
        let mut t = Table::default();
        // Entries for the nodes first (a member node's first equality test), leaves after.
        let mut node_entry = vec![0usize; self.splits.len()];
        let mut chains: Vec<Vec<usize>> = vec![Vec::new(); self.splits.len()];
        for (i, s) in self.splits.iter().enumerate() {
            let (lo, hi) = match s.mode {
                Mode::Leq => (f64::NEG_INFINITY, below(s.value, dtype, false)),
                Mode::Lt => (f64::NEG_INFINITY, below(s.value, dtype, true)),
                Mode::Gte => (above(s.value, dtype, false), f64::INFINITY),
                Mode::Gt => (above(s.value, dtype, true), f64::INFINITY),
                Mode::Eq | Mode::Neq => match exact(s.value, dtype) {
                    Some(v) => (v, v),
                    // No input value equals it: an empty interval.
                    None => (f64::INFINITY, f64::NEG_INFINITY),
                },
                Mode::Member => (f64::INFINITY, f64::NEG_INFINITY),
            };
            node_entry[i] = t.push(s.feature, lo, hi);
            if s.mode == Mode::Member {
                let vals: Vec<f64> = s.members.iter().filter_map(|&v| exact(v, dtype)).collect();
                chains[i].push(node_entry[i]);
                if let Some(&first) = vals.first() {
                    t.lo[node_entry[i]] = first;
                    t.hi[node_entry[i]] = first;
                }
                for &v in vals.iter().skip(1) {
                    chains[i].push(t.push(s.feature, v, v));
                }
            }
        }
        let leaf0 = t.feature.len();
        for (j, l) in self.leaves.iter().enumerate() {
            // Every value inside (a leaf's children are itself whatever the test says).
            let e = t.push(0, f64::NEG_INFINITY, f64::INFINITY);
            t.inside[e] = e as i64;
            t.outside[e] = e as i64;
            t.nan[e] = e as i64;
            t.slot[e] = j as i64;
            for &(target, _) in l {
                if target >= self.n_targets {
                    return Err(format!("leaf {j} votes for target {target}, past n_targets {}", self.n_targets));
                }
            }
        }
        let entry = |c: Child| -> Result<usize, String> {
            match c {
                Child::Node(n) if n < self.splits.len() => Ok(node_entry[n]),
                Child::Leaf(l) if l < self.leaves.len() => Ok(leaf0 + l),
                Child::Node(n) => Err(format!("a child is node {n}, past the {} nodes", self.splits.len())),
                Child::Leaf(l) => Err(format!("a child is leaf {l}, past the {} leaves", self.leaves.len())),
            }
        };
        for (i, s) in self.splits.iter().enumerate() {
            let (yes, no) = (entry(s.yes)? as i64, entry(s.no)? as i64);
            // NaN: the true child where missing values track true (and for x != t,
            // which NaN satisfies), else the false child.
            let nan_child = if s.missing_true || s.mode == Mode::Neq { yes } else { no };
            // x != t: the interval is t's, its children swapped.
            let (yes, no) = if s.mode == Mode::Neq { (no, yes) } else { (yes, no) };
            let chain = &chains[i];
            if chain.is_empty() {
                let e = node_entry[i];
                t.inside[e] = yes;
                t.outside[e] = no;
                t.nan[e] = nan_child;
            } else {
                // x in {v0, v1, ...}: x == v0 -> yes, else x == v1 -> yes, ..., else no.
                for (k, &e) in chain.iter().enumerate() {
                    t.inside[e] = yes;
                    t.outside[e] = chain.get(k + 1).map_or(no, |&n| n as i64);
                    t.nan[e] = nan_child;
                }
            }
        }
        let roots: Vec<i64> = self.roots.iter().map(|&r| entry(r).map(|e| e as i64)).collect::<Result<_, _>>()?;
        // The deepest path (entries visited before a leaf), with cycles refused.
        let n = t.feature.len();
        let mut depth: Vec<Option<usize>> = vec![None; n];
        depth[leaf0..].fill(Some(0));
        let mut on_path = vec![false; n];
        let mut steps = 0;
        for &r in &roots {
            // Iterative post-order walk.
            let mut stack = vec![(r as usize, false)];
            while let Some((e, done)) = stack.pop() {
                if depth[e].is_some() {
                    continue;
                }
                let kids = [t.inside[e] as usize, t.outside[e] as usize, t.nan[e] as usize];
                if done {
                    let d = kids.iter().map(|&k| depth[k].unwrap_or(0)).max().unwrap_or(0) + 1;
                    depth[e] = Some(d);
                    on_path[e] = false;
                    continue;
                }
                if on_path[e] {
                    return Err("the trees have a cycle (a node is its own descendant)".into());
                }
                on_path[e] = true;
                stack.push((e, true));
                for k in kids {
                    if depth[k].is_none() {
                        if on_path[k] {
                            return Err("the trees have a cycle (a node is its own descendant)".into());
                        }
                        stack.push((k, false));
                    }
                }
            }
            steps = steps.max(depth[r as usize].unwrap_or(0));
        }
        if steps > MAX_DEPTH {
            return Err(format!("a tree is {steps} levels deep; dlc unrolls at most {MAX_DEPTH}"));
        }
        Ok((t, roots, steps, leaf0))
    }
}

/// A constant vector of `dtype` (f32 or f64) from f64 values.
fn floats(cx: &mut NodeCx, dtype: DType, dims: &[u64], v: &[f64]) -> Result<Value, String> {
    let bytes: Vec<u8> = match dtype {
        DType::F64 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
    };
    let dtype = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
    let t = TensorData::new(TensorType::fixed(dtype, dims), bytes.into()).ok_or("internal: a table")?;
    Ok(cx.add_const(t))
}

/// The ensemble's aggregated votes for the input `x` (`[rows, features]` or
/// `[features]`), before base values and post transform.
struct Scores {
    /// `[rows, n_targets]` in `dtype`: a target no reached leaf voted for is 0.
    value: Value,
    /// `[rows, n_targets]` bool: whether a reached leaf voted for the target (when asked).
    has: Option<Value>,
    /// The compared and accumulated type (f32, or f64 for f64 and integer inputs).
    dtype: DType,
}

fn scores(cx: &mut NodeCx, f: &Forest, want_has: bool) -> Result<Scores, String> {
    let x = cx.input(0)?;
    let xt = cx.ty(x);
    let x = match xt.shape.rank() {
        2 => x,
        1 => cx.add1("row", Reshape { shape: vec![1, -1], allowzero: false }, &[x])?,
        _ => return Err(format!("the input must be [rows, features], got {xt}")),
    };
    // Compared in f32 for f32 and f16 inputs, else in f64 (integers exactly).
    let cmp = match xt.dtype {
        DType::F32 | DType::F16 | DType::BF16 => DType::F32,
        DType::F64 | DType::I64 | DType::I32 => DType::F64,
        d => return Err(format!("the input must be float, double, int64 or int32, got {d}")),
    };
    let x = if xt.dtype == cmp { x } else { cx.add1("as_compared", Cast::new(cmp), &[x])? };
    if f.roots.is_empty() {
        return Err("the ensemble has no trees".into());
    }
    let (t, roots, steps, leaf0) = f.flatten(cmp)?;
    let votes = &f.leaves;
    let dims = cx.ty(x).shape.0.clone();
    let max_feature = t.feature.iter().copied().max().unwrap_or(0);
    if let Some(&bad) = t.feature.iter().find(|&&v| v < 0) {
        return Err(format!("feature id {bad} is negative"));
    }
    // Features past the input's: refused here when its width is known, else when the
    // model runs (0 <= max_feature + 1 <= width, a Bind of rule `extent`).
    let x = match dims[1].fixed() {
        Some(w) if max_feature >= w as i64 => {
            return Err(format!("a node reads feature {max_feature}, but the input has {w}"));
        }
        Some(_) => x,
        None => {
            let need = cx.i64_const(&[1], &[max_feature + 1])?;
            super::bind::bind(cx, "features_fit", x, need, dlc_ir::bind::BindRule::Extent { axis: 1 })?
        }
    };
    let n_entries = t.feature.len() as u64;
    let n_trees = roots.len() as u64;
    let feature = cx.i64_const(&[n_entries], &t.feature)?;
    // Only the bounds some test uses are read (scikit-learn's `x <= t` needs no lower
    // bound), and the children are one table indexed by the test's outcome: inside,
    // outside, NaN (NaN left out where every NaN goes outside, as for `x <= t`).
    let need_lo = t.lo.iter().any(|&v| v != f64::NEG_INFINITY);
    let need_hi = t.hi.iter().any(|&v| v != f64::INFINITY) || !need_lo;
    let lo = if need_lo { Some(floats(cx, cmp, &[n_entries], &t.lo)?) } else { None };
    let hi = if need_hi { Some(floats(cx, cmp, &[n_entries], &t.hi)?) } else { None };
    let nan_apart = t.nan != t.outside;
    let ways: i64 = if nan_apart { 3 } else { 2 };
    let mut kids = Vec::with_capacity(t.feature.len() * ways as usize);
    for e in 0..t.feature.len() {
        kids.extend([t.inside[e], t.outside[e]]);
        if nan_apart {
            kids.push(t.nan[e]);
        }
    }
    let kids = cx.i64_const(&[kids.len() as u64], &kids)?;
    let ways_c = cx.i64_const(&[1, 1], &[ways])?;
    let (zero_c, one_c, two_c) =
        (cx.i64_const(&[1, 1], &[0])?, cx.i64_const(&[1, 1], &[1])?, cx.i64_const(&[1, 1], &[2])?);
    // Row offsets into the flattened input: [rows, 1].
    let rows = dims[0].expr().to_string();
    let row = cx.add1("row_index", Iota { len: rows, start: 0, delta: 1, dtype: DType::I64 }, &[])?;
    let row = cx.add1("row_column", Reshape { shape: vec![-1, 1], allowzero: false }, &[row])?;
    let width = match dims[1].fixed() {
        Some(w) => cx.i64_const(&[1, 1], &[w as i64])?,
        None => {
            let ones = Iota { len: dims[1].expr().to_string(), start: 1, delta: 0, dtype: DType::I64 };
            let ones = cx.add1("width_ones", ones, &[])?;
            cx.add1("width", ReduceSum { axes: vec![0], keepdims: true }, &[ones])?
        }
    };
    let row_start = cx.add1("row_start", Mul {}, &[row, width])?;
    let flat = cx.add1("flat", Reshape { shape: vec![-1], allowzero: false }, &[x])?;
    let root = cx.i64_const(&[1, n_trees], &roots)?;
    let zero = cx.i64_const(&[1, 1], &[0])?;
    let zero_rows = cx.add1("zero_rows", Mul {}, &[row, zero])?;
    let mut at = cx.add1("roots", Add {}, &[zero_rows, root])?;
    for s in 0..steps {
        let g = |cx: &mut NodeCx, what: &str, table: Value, at: Value| {
            cx.add1(&format!("step{s}_{what}"), Gather { axis: 0 }, &[table, at])
        };
        let feat = g(cx, "feature", feature, at)?;
        let pos = cx.add1(&format!("step{s}_position"), Add {}, &[row_start, feat])?;
        let v = g(cx, "value", flat, pos)?;
        let ge = match lo {
            Some(lo) => {
                let l = g(cx, "lo", lo, at)?;
                Some(cx.add1(&format!("step{s}_ge"), GreaterOrEqual {}, &[v, l])?)
            }
            None => None,
        };
        let le = match hi {
            Some(hi) => {
                let h = g(cx, "hi", hi, at)?;
                Some(cx.add1(&format!("step{s}_le"), LessOrEqual {}, &[v, h])?)
            }
            None => None,
        };
        let hit = match (ge, le) {
            (Some(a), Some(b)) => cx.add1(&format!("step{s}_inside"), And {}, &[a, b])?,
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return Err("internal: a test with no bound".into()),
        };
        // The outcome: 0 inside, 1 outside, 2 NaN; the child at entry * ways + outcome.
        let mut way = cx.add1(&format!("step{s}_way"), Where {}, &[hit, zero_c, one_c])?;
        if nan_apart {
            let is_nan = cx.add1(&format!("step{s}_nan"), IsNaN {}, &[v])?;
            way = cx.add1(&format!("step{s}_way_nan"), Where {}, &[is_nan, two_c, way])?;
        }
        let base = cx.add1(&format!("step{s}_kids_at"), Mul {}, &[at, ways_c])?;
        let slot = cx.add1(&format!("step{s}_kid"), Add {}, &[base, way])?;
        at = g(cx, "next", kids, slot)?;
    }
    // The leaves' votes: [leaves, targets] tables of values and of "voted".
    let k = f.n_targets;
    // Indexed by entry (internal nodes' rows unused): the reached entries select rows.
    let nl = t.feature.len();
    let init = match f.aggregate {
        Aggregate::Sum | Aggregate::Average => 0.0,
        Aggregate::Min => f64::INFINITY,
        Aggregate::Max => f64::NEG_INFINITY,
    };
    // One row per table entry and a column per target: bounded, so that a hostile
    // n_targets cannot ask for gigabytes at import.
    if nl.saturating_mul(k) > MAX_VOTES {
        return Err(format!(
            "{nl} tree entries x {k} targets is more than dlc's {MAX_VOTES} leaf values (n_targets too large?)"
        ));
    }
    let mut vals = vec![init; nl * k];
    let mut voted = vec![0.0; nl * k];
    for (e, &j) in t.slot.iter().enumerate().skip(leaf0) {
        for &(target, w) in &votes[j as usize] {
            let c = &mut vals[e * k + target];
            let first = voted[e * k + target] == 0.0;
            *c = match f.aggregate {
                Aggregate::Sum | Aggregate::Average => *c + w,
                Aggregate::Min if first || w < *c => w,
                Aggregate::Max if first || w > *c => w,
                _ => *c,
            };
            voted[e * k + target] = 1.0;
        }
    }
    let leaf = at;
    let table = floats(cx, cmp, &[nl as u64, k as u64], &vals)?;
    let per_tree = cx.add1("leaf_values", Gather { axis: 0 }, &[table, leaf])?;
    let mut has = None;
    if want_has || matches!(f.aggregate, Aggregate::Min | Aggregate::Max) {
        let vt = floats(cx, cmp, &[nl as u64, k as u64], &voted)?;
        let any = cx.add1("voted", Gather { axis: 0 }, &[vt, leaf])?;
        let any = cx.add1("any_vote", ReduceMax { axes: vec![1], keepdims: false }, &[any])?;
        let zero = floats(cx, cmp, &[1], &[0.0])?;
        has = Some(cx.add1("has_score", Greater {}, &[any, zero])?);
    }
    let value = match f.aggregate {
        Aggregate::Sum | Aggregate::Average => {
            let s = cx.add1("sum", ReduceSum { axes: vec![1], keepdims: false }, &[per_tree])?;
            if f.aggregate == Aggregate::Average {
                let n = floats(cx, cmp, &[1], &[n_trees as f64])?;
                cx.add1("average", Div {}, &[s, n])?
            } else {
                s
            }
        }
        Aggregate::Min | Aggregate::Max => {
            let r = if f.aggregate == Aggregate::Min {
                cx.add1("min", ReduceMin { axes: vec![1], keepdims: false }, &[per_tree])?
            } else {
                cx.add1("max", ReduceMax { axes: vec![1], keepdims: false }, &[per_tree])?
            };
            // A target no reached leaf voted for scores 0.
            let zero = floats(cx, cmp, &[1], &[0.0])?;
            cx.add1("scored", Where {}, &[has.ok_or("internal: votes")?, r, zero])?
        }
    };
    Ok(Scores { value, has, dtype: cmp })
}

/// A regressor's result in `out`: the scores plus the base values (one per target),
/// then the post transform.
fn regress(cx: &mut NodeCx, f: &Forest, out: DType) -> Result<Value, String> {
    let k = f.n_targets;
    let sc = scores(cx, f, false)?;
    let mut y = sc.value;
    if f.base.len() == k && f.base.iter().any(|&b| b != 0.0) {
        let b = floats(cx, sc.dtype, &[k as u64], &f.base)?;
        y = cx.add1("with_base", Add {}, &[y, b])?;
    }
    // One target: ONNX Runtime applies PROBIT only (the others leave the score).
    if k > 1 || f.post == Post::Probit {
        y = post(cx, f.post, y, "")?;
    }
    if cx.ty(y).dtype == out {
        Ok(y)
    } else {
        cx.add1("as_output", Cast::new(out), &[y])
    }
}

/// The post transform over the last axis.
pub(crate) fn post(cx: &mut NodeCx, p: Post, y: Value, tag: &str) -> Result<Value, String> {
    let dt = cx.ty(y).dtype;
    let c = |cx: &mut NodeCx, v: f64| floats(cx, dt, &[1], &[v]);
    let op = |cx: &mut NodeCx, what: &str, o: Op, args: &[Value]| cx.add1(&format!("{tag}{what}"), o, args);
    Ok(match p {
        Post::None => y,
        Post::Logistic => op(cx, "logistic", Sigmoid {}.into(), &[y])?,
        Post::Softmax => op(cx, "softmax", Softmax { axis: -1, mode: SoftmaxMode::Softmax }.into(), &[y])?,
        Post::SoftmaxZero => {
            let m = op(cx, "max", ReduceMax { axes: vec![-1], keepdims: true }.into(), &[y])?;
            let a = op(cx, "abs", Abs {}.into(), &[y])?;
            let tiny = c(cx, 1e-7)?;
            let big = op(cx, "nonzero", Greater {}.into(), &[a, tiny])?;
            let d = op(cx, "shifted", Sub {}.into(), &[y, m])?;
            let e1 = op(cx, "exp", Exp {}.into(), &[d])?;
            let nm = op(cx, "negated_max", Neg {}.into(), &[m])?;
            let en = op(cx, "exp_negated_max", Exp {}.into(), &[nm])?;
            let e0 = op(cx, "scaled_zero", Mul {}.into(), &[y, en])?;
            let e = op(cx, "exps", Where {}.into(), &[big, e1, e0])?;
            let zero = c(cx, 0.0)?;
            let counted = op(cx, "counted", Where {}.into(), &[big, e1, zero])?;
            let sum = op(cx, "sum", ReduceSum { axes: vec![-1], keepdims: true }.into(), &[counted])?;
            op(cx, "softmax_zero", Div {}.into(), &[e, sum])?
        }
        Post::Probit => {
            // t = 2x - 1; erfinv(t) ~ sgn(t) sqrt(sqrt(v^2 - ln(1 - t^2) / a) - v),
            // v = 2 / (pi a) + ln(1 - t^2) / 2, a = 0.147.
            let (two, one) = (c(cx, 2.0)?, c(cx, 1.0)?);
            let t2 = op(cx, "twice", Mul {}.into(), &[y, two])?;
            let t = op(cx, "centred", Sub {}.into(), &[t2, one])?;
            let tt = op(cx, "square", Mul {}.into(), &[t, t])?;
            let q = op(cx, "one_less_square", Sub {}.into(), &[one, tt])?;
            let l = op(cx, "log", Log {}.into(), &[q])?;
            let a = 0.147f64;
            let (k1, half, k2) = (c(cx, 2.0 / (std::f64::consts::PI * a))?, c(cx, 0.5)?, c(cx, 1.0 / a)?);
            let lh = op(cx, "half_log", Mul {}.into(), &[l, half])?;
            let v = op(cx, "v", Add {}.into(), &[k1, lh])?;
            let v2 = op(cx, "v2", Mul {}.into(), &[l, k2])?;
            let vv = op(cx, "v_squared", Mul {}.into(), &[v, v])?;
            let r = op(cx, "radicand", Sub {}.into(), &[vv, v2])?;
            let sq = op(cx, "root", Sqrt {}.into(), &[r])?;
            let v3 = op(cx, "v3", Sub {}.into(), &[sq, v])?;
            let mag = op(cx, "magnitude", Sqrt {}.into(), &[v3])?;
            let zero = c(cx, 0.0)?;
            let neg = op(cx, "negative", Less {}.into(), &[t, zero])?;
            let minus = op(cx, "negated", Neg {}.into(), &[mag])?;
            let e = op(cx, "erfinv", Where {}.into(), &[neg, minus, mag])?;
            let r2 = c(cx, std::f64::consts::SQRT_2)?;
            op(cx, "probit", Mul {}.into(), &[e, r2])?
        }
    })
}

pub(crate) fn post_of(name: &str) -> Result<Post, String> {
    match name {
        "NONE" => Ok(Post::None),
        "SOFTMAX" => Ok(Post::Softmax),
        "LOGISTIC" => Ok(Post::Logistic),
        "SOFTMAX_ZERO" => Ok(Post::SoftmaxZero),
        "PROBIT" => Ok(Post::Probit),
        p => Err(format!("unknown post_transform '{p}'")),
    }
}

fn aggregate_of(name: &str) -> Result<Aggregate, String> {
    match name {
        "SUM" => Ok(Aggregate::Sum),
        "AVERAGE" => Ok(Aggregate::Average),
        "MIN" => Ok(Aggregate::Min),
        "MAX" => Ok(Aggregate::Max),
        a => Err(format!("unknown aggregate_function '{a}'")),
    }
}

/// A tensor attribute's values as f64 (float types and integers).
fn tensor_f64(cx: &NodeCx, name: &str) -> Result<Option<Vec<f64>>, String> {
    let Some(t) = cx.tensor_attr(name)? else { return Ok(None) };
    let v = t.to_f64().ok_or_else(|| format!("attribute '{name}' has type {}; expected numbers", t.ty().dtype))?;
    Ok(Some(v))
}

/// `len` values of a per-node list attribute, or `default` when it is absent.
fn per_node<T: Clone>(v: Vec<T>, len: usize, name: &str, default: T) -> Result<Vec<T>, String> {
    match v.len() {
        0 => Ok(vec![default; len]),
        n if n == len => Ok(v),
        n => Err(format!("{name} has {n} values for {len} nodes")),
    }
}

/// TreeEnsemble (opset 5): nodes and leaves in separate arrays, children flagged as
/// leaves by `nodes_trueleafs` / `nodes_falseleafs`, integer enums, set membership.
fn tree_ensemble(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let feature = cx.ints("nodes_featureids");
    let n = feature.len();
    let splits = tensor_f64(cx, "nodes_splits")?.ok_or("nodes_splits is required")?;
    let splits = per_node(splits, n, "nodes_splits", 0.0)?;
    let modes = tensor_f64(cx, "nodes_modes")?.ok_or("nodes_modes is required")?;
    let modes = per_node(modes, n, "nodes_modes", 0.0)?;
    let truen = per_node(cx.ints("nodes_truenodeids"), n, "nodes_truenodeids", -1)?;
    let falsen = per_node(cx.ints("nodes_falsenodeids"), n, "nodes_falsenodeids", -1)?;
    let truel = per_node(cx.ints("nodes_trueleafs"), n, "nodes_trueleafs", 0)?;
    let falsel = per_node(cx.ints("nodes_falseleafs"), n, "nodes_falseleafs", 0)?;
    let missing = per_node(cx.ints("nodes_missing_value_tracks_true"), n, "nodes_missing_value_tracks_true", 0)?;
    let targets = cx.ints("leaf_targetids");
    let weights = tensor_f64(cx, "leaf_weights")?.ok_or("leaf_weights is required")?;
    if weights.len() != targets.len() {
        return Err(format!("{} leaf_weights for {} leaf_targetids", weights.len(), targets.len()));
    }
    let mut members = tensor_f64(cx, "membership_values")?.unwrap_or_default().into_iter();
    let n_targets = cx.int("n_targets", 0);
    if !(1..=1 << 20).contains(&n_targets) {
        return Err(format!("n_targets must be positive, got {n_targets}"));
    }
    let idx = |v: i64, what: &str| usize::try_from(v).map_err(|_| format!("{what} {v} is negative"));
    let child = |id: i64, leaf: i64| -> Result<Child, String> {
        Ok(if leaf != 0 { Child::Leaf(idx(id, "a leaf id")?) } else { Child::Node(idx(id, "a node id")?) })
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mode = match modes[i] as i64 {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            m => return Err(format!("node {i} has the unknown mode {m}")),
        };
        let set = if mode == Mode::Member {
            let set: Vec<f64> = members.by_ref().take_while(|v| !v.is_nan()).collect();
            if set.is_empty() {
                return Err(format!("node {i} tests set membership but membership_values has no set for it"));
            }
            set
        } else {
            Vec::new()
        };
        nodes.push(Split {
            mode,
            feature: feature[i],
            value: splits[i],
            members: set,
            yes: child(truen[i], truel[i])?,
            no: child(falsen[i], falsel[i])?,
            missing_true: missing[i] != 0,
        });
    }
    let leaves: Vec<Vec<(usize, f64)>> = targets
        .iter()
        .zip(&weights)
        .map(|(&t, &w)| Ok(vec![(idx(t, "a leaf target")?, w)]))
        .collect::<Result<_, String>>()?;
    // A root whose two children are the same leaf is that leaf (a one-leaf tree), as
    // ONNX Runtime reads it (ONNX's reference takes the leaf at the root's index).
    let roots = cx
        .ints("tree_roots")
        .iter()
        .map(|&r| {
            let r = idx(r, "a tree root")?;
            match (truel.get(r), falsel.get(r)) {
                (Some(&a), Some(&b)) if a != 0 && b != 0 && truen[r] == falsen[r] => {
                    Ok(Child::Leaf(idx(truen[r], "a leaf id")?))
                }
                (Some(_), _) => Ok(Child::Node(r)),
                _ => Err(format!("tree root {r} is past the {n} nodes")),
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    let aggregate = match cx.int("aggregate_function", 1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        a => return Err(format!("unknown aggregate_function {a}")),
    };
    let post = match cx.int("post_transform", 0) {
        0 => Post::None,
        1 => Post::Softmax,
        2 => Post::Logistic,
        3 => Post::SoftmaxZero,
        4 => Post::Probit,
        p => return Err(format!("unknown post_transform {p}")),
    };
    let forest =
        Forest { splits: nodes, leaves, roots, n_targets: n_targets as usize, aggregate, post, base: Vec::new() };
    let x = cx.input(0)?;
    let out = cx.ty(x).dtype;
    Ok(vec![regress(cx, &forest, out)?])
}

/// The legacy node attributes (TreeEnsembleRegressor and TreeEnsembleClassifier,
/// opsets 1 and 3): nodes keyed by (tree id, node id), string modes with LEAF nodes,
/// votes keyed by (tree id, node id) in `{prefix}_treeids` / `_nodeids` / `_ids` /
/// `_weights`.
fn legacy_forest(cx: &NodeCx, prefix: &str, n_targets: usize) -> Result<Forest, String> {
    let tree = cx.ints("nodes_treeids");
    let n = tree.len();
    let node = per_node(cx.ints("nodes_nodeids"), n, "nodes_nodeids", -1)?;
    let feature = per_node(cx.ints("nodes_featureids"), n, "nodes_featureids", 0)?;
    let values = match tensor_f64(cx, "nodes_values_as_tensor")? {
        Some(v) => v,
        None => cx.floats("nodes_values").into_iter().map(f64::from).collect(),
    };
    let values = per_node(values, n, "nodes_values", 0.0)?;
    let modes = per_node(cx.strings("nodes_modes")?, n, "nodes_modes", "LEAF".to_string())?;
    let truen = per_node(cx.ints("nodes_truenodeids"), n, "nodes_truenodeids", 0)?;
    let falsen = per_node(cx.ints("nodes_falsenodeids"), n, "nodes_falsenodeids", 0)?;
    let missing = per_node(cx.ints("nodes_missing_value_tracks_true"), n, "nodes_missing_value_tracks_true", 0)?;
    // Each (tree, node) as a split or a leaf.
    let mut key: HashMap<(i64, i64), Child> = HashMap::new();
    let mut order: Vec<i64> = Vec::new();
    let (mut n_splits, mut n_leaves) = (0, 0);
    for i in 0..n {
        let c = if modes[i] == "LEAF" {
            n_leaves += 1;
            Child::Leaf(n_leaves - 1)
        } else {
            n_splits += 1;
            Child::Node(n_splits - 1)
        };
        if key.insert((tree[i], node[i]), c).is_some() {
            return Err(format!("tree {} has node id {} twice", tree[i], node[i]));
        }
        if !order.contains(&tree[i]) {
            order.push(tree[i]);
        }
    }
    let find = |t: i64, id: i64| key.get(&(t, id)).copied().ok_or_else(|| format!("tree {t} has no node {id}"));
    let mut splits = Vec::with_capacity(n_splits);
    for i in 0..n {
        let mode = match modes[i].as_str() {
            "LEAF" => continue,
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            m => return Err(format!("node {i} has the unknown mode '{m}'")),
        };
        splits.push(Split {
            mode,
            feature: feature[i],
            value: values[i],
            members: Vec::new(),
            yes: find(tree[i], truen[i])?,
            no: find(tree[i], falsen[i])?,
            missing_true: missing[i] != 0,
        });
    }
    let mut leaves = vec![Vec::new(); n_leaves];
    let vt = cx.ints(&format!("{prefix}_treeids"));
    let vn = per_node(cx.ints(&format!("{prefix}_nodeids")), vt.len(), &format!("{prefix}_nodeids"), 0)?;
    let vi = per_node(cx.ints(&format!("{prefix}_ids")), vt.len(), &format!("{prefix}_ids"), 0)?;
    let vw = match tensor_f64(cx, &format!("{prefix}_weights_as_tensor"))? {
        Some(v) => v,
        None => cx.floats(&format!("{prefix}_weights")).into_iter().map(f64::from).collect(),
    };
    let vw = per_node(vw, vt.len(), &format!("{prefix}_weights"), 0.0)?;
    for j in 0..vt.len() {
        match find(vt[j], vn[j])? {
            Child::Leaf(l) => {
                let target = usize::try_from(vi[j]).map_err(|_| format!("vote {j} is for target {}", vi[j]))?;
                leaves[l].push((target, vw[j]));
            }
            Child::Node(_) => return Err(format!("vote {j} is for node {} of tree {}, not a leaf", vn[j], vt[j])),
        }
    }
    // Each tree's root: its node 0.
    let roots = order.iter().map(|&t| find(t, 0)).collect::<Result<Vec<_>, _>>()?;
    let base = match tensor_f64(cx, "base_values_as_tensor")? {
        Some(v) => v,
        None => cx.floats("base_values").into_iter().map(f64::from).collect(),
    };
    Ok(Forest {
        splits,
        leaves,
        roots,
        n_targets,
        aggregate: aggregate_of(&cx.string("aggregate_function", "SUM")?)?,
        post: post_of(&cx.string("post_transform", "NONE")?)?,
        base,
    })
}

fn tree_ensemble_regressor(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let n_targets = cx.int("n_targets", 1);
    if !(1..=1 << 20).contains(&n_targets) {
        return Err(format!("n_targets must be positive, got {n_targets}"));
    }
    let forest = legacy_forest(cx, "target", n_targets as usize)?;
    Ok(vec![regress(cx, &forest, DType::F32)?])
}

/// Whether the node is a classifier (TreeEnsembleClassifier, LinearClassifier) or a
/// LabelEncoder to strings, built by [`classify`]: its output may be a string tensor.
pub(crate) fn applies(cx: &NodeCx) -> bool {
    (cx.node.domain == "ai.onnx.ml"
        && matches!(cx.node.op_type.as_str(), "TreeEnsembleClassifier" | "LinearClassifier"))
        || super::ml::encodes_strings(cx)
}

/// A classifier's label and scores.
pub(crate) fn classify(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    match cx.node.op_type.as_str() {
        "LinearClassifier" => super::ml::linear_classifier(cx),
        "LabelEncoder" => super::ml::label_encoder_strings(cx),
        _ => classifier(cx),
    }
}

/// TreeEnsembleClassifier (opsets 1 and 3): the votes summed per class, then labels
/// and scores as ONNX Runtime finalises them. More than two classes: base values added,
/// the label the class of the highest score among the classes voted for (or given a
/// base value), the scores post-transformed (a class with no vote scores 0). Two
/// classes follow ONNX Runtime's binary rules: when the votes name one class only
/// (the "binary case", as converters write a positive-class probability or margin),
/// the label is the second class when the score passes 0.5 (all weights positive) or 0,
/// and the scores are `[1 - s, s]`, or `[-s, s]` (`[logistic(-s), logistic(s)]` under
/// LOGISTIC); when both classes are voted for, the scores are post-transformed as a
/// pair and the label is 1 or 0 by the sign of the second class's score.
fn classifier(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    use super::shapes::Out;
    let ints = cx.ints("classlabels_int64s");
    let strs: Vec<Vec<u8>> =
        cx.node.attribute.iter().find(|a| a.name == "classlabels_strings").map_or_else(Vec::new, |a| a.strings.clone());
    let c = match (ints.len(), strs.len()) {
        (0, 0) => return Err("classlabels_int64s or classlabels_strings is required".into()),
        (n, 0) | (0, n) => n,
        _ => return Err("give classlabels_int64s or classlabels_strings, not both".into()),
    };
    if c < 2 {
        return Err(format!("a classifier needs at least two class labels, got {c}"));
    }
    let mut f = legacy_forest(cx, "class", c)?;
    f.aggregate = Aggregate::Sum;
    if c == 2 && f.post == Post::Probit {
        return Err("post_transform PROBIT for two classes is not supported yet".into());
    }
    if !(f.base.is_empty() || f.base.len() == c || (c == 2 && f.base.len() == 1)) {
        return Err(format!("base_values has {} values for {c} classes (give none or one per class)", f.base.len()));
    }
    let weights: Vec<f64> = f.leaves.iter().flatten().map(|&(_, w)| w).collect();
    let classes: std::collections::BTreeSet<usize> = f.leaves.iter().flatten().map(|&(k, _)| k).collect();
    let sc = scores(cx, &f, true)?;
    let dt = sc.dtype;
    let has = sc.has.ok_or("internal: votes")?;
    let zero = floats(cx, dt, &[1], &[0.0])?;
    let (label_index, z, raw_label) = if c > 2 {
        // Base values: added, and every class counts as scored.
        let mut p = sc.value;
        let mut has = has;
        if !f.base.is_empty() {
            let bv = floats(cx, dt, &[c as u64], &f.base)?;
            p = cx.add1("with_base", Add {}, &[p, bv])?;
            let t = cx.i64_const(&[1], &[1])?;
            let t = cx.add1("base_given", Cast::new(DType::Bool), &[t])?;
            has = cx.add1("all_scored", Or {}, &[has, t])?;
        }
        let v = cx.add1("values", Where {}, &[has, p, zero])?;
        let low = floats(cx, dt, &[1], &[f64::NEG_INFINITY])?;
        let cand = cx.add1("candidates", Where {}, &[has, p, low])?;
        let idx = cx.add1("best", ArgMax { axis: -1, keepdims: false, select_last_index: false }, &[cand])?;
        (idx, post(cx, f.post, v, "")?, false)
    } else {
        binary(cx, &f, sc.value, has, dt, &weights, classes.len() == 1)?
    };
    let z = if cx.ty(z).dtype == DType::F32 { z } else { cx.add1("scores_f32", Cast::new(DType::F32), &[z])? };
    // Two classes voted both ways: ONNX Runtime's label is 1 or 0 itself (string labels:
    // the label at that index).
    let label = if raw_label && strs.is_empty() {
        Out::Value(cx.add1("label", Identity {}, &[label_index])?)
    } else {
        super::ml::labels_at(cx, &ints, &strs, label_index)?
    };
    Ok(vec![label, Out::Value(z)])
}

/// Two classes, as ONNX Runtime finalises them (see [`classifier`]): the label's index
/// (or, `raw`, the label itself: 1 or 0) and the `[rows, 2]` scores.
fn binary(
    cx: &mut NodeCx,
    f: &Forest,
    s: Value,
    has: Value,
    dt: DType,
    weights: &[f64],
    binary_case: bool,
) -> Result<(Value, Value, bool), String> {
    let col = |cx: &mut NodeCx, v: Value, j: i64, what: &str| {
        cx.add1(what, Slice { starts: vec![j], ends: vec![j + 1], axes: vec![1], steps: vec![] }, &[v])
    };
    let (s0, s1) = (col(cx, s, 0, "score0")?, col(cx, s, 1, "score1")?);
    let (h0, h1) = (col(cx, has, 0, "has0")?, col(cx, has, 1, "has1")?);
    let zero = floats(cx, dt, &[1], &[0.0])?;
    // After the base values: p0, p1, and whether a row keeps both scores.
    let (p0, p1, both) = match f.base.len() {
        2 => {
            let (b0, b1) = (floats(cx, dt, &[1], &[f.base[0]])?, floats(cx, dt, &[1], &[f.base[1]])?);
            // With a vote for class 1, ONNX Runtime scores it b1 + s0 and class 0 its negation.
            let q1 = cx.add1("class1_from_class0", Add {}, &[s0, b1])?;
            let q0 = cx.add1("class0_negated", Neg {}, &[q1])?;
            let r1 = cx.add1("class1_with_base", Add {}, &[s1, b1])?;
            let r0 = cx.add1("class0_with_base", Add {}, &[s0, b0])?;
            let p1 = cx.add1("class1", Where {}, &[h1, q1, r1])?;
            let p0 = cx.add1("class0", Where {}, &[h1, q0, r0])?;
            let t = cx.i64_const(&[1], &[1])?;
            (p0, p1, cx.add1("both", Cast::new(DType::Bool), &[t])?)
        }
        1 => {
            let b0 = floats(cx, dt, &[1], &[f.base[0]])?;
            (cx.add1("class0_with_base", Add {}, &[s0, b0])?, s1, h1)
        }
        0 => (s0, s1, h1),
        n => return Err(format!("base_values has {n} values for 2 classes")),
    };
    let v0 = cx.add1("value0", Where {}, &[h0, p0, zero])?;
    let v1 = cx.add1("value1", Where {}, &[h1, p1, zero])?;
    // The positive class's weight: class 1's score if voted for, else class 0's.
    let pos = cx.add1("positive_weight", Where {}, &[h1, p1, v0])?;
    let all_positive = weights.iter().all(|&w| w >= 0.0);
    let cut = floats(cx, dt, &[1], &[if binary_case && all_positive { 0.5 } else { 0.0 }])?;
    let hit = cx.add1("positive", Greater {}, &[pos, cut])?;
    let hit = cx.add1("positive_flat", Reshape { shape: vec![-1], allowzero: false }, &[hit])?;
    let idx = cx.add1("label_index", Cast::new(DType::I64), &[hit])?;
    // Rows with both scores: the pair post-transformed.
    let pair = cx.add1("pair", Concat { axis: 1 }, &[v0, v1])?;
    let z_two = post(cx, f.post, pair, "pair_")?;
    // Rows with one score s = v0.
    let one_minus = |cx: &mut NodeCx| -> Result<Value, String> {
        let one = floats(cx, dt, &[1], &[1.0])?;
        cx.add1("complement", Sub {}, &[one, v0])
    };
    let z_one = if binary_case && all_positive {
        let c = one_minus(cx)?;
        cx.add1("single", Concat { axis: 1 }, &[c, v0])?
    } else if binary_case || f.base.is_empty() {
        let n = cx.add1("negated", Neg {}, &[v0])?;
        if f.post == Post::Logistic {
            let a = cx.add1("logistic_negated", Sigmoid {}, &[n])?;
            let b = cx.add1("logistic_value", Sigmoid {}, &[v0])?;
            cx.add1("single", Concat { axis: 1 }, &[a, b])?
        } else {
            cx.add1("single", Concat { axis: 1 }, &[n, v0])?
        }
    } else {
        let z = zero_col(cx, v0)?;
        cx.add1("single", Concat { axis: 1 }, &[v0, z])?
    };
    let z = cx.add1("scores", Where {}, &[both, z_two, z_one])?;
    Ok((idx, z, !binary_case))
}

/// A column of zeros shaped like `v`.
fn zero_col(cx: &mut NodeCx, v: Value) -> Result<Value, String> {
    let dt = cx.ty(v).dtype;
    let zero = floats(cx, dt, &[1], &[0.0])?;
    cx.add1("zeros", Mul {}, &[v, zero])
}
