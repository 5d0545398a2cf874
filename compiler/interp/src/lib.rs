//! dlc-interp: the reference interpreter, in plain Rust, over [`dlc_ir::TensorData`].
//!
//! Values are held as f64 (floating-point dtypes) or i64 (integers and bool) so results
//! are exact for shape arithmetic and at least as precise as f32 kernels. Today it
//! covers the ops that compute shapes and small constants (elementwise arithmetic,
//! comparisons, Where, Cast, Gather, GatherElements, Concat, Slice, Pad, Trilu, reshapes,
//! Transpose, integer
//! reductions, Expand); the frontend uses it to fold nodes whose operands are all
//! constants. Ops it does not cover return [`EvalError::Unsupported`] and are left to
//! the generated code.
//!
//! Invariant: never panics; depends only on dlc-ir.
#![warn(missing_docs)]

use dlc_ir::minifloat::{e8m0_decode, e8m0_encode};
use dlc_ir::ops::resolve_axes;
use dlc_ir::{DType, Graph, Op, TensorData, TensorType, Value};
use std::collections::HashMap;

pub mod nn;
pub mod resize;

/// Why an op could not be evaluated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    /// The interpreter does not implement this op (or this dtype) yet.
    #[error("the interpreter does not evaluate {0} yet")]
    Unsupported(String),
    /// The operands are invalid for the op.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Data {
    F(Vec<f64>),
    I(Vec<i64>),
}

/// A tensor in interpreter form.
#[derive(Debug, Clone, PartialEq)]
struct T {
    dtype: DType,
    dims: Vec<u64>,
    data: Data,
}

fn unsupported(what: impl Into<String>) -> EvalError {
    EvalError::Unsupported(what.into())
}

impl T {
    fn from_tensor(t: &TensorData) -> Result<T, EvalError> {
        let dims = t.ty().shape.as_fixed().ok_or_else(|| unsupported("symbolic shapes"))?;
        let b = t.bytes();
        let data = match t.ty().dtype {
            DType::F32 => {
                Data::F(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect())
            }
            DType::F64 => {
                Data::F(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
            }
            DType::U32 => {
                Data::I(b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect())
            }
            DType::U16 => Data::I(b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as i64).collect()),
            DType::U64 => {
                Data::I(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as i64).collect())
            }
            DType::F16 => Data::F(b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect()),
            DType::BF16 => Data::F(
                b.chunks_exact(2)
                    .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
                    .collect(),
            ),
            DType::F8E8M0 => Data::F(b.iter().map(|&c| e8m0_decode(c) as f64).collect()),
            d if d.narrow_int_bits().is_some() => {
                Data::I(b.iter().map(|&v| if d.is_signed_int() { v as i8 as i64 } else { v as i64 }).collect())
            }
            d if d.minifloat().is_some() => {
                let f = d.minifloat().expect("checked");
                Data::F(b.iter().map(|&c| f.decode(c) as f64).collect())
            }
            _ => Data::I(t.to_i64().ok_or_else(|| unsupported(format!("dtype {}", t.ty().dtype)))?),
        };
        Ok(T { dtype: t.ty().dtype, dims, data })
    }

    fn to_tensor(&self) -> Result<TensorData, EvalError> {
        let bytes: Vec<u8> = match (&self.data, self.dtype) {
            (Data::F(v), DType::F32) => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
            (Data::F(v), DType::F64) => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            // f16 as dlc computes it: rounded to f32, then to f16 (nearest even).
            (Data::F(v), DType::F16) => v.iter().flat_map(|&x| half::f16::from_f32(x as f32).to_le_bytes()).collect(),
            // bf16: the top half of the f32, rounded to nearest even; NaN stays a quiet NaN.
            (Data::F(v), DType::BF16) => v
                .iter()
                .flat_map(|&x| {
                    let f = x as f32;
                    let bits = f.to_bits();
                    let hi = if f.is_nan() { 0x7fc0 } else { (bits.wrapping_add(0x7fff + ((bits >> 16) & 1))) >> 16 };
                    (hi as u16).to_le_bytes()
                })
                .collect(),
            (Data::I(v), DType::I64 | DType::U64) => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            (Data::I(v), DType::I32) => v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            (Data::I(v), DType::U32) => v.iter().flat_map(|&x| (x as u32).to_le_bytes()).collect(),
            (Data::I(v), DType::I16 | DType::U16) => v.iter().flat_map(|&x| (x as i16).to_le_bytes()).collect(),
            (Data::I(v), DType::I8 | DType::U8) => v.iter().map(|&x| x as u8).collect(),
            (Data::I(v), DType::Bool) => v.iter().map(|&x| (x != 0) as u8).collect(),
            // 4- and 2-bit integers wrap, held sign- or zero-extended in a byte.
            (Data::I(v), d) if d.narrow_int_bits().is_some() => {
                let bits = d.narrow_int_bits().expect("checked");
                let wrap = |x: i64| {
                    let low = (x as u8) << (8 - bits);
                    if d.is_signed_int() {
                        ((low as i8) >> (8 - bits)) as u8
                    } else {
                        low >> (8 - bits)
                    }
                };
                v.iter().map(|&x| wrap(x)).collect()
            }
            // 8- and 4-bit floats: saturating (Cast without saturation is not folded).
            (Data::F(v), DType::F8E8M0) => v.iter().map(|&x| e8m0_encode(x as f32, true)).collect(),
            (Data::F(v), d) if d.minifloat().is_some() => {
                let f = d.minifloat().expect("checked");
                v.iter().map(|&x| f.encode(x as f32, true)).collect()
            }
            _ => return Err(unsupported(format!("producing dtype {}", self.dtype))),
        };
        TensorData::new(TensorType::fixed(self.dtype, &self.dims), bytes.into())
            .ok_or_else(|| EvalError::Invalid("result size mismatch".into()))
    }

    fn len(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }

    fn f(&self, i: usize) -> f64 {
        match &self.data {
            Data::F(v) => v[i],
            Data::I(v) => v[i] as f64,
        }
    }

    fn i(&self, i: usize) -> i64 {
        match &self.data {
            Data::F(v) => v[i] as i64,
            Data::I(v) => v[i],
        }
    }

    /// The elements at `idx`, in order, as a new tensor of `dims`.
    fn pick(&self, idx: &[usize], dims: Vec<u64>) -> T {
        let data = match &self.data {
            Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
        };
        T { dtype: self.dtype, dims, data }
    }
}

fn strides(dims: &[u64]) -> Vec<u64> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// For each element of a tensor of `out` dims, the flat index into a broadcast operand.
fn broadcast_index(dims: &[u64], out: &[u64]) -> Vec<usize> {
    let n: u64 = out.iter().product();
    let os = strides(out);
    let is = strides(dims);
    let off = out.len() - dims.len();
    (0..n)
        .map(|flat| {
            let mut src = 0;
            for (d, &extent) in dims.iter().enumerate() {
                let coord = (flat / os[d + off]) % out[d + off];
                if extent != 1 {
                    src += coord * is[d];
                }
            }
            src as usize
        })
        .collect()
}

const LIMIT: u64 = 1 << 24;

/// A Bind on values: its rule ([`dlc_ir::bind::eval`]) on the operand's dims and the
/// shape operand's values gives the result's dims; the elements are the operand's.
fn bind(b: &dlc_ir::ops::Bind, ins: &[T], raw: &[TensorData]) -> Result<Vec<TensorData>, EvalError> {
    let rule = b.bind_rule().ok_or_else(|| EvalError::Invalid(format!("unknown bind rule '{}'", b.rule)))?;
    let (x, t) = match (ins.first(), raw.get(1)) {
        (Some(x), Some(t)) => (x, t),
        _ => return Err(EvalError::Invalid("bind takes two operands".into())),
    };
    let vals = t.to_i64().ok_or_else(|| EvalError::Invalid("bind's shape operand must be i64".into()))?;
    let d: Vec<i64> = x.dims.iter().map(|&v| v as i64).collect();
    let dims = dlc_ir::bind::eval(rule, &d, &vals)
        .map_err(|r| EvalError::Invalid(format!("bind ({}): {}", b.rule, r.message())))?;
    // Rules that only check and bind (slice, split, count, extent, values) give the
    // operand as it is; the others give its elements at the dims they compute.
    if !rule.reshapes() {
        return Ok(vec![raw[0].clone()]);
    }
    let ty = TensorType::fixed(raw[0].ty().dtype, &dims.iter().map(|&v| v as u64).collect::<Vec<_>>());
    let t = TensorData::new(ty, raw[0].bytes().to_vec().into())
        .ok_or_else(|| EvalError::Invalid("bind result size mismatch".into()))?;
    Ok(vec![t])
}

/// ResizeTaps: its two tables from the operand's extent (its data is not read).
fn resize_taps(r: &dlc_ir::ops::ResizeTaps, ins: &[T], out_types: &[TensorType]) -> Result<Vec<TensorData>, EvalError> {
    let x = ins.first().ok_or_else(|| EvalError::Invalid("resize_taps takes one operand".into()))?;
    let a = dlc_ir::ops::normalize_axis(r.axis, x.dims.len())
        .ok_or_else(|| EvalError::Invalid("resize axis out of range".into()))?;
    let out = out_types.first().and_then(|t| t.shape.0.first()).and_then(|d| d.fixed());
    let out = out.ok_or_else(|| unsupported("symbolic shapes"))?;
    if out > LIMIT {
        return Err(unsupported("results this large"));
    }
    // Run-time parameters [scale, roi_start, roi_end] (a scale of 0: from the sizes).
    let mut r = r.clone();
    if let Some(p) = ins.get(1) {
        let v = match &p.data {
            Data::F(v) if v.len() == 3 => v.clone(),
            _ => return Err(EvalError::Invalid("resize_taps parameters must be 3 floats".into())),
        };
        (r.scale, r.roi_start, r.roi_end) = (v[0] as f32, v[1] as f32, v[2] as f32);
        if !(r.scale >= 0.0 && r.scale.is_finite()) {
            return Err(EvalError::Invalid(format!("scale {} must be finite and not negative", r.scale)));
        }
    }
    let r = &r;
    // The width the node's type declares (a bound when the scale is a run-time value).
    let k = out_types.first().and_then(|t| t.shape.0.get(1)).and_then(|d| d.fixed());
    let k = k.ok_or_else(|| EvalError::Invalid("resize_taps needs a known tap count".into()))?;
    let (idx, w) = resize::taps_of_width(r, x.dims[a], out, k as usize).map_err(EvalError::Invalid)?;
    let wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let i = TensorData::from_i64(&[out, k], &idx).ok_or_else(|| EvalError::Invalid("taps size".into()))?;
    let w = TensorData::from_f32(&[out, k + 1], &wf).ok_or_else(|| EvalError::Invalid("weights size".into()))?;
    Ok(vec![i, w])
}

/// TopK: each row along the axis sorted best first (a stable sort: ties keep the lower
/// index first), its first `k` values and their indices. Unsigned 64-bit integers
/// compare as unsigned; NaN ranks above every number (ONNX Runtime's order).
fn top_k(op: &dlc_ir::ops::TopK, ins: &[T], out_types: &[TensorType]) -> Result<Vec<TensorData>, EvalError> {
    let x = ins.first().ok_or_else(|| EvalError::Invalid("topk takes one operand".into()))?;
    let a = dlc_ir::ops::normalize_axis(op.axis, x.dims.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
    let k = out_types.first().and_then(|t| t.shape.0.get(a)).and_then(|d| d.fixed());
    let k = k.ok_or_else(|| unsupported("a k computed at run time"))? as usize;
    let n = x.dims[a] as usize;
    if k > n {
        return Err(EvalError::Invalid(format!("k = {k} is more than the axis's extent {n}")));
    }
    let outer: usize = x.dims[..a].iter().product::<u64>() as usize;
    let inner: usize = x.dims[a + 1..].iter().product::<u64>() as usize;
    let unsigned = x.dtype == DType::U64;
    let rank = |i: usize| -> (f64, i128) {
        match &x.data {
            Data::F(v) => (if v[i].is_nan() { f64::INFINITY } else { v[i] }, v[i].is_nan() as i128),
            Data::I(v) => (0.0, if unsigned { v[i] as u64 as i128 } else { v[i] as i128 }),
        }
    };
    let mut picks = Vec::with_capacity(outer * k * inner);
    let mut idx = Vec::with_capacity(outer * k * inner);
    for o in 0..outer {
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); inner];
        for (i, row) in rows.iter_mut().enumerate() {
            let mut order: Vec<usize> = (0..n).collect();
            let at = |t: usize| (o * n + t) * inner + i;
            order.sort_by(|&p, &q| {
                let (a, b) = (rank(at(p)), rank(at(q)));
                let c = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1));
                if op.largest {
                    c.reverse()
                } else {
                    c
                }
            });
            *row = order[..k].to_vec();
        }
        for j in 0..k {
            for (i, row) in rows.iter().enumerate() {
                picks.push((o * n + row[j]) * inner + i);
                idx.push(row[j] as i64);
            }
        }
    }
    let mut dims = x.dims.clone();
    dims[a] = k as u64;
    let values = x.pick(&picks, dims.clone()).to_tensor()?;
    let indices = TensorData::from_i64(&dims, &idx).ok_or_else(|| EvalError::Invalid("topk indices".into()))?;
    Ok(vec![values, indices])
}

