//! Sequences of tensors whose length is known at import: a sequence value is the list of
//! its elements' IR values (kept aside by the importer, never an IR value itself, like a
//! shape value). SequenceConstruct, SequenceEmpty, SequenceInsert, SequenceErase,
//! SequenceAt, SequenceLength, SplitToSequence, ConcatFromSequence and Identity work on
//! the list. A position given at run time selects among elements of one shape: they are
//! stacked and the element (or each element of the new order) is a Gather by an index
//! computed from the position (checked at run time like any Gather index); a position
//! given at run time over elements of different shapes is refused (the result's shape
//! would depend on it). SequenceMap imports its body once per element (over sequences
//! whose length only the run knows, [`RunSeq`], it is a Scan over their rows); If and Loop over
//! sequences are `control::sequence_if` and `control::unrolled_loop`. A model input or
//! output that is a sequence is one input or output per element (`import.rs`,
//! docs/sequences.md).
use super::shapes::Out;
use super::NodeCx;
use dlc_ir::ops::{Add, And, Concat, Equal, Gather, GreaterOrEqual, Less, Reshape, Where};
use dlc_ir::Value;

/// A sequence whose length only the run knows (the result of a Loop that appends to a
/// sequence each iteration, `control::loop_outs`): element `i` is the corner of `data[i]`
/// that row `i` of `shapes` gives. A model output gives both (docs/sequences.md).
#[derive(Clone, Debug)]
pub(crate) struct RunSeq {
    /// `T[n, b...]`: each element padded with zeros to the box `b`.
    pub data: Value,
    /// `i64[n, rank]`: each element's dims.
    pub shapes: Value,
    /// For each dim of the elements, whether an element may be smaller than the box
    /// there (none: `data` is the elements stacked).
    pub ragged: Vec<bool>,
    /// How many leading dims of the box some elements lack (elements of a lower rank: their
    /// rows of `shapes` are -1 there and their data at index 0; docs/sequences.md).
    pub lacking: usize,
}

impl RunSeq {
    /// Whether every element fills the box.
    pub fn uniform(&self) -> bool {
        !self.ragged.contains(&true)
    }

    /// Refuses `what` of a sequence whose elements differ in rank (only its length,
    /// appending, Identity and a model output take one).
    pub fn one_rank(&self, what: &str) -> Result<(), String> {
        match self.lacking {
            0 => Ok(()),
            _ => Err(format!(
                "its elements differ in rank (which has which only the run knows); {what} of it is not supported \
                 (SequenceLength, SequenceInsert, SequenceErase, Identity and a model output take it)"
            )),
        }
    }
}

/// `s` with its box lifted to rank `r` (leading dims of 1, which its elements lack: -1 in
/// their rows of `shapes`).
fn lift(cx: &mut NodeCx, s: RunSeq, r: usize, name: &str) -> Result<RunSeq, String> {
    let t = cx.ty(s.data);
    let k = r.checked_sub(t.shape.rank() - 1).ok_or("internal: lifting a sequence to a lower rank")?;
    if k == 0 {
        return Ok(s);
    }
    let mut dims: Vec<String> = t.shape.0.iter().map(|d| d.expr().to_string()).collect();
    dims.splice(1..1, std::iter::repeat_n("1".to_string(), k));
    let data = cx.add1(&format!("{name}_lifted"), dlc_ir::ops::View { dims: dims.join(";") }, &[s.data])?;
    let mut pads = vec!["0".to_string(); 4];
    pads[1] = k.to_string();
    let pad =
        dlc_ir::ops::Pad { pads: Vec::new(), mode: dlc_ir::ops::PadMode::Constant, value: -1.0, exprs: pads.join(";") };
    let shapes = cx.add1(&format!("{name}_lifted_dims"), pad, &[s.shapes])?;
    let mut ragged = vec![true; k];
    ragged.extend(s.ragged);
    Ok(RunSeq { data, shapes, ragged, lacking: k + s.lacking })
}

/// The elements `elems` (of a sequence of known length) as a [`RunSeq`]: each padded to
/// one box (each dim the largest of theirs, a bound where a dim comes from values) and
/// stacked, their dims stacked likewise.
pub(crate) fn stack_boxed(cx: &mut NodeCx, elems: &[Value], name: &str) -> Result<RunSeq, String> {
    use dlc_ir::{Dim, Expr};
    let maxima = dlc_ir::bind::symbol_maxima(&cx.imp.graph).map_err(|e| e.to_string())?;
    let first = cx.ty(*elems.first().ok_or("internal: no elements to stack")?);
    // The box's rank: the largest of the elements'; an element of a lower rank lacks the
    // leading dims (its data there at index 0, its dims there -1).
    let r = elems.iter().map(|&e| cx.ty(e).shape.rank()).max().unwrap_or(0);
    // Each element's dims and a bound of each (over the input dims alone).
    let mut dims_of: Vec<Vec<(Expr, Expr)>> = Vec::with_capacity(elems.len());
    let mut lacking = 0;
    for &e in elems {
        let t = cx.ty(e);
        if t.dtype != first.dtype {
            return Err(format!("it holds elements of {first} and of {t}; dlc needs one element type"));
        }
        let k = r - t.shape.rank();
        lacking = lacking.max(k);
        let mut db = vec![(Expr::c(-1), Expr::c(1)); k];
        for d in &t.shape.0 {
            let b = dlc_ir::bind::bounded(&d.expr(), &maxima).filter(|b| {
                let mut v = Vec::new();
                b.symbols(&mut v);
                !v.iter().any(|x| maxima.contains_key(x))
            });
            db.push((
                d.expr(),
                b.ok_or_else(|| format!("it holds an element of {t}, whose dim {d} dlc cannot bound"))?,
            ));
        }
        dims_of.push(db);
    }
    let boxed: Vec<Expr> =
        (0..r).map(|j| dims_of.iter().skip(1).fold(dims_of[0][j].1.clone(), |m, db| m.max_with(&db[j].1))).collect();
    // A dim is ragged unless every element's equals the box's there.
    let ragged: Vec<bool> = (0..r).map(|j| dims_of.iter().any(|db| db[j].0 != boxed[j])).collect();
    let box_text: Vec<String> = boxed.iter().map(|b| b.to_string()).collect();
    let (mut rows, mut dims) = (Vec::new(), Vec::new());
    for (j, (&e, db)) in elems.iter().zip(&dims_of).enumerate() {
        let own: Vec<Expr> = db.iter().map(|(d, _)| d.clone()).collect();
        // Its data, with the dims it lacks as dims of 1.
        let k = r - cx.ty(e).shape.rank();
        let (e, inside) = match k {
            0 => (e, own.clone()),
            _ => {
                let inside: Vec<Expr> =
                    own.iter().map(|d| if *d == Expr::c(-1) { Expr::c(1) } else { d.clone() }).collect();
                let dims: Vec<String> = inside.iter().map(|d| d.to_string()).collect();
                (cx.add1(&format!("{name}_elem{j}_lifted"), dlc_ir::ops::View { dims: dims.join(";") }, &[e])?, inside)
            }
        };
        let p = match inside == boxed {
            true => e,
            false => cx.add1(&format!("{name}_elem{j}_padded"), pad_to_box(&inside, &boxed, 0), &[e])?,
        };
        if cx.ty(p).shape.0.iter().map(Dim::expr).collect::<Vec<_>>() != boxed {
            return Err(format!("internal: padded to {}, not the box", cx.ty(p)));
        }
        let view = dlc_ir::ops::View {
            dims: std::iter::once("1".to_string()).chain(box_text.clone()).collect::<Vec<_>>().join(";"),
        };
        rows.push(cx.add1(&format!("{name}_elem{j}"), view, &[p])?);
        let d = match r {
            0 => cx.i64_const(&[1, 0], &[])?,
            _ => {
                let sv = super::shapes::ShapeVal { elems: own, scalar: false };
                let d = super::shapes::shape_tensor(cx, &sv, &format!("{name}_elem{j}_dims"))?;
                let row = Reshape { shape: vec![1, r as i64], allowzero: false };
                cx.add1(&format!("{name}_elem{j}_dims_row"), row, &[d])?
            }
        };
        dims.push(d);
    }
    let one = |cx: &mut NodeCx, vs: Vec<Value>, what: &str| match vs.len() {
        1 => Ok(vs[0]),
        _ => cx.add1(&format!("{name}_{what}"), Concat { axis: 0 }, &vs),
    };
    let (data, shapes) = (one(cx, rows, "data")?, one(cx, dims, "shapes")?);
    Ok(RunSeq { data, shapes, ragged, lacking })
}

