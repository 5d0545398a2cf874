//! Elementwise ops: arithmetic, comparisons, logic, bitwise, math functions,
//! activations, Where, Cast.
use super::{BuildFn, NodeCx};
use crate::tensor::{dtype_from_onnx, onnx_type_name};
use dlc_ir::ops::*;
use dlc_ir::{DType, Op, Value};
use std::collections::HashMap;

/// ONNX op types that are exactly one IR op, with the op's mnemonic; the op's
/// attributes, if any, are floats with ONNX's names and defaults (declared once, on the
/// IR op). The importer builds them from this table and the exporter (`export.rs`) writes
/// them back from it, so the two directions cannot disagree.
pub(crate) const PLAIN: &[(&str, &str)] = &[
    ("Add", "add"),
    ("Sub", "sub"),
    ("Mul", "mul"),
    ("Div", "div"),
    ("Pow", "pow"),
    ("PRelu", "prelu"),
    ("Equal", "equal"),
    ("Greater", "greater"),
    ("GreaterOrEqual", "greater_equal"),
    ("Less", "less"),
    ("LessOrEqual", "less_equal"),
    ("And", "and"),
    ("Or", "or"),
    ("Xor", "xor"),
    ("BitwiseAnd", "bitwise_and"),
    ("BitwiseOr", "bitwise_or"),
    ("BitwiseXor", "bitwise_xor"),
    ("Identity", "identity"),
    ("Not", "not"),
    ("BitwiseNot", "bitwise_not"),
    ("Abs", "abs"),
    ("Neg", "neg"),
    ("Sign", "sign"),
    ("Relu", "relu"),
    ("Sigmoid", "sigmoid"),
    ("Tanh", "tanh"),
    ("Exp", "exp"),
    ("Log", "log"),
    ("Sqrt", "sqrt"),
    ("Reciprocal", "reciprocal"),
    ("Sin", "sin"),
    ("Cos", "cos"),
    ("Tan", "tan"),
    ("Asin", "asin"),
    ("Acos", "acos"),
    ("Atan", "atan"),
    ("Sinh", "sinh"),
    ("Cosh", "cosh"),
    ("Asinh", "asinh"),
    ("Acosh", "acosh"),
    ("Atanh", "atanh"),
    ("Erf", "erf"),
    ("Floor", "floor"),
    ("Ceil", "ceil"),
    ("Round", "round"),
    ("Softplus", "softplus"),
    ("Softsign", "softsign"),
    ("Mish", "mish"),
    ("HardSwish", "hardswish"),
    ("IsNaN", "isnan"),
    ("HardSigmoid", "hardsigmoid"),
    ("LeakyRelu", "leaky_relu"),
    ("Elu", "elu"),
    ("Selu", "selu"),
    ("Celu", "celu"),
    ("ThresholdedRelu", "thresholded_relu"),
    ("Shrink", "shrink"),
];