/// Whether box `p` suppresses box `q` (ONNX NonMaxSuppression's rule, in f32): their
/// intersection over union is above `thr`. `b` holds 4 values per box: corners
/// `[y1, x1, y2, x2]` in any order, or `[xc, yc, w, h]` with `center`.
pub fn nms_suppresses(b: &[f32], p: usize, q: usize, center: bool, thr: f32) -> bool {
    let (b1, b2) = (&b[4 * p..4 * p + 4], &b[4 * q..4 * q + 4]);
    let span = |v: &[f32], lo: usize| -> (f32, f32) {
        if center {
            let half = v[lo + 2] / 2.0;
            (v[lo] - half, v[lo] + half)
        } else {
            let (a, c) = (v[lo], v[lo + 2]);
            if a >= c {
                (c, a)
            } else {
                (a, c)
            }
        }
    };
    // Corners: x from elements 1 and 3, y from 0 and 2; centres: x first.
    let (xi, yi) = if center { (0, 1) } else { (1, 0) };
    let ((x1a, x1b), (x2a, x2b)) = (span(b1, xi), span(b2, xi));
    let ((y1a, y1b), (y2a, y2b)) = (span(b1, yi), span(b2, yi));
    let (ixa, ixb) = (x1a.max(x2a), x1b.min(x2b));
    let (iya, iyb) = (y1a.max(y2a), y1b.min(y2b));
    if ixb <= ixa || iyb <= iya {
        return false;
    }
    let inter = (ixb - ixa) * (iyb - iya);
    let (a1, a2) = ((x1b - x1a) * (y1b - y1a), (x2b - x2a) * (y2b - y2a));
    let union = a1 + a2 - inter;
    if inter <= 0.0 || a1 <= 0.0 || a2 <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > thr
}

/// NonMaxSuppression's selection ([`dlc_ir::ops::Nms`]): per batch and class, boxes by
/// score (highest first, ties by lower index) above the score threshold, each kept
/// unless a kept box of its class suppresses it, at most `max` per class.
fn nms(center: bool, raw: &[TensorData]) -> Result<Vec<TensorData>, EvalError> {
    let bad = || EvalError::Invalid("nms operands".into());
    let [boxes, scores, max, iou, sthr] = raw else { return Err(bad()) };
    let (bd, sd) = (boxes.ty().shape.as_fixed().ok_or_else(bad)?, scores.ty().shape.as_fixed().ok_or_else(bad)?);
    let (nb, nc, n) = (sd[0] as usize, sd[1] as usize, sd[2] as usize);
    if bd.len() != 3 || nb * nc * n > LIMIT as usize {
        return Err(unsupported("this many boxes"));
    }
    let b = boxes.to_f32().ok_or_else(bad)?;
    let s = scores.to_f32().ok_or_else(bad)?;
    let max = max.to_i64().and_then(|v| v.first().copied()).ok_or_else(bad)?.max(0) as usize;
    let iou = iou.to_f32().and_then(|v| v.first().copied()).ok_or_else(bad)?;
    let sthr = sthr.to_f32().and_then(|v| v.first().copied()).ok_or_else(bad)?;
    let mut rows = Vec::new();
    for bi in 0..nb {
        let bb = &b[bi * n * 4..(bi + 1) * n * 4];
        for ci in 0..nc {
            let sc = &s[(bi * nc + ci) * n..(bi * nc + ci + 1) * n];
            let mut order: Vec<usize> = (0..n).filter(|&i| sc[i] > sthr).collect();
            order.sort_by(|&p, &q| sc[q].partial_cmp(&sc[p]).unwrap_or(std::cmp::Ordering::Equal).then(p.cmp(&q)));
            let mut kept: Vec<usize> = Vec::new();
            for &i in &order {
                if kept.len() >= max {
                    break;
                }
                if !kept.iter().any(|&j| nms_suppresses(bb, i, j, center, iou)) {
                    kept.push(i);
                    rows.extend([bi as i64, ci as i64, i as i64]);
                }
            }
        }
    }
    let count = rows.len() / 3;
    rows.resize(nb * nc * n * 3, 0);
    let sel = TensorData::from_i64(&[(nb * nc * n) as u64, 3], &rows).ok_or_else(bad)?;
    let c = TensorData::from_i64(&[1], &[count as i64]).ok_or_else(bad)?;
    Ok(vec![sel, c])
}

