//! Reshape, Flatten, Transpose, Concat, Constant.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::{Concat, Flatten, Reshape, Transpose};
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("Reshape", reshape);
    reg.insert("Flatten", flatten);
    reg.insert("Transpose", transpose);
    reg.insert("Concat", concat);
    reg.insert("Constant", constant);
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
