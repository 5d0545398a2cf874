//! QuantizeLinear and DequantizeLinear (per-tensor and per-axis; 2-, 4-, 8- and 16-bit
//! integers, float8 and float4),
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
    reg.insert("DynamicQuantizeLinear", dynamic_quantize);
}

/// Makes a per-axis `[C]` parameter broadcast along `axis` of `x`; a blocked one (the
/// shape of `x` with `ceil(D / block_size)` along `axis`) repeats each value
/// `block_size` times along `axis`.
fn per_axis(cx: &mut NodeCx, x: Value, p: Value, what: &str) -> Result<Value, String> {
    let (xt, pt) = (cx.ty(x), cx.ty(p));
    let block = cx.int("block_size", 0);
    if pt.shape.rank() == 0 || (xt.shape.rank() <= 1 && block == 0) {
        return Ok(p);
    }
    let rank = xt.shape.rank();
    let axis = cx.int("axis", 1);
    let a = normalize_axis(axis, rank).ok_or(format!("axis {axis} out of range"))?;
    if block > 0 {
        let xd = xt.shape.as_fixed().ok_or("blocked quantization needs known dims")?;
        let pd = pt.shape.as_fixed().ok_or("blocked quantization needs known dims")?;
        let blocks = xd[a].div_ceil(block as u64);
        if pd.len() != rank || pd[a] != blocks || (0..rank).any(|d| d != a && pd[d] != xd[d]) {
            return Err(format!(
                "{what} of shape {} does not match input {} in blocks of {block} along axis {a}",
                pt.shape, xt.shape
            ));
        }
        let dims = |d: &[u64]| d.iter().map(|&v| v as i64).collect::<Vec<i64>>();
        let mut split = dims(&pd);
        split.insert(a + 1, 1);
        let p = cx.add1(&format!("{what}_blocks"), Reshape { shape: split.clone(), allowzero: true }, &[p])?;
        split[a + 1] = block;
        let p = cx.add1(&format!("{what}_repeat"), Expand { shape: split }, &[p])?;
        let mut merged = dims(&pd);
        merged[a] = blocks as i64 * block;
        let p = cx.add1(&format!("{what}_merge"), Reshape { shape: merged, allowzero: true }, &[p])?;
        if blocks as i64 * block == xd[a] as i64 {
            return Ok(p);
        }
        let slice = Slice { starts: vec![0], ends: vec![xd[a] as i64], axes: vec![a as i64], steps: vec![1] };
        return cx.add1(&format!("{what}_trim"), slice, &[p]);
    }
    if pt.shape.rank() != 1 {
        return Err(format!("{what} must be a scalar or 1-D, got {}", pt.shape));
    }
    let c = pt.shape.0[0].fixed().ok_or("per-axis parameters need known dims")? as i64;
    let shape: Vec<i64> = std::iter::once(c).chain((a + 1..rank).map(|_| 1)).collect();
    cx.add1(&format!("{what}_axis"), Reshape { shape, allowzero: true }, &[p])
}

/// DynamicQuantizeLinear: u8 with `scale = (max(x, 0) - min(x, 0)) / 255` and
/// `zero_point = saturate(round(-min(x, 0) / scale))`; outputs y, scale, zero point.
fn dynamic_quantize(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    if cx.ty(x).dtype != DType::F32 {
        return Err(format!("input must be f32, got {}", cx.ty(x).dtype));
    }
    let rank = cx.ty(x).shape.rank() as i64;
    let all: Vec<i64> = (0..rank).collect();
    let scalar = |cx: &mut NodeCx, v: f32| cx.add_const(TensorData::from_f32(&[], &[v]).expect("scalar"));
    let zero = scalar(cx, 0.0);
    let hi = cx.add1("max", ReduceMax { axes: all.clone(), keepdims: false }, &[x])?;
    let lo = cx.add1("min", ReduceMin { axes: all, keepdims: false }, &[x])?;
    let hi = cx.add1("max0", Max {}, &[hi, zero])?;
    let lo = cx.add1("min0", Min {}, &[lo, zero])?;
    let range = cx.add1("range", Sub {}, &[hi, lo])?;
    let c255 = scalar(cx, 255.0);
    let scale = cx.add1("scale", Div {}, &[range, c255])?;
    let neg = cx.add1("neg_min", Neg {}, &[lo])?;
    let zp = cx.add1("zp_scaled", Div {}, &[neg, scale])?;
    let zp = cx.add1("zp_rounded", Round {}, &[zp])?;
    let sat = |cx: &mut NodeCx, v: Value, tag: &str| -> Result<Value, String> {
        let (z, m) = (scalar(cx, 0.0), scalar(cx, 255.0));
        let v = cx.add1(&format!("{tag}_lo"), Max {}, &[v, z])?;
        cx.add1(&format!("{tag}_hi"), Min {}, &[v, m])
    };
    let zp = sat(cx, zp, "zp_saturate")?;
    let y = cx.add1("scaled", Div {}, &[x, scale])?;
    let y = cx.add1("rounded", Round {}, &[y])?;
    let y = cx.add1("shifted", Add {}, &[y, zp])?;
    let y = sat(cx, y, "saturate")?;
    let y = cx.add1("y", Cast::new(DType::U8), &[y])?;
    let zp = cx.add1("zero_point", Cast::new(DType::U8), &[zp])?;
    Ok(vec![y, scale, zp])
}