/// A [`PLAIN`] op: the node's attributes the op has, the op's defaults for the rest;
/// binary ones with ONNX's (legacy) broadcasting, unary ones as is.
fn plain(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let mn = PLAIN.iter().find(|(t, _)| *t == cx.node.op_type).map(|(_, mn)| *mn).ok_or("not a plain op")?;
    let defaults = Op::from_call(mn, Vec::new())?.ok_or("not in the op table")?;
    let attrs = defaults
        .attrs()
        .into_iter()
        .filter(|(n, _)| cx.has(n))
        .map(|(n, _)| (n.to_string(), Attr::Float(cx.float(n, 0.0))))
        .collect();
    let op = Op::from_call(mn, attrs)?.ok_or("not in the op table")?;
    if op.info().max_operands == 2 {
        binary(cx, op)
    } else {
        unary(cx, op)
    }
}

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    for (op_type, _) in PLAIN {
        reg.insert(op_type, plain);
    }
    reg.insert("Mod", |cx| {
        let fmod = cx.int("fmod", 0) != 0;
        binary(cx, Mod { fmod }.into())
    });
    reg.insert("BitShift", |cx| {
        let left = match cx.string("direction", "")?.as_str() {
            "LEFT" => true,
            "RIGHT" => false,
            d => return Err(format!("direction must be LEFT or RIGHT, got '{d}'")),
        };
        binary(cx, BitShift { left }.into())
    });
    reg.insert("Max", |cx| variadic(cx, |_| Max {}.into()));
    reg.insert("Min", |cx| variadic(cx, |_| Min {}.into()));
    reg.insert("Sum", |cx| variadic(cx, |_| Add {}.into()));
    reg.insert("Mean", mean);
    reg.insert("Where", |cx| {
        let ops = [cx.input(0)?, cx.input(1)?, cx.input(2)?];
        cx.add("", Where {}, &ops)
    });
    reg.insert("Cast", cast);
    reg.insert("CastLike", |cx| {
        let (x, like) = (cx.input(0)?, cx.input(1)?);
        let to = cx.ty(like).dtype;
        cast_to(cx, x, to)
    });
    reg.insert("Clip", clip);
    reg.insert("Gelu", |cx| {
        let tanh_approximation = match cx.string("approximate", "none")?.as_str() {
            "none" => false,
            "tanh" => true,
            a => return Err(format!("approximate must be 'none' or 'tanh', got '{a}'")),
        };
        unary(cx, Gelu { tanh_approximation }.into())
    });
    reg.insert("Swish", |cx| {
        let op = Swish { alpha: cx.float("alpha", 1.0) };
        unary(cx, op.into())
    });
    reg.insert("IsInf", |cx| {
        let op = IsInf {
            detect_negative: cx.int("detect_negative", 1) != 0,
            detect_positive: cx.int("detect_positive", 1) != 0,
        };
        unary(cx, op.into())
    });
}

fn binary(cx: &mut NodeCx, op: Op) -> Result<Vec<Value>, String> {
    let (a, mut b) = (cx.input(0)?, cx.input(1)?);
    let (ta, tb) = (cx.ty(a), cx.ty(b));
    // Opset < 7: with `broadcast=1`, B's dims align with A's starting at `axis` (default:
    // right-aligned); trailing 1s make that numpy broadcasting.
    if cx.opset < 7 && cx.int("broadcast", 0) != 0 && cx.has("axis") {
        let ra = ta.shape.rank() as i64;
        let axis = cx.int("axis", 0);
        let axis = if axis < 0 { axis + ra } else { axis };
        let trailing = ra - axis - tb.shape.rank() as i64;
        if axis < 0 || trailing < 0 {
            return Err(format!("legacy broadcast axis {axis} does not fit {} and {}", ta.shape, tb.shape));
        }
        let dims = tb.shape.as_fixed().ok_or("legacy broadcast needs B's dims known")?;
        let shape: Vec<i64> = dims.iter().map(|&d| d as i64).chain((0..trailing).map(|_| 1)).collect();
        b = cx.add1("broadcast", Reshape { shape, allowzero: true }, &[b])?;
    }
    // PRelu (and opset < 7 models) with a per-channel slope [C] against [N, C, ...].
    if matches!(op, Op::PRelu(_))
        && tb.shape.rank() == 1
        && ta.shape.rank() > 2
        && ta.shape.0.get(1) == tb.shape.0.first()
        && ta.shape.0.last() != tb.shape.0.first()
    {
        let c = tb.shape.0[0].fixed().ok_or("slope dims must be known")? as i64;
        let shape: Vec<i64> = std::iter::once(c).chain((2..ta.shape.rank()).map(|_| 1)).collect();
        b = cx.add1("slope", Reshape { shape, allowzero: true }, &[b])?;
    }
    cx.add("", op, &[a, b])
}

fn unary(cx: &mut NodeCx, op: Op) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    cx.add("", op, &[x])
}

/// Folds `n` operands left to right with a binary op; one operand is returned as is.
fn fold(cx: &mut NodeCx, make: impl Fn(usize) -> Op) -> Result<Value, String> {
    let n = cx.num_inputs();
    if n == 0 {
        return Err("needs at least one input".into());
    }
    let mut acc = cx.input(0)?;
    for i in 1..n {
        let x = cx.input(i)?;
        let suffix = if i + 1 == n { String::new() } else { format!("fold{i}") };
        acc = cx.add1(&suffix, make(i), &[acc, x])?;
    }
    if n == 1 {
        acc = cx.add1("", Identity {}, &[acc])?;
    }
    Ok(acc)
}