/// Unique ([`dlc_ir::ops::Unique`]): slices along the axis compared element by element
/// (row-major over the other dims), distinct ones in first-occurrence order or sorted
/// ascending (lexicographically; NaN compares equal to nothing, as numpy's sort puts
/// it last).
fn unique(op: &dlc_ir::ops::Unique, ins: &[T]) -> Result<Vec<TensorData>, EvalError> {
    let x = ins.first().ok_or_else(|| EvalError::Invalid("unique takes one operand".into()))?;
    let a = dlc_ir::ops::normalize_axis(op.axis, x.dims.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
    let n = x.dims[a] as usize;
    let outer: usize = x.dims[..a].iter().product::<u64>() as usize;
    let inner: usize = x.dims[a + 1..].iter().product::<u64>() as usize;
    let at = |i: usize, e: usize| (e / inner * n + i) * inner + e % inner;
    let len = outer * inner;
    let cmp = |p: usize, q: usize| -> std::cmp::Ordering {
        for e in 0..len {
            let o = match &x.data {
                Data::F(v) => v[at(p, e)].total_cmp(&v[at(q, e)]),
                Data::I(v) if x.dtype == DType::U64 => (v[at(p, e)] as u64).cmp(&(v[at(q, e)] as u64)),
                Data::I(v) => v[at(p, e)].cmp(&v[at(q, e)]),
            };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    };
    let mut firsts: Vec<usize> = Vec::new();
    for i in 0..n {
        if !firsts.iter().any(|&f| cmp(f, i).is_eq()) {
            firsts.push(i);
        }
    }
    if op.sorted {
        firsts.sort_by(|&p, &q| cmp(p, q));
    }
    let c = firsts.len();
    let inverse: Vec<i64> =
        (0..n).map(|i| firsts.iter().position(|&f| cmp(f, i).is_eq()).unwrap_or(0) as i64).collect();
    let mut counts = vec![0i64; n];
    for &p in &inverse {
        counts[p as usize] += 1;
    }
    let mut idx: Vec<i64> = firsts.iter().map(|&f| f as i64).collect();
    idx.resize(n, 0);
    let picks: Vec<usize> = (0..outer)
        .flat_map(|o| (0..n).flat_map(move |j| (0..inner).map(move |r| (o, j, r))))
        .map(|(o, j, r)| (o * n + firsts.get(j).copied().unwrap_or(0)) * inner + r)
        .collect();
    let y = x.pick(&picks, x.dims.clone()).to_tensor()?;
    let v = |d: &[i64]| TensorData::from_i64(&[n as u64], d).ok_or_else(|| EvalError::Invalid("unique".into()));
    Ok(vec![y, v(&idx)?, v(&inverse)?, v(&counts)?, TensorData::from_i64(&[1], &[c as i64]).expect("one")])
}

/// String equality ([`dlc_ir::ops::StringEqual`]): operands are two string tensors, each
/// an element table (`i64[..., 2]`, start and end byte of each element) and its bytes.
/// Ranges outside the bytes are an error (the frontend and runtime never build them).
fn string_equal(ins: &[T], out: &[u64]) -> Result<Vec<TensorData>, EvalError> {
    let bad = |m: &str| EvalError::Invalid(format!("string_equal: {m}"));
    let [at, ab, bt, bb] = ins else { return Err(bad("takes four operands")) };
    let (Data::I(a), Data::I(ab), Data::I(b), Data::I(bb)) = (&at.data, &ab.data, &bt.data, &bb.data) else {
        return Err(bad("tables and bytes must be integers"));
    };
    let elem = |bytes: &[i64], table: &[i64], e: usize| -> Result<Vec<i64>, EvalError> {
        let (s, t) = (table[2 * e], table[2 * e + 1]);
        if s < 0 || t < s || t as usize > bytes.len() {
            return Err(bad(&format!("element range {s}..{t} outside {} bytes", bytes.len())));
        }
        Ok(bytes[s as usize..t as usize].to_vec())
    };
    let ia = broadcast_index(&at.dims[..at.dims.len() - 1], out);
    let ib = broadcast_index(&bt.dims[..bt.dims.len() - 1], out);
    let eq: Vec<u8> = ia
        .iter()
        .zip(&ib)
        .map(|(&i, &j)| Ok(u8::from(elem(ab, a, i)? == elem(bb, b, j)?)))
        .collect::<Result<_, EvalError>>()?;
    let ty = TensorType::fixed(DType::Bool, out);
    Ok(vec![TensorData::new(ty, std::sync::Arc::from(eq)).ok_or_else(|| bad("result"))?])
}

/// RegexFullMatch ([`dlc_ir::ops::StringRegexMatch`]) by the `regex` crate (an
/// implementation independent of the kernel's DFA): `^(?:pattern)$` on each element's
/// bytes, the pattern given RE2's meaning by [`dlc_ir::ops::re2_pattern`].
fn string_regex_match(ins: &[T], pattern: &str, out: &[u64]) -> Result<Vec<TensorData>, EvalError> {
    let bad = |m: &str| EvalError::Invalid(format!("string_regex_match: {m}"));
    let [t, b] = ins else { return Err(bad("takes two operands")) };
    let (Data::I(table), Data::I(bytes)) = (&t.data, &b.data) else {
        return Err(bad("the table and bytes must be integers"));
    };
    let re = regex::bytes::Regex::new(&format!("^(?:{})$", dlc_ir::ops::re2_pattern(pattern)))
        .map_err(|e| bad(&e.to_string()))?;
    let bytes: Vec<u8> = bytes.iter().map(|&v| v as u8).collect();
    let n = table.len() / 2;
    let mut hit = Vec::with_capacity(n);
    for e in 0..n {
        let (s, t) = (table[2 * e], table[2 * e + 1]);
        if s < 0 || t < s || t as usize > bytes.len() {
            return Err(bad(&format!("element range {s}..{t} outside {} bytes", bytes.len())));
        }
        hit.push(u8::from(re.is_match(&bytes[s as usize..t as usize])));
    }
    let ty = TensorType::fixed(DType::Bool, out);
    Ok(vec![TensorData::new(ty, std::sync::Arc::from(hit)).ok_or_else(|| bad("result"))?])
}

/// String concatenation ([`dlc_ir::ops::StringConcat`]): each result element's bytes at
/// a running position, cut at the bytes result's end; unused bytes 0.
fn string_concat(ins: &[T], out_types: &[TensorType]) -> Result<Vec<TensorData>, EvalError> {
    let bad = |m: &str| EvalError::Invalid(format!("string_concat: {m}"));
    let [at, ab, bt, bb] = ins else { return Err(bad("takes four operands")) };
    let (Data::I(a), Data::I(ab), Data::I(b), Data::I(bb)) = (&at.data, &ab.data, &bt.data, &bb.data) else {
        return Err(bad("tables and bytes must be integers"));
    };
    let dims = |t: &TensorType| t.shape.as_fixed().ok_or_else(|| unsupported("symbolic shapes"));
    let (tdims, cap) = (dims(&out_types[0])?, dims(&out_types[1])?[0] as usize);
    let out = &tdims[..tdims.len() - 1];
    let elem = |bytes: &[i64], table: &[i64], e: usize| -> Vec<u8> {
        let n = bytes.len() as i64;
        let s = table[2 * e].clamp(0, n);
        let t = table[2 * e + 1].clamp(s, n);
        bytes[s as usize..t as usize].iter().map(|&v| v as u8).collect()
    };
    let ia = broadcast_index(&at.dims[..at.dims.len() - 1], out);
    let ib = broadcast_index(&bt.dims[..bt.dims.len() - 1], out);
    let (mut table, mut data) = (Vec::with_capacity(2 * ia.len()), Vec::with_capacity(cap));
    for (&i, &j) in ia.iter().zip(&ib) {
        table.push(data.len() as i64);
        for part in [elem(ab, a, i), elem(bb, b, j)] {
            let room = cap - data.len();
            data.extend_from_slice(&part[..part.len().min(room)]);
        }
        table.push(data.len() as i64);
    }
    data.resize(cap, 0);
    let t = TensorData::from_i64(&tdims, &table).ok_or_else(|| bad("table"))?;
    let d = TensorData::new(out_types[1].clone(), std::sync::Arc::from(data)).ok_or_else(|| bad("bytes"))?;
    Ok(vec![t, d])
}

/// StringSplitCount (`table` None) or StringSplit: each element's pieces as
/// [`dlc_ir::ops::split_ranges`] makes them (ranges clamped to the bytes first).
fn string_split(
    ins: &[T],
    delimiter: &str,
    maxsplit: i64,
    table: Option<()>,
    out_types: &[TensorType],
) -> Result<Vec<TensorData>, EvalError> {
    let bad = |m: &str| EvalError::Invalid(format!("string_split: {m}"));
    let [t, b] = ins else { return Err(bad("takes two operands")) };
    let (Data::I(t), Data::I(b)) = (&t.data, &b.data) else { return Err(bad("integers")) };
    let bytes: Vec<u8> = b.iter().map(|&v| v as u8).collect();
    let n = bytes.len() as i64;
    let dims = match table {
        Some(()) => out_types[0].shape.as_fixed().ok_or_else(|| unsupported("symbolic shapes"))?,
        None => ins[0].dims[..ins[0].dims.len() - 1].to_vec(),
    };
    let k = if table.is_some() { dims[dims.len() - 2] as usize } else { 0 };
    let mut out = Vec::new();
    for p in t.chunks_exact(2) {
        let s = p[0].clamp(0, n);
        let e = p[1].clamp(s, n);
        let pieces = dlc_ir::ops::split_ranges(&bytes[s as usize..e as usize], delimiter.as_bytes(), maxsplit);
        if table.is_none() {
            out.push(pieces.len() as i64);
            continue;
        }
        for j in 0..k {
            let (a, z) = pieces.get(j).map_or((0, 0), |&(a, z)| (s + a as i64, s + z as i64));
            out.extend([a, z]);
        }
    }
    Ok(vec![TensorData::from_i64(&dims, &out).ok_or_else(|| bad("result"))?])
}

/// Evaluates `op` on constant operands. Results are limited to 16 Mi elements.
pub fn eval(op: &Op, inputs: &[TensorData], out_types: &[TensorType]) -> Result<Vec<TensorData>, EvalError> {
    let ins: Vec<T> = inputs.iter().map(T::from_tensor).collect::<Result<_, _>>()?;
    if let Op::Bind(b) = op {
        return bind(b, &ins, inputs);
    }
    if let Op::ResizeTaps(r) = op {
        return resize_taps(r, &ins, out_types);
    }
    if let Op::TopK(k) = op {
        return top_k(k, &ins, out_types);
    }
    if let Op::Nms(o) = op {
        return nms(o.center_point_box, inputs);
    }
    if let Op::Unique(u) = op {
        return unique(u, &ins);
    }
    if let Op::Loop(l) = op {
        return run_loop(l, inputs, out_types);
    }
    if let Op::If(i) = op {
        // The branch the condition picks, on the other operands.
        let taken = inputs.first().and_then(|c| c.bytes().first().copied()).unwrap_or(0) != 0;
        return run_graph(if taken { &i.then.0 } else { &i.els.0 }, &inputs[1..]);
    }
    if let (Op::BitCast(_), [x], [t]) = (op, inputs, out_types) {
        // The same bytes, read as the other type.
        let d = TensorData::new(t.clone(), std::sync::Arc::from(x.bytes()));
        return Ok(vec![d.ok_or_else(|| unsupported("symbolic shapes"))?]);
    }
    let out_dims: Vec<Vec<u64>> = out_types
        .iter()
        .map(|t| t.shape.as_fixed().ok_or_else(|| unsupported("symbolic shapes")))
        .collect::<Result<_, _>>()?;
    if out_dims.iter().any(|d| d.iter().product::<u64>() > LIMIT) {
        return Err(unsupported("results this large"));
    }
    let out = &out_dims[0];
    let res: T = match op {
        Op::Identity(_) | Op::Reshape(_) | Op::Flatten(_) | Op::View(_) => T { dims: out.clone(), ..ins[0].clone() },
        Op::BitCast(_) => return Err(EvalError::Invalid("bitcast takes one operand".into())),
        Op::TopK(k) => return top_k(k, &ins, out_types),
        Op::Nms(o) => return nms(o.center_point_box, inputs),
        Op::Unique(u) => return unique(u, &ins),
        Op::StringEqual(_) => return string_equal(&ins, out),
        Op::StringRegexMatch(r) => return string_regex_match(&ins, &r.pattern, out),
        Op::StringConcat(_) => return string_concat(&ins, out_types),
        Op::Col2Im(c) => {
            let x = inputs[0].to_f32().ok_or_else(|| EvalError::Invalid("col2im: f32 input".into()))?;
            let xd = inputs[0].ty().shape.as_fixed().ok_or_else(|| unsupported("symbolic shapes"))?;
            let (image, block) = c.extents().ok_or_else(|| EvalError::Invalid("col2im: extents".into()))?;
            let known = |v: &[dlc_ir::Expr]| v.iter().map(|e| e.as_const()).collect::<Option<Vec<i64>>>();
            let (Some(image), Some(block)) = (known(&image), known(&block)) else {
                return Err(unsupported("Col2Im of extents bound at run time"));
            };
            let y = nn::col2im(c, &x, &xd, &image, &block).map_err(EvalError::Invalid)?;
            let ty = out_types[0].clone();
            let y: Vec<f32> = y.iter().map(|&v| v as f32).collect();
            return Ok(vec![TensorData::from_f32(&ty.shape.as_fixed().unwrap_or_default(), &y)
                .ok_or_else(|| EvalError::Invalid("col2im: result".into()))?]);
        }
        Op::RoiAlign(r) => {
            let f32s = |t: &TensorData| t.to_f32().ok_or_else(|| EvalError::Invalid("roi_align: f32 operands".into()));
            let batch = inputs[2].to_i64().ok_or_else(|| EvalError::Invalid("roi_align: i64 indices".into()))?;
            let xd = inputs[0].ty().shape.as_fixed().ok_or_else(|| unsupported("symbolic shapes"))?;
            let y = nn::roi_align(r, &f32s(&inputs[0])?, &xd, &f32s(&inputs[1])?, &batch).map_err(|m| {
                match m.strip_prefix("unsupported: ") {
                    Some(what) => unsupported(what),
                    None => EvalError::Invalid(m),
                }
            })?;
            return Ok(vec![TensorData::from_f32(out, &y).ok_or_else(|| EvalError::Invalid("roi_align".into()))?]);
        }
        Op::Random(r) => {
            // As the kernel computes it: in f32 for f32 and f16 (the reference in f64,
            // rounded, differs from it by an ulp at most; the kernel tests allow that).
            let n: u64 = out.iter().product();
            let v: Vec<f64> = (0..n).map(|i| dlc_ir::ops::random::value(r, i)).collect();
            let t = T { dtype: r.dtype, dims: out.clone(), data: Data::F(v) };
            return Ok(vec![t.to_tensor()?]);
        }
        Op::StringSplitCount(o) => {
            let counts = string_split(&ins, &o.delimiter, o.maxsplit, None, out_types)?;
            if !o.most {
                return Ok(counts);
            }
            let most = counts[0].to_i64().and_then(|v| v.into_iter().max()).unwrap_or(0);
            return Ok(vec![TensorData::from_i64(&[1], &[most]).expect("one")]);
        }
        Op::StringSplit(o) => return string_split(&ins, &o.delimiter, o.maxsplit, Some(()), out_types),
        Op::StringCase(c) => {
            let Data::I(b) = &ins[0].data else { return Err(EvalError::Invalid("string_case: bytes".into())) };
            let bytes: Vec<u8> = b.iter().map(|&v| v as u8).collect();
            let mapped = dlc_ir::ops::map_case(&bytes, &dlc_ir::ops::case_table(c.upper, c.ascii));
            let ty = TensorType::fixed(DType::U8, out);
            return Ok(vec![TensorData::new(ty, std::sync::Arc::from(mapped))
                .ok_or_else(|| EvalError::Invalid("string_case".into()))?]);
        }
        Op::Loop(l) => return run_loop(l, inputs, out_types),
        Op::If(_) => return Err(EvalError::Invalid("internal: if is run before".into())),
        Op::Bind(b) => return bind(b, &ins, inputs),
        // Its offsets are symbols bound at run time.
        Op::Strided(_) => return Err(unsupported("windows at offsets computed at run time")),
        Op::NonZero(_) => return Err(unsupported("NonZero (its count is bound at run time)")),
        Op::Compress(_) => return Err(unsupported("Compress (its count is bound at run time)")),
        Op::ResizeTaps(r) => return resize_taps(r, &ins, out_types),
        Op::Iota(o) => {
            let v: Vec<i64> = (0..out[0] as i64).map(|i| o.start.wrapping_add(i.wrapping_mul(o.delta))).collect();
            let data = if o.dtype.is_float() { Data::F(v.iter().map(|&x| x as f64).collect()) } else { Data::I(v) };
            T { dtype: o.dtype, dims: out.clone(), data }
        }
        Op::Resize(r) => {
            let (x, idx, w) = (&ins[0], &ins[1], &ins[2]);
            let a = dlc_ir::ops::normalize_axis(r.axis, x.dims.len())
                .ok_or_else(|| EvalError::Invalid("resize axis out of range".into()))?;
            let k = idx.dims.get(1).copied().unwrap_or(1) as usize;
            let ints = matches!(x.data, Data::I(_));
            if ints && k != 1 {
                return Err(unsupported("interpolating integers"));
            }
            let xs: Vec<f64> = (0..x.len()).map(|i| x.f(i)).collect();
            let iv: Vec<i64> = (0..idx.len()).map(|i| idx.f(i) as i64).collect();
            let wv: Vec<f64> = (0..w.len()).map(|i| w.f(i)).collect();
            if iv.iter().any(|&i| i < 0 || i as u64 >= x.dims[a].max(1)) {
                return Err(EvalError::Invalid("resize index out of range".into()));
            }
            let data = if ints {
                // Nearest on integers: exact picks (a float64 round trip would round
                // 64-bit values); the extrapolation value where the last weight says so.
                let (pre, post) = (x.dims[..a].iter().product::<u64>(), x.dims[a + 1..].iter().product::<u64>());
                let (inl, o_len) = (x.dims[a], iv.len() as u64);
                let mut y = Vec::with_capacity((pre * o_len * post) as usize);
                for p in 0..pre {
                    for o in 0..o_len as usize {
                        for q in 0..post {
                            y.push(if wv[2 * o + 1] != 0.0 || inl == 0 {
                                r.extrapolation as i64
                            } else {
                                x.i(((p * inl + iv[o] as u64) * post + q) as usize)
                            });
                        }
                    }
                }
                Data::I(y)
            } else {
                Data::F(resize::apply(&xs, &x.dims, a, &iv, &wv, k, r.extrapolation as f64))
            };
            T { dtype: x.dtype, dims: out.clone(), data }
        }
        Op::Cast(c) if !c.saturate && c.to.is_float() && c.to.is_storage_only() => {
            // Encoded here: the stored form of other results saturates.
            let x = &ins[0];
            let bytes: Vec<u8> = (0..x.len())
                .map(|i| match c.to.minifloat() {
                    Some(f) => f.encode(x.f(i) as f32, false),
                    None => e8m0_encode(x.f(i) as f32, false),
                })
                .collect();
            let t = TensorData::new(TensorType::fixed(c.to, out), bytes.into())
                .ok_or_else(|| EvalError::Invalid("result size mismatch".into()))?;
            return Ok(vec![t]);
        }
        Op::Cast(c) => {
            let x = &ins[0];
            let data = if c.to.is_float() {
                Data::F((0..x.len()).map(|i| x.f(i)).collect())
            } else if c.to == DType::Bool {
                Data::I((0..x.len()).map(|i| (x.f(i) != 0.0) as i64).collect())
            } else {
                // Floats saturate to the target's range (NaN gives 0; Rust's `as` does
                // both for i64); integers wrap when the result is stored.
                let (lo, hi) = c.to.int_range().unwrap_or((i64::MIN, i64::MAX));
                let sat = |v: f64| if c.to == DType::U64 { (v as u64) as i64 } else { (v as i64).clamp(lo, hi) };
                Data::I((0..x.len()).map(|i| if x.dtype.is_float() { sat(x.f(i)) } else { x.i(i) }).collect())
            };
            T { dtype: c.to, dims: x.dims.clone(), data }
        }
        Op::Transpose(t) => {
            let x = &ins[0];
            let perm = t.resolved_perm(x.dims.len());
            let xs = strides(&x.dims);
            let n: u64 = out.iter().product();
            let os = strides(out);
            let idx: Vec<usize> = (0..n)
                .map(|flat| (0..out.len()).map(|d| ((flat / os[d]) % out[d]) * xs[perm[d]]).sum::<u64>() as usize)
                .collect();
            x.pick(&idx, out.clone())
        }
        Op::Concat(c) => {
            let a = dlc_ir::ops::normalize_axis(c.axis, out.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
            let outer: u64 = out[..a].iter().product();
            let mut fs = Vec::new();
            let mut is = Vec::new();
            let float = matches!(ins[0].data, Data::F(_));
            for o in 0..outer {
                for x in &ins {
                    let block: u64 = x.dims[a..].iter().product();
                    for k in 0..block {
                        let i = (o * block + k) as usize;
                        if float {
                            fs.push(x.f(i));
                        } else {
                            is.push(x.i(i));
                        }
                    }
                }
            }
            T { dtype: ins[0].dtype, dims: out.clone(), data: if float { Data::F(fs) } else { Data::I(is) } }
        }
        Op::Gather(g) => {
            let (d, ix) = (&ins[0], &ins[1]);
            let a =
                dlc_ir::ops::normalize_axis(g.axis, d.dims.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
            let outer: u64 = d.dims[..a].iter().product();
            let inner: u64 = d.dims[a + 1..].iter().product();
            let extent = d.dims[a] as i64;
            let mut idx = Vec::new();
            for o in 0..outer {
                for j in 0..ix.len() {
                    let mut k = ix.i(j);
                    if k < 0 {
                        k += extent;
                    }
                    if !(0..extent).contains(&k) {
                        return Err(EvalError::Invalid(format!("gather index {} out of range 0..{extent}", ix.i(j))));
                    }
                    for r in 0..inner {
                        idx.push(((o * extent as u64 + k as u64) * inner + r) as usize);
                    }
                }
            }
            d.pick(&idx, out.clone())
        }
        Op::GatherElements(g) => {
            let (d, ix) = (&ins[0], &ins[1]);
            let a =
                dlc_ir::ops::normalize_axis(g.axis, d.dims.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
            let (ds, os) = (strides(&d.dims), strides(&ix.dims));
            let extent = d.dims[a] as i64;
            let mut idx = Vec::with_capacity(ix.len());
            for flat in 0..ix.len() as u64 {
                let mut k = ix.i(flat as usize);
                if k < 0 {
                    k += extent;
                }
                if !(0..extent).contains(&k) {
                    return Err(EvalError::Invalid(format!(
                        "gather index {} out of range 0..{extent}",
                        ix.i(flat as usize)
                    )));
                }
                let src: u64 =
                    (0..os.len()).map(|q| if q == a { k as u64 } else { (flat / os[q]) % ix.dims[q] } * ds[q]).sum();
                idx.push(src as usize);
            }
            d.pick(&idx, out.clone())
        }
        Op::Trilu(t) => {
            let x = &ins[0];
            let r = x.dims.len();
            if r < 2 {
                return Err(EvalError::Invalid("trilu needs 2 dims".into()));
            }
            let (rows, cols) = (x.dims[r - 2].max(1), x.dims[r - 1].max(1));
            let k = if ins.len() == 2 { ins[1].i(0) } else { 0 };
            let keep = |flat: u64| {
                let (i, j) = ((flat / cols % rows) as i64, (flat % cols) as i64);
                if t.upper {
                    j - i >= k
                } else {
                    j - i <= k
                }
            };
            let data = match &x.data {
                Data::F(v) => Data::F((0..v.len()).map(|f| if keep(f as u64) { v[f] } else { 0.0 }).collect()),
                Data::I(v) => Data::I((0..v.len()).map(|f| if keep(f as u64) { v[f] } else { 0 }).collect()),
            };
            T { dtype: x.dtype, dims: out.clone(), data }
        }
        Op::Pad(p) if !p.exprs.trim().is_empty() => return Err(unsupported("pads computed at run time")),
        Op::Pad(p) => {
            use dlc_ir::ops::PadMode;
            let x = &ins[0];
            if p.pads.len() < x.dims.len() || (p.mode != PadMode::Constant && x.dims.contains(&0)) {
                return Err(EvalError::Invalid("pads do not match the operand".into()));
            }
            let (xs, os) = (strides(&x.dims), strides(out));
            let n: u64 = out.iter().product();
            // The source element of each result element (None: the constant).
            let src = |flat: u64| -> Option<usize> {
                let mut at = 0i64;
                for d in 0..out.len() {
                    let e = x.dims[d] as i64;
                    let i = ((flat / os[d]) % out[d]) as i64 - p.pads[d];
                    let j = match p.mode {
                        PadMode::Constant if !(0..e).contains(&i) => return None,
                        PadMode::Constant => i,
                        PadMode::Edge => i.clamp(0, e - 1),
                        PadMode::Wrap => i.rem_euclid(e),
                        PadMode::Reflect if e == 1 => 0,
                        PadMode::Reflect => {
                            let m = i.rem_euclid(2 * (e - 1));
                            if m < e {
                                m
                            } else {
                                2 * (e - 1) - m
                            }
                        }
                    };
                    at += j * xs[d] as i64;
                }
                Some(at as usize)
            };
            let data = match &x.data {
                Data::F(v) => Data::F((0..n).map(|f| src(f).map_or(p.value, |i| v[i])).collect()),
                Data::I(v) => Data::I((0..n).map(|f| src(f).map_or(p.value as i64, |i| v[i])).collect()),
            };
            T { dtype: x.dtype, dims: out.clone(), data }
        }
        Op::ScatterElements(se) => {
            let writes = scatter_elements_writes(&ins[0], &ins[1], se.axis)?;
            scattered(&ins[0], &ins[2], &writes, se.reduction, out)
        }
        Op::ScatterND(sn) => {
            let writes = scatter_nd_writes(&ins[0], &ins[1])?;
            scattered(&ins[0], &ins[2], &writes, sn.reduction, out)
        }
        Op::Slice(s) => {
            let x = &ins[0];
            let r = s.resolve(&x.dims).map_err(EvalError::Invalid)?;
            let xs = strides(&x.dims);
            let n: u64 = out.iter().product();
            let os = strides(out);
            let idx: Vec<usize> = (0..n)
                .map(|flat| {
                    (0..out.len())
                        .map(|d| (r[d].0 + ((flat / os[d]) % out[d]) as i64 * r[d].1) * xs[d] as i64)
                        .sum::<i64>() as usize
                })
                .collect();
            x.pick(&idx, out.clone())
        }
        Op::Expand(_) => {
            let idx = broadcast_index(&ins[0].dims, out);
            ins[0].pick(&idx, out.clone())
        }
        Op::ReduceSum(r) if is_f(&ins[0]) => reduce_f(&ins[0], &r.axes, |a, b| a + b, 0.0, false, out)?,
        Op::ReduceMean(r) if is_f(&ins[0]) => reduce_f(&ins[0], &r.axes, |a, b| a + b, 0.0, true, out)?,
        Op::ReduceProd(r) if is_f(&ins[0]) => reduce_f(&ins[0], &r.axes, |a, b| a * b, 1.0, false, out)?,
        // A NaN makes the result NaN (numpy's rule, the ONNX reference's; the kernels').
        Op::ReduceMax(r) if is_f(&ins[0]) => reduce_f(&ins[0], &r.axes, nan_max, f64::NEG_INFINITY, false, out)?,
        Op::ReduceMin(r) if is_f(&ins[0]) => reduce_f(&ins[0], &r.axes, nan_min, f64::INFINITY, false, out)?,
        Op::ReduceL1(r) if is_f(&ins[0]) => {
            reduce_f(&mapped(&ins[0], f64::abs), &r.axes, |a, b| a + b, 0.0, false, out)?
        }
        Op::ReduceSumSquare(r) if is_f(&ins[0]) => {
            reduce_f(&mapped(&ins[0], |v| v * v), &r.axes, |a, b| a + b, 0.0, false, out)?
        }
        Op::ReduceL2(r) if is_f(&ins[0]) => {
            mapped(&reduce_f(&mapped(&ins[0], |v| v * v), &r.axes, |a, b| a + b, 0.0, false, out)?, f64::sqrt)
        }
        Op::ReduceLogSum(r) if is_f(&ins[0]) => {
            mapped(&reduce_f(&ins[0], &r.axes, |a, b| a + b, 0.0, false, out)?, f64::ln)
        }
        Op::ReduceLogSumExp(r) if is_f(&ins[0]) => {
            mapped(&reduce_f(&mapped(&ins[0], f64::exp), &r.axes, |a, b| a + b, 0.0, false, out)?, f64::ln)
        }
        Op::ArgMax(a) => arg_extreme(&ins[0], a.axis, true, a.select_last_index, out)?,
        Op::ArgMin(a) => arg_extreme(&ins[0], a.axis, false, a.select_last_index, out)?,
        Op::CumSum(c) => {
            let x = &ins[0];
            let r = x.dims.len() as i64;
            let axis = ins[1].i(0);
            let axis = if axis < 0 { axis + r } else { axis };
            if !(0..r).contains(&axis) {
                return Err(EvalError::Invalid("cumsum axis out of range".into()));
            }
            let a = axis as usize;
            let (xs, len) = (strides(&x.dims), x.dims[a] as usize);
            let mut y: Vec<f64> = (0..x.len()).map(|i| x.f(i)).collect();
            let lines = x.len() / len.max(1);
            for line in 0..lines {
                // The first element of this line: the flat index with the axis coordinate 0.
                let inner = xs[a] as usize;
                let start = (line / inner) * inner * len + line % inner;
                let mut acc = if c.product { 1.0 } else { 0.0 };
                for k in 0..len {
                    let j = if c.reverse { len - 1 - k } else { k };
                    let at = start + j * inner;
                    let v = x.f(at);
                    let next = if c.product { acc * v } else { acc + v };
                    y[at] = if c.exclusive { acc } else { next };
                    acc = next;
                }
            }
            let data =
                if matches!(x.data, Data::F(_)) { Data::F(y) } else { Data::I(y.iter().map(|&v| v as i64).collect()) };
            T { dtype: x.dtype, dims: out.clone(), data }
        }
        Op::ReduceSum(r) => reduce(&ins[0], &r.axes, r.keepdims, |a, b| a + b, 0, out)?,
        Op::ReduceProd(r) => reduce(&ins[0], &r.axes, r.keepdims, |a, b| a * b, 1, out)?,
        Op::ReduceMax(r) => reduce(&ins[0], &r.axes, r.keepdims, i64::max, i64::MIN, out)?,
        Op::ReduceMin(r) => reduce(&ins[0], &r.axes, r.keepdims, i64::min, i64::MAX, out)?,
        Op::Fused(f) => {
            // Each step as its own op, intermediate results stored at their dtype.
            let types = f
                .step_types("interp", &inputs.iter().map(|t| t.ty().clone()).collect::<Vec<_>>())
                .map_err(|e| EvalError::Invalid(e.to_string()))?;
            let mut results: Vec<TensorData> = Vec::new();
            for (step, ty) in f.steps.iter().zip(&types) {
                let args: Vec<TensorData> = step
                    .args
                    .iter()
                    .map(|a| match *a {
                        dlc_ir::ops::Arg::Operand(i) => inputs[i as usize].clone(),
                        dlc_ir::ops::Arg::Step(k) => results[k as usize].clone(),
                    })
                    .collect();
                results.extend(eval(&step.op, &args, std::slice::from_ref(ty))?);
            }
            T::from_tensor(&results.pop().ok_or_else(|| EvalError::Invalid("no steps".into()))?)?
        }
        Op::QuantPack(q) => {
            let (packed, scale, zp) = nn::quant_pack(q, &floats(&ins[0])?, &ins[0].dims);
            let t = T { dtype: DType::U8, dims: out.clone(), data: Data::I(packed) };
            if q.dynamic {
                let params = T { dtype: DType::F32, dims: vec![2], data: Data::F(vec![scale as f64, zp as f64]) };
                return Ok(vec![t.to_tensor()?, params.to_tensor()?]);
            }
            t
        }
        Op::IntMatMul(_) => int_matmul(&ins, out)?,
        Op::Patches(p) => patches(p, &ins, out)?,
        Op::QConv(q) => {
            fn ints(t: &T) -> Result<&[i64], EvalError> {
                match &t.data {
                    Data::I(v) => Ok(v),
                    Data::F(_) => Err(EvalError::Invalid("qconv needs integer input and weights".into())),
                }
            }
            let (x, w) = (ints(&ins[0])?, ints(&ins[1])?);
            let (mut mult, mut offset) = (floats(&ins[2])?, floats(&ins[3])?);
            let mut res = ins.get(4).map(floats).transpose()?;
            if q.dynamic {
                let p = res.take().ok_or_else(|| EvalError::Invalid("dynamic qconv without its scale".into()))?;
                (mult, offset) = nn::qconv_dynamic_params(&mult, &offset, w, p[0], p[1]);
            }
            let y = nn::qconv(q, x, &ins[0].dims, w, &ins[1].dims, &mult, &offset, res.as_deref());
            T { dtype: DType::F32, dims: out.clone(), data: Data::F(y) }
        }
        dlc_ir::pointwise!() => elementwise(op, &ins, out, out_types[0].dtype)?,
        Op::Input(_)
        | Op::Const(_)
        | Op::MatMul(_)
        | Op::Gemm(_)
        | Op::Einsum(_)
        | Op::Attention(_)
        | Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool(_)
        | Op::GridSample(_)
        | Op::BatchNormalization(_)
        | Op::LayerNormalization(_)
        | Op::Softmax(_)
        | Op::ReduceMean(_)
        | Op::ReduceL1(_)
        | Op::ReduceL2(_)
        | Op::ReduceLogSum(_)
        | Op::ReduceLogSumExp(_)
        | Op::ReduceSumSquare(_)
        | Op::NllLoss(_) => float_kernel(op, inputs, &ins, out, out_types[0].dtype)?,
    };
    if res.len() as u64 != out.iter().product::<u64>() {
        return Err(EvalError::Invalid("result has the wrong size".into()));
    }
    Ok(vec![res.to_tensor()?])
}

/// Multiply-adds above which the interpreter declines (constant folding must stay cheap).
const WORK_LIMIT: u64 = 1 << 28;

fn floats(t: &T) -> Result<Vec<f64>, EvalError> {
    match &t.data {
        Data::F(v) => Ok(v.clone()),
        Data::I(_) => Err(unsupported("integer operands of float kernels")),
    }
}

/// Contractions, convolution, normalisations and attention on floats ([`nn`]).
fn float_kernel(op: &Op, raw: &[TensorData], ins: &[T], out: &[u64], dt: DType) -> Result<T, EvalError> {
    let numel: u64 = out.iter().product();
    let work = |per: u64| -> Result<(), EvalError> {
        if numel.saturating_mul(per) > WORK_LIMIT {
            return Err(unsupported("this much work"));
        }
        Ok(())
    };
    let f = |i: usize| floats(&ins[i]);
    let data = match op {
        Op::MatMul(m) => {
            work(ins[0].dims.last().copied().unwrap_or(1))?;
            let bias = ins.get(2).map(floats).transpose()?;
            nn::matmul(&f(0)?, &ins[0].dims, &f(1)?, &ins[1].dims, bias.as_deref(), m.act)
        }
        Op::Gemm(g) => {
            work(ins[0].dims.iter().product::<u64>() / out.first().copied().unwrap_or(1).max(1))?;
            let c = ins.get(2).map(floats).transpose()?;
            nn::gemm(g, &f(0)?, &ins[0].dims, &f(1)?, &ins[1].dims, c.as_deref().map(|c| (c, &ins[2].dims[..])))
        }
        Op::Conv(c) => {
            work(ins[1].dims[1..].iter().product())?;
            let geom = c.geometry("interp", raw[0].ty(), raw[1].ty()).map_err(|e| EvalError::Invalid(e.to_string()))?;
            let bias = ins.get(2).map(floats).transpose()?;
            let res = ins.get(3).map(floats).transpose()?;
            nn::conv(c, &geom, &f(0)?, &ins[0].dims, &f(1)?, &ins[1].dims, bias.as_deref(), res.as_deref())
        }
        Op::Einsum(e) => {
            let xs: Vec<Vec<f64>> = ins.iter().map(floats).collect::<Result<_, _>>()?;
            let dims: Vec<Vec<u64>> = ins.iter().map(|t| t.dims.clone()).collect();
            let per: u64 = ins.iter().map(|t| t.dims.iter().product::<u64>()).max().unwrap_or(1);
            work(per)?;
            nn::einsum(&e.equation, &xs, &dims).map_err(EvalError::Invalid)?
        }
        Op::GridSample(g) => {
            let r = ins[0].dims.len().saturating_sub(2) as u32;
            if r == 0 || r > 3 || ins[1].dims.len() != r as usize + 2 {
                return Err(unsupported("GridSample that is not 1-, 2- or 3-D"));
            }
            work(4u64.pow(r))?;
            nn::grid_sample(g, &f(0)?, &ins[0].dims, &f(1)?, &ins[1].dims)
        }
        Op::ConvTranspose(c) => {
            work(ins[1].dims.iter().product::<u64>() / ins[1].dims.get(1).copied().unwrap_or(1).max(1))?;
            let geom = c.geometry("interp", raw[0].ty(), raw[1].ty()).map_err(|e| EvalError::Invalid(e.to_string()))?;
            let bias = ins.get(2).map(floats).transpose()?;
            nn::conv_transpose(c.group as u64, &geom, &f(0)?, &ins[0].dims, &f(1)?, &ins[1].dims, bias.as_deref())
        }
        Op::MaxPool(_) | Op::AveragePool(_) => {
            let (geom, avg) = match op {
                Op::MaxPool(p) => (p.geometry("interp", raw[0].ty()), None),
                Op::AveragePool(p) => (p.geometry("interp", raw[0].ty()), Some(p.count_include_pad)),
                _ => return Err(EvalError::Invalid("not a pool".into())),
            };
            let geom = geom.map_err(|e| EvalError::Invalid(e.to_string()))?;
            if ins[0].dims.len() != 4 {
                return Err(unsupported("pools that are not 2-D"));
            }
            work(geom.kernel[0] * geom.kernel[1])?;
            nn::pool(&geom, avg, &f(0)?, &ins[0].dims)
        }
        Op::GlobalAveragePool(_) => {
            let x = f(0)?;
            let size = ins[0].dims.get(2..).map_or(1, |d| d.iter().product::<u64>()) as usize;
            x.chunks(size.max(1)).map(|p| p.iter().sum::<f64>() / size as f64).collect()
        }
        Op::BatchNormalization(bn) => {
            let x = f(0)?;
            let (s, b, m, v) = (f(1)?, f(2)?, f(3)?, f(4)?);
            let c = ins[0].dims.get(1).copied().unwrap_or(1) as usize;
            let inner = ins[0].dims.get(2..).map_or(1, |d| d.iter().product::<u64>()) as usize;
            x.iter()
                .enumerate()
                .map(|(i, &xv)| {
                    let ch = (i / inner.max(1)) % c.max(1);
                    (xv - m[ch]) / (v[ch] + bn.epsilon as f64).sqrt() * s[ch] + b[ch]
                })
                .collect()
        }
        Op::Softmax(s) => {
            use dlc_ir::ops::SoftmaxMode;
            let a = dlc_ir::ops::normalize_axis(s.axis, out.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
            let x = f(0)?;
            let len = out.get(a).copied().unwrap_or(1) as usize;
            let inner = out.get(a + 1..).map_or(1, |d| d.iter().product::<u64>()) as usize;
            let outer = x.len() / (len * inner).max(1);
            let mut y = vec![0.0; x.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |l: usize| (o * len + l) * inner + i;
                    let m = (0..len).map(|l| x[at(l)]).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..len).map(|l| (x[at(l)] - m).exp()).sum();
                    // Hardmax: 1 at the first maximum.
                    let first = (0..len).find(|&l| x[at(l)] == m);
                    for l in 0..len {
                        y[at(l)] = match s.mode {
                            SoftmaxMode::Softmax => (x[at(l)] - m).exp() / sum,
                            SoftmaxMode::LogSoftmax => x[at(l)] - m - sum.ln(),
                            SoftmaxMode::Hardmax => (Some(l) == first) as u8 as f64,
                        };
                    }
                }
            }
            y
        }
        Op::LayerNormalization(l) if !l.stats => {
            let a = dlc_ir::ops::normalize_axis(l.axis, out.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
            let norm = &out[a..];
            let n_params = if l.skip { ins.len() - 1 } else { ins.len() };
            let mut x = f(0)?;
            if l.skip {
                let r = f(ins.len() - 1)?;
                x.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
            }
            let spread = |t: &T| -> Result<Vec<f64>, EvalError> {
                let v = floats(t)?;
                Ok(broadcast_index(&t.dims, norm).into_iter().map(|i| v[i]).collect())
            };
            let scale = spread(&ins[1])?;
            let bias = if n_params == 3 { Some(spread(&ins[2])?) } else { None };
            nn::layernorm(&x, norm.iter().product::<u64>() as usize, l.epsilon as f64, l.rms, &scale, bias.as_deref())
        }
        Op::Attention(a) => {
            let (b, sq, sk) = (ins[0].dims[0], ins[0].dims[1], ins[1].dims[1]);
            work(2 * sk * ins[0].dims[2])?;
            let h = a.heads as u64;
            let full = [b, h, sq, sk];
            let mask = match ins.get(3) {
                None => None,
                Some(m) if a.key_padding => {
                    let mv: Vec<f64> = (0..m.len()).map(|i| m.f(i)).collect();
                    let n = (b * h * sq * sk) as usize;
                    let st = strides(&full);
                    Some(
                        (0..n as u64)
                            .map(|i| {
                                let (bi, j) = ((i / st[0]) % b, i % sk);
                                (1.0 - mv[(bi * sk + j) as usize]) * a.padding_fill as f64
                            })
                            .collect::<Vec<f64>>(),
                    )
                }
                Some(m) => {
                    let mv = floats(m)?;
                    Some(broadcast_index(&m.dims, &full).into_iter().map(|i| mv[i]).collect())
                }
            };
            let dims = [b, sq, sk, ins[0].dims[2], ins[2].dims[2]];
            nn::attention(a, &f(0)?, &f(1)?, &f(2)?, dims, mask.as_deref())
        }
        Op::Input(_)
        | Op::Const(_)
        | dlc_ir::pointwise!()
        | Op::Cast(_)
        | Op::Expand(_)
        | Op::Fused(_)
        | Op::QConv(_)
        | Op::IntMatMul(_)
        | Op::Patches(_)
        | Op::QuantPack(_)
        | Op::Reshape(_)
        | Op::View(_)
        | Op::Bind(_)
        | Op::Strided(_)
        | Op::NonZero(_)
        | Op::Compress(_)
        | Op::ResizeTaps(_)
        | Op::Resize(_)
        | Op::Iota(_)
        | Op::Flatten(_)
        | Op::Transpose(_)
        | Op::Identity(_)
        | Op::BitCast(_)
        | Op::Concat(_)
        | Op::Gather(_)
        | Op::GatherElements(_)
        | Op::Slice(_)
        | Op::Trilu(_)
        | Op::Pad(_)
        | Op::ScatterElements(_)
        | Op::ScatterND(_)
        | Op::LayerNormalization(_)
        | Op::ReduceSum(_)
        | Op::ReduceMean(_)
        | Op::ReduceMax(_)
        | Op::ReduceMin(_)
        | Op::ReduceProd(_)
        | Op::ReduceL1(_)
        | Op::ReduceL2(_)
        | Op::ReduceLogSum(_)
        | Op::ReduceLogSumExp(_)
        | Op::ReduceSumSquare(_)
        | Op::ArgMax(_)
        | Op::TopK(_)
        | Op::Nms(_)
        | Op::Unique(_)
        | Op::StringEqual(_)
        | Op::StringRegexMatch(_)
        | Op::StringCase(_)
        | Op::StringConcat(_)
        | Op::StringSplitCount(_)
        | Op::StringSplit(_)
        | Op::Random(_)
        | Op::RoiAlign(_)
        | Op::Col2Im(_)
        | Op::Loop(_)
        | Op::If(_)
        | Op::ArgMin(_)
        | Op::NllLoss(_)
        | Op::CumSum(_) => return Err(unsupported(op.mnemonic())),
    };
    Ok(T { dtype: dt, dims: out.to_vec(), data: Data::F(data) })
}

/// Runs a whole graph (every node through [`eval`]) on `inputs`, in the order of the
/// graph's inputs; returns its outputs in order.
pub fn run_graph(g: &Graph, inputs: &[TensorData]) -> Result<Vec<TensorData>, EvalError> {
    if inputs.len() != g.inputs().len() {
        return Err(EvalError::Invalid(format!("{} inputs given, the graph has {}", inputs.len(), g.inputs().len())));
    }
    let mut values: HashMap<Value, TensorData> = HashMap::new();
    for (&id, t) in g.inputs().iter().zip(inputs) {
        values.insert(Value { node: id, port: 0 }, t.clone());
    }
    let order = g.topo_order().map_err(|e| EvalError::Invalid(e.to_string()))?;
    for id in order {
        let node = g.node(id);
        let res = match &node.op {
            Op::Input(_) => continue,
            Op::Const(c) => vec![c.value.clone()],
            op => {
                let ins: Vec<TensorData> = g.operands(id).iter().map(|v| values[v].clone()).collect();
                eval(op, &ins, &node.outputs)?
            }
        };
        for (port, t) in res.into_iter().enumerate() {
            values.insert(Value { node: id, port: port as u32 }, t);
        }
    }
    Ok(g.outputs().iter().map(|(_, v)| values[v].clone()).collect())
}

/// The most iterations a folded loop runs.
const LOOP_LIMIT: i64 = 1 << 16;

/// A loop over constant operands: its body run once per iteration (see
/// [`dlc_ir::ops::Loop`] for the operands and results).
fn run_loop(
    l: &dlc_ir::ops::Loop,
    inputs: &[TensorData],
    out_types: &[TensorType],
) -> Result<Vec<TensorData>, EvalError> {
    let count = l.count_expr().and_then(|e| e.as_const()).ok_or_else(|| unsupported("loops counted at run time"))?;
    if count > LOOP_LIMIT {
        return Err(unsupported("loops this long"));
    }
    let n = l.carried as usize;
    let first = usize::from(l.check);
    let (cond, rest) = inputs.split_at(2);
    let mut state: Vec<TensorData> = rest[..n].to_vec();
    let outer = &rest[n..];
    let mut go = cond[1].bytes().first().copied().unwrap_or(0) != 0;
    let mut scans: Vec<Vec<u8>> = vec![Vec::new(); out_types.len().saturating_sub(n)];
    let mut done = 0;
    while go && done < count {
        let iter =
            TensorData::new(TensorType::fixed(DType::I64, &[]), std::sync::Arc::from(done.to_le_bytes().to_vec()))
                .ok_or_else(|| EvalError::Invalid("iteration number".into()))?;
        let mut args = vec![iter, cond[1].clone()];
        args.extend(state.iter().cloned());
        args.extend(outer.iter().cloned());
        let res = run_graph(&l.body.0, &args)?;
        if l.check {
            go = res[0].bytes().first().copied().unwrap_or(0) != 0;
        }
        state = res[first..first + n].to_vec();
        for (j, t) in res[first + n..].iter().enumerate() {
            scans[j].extend_from_slice(t.bytes());
        }
        done += 1;
    }
    let mut out = state;
    for (j, mut bytes) in scans.into_iter().enumerate() {
        let mut t = out_types[n + j].clone();
        // A loop that checks its condition has `count` slots (its type), the ones past
        // the iterations run zero (what reads them cuts them off).
        let slots = if l.check { count } else { done };
        t.shape.0[0] = dlc_ir::Dim::Fixed(slots as u64);
        if slots > done {
            bytes.resize(t.size_bytes().ok_or_else(|| unsupported("symbolic shapes"))? as usize, 0);
        }
        out.push(TensorData::new(t, std::sync::Arc::from(bytes)).ok_or_else(|| unsupported("symbolic shapes"))?);
    }
    Ok(out)
}

fn is_f(t: &T) -> bool {
    matches!(t.data, Data::F(_))
}

/// A float reduction over `axes` (the mean divides by the reduced element count).
/// `max(a, b)`, NaN when either is.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// `min(a, b)`, NaN when either is.
fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn reduce_f(x: &T, axes: &[i64], f: fn(f64, f64) -> f64, init: f64, mean: bool, out: &[u64]) -> Result<T, EvalError> {
    let ax = resolve_axes(axes, x.dims.len()).ok_or_else(|| EvalError::Invalid("axes".into()))?;
    let kept: Vec<u64> = x.dims.iter().enumerate().map(|(i, &d)| if ax.contains(&i) { 1 } else { d }).collect();
    let (ks, xs) = (strides(&kept), strides(&x.dims));
    let mut acc = vec![init; kept.iter().product::<u64>() as usize];
    for flat in 0..x.len() as u64 {
        let o: u64 = (0..x.dims.len()).filter(|d| !ax.contains(d)).map(|d| ((flat / xs[d]) % x.dims[d]) * ks[d]).sum();
        acc[o as usize] = f(acc[o as usize], x.f(flat as usize));
    }
    if mean {
        let n: u64 = ax.iter().map(|&d| x.dims[d]).product();
        acc.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    }
    Ok(T { dtype: x.dtype, dims: out.to_vec(), data: Data::F(acc) })
}

/// A scatter index wrapped when negative; out of range is an error.
fn scatter_index(k: i64, extent: u64) -> Result<u64, EvalError> {
    let k = if k < 0 { k + extent as i64 } else { k };
    if (0..extent as i64).contains(&k) {
        Ok(k as u64)
    } else {
        Err(EvalError::Invalid(format!("scatter index {k} out of range 0..{extent}")))
    }
}

/// ScatterElements' (destination, update) pairs, in update order.
fn scatter_elements_writes(d: &T, ix: &T, axis: i64) -> Result<Vec<(usize, usize)>, EvalError> {
    let a = dlc_ir::ops::normalize_axis(axis, d.dims.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
    let (ds, is) = (strides(&d.dims), strides(&ix.dims));
    let mut writes = Vec::with_capacity(ix.len());
    for j in 0..ix.len() as u64 {
        let k = scatter_index(ix.i(j as usize), d.dims[a])?;
        let at: u64 = (0..is.len()).map(|q| if q == a { k } else { (j / is[q]) % ix.dims[q] } * ds[q]).sum();
        writes.push((at as usize, j as usize));
    }
    Ok(writes)
}

/// ScatterND's (destination, update) pairs, in update order.
fn scatter_nd_writes(d: &T, ix: &T) -> Result<Vec<(usize, usize)>, EvalError> {
    let k = *ix.dims.last().ok_or_else(|| EvalError::Invalid("indices rank".into()))? as usize;
    if k > d.dims.len() {
        return Err(EvalError::Invalid("index tuples longer than the data's rank".into()));
    }
    let ds = strides(&d.dims);
    let tuples = ix.len() / k.max(1);
    let slice: u64 = d.dims[k..].iter().product();
    let mut writes = Vec::new();
    for t in 0..tuples {
        let mut base = 0;
        for (q, (&extent, &stride)) in d.dims[..k].iter().zip(&ds).enumerate() {
            base += scatter_index(ix.i(t * k + q), extent)? * stride;
        }
        for s in 0..slice {
            writes.push(((base + s) as usize, t * slice as usize + s as usize));
        }
    }
    Ok(writes)
}

/// The data with `writes` (destination, update index) applied in order by `reduction`.
fn scattered(d: &T, up: &T, writes: &[(usize, usize)], reduction: dlc_ir::ops::ScatterReduction, out: &[u64]) -> T {
    use dlc_ir::ops::ScatterReduction as R;
    let data = match &d.data {
        Data::F(v) => {
            let mut y = v.clone();
            for &(at, u) in writes {
                let v = up.f(u);
                y[at] = match reduction {
                    R::None => v,
                    R::Add => y[at] + v,
                    R::Mul => y[at] * v,
                    R::Max => y[at].max(v),
                    R::Min => y[at].min(v),
                };
            }
            Data::F(y)
        }
        Data::I(v) => {
            let mut y = v.clone();
            for &(at, u) in writes {
                let v = up.i(u);
                y[at] = match reduction {
                    R::None => v,
                    R::Add => y[at].wrapping_add(v),
                    R::Mul => y[at].wrapping_mul(v),
                    R::Max => y[at].max(v),
                    R::Min => y[at].min(v),
                };
            }
            Data::I(y)
        }
    };
    T { dtype: d.dtype, dims: out.to_vec(), data }
}

/// `f` applied to every element (as floats).
fn mapped(x: &T, f: fn(f64) -> f64) -> T {
    T { dtype: x.dtype, dims: x.dims.clone(), data: Data::F((0..x.len()).map(|i| f(x.f(i))).collect()) }
}

/// The index of the largest (or smallest) element along `axis`: the first, or the last
/// with `last`.
fn arg_extreme(x: &T, axis: i64, is_max: bool, last: bool, out: &[u64]) -> Result<T, EvalError> {
    let a = dlc_ir::ops::normalize_axis(axis, x.dims.len()).ok_or_else(|| EvalError::Invalid("axis".into()))?;
    let len = x.dims[a] as usize;
    let inner = x.dims[a + 1..].iter().product::<u64>() as usize;
    let outer = x.len() / (len * inner).max(1);
    let mut idx = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let mut best = 0;
            for j in 1..len {
                let (v, b) = (x.f(at(j)), x.f(at(best)));
                let better = if is_max { v > b || (last && v == b) } else { v < b || (last && v == b) };
                if better {
                    best = j;
                }
            }
            idx.push(best as i64);
        }
    }
    Ok(T { dtype: DType::I64, dims: out.to_vec(), data: Data::I(idx) })
}

fn reduce(x: &T, axes: &[i64], _keep: bool, f: fn(i64, i64) -> i64, init: i64, out: &[u64]) -> Result<T, EvalError> {
    if matches!(x.data, Data::F(_)) {
        return Err(unsupported("floating-point reductions"));
    }
    let ax = resolve_axes(axes, x.dims.len()).ok_or_else(|| EvalError::Invalid("axes".into()))?;
    let kept: Vec<u64> = x.dims.iter().enumerate().map(|(i, &d)| if ax.contains(&i) { 1 } else { d }).collect();
    let ks = strides(&kept);
    let xs = strides(&x.dims);
    let mut acc = vec![init; kept.iter().product::<u64>() as usize];
    for flat in 0..x.len() as u64 {
        let mut o = 0;
        for d in 0..x.dims.len() {
            if !ax.contains(&d) {
                o += ((flat / xs[d]) % x.dims[d]) * ks[d];
            }
        }
        acc[o as usize] = f(acc[o as usize], x.i(flat as usize));
    }
    Ok(T { dtype: x.dtype, dims: out.to_vec(), data: Data::I(acc) })
}

#[allow(clippy::needless_range_loop)] // k indexes several operand index tables in step
fn elementwise(op: &Op, ins: &[T], out: &[u64], out_dt: DType) -> Result<T, EvalError> {
    let idx: Vec<Vec<usize>> = ins.iter().map(|t| broadcast_index(&t.dims, out)).collect();
    let n = out.iter().product::<u64>() as usize;
    let float = ins.iter().any(|t| matches!(t.data, Data::F(_)));
    if let Op::Where(_) = op {
        let (c, x, y) = (&ins[0], &ins[1], &ins[2]);
        let pick: Vec<(usize, bool)> = (0..n).map(|k| (k, c.i(idx[0][k]) != 0)).collect();
        let data = if float {
            Data::F(pick.iter().map(|&(k, t)| if t { x.f(idx[1][k]) } else { y.f(idx[2][k]) }).collect())
        } else {
            Data::I(pick.iter().map(|&(k, t)| if t { x.i(idx[1][k]) } else { y.i(idx[2][k]) }).collect())
        };
        return Ok(T { dtype: out_dt, dims: out.to_vec(), data });
    }
    if float {
        if !out_dt.is_float() && out_dt != DType::Bool {
            return Err(unsupported("mixed float/int elementwise"));
        }
        let mut fs = Vec::with_capacity(n);
        let mut bs = Vec::new();
        for k in 0..n {
            let a = ins[0].f(idx[0][k]);
            let c = ins.get(1).map(|t| t.f(idx[1][k]));
            match float_rule(op, a, c) {
                Some(Scalar::F(v)) => fs.push(v),
                Some(Scalar::B(v)) => bs.push(v as i64),
                None => return Err(unsupported(format!("{} on floats", op.mnemonic()))),
            }
        }
        let data = if out_dt == DType::Bool { Data::I(bs) } else { Data::F(fs) };
        return Ok(T { dtype: out_dt, dims: out.to_vec(), data });
    }
    let dt = ins[0].dtype;
    let bits = dt.narrow_int_bits().unwrap_or(if dt == DType::Bool { 8 } else { dt.size() as u32 * 8 });
    let mut is = Vec::with_capacity(n);
    for k in 0..n {
        let a = ins[0].i(idx[0][k]);
        let c = ins.get(1).map(|t| t.i(idx[1][k]));
        let v = int_rule(op, a, c, dt.is_signed_int(), bits)
            .ok_or_else(|| unsupported(format!("{} on integers", op.mnemonic())))?;
        is.push(v);
    }
    Ok(T { dtype: out_dt, dims: out.to_vec(), data: Data::I(is) })
}

/// `patches`: each window of the NCHW input as a row, taps in `(c, ky, kx)` order, the
/// padding value where a tap falls outside.
fn patches(p: &dlc_ir::ops::Patches, ins: &[T], out: &[u64]) -> Result<T, EvalError> {
    let x = match &ins[0].data {
        Data::I(v) => v,
        Data::F(_) => return Err(EvalError::Invalid("patches needs integer codes".into())),
    };
    let pad = match &ins[1].data {
        Data::I(v) => *v.first().ok_or_else(|| EvalError::Invalid("patches needs a padding value".into()))?,
        Data::F(_) => return Err(EvalError::Invalid("patches needs an integer padding value".into())),
    };
    let xt = dlc_ir::TensorType::fixed(ins[0].dtype, &ins[0].dims);
    let g = p.window("patches", &xt).map_err(|e| EvalError::Invalid(e.to_string()))?;
    let ext = |e: &dlc_ir::Expr| e.as_const().unwrap_or(0).max(0) as usize;
    let (oh, ow) = (ext(&g.output[0]), ext(&g.output[1]));
    let d: Vec<usize> = ins[0].dims.iter().map(|&v| v as usize).collect();
    let (n, c, h, w) = if p.channels_last { (d[0], d[3], d[1], d[2]) } else { (d[0], d[1], d[2], d[3]) };
    let [kh, kw] = g.kernel.map(|v| v as usize);
    let mut y = Vec::with_capacity(out.iter().product::<u64>() as usize);
    // The taps of one window in the row's order: (c, ky, kx), or (ky, kx, c).
    let taps: Vec<(usize, usize, usize)> = if p.channels_last {
        (0..kh).flat_map(|ky| (0..kw).flat_map(move |kx| (0..c).map(move |ch| (ch, ky, kx)))).collect()
    } else {
        (0..c).flat_map(|ch| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ch, ky, kx)))).collect()
    };
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for &(ch, ky, kx) in &taps {
                    let iy = (oy * g.strides[0] as usize + ky * g.dilations[0] as usize) as i64 - g.pad_begin[0] as i64;
                    let ix = (ox * g.strides[1] as usize + kx * g.dilations[1] as usize) as i64 - g.pad_begin[1] as i64;
                    let inside = (0..h as i64).contains(&iy) && (0..w as i64).contains(&ix);
                    let at = |iy: usize, ix: usize| match p.channels_last {
                        true => ((b * h + iy) * w + ix) * c + ch,
                        false => ((b * c + ch) * h + iy) * w + ix,
                    };
                    y.push(if inside { x[at(iy as usize, ix as usize)] } else { pad });
                }
                y.extend(std::iter::repeat_n(pad, p.row_pad.max(0) as usize));
            }
        }
    }
    Ok(T { dtype: ins[0].dtype, dims: out.to_vec(), data: Data::I(y) })
}

