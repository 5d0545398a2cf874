//! MatMul, Gemm.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::{Activation, Einsum, Gemm, MatMul};
use dlc_ir::Value;
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("MatMul", matmul);
    reg.insert("Gemm", gemm);
    reg.insert("Einsum", |cx| {
        let equation = cx.string("equation", "")?;
        let ops: Vec<Value> = (0..cx.num_inputs()).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
        cx.add("", Einsum { equation }, &ops)
    });
}

fn matmul(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if let Some(y) = super::quant::qdq_matmul(cx, a, b, None)? {
        return Ok(vec![y]);
    }
    cx.add("", MatMul { act: Activation::None }, &[a, b])
}

fn gemm(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if cx.opset < 7 && cx.int("broadcast", 1) == 0 {
        return Err("broadcast=0 (opset < 7) is not supported".into());
    }
    let op = Gemm {
        alpha: cx.float("alpha", 1.0),
        beta: cx.float("beta", 1.0),
        trans_a: cx.int("transA", 0) != 0,
        trans_b: cx.int("transB", 0) != 0,
        act: Activation::None,
    };
    let mut operands = vec![cx.input(0)?, cx.input(1)?];
    let c = cx.opt_input(2)?;
    if let Some(y) = super::quant::qdq_matmul(cx, operands[0], operands[1], Some((&op, c)))? {
        return Ok(vec![y]);
    }
    operands.extend(c);
    cx.add("", op, &operands)
}