/// The zero padding at the end of each dim that takes an element of dims `dims` (after
/// `lead` leading dims left as they are) to the box `boxed` (amounts as expressions).
pub(crate) fn pad_to_box(dims: &[dlc_ir::Expr], boxed: &[dlc_ir::Expr], lead: usize) -> dlc_ir::ops::Pad {
    let mut amounts = vec!["0".to_string(); 2 * lead + dims.len()];
    amounts.extend(dims.iter().zip(boxed).map(|(d, b)| (b - d).to_string()));
    dlc_ir::ops::Pad { pads: Vec::new(), mode: dlc_ir::ops::PadMode::Constant, value: 0.0, exprs: amounts.join(";") }
}

/// The ops this module evaluates.
pub(crate) const OPS: &[&str] = &[
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceInsert",
    "SequenceErase",
    "SequenceAt",
    "SequenceLength",
    "SplitToSequence",
    "ConcatFromSequence",
    "SequenceMap",
];

/// Registers the sequence ops (the importer dispatches them to [`build`]; the registry
/// entries say they are supported).
pub(crate) fn register(reg: &mut std::collections::HashMap<&'static str, super::BuildFn>) {
    for op in OPS {
        reg.insert(op, |cx| Err(format!("internal: {} reached the tensor path", cx.node.op_type)));
    }
}

/// Operand `i` as a sequence.
fn seq(cx: &NodeCx, i: usize) -> Result<Vec<Value>, String> {
    let name = cx.node.input.get(i).filter(|n| !n.is_empty()).ok_or_else(|| format!("input {i} is required"))?;
    if cx.imp.run_sequences.contains_key(name) {
        return Err(format!(
            "input {i} ('{name}') is a sequence whose length only the run knows (a Loop appended to it): {} of it is \
             not supported yet (SequenceAt, SequenceLength, ConcatFromSequence, SequenceInsert, SequenceErase, \
             Identity and a model output take it)",
            cx.node.op_type
        ));
    }
    let s = appendable(cx, i)?;
    if s.iter().any(|e| cx.imp.carried_prefixes.contains(e)) {
        return Err(format!(
            "input {i} ('{name}') is a sequence a Loop carries, whose elements are known only when the model runs \
             (docs/sequences.md): its body may append to it (SequenceInsert without a position) or pass it on, not \
             take {} of it",
            cx.node.op_type
        ));
    }
    Ok(s)
}

/// Operand `i` as a sequence, which may be one a Loop carries (whose first elements only
/// the run knows, `Importer::carried_prefixes`): for the ops that pass it on or append to
/// it.
fn appendable(cx: &NodeCx, i: usize) -> Result<Vec<Value>, String> {
    let name = cx.node.input.get(i).filter(|n| !n.is_empty()).ok_or_else(|| format!("input {i} is required"))?;
    cx.imp.sequences.get(name).cloned().ok_or_else(|| format!("input {i} ('{name}') is not a sequence dlc knows"))
}

/// The elements of `a`, then those of `b`: both padded to one box, rows and dims stacked.
pub(crate) fn concat_seqs(cx: &mut NodeCx, a: RunSeq, b: RunSeq, name: &str) -> Result<RunSeq, String> {
    use dlc_ir::{Dim, Expr};
    let (ta, tb) = (cx.ty(a.data), cx.ty(b.data));
    if ta.dtype != tb.dtype {
        return Err(format!("it holds elements of {}, and the one added is {}", ta.dtype, tb.dtype));
    }
    // One box rank: the lower lifted (its elements lack the leading dims).
    let r = ta.shape.rank().max(tb.shape.rank()) - 1;
    let (a, b) = (lift(cx, a, r, &format!("{name}_first"))?, lift(cx, b, r, &format!("{name}_second"))?);
    let (ta, tb) = (cx.ty(a.data), cx.ty(b.data));
    let lacking = a.lacking.max(b.lacking);
    let box_of = |t: &dlc_ir::TensorType| t.shape.0[1..].iter().map(Dim::expr).collect::<Vec<Expr>>();
    let (ba, bb) = (box_of(&ta), box_of(&tb));
    let boxed: Vec<Expr> = ba.iter().zip(&bb).map(|(x, y)| x.max_with(y)).collect();
    let ragged =
        (0..boxed.len()).map(|j| a.ragged[j] || b.ragged[j] || ba[j] != boxed[j] || bb[j] != boxed[j]).collect();
    let mut rows = Vec::with_capacity(2);
    for (k, (v, own)) in [(a.data, &ba), (b.data, &bb)].into_iter().enumerate() {
        rows.push(match *own == boxed {
            true => v,
            false => cx.add1(&format!("{name}_part{k}_padded"), pad_to_box(own, &boxed, 1), &[v])?,
        });
    }
    let data = cx.add1(&format!("{name}_joined"), Concat { axis: 0 }, &rows)?;
    let shapes = cx.add1(&format!("{name}_joined_dims"), Concat { axis: 0 }, &[a.shapes, b.shapes])?;
    Ok(RunSeq { data, shapes, ragged, lacking })
}

