//! Add, Sub, Mul, Div, Relu, Sigmoid, Tanh, Clip, Identity.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::{Add, Clip, Div, Identity, Mul, Relu, Sigmoid, Sub, Tanh};
use dlc_ir::{Op, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("Add", |cx| binary(cx, Add {}.into()));
    reg.insert("Sub", |cx| binary(cx, Sub {}.into()));
    reg.insert("Mul", |cx| binary(cx, Mul {}.into()));
    reg.insert("Div", |cx| binary(cx, Div {}.into()));
    reg.insert("Relu", |cx| unary(cx, Relu {}.into()));
    reg.insert("Sigmoid", |cx| unary(cx, Sigmoid {}.into()));
    reg.insert("Tanh", |cx| unary(cx, Tanh {}.into()));
    reg.insert("Identity", |cx| unary(cx, Identity {}.into()));
    reg.insert("Clip", clip);
}

fn binary(cx: &mut NodeCx, op: Op) -> Result<Vec<Value>, String> {
    // Opset < 7 used explicit `broadcast`/`axis` attributes with different rules.
    if cx.opset < 7 && cx.int("broadcast", 0) != 0 && cx.has("axis") {
        return Err("legacy broadcast with 'axis' (opset < 7) is not supported".into());
    }
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    cx.add("", op, &[a, b])
}

fn unary(cx: &mut NodeCx, op: Op) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    cx.add("", op, &[x])
}

fn clip(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let (min, max) = if cx.opset < 11 {
        (cx.float("min", f32::NEG_INFINITY), cx.float("max", f32::INFINITY))
    } else {
        let mut bound = |i: usize, default: f32| -> Result<f32, String> {
            if cx.opt_input(i)?.is_none() {
                return Ok(default);
            }
            let t = cx.const_input(i)?.ok_or_else(|| format!("input {i} (bound) must be a constant"))?;
            match t.to_f32().as_deref() {
                Some([v]) => Ok(*v),
                _ => Err(format!("input {i} (bound) must be an f32 scalar, got {}", t.ty())),
            }
        };
        (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
    };
    cx.add("", Clip { min, max }, &[x])
}