fn variadic(cx: &mut NodeCx, make: impl Fn(usize) -> Op) -> Result<Vec<Value>, String> {
    Ok(vec![fold(cx, make)?])
}

fn mean(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let n = cx.num_inputs();
    let sum = fold(cx, |_| Add {}.into())?;
    let ty = cx.ty(sum);
    let count = scalar_like(ty.dtype, n as f64).ok_or_else(|| format!("Mean of {} is not supported", ty.dtype))?;
    let c = cx.add_const(count);
    cx.add("mean", Div {}, &[sum, c])
}

/// A scalar constant of dtype `d` with value `v`.
fn scalar_like(d: dlc_ir::DType, v: f64) -> Option<dlc_ir::TensorData> {
    use dlc_ir::DType::*;
    let bytes: Vec<u8> = match d {
        F32 => (v as f32).to_le_bytes().to_vec(),
        F64 => v.to_le_bytes().to_vec(),
        I32 => (v as i32).to_le_bytes().to_vec(),
        I64 => (v as i64).to_le_bytes().to_vec(),
        _ => return None,
    };
    dlc_ir::TensorData::new(dlc_ir::TensorType::fixed(d, &[]), bytes.into())
}

fn cast(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let code = cx.int("to", 0) as i32;
    let to = dtype_from_onnx(code).ok_or_else(|| format!("cast to {} is not supported", onnx_type_name(code)))?;
    let x = cx.input(0)?;
    cast_to(cx, x, to)
}

/// Cast and CastLike: `saturate` (float8 targets) and `round_mode` (float8 e8m0).
fn cast_to(cx: &mut NodeCx, x: Value, to: DType) -> Result<Vec<Value>, String> {
    let round_mode = cx.string("round_mode", "up")?;
    if round_mode != "up" && to == DType::F8E8M0 {
        return Err(format!("round_mode '{round_mode}' is not supported yet (only 'up')"));
    }
    let saturate = cx.int("saturate", 1) != 0;
    cx.add("", Cast { to, saturate }, &[x])
}

fn clip(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    if cx.opset < 11 {
        let (min, max) = (cx.float("min", f32::NEG_INFINITY), cx.float("max", f32::INFINITY));
        return cx.add("", Clip { min, max }, &[x]);
    }
    let dtype = cx.ty(x).dtype;
    let lo = cx.const_input(1)?;
    let hi = cx.const_input(2)?;
    let scalar = |t: &Option<dlc_ir::TensorData>| t.as_ref().and_then(|t| t.to_f32()).filter(|v| v.len() == 1);
    let const_bounds =
        (cx.opt_input(1)?.is_none() || scalar(&lo).is_some()) && (cx.opt_input(2)?.is_none() || scalar(&hi).is_some());
    if dtype == dlc_ir::DType::F32 && const_bounds {
        let min = scalar(&lo).map_or(f32::NEG_INFINITY, |v| v[0]);
        let max = scalar(&hi).map_or(f32::INFINITY, |v| v[0]);
        return cx.add("", Clip { min, max }, &[x]);
    }
    // Other dtypes or computed bounds: min(max(x, lo), hi).
    let mut y = x;
    let has_hi = cx.opt_input(2)?.is_some();
    if let Some(lo) = cx.opt_input(1)? {
        y = cx.add1(if has_hi { "lo" } else { "" }, Max {}, &[y, lo])?;
    }
    if let Some(hi) = cx.opt_input(2)? {
        y = cx.add1("", Min {}, &[y, hi])?;
    }
    if y == x {
        y = cx.add1("", Identity {}, &[x])?;
    }
    Ok(vec![y])
}

#[cfg(test)]
mod tests {
    use super::PLAIN;
    use dlc_ir::{Attr, Op};

    #[test]
    fn plain_ops_are_ops_of_the_table_with_float_attributes() {
        for (op_type, mn) in PLAIN {
            let op = Op::from_call(mn, Vec::new()).expect("no attributes needed").expect("in the op table");
            assert!(op.attrs().iter().all(|(_, a)| matches!(a, Attr::Float(_))), "{op_type} -> {mn}");
            assert!(op.info().max_operands <= 2, "{op_type}");
        }
    }
}