/// `int_matmul`: `sum_k (a - a_zp) (b - b_zp[n])` over `A [..., M, K]` and `B [K, N]`,
/// exact, wrapped to i32.
fn int_matmul(ins: &[T], out: &[u64]) -> Result<T, EvalError> {
    let ints = |t: &T| match &t.data {
        Data::I(v) => Ok(v.clone()),
        Data::F(_) => Err(EvalError::Invalid("int_matmul needs integer operands".into())),
    };
    let (a, b, azp, bzp) = (ints(&ins[0])?, ints(&ins[1])?, ints(&ins[2])?, ints(&ins[3])?);
    let (k, n) = match ins[1].dims[..] {
        [k, n] => (k as usize, n as usize),
        _ => return Err(EvalError::Invalid("int_matmul needs [K, N] weights".into())),
    };
    let za = *azp.first().ok_or_else(|| EvalError::Invalid("int_matmul needs a_zp".into()))?;
    let rows = a.len().checked_div(k).unwrap_or_else(|| out.iter().product::<u64>() as usize / n.max(1));
    let mut y = Vec::with_capacity(rows * n);
    for r in 0..rows {
        for j in 0..n {
            let zb = bzp[if bzp.len() == 1 { 0 } else { j }];
            let acc: i64 = (0..k).map(|t| (a[r * k + t] - za) * (b[t * n + j] - zb)).sum();
            y.push(acc as i32 as i64);
        }
    }
    Ok(T { dtype: DType::I32, dims: out.to_vec(), data: Data::I(y) })
}