/// Element `p` (an i64 scalar, `p + n` when negative) of `s`: row `p` of its data, cut to
/// its dims. A position out of range fails the run at the Gather's index check.
fn run_at(cx: &mut NodeCx, s: &RunSeq, p: Value) -> Result<Value, String> {
    s.one_rank("taking an element")?;
    let data = cx.ty(s.data);
    let n = data.shape.0.first().ok_or("internal: a sequence's data has no rows")?.expr();
    let nv = super::shapes::shape_tensor(cx, &super::shapes::ShapeVal { elems: vec![n], scalar: true }, "length")?;
    let p = wrap(cx, p, nv)?;
    let row = cx.add1("row", Gather { axis: 0 }, &[s.data, p])?;
    if s.uniform() {
        return Ok(row);
    }
    // The corner of the row that the element's dims give.
    let dims = cx.add1("dims", Gather { axis: 0 }, &[s.shapes, p])?;
    let r = data.shape.rank() - 1;
    let zeros = cx.i64_const(&[r as u64], &vec![0; r])?;
    for (k, v) in [("row", row), ("starts", zeros), ("ends", dims)] {
        cx.imp.values.insert(format!("{}::{k}", cx.name), v);
    }
    let b = super::control::body("Slice", &["row", "starts", "ends"], &["element"]);
    Ok(super::control::expand(cx, vec![b], &["element"])?[0])
}

/// The elements `all[idx[j]]` (each index an i64 scalar computed at run time): a sequence
/// of known length when the elements share one type, else one of elements padded to a
/// box (which element has which shape is only known when the model runs).
fn reorder(cx: &mut NodeCx, all: &[Value], idx: Vec<Value>) -> Result<Out, String> {
    let t = cx.ty(*all.first().ok_or("a position given at run time into an empty sequence")?);
    if all.iter().all(|e| cx.ty(*e) == t) {
        let stacked = stack(cx, all)?;
        return Ok(Out::Seq(
            idx.into_iter().enumerate().map(|(j, i)| pick(cx, stacked, i, j)).collect::<Result<_, _>>()?,
        ));
    }
    let s = stack_boxed(cx, all, "elements")?;
    let idx = idx
        .into_iter()
        .enumerate()
        .map(|(j, i)| cx.add1(&format!("index{j}_1"), Reshape { shape: vec![1], allowzero: false }, &[i]))
        .collect::<Result<Vec<_>, _>>()?;
    let idx = match idx.len() {
        1 => idx[0],
        _ => cx.add1("order", Concat { axis: 0 }, &idx)?,
    };
    let data = cx.add1("reordered", Gather { axis: 0 }, &[s.data, idx])?;
    let shapes = cx.add1("reordered_dims", Gather { axis: 0 }, &[s.shapes, idx])?;
    Ok(Out::RunSeq(RunSeq { data, shapes, ragged: s.ragged, lacking: s.lacking }))
}

/// `a` where the bool scalar `cond` holds, else `b`, sequences of different lengths or
/// of lengths only the run knows (`None`: an empty sequence): both lifted to one rank, padded
/// to one box and to as many rows as the longer may have, selected with `Where`, and cut to
/// the length of the one taken.
pub(crate) fn select_seqs(
    cx: &mut NodeCx,
    cond: Value,
    a: Option<RunSeq>,
    b: Option<RunSeq>,
    name: &str,
) -> Result<RunSeq, String> {
    use dlc_ir::{Dim, Expr};
    let rows = |cx: &NodeCx, s: &Option<RunSeq>| -> Expr {
        s.as_ref().map_or(Expr::c(0), |s| cx.ty(s.data).shape.0[0].expr())
    };
    let (na, nb) = (rows(cx, &a), rows(cx, &b));
    let count = |cx: &mut NodeCx, n: &Expr, what: &str| {
        let sv = super::shapes::ShapeVal { elems: vec![n.clone()], scalar: false };
        super::shapes::shape_tensor(cx, &sv, &format!("{name}_{what}_length"))
    };
    let (ca, cb) = (count(cx, &na, "then")?, count(cx, &nb, "else")?);
    let n = cx.add1(&format!("{name}_length"), Where {}, &[cond, ca, cb])?;
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        // One empty: the other's rows, none of them when the empty one is taken.
        (Some(s), None) | (None, Some(s)) => {
            let data = super::bind::first_slices(cx, &format!("{name}_data"), s.data, n, 0)?;
            let shapes = super::bind::first_slices(cx, &format!("{name}_dims"), s.shapes, n, 0)?;
            return Ok(RunSeq { data, shapes, ..s });
        }
        (None, None) => return Err("internal: two empty sequences to select from".into()),
    };
    if cx.ty(a.data).dtype != cx.ty(b.data).dtype {
        return Err(format!(
            "its elements are {} in one branch and {} in the other",
            cx.ty(a.data).dtype,
            cx.ty(b.data).dtype
        ));
    }
    let r = (cx.ty(a.data).shape.rank()).max(cx.ty(b.data).shape.rank()) - 1;
    let (a, b) = (lift(cx, a, r, &format!("{name}_then"))?, lift(cx, b, r, &format!("{name}_else"))?);
    let dims = |cx: &NodeCx, v: Value| cx.ty(v).shape.0.iter().map(Dim::expr).collect::<Vec<Expr>>();
    let (da, db) = (dims(cx, a.data), dims(cx, b.data));
    let boxed: Vec<Expr> = da.iter().zip(&db).map(|(x, y)| x.max_with(y)).collect();
    let ragged = (0..r).map(|j| a.ragged[j] || b.ragged[j] || da[1 + j] != boxed[1 + j] || db[1 + j] != boxed[1 + j]);
    let ragged: Vec<bool> = ragged.collect();
    let pad = |cx: &mut NodeCx, v: Value, full: &[Expr], tag: &str| -> Result<Value, String> {
        let own = dims(cx, v);
        match own == full {
            true => Ok(v),
            false => cx.add1(&format!("{name}_{tag}_padded"), pad_to_box(&own, full, 0), &[v]),
        }
    };
    let dims_full = vec![boxed[0].clone(), Expr::c(r as i64)];
    let mut picked = Vec::with_capacity(2);
    for (what, x, y, full) in [("data", a.data, b.data, &boxed), ("dims", a.shapes, b.shapes, &dims_full)] {
        let (x, y) = (pad(cx, x, full, &format!("then_{what}"))?, pad(cx, y, full, &format!("else_{what}"))?);
        let v = cx.add1(&format!("{name}_{what}_taken"), Where {}, &[cond, x, y])?;
        picked.push(super::bind::first_slices(cx, &format!("{name}_{what}"), v, n, 0)?);
    }
    Ok(RunSeq { data: picked[0], shapes: picked[1], ragged, lacking: a.lacking.max(b.lacking) })
}