/// The range of an integer quantized type; `None` for the 8- and 4-bit floats.
fn quantized_type(d: DType) -> Result<Option<(f32, f32)>, String> {
    Ok(Some(match d {
        DType::I8 => (-128.0, 127.0),
        DType::U8 => (0.0, 255.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U16 => (0.0, 65535.0),
        DType::I4 => (-8.0, 7.0),
        DType::U4 => (0.0, 15.0),
        DType::I2 => (-2.0, 1.0),
        DType::U2 => (0.0, 3.0),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F4E2M1 => return Ok(None),
        d => return Err(format!("quantized type {d} is not supported yet")),
    }))
}

fn dequantize(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, scale) = (cx.input(0)?, cx.input(1)?);
    quantized_type(cx.ty(x).dtype)?;
    let fdt = cx.ty(scale).dtype;
    let scale = per_axis(cx, x, scale, "scale")?;
    let mut xf = cx.add1("x_float", Cast::new(fdt), &[x])?;
    if let Some(zp) = cx.opt_input(2)? {
        let zp = per_axis(cx, x, zp, "zero_point")?;
        let zf = cx.add1("zero_point_float", Cast::new(fdt), &[zp])?;
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
    let range = quantized_type(qdt)?;
    let fdt = cx.ty(x).dtype;
    if fdt != DType::F32 {
        return Err(format!("quantizing {fdt} is not supported yet (f32 only)"));
    }
    let scale = per_axis(cx, x, scale, "scale")?;
    let scale = if cx.ty(scale).dtype != fdt { cx.add1("scale_float", Cast::new(fdt), &[scale])? } else { scale };
    let q = cx.add1("scaled", Div {}, &[x, scale])?;
    let Some((lo, hi)) = range else {
        // Floats: float8 ignores the zero point and saturates as asked; float4 adds it and
        // always saturates.
        let mut q = q;
        if let (Some(zp), DType::F4E2M1) = (zp, qdt) {
            let zp = per_axis(cx, x, zp, "zero_point")?;
            let zf = cx.add1("zero_point_float", Cast::new(fdt), &[zp])?;
            q = cx.add1("shifted", Add {}, &[q, zf])?;
        }
        let saturate = cx.int("saturate", 1) != 0;
        return cx.add("", Cast { to: qdt, saturate }, &[q]);
    };
    let mut q = cx.add1("rounded", Round {}, &[q])?;
    if let Some(zp) = zp {
        let zp = per_axis(cx, x, zp, "zero_point")?;
        let zf = cx.add1("zero_point_float", Cast::new(fdt), &[zp])?;
        q = cx.add1("shifted", Add {}, &[q, zf])?;
    }
    let lo = cx.add_const(TensorData::from_f32(&[], &[lo]).expect("scalar"));
    let hi = cx.add_const(TensorData::from_f32(&[], &[hi]).expect("scalar"));
    let q = cx.add1("saturate_lo", Max {}, &[q, lo])?;
    let q = cx.add1("saturate_hi", Min {}, &[q, hi])?;
    cx.add("", Cast::new(qdt), &[q])
}