/// The ops that are not elementwise, as a pattern: the scalar rules below have no
/// meaning for them (`elementwise` is only called for elementwise ops).
macro_rules! not_elementwise {
    () => {
        Op::Input(_)
            | Op::Const(_)
            | Op::Where(_)
            | Op::Cast(_)
            | Op::Expand(_)
            | Op::Fused(_)
            | Op::MatMul(_)
            | Op::Gemm(_)
            | Op::Einsum(_)
            | Op::Attention(_)
            | Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::MaxPool(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool(_)
            | Op::GridSample(_)
            | Op::ResizeTaps(_)
            | Op::Resize(_)
            | Op::Iota(_)
            | Op::QConv(_)
            | Op::IntMatMul(_)
            | Op::Patches(_)
            | Op::QuantPack(_)
            | Op::BatchNormalization(_)
            | Op::LayerNormalization(_)
            | Op::Softmax(_)
            | Op::ReduceSum(_)
            | Op::ReduceMean(_)
            | Op::ReduceMax(_)
            | Op::ReduceMin(_)
            | Op::ReduceProd(_)
            | Op::ReduceL1(_)
            | Op::ReduceL2(_)
            | Op::ReduceLogSum(_)
            | Op::ReduceLogSumExp(_)
            | Op::ReduceSumSquare(_)
            | Op::ArgMax(_)
            | Op::TopK(_)
            | Op::Nms(_)
            | Op::Unique(_)
            | Op::StringEqual(_)
            | Op::StringRegexMatch(_)
            | Op::StringCase(_)
            | Op::StringConcat(_)
            | Op::StringSplitCount(_)
            | Op::StringSplit(_)
            | Op::Random(_)
            | Op::RoiAlign(_)
            | Op::Col2Im(_)
            | Op::Loop(_)
            | Op::If(_)
            | Op::ArgMin(_)
            | Op::NllLoss(_)
            | Op::CumSum(_)
            | Op::Reshape(_)
            | Op::View(_)
            | Op::Bind(_)
            | Op::Strided(_)
            | Op::NonZero(_)
            | Op::Compress(_)
            | Op::Flatten(_)
            | Op::Transpose(_)
            | Op::Identity(_)
            | Op::BitCast(_)
            | Op::Concat(_)
            | Op::Gather(_)
            | Op::GatherElements(_)
            | Op::Slice(_)
            | Op::Trilu(_)
            | Op::Pad(_)
            | Op::ScatterElements(_)
            | Op::ScatterND(_)
    };
}

/// A scalar result: a number, or a bool of a comparison.
enum Scalar {
    F(f64),
    B(bool),
}

/// The float64 meaning of an elementwise op on one element (`c`: the second operand);
/// `None` where the op has no float meaning. Max/Min propagate NaN (numpy `maximum`).
fn float_rule(op: &Op, a: f64, c: Option<f64>) -> Option<Scalar> {
    use Scalar::{B, F};
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let softplus = |x: f64| (x.exp() + 1.0).ln();
    let clamp01 = |x: f64| x.clamp(0.0, 1.0);
    let un = |v: f64| if c.is_none() { Some(F(v)) } else { None };
    let bin = |f: &dyn Fn(f64, f64) -> f64| c.map(|c| F(f(a, c)));
    let cmp = |f: &dyn Fn(f64, f64) -> bool| c.map(|c| B(f(a, c)));
    let extreme = |a: f64, c: f64, max: bool| {
        if a.is_nan() || c.is_nan() {
            f64::NAN
        } else if max {
            a.max(c)
        } else {
            a.min(c)
        }
    };
    match op {
        Op::Add(_) => bin(&|a, c| a + c),
        Op::Sub(_) => bin(&|a, c| a - c),
        Op::Mul(_) => bin(&|a, c| a * c),
        Op::Div(_) => bin(&|a, c| a / c),
        Op::Max(_) => bin(&|a, c| extreme(a, c, true)),
        Op::Min(_) => bin(&|a, c| extreme(a, c, false)),
        Op::Pow(_) => bin(&|a, c| a.powf(c)),
        Op::PRelu(_) => bin(&|a, c| if a < 0.0 { a * c } else { a }),
        Op::Mod(m) => bin(&|a, c| {
            let r = a % c;
            if !m.fmod && r != 0.0 && (r < 0.0) != (c < 0.0) {
                r + c
            } else {
                r
            }
        }),
        Op::Equal(_) => cmp(&|a, c| a == c),
        Op::Greater(_) => cmp(&|a, c| a > c),
        Op::GreaterOrEqual(_) => cmp(&|a, c| a >= c),
        Op::Less(_) => cmp(&|a, c| a < c),
        Op::LessOrEqual(_) => cmp(&|a, c| a <= c),
        Op::Abs(_) => un(a.abs()),
        Op::Neg(_) => un(-a),
        Op::Sign(_) => un(if a > 0.0 {
            1.0
        } else if a < 0.0 {
            -1.0
        } else {
            a
        }),
        Op::Relu(_) => un(if a < 0.0 { 0.0 } else { a }),
        Op::Sigmoid(_) => un(sigmoid(a)),
        Op::Tanh(_) => un(a.tanh()),
        Op::Exp(_) => un(a.exp()),
        Op::Log(_) => un(a.ln()),
        Op::Sqrt(_) => un(a.sqrt()),
        Op::Reciprocal(_) => un(1.0 / a),
        Op::Sin(_) => un(a.sin()),
        Op::Cos(_) => un(a.cos()),
        Op::Tan(_) => un(a.tan()),
        Op::Asin(_) => un(a.asin()),
        Op::Acos(_) => un(a.acos()),
        Op::Atan(_) => un(a.atan()),
        Op::Sinh(_) => un(a.sinh()),
        Op::Cosh(_) => un(a.cosh()),
        Op::Asinh(_) => un(a.asinh()),
        Op::Acosh(_) => un(a.acosh()),
        Op::Atanh(_) => un(a.atanh()),
        Op::Erf(_) => un(libm::erf(a)),
        Op::Floor(_) => un(a.floor()),
        Op::Ceil(_) => un(a.ceil()),
        Op::Round(_) => un(a.round_ties_even()),
        Op::Softplus(_) => un(softplus(a)),
        Op::Softsign(_) => un(a / (1.0 + a.abs())),
        Op::Mish(_) => un(a * softplus(a).tanh()),
        Op::HardSwish(_) => un(a * clamp01(a / 6.0 + 0.5)),
        Op::HardSigmoid(o) => un(clamp01(o.alpha as f64 * a + o.beta as f64)),
        Op::LeakyRelu(o) => un(if a < 0.0 { o.alpha as f64 * a } else { a }),
        Op::Elu(o) => un(if a < 0.0 { o.alpha as f64 * (a.exp() - 1.0) } else { a }),
        Op::Selu(o) => {
            let (al, g) = (o.alpha as f64, o.gamma as f64);
            un(g * if a <= 0.0 { al * a.exp() - al } else { a })
        }
        Op::Celu(o) => {
            let al = o.alpha as f64;
            un(a.max(0.0) + (al * ((a / al).exp() - 1.0)).min(0.0))
        }
        Op::ThresholdedRelu(o) => un(if a > o.alpha as f64 { a } else { 0.0 }),
        Op::Gelu(o) => {
            let inner = if o.tanh_approximation {
                ((2.0 / std::f64::consts::PI).sqrt() * (a + 0.044715 * a * a * a)).tanh()
            } else {
                libm::erf(a * std::f64::consts::FRAC_1_SQRT_2)
            };
            un(0.5 * a * (1.0 + inner))
        }
        Op::Swish(o) => un(a * sigmoid(o.alpha as f64 * a)),
        Op::Shrink(o) => {
            let (l, bias) = (o.lambd as f64, o.bias as f64);
            un(if a < -l {
                a + bias
            } else if a > l {
                a - bias
            } else {
                0.0
            })
        }
        Op::Clip(o) => {
            let mut y = a;
            if (o.min as f64) > y {
                y = o.min as f64;
            }
            if (o.max as f64) < y {
                y = o.max as f64;
            }
            un(y)
        }
        Op::IsNaN(_) => c.is_none().then_some(B(a.is_nan())),
        Op::IsInf(o) => c
            .is_none()
            .then_some(B((o.detect_positive && a == f64::INFINITY) || (o.detect_negative && a == f64::NEG_INFINITY))),
        Op::And(_)
        | Op::Or(_)
        | Op::Xor(_)
        | Op::Not(_)
        | Op::BitwiseAnd(_)
        | Op::BitwiseOr(_)
        | Op::BitwiseXor(_)
        | Op::BitwiseNot(_)
        | Op::BitShift(_)
        | not_elementwise!() => None,
    }
}

/// The meaning of an elementwise op on one element of integers of `bits` bits held
/// sign- (`signed`) or zero-extended in an i64; results wrap when stored. Division by 0
/// gives 0; `None` where the op has no integer meaning.
fn int_rule(op: &Op, a: i64, c: Option<i64>, signed: bool, bits: u32) -> Option<i64> {
    let b = |v: bool| v as i64;
    let un = |v: i64| if c.is_none() { Some(v) } else { None };
    let bin = |f: &dyn Fn(i64, i64) -> i64| c.map(|c| f(a, c));
    // Unsigned 64-bit values above i64::MAX compare as u64.
    let lt = |a: i64, c: i64| if signed { a < c } else { (a as u64) < (c as u64) };
    match op {
        Op::Add(_) => bin(&|a, c| a.wrapping_add(c)),
        Op::Sub(_) => bin(&|a, c| a.wrapping_sub(c)),
        Op::Mul(_) => bin(&|a, c| a.wrapping_mul(c)),
        Op::Div(_) => bin(&|a, c| {
            if c == 0 {
                0
            } else if signed {
                a.wrapping_div(c)
            } else {
                ((a as u64) / (c as u64)) as i64
            }
        }),
        Op::Mod(m) => bin(&|a, c| {
            if c == 0 {
                0
            } else if !signed {
                ((a as u64) % (c as u64)) as i64
            } else if m.fmod {
                a.wrapping_rem(c)
            } else {
                let r = a.wrapping_rem(c);
                if r != 0 && (r < 0) != (c < 0) {
                    r + c
                } else {
                    r
                }
            }
        }),
        Op::Max(_) => bin(&|a, c| if lt(a, c) { c } else { a }),
        Op::Min(_) => bin(&|a, c| if lt(c, a) { c } else { a }),
        Op::PRelu(_) => bin(&|a, c| if signed && a < 0 { a.wrapping_mul(c) } else { a }),
        // In double, saturated to the (byte-wide at least) storage width like a float
        // to integer conversion.
        Op::Pow(_) => bin(&|a, c| {
            let w = bits.max(8) as i32;
            let p = (a as f64).powf(c as f64);
            if !signed && w == 64 {
                p as u64 as i64
            } else if signed {
                (p.clamp(-(2f64.powi(w - 1)), 2f64.powi(w - 1) - 1.0)) as i64
            } else {
                p.clamp(0.0, 2f64.powi(w) - 1.0) as i64
            }
        }),
        Op::Equal(_) => bin(&|a, c| b(a == c)),
        Op::Less(_) => bin(&|a, c| b(lt(a, c))),
        Op::LessOrEqual(_) => bin(&|a, c| b(!lt(c, a))),
        Op::Greater(_) => bin(&|a, c| b(lt(c, a))),
        Op::GreaterOrEqual(_) => bin(&|a, c| b(!lt(a, c))),
        Op::And(_) => bin(&|a, c| b(a != 0 && c != 0)),
        Op::Or(_) => bin(&|a, c| b(a != 0 || c != 0)),
        Op::Xor(_) => bin(&|a, c| b((a != 0) != (c != 0))),
        Op::BitwiseAnd(_) => bin(&|a, c| a & c),
        Op::BitwiseOr(_) => bin(&|a, c| a | c),
        Op::BitwiseXor(_) => bin(&|a, c| a ^ c),
        Op::BitShift(o) => bin(&|a, c| {
            // The amount is read unsigned at the type's width; past the width everything
            // is shifted out.
            let amount = if bits == 64 { c as u64 } else { (c as u64) & ((1u64 << bits) - 1) };
            if amount >= bits as u64 {
                if signed && !o.left && a < 0 {
                    -1
                } else {
                    0
                }
            } else if o.left {
                ((a as u64) << amount) as i64
            } else if signed {
                a >> amount
            } else {
                // Held zero-extended: a logical shift of the type's bits.
                let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
                (((a as u64) & mask) >> amount) as i64
            }
        }),
        Op::Not(_) => un(b(a == 0)),
        Op::BitwiseNot(_) => un(!a),
        Op::Neg(_) => un(a.wrapping_neg()),
        Op::Abs(_) => un(if signed { a.wrapping_abs() } else { a }),
        Op::Sign(_) => un(if signed { a.signum() } else { b(a != 0) }),
        Op::Relu(_) => un(if signed { a.max(0) } else { a }),
        Op::Sigmoid(_)
        | Op::Tanh(_)
        | Op::Exp(_)
        | Op::Log(_)
        | Op::Sqrt(_)
        | Op::Reciprocal(_)
        | Op::Sin(_)
        | Op::Cos(_)
        | Op::Tan(_)
        | Op::Asin(_)
        | Op::Acos(_)
        | Op::Atan(_)
        | Op::Sinh(_)
        | Op::Cosh(_)
        | Op::Asinh(_)
        | Op::Acosh(_)
        | Op::Atanh(_)
        | Op::Erf(_)
        | Op::Floor(_)
        | Op::Ceil(_)
        | Op::Round(_)
        | Op::Softplus(_)
        | Op::Softsign(_)
        | Op::Mish(_)
        | Op::HardSwish(_)
        | Op::HardSigmoid(_)
        | Op::LeakyRelu(_)
        | Op::Elu(_)
        | Op::Selu(_)
        | Op::Celu(_)
        | Op::ThresholdedRelu(_)
        | Op::Gelu(_)
        | Op::IsNaN(_)
        | Op::IsInf(_)
        | Op::Clip(_)
        | Op::Swish(_)
        | Op::Shrink(_)
        | not_elementwise!() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::{Add, Gather, Slice};

    fn i64s(dims: &[u64], v: &[i64]) -> TensorData {
        TensorData::from_i64(dims, v).unwrap()
    }

    #[test]
    fn folds_shape_arithmetic() {
        // shape [2,3,4] -> gather index 1 -> 3; then 3 + [10, 20] broadcast.
        let shape = i64s(&[3], &[2, 3, 4]);
        let g =
            eval(&Gather { axis: 0 }.into(), &[shape, i64s(&[], &[1])], &[TensorType::fixed(DType::I64, &[])]).unwrap();
        assert_eq!(g[0].to_i64().unwrap(), vec![3]);
        let s = eval(&Add {}.into(), &[g[0].clone(), i64s(&[2], &[10, 20])], &[TensorType::fixed(DType::I64, &[2])])
            .unwrap();
        assert_eq!(s[0].to_i64().unwrap(), vec![13, 23]);
    }

    #[test]
    fn casts_to_storage_only_types() {
        use dlc_ir::ops::Cast;
        let x = TensorData::from_f32(&[4], &[448.0, 0.5, -1e6, -9.0]).unwrap();
        let f8 = eval(
            &Cast::new(DType::F8E4M3FN).into(),
            std::slice::from_ref(&x),
            &[TensorType::fixed(DType::F8E4M3FN, &[4])],
        );
        // 448 is the largest e4m3fn (S.1111.110), 0.5 is 2^-1 (exponent 6), -1e6 saturates
        // to -448, -9 is 1.125 * 2^3 (S.1010.001).
        assert_eq!(f8.unwrap()[0].bytes(), &[0x7E, 0x30, 0xFE, 0xD1]);
        // Floats saturate into 4-bit integers too: -9 -> -8, 0.5 -> 0 (truncation).
        let i4 = eval(&Cast::new(DType::I4).into(), std::slice::from_ref(&x), &[TensorType::fixed(DType::I4, &[4])])
            .unwrap();
        assert_eq!(i4[0].bytes(), &[7, 0, (-8i8) as u8, (-8i8) as u8]);
        let u2 = eval(&Cast::new(DType::U2).into(), std::slice::from_ref(&x), &[TensorType::fixed(DType::U2, &[4])])
            .unwrap();
        assert_eq!(u2[0].bytes(), &[3, 0, 0, 0]);
        // ... and into 8-bit ones (the kernels' llvm.fptosi.sat).
        let i8 = eval(&Cast::new(DType::I8).into(), std::slice::from_ref(&x), &[TensorType::fixed(DType::I8, &[4])])
            .unwrap();
        assert_eq!(i8[0].bytes(), &[127, 0, 128, (-9i8) as u8]);
        // Integers wrap: 200 -> -56 in int8, 9 -> -7 in int4.
        let ints = i64s(&[2], &[200, 9]);
        let w8 = eval(&Cast::new(DType::I8).into(), std::slice::from_ref(&ints), &[TensorType::fixed(DType::I8, &[2])])
            .unwrap();
        assert_eq!(w8[0].bytes(), &[(-56i8) as u8, 9]);
        let w4 = eval(&Cast::new(DType::I4).into(), std::slice::from_ref(&ints), &[TensorType::fixed(DType::I4, &[2])])
            .unwrap();
        assert_eq!(w4[0].bytes()[1], (-7i8) as u8);
        let no_sat = Cast { to: DType::F8E4M3FN, saturate: false };
        // Without saturation an overflow is e4m3fn's NaN, with the value's sign.
        let r = eval(&no_sat.into(), &[x], &[TensorType::fixed(DType::F8E4M3FN, &[4])]).unwrap();
        assert_eq!(r[0].bytes(), &[0x7E, 0x30, 0xFF, 0xD1]);
    }

    #[test]
    fn slices_with_negative_steps_and_bounds() {
        let x = i64s(&[5], &[0, 1, 2, 3, 4]);
        let op = Slice { starts: vec![-1], ends: vec![i64::MIN], axes: vec![], steps: vec![-2] };
        let r = eval(&op.into(), &[x], &[TensorType::fixed(DType::I64, &[3])]).unwrap();
        assert_eq!(r[0].to_i64().unwrap(), vec![4, 2, 0]);
    }

    #[test]
    fn rejects_out_of_range_gather() {
        let e = eval(
            &Gather { axis: 0 }.into(),
            &[i64s(&[2], &[1, 2]), i64s(&[], &[5])],
            &[TensorType::fixed(DType::I64, &[])],
        );
        assert!(matches!(e, Err(EvalError::Invalid(_))));
    }
}