/// The ops over a sequence whose length only the run knows ([`RunSeq`]), when operand 0
/// is one: `None` for other ops (which [`seq`] refuses for it).
fn run_seq_op(cx: &mut NodeCx) -> Result<Option<Vec<Out>>, String> {
    let Some(s) = cx.node.input.first().and_then(|n| cx.imp.run_sequences.get(n)).cloned() else { return Ok(None) };
    let data = cx.ty(s.data);
    let n = data.shape.0.first().ok_or("internal: a sequence's data has no rows")?.expr();
    let len = super::shapes::ShapeVal { elems: vec![n.clone()], scalar: true };
    Ok(Some(match cx.node.op_type.as_str() {
        "Identity" => vec![Out::RunSeq(s)],
        // An append (no position): the element stacked after the rows, in one box.
        "SequenceInsert" if cx.opt_input(2)?.is_none() => {
            let x = cx.input(1)?;
            let last = stack_boxed(cx, &[x], "appended")?;
            vec![Out::RunSeq(concat_seqs(cx, s, last, "appended")?)]
        }
        "SequenceLength" => vec![Out::Value(super::shapes::shape_tensor(cx, &len, "length")?)],
        "SequenceInsert" => {
            let x = cx.input(1)?;
            let nv = super::shapes::shape_tensor(cx, &len, "length")?;
            let p = run_position(cx, 2)?.ok_or("internal: an insert without a position")?;
            let last = stack_boxed(cx, &[x], "inserted")?;
            let all = concat_seqs(cx, s, last, "inserted")?;
            // Row j of the result: j < p ? old[j] : (j == p ? x (row n) : old[j - 1]); a
            // position outside [-n, n] fails the run at the Gather.
            let p = wrap(cx, p, nv)?;
            let j = rows_iota(cx, all.data)?;
            let one = cx.i64_const(&[], &[1])?;
            let prev = cx.add1("previous", dlc_ir::ops::Sub {}, &[j, one])?;
            let at = cx.add1("at", Equal {}, &[j, p])?;
            let after = cx.add1("after", Where {}, &[at, nv, prev])?;
            let before = cx.add1("before", Less {}, &[j, p])?;
            let idx = cx.add1("order", Where {}, &[before, j, after])?;
            let limit = cx.add1("length_after", Add {}, &[nv, one])?;
            let idx = checked(cx, idx, p, limit)?;
            vec![Out::RunSeq(gather_rows(cx, all, idx, None)?)]
        }
        "SequenceErase" => {
            let nv = super::shapes::shape_tensor(cx, &len, "length")?;
            let p = match run_position(cx, 1)? {
                Some(p) => p,
                None => cx.i64_const(&[], &[-1])?,
            };
            // Row j of the result: j < p ? old[j] : old[j + 1], for j < n - 1 (the last
            // row, clamped to n - 1, is cut); a position outside [-n, n - 1] fails the
            // run at the Gather, an empty sequence at the cut (a count of -1).
            let p = wrap(cx, p, nv)?;
            let j = rows_iota(cx, s.data)?;
            let one = cx.i64_const(&[], &[1])?;
            let next = cx.add1("next", Add {}, &[j, one])?;
            let before = cx.add1("before", Less {}, &[j, p])?;
            let idx = cx.add1("order", Where {}, &[before, j, next])?;
            let n1 = super::shapes::ShapeVal { elems: len.elems.clone(), scalar: false };
            let n1 = super::shapes::shape_tensor(cx, &n1, "length_1")?;
            let count = cx.add1("length_after", dlc_ir::ops::Sub {}, &[n1, one])?;
            let idx = cx.add1("order_in", dlc_ir::ops::Min {}, &[idx, count])?;
            let idx = checked(cx, idx, p, nv)?;
            vec![Out::RunSeq(gather_rows(cx, s, idx, Some(count))?)]
        }
        "SequenceAt" => {
            let p = match position(cx, 1)?.ok_or("position (input 1) is required")? {
                Ok(p) => cx.i64_const(&[], &[p])?,
                Err(p) => p,
            };
            vec![Out::Value(run_at(cx, &s, p)?)]
        }
        "ConcatFromSequence" => {
            s.one_rank("ConcatFromSequence")?;
            let r = data.shape.rank() - 1;
            let new_axis = cx.int("new_axis", 0) != 0;
            let axis = cx.int("axis", 0);
            let a = dlc_ir::ops::normalize_axis(axis, if new_axis { r + 1 } else { r })
                .ok_or_else(|| format!("axis {axis} out of range"))?;
            let ragged: Vec<usize> = (0..r).filter(|&j| s.ragged[j]).collect();
            if !ragged.is_empty() && (new_axis || ragged != [a]) {
                return Err(format!(
                    "its elements differ in shape along dim(s) {ragged:?} (known only when the model runs); dlc \
                     concatenates such elements along the one dim where they differ, not {}",
                    if new_axis { format!("stacked along a new axis {a}") } else { format!("along axis {a}") }
                ));
            }
            if !ragged.is_empty() {
                return Ok(Some(vec![Out::Value(concat_ragged(cx, &s, a)?)]));
            }
            // The elements stacked (`data`), the stacking axis moved to `axis`, and merged
            // with the element's dim there unless `new_axis`.
            let mut perm: Vec<i64> = (1..=r as i64).collect();
            perm.insert(a, 0);
            let moved = cx.add1("moved", dlc_ir::ops::Transpose { perm }, &[s.data])?;
            if new_axis {
                return Ok(Some(vec![Out::Value(moved)]));
            }
            let mut dims: Vec<String> = data.shape.0[1..].iter().map(|d| d.expr().to_string()).collect();
            dims[a] = (&n * &data.shape.0[1 + a].expr()).to_string();
            vec![Out::Value(cx.add1("", dlc_ir::ops::View { dims: dims.join(";") }, &[moved])?)]
        }
        _ => return Ok(None),
    }))
}

/// Operand `i` as a run-time i64 scalar position (a constant one made a value), `None`
/// when absent.
fn run_position(cx: &mut NodeCx, i: usize) -> Result<Option<Value>, String> {
    Ok(match position(cx, i)? {
        None => None,
        Some(Ok(p)) => Some(cx.i64_const(&[], &[p])?),
        Some(Err(p)) => Some(p),
    })
}

/// The run-time position `p` normalised against the length `n` (an i64 scalar, constant
/// or computed at run time: `p + n` when negative).
fn wrap(cx: &mut NodeCx, p: Value, n: Value) -> Result<Value, String> {
    let zero = cx.i64_const(&[], &[0])?;
    let neg = cx.add1("position_negative", Less {}, &[p, zero])?;
    let up = cx.add1("position_up", Add {}, &[p, n])?;
    cx.add1("position_wrapped", Where {}, &[neg, up, p])
}

/// `idx`, or `limit` (an index out of range for rows that number at most `limit`, which
/// fails the run at the Gather's index check) where the wrapped position `p` is not in
/// `0..limit`.
fn checked(cx: &mut NodeCx, idx: Value, p: Value, limit: Value) -> Result<Value, String> {
    let zero = cx.i64_const(&[], &[0])?;
    let ge = cx.add1("position_ge0", GreaterOrEqual {}, &[p, zero])?;
    let lt = cx.add1("position_in", Less {}, &[p, limit])?;
    let ok = cx.add1("position_valid", And {}, &[ge, lt])?;
    cx.add1("order_checked", Where {}, &[ok, idx, limit])
}

