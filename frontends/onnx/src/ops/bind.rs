//! Operands that decide shapes but are only known at run time (a Reshape target, the
//! axes of a reduction or of Squeeze/Unsqueeze fed by a graph input or computed from
//! data): a `bind` node computes the dims from their values while the model runs
//! (`dlc_ir::bind`), and the rest of the graph computes with the symbols it binds.
use super::NodeCx;
use dlc_ir::bind::BindRule;
use dlc_ir::ops::{Bind, Transpose};
use dlc_ir::{DType, Dim, Op, Value};

/// Operand `i` as integers when it is a constant (or an empty vector), else the run-time
/// value; `None` when absent.
pub(crate) fn ints_or_value(cx: &mut NodeCx, i: usize, what: &str) -> Result<Option<Result<Vec<i64>, Value>>, String> {
    let Some(v) = cx.opt_input(i)? else { return Ok(None) };
    if let Some(t) = cx.const_input(i)? {
        return t.to_i64().map(|x| Some(Ok(x))).ok_or_else(|| format!("{what} must be integers"));
    }
    let ty = cx.ty(v);
    if ty.shape.0 == [Dim::Fixed(0)] {
        return Ok(Some(Ok(Vec::new())));
    }
    Ok(Some(Err(v)))
}

/// A Bind of `x`'s elements to the dims `rule` computes from the run-time vector `t`;
/// its symbols are named after the node.
pub(crate) fn bind(cx: &mut NodeCx, suffix: &str, x: Value, t: Value, rule: BindRule) -> Result<Value, String> {
    let tt = cx.ty(t);
    let m = match (tt.dtype, tt.shape.0.as_slice()) {
        (DType::I64, [Dim::Fixed(m)]) => *m as usize,
        _ => {
            return Err(format!(
                "a shape operand computed at run time must be a 1-D i64 tensor of known length, got {tt}"
            ))
        }
    };
    let n = cx.ty(x).shape.rank();
    let k = rule.count(n, m).ok_or_else(|| format!("{m} axes for a rank-{n} tensor"))?;
    let base =
        crate::import::symbol_name(&if suffix.is_empty() { cx.name.clone() } else { format!("{}_{suffix}", cx.name) });
    let syms: Vec<String> = (0..k).map(|j| format!("{base}_{j}")).collect();
    let op = Bind { rule: rule.name().to_string(), syms: syms.join(" ") };
    cx.add1(suffix, op, &[x, t])
}

/// A reduction over axes `t` given at run time: `x` viewed as `[e0, k0, e1, k1, ...]`
/// (the reduced axes' extents in the `k`s), transposed to `[e..., k...]` and reduced
/// over the `k`s (`make(axes, keepdims)` builds the reduction), which gives the
/// `keepdims` result; without `keepdims` its kept dims are bound again.
pub(crate) fn reduce(
    cx: &mut NodeCx,
    x: Value,
    t: Value,
    keepdims: bool,
    make: impl Fn(Vec<i64>, bool) -> Op,
) -> Result<Vec<Value>, String> {
    let n = cx.ty(x).shape.rank() as i64;
    let view = bind(cx, "axes", x, t, BindRule::ReduceAxes)?;
    let perm: Vec<i64> = (0..n).map(|i| 2 * i).chain((0..n).map(|i| 2 * i + 1)).collect();
    let tr = cx.add1("reduced_last", Transpose { perm }, &[view])?;
    let axes: Vec<i64> = (n..2 * n).collect();
    if keepdims {
        return cx.add("", make(axes, false), &[tr]);
    }
    let r = cx.add1("keepdims", make(axes, false), &[tr])?;
    Ok(vec![bind(cx, "", r, t, BindRule::ReduceSqueeze)?])
}
