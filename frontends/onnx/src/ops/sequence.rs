//! Sequences of tensors whose length is known at import: a sequence value is the list of
//! its elements' IR values (kept aside by the importer, never an IR value itself, like a
//! shape value). SequenceConstruct, SequenceEmpty, SequenceInsert, SequenceErase,
//! SequenceAt, SequenceLength, SplitToSequence, ConcatFromSequence and Identity work on
//! the list. A position given at run time selects among elements of one shape: they are
//! stacked and the element (or each element of the new order) is a Gather by an index
//! computed from the position (checked at run time like any Gather index); a position
//! given at run time over elements of different shapes is refused (the result's shape
//! would depend on it). SequenceMap imports its body once per element; If and Loop over
//! sequences are `control::sequence_if` and `control::unrolled_loop`. A model input or
//! output that is a sequence is one input or output per element (`import.rs`,
//! docs/sequences.md).
use super::shapes::Out;
use super::NodeCx;
use dlc_ir::ops::{Add, And, Concat, Equal, Gather, GreaterOrEqual, Less, Reshape, Where};
use dlc_ir::Value;

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
    cx.imp.sequences.get(name).cloned().ok_or_else(|| format!("input {i} ('{name}') is not a sequence dlc knows"))
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

/// The run-time position `p` normalised against `n` (`p + n` when negative).
fn wrap(cx: &mut NodeCx, p: Value, n: usize) -> Result<Value, String> {
    let zero = cx.i64_const(&[], &[0])?;
    let nv = cx.i64_const(&[], &[n as i64])?;
    let neg = cx.add1("position_negative", Less {}, &[p, zero])?;
    let up = cx.add1("position_up", Add {}, &[p, nv])?;
    cx.add1("position_wrapped", Where {}, &[neg, up, p])
}

/// `idx`, or `bad` (an index out of range, which fails the run at the Gather's index
/// check) when the wrapped position `p` is not in `0..limit`.
fn checked(cx: &mut NodeCx, idx: Value, p: Value, limit: usize, bad: usize) -> Result<Value, String> {
    let zero = cx.i64_const(&[], &[0])?;
    let lim = cx.i64_const(&[], &[limit as i64])?;
    let ge = cx.add1("position_ge0", GreaterOrEqual {}, &[p, zero])?;
    let lt = cx.add1("position_in", Less {}, &[p, lim])?;
    let ok = cx.add1("position_valid", And {}, &[ge, lt])?;
    let bad = cx.i64_const(&[], &[bad as i64])?;
    cx.add1("index_checked", Where {}, &[ok, idx, bad])
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
    Ok(match op.as_str() {
        "SequenceEmpty" => vec![Out::Seq(Vec::new())],
        "SequenceConstruct" => {
            let elems = (0..cx.node.input.len()).map(|i| cx.input(i)).collect::<Result<Vec<_>, _>>()?;
            if let Some(e) = elems.iter().find(|e| cx.ty(**e).dtype != cx.ty(elems[0]).dtype) {
                return Err(format!("elements of different types ({} and {})", cx.ty(elems[0]), cx.ty(*e)));
            }
            vec![Out::Seq(elems)]
        }
        "Identity" => vec![Out::Seq(seq(cx, 0)?)],
        "SequenceLength" => {
            let n = seq(cx, 0)?.len() as i64;
            vec![Out::Value(cx.i64_const(&[], &[n])?)]
        }
        "SequenceAt" => {
            let s = seq(cx, 0)?;
            match position(cx, 1)?.ok_or("position (input 1) is required")? {
                Ok(p) => vec![Out::Value(s[normalise(p, s.len(), 0)?])],
                Err(p) => {
                    let stacked = stack(cx, &s)?;
                    let p = wrap(cx, p, s.len())?;
                    vec![Out::Value(pick(cx, stacked, p, 0)?)]
                }
            }
        }
        "SequenceInsert" => {
            let (mut s, x) = (seq(cx, 0)?, cx.input(1)?);
            let n = s.len();
            match position(cx, 2)? {
                None => s.push(x),
                Some(Ok(p)) => s.insert(normalise(p, n, 1)?, x),
                Some(Err(p)) => {
                    // Element j of the result: j < p ? old[j] : (j == p ? x : old[j - 1]).
                    let mut all = s.clone();
                    all.push(x);
                    let stacked = stack(cx, &all)?;
                    let p = wrap(cx, p, n)?;
                    s = (0..=n)
                        .map(|j| {
                            let jv = cx.i64_const(&[], &[j as i64])?;
                            let before = cx.add1(&format!("before{j}"), Less {}, &[jv, p])?;
                            let at = cx.add1(&format!("at{j}"), Equal {}, &[jv, p])?;
                            let prev = cx.i64_const(&[], &[j as i64 - 1])?;
                            let new = cx.i64_const(&[], &[n as i64])?;
                            let after = cx.add1(&format!("after{j}"), Where {}, &[at, new, prev])?;
                            let idx = cx.add1(&format!("index{j}"), Where {}, &[before, jv, after])?;
                            // A position outside [-n, n] fails the run.
                            let idx = checked(cx, idx, p, n + 1, n + 1)?;
                            pick(cx, stacked, idx, j)
                        })
                        .collect::<Result<_, String>>()?;
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
                    let stacked = stack(cx, &s)?;
                    let p = wrap(cx, p, n)?;
                    s = (0..n - 1)
                        .map(|j| {
                            let jv = cx.i64_const(&[], &[j as i64])?;
                            let next = cx.i64_const(&[], &[j as i64 + 1])?;
                            let before = cx.add1(&format!("before{j}"), Less {}, &[jv, p])?;
                            let idx = cx.add1(&format!("index{j}"), Where {}, &[before, jv, next])?;
                            // A position outside [-n, n - 1] fails the run.
                            let idx = checked(cx, idx, p, n, n)?;
                            pick(cx, stacked, idx, j)
                        })
                        .collect::<Result<_, String>>()?;
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
                None => {
                    // Slices of 1; without keepdims the axis is dropped.
                    let n = t.shape.0[a]
                        .fixed()
                        .ok_or_else(|| format!("splitting run-time dim {} of {t}", t.shape.0[a]))?;
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
                    None => return Err("a scalar split known only at run time is not supported yet".into()),
                },
            };
            vec![Out::Seq(parts)]
        }
        "SequenceMap" => map(cx)?.into_iter().map(Out::Seq).collect(),
        "Loop" => super::control::unrolled_loop(cx)?,
        "If" => super::control::sequence_if(cx)?,
        other => return Err(format!("internal: {other} is not a sequence op")),
    })
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

/// Whether node `cx` works on sequences (a sequence op, or Identity of a sequence).
pub(crate) fn applies(cx: &NodeCx) -> bool {
    if !cx.node.domain.is_empty() {
        return false;
    }
    OPS.contains(&cx.node.op_type.as_str())
        || (cx.node.op_type == "Identity" && cx.node.input.first().is_some_and(|n| cx.imp.sequences.contains_key(n)))
        || super::control::loop_carries_sequence(cx)
        || super::control::if_gives_sequence(cx)
}