/// `0, 1, ...` for each row of `data` (i64).
fn rows_iota(cx: &mut NodeCx, data: Value) -> Result<Value, String> {
    let n = cx.ty(data).shape.0.first().ok_or("internal: a sequence's data has no rows")?.expr();
    let iota = dlc_ir::ops::Iota { len: n.to_string(), start: 0, delta: 1, dtype: dlc_ir::DType::I64 };
    cx.add1("rows", iota, &[])
}

/// The rows `idx` of `s` (data and dims), the first `count` of them when given.
fn gather_rows(cx: &mut NodeCx, s: RunSeq, idx: Value, count: Option<Value>) -> Result<RunSeq, String> {
    let mut data = cx.add1("reordered", Gather { axis: 0 }, &[s.data, idx])?;
    let mut shapes = cx.add1("reordered_dims", Gather { axis: 0 }, &[s.shapes, idx])?;
    if let Some(c) = count {
        data = super::bind::first_slices(cx, "kept", data, c, 0)?;
        shapes = super::bind::first_slices(cx, "kept_dims", shapes, c, 0)?;
    }
    Ok(RunSeq { data, shapes, ..s })
}

/// The elements of `s` concatenated along axis `a`, the one dim where they differ: the
/// data with that axis moved next to the rows and merged with them (`n * box_a`
/// positions, element `f / box_a`'s position `f % box_a`), compressed to the positions
/// within each element's extent there (in order: the concatenation). The result's extent
/// is a count bounded by `n * box_a`.
fn concat_ragged(cx: &mut NodeCx, s: &RunSeq, a: usize) -> Result<Value, String> {
    use super::control::body;
    let r = cx.ty(s.data).shape.rank() - 1;
    // The data as [n, box_a, the other dims...].
    let data = match a {
        0 => s.data,
        _ => {
            let mut perm = vec![0, 1 + a as i64];
            perm.extend((1..=r as i64).filter(|&j| j != 1 + a as i64));
            cx.add1("rows_axis_first", dlc_ir::ops::Transpose { perm }, &[s.data])?
        }
    };
    let dt = cx.ty(data);
    let box_a = dt.shape.0[1].expr();
    let positions = &dt.shape.0[0].expr() * &box_a;
    let mut flat: Vec<String> = vec![positions.to_string()];
    flat.extend(dt.shape.0[2..].iter().map(|d| d.expr().to_string()));
    let flat = cx.add1("rows_flat", dlc_ir::ops::View { dims: flat.join(";") }, &[data])?;
    let iota = dlc_ir::ops::Iota { len: positions.to_string(), start: 0, delta: 1, dtype: dlc_ir::DType::I64 };
    let named = [
        ("flat", flat),
        ("f", cx.add1("positions", iota, &[])?),
        ("box", super::shapes::shape_tensor(cx, &super::shapes::ShapeVal { elems: vec![box_a], scalar: true }, "box")?),
        ("shapes", s.shapes),
        ("axis", cx.i64_const(&[], &[a as i64])?),
    ];
    for (n, v) in named {
        cx.imp.values.insert(format!("{}::{n}", cx.name), v);
    }
    let mut lens = body("Gather", &["shapes", "axis"], &["lens"]);
    lens.int.push(("axis", 1));
    let mut compress = body("Compress", &["flat", "valid"], &["joined"]);
    compress.int.push(("axis", 0));
    let nodes = vec![
        lens,
        body("Div", &["f", "box"], &["element"]),
        body("Mod", &["f", "box"], &["within"]),
        body("Gather", &["lens", "element"], &["extent"]),
        body("Less", &["within", "extent"], &["valid"]),
        compress,
    ];
    let joined = super::control::expand(cx, nodes, &["joined"])?[0];
    if a == 0 {
        return Ok(joined);
    }
    // [total, the other dims...] back to the elements' order of dims.
    let mut perm: Vec<i64> = (1..r as i64).collect();
    perm.insert(a, 0);
    cx.add1("joined_in_place", dlc_ir::ops::Transpose { perm }, &[joined])
}

/// Operand `i` as a position: a constant, or a run-time i64 scalar (`Err`).
fn position(cx: &mut NodeCx, i: usize) -> Result<Option<Result<i64, Value>>, String> {
    let Some(v) = cx.opt_input(i)? else { return Ok(None) };
    if let Some(t) = cx.const_input(i)? {
        return match t.to_i64().as_deref() {
            Some([p]) => Ok(Some(Ok(*p))),
            _ => Err(format!("position (input {i}) must hold one integer")),
        };
    }
    let t = cx.ty(v);
    if t.shape.numel() != Some(1) || !t.dtype.is_signed_int() {
        return Err(format!("position (input {i}) must be one integer, got {t}"));
    }
    let v = if t.dtype == dlc_ir::DType::I64 {
        v
    } else {
        cx.add1("position_i64", dlc_ir::ops::Cast::new(dlc_ir::DType::I64), &[v])?
    };
    Ok(Some(Err(cx.add1("position", Reshape { shape: vec![], allowzero: false }, &[v])?)))
}

/// A constant position normalised against `n` (`-n <= p < n + extra`).
fn normalise(p: i64, n: usize, extra: usize) -> Result<usize, String> {
    let q = if p < 0 { p + n as i64 } else { p };
    if q < 0 || q >= (n + extra) as i64 {
        return Err(format!("position {p} is out of range for a sequence of {n}"));
    }
    Ok(q as usize)
}

/// `elems` stacked along a new first axis (they must share one shape).
fn stack(cx: &mut NodeCx, elems: &[Value]) -> Result<Value, String> {
    let t = cx.ty(*elems.first().ok_or("a position given at run time into an empty sequence")?);
    if elems.iter().any(|e| cx.ty(*e) != t) {
        return Err("a position given at run time selects among elements of different shapes (the result's shape \
                    would depend on it)"
            .into());
    }
    let mut dims = vec!["1".to_string()];
    dims.extend(t.shape.0.iter().map(|d| d.expr().to_string()));
    let mut parts = Vec::with_capacity(elems.len());
    for (j, e) in elems.iter().enumerate() {
        parts.push(cx.add1(&format!("elem{j}"), dlc_ir::ops::View { dims: dims.join(";") }, &[*e])?);
    }
    if parts.len() == 1 {
        return Ok(parts[0]);
    }
    cx.add1("stacked", Concat { axis: 0 }, &parts)
}

/// Element `j` of the reordered sequence: `stacked[idx]` with `idx` computed.
fn pick(cx: &mut NodeCx, stacked: Value, idx: Value, j: usize) -> Result<Value, String> {
    cx.add1(&format!("pick{j}"), Gather { axis: 0 }, &[stacked, idx])
}

