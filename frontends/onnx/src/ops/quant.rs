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
    register_integer(reg);
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
        let p = cx.add1(&format!("{what}_repeat"), Expand::to(split), &[p])?;
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
    let (y, scale, zp) = quantize_u8_over_range(cx, x, false)?;
    Ok(vec![y, scale, zp])
}

/// `x` (f32) quantized to uint8 over the range of all its elements, as
/// DynamicQuantizeLinear defines it: scale `(max(x, 0) - min(x, 0)) / 255`, zero point
/// `saturate(round(-min(x, 0) / scale))`, codes `saturate(round(x / scale) + zero
/// point)`, rounding half to even. With `unit_if_flat`, a range of 0 gives scale 1 (ONNX
/// Runtime's quantized recurrent products) instead of 0. Returns the codes, the scale (f32)
/// and the zero point (u8).
pub(crate) fn quantize_u8_over_range(
    cx: &mut NodeCx,
    x: Value,
    unit_if_flat: bool,
) -> Result<(Value, Value, Value), String> {
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
    let mut scale = cx.add1("scale", Div {}, &[range, c255])?;
    if unit_if_flat {
        let flat = cx.add1("flat", Equal {}, &[range, zero])?;
        let one = scalar(cx, 1.0);
        scale = cx.add1("scale_or_one", Where {}, &[flat, one, scale])?;
    }
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
    Ok((y, scale, zp))
}

/// The range of an integer quantized type; `None` for the 8- and 4-bit floats.
fn quantized_type(d: DType) -> Result<Option<(f32, f32)>, String> {
    Ok(Some(match d {
        DType::I8 => (-128.0, 127.0),
        DType::U8 => (0.0, 255.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U16 => (0.0, 65535.0),
        // Biases of quantized models (DequantizeLinear only in practice; values beyond
        // 2^24 round when converted to f32, as in ONNX Runtime's float path).
        DType::I32 => (-2147483648.0, 2147483647.0),
        DType::I4 => (-8.0, 7.0),
        DType::U4 => (0.0, 15.0),
        DType::I2 => (-2.0, 1.0),
        DType::U2 => (0.0, 3.0),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F4E2M1 => return Ok(None),
        d => return Err(format!("quantized type {d} is not supported yet")),
    }))
}

/// What a DequantizeLinear with a constant f32 scale read: its codes (u8 or i8), the
/// scale (one, or one per index of `axis`) and the zero point, if any.
#[derive(Clone)]
pub(crate) struct Dequantized {
    pub q: Value,
    pub scale: Vec<f32>,
    pub axis: i64,
    pub zp: Option<Value>,
}

fn dequantize(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, scale_in) = (cx.input(0)?, cx.input(1)?);
    quantized_type(cx.ty(x).dtype)?;
    let fdt = cx.ty(scale_in).dtype;
    let scale = per_axis(cx, x, scale_in, "scale")?;
    let mut xf = cx.add1("x_float", Cast::new(fdt), &[x])?;
    let zp_in = cx.opt_input(2)?;
    if let Some(zp) = zp_in {
        let zp = per_axis(cx, x, zp, "zero_point")?;
        let zf = cx.add1("zero_point_float", Cast::new(fdt), &[zp])?;
        xf = cx.add1("centered", Sub {}, &[xf, zf])?;
    }
    let y = cx.add("", Mul {}, &[xf, scale])?;
    let known = cx.imp.known.get(&scale_in).and_then(|t| t.to_f32());
    if let (Some(scale), DType::U8 | DType::I8, 0) = (known, cx.ty(x).dtype, cx.int("block_size", 0)) {
        let d = Dequantized { q: x, scale, axis: cx.int("axis", 1), zp: zp_in };
        cx.imp.dequantized.insert(y[0], d);
    }
    Ok(y)
}

