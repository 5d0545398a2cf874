//! Reduce* and ArgMax/ArgMin.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{Op, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    // Opset in which each op's `axes` moved from an attribute to an input.
    reg.insert("ReduceSum", |cx| reduce(cx, 13, |axes, keepdims| ReduceSum { axes, keepdims }.into()));
    reg.insert("ReduceMean", |cx| reduce(cx, 18, |axes, keepdims| ReduceMean { axes, keepdims }.into()));
    reg.insert("ReduceMax", |cx| {
        bool_as_u8(cx, |cx, x| reduce_of(cx, x, 18, |axes, keepdims| ReduceMax { axes, keepdims }.into()))
    });
    reg.insert("ReduceMin", |cx| {
        bool_as_u8(cx, |cx, x| reduce_of(cx, x, 18, |axes, keepdims| ReduceMin { axes, keepdims }.into()))
    });
    reg.insert("ReduceProd", |cx| reduce(cx, 18, |axes, keepdims| ReduceProd { axes, keepdims }.into()));
    reg.insert("ReduceL1", |cx| reduce(cx, 18, |axes, keepdims| ReduceL1 { axes, keepdims }.into()));
    reg.insert("ReduceL2", |cx| reduce(cx, 18, |axes, keepdims| ReduceL2 { axes, keepdims }.into()));
    reg.insert("ReduceLogSum", |cx| reduce(cx, 18, |axes, keepdims| ReduceLogSum { axes, keepdims }.into()));
    reg.insert("ReduceLogSumExp", |cx| reduce(cx, 18, |axes, keepdims| ReduceLogSumExp { axes, keepdims }.into()));
    reg.insert("ReduceSumSquare", |cx| reduce(cx, 18, |axes, keepdims| ReduceSumSquare { axes, keepdims }.into()));
    reg.insert("NegativeLogLikelihoodLoss", |cx| {
        let (x, t) = (cx.input(0)?, cx.input(1)?);
        nll(cx, x, t)
    });
    reg.insert("SoftmaxCrossEntropyLoss", |cx| {
        let (scores, labels) = (cx.input(0)?, cx.input(1)?);
        let shape = cx.ty(scores).shape;
        let dims = shape.as_fixed().ok_or("needs known dims")?;
        if dims.len() < 2 {
            return Err(format!("scores must be [N, C, ...], got {shape}"));
        }
        let log_prob = cx.add1("log_softmax", Softmax { axis: 1, mode: SoftmaxMode::LogSoftmax }, &[scores])?;
        let mut outs = nll(cx, log_prob, labels)?;
        if cx.node.output.get(1).is_some_and(|o| !o.is_empty()) {
            outs.push(log_prob);
        }
        Ok(outs)
    });
    reg.insert("CumSum", |cx| cumulative(cx, false));
    reg.insert("CumProd", |cx| cumulative(cx, true));
    reg.insert("ArgMax", |cx| {
        let (axis, keepdims, select_last_index) = arg_attrs(cx);
        let x = cx.input(0)?;
        cx.add("", ArgMax { axis, keepdims, select_last_index }, &[x])
    });
    reg.insert("ArgMin", |cx| {
        let (axis, keepdims, select_last_index) = arg_attrs(cx);
        let x = cx.input(0)?;
        cx.add("", ArgMin { axis, keepdims, select_last_index }, &[x])
    });
}

/// ReduceMax/ReduceMin of bools (opset 20): the same reduction of their 0/1 bytes as u8,
/// cast back (max is "any", min is "all").
fn bool_as_u8(
    cx: &mut NodeCx,
    f: impl Fn(&mut NodeCx, Value) -> Result<Vec<Value>, String>,
) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    if cx.ty(x).dtype != dlc_ir::DType::Bool {
        return f(cx, x);
    }
    let u = cx.add1("as_u8", Cast { to: dlc_ir::DType::U8, saturate: true }, &[x])?;
    let mut res = Vec::new();
    for v in f(cx, u)? {
        res.push(cx.add1("as_bool", Cast { to: dlc_ir::DType::Bool, saturate: true }, &[v])?);
    }
    Ok(res)
}

fn arg_attrs(cx: &NodeCx) -> (i64, bool, bool) {
    (cx.int("axis", 0), cx.int("keepdims", 1) != 0, cx.int("select_last_index", 0) != 0)
}

fn reduce(cx: &mut NodeCx, axes_input_since: i64, make: impl Fn(Vec<i64>, bool) -> Op) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    reduce_of(cx, x, axes_input_since, make)
}

/// A Reduce* node of operand `x` (operand 0, or a cast of it).
fn reduce_of(
    cx: &mut NodeCx,
    x: Value,
    axes_input_since: i64,
    make: impl Fn(Vec<i64>, bool) -> Op,
) -> Result<Vec<Value>, String> {
    let keepdims = cx.int("keepdims", 1) != 0;
    let axes = if cx.opset >= axes_input_since {
        match super::bind::ints_or_value(cx, 1, "axes")? {
            Some(Err(t)) => return super::bind::reduce(cx, x, t, keepdims, make),
            Some(Ok(a)) => a,
            None => Vec::new(),
        }
    } else {
        cx.ints_input_or_attr(1, "axes", axes_input_since)?.unwrap_or_default()
    };
    // With no axes, noop_with_empty_axes=1 makes the op an identity.
    if axes.is_empty() && cx.int("noop_with_empty_axes", 0) != 0 {
        return cx.add("", Identity {}, &[x]);
    }
    cx.add("", make(axes, keepdims), &[x])
}

fn nll(cx: &mut NodeCx, x: Value, t: Value) -> Result<Vec<Value>, String> {
    let reduction = match cx.string("reduction", "mean")?.as_str() {
        "none" => LossReduction::None,
        "sum" => LossReduction::Sum,
        "mean" => LossReduction::Mean,
        r => return Err(format!("unknown reduction '{r}'")),
    };
    let op = NllLoss { reduction, ignore_index: cx.int("ignore_index", 0), has_ignore_index: cx.has("ignore_index") };
    let mut operands = vec![x, t];
    if let Some(w) = cx.opt_input(2)? {
        operands.push(w);
    }
    let out = cx.add1("", op, &operands)?;
    Ok(vec![out])
}

fn cumulative(cx: &mut NodeCx, product: bool) -> Result<Vec<Value>, String> {
    let (x, axis) = (cx.input(0)?, cx.input(1)?);
    let op = CumSum { exclusive: cx.int("exclusive", 0) != 0, reverse: cx.int("reverse", 0) != 0, product };
    cx.add("", op, &[x, axis])
}