pub(crate) fn build(cx: &mut NodeCx) -> Result<Vec<Out>, String> {
    let op = cx.node.op_type.clone();
    // A shape of run-time dims put into a sequence is a tensor computed at run time.
    for name in cx.node.input.clone() {
        if let Some(s) = cx.imp.shape_values.get(&name).cloned() {
            let v = super::shapes::shape_tensor(cx, &s, &format!("{name}_value"))?;
            cx.imp.values.insert(name, v);
        }
    }
    if let Some(outs) = run_seq_op(cx)? {
        return Ok(outs);
    }
    Ok(match op.as_str() {
        "SequenceEmpty" => vec![Out::Seq(Vec::new())],
        "SequenceConstruct" => {
            let elems = (0..cx.node.input.len()).map(|i| cx.input(i)).collect::<Result<Vec<_>, _>>()?;
            if let Some(e) = elems.iter().find(|e| cx.ty(**e).dtype != cx.ty(elems[0]).dtype) {
                return Err(format!("elements of different types ({} and {})", cx.ty(elems[0]), cx.ty(*e)));
            }
            vec![Out::Seq(elems)]
        }
        "Identity" => vec![Out::Seq(appendable(cx, 0)?)],
        "SequenceLength" => {
            let n = seq(cx, 0)?.len() as i64;
            vec![Out::Value(cx.i64_const(&[], &[n])?)]
        }
        "SequenceAt" => {
            let s = seq(cx, 0)?;
            match position(cx, 1)?.ok_or("position (input 1) is required")? {
                Ok(p) => vec![Out::Value(s[normalise(p, s.len(), 0)?])],
                Err(p) if s.iter().all(|e| cx.ty(*e) == cx.ty(s[0])) => {
                    let stacked = stack(cx, &s)?;
                    let len = cx.i64_const(&[], &[s.len() as i64])?;
                    let p = wrap(cx, p, len)?;
                    vec![Out::Value(pick(cx, stacked, p, 0)?)]
                }
                // Elements of other shapes: the one picked has dims only the run knows.
                Err(p) => {
                    let boxed = stack_boxed(cx, &s, "elements")?;
                    vec![Out::Value(run_at(cx, &boxed, p)?)]
                }
            }
        }
        "SequenceInsert" => {
            let x = cx.input(1)?;
            let mut s = match cx.opt_input(2)? {
                None => appendable(cx, 0)?,
                Some(_) => seq(cx, 0)?,
            };
            let n = s.len();
            match position(cx, 2)? {
                None => s.push(x),
                Some(Ok(p)) => s.insert(normalise(p, n, 1)?, x),
                Some(Err(p)) => {
                    // Element j of the result: j < p ? old[j] : (j == p ? x : old[j - 1]).
                    let mut all = s.clone();
                    all.push(x);
                    let len = cx.i64_const(&[], &[n as i64])?;
                    let p = wrap(cx, p, len)?;
                    let limit = cx.i64_const(&[], &[n as i64 + 1])?;
                    let idx = (0..=n)
                        .map(|j| {
                            let jv = cx.i64_const(&[], &[j as i64])?;
                            let before = cx.add1(&format!("before{j}"), Less {}, &[jv, p])?;
                            let at = cx.add1(&format!("at{j}"), Equal {}, &[jv, p])?;
                            let prev = cx.i64_const(&[], &[j as i64 - 1])?;
                            let new = cx.i64_const(&[], &[n as i64])?;
                            let after = cx.add1(&format!("after{j}"), Where {}, &[at, new, prev])?;
                            let idx = cx.add1(&format!("index{j}"), Where {}, &[before, jv, after])?;
                            // A position outside [-n, n] fails the run.
                            checked(cx, idx, p, limit)
                        })
                        .collect::<Result<_, String>>()?;
                    return Ok(vec![reorder(cx, &all, idx)?]);
                }
            }
            vec![Out::Seq(s)]
        }
        "SequenceErase" => {
            let mut s = seq(cx, 0)?;
            let n = s.len();
            if n == 0 {
                return Err("erasing from an empty sequence".into());
            }
            match position(cx, 1)? {
                None => {
                    s.pop();
                }
                Some(Ok(p)) => {
                    s.remove(normalise(p, n, 0)?);
                }
                Some(Err(p)) => {
                    // Element j of the result: j < p ? old[j] : old[j + 1].
                    let len = cx.i64_const(&[], &[n as i64])?;
                    let p = wrap(cx, p, len)?;
                    let idx = (0..n - 1)
                        .map(|j| {
                            let jv = cx.i64_const(&[], &[j as i64])?;
                            let next = cx.i64_const(&[], &[j as i64 + 1])?;
                            let before = cx.add1(&format!("before{j}"), Less {}, &[jv, p])?;
                            let idx = cx.add1(&format!("index{j}"), Where {}, &[before, jv, next])?;
                            // A position outside [-n, n - 1] fails the run.
                            checked(cx, idx, p, len)
                        })
                        .collect::<Result<_, String>>()?;
                    return Ok(vec![reorder(cx, &s, idx)?]);
                }
            }
            vec![Out::Seq(s)]
        }
        "ConcatFromSequence" => {
            let s = seq(cx, 0)?;
            let first = *s.first().ok_or("concatenating an empty sequence")?;
            let r = cx.ty(first).shape.rank();
            let new_axis = cx.int("new_axis", 0) != 0;
            let axis = cx.int("axis", 0);
            let rank = if new_axis { r + 1 } else { r };
            let a = dlc_ir::ops::normalize_axis(axis, rank).ok_or_else(|| format!("axis {axis} out of range"))?;
            let parts = if new_axis {
                s.iter()
                    .enumerate()
                    .map(|(j, e)| {
                        let mut dims: Vec<String> = cx.ty(*e).shape.0.iter().map(|d| d.expr().to_string()).collect();
                        dims.insert(a, "1".into());
                        cx.add1(&format!("elem{j}"), dlc_ir::ops::View { dims: dims.join(";") }, &[*e])
                    })
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                s
            };
            vec![Out::Value(if parts.len() == 1 {
                cx.add1("", dlc_ir::ops::Identity {}, &parts)?
            } else {
                cx.add1("", Concat { axis: a as i64 }, &parts)?
            })]
        }
        "SplitToSequence" => {
            let x = cx.input(0)?;
            let t = cx.ty(x);
            let axis = cx.int("axis", 0);
            let a = dlc_ir::ops::normalize_axis(axis, t.shape.rank())
                .filter(|_| t.shape.rank() > 0)
                .ok_or_else(|| format!("axis {axis} out of range for {t}"))?;
            let keepdims = cx.int("keepdims", 1) != 0;
            let split = cx.opt_input(1)?;
            let slice = |cx: &mut NodeCx, j: usize, start: i64, len: i64| -> Result<Value, String> {
                let op = dlc_ir::ops::Slice {
                    starts: vec![start],
                    ends: vec![start + len],
                    axes: vec![a as i64],
                    steps: vec![],
                };
                cx.add1(&format!("part{j}"), op, &[x])
            };
            let parts = match split {
                None if t.shape.0[a].fixed().is_none() => {
                    // Slices of 1 of a run-time dim: as many elements as the run says,
                    // each of one shape (the axis moved first, kept as 1 or dropped).
                    let r = t.shape.rank();
                    let mut perm: Vec<i64> = vec![a as i64];
                    perm.extend((0..r as i64).filter(|&i| i != a as i64));
                    let rows = cx.add1("rows", dlc_ir::ops::Transpose { perm }, &[x])?;
                    let mut dims: Vec<String> = t.shape.0.iter().map(|d| d.expr().to_string()).collect();
                    let n = dims.remove(a);
                    if keepdims {
                        dims.insert(a, "1".into());
                    }
                    dims.insert(0, n);
                    let data = cx.add1("elements", dlc_ir::ops::View { dims: dims.join(";") }, &[rows])?;
                    return Ok(vec![Out::RunSeq(uniform(cx, data, "elements")?)]);
                }
                None => {
                    // Slices of 1; without keepdims the axis is dropped.
                    let n = t.shape.0[a].fixed().ok_or("internal: a run-time dim")?;
                    let mut out = Vec::with_capacity(n as usize);
                    for j in 0..n as usize {
                        let p = slice(cx, j, j as i64, 1)?;
                        out.push(if keepdims {
                            p
                        } else {
                            let mut dims: Vec<String> = t.shape.0.iter().map(|d| d.expr().to_string()).collect();
                            dims.remove(a);
                            cx.add1(&format!("squeezed{j}"), dlc_ir::ops::View { dims: dims.join(";") }, &[p])?
                        });
                    }
                    out
                }
                Some(sv) => match cx.const_input(1)? {
                    Some(c) => {
                        let sizes = c.to_i64().ok_or("split must be integers")?;
                        let n = t.shape.0[a]
                            .fixed()
                            .ok_or_else(|| format!("splitting run-time dim {} of {t}", t.shape.0[a]))?
                            as i64;
                        let sizes: Vec<i64> = if c.ty().shape.rank() == 0 {
                            // Chunks of one size, the last smaller.
                            let k = *sizes.first().ok_or("empty split")?;
                            if k <= 0 {
                                return Err(format!("split size {k} must be positive"));
                            }
                            (0..n).step_by(k as usize).map(|s| k.min(n - s)).collect()
                        } else {
                            sizes
                        };
                        if sizes.iter().any(|&v| v < 0) || sizes.iter().sum::<i64>() != n {
                            return Err(format!("split sizes {sizes:?} do not add up to dim {a} of {t}"));
                        }
                        let mut at = 0;
                        let mut out = Vec::with_capacity(sizes.len());
                        for (j, &len) in sizes.iter().enumerate() {
                            out.push(slice(cx, j, at, len)?);
                            at += len;
                        }
                        out
                    }
                    None if cx.ty(sv).shape.rank() == 1 => super::bind::split_parts(cx, x, sv, a)?,
                    None if cx.ty(sv).shape.numel() == Some(1) => {
                        return Ok(vec![Out::RunSeq(chunks(cx, x, sv, a)?)]);
                    }
                    None => return Err(format!("split must be a scalar or a vector, got {}", cx.ty(sv))),
                },
            };
            vec![Out::Seq(parts)]
        }
        "SequenceMap" => match map_run(cx)? {
            Some(outs) => outs,
            None => map(cx)?.into_iter().map(Out::Seq).collect(),
        },
        "Loop" => super::control::unrolled_loop(cx)?,
        "If" => super::control::sequence_if(cx)?,
        other => return Err(format!("internal: {other} is not a sequence op")),
    })
}