/// A Conv of QDQ form (what `quantize_static` writes): both operands DequantizeLinear
/// results, u8 activation codes with one scale and zero point, constant weight codes with
/// one scale or one per output channel. It runs on the int8 kernels ([`int8_conv`]): the
/// exact i32 sum of the centred codes, times `x_scale * w_scale[m]` (in f64, rounded once),
/// plus the bias; `None` where the form or the int8 path does not apply (the f32 Conv of
/// the dequantized values serves).
pub(crate) fn qdq_conv(
    cx: &mut NodeCx,
    op: &Conv,
    x: Value,
    w: Value,
    bias: Option<Value>,
) -> Result<Option<Value>, String> {
    let (Some(dx), Some(dw)) = (cx.imp.dequantized.get(&x).cloned(), cx.imp.dequantized.get(&w).cloned()) else {
        return Ok(None);
    };
    let m = match cx.ty(w).shape.as_fixed() {
        Some(d) if d.len() == 4 => d[0] as usize,
        _ => return Ok(None),
    };
    let per_channel = dw.scale.len() == m && (dw.axis == 0 || dw.axis == -4);
    if dx.scale.len() != 1 || !(dw.scale.len() == 1 || per_channel) {
        return Ok(None);
    }
    let Some((xq, xzp)) = u8_codes(cx, &dx)? else { return Ok(None) };
    let Some(y) = int8_conv(cx, op, xq, xzp, dw.q, dw.zp)? else { return Ok(None) };
    let mult: Vec<f32> =
        (0..m).map(|c| (dx.scale[0] as f64 * dw.scale[if per_channel { c } else { 0 }] as f64) as f32).collect();
    let mult = cx.add_const(TensorData::from_f32(&[m as u64, 1, 1], &mult).ok_or("internal: scales")?);
    let y = cx.add1("float", Cast::new(DType::F32), &[y])?;
    let mut y = cx.add1("scaled", Mul {}, &[y, mult])?;
    if let Some(b) = bias {
        let b = cx.add1("bias_channels", Reshape { shape: vec![-1, 1, 1], allowzero: false }, &[b])?;
        y = cx.add1("biased", Add {}, &[y, b])?;
    }
    Ok(Some(y))
}

/// A dequantized activation's codes as u8 with their zero point: u8 codes as they are;
/// i8 codes (quantize_static's default) as u8 ones 128 higher, the zero point too, so the
/// centred values, all the products see, are the same. `None` where an i8 zero point is
/// not a known scalar.
fn u8_codes(cx: &mut NodeCx, d: &Dequantized) -> Result<Option<(Value, Option<Value>)>, String> {
    if cx.ty(d.q).dtype == DType::U8 {
        return Ok(Some((d.q, d.zp)));
    }
    let zp = match d.zp {
        None => 0,
        Some(z) => match cx.imp.known.get(&z).and_then(|t| t.to_i64()) {
            Some(v) if v.len() == 1 => v[0],
            _ => return Ok(None),
        },
    };
    let i = cx.add1("codes_i32", Cast::new(DType::I32), &[d.q])?;
    let half = cx.add_const(
        TensorData::new(dlc_ir::TensorType::fixed(DType::I32, &[]), 128i32.to_le_bytes().to_vec().into())
            .ok_or("internal: 128")?,
    );
    let i = cx.add1("codes_offset", Add {}, &[i, half])?;
    let u = cx.add1("codes_u8", Cast::new(DType::U8), &[i])?;
    let z = cx.add_const(
        TensorData::new(dlc_ir::TensorType::fixed(DType::U8, &[]), vec![(zp + 128) as u8].into())
            .ok_or("internal: zero point")?,
    );
    Ok(Some((u, Some(z))))
}

