//! Reshape, Flatten, Transpose, Concat, Constant.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::{normalize_axis, Concat, Flatten, Gather, Reshape, Transpose};
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("Reshape", reshape);
    reg.insert("Flatten", flatten);
    reg.insert("Transpose", transpose);
    reg.insert("Concat", concat);
    reg.insert("Constant", constant);
    reg.insert("Gather", |cx| {
        let (d, i) = (cx.input(0)?, cx.input(1)?);
        let axis = cx.int("axis", 0);
        cx.add("", Gather { axis }, &[d, i])
    });
    reg.insert("Shape", shape);
    reg.insert("Size", |cx| {
        let x = cx.input(0)?;
        let n = cx.ty(x).shape.numel().ok_or("Size needs known dims")?;
        Ok(vec![cx.add_const(TensorData::from_i64(&[], &[n as i64]).expect("scalar"))])
    });
    reg.insert("Squeeze", |cx| squeeze(cx, false));
    reg.insert("Unsqueeze", |cx| squeeze(cx, true));
}

fn reshape(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let shape = if cx.opset < 5 {
        cx.ints("shape")
    } else {
        let t = cx
            .const_input(1)?
            .ok_or("the target shape (input 1) must be a constant; computed shapes are not supported yet")?;
        if t.ty().dtype != DType::I64 || t.ty().shape.rank() != 1 {
            return Err(format!("the target shape must be a 1-D i64 tensor, got {}", t.ty()));
        }
        t.to_i64().expect("i64 tensor")
    };
    let allowzero = cx.int("allowzero", 0) != 0;
    cx.add("", Reshape { shape, allowzero }, &[x])
}

fn flatten(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let axis = cx.int("axis", 1);
    cx.add("", Flatten { axis }, &[x])
}

fn transpose(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let perm = cx.ints("perm");
    cx.add("", Transpose { perm }, &[x])
}

fn concat(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if !cx.has("axis") {
        return Err("attribute 'axis' is required".into());
    }
    let axis = cx.int("axis", 0);
    let operands: Vec<Value> = (0..cx.num_inputs()).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
    if operands.is_empty() {
        return Err("needs at least one input".into());
    }
    cx.add("", Concat { axis }, &operands)
}

fn constant(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let t = if let Some(t) = cx.tensor_attr("value")? {
        t
    } else if cx.has("value_float") {
        TensorData::from_f32(&[], &[cx.float("value_float", 0.0)]).expect("scalar")
    } else if cx.has("value_int") {
        TensorData::from_i64(&[], &[cx.int("value_int", 0)]).expect("scalar")
    } else if cx.has("value_ints") {
        let v = cx.ints("value_ints");
        TensorData::from_i64(&[v.len() as u64], &v).expect("vector")
    } else if cx.has("value_floats") {
        let a = cx.node.attribute.iter().find(|a| a.name == "value_floats").expect("has");
        TensorData::from_f32(&[a.floats.len() as u64], &a.floats).expect("vector")
    } else if cx.has("sparse_value") {
        return Err("sparse constants are not supported".into());
    } else {
        return Err("no value attribute (value, value_float(s), value_int(s))".into());
    };
    let _: &TensorType = t.ty();
    Ok(vec![cx.add_const(t)])
}

/// Shape is known at compile time: it becomes a constant (with opset 15's start/end).
fn shape(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    let dims = ty.shape.as_fixed().ok_or_else(|| format!("Shape of {ty} needs known dims"))?;
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(cx.int("start", 0));
    let end = clamp(cx.int("end", r));
    let vals: Vec<i64> = dims[start..end.max(start)].iter().map(|&d| d as i64).collect();
    Ok(vec![cx.add_const(TensorData::from_i64(&[vals.len() as u64], &vals).expect("vector"))])
}

/// Squeeze and Unsqueeze are reshapes to a shape computed from the axes.
fn squeeze(cx: &mut NodeCx, unsqueeze: bool) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let axes = if cx.opset >= 13 {
        match cx.opt_input(1)? {
            Some(_) => cx.const_input(1)?.and_then(|t| t.to_i64()).ok_or("axes (input 1) must be a constant")?,
            None => vec![],
        }
    } else {
        cx.ints("axes")
    };
    let ty = cx.ty(x);
    let dims = ty.shape.as_fixed().ok_or_else(|| format!("needs known dims, got {ty}"))?;
    let out: Vec<i64> = if unsqueeze {
        let rank = dims.len() + axes.len();
        let mut ax: Vec<usize> = axes
            .iter()
            .map(|&a| normalize_axis(a, rank).ok_or(format!("axis {a} out of range")))
            .collect::<Result<_, _>>()?;
        ax.sort_unstable();
        ax.dedup();
        if ax.len() != axes.len() {
            return Err(format!("repeated axes {axes:?}"));
        }
        let mut it = dims.iter();
        (0..rank).map(|i| if ax.contains(&i) { 1 } else { *it.next().expect("rank matches") as i64 }).collect()
    } else {
        let ax: Vec<usize> = axes
            .iter()
            .map(|&a| normalize_axis(a, dims.len()).ok_or(format!("axis {a} out of range")))
            .collect::<Result<_, _>>()?;
        for &a in &ax {
            if dims[a] != 1 {
                return Err(format!("cannot squeeze dim {a} of extent {}", dims[a]));
            }
        }
        dims.iter()
            .enumerate()
            .filter(|(i, &d)| if ax.is_empty() { d != 1 } else { !ax.contains(i) })
            .map(|(_, &d)| d as i64)
            .collect()
    };
    cx.add("", Reshape { shape: out, allowzero: true }, &[x])
}