/// SplitToSequence of `x` along axis `a` into chunks of `split` (one size given at run
/// time, the last chunk smaller): their number is only known when the model runs. Row `i`
/// of the data is `x[i*k : i*k + d]` along the axis (indices clamped to the dim `d`, the
/// box), its dims those of `x` with `min(k, d - i*k)` at `a`. A size below 1 fails the run.
fn chunks(cx: &mut NodeCx, x: Value, split: Value, a: usize) -> Result<RunSeq, String> {
    use super::control::body;
    use dlc_ir::DType;
    let t = cx.ty(x);
    let r = t.shape.rank();
    let k = match cx.ty(split).dtype {
        DType::I64 => split,
        d if d.is_signed_int() => cx.add1("split_i64", dlc_ir::ops::Cast::new(DType::I64), &[split])?,
        d => return Err(format!("split must be integers, got {d}")),
    };
    let k = cx.add1("split_scalar", Reshape { shape: vec![], allowzero: false }, &[k])?;
    let (zero, one, bad) = (cx.i64_const(&[], &[0])?, cx.i64_const(&[], &[1])?, cx.i64_const(&[], &[-1])?);
    let positive = cx.add1("split_positive", GreaterOrEqual {}, &[k, one])?;
    let k = cx.add1("split_checked", Where {}, &[positive, k, bad])?;
    let (k, _) = super::bind::computed_dims(cx, k, k, "split")?;
    let k = cx.add1("split_size", Reshape { shape: vec![], allowzero: false }, &[k])?;
    let mut onehot = vec![0; r];
    onehot[a] = 1;
    let other: Vec<i64> = onehot.iter().map(|h| 1 - h).collect();
    // x's dims and the split one, as tensors (computed at run time where they are dims
    // only the run knows).
    let dims: Vec<dlc_ir::Expr> = t.shape.0.iter().map(dlc_ir::Dim::expr).collect();
    let d = super::shapes::ShapeVal { elems: vec![dims[a].clone()], scalar: true };
    let d = super::shapes::shape_tensor(cx, &d, "split_dim")?;
    let shape = super::shapes::shape_tensor(cx, &super::shapes::ShapeVal { elems: dims, scalar: false }, "shape")?;
    let shape_row = cx.add1("shape_row", Reshape { shape: vec![1, r as i64], allowzero: false }, &[shape])?;
    let named = [
        ("x", x),
        ("d", d),
        ("shape_row", shape_row),
        ("k", k),
        ("zero", zero),
        ("one", one),
        ("axis0", cx.i64_const(&[1], &[0])?),
        ("axis1", cx.i64_const(&[1], &[1])?),
        ("at_axis", cx.i64_const(&[1, r as u64], &onehot)?),
        ("elsewhere", cx.i64_const(&[1, r as u64], &other)?),
    ];
    for (n, v) in named {
        cx.imp.values.insert(format!("{}::{n}", cx.name), v);
    }
    let mut perm: Vec<i64> = vec![a as i64];
    perm.extend((0..=r as i64).filter(|&i| i != a as i64));
    let mut transpose = body("Transpose", &["gathered"], &["rows"]);
    transpose.ints.push(("perm", perm));
    let mut gather = body("Gather", &["x", "index"], &["gathered"]);
    gather.int.push(("axis", a as i64));
    let nodes = vec![
        body("Range", &["zero", "d", "k"], &["starts"]),
        body("Range", &["zero", "d", "one"], &["within"]),
        body("Unsqueeze", &["starts", "axis1"], &["starts_col"]),
        body("Unsqueeze", &["within", "axis0"], &["within_row"]),
        body("Add", &["starts_col", "within_row"], &["unclamped"]),
        body("Sub", &["d", "one"], &["last"]),
        body("Min", &["unclamped", "last"], &["index"]),
        gather,
        transpose,
        body("Sub", &["d", "starts"], &["rest"]),
        body("Min", &["rest", "k"], &["lens"]),
        body("Unsqueeze", &["lens", "axis1"], &["lens_col"]),
        body("Mul", &["lens_col", "at_axis"], &["at"]),
        body("Mul", &["shape_row", "elsewhere"], &["kept"]),
        body("Add", &["kept", "at"], &["dims"]),
    ];
    let v = super::control::expand(cx, nodes, &["rows", "dims"])?;
    let mut ragged = vec![false; r];
    ragged[a] = true;
    Ok(RunSeq { data: v[0], shapes: v[1], ragged, lacking: 0 })
}

