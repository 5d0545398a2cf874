//! QuantizeLinear and DequantizeLinear (per-tensor and per-axis, 8- and 16-bit integers),
//! expanded into elementwise ops: `y = (x - zero_point) * scale` and
//! `y = saturate(round_half_even(x / scale) + zero_point)`.
use super::{BuildFn, NodeCx};
use crate::tensor::dtype_from_onnx;
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("DequantizeLinear", dequantize);
    reg.insert("QuantizeLinear", quantize);
}

/// Reshapes a per-axis `[C]` parameter so it broadcasts along `axis` of `x`.
fn per_axis(cx: &mut NodeCx, x: Value, p: Value, what: &str) -> Result<Value, String> {
    if cx.int("block_size", 0) != 0 {
        return Err("blocked quantization is not supported yet".into());
    }
    let (xt, pt) = (cx.ty(x), cx.ty(p));
    if pt.shape.rank() == 0 || xt.shape.rank() <= 1 {
        return Ok(p);
    }
    if pt.shape.rank() != 1 {
        return Err(format!("{what} must be a scalar or 1-D, got {}", pt.shape));
    }
    let rank = xt.shape.rank();
    let axis = cx.int("axis", 1);
    let a = normalize_axis(axis, rank).ok_or(format!("axis {axis} out of range"))?;
    let c = pt.shape.0[0].fixed().ok_or("per-axis parameters need known dims")? as i64;
    let shape: Vec<i64> = std::iter::once(c).chain((a + 1..rank).map(|_| 1)).collect();
    cx.add1(&format!("{what}_axis"), Reshape { shape, allowzero: true }, &[p])
}

fn quantized_type(d: DType) -> Result<(f32, f32), String> {
    Ok(match d {
        DType::I8 => (-128.0, 127.0),
        DType::U8 => (0.0, 255.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U16 => (0.0, 65535.0),
        d => return Err(format!("quantized type {d} is not supported yet")),
    })
}

fn dequantize(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, scale) = (cx.input(0)?, cx.input(1)?);
    quantized_type(cx.ty(x).dtype)?;
    let fdt = cx.ty(scale).dtype;
    let scale = per_axis(cx, x, scale, "scale")?;
    let mut xf = cx.add1("x_float", Cast { to: fdt }, &[x])?;
    if let Some(zp) = cx.opt_input(2)? {
        let zp = per_axis(cx, x, zp, "zero_point")?;
        let zf = cx.add1("zero_point_float", Cast { to: fdt }, &[zp])?;
        xf = cx.add1("centered", Sub {}, &[xf, zf])?;
    }
    cx.add("", Mul {}, &[xf, scale])
}

fn quantize(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, scale) = (cx.input(0)?, cx.input(1)?);
    let zp = cx.opt_input(2)?;
    let qdt = match (zp, cx.int("output_dtype", 0)) {
        (Some(z), _) => cx.ty(z).dtype,
        (None, 0) => DType::U8,
        (None, code) => dtype_from_onnx(code as i32).ok_or(format!("output_dtype {code} is not supported"))?,
    };
    let (lo, hi) = quantized_type(qdt)?;
    let fdt = cx.ty(x).dtype;
    if fdt != DType::F32 {
        return Err(format!("quantizing {fdt} is not supported yet (f32 only)"));
    }
    let scale = per_axis(cx, x, scale, "scale")?;
    let scale = if cx.ty(scale).dtype != fdt { cx.add1("scale_float", Cast { to: fdt }, &[scale])? } else { scale };
    let q = cx.add1("scaled", Div {}, &[x, scale])?;
    let mut q = cx.add1("rounded", Round {}, &[q])?;
    if let Some(zp) = zp {
        let zp = per_axis(cx, x, zp, "zero_point")?;
        let zf = cx.add1("zero_point_float", Cast { to: fdt }, &[zp])?;
        q = cx.add1("shifted", Add {}, &[q, zf])?;
    }
    let lo = cx.add_const(TensorData::from_f32(&[], &[lo]).expect("scalar"));
    let hi = cx.add_const(TensorData::from_f32(&[], &[hi]).expect("scalar"));
    let q = cx.add1("saturate_lo", Max {}, &[q, lo])?;
    let q = cx.add1("saturate_hi", Min {}, &[q, hi])?;
    cx.add("", Cast { to: qdt }, &[q])
}