/// A MatMul or Gemm of QDQ form (what `quantize_static` writes for a transformer's
/// projections): `a` the DequantizeLinear of activation codes with one scale, `b` that of
/// constant weight codes `[K, N]` with one scale or one per column (Gemm's `transB`
/// weights are transposed here, at compile time). It runs on the int8 kernel
/// ([`int8_product`]): the exact i32 sums of the centred codes, times
/// `alpha * a_scale * b_scale[n]` (in f64, rounded once), then Gemm's `beta * C`. `None`
/// where the form or the int8 kernel does not apply (the f32 product of the dequantized
/// values serves), as for a transposed `a`.
pub(crate) fn qdq_matmul(
    cx: &mut NodeCx,
    a: Value,
    b: Value,
    gemm: Option<(&Gemm, Option<Value>)>,
) -> Result<Option<Value>, String> {
    let (Some(da), Some(db)) = (cx.imp.dequantized.get(&a).cloned(), cx.imp.dequantized.get(&b).cloned()) else {
        return Ok(None);
    };
    let Some(bd) = cx.ty(b).shape.as_fixed().filter(|d| d.len() == 2) else { return Ok(None) };
    let trans_b = gemm.is_some_and(|(g, _)| g.trans_b);
    if gemm.is_some_and(|(g, _)| g.trans_a) || da.scale.len() != 1 || !cx.imp.known.contains_key(&db.q) {
        return Ok(None);
    }
    let n = if trans_b { bd[0] } else { bd[1] } as usize;
    // Per column of `[K, N]`: axis 1 (axis 0 of Gemm's transposed `[N, K]`).
    let column_axis = if trans_b { [0, -2] } else { [1, -1] };
    let per_column = db.scale.len() == n && column_axis.contains(&db.axis);
    if !(db.scale.len() == 1 || per_column) {
        return Ok(None);
    }
    let (mut wq, wzp) = (db.q, db.zp);
    if trans_b {
        // The codes (and a per-column zero point, 1-D either way) as `[K, N]`.
        let t = cx.imp.known.get(&wq).ok_or("internal: known weights")?;
        let dtype = t.ty().dtype;
        let (rows, cols, size) = (bd[0] as usize, bd[1] as usize, dtype.size());
        let src = t.bytes();
        let mut out = vec![0u8; src.len()];
        for r in 0..rows {
            for c in 0..cols {
                let (from, to) = ((r * cols + c) * size, (c * rows + r) * size);
                out[to..to + size].copy_from_slice(&src[from..from + size]);
            }
        }
        let tt = dlc_ir::TensorType::fixed(dtype, &[bd[1], bd[0]]);
        wq = cx.add_const(TensorData::new(tt, out.into()).ok_or("internal: transposed weights")?);
    }
    let Some((aq, azp)) = u8_codes(cx, &da)? else { return Ok(None) };
    let Some(y) = int8_product(cx, aq, azp, wq, wzp)? else { return Ok(None) };
    let alpha = gemm.map_or(1.0, |(g, _)| g.alpha as f64);
    let mult: Vec<f32> =
        (0..n).map(|c| (alpha * da.scale[0] as f64 * db.scale[if per_column { c } else { 0 }] as f64) as f32).collect();
    let mult = cx.add_const(TensorData::from_f32(&[n as u64], &mult).ok_or("internal: scales")?);
    let y = cx.add1("float", Cast::new(DType::F32), &[y])?;
    let mut y = cx.add1("scaled", Mul {}, &[y, mult])?;
    if let Some((g, Some(c))) = gemm {
        let c = if g.beta == 1.0 {
            c
        } else {
            let beta = cx.add_const(TensorData::from_f32(&[], &[g.beta]).ok_or("internal: beta")?);
            cx.add1("c_scaled", Mul {}, &[c, beta])?
        };
        y = cx.add1("biased", Add {}, &[y, c])?;
    }
    Ok(Some(y))
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

// Integer products (MatMulInteger, ConvInteger) and the QLinear ops, expanded exactly:
// operands minus their zero points are small integers, which f32 holds exactly, and the
// product's reduction is split into chunks short enough that `|sum| < 2^24`, so each
// chunk's f32 sum is exact in any order ([`exact_terms`]: 256 terms for any 8-bit
// operands, 512 when constant weights are within +-127 of their zero points, as
// symmetric int8 weights are, 448 for ORT's uint8 weights within +-134 of theirs); chunk results are summed in f64 (exact) and converted
// to i32. The QLinear ops then scale in f64 like the ONNX
// reference (`int32 * (s_a * s_b / s_y)` with an f32 factor), round half to even, add
// the output zero point and saturate.

/// The most terms of a product of `a - a_zp` and `b - b_zp` whose f32 sum is exact in any
/// order: `(2^24 - 1) / (A B)` for `A`, `B` bounds of the operands' magnitudes, each
/// from its values when it and its zero point are constants (the farthest of its least
/// and greatest values from the zero point; per-channel zero points: from the least and
/// greatest of them), else from its type (255 for 8-bit codes minus a zero point, 128
/// for int8 without one); in whole multiples of 64 terms where that many fit.
fn exact_terms(cx: &NodeCx, operands: [(Value, Option<Value>); 2]) -> u64 {
    let bound = |(x, zp): (Value, Option<Value>)| -> u64 {
        let by_type = match (cx.ty(x).dtype, zp) {
            (DType::I8, None) => 128,
            _ => 255,
        };
        let known = |v: Value| cx.imp.known.get(&v).and_then(|t| t.to_i64());
        let (Some(xs), z) = (known(x), zp.map(known)) else { return by_type };
        let (lo, hi) = (xs.iter().copied().min().unwrap_or(0), xs.iter().copied().max().unwrap_or(0));
        let m = match z.as_ref().map(|z| z.as_deref()) {
            // No zero point, or one for all: the farthest value from it.
            None => lo.unsigned_abs().max(hi.unsigned_abs()),
            Some(None) => return by_type,
            Some(Some(&[z])) => (lo - z).unsigned_abs().max((hi - z).unsigned_abs()),
            // One per row or channel: at most the values' and zero points' farthest.
            Some(Some(zs)) => {
                let (zl, zh) = (zs.iter().copied().min().unwrap_or(0), zs.iter().copied().max().unwrap_or(0));
                (lo - zh).unsigned_abs().max((hi - zl).unsigned_abs())
            }
        };
        m.clamp(1, by_type)
    };
    let [a, b] = operands.map(bound);
    let n = ((1u64 << 24) - 1) / (a * b);
    // Whole multiples of 64 terms where that many fit (the kernels' vectors and tiles).
    if n >= 64 {
        n / 64 * 64
    } else {
        n
    }
}

pub(crate) fn register_integer(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("MatMulInteger", matmul_integer);
    reg.insert("ConvInteger", conv_integer);
    reg.insert("QLinearMatMul", qlinear_matmul);
    reg.insert("QLinearConv", qlinear_conv);
}

/// `x - zero_point` as f32 (`zp` already shaped to broadcast).
fn centered(cx: &mut NodeCx, x: Value, zp: Option<Value>, what: &str) -> Result<Value, String> {
    if !matches!(cx.ty(x).dtype, DType::I8 | DType::U8) {
        return Err(format!("{what} must be int8 or uint8, got {}", cx.ty(x).dtype));
    }
    let xf = cx.add1(&format!("{what}_f32"), Cast::new(DType::F32), &[x])?;
    match zp {
        Some(z) => {
            let zf = cx.add1(&format!("{what}_zero_point_f32"), Cast::new(DType::F32), &[z])?;
            cx.add1(&format!("{what}_centered"), Sub {}, &[xf, zf])
        }
        None => Ok(xf),
    }
}

/// A reduction of `n` terms split into chunks of at most `len`, for exact f32 products.
struct Chunks {
    n: u64,
    len: u64,
    /// Node names: `{a}_{tag}{start}`, `{b}_{tag}{start}`, `{product}_{tag}{start}`.
    tag: char,
    names: [&'static str; 3],
    /// The error when `n` is 0.
    empty: &'static str,
}

impl Chunks {
    /// The sum over chunks of `product(a chunk, b chunk)`, each chunk sliced along the
    /// given axis of each operand (no slice when one chunk covers all), each product
    /// cast to f64 (exact) before the sum.
    fn sum(
        &self,
        cx: &mut NodeCx,
        (a, a_axis): (Value, i64),
        (b, b_axis): (Value, i64),
        product: impl Fn(&mut NodeCx, Value, Value, &str) -> Result<Value, String>,
    ) -> Result<Value, String> {
        let ([na, nb, np], t) = (self.names, self.tag);
        let mut acc: Option<Value> = None;
        for lo in (0..self.n).step_by(self.len as usize) {
            let hi = (lo + self.len).min(self.n);
            let (ac, bc) = if lo == 0 && hi == self.n {
                (a, b)
            } else {
                let slice =
                    |axis| Slice { starts: vec![lo as i64], ends: vec![hi as i64], axes: vec![axis], steps: vec![1] };
                (
                    cx.add1(&format!("{na}_{t}{lo}"), slice(a_axis), &[a])?,
                    cx.add1(&format!("{nb}_{t}{lo}"), slice(b_axis), &[b])?,
                )
            };
            let p = product(cx, ac, bc, &format!("{np}_{t}{lo}"))?;
            let p = cx.add1(&format!("{np}_{t}{lo}_f64"), Cast::new(DType::F64), &[p])?;
            acc = Some(match acc {
                None => p,
                Some(s) => cx.add1(&format!("sum_{t}{lo}"), Add {}, &[s, p])?,
            });
        }
        acc.ok_or_else(|| self.empty.to_string())
    }
}

/// `(a - a_zp) @ (b - b_zp)` as i32 by the int8 kernel ([`dlc_ir::ops::IntMatMul`]) where
/// it applies: `a` u8 with one zero point (or none), `b` a constant matrix of u8 or i8
/// with constant zero points (one, or one per column), `K` a multiple of 4. `None`
/// otherwise (the exact f32 chunks then).
pub(crate) fn int8_product(
    cx: &mut NodeCx,
    a: Value,
    azp: Option<Value>,
    b: Value,
    bzp: Option<Value>,
) -> Result<Option<Value>, String> {
    let (at, bt) = (cx.ty(a), cx.ty(b));
    let k = at.shape.0.last().and_then(|d| d.fixed());
    let fits = !cx.imp.onnx_ops_only
        && at.dtype == DType::U8
        && at.shape.rank() >= 2
        && matches!(bt.dtype, DType::U8 | DType::I8)
        && bt.shape.rank() == 2
        && cx.imp.known.contains_key(&b)
        && k.is_some_and(|k| k > 0 && k % 4 == 0)
        && bt.shape.0[1].fixed().is_some_and(|n| n > 0);
    // (A weight of another rank than 2 has no column count: `fits` is false then.)
    let zps = match bt.shape.0.get(1).and_then(|d| d.fixed()) {
        Some(n) if fits => int8_zero_points(cx, azp, bzp, bt.dtype, n),
        _ => None,
    };
    let Some((azp, bzp)) = zps else { return Ok(None) };
    Ok(Some(cx.add1("int8", dlc_ir::ops::IntMatMul {}, &[a, b, azp, bzp])?))
}

/// The zero points of an `int_matmul` of weights of type `bt` and `columns` columns, when
/// they fit it (the left operand's one u8, the weights' constants of their type, one or
/// one per column), absent ones as constant zeros.
fn int8_zero_points(
    cx: &mut NodeCx,
    azp: Option<Value>,
    bzp: Option<Value>,
    bt: DType,
    columns: u64,
) -> Option<(Value, Value)> {
    let a_ok = azp.is_none_or(|z| cx.ty(z).dtype == DType::U8 && cx.ty(z).shape.numel() == Some(1));
    let b_ok = bzp.is_none_or(|z| {
        let zt = cx.ty(z);
        cx.imp.known.contains_key(&z)
            && zt.dtype == bt
            && (zt.shape.numel() == Some(1) || zt.shape == dlc_ir::Shape::fixed(&[columns]))
    });
    if !(a_ok && b_ok) {
        return None;
    }
    let mut zero = |d: DType| {
        let t = TensorData::new(dlc_ir::TensorType::fixed(d, &[]), vec![0u8].into()).expect("one byte");
        cx.add_const(t)
    };
    Some((azp.unwrap_or_else(|| zero(DType::U8)), bzp.unwrap_or_else(|| zero(bt))))
}

/// `(a - a_zp) @ (b - b_zp)` exactly, as f64.
pub(crate) fn integer_matmul(
    cx: &mut NodeCx,
    a: Value,
    azp: Option<Value>,
    b: Value,
    bzp: Option<Value>,
) -> Result<Value, String> {
    if let Some(y) = int8_product(cx, a, azp, b, bzp)? {
        return cx.add1("product_f64", Cast::new(DType::F64), &[y]);
    }
    let at = cx.ty(a);
    let k = at.shape.0.last().and_then(|d| d.fixed()).ok_or("needs a known inner dim")?;
    let azp = match azp {
        // A per-row zero point `[M]` applies along A's rows.
        Some(z) if cx.ty(z).shape.rank() == 1 && at.shape.rank() >= 2 => {
            Some(cx.add1("a_zero_point_rows", Reshape { shape: vec![-1, 1], allowzero: false }, &[z])?)
        }
        z => z,
    };
    let terms = exact_terms(cx, [(a, azp), (b, bzp)]);
    let (af, bf) = (centered(cx, a, azp, "a")?, centered(cx, b, bzp, "b")?);
    let b_rank = cx.ty(b).shape.rank() as i64;
    let chunks = Chunks { n: k, len: terms, tag: 'k', names: ["a", "b", "product"], empty: "empty inner dim" };
    chunks
        .sum(cx, (af, -1), (bf, b_rank - 2), |cx, a, b, name| cx.add1(name, MatMul { act: Activation::None }, &[a, b]))
}

/// The convolution `op` of `x - x_zp` by `w - w_zp` as i32 by the int8 kernels where they
/// apply (`x` u8 with one zero point or none, `w` constant u8 or i8 with constant zero
/// points, one group, `C * KH * KW` a multiple of 4): the windows as rows (`patches`,
/// padding with the zero point), their product with the weights as `[C * KH * KW, M]`
/// (`int_matmul`), and the pixels-by-channels result moved to NCHW (one transpose).
/// `None` otherwise.
fn int8_conv(
    cx: &mut NodeCx,
    op: &Conv,
    x: Value,
    xzp: Option<Value>,
    w: Value,
    wzp: Option<Value>,
) -> Result<Option<Value>, String> {
    let (xt, wt) = (cx.ty(x), cx.ty(w));
    let Some(wd) = wt.shape.as_fixed().filter(|d| d.len() == 4) else { return Ok(None) };
    let Some(wdata) = cx.imp.known.get(&w).cloned() else { return Ok(None) };
    let (m, k) = (wd[0], wd[1] * wd[2] * wd[3]);
    let fits = !cx.imp.onnx_ops_only
        && xt.dtype == DType::U8
        && xt.shape.rank() == 4
        && xt.shape.0[1].fixed() == Some(wd[1])
        && op.group == 1
        && matches!(wt.dtype, DType::U8 | DType::I8)
        && k > 0
        && m > 0;
    let zps = if fits { int8_zero_points(cx, xzp, wzp, wt.dtype, m) } else { None };
    let Some((pad, wzp)) = zps else { return Ok(None) };
    // Rows of a multiple of 4 bytes (an RGB image's 3 x 3 windows, 27 taps, take 28): the
    // extra bytes hold the zero point, adding nothing.
    let row_pad = (4 - k % 4) % 4;
    let p = dlc_ir::ops::Patches {
        kernel_shape: vec![wd[2] as i64, wd[3] as i64],
        strides: op.strides.clone(),
        pads: op.pads.clone(),
        dilations: op.dilations.clone(),
        auto_pad: op.auto_pad,
        channels_last: false,
        row_pad: row_pad as i64,
    };
    let g = p.window(&cx.name, &xt).map_err(|e| e.to_string())?;
    let p = dlc_ir::ops::Patches { channels_last: true, ..p };
    // The image channels-last (one tiled transpose of the codes), so each tap of a window
    // is a run of C bytes; a 1x1 window at stride 1 without padding is the image itself.
    let nhwc = cx.add1("nhwc", dlc_ir::ops::Transpose { perm: vec![0, 2, 3, 1] }, &[x])?;
    let whole = g.kernel == [1, 1] && g.strides == [1, 1] && g.pad_begin == [0, 0] && g.pad_end == [0, 0];
    let rows = if whole && row_pad == 0 {
        let pixels = &(&xt.shape.0[0].expr() * &g.input[0]) * &g.input[1];
        cx.add1("pixels", dlc_ir::ops::View { dims: format!("{pixels};{}", wd[1]) }, &[nhwc])?
    } else {
        cx.add1("patches", p, &[nhwc, pad])?
    };
    // The weights as [K, M], K in the rows' order (ky, kx, c), then a row of zeros for
    // each padding byte.
    let (wb, (m, k)) = (wdata.bytes(), (m as usize, k as usize));
    let (c, kh, kw) = (wd[1] as usize, wd[2] as usize, wd[3] as usize);
    let bt: Vec<u8> = (0..(k + row_pad as usize) * m)
        .map(|i| {
            let (row, col) = (i / m, i % m);
            let (tap, ch) = (row / c, row % c);
            if row < k {
                wb[((col * c + ch) * kh + tap / kw) * kw + tap % kw]
            } else {
                0
            }
        })
        .collect();
    let rows_b = (k + row_pad as usize) as u64;
    let bt = TensorData::new(dlc_ir::TensorType::fixed(wt.dtype, &[rows_b, m as u64]), bt.into())
        .ok_or("internal: transposed weights")?;
    let bt = cx.add_const(bt);
    let y = cx.add1("int8", dlc_ir::ops::IntMatMul {}, &[rows, bt, pad, wzp])?;
    let n = xt.shape.0[0].expr();
    let [oh, ow] = g.output.clone();
    // NHWC moved to NCHW by one transpose, which the `transpose-sink` pass moves down
    // through the per-element ops after it to cancel with the next layer's to NHWC.
    let view = dlc_ir::ops::View { dims: format!("{n};{oh};{ow};{m}") };
    let y = cx.add1("pixels_by_channels", view, &[y])?;
    Ok(Some(cx.add1("nchw", dlc_ir::ops::Transpose { perm: vec![0, 3, 1, 2] }, &[y])?))
}

/// The convolution of `x - x_zp` by `w - w_zp` exactly, as f64; `bias` (i32) added.
fn integer_conv(
    cx: &mut NodeCx,
    x: Value,
    xzp: Option<Value>,
    w: Value,
    wzp: Option<Value>,
    bias: Option<Value>,
) -> Result<Value, String> {
    let mut y = conv_exact(cx, x, xzp, w, wzp)?;
    if cx.ty(y).dtype == DType::I32 {
        y = cx.add1("conv_f64", Cast::new(DType::F64), &[y])?;
    }
    if let Some(b) = bias {
        let b = cx.add1("bias_channels", Reshape { shape: vec![-1, 1, 1], allowzero: false }, &[b])?;
        let b = cx.add1("bias_f64", Cast::new(DType::F64), &[b])?;
        y = cx.add1("biased", Add {}, &[y, b])?;
    }
    Ok(y)
}

/// The convolution of `x - x_zp` by `w - w_zp` exactly: i32 from the int8 kernels
/// ([`int8_conv`]), else f64 from f32 convolutions over chunks of input channels.
fn conv_exact(cx: &mut NodeCx, x: Value, xzp: Option<Value>, w: Value, wzp: Option<Value>) -> Result<Value, String> {
    let op = Conv {
        kernel_shape: cx.ints("kernel_shape"),
        strides: cx.ints("strides"),
        pads: cx.ints("pads"),
        dilations: cx.ints("dilations"),
        group: cx.int("group", 1),
        auto_pad: super::nn::auto_pad(cx)?,
        act: Activation::None,
    };
    if let Some(y) = int8_conv(cx, &op, x, xzp, w, wzp)? {
        return Ok(y);
    }
    let wd = cx.ty(w).shape.as_fixed().ok_or("needs known weight dims")?;
    if wd.len() != 4 {
        return Err(format!("only 2-D convolutions, got weights of rank {}", wd.len()));
    }
    let wzp = match wzp {
        Some(z) if cx.ty(z).shape.rank() == 1 => {
            Some(cx.add1("w_zero_point_channels", Reshape { shape: vec![-1, 1, 1, 1], allowzero: false }, &[z])?)
        }
        z => z,
    };
    let terms = exact_terms(cx, [(x, xzp), (w, wzp)]);
    let (xf, wf) = (centered(cx, x, xzp, "x")?, centered(cx, w, wzp, "w")?);
    // Chunks of input channels (per group) with at most `terms` terms each.
    let (cg, taps) = (wd[1], wd[2] * wd[3]);
    let per = (terms / taps).max(1);
    if taps > terms || (op.group != 1 && cg > per) {
        return Err(format!(
            "an exact integer convolution needs at most {terms} terms per output (grouped: per group)"
        ));
    }
    let chunks = Chunks { n: cg, len: per, tag: 'c', names: ["x", "w", "conv"], empty: "no input channels" };
    chunks.sum(cx, (xf, 1), (wf, 1), |cx, x, w, name| cx.add1(name, op.clone(), &[x, w]))
}

fn matmul_integer(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (azp, bzp) = (cx.opt_input(2)?, cx.opt_input(3)?);
    if let Some(y) = int8_product(cx, a, azp, b, bzp)? {
        return Ok(vec![y]);
    }
    let y = integer_matmul(cx, a, azp, b, bzp)?;
    cx.add("", Cast::new(DType::I32), &[y])
}

fn conv_integer(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, w) = (cx.input(0)?, cx.input(1)?);
    let (xzp, wzp) = (cx.opt_input(2)?, cx.opt_input(3)?);
    let y = conv_exact(cx, x, xzp, w, wzp)?;
    if cx.ty(y).dtype == DType::I32 {
        return Ok(vec![y]);
    }
    cx.add("", Cast::new(DType::I32), &[y])
}

/// `saturate(round_half_even(acc * (s1 * s2 / sy)) + y_zp)` in f64, then the output type.
fn requantize(
    cx: &mut NodeCx,
    acc: Value,
    s1: Value,
    s2: Value,
    sy: Value,
    yzp: Option<Value>,
    out: DType,
) -> Result<Vec<Value>, String> {
    let Some((lo, hi)) = quantized_type(out)? else {
        return Err(format!("output type {out} is not an integer type"));
    };
    let f = cx.add1("scale_product", Mul {}, &[s1, s2])?;
    let f = cx.add1("scale_factor", Div {}, &[f, sy])?;
    let f = cx.add1("scale_factor_f64", Cast::new(DType::F64), &[f])?;
    let mut y = cx.add1("scaled", Mul {}, &[acc, f])?;
    if let Some(z) = yzp {
        let z = cx.add1("y_zero_point_f64", Cast::new(DType::F64), &[z])?;
        y = cx.add1("shifted", Add {}, &[y, z])?;
    }
    let y = cx.add1("rounded", Round {}, &[y])?;
    let f64c = |v: f64| TensorData::new(dlc_ir::TensorType::fixed(DType::F64, &[]), v.to_le_bytes().to_vec().into());
    let lo = cx.add_const(f64c(lo as f64).expect("scalar"));
    let hi = cx.add_const(f64c(hi as f64).expect("scalar"));
    let y = cx.add1("saturate_lo", Max {}, &[y, lo])?;
    let y = cx.add1("saturate_hi", Min {}, &[y, hi])?;
    cx.add("", Cast::new(out), &[y])
}

fn qlinear_matmul(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (a, sa, azp) = (cx.input(0)?, cx.input(1)?, cx.opt_input(2)?);
    let (b, sb, bzp) = (cx.input(3)?, cx.input(4)?, cx.opt_input(5)?);
    let (sy, yzp) = (cx.input(6)?, cx.opt_input(7)?);
    let out = yzp.map_or(cx.ty(a).dtype, |z| cx.ty(z).dtype);
    let acc = integer_matmul(cx, a, azp, b, bzp)?;
    requantize(cx, acc, sa, sb, sy, yzp, out)
}

fn qlinear_conv(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, sx, xzp) = (cx.input(0)?, cx.input(1)?, cx.opt_input(2)?);
    let (w, sw, wzp) = (cx.input(3)?, cx.input(4)?, cx.opt_input(5)?);
    let (sy, yzp) = (cx.input(6)?, cx.opt_input(7)?);
    let bias = cx.opt_input(8)?;
    let out = yzp.map_or(cx.ty(x).dtype, |z| cx.ty(z).dtype);
    let acc = integer_conv(cx, x, xzp, w, wzp, bias)?;
    // A per-output-channel weight scale applies along the channel axis.
    let sw = if cx.ty(sw).shape.rank() == 1 && cx.ty(sw).shape.numel() != Some(1) {
        cx.add1("w_scale_channels", Reshape { shape: vec![-1, 1, 1], allowzero: false }, &[sw])?
    } else {
        sw
    };
    requantize(cx, acc, sx, sw, sy, yzp, out)
}