/// SequenceMap: the body imported once per element (as dlc unrolls Scan), on element `t`
/// of each sequence operand and on each tensor operand as it is; each body output
/// collected into a sequence.
fn map(cx: &mut NodeCx) -> Result<Vec<Vec<Value>>, String> {
    let body = super::control::branch(cx, "body")?;
    let n = seq(cx, 0)?.len();
    let mut operands: Vec<Result<Vec<Value>, Value>> = Vec::new();
    for i in 0..cx.node.input.len() {
        let name = &cx.node.input[i];
        if cx.imp.sequences.contains_key(name) {
            let s = seq(cx, i)?;
            if s.len() != n {
                return Err(format!("input {i} ('{name}') has {} elements, input 0 has {n}", s.len()));
            }
            operands.push(Ok(s));
        } else {
            operands.push(Err(cx.input(i)?));
        }
    }
    if body.input.len() != operands.len() {
        return Err(format!("the body takes {} inputs, the node gives {}", body.input.len(), operands.len()));
    }
    if n > 4096 {
        return Err(format!("a sequence of {n} elements is too long to unroll"));
    }
    let mut outs: Vec<Vec<Value>> = vec![Vec::with_capacity(n); body.output.len()];
    for t in 0..n {
        for (vi, o) in body.input.iter().zip(&operands) {
            let v = match o {
                Ok(s) => s[t],
                Err(v) => *v,
            };
            cx.imp.unbind(&vi.name);
            cx.imp.values.insert(vi.name.clone(), v);
        }
        let res = super::control::import_branch(cx, body, &format!("element{t}"))?;
        for (j, v) in res.into_iter().enumerate() {
            outs[j].push(v);
        }
    }
    Ok(outs)
}

/// The sequence whose elements are the rows of `data` (`T[n, dims...]`), all of one shape.
fn uniform(cx: &mut NodeCx, data: Value, name: &str) -> Result<RunSeq, String> {
    let t = cx.ty(data);
    let dims: Vec<dlc_ir::Expr> = t.shape.0.iter().map(dlc_ir::Dim::expr).collect();
    let r = dims.len() - 1;
    let row = match r {
        0 => cx.i64_const(&[1, 0], &[])?,
        _ => {
            let sv = super::shapes::ShapeVal { elems: dims[1..].to_vec(), scalar: false };
            let d = super::shapes::shape_tensor(cx, &sv, &format!("{name}_dims"))?;
            cx.add1(&format!("{name}_dims_row"), Reshape { shape: vec![1, r as i64], allowzero: false }, &[d])?
        }
    };
    let shapes =
        super::shapes::expand_to(cx, row, &[dims[0].clone(), dlc_ir::Expr::c(r as i64)], &format!("{name}_shapes"))?;
    Ok(RunSeq { data, shapes, ragged: vec![false; r], lacking: 0 })
}

/// SequenceMap over sequences whose length only the run knows (a SplitToSequence of a
/// run-time dim, a Loop's appends): a Scan over their stacked elements, the body's tensor
/// operands read from outside it. Each output is the sequence of the body's results,
/// which must have one shape for every element (a Scan's outputs are stacked). `None`
/// when no operand is such a sequence.
fn map_run(cx: &mut NodeCx) -> Result<Option<Vec<Out>>, String> {
    use crate::export::{attr, A};
    use onnx_protobuf::{AttributeProto, NodeProto};
    let names = cx.node.input.clone();
    if !names.iter().any(|n| cx.imp.run_sequences.contains_key(n)) {
        return Ok(None);
    }
    let body = super::control::branch(cx, "body")?.clone();
    if body.input.len() != names.len() {
        return Err(format!("the body takes {} inputs, the node gives {}", body.input.len(), names.len()));
    }
    let base = format!("{}::", cx.name);
    let mut g = body.clone();
    g.input.clear();
    let (mut pre, mut scans) = (Vec::new(), Vec::new());
    for (i, (name, input)) in names.iter().zip(&body.input).enumerate() {
        if let Some(s) = cx.imp.run_sequences.get(name).cloned() {
            s.one_rank("SequenceMap")?;
            if !s.uniform() {
                return Err(format!(
                    "input {i} ('{name}') holds elements of different shapes (known only when the model runs); \
                     SequenceMap maps such a sequence only when its length is known at import"
                ));
            }
            let stacked = format!("{base}elements{i}");
            cx.imp.values.insert(stacked.clone(), s.data);
            scans.push(stacked);
            g.input.push(input.clone());
        } else if cx.imp.sequences.contains_key(name) {
            return Err(format!(
                "input {i} ('{name}') is a sequence of known length and another input one whose length only the run \
                 knows; SequenceMap takes sequences of one kind"
            ));
        } else {
            // A tensor operand: the body reads it from outside.
            let mut n = NodeProto::new();
            n.op_type = "Identity".into();
            n.name = format!("{base}operand{i}");
            n.input = vec![name.clone()];
            n.output = vec![input.name.clone()];
            pre.push(n);
        }
    }
    pre.append(&mut g.node);
    g.node = pre;
    let outs: Vec<String> = (0..body.output.len()).map(|k| format!("{base}results{k}")).collect();
    let mut scan = NodeProto::new();
    scan.op_type = "Scan".into();
    scan.name = format!("{base}scan");
    scan.input = scans.clone();
    scan.output = outs.clone();
    let mut b = AttributeProto::new();
    b.name = "body".into();
    b.g = protobuf::MessageField::some(g);
    b.type_ = onnx_protobuf::attribute_proto::AttributeType::GRAPH.into();
    scan.attribute = vec![b, attr("num_scan_inputs", A::I(scans.len() as i64))];
    super::control::import_at(cx, &[scan], Some(9))?;
    let mut results = Vec::with_capacity(outs.len());
    for (k, o) in outs.iter().enumerate() {
        let v = cx.imp.lookup(o)?;
        results.push(Out::RunSeq(uniform(cx, v, &format!("results{k}"))?));
    }
    Ok(Some(results))
}

/// Whether node `cx` works on sequences (a sequence op, or Identity of a sequence).
pub(crate) fn applies(cx: &NodeCx) -> bool {
    if !cx.node.domain.is_empty() {
        return false;
    }
    OPS.contains(&cx.node.op_type.as_str())
        || (cx.node.op_type == "Identity"
            && cx
                .node
                .input
                .first()
                .is_some_and(|n| cx.imp.sequences.contains_key(n) || cx.imp.run_sequences.contains_key(n)))
        || super::control::loop_carries_sequence(cx)
        || super::control::if_gives_sequence(cx)
}
