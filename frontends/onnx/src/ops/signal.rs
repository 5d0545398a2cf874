//! Window functions (HannWindow, HammingWindow, BlackmanWindow, opset 17): the length
//! is a computed dim when the size is known only at run time; the values are computed
//! in f64 from an Iota as ONNX's reference writes them, then cast to `output_datatype`.
//! DFT (opsets 17-20) as matrix products: the signal's axis moved last and multiplied by
//! cosine and sine tables (computed in f64, stored in f32) for the forward transform,
//! the inverse, the one-sided forward and the one-sided inverse (`irfft`, the Hermitian
//! extension's weights folded into the tables); an axis given at run time (opset 20)
//! computes the transform along every axis and selects one: where the results' shapes
//! differ (one-sided, dft_length), each is zero-padded to the widest and the selected
//! one's shape is cut out by counts computed at run time.
use super::{BuildFn, NodeCx};
use dlc_ir::bind::BindRule;
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("HannWindow", |cx| window(cx, Window::Hann));
    reg.insert("HammingWindow", |cx| window(cx, Window::Hamming));
    reg.insert("BlackmanWindow", |cx| window(cx, Window::Blackman));
    reg.insert("DFT", dft);
    reg.insert("STFT", stft);
    reg.insert("MelWeightMatrix", mel_weight_matrix);
}

/// MelWeightMatrix's operands, in order.
const MEL_OPERANDS: [&str; 5] = ["num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz"];

/// MelWeightMatrix (opset 17) with constant operands (as exported models give them):
/// the matrix computed at import as ONNX's reference computes it (the edges' mel values
/// in the edges' precision, the rest in f64), a constant of `output_datatype`. Operands
/// known only at run time: [`mel_run_time`].
fn mel_weight_matrix(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let to = if cx.has("output_datatype") {
        let code = cx.int("output_datatype", 1) as i32;
        crate::tensor::dtype_from_onnx(code).ok_or_else(|| format!("output_datatype {code} is not supported"))?
    } else {
        DType::F32
    };
    let mut consts = true;
    for i in 0..5 {
        consts &= cx.const_input(i)?.is_some();
    }
    if !consts {
        return mel_run_time(cx, to);
    }
    let mut vals = Vec::new();
    for (i, what) in MEL_OPERANDS.iter().enumerate() {
        let c = cx.const_input(i)?.ok_or("internal: a constant operand")?;
        if c.ty().shape.numel() != Some(1) {
            return Err(format!("{what} must be one value, got {}", c.ty()));
        }
        let single = c.ty().dtype == DType::F32;
        let b = c.bytes();
        let v = match c.ty().dtype {
            DType::F32 => f32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as f64,
            DType::F64 => f64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            _ => c.to_i64().ok_or_else(|| format!("{what} must be a float or an integer"))?[0] as f64,
        };
        vals.push((v, single));
    }
    let (bins, dft, rate) = (vals[0].0 as i64, vals[1].0 as i64, vals[2].0);
    if bins <= 0 || dft <= 0 || rate <= 0.0 {
        return Err(format!("num_mel_bins {bins}, dft_length {dft} and sample_rate {rate} must be positive"));
    }
    let mel = |(hz, single): (f64, bool)| -> f64 {
        if single {
            let h = hz as f32;
            f64::from(2595.0f32 * (h / 700.0).ln_1p() / 10f32.ln())
        } else {
            2595.0 * (hz / 700.0).ln_1p() / 10f64.ln()
        }
    };
    let (lo, hi) = (mel(vals[3]), mel(vals[4]));
    let points = bins as usize + 2;
    let step = (hi - lo) / points as f64;
    let edges: Vec<i64> = (0..points)
        .map(|k| {
            let m = k as f64 * step + lo;
            let hz = 700.0 * (m / 2595.0 * 10f64.ln()).exp_m1();
            (((dft + 1) as f64 * hz) / rate).floor() as i64
        })
        .collect();
    if bins > 1 << 16 || dft > 1 << 24 || (dft / 2 + 1).saturating_mul(bins) > 1 << 26 {
        return Err(format!("a {}x{bins} matrix is too large", dft / 2 + 1));
    }
    let rows = (dft / 2 + 1) as usize;
    let mut out = vec![0f64; rows * bins as usize];
    let mut set = |j: i64, i: usize, v: f64| -> Result<(), String> {
        let j = usize::try_from(j).ok().filter(|&j| j < rows).ok_or_else(|| {
            format!(
                "the mel bands reach bin {j}, past the {rows} bins of a {dft}-point DFT (upper_edge_hertz too high)"
            )
        })?;
        out[j * bins as usize + i] = v;
        Ok(())
    };
    for i in 0..bins as usize {
        let (l, c, h) = (edges[i], edges[i + 1], edges[i + 2]);
        if c == l {
            set(c, i, 1.0)?;
        } else {
            for j in l..=c {
                set(j, i, (j - l) as f64 / (c - l) as f64)?;
            }
        }
        if h > c {
            for j in c..h {
                set(j, i, (h - j) as f64 / (h - c) as f64)?;
            }
        }
    }
    let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = TensorData::new(TensorType::fixed(DType::F64, &[rows as u64, bins as u64]), bytes.into())
        .ok_or("internal: the matrix")?;
    let m = cx.add_const(t);
    cx.add("", Cast::new(to), &[m])
}

/// STFT (opset 17): frames `f * frame_step + [0, L)` of the signal (a Gather by an index
/// table), times the window, each transformed by [`dft_along`] (length `L`, one-sided by
/// default). `L` is the window's length or the constant `frame_length`; a `frame_step`
/// given at run time makes the frame count a computed dim (the artifact's prologue
/// computes `(len - L) / step + 1` before the run).
fn stft(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let t = cx.ty(x);
    let onesided = cx.int("onesided", 1) != 0;
    if t.shape.rank() != 3 || !matches!(t.shape.0[2].fixed(), Some(1) | Some(2)) {
        return Err(format!("the signal must be [batch, length, 1 or 2], got {t}"));
    }
    if onesided && t.shape.0[2].fixed() == Some(2) {
        return Err("a one-sided STFT of a complex signal is not defined".into());
    }
    let mut window = cx.opt_input(2)?;
    let from_window = match window {
        Some(w) => match cx.ty(w).shape.0.as_slice() {
            [d] => Some(d.fixed().ok_or("the window's length must be known at compile time")? as i64),
            _ => return Err(format!("the window must be a vector, got {}", cx.ty(w))),
        },
        None => None,
    };
    let from_attr = match cx.opt_input(3)? {
        None => None,
        Some(v) => match cx.const_input(3)? {
            Some(c) => match c.to_i64().as_deref() {
                Some([n]) => Some(Ok(*n)),
                _ => return Err("frame_length must be one integer".into()),
            },
            None => Some(Err(v)),
        },
    };
    let l = match (from_window, from_attr) {
        (Some(a), Some(Ok(b))) if a != b => return Err(format!("the window has {a} values, frame_length is {b}")),
        (None, Some(Err(v))) => return stft_run_time_length(cx, x, onesided, v),
        (Some(a), Some(Err(v))) => {
            // The window sets the length; frame_length must agree when the model runs.
            let v = cx.add1("frame_length_i64", Cast::new(DType::I64), &[v])?;
            let v = cx.add1("frame_length_vector", Reshape { shape: vec![1], allowzero: false }, &[v])?;
            let a_v = cx.i64_const(&[1], &[a])?;
            let same = cx.add1("frame_length_is_window", Equal {}, &[v, a_v])?;
            let one = cx.add_const(TensorData::from_f32(&[], &[1.0]).ok_or("one")?);
            let unit = checked(cx, "frame_length_check", one, same)?;
            let unit = if t.dtype == DType::F32 {
                unit
            } else {
                cx.add1("frame_length_check_cast", Cast::new(t.dtype), &[unit])?
            };
            let w = window.ok_or("internal: a window")?;
            let w = if cx.ty(w).dtype == t.dtype { w } else { cx.add1("window_as_signal", Cast::new(t.dtype), &[w])? };
            window = Some(cx.add1("window_checked", Mul {}, &[w, unit])?);
            a
        }
        (Some(a), _) | (None, Some(Ok(a))) => a,
        (None, None) => return Err("STFT needs a window or frame_length".into()),
    };
    let len = t.shape.0[1].clone();
    if l <= 0 || l > 1 << 20 || len.fixed().is_some_and(|n| (n as i64) < l) {
        return Err(format!("frames of {l} samples do not fit in a signal of {len}"));
    }
    // The frame count: a constant or an expression of the length for a constant step,
    // a computed dim for a run-time one.
    let (xv, frames, step_v) = match cx.const_input(1)?.and_then(|c| c.to_i64()).as_deref() {
        Some([s]) if *s > 0 => {
            let f = (&len.expr() - &dlc_ir::Expr::c(l)).floor_div(&dlc_ir::Expr::c(*s));
            (x, &f + &dlc_ir::Expr::c(1), None)
        }
        Some(_) => return Err("frame_step must be one positive integer".into()),
        None => {
            let s = cx.input(1)?;
            let s = cx.add1("step_i64", Cast::new(DType::I64), &[s])?;
            let s = cx.add1("step", Reshape { shape: vec![1], allowzero: false }, &[s])?;
            let n = len.fixed().ok_or("a run-time frame_step over a run-time length is not supported yet")?;
            let span = cx.i64_const(&[1], &[n as i64 - l])?;
            let q = cx.add1("frames_less_one", Div {}, &[span, s])?;
            let one = cx.i64_const(&[1], &[1])?;
            let count = cx.add1("frames", Add {}, &[q, one])?;
            let (view, f) = super::bind::computed_dims(cx, x, count, "frames")?;
            (view, f[0].clone(), Some(s))
        }
    };
    // Sample positions [frames, L]: f * step + j.
    let f_iota = cx.add1("frame", Iota { len: frames.to_string(), start: 0, delta: 1, dtype: DType::I64 }, &[])?;
    let f_col = cx.add1("frame_col", Reshape { shape: vec![-1, 1], allowzero: false }, &[f_iota])?;
    let step = match step_v {
        Some(s) => s,
        None => {
            let s = cx.const_input(1)?.and_then(|c| c.to_i64()).and_then(|v| v.first().copied()).unwrap_or(1);
            cx.i64_const(&[1], &[s])?
        }
    };
    let starts = cx.add1("starts", Mul {}, &[f_col, step])?;
    let offsets: Vec<i64> = (0..l).collect();
    let offsets = cx.i64_const(&[1, l as u64], &offsets)?;
    let at = cx.add1("positions", Add {}, &[starts, offsets])?;
    let mut y = cx.add1("frames_of", Gather { axis: 1 }, &[xv, at])?;
    if let Some(w) = window {
        let wd = cx.ty(w).dtype;
        let w = if wd == t.dtype { w } else { cx.add1("window_cast", Cast::new(t.dtype), &[w])? };
        let w = cx.add1("window_col", Reshape { shape: vec![1, 1, l, 1], allowzero: false }, &[w])?;
        y = cx.add1("windowed", Mul {}, &[y, w])?;
    }
    let yf = if t.dtype == DType::F32 { y } else { cx.add1("as_f32", Cast::new(DType::F32), &[y])? };
    let out = dft_along(cx, yf, &Dft { axis: 2, inverse: false, onesided, len: Some(l) }, "")?;
    cx.add("", Cast::new(t.dtype), &[out])
}

/// STFT whose frame_length is known only at run time (no window): the frame length
/// `L`, the bin count `K` (`L / 2 + 1` one-sided, else `L`) and the frame count `F` are
/// computed dims; `1 <= L <= ` the signal's length is checked when the model runs (a Bind
/// of rule `extent` each), and the DFT's cosine and sine tables `[L, K]` are computed
/// then (in f32, from the exact integer `j * k mod L`).
fn stft_run_time_length(cx: &mut NodeCx, x: Value, onesided: bool, lv: Value) -> Result<Vec<Value>, String> {
    let t = cx.ty(x);
    let n = t.shape.0[1].fixed().ok_or("a run-time frame_length over a run-time signal length is not supported yet")?;
    let lv = cx.add1("frame_length_i64", Cast::new(DType::I64), &[lv])?;
    let lv = cx.add1("frame_length_vector", Reshape { shape: vec![1], allowzero: false }, &[lv])?;
    // 0 <= L <= n, then 0 <= L - 1: the views the frames are read from.
    let xv = super::bind::bind(cx, "frame_length_fits", x, lv, BindRule::Extent { axis: 1 })?;
    let one = cx.i64_const(&[1], &[1])?;
    let l_less = cx.add1("frame_length_less_one", Sub {}, &[lv, one])?;
    let xv = super::bind::bind(cx, "frame_length_positive", xv, l_less, BindRule::Extent { axis: 1 })?;
    let step = match cx.const_input(1)?.and_then(|c| c.to_i64()).as_deref() {
        Some([s]) if *s > 0 => cx.i64_const(&[1], &[*s])?,
        Some(_) => return Err("frame_step must be one positive integer".into()),
        None => {
            let s = cx.input(1)?;
            let s = cx.add1("step_i64", Cast::new(DType::I64), &[s])?;
            let s = cx.add1("step", Reshape { shape: vec![1], allowzero: false }, &[s])?;
            // A step below 1 fails the run.
            let positive = cx.add1("step_is_positive", GreaterOrEqual {}, &[s, one])?;
            checked(cx, "step_check", s, positive)?
        }
    };
    let span = cx.i64_const(&[1], &[n as i64])?;
    let span = cx.add1("span", Sub {}, &[span, lv])?;
    let q = cx.add1("frames_less_one", Div {}, &[span, step])?;
    let frames = cx.add1("frames", Add {}, &[q, one])?;
    let zero = cx.i64_const(&[1], &[0])?;
    let frames = cx.add1("frames_nonnegative", Max {}, &[frames, zero])?;
    let bins = if onesided {
        let two = cx.i64_const(&[1], &[2])?;
        let h = cx.add1("half", Div {}, &[lv, two])?;
        cx.add1("bins", Add {}, &[h, one])?
    } else {
        lv
    };
    let dims = cx.add1("extents", Concat { axis: 0 }, &[lv, bins, frames])?;
    let (xv, e) = super::bind::computed_dims(cx, xv, dims, "stft")?;
    let [le, ke, fe] = &e[..] else { return Err("internal: three computed dims".into()) };
    let iota = |cx: &mut NodeCx, what: &str, len: &dlc_ir::Expr, dt: DType| {
        cx.add1(what, Iota { len: len.to_string(), start: 0, delta: 1, dtype: dt }, &[])
    };
    // Sample positions [F, L]: f * step + j.
    let f_iota = iota(cx, "frame", fe, DType::I64)?;
    let f_col = cx.add1("frame_col", Reshape { shape: vec![-1, 1], allowzero: false }, &[f_iota])?;
    let starts = cx.add1("starts", Mul {}, &[f_col, step])?;
    let j = iota(cx, "offset", le, DType::I64)?;
    let j_row = cx.add1("offset_row", Reshape { shape: vec![1, -1], allowzero: false }, &[j])?;
    let at = cx.add1("positions", Add {}, &[starts, j_row])?;
    let y = cx.add1("frames_of", Gather { axis: 1 }, &[xv, at])?;
    let y = if t.dtype == DType::F32 { y } else { cx.add1("as_f32", Cast::new(DType::F32), &[y])? };
    // The tables [L, K]: angle 2 pi (j k mod L) / L.
    let j_col = cx.add1("offset_col", Reshape { shape: vec![-1, 1], allowzero: false }, &[j])?;
    let k = iota(cx, "bin", ke, DType::I64)?;
    let k_row = cx.add1("bin_row", Reshape { shape: vec![1, -1], allowzero: false }, &[k])?;
    let jk = cx.add1("jk", Mul {}, &[j_col, k_row])?;
    let modulus = cx.add1("modulus", Max {}, &[lv, one])?;
    let m = cx.add1("jk_mod", Mod { fmod: false }, &[jk, modulus])?;
    let m = cx.add1("jk_f32", Cast::new(DType::F32), &[m])?;
    let lf = cx.add1("length_f32", Cast::new(DType::F32), &[modulus])?;
    let tau = cx.add_const(TensorData::from_f32(&[1], &[std::f32::consts::TAU]).ok_or("tau")?);
    let w = cx.add1("angular_step", Div {}, &[tau, lf])?;
    let angle = cx.add1("angle", Mul {}, &[m, w])?;
    let c = cx.add1("cos", Cos {}, &[angle])?;
    let s = cx.add1("sin", Sin {}, &[angle])?;
    let ns = cx.add1("minus_sin", Neg {}, &[s])?;
    let (b, f) = (t.shape.0[0].expr().to_string(), fe.to_string());
    let part = |cx: &mut NodeCx, i: i64| -> Result<Value, String> {
        let op = Slice { starts: vec![i], ends: vec![i + 1], axes: vec![3], steps: vec![] };
        let p = cx.add1(&format!("part{i}"), op, &[y])?;
        cx.add1(&format!("part{i}_flat"), View { dims: format!("{b};{f};{le}") }, &[p])
    };
    let re = part(cx, 0)?;
    let mm =
        |cx: &mut NodeCx, what: &str, a: Value, tb: Value| cx.add1(what, MatMul { act: Activation::None }, &[a, tb]);
    let mut out_re = mm(cx, "re_cos", re, c)?;
    let mut out_im = mm(cx, "re_sin", re, ns)?;
    if t.shape.0[2].fixed() == Some(2) {
        let im = part(cx, 1)?;
        let a = mm(cx, "im_sin", im, s)?;
        out_re = cx.add1("real", Add {}, &[out_re, a])?;
        let b2 = mm(cx, "im_cos", im, c)?;
        out_im = cx.add1("imaginary", Add {}, &[out_im, b2])?;
    }
    let last = format!("{b};{f};{ke};1");
    let out_re = cx.add1("real_last", View { dims: last.clone() }, &[out_re])?;
    let out_im = cx.add1("imaginary_last", View { dims: last }, &[out_im])?;
    let out = cx.add1("complex", Concat { axis: 3 }, &[out_re, out_im])?;
    cx.add("", Cast::new(t.dtype), &[out])
}

/// `v` once the boolean `ok` (broadcastable to one element) holds when the model runs:
/// a Gather of `v` (as a one-element vector) at index 0, or at index 1 when `ok` is false,
/// which fails the run at the Gather's index check (naming the node `what`). The result
/// has `v`'s shape.
fn checked(cx: &mut NodeCx, what: &str, v: Value, ok: Value) -> Result<Value, String> {
    let shape: Vec<i64> = cx.ty(v).shape.0.iter().map(|d| d.fixed().map_or(-1, |n| n as i64)).collect();
    let v1 = cx.add1(&format!("{what}_vector"), Reshape { shape: vec![1], allowzero: false }, &[v])?;
    let ok = cx.add1(&format!("{what}_condition"), Reshape { shape: vec![1], allowzero: false }, &[ok])?;
    let (i0, i1) = (cx.i64_const(&[1], &[0])?, cx.i64_const(&[1], &[1])?);
    let idx = cx.add1(&format!("{what}_index"), Where {}, &[ok, i0, i1])?;
    let g = cx.add1(what, Gather { axis: 0 }, &[v1, idx])?;
    cx.add1(&format!("{what}_shaped"), Reshape { shape, allowzero: false }, &[g])
}

/// The DFT's settings for one axis of an input of `dims` (the last dim 1 or 2).
struct Dft {
    axis: usize,
    inverse: bool,
    onesided: bool,
    len: Option<i64>,
}

/// A row-major `[l, k]` table for the real parts and one for the imaginary parts.
type Tables = (Vec<f32>, Vec<f32>);

/// The tables `(a, b)` with `out = re . a + im . b` for each output component (real,
/// then imaginary when the result is complex), `[l, k]` each, and the output length.
fn dft_tables(d: &Dft, l: usize) -> (Vec<Tables>, usize) {
    let n = match d.len {
        Some(n) => n as usize,
        None if d.inverse && d.onesided => 2 * l.saturating_sub(1),
        None => l,
    };
    let tau = 2.0 * std::f64::consts::PI;
    let angle = |t: usize, k: usize| tau * ((t * k) % n.max(1)) as f64 / n.max(1) as f64;
    let table = |k_out: usize, f: &dyn Fn(usize, usize) -> f64| -> Vec<f32> {
        (0..l).flat_map(|t| (0..k_out).map(move |k| (t, k))).map(|(t, k)| f(t, k) as f32).collect()
    };
    // Input positions past n are dropped (numpy's truncation); short inputs are padded.
    let inside = |t: usize| t < n;
    if !d.inverse {
        let k_out = if d.onesided { n / 2 + 1 } else { n };
        let c = |t: usize, k: usize| if inside(t) { angle(t, k).cos() } else { 0.0 };
        let s = |t: usize, k: usize| if inside(t) { angle(t, k).sin() } else { 0.0 };
        let re = (table(k_out, &c), table(k_out, &s));
        let im = (table(k_out, &|t, k| -s(t, k)), table(k_out, &c));
        (vec![re, im], k_out)
    } else if !d.onesided {
        let nf = n.max(1) as f64;
        let c = |t: usize, k: usize| if inside(t) { angle(t, k).cos() / nf } else { 0.0 };
        let s = |t: usize, k: usize| if inside(t) { angle(t, k).sin() / nf } else { 0.0 };
        let re = (table(n, &c), table(n, &|t, k| -s(t, k)));
        let im = (table(n, &s), table(n, &c));
        (vec![re, im], n)
    } else {
        // irfft: frequencies k < n/2 + 1 (rows), real output of n; the others are the
        // conjugates (weight 2), except 0 and n/2 for an even n (weight 1).
        let nf = n.max(1) as f64;
        let w = |k: usize| if k == 0 || (n.is_multiple_of(2) && k == n / 2) { 1.0 } else { 2.0 };
        let used = |k: usize| k <= n / 2;
        let c = |k: usize, t: usize| if used(k) { w(k) * angle(k, t).cos() / nf } else { 0.0 };
        let s = |k: usize, t: usize| if used(k) { -w(k) * angle(k, t).sin() / nf } else { 0.0 };
        (vec![(table(n, &c), table(n, &s))], n)
    }
}

/// DFT along `d.axis` of `x` (`[..., 1 or 2]`, f32).
fn dft_along(cx: &mut NodeCx, x: Value, d: &Dft, tag: &str) -> Result<Value, String> {
    let t = cx.ty(x);
    let r = t.shape.rank();
    // The transformed axis and the last one must be known; others may be run-time dims.
    let (Some(c), Some(l)) = (t.shape.0[r - 1].fixed(), t.shape.0[d.axis].fixed()) else {
        return Err(format!("DFT needs a known length along axis {} and a known last dim, got {t}", d.axis));
    };
    let l = l as usize;
    let dims: Vec<String> = t.shape.0.iter().map(|x| x.expr().to_string()).collect();
    let n = d.len.map_or(if d.inverse && d.onesided { 2 * l.saturating_sub(1) } else { l }, |n| n as usize);
    if n == 0 || l == 0 {
        return Err(format!("a DFT of length {n} over {l} elements along axis {} of {t}", d.axis));
    }
    // The real and imaginary parts, as [..] (the last dim dropped).
    let part = |cx: &mut NodeCx, j: i64| -> Result<Value, String> {
        let op = Slice { starts: vec![j], ends: vec![j + 1], axes: vec![r as i64 - 1], steps: vec![] };
        let p = cx.add1(&format!("{tag}part{j}"), op, &[x])?;
        cx.add1(&format!("{tag}part{j}_flat"), View { dims: dims[..r - 1].join(";") }, &[p])
    };
    let re = part(cx, 0)?;
    let im = if c == 2 { Some(part(cx, 1)?) } else { None };
    // The axis moved last.
    let mut perm: Vec<i64> = (0..r as i64 - 1).filter(|&i| i != d.axis as i64).collect();
    perm.push(d.axis as i64);
    let mut back = vec![0i64; r - 1];
    for (i, &p) in perm.iter().enumerate() {
        back[p as usize] = i as i64;
    }
    let last =
        |cx: &mut NodeCx, v: Value, w: &str| cx.add1(&format!("{tag}{w}_t"), Transpose { perm: perm.clone() }, &[v]);
    let re_t = last(cx, re, "re")?;
    let im_t = match im {
        Some(v) => Some(last(cx, v, "im")?),
        None => None,
    };
    let (tables, k_out) = dft_tables(d, l);
    let mut comps = Vec::new();
    for (j, (a, b)) in tables.into_iter().enumerate() {
        let at = cx.add_const(TensorData::from_f32(&[l as u64, k_out as u64], &a).ok_or("table")?);
        let mut y = cx.add1(&format!("{tag}c{j}_re"), MatMul { act: Activation::None }, &[re_t, at])?;
        if let Some(im_t) = im_t {
            let bt = cx.add_const(TensorData::from_f32(&[l as u64, k_out as u64], &b).ok_or("table")?);
            let z = cx.add1(&format!("{tag}c{j}_im"), MatMul { act: Activation::None }, &[im_t, bt])?;
            y = cx.add1(&format!("{tag}c{j}"), Add {}, &[y, z])?;
        }
        let y = cx.add1(&format!("{tag}c{j}_back"), Transpose { perm: back.clone() }, &[y])?;
        let mut od: Vec<String> = cx.ty(y).shape.0.iter().map(|x| x.expr().to_string()).collect();
        od.push("1".into());
        comps.push(cx.add1(&format!("{tag}c{j}_last"), View { dims: od.join(";") }, &[y])?);
    }
    if comps.len() == 1 {
        return Ok(comps[0]);
    }
    cx.add1(&format!("{tag}complex"), Concat { axis: r as i64 - 1 }, &comps)
}

fn dft(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let t = cx.ty(x);
    let r = t.shape.rank();
    if r < 2 || !matches!(t.shape.0[r - 1].fixed(), Some(1) | Some(2)) {
        return Err(format!("the signal must end in a dim of 1 (real) or 2 (complex), got {t}"));
    }
    let inverse = cx.int("inverse", 0) != 0;
    let onesided = cx.int("onesided", 0) != 0;
    if onesided && !inverse && t.shape.0[r - 1].fixed() == Some(2) {
        return Err("a one-sided DFT of a complex signal is not defined".into());
    }
    let len = match cx.opt_input(1)? {
        None => None,
        Some(_) => match cx.const_input(1)? {
            Some(c) => match c.to_i64().as_deref() {
                Some([n]) if *n > 0 => Some(*n),
                _ => return Err("dft_length must be one positive integer".into()),
            },
            None => return Err("dft_length (input 1) known only at run time is not supported yet".into()),
        },
    };
    let dtype = t.dtype;
    let xf = if dtype == DType::F32 { x } else { cx.add1("as_f32", Cast::new(DType::F32), &[x])? };
    // The axis: an attribute (opsets 17-19), or operand 2 (opset 20: constant or run-time).
    let axis_of = |a: i64| -> Result<usize, String> {
        let n = if a < 0 { a + r as i64 } else { a };
        (0..r as i64 - 1).contains(&n).then_some(n as usize).ok_or_else(|| format!("axis {a} out of range for {t}"))
    };
    let y = if cx.opset < 20 {
        let axis = axis_of(cx.int("axis", 1))?;
        dft_along(cx, xf, &Dft { axis, inverse, onesided, len }, "")?
    } else {
        match cx.opt_input(2)? {
            None => dft_along(cx, xf, &Dft { axis: axis_of(-2)?, inverse, onesided, len }, "")?,
            Some(_) if cx.const_input(2)?.is_some() => {
                let a = cx.const_input(2)?.and_then(|c| c.to_i64()).and_then(|v| v.first().copied());
                let axis = axis_of(a.ok_or("axis must be one integer")?)?;
                dft_along(cx, xf, &Dft { axis, inverse, onesided, len }, "")?
            }
            Some(av) => {
                // At run time: every axis whose result has the first one's shape, selected
                // by the value (an axis whose result differs fails the run).
                let av = cx.add1("axis_i64", Cast::new(DType::I64), &[av])?;
                let av = cx.add1("axis_scalar", Reshape { shape: vec![], allowzero: false }, &[av])?;
                let rv = cx.i64_const(&[], &[r as i64])?;
                let zero = cx.i64_const(&[], &[0])?;
                let neg = cx.add1("axis_negative", Less {}, &[av, zero])?;
                let up = cx.add1("axis_up", Add {}, &[av, rv])?;
                let av = cx.add1("axis_normalised", Where {}, &[neg, up, av])?;
                // Every axis's result; where their shapes differ (a one-sided transform, a
                // dft_length) and all dims are known, each is zero-padded to the largest
                // shape, one is selected, and the selected axis's shape is cut out by
                // run-time counts; otherwise only the results of the first one's shape are
                // candidates.
                let mut cands: Vec<(usize, Value)> = Vec::new();
                for a in 0..r - 1 {
                    // An axis the transform cannot run along (length 0) is not a candidate.
                    if let Ok(y) = dft_along(cx, xf, &Dft { axis: a, inverse, onesided, len }, &format!("axis{a}_")) {
                        cands.push((a, y));
                    }
                }
                let fixed: Option<Vec<Vec<u64>>> = cands
                    .iter()
                    .map(|&(_, y)| cx.ty(y).shape.0.iter().map(|d| d.fixed()).collect::<Option<Vec<u64>>>())
                    .collect();
                let widest: Option<Vec<u64>> =
                    fixed.as_ref().map(|f| (0..r).map(|i| f.iter().map(|s| s[i]).max().unwrap_or(0)).collect());
                if let (Some(shapes), Some(widest)) = (&fixed, &widest) {
                    for ((_, y), s) in cands.iter_mut().zip(shapes) {
                        if s != widest {
                            let mut pads = vec![0i64; 2 * r];
                            for i in 0..r {
                                pads[r + i] = (widest[i] - s[i]) as i64;
                            }
                            let op = Pad { mode: PadMode::Constant, pads, value: 0.0, exprs: String::new() };
                            *y = cx.add1(&format!("{}_padded", cx.imp.graph.node(y.node).name), op, &[*y])?;
                        }
                    }
                } else {
                    let first = cands.first().map(|&(_, y)| cx.ty(y));
                    cands.retain(|&(_, y)| Some(cx.ty(y)) == first);
                }
                let mut picked: Option<(Value, Value)> = None;
                let mut hits = Vec::new();
                for &(a, y) in &cands {
                    let is = cx.i64_const(&[], &[a as i64])?;
                    let hit = cx.add1(&format!("axis_is_{a}"), Equal {}, &[av, is])?;
                    hits.push(hit);
                    picked = Some(match picked {
                        None => (y, hit),
                        Some((p, any)) => {
                            let sel = cx.add1(&format!("select{a}"), Where {}, &[hit, y, p])?;
                            (sel, cx.add1(&format!("any{a}"), Or {}, &[any, hit])?)
                        }
                    });
                }
                let (mut y, any) = picked.ok_or("no axis to transform")?;
                // An axis none of the candidates covers: index 1 into a 1-element tensor
                // fails the run at the Gather's index check.
                let one = cx.add_const(TensorData::from_f32(&[], &[1.0]).ok_or("one")?);
                let unit = checked(cx, "axis_check", one, any)?;
                y = cx.add1("checked", Mul {}, &[y, unit])?;
                if let (Some(shapes), Some(widest)) = (&fixed, &widest) {
                    for i in 0..r {
                        if shapes.iter().all(|s| s[i] == widest[i]) {
                            continue;
                        }
                        // The selected axis's extent along dim i: a chain of Wheres.
                        let mut count = cx.i64_const(&[], &[widest[i] as i64])?;
                        for (s, &hit) in shapes.iter().zip(&hits) {
                            if s[i] != widest[i] {
                                let n = cx.i64_const(&[], &[s[i] as i64])?;
                                count = cx.add1(&format!("extent{i}"), Where {}, &[hit, n, count])?;
                            }
                        }
                        let count = cx.add1(
                            &format!("extent{i}_vector"),
                            Reshape { shape: vec![1], allowzero: false },
                            &[count],
                        )?;
                        y = super::bind::first_slices(cx, &format!("cut{i}"), y, count, i)?;
                    }
                }
                y
            }
        }
    };
    cx.add("", Cast::new(dtype), &[y])
}

#[derive(Clone, Copy)]
enum Window {
    Hann,
    Hamming,
    Blackman,
}

fn f64_const(cx: &mut NodeCx, v: f64) -> Result<Value, String> {
    let t = TensorData::new(TensorType::fixed(DType::F64, &[1]), v.to_le_bytes().to_vec().into());
    Ok(cx.add_const(t.ok_or("internal: an f64 constant")?))
}

/// MelWeightMatrix with operands known only at run time: the matrix's `[dft_length / 2 +
/// 1, num_mel_bins]` extents are computed dims, and its values the reference's loops as
/// one elementwise expression over bin `j` and band `i` (band edges `l <= c <= h` from an
/// Iota of the band numbers, in f64): `(j - l) / (c - l)` on `l <= j <= c` (1 at `j == c`
/// when `c == l`), overwritten by `(h - j) / (h - c)` on `c <= j < h`. Bands that reach
/// past the last bin fail the run (the reference's index error) at node
/// `…/mel_bands_past_the_dft_bins`.
fn mel_run_time(cx: &mut NodeCx, to: DType) -> Result<Vec<Value>, String> {
    let mut ops = Vec::with_capacity(5);
    for (i, what) in MEL_OPERANDS.iter().enumerate() {
        let v = cx.input(i)?;
        let t = cx.ty(v);
        let numeric = t.dtype.is_float() || t.dtype.is_signed_int();
        if t.shape.numel() != Some(1) || !numeric || (i < 2 && !t.dtype.is_signed_int()) {
            let kind = if i < 2 { "one integer" } else { "one number" };
            return Err(format!("{what} (input {i}) must be {kind}, got {t}"));
        }
        let v = cx.add1(&format!("{what}_1"), Reshape { shape: vec![1], allowzero: false }, &[v])?;
        ops.push((v, t.dtype));
    }
    let f64_of = |cx: &mut NodeCx, (v, d): (Value, DType), what: &str| -> Result<Value, String> {
        if d == DType::F64 {
            return Ok(v);
        }
        cx.add1(&format!("{what}_f64"), Cast::new(DType::F64), &[v])
    };
    // The extents: [dft_length / 2 + 1, num_mel_bins].
    let bins = cx.add1("bins_i64", Cast::new(DType::I64), &[ops[0].0])?;
    let dft = cx.add1("dft_i64", Cast::new(DType::I64), &[ops[1].0])?;
    let two = cx.i64_const(&[1], &[2])?;
    let one = cx.i64_const(&[1], &[1])?;
    let half = cx.add1("dft_half", Div {}, &[dft, two])?;
    let rows = cx.add1("rows", Add {}, &[half, one])?;
    let shape = cx.add1("mel_shape", Concat { axis: 0 }, &[rows, bins])?;
    // The edges' mel values in the edges' precision (f32 edges: f32 arithmetic).
    let mel = |cx: &mut NodeCx, (v, d): (Value, DType), what: &str| -> Result<Value, String> {
        let d = if d == DType::F64 { d } else { DType::F32 };
        let v = cx.add1(&format!("{what}_hz"), Cast::new(d), &[v])?;
        let c = |cx: &mut NodeCx, x: f64| -> Result<Value, String> {
            let b = if d == DType::F64 { x.to_le_bytes().to_vec() } else { (x as f32).to_le_bytes().to_vec() };
            Ok(cx.add_const(TensorData::new(TensorType::fixed(d, &[1]), b.into()).ok_or("internal: a constant")?))
        };
        let (k700, k1, kln10, k2595) = (c(cx, 700.0)?, c(cx, 1.0)?, c(cx, 10f64.ln())?, c(cx, 2595.0)?);
        let x = cx.add1(&format!("{what}_over_700"), Div {}, &[v, k700])?;
        let x = cx.add1(&format!("{what}_plus_1"), Add {}, &[x, k1])?;
        let x = cx.add1(&format!("{what}_ln"), Log {}, &[x])?;
        let x = cx.add1(&format!("{what}_log10"), Div {}, &[x, kln10])?;
        let x = cx.add1(&format!("{what}_mel"), Mul {}, &[x, k2595])?;
        cx.add1(&format!("{what}_mel_f64"), Cast::new(DType::F64), &[x])
    };
    let lo = mel(cx, ops[3], "lower")?;
    let hi = mel(cx, ops[4], "upper")?;
    let (lo, ext) = super::bind::computed_dims(cx, lo, shape, "mel_shape")?;
    let (rows_e, bins_e) = (ext[0].clone(), ext[1].clone());
    let rate = f64_of(cx, ops[2], "sample_rate")?;
    let dft_f = f64_of(cx, (dft, DType::I64), "dft")?;
    let bins_f = f64_of(cx, (bins, DType::I64), "bins")?;
    let k2 = f64_const(cx, 2.0)?;
    let points = cx.add1("points", Add {}, &[bins_f, k2])?;
    let span = cx.add1("mel_span", Sub {}, &[hi, lo])?;
    let step = cx.add1("mel_step", Div {}, &[span, points])?;
    let k1 = f64_const(cx, 1.0)?;
    let scale = cx.add1("dft_plus_1", Add {}, &[dft_f, k1])?;
    // Edge `k + e` of band `k`: floor((dft + 1) * hz(lo + (k + e) * step) / rate).
    let edge = |cx: &mut NodeCx, e: i64, what: &str| -> Result<Value, String> {
        let k = cx.add1(
            &format!("{what}_k"),
            Iota { len: bins_e.to_string(), start: e, delta: 1, dtype: DType::F64 },
            &[],
        )?;
        let m = cx.add1(&format!("{what}_mstep"), Mul {}, &[k, step])?;
        let m = cx.add1(&format!("{what}_m"), Add {}, &[m, lo])?;
        let kexp = f64_const(cx, 10f64.ln() / 2595.0)?;
        let x = cx.add1(&format!("{what}_x"), Mul {}, &[m, kexp])?;
        let x = cx.add1(&format!("{what}_exp"), Exp {}, &[x])?;
        let x = cx.add1(&format!("{what}_expm1"), Sub {}, &[x, k1])?;
        let k700 = f64_const(cx, 700.0)?;
        let hz = cx.add1(&format!("{what}_hz"), Mul {}, &[x, k700])?;
        let b = cx.add1(&format!("{what}_scaled"), Mul {}, &[hz, scale])?;
        let b = cx.add1(&format!("{what}_over_rate"), Div {}, &[b, rate])?;
        let b = cx.add1(&format!("{what}_bin"), Floor {}, &[b])?;
        cx.add1(&format!("{what}_1i"), Reshape { shape: vec![1, -1], allowzero: false }, &[b])
    };
    let (l, c, h) = (edge(cx, 0, "low")?, edge(cx, 1, "center")?, edge(cx, 2, "high")?);
    let j = cx.add1("j", Iota { len: rows_e.to_string(), start: 0, delta: 1, dtype: DType::F64 }, &[])?;
    let j = cx.add1("j_col", Reshape { shape: vec![-1, 1], allowzero: false }, &[j])?;
    let zero = f64_const(cx, 0.0)?;
    // Rising edge (and the single 1 of a band of no width).
    let ge_l = cx.add1("j_ge_low", GreaterOrEqual {}, &[j, l])?;
    let le_c = cx.add1("j_le_center", LessOrEqual {}, &[j, c])?;
    let rising = cx.add1("rising", And {}, &[ge_l, le_c])?;
    let jl = cx.add1("j_minus_low", Sub {}, &[j, l])?;
    let cl = cx.add1("center_minus_low", Sub {}, &[c, l])?;
    let up = cx.add1("up", Div {}, &[jl, cl])?;
    let flat = cx.add1("no_width", Equal {}, &[c, l])?;
    let at_c = cx.add1("j_at_center", Equal {}, &[j, c])?;
    let one_at_c = cx.add1("one_at_center", Where {}, &[at_c, k1, zero])?;
    let up = cx.add1("up_or_one", Where {}, &[flat, one_at_c, up])?;
    let v = cx.add1("rising_part", Where {}, &[rising, up, zero])?;
    // Falling edge, written after (it wins at the center).
    let ge_c = cx.add1("j_ge_center", GreaterOrEqual {}, &[j, c])?;
    let lt_h = cx.add1("j_lt_high", Less {}, &[j, h])?;
    let falling = cx.add1("falling", And {}, &[ge_c, lt_h])?;
    let hj = cx.add1("high_minus_j", Sub {}, &[h, j])?;
    let hc = cx.add1("high_minus_center", Sub {}, &[h, c])?;
    let down = cx.add1("down", Div {}, &[hj, hc])?;
    let v = cx.add1("weights", Where {}, &[falling, down, v])?;
    // The last bin any band writes, max(c, h - 1), must be a row of the matrix.
    let h1 = cx.add1("high_last", Sub {}, &[h, k1])?;
    let reach = cx.add1("reach", Max {}, &[c, h1])?;
    let reach = cx.add1("reach_max", ReduceMax { axes: vec![], keepdims: false }, &[reach])?;
    let rows_f = f64_of(cx, (rows, DType::I64), "rows")?;
    let rows_f = cx.add1("rows_scalar", Reshape { shape: vec![], allowzero: false }, &[rows_f])?;
    let ok = cx.add1("bands_fit", Less {}, &[reach, rows_f])?;
    let pos = cx.add1("row_positions", Iota { len: rows_e.to_string(), start: 0, delta: 1, dtype: DType::I64 }, &[])?;
    let bad = cx.i64_const(&[], &[i64::MAX])?;
    let pos = cx.add1("row_positions_checked", Where {}, &[ok, pos, bad])?;
    let v = cx.add1("mel_bands_past_the_dft_bins", Gather { axis: 0 }, &[v, pos])?;
    cx.add("", Cast::new(to), &[v])
}

/// `a * cos(k * theta) ` for the angles `theta`.
fn cos_term(cx: &mut NodeCx, theta: Value, k: f64, a: f64, what: &str) -> Result<Value, String> {
    let kc = f64_const(cx, k)?;
    let x = cx.add1(&format!("{what}_angle"), Mul {}, &[theta, kc])?;
    let c = cx.add1(&format!("{what}_cos"), Cos {}, &[x])?;
    let ac = f64_const(cx, a)?;
    cx.add1(&format!("{what}_scaled"), Mul {}, &[c, ac])
}

fn window(cx: &mut NodeCx, kind: Window) -> Result<Vec<Value>, String> {
    let size = cx.input(0)?;
    let st = cx.ty(size);
    if st.shape.numel() != Some(1) || !st.dtype.is_signed_int() {
        return Err(format!("size must be one integer, got {st}"));
    }
    let code = cx.int("output_datatype", 1) as i32;
    let out = crate::tensor::dtype_from_onnx(code)
        .filter(|d| d.is_float() || d.is_signed_int())
        .ok_or_else(|| format!("output_datatype {code} is not a numeric type dlc supports"))?;
    let periodic = cx.int("periodic", 1) != 0;
    let n = cx.add1("size_i64", Cast::new(DType::I64), &[size])?;
    let n = cx.add1("size_1", Reshape { shape: vec![1], allowzero: false }, &[n])?;
    let nf = cx.add1("size_f64", Cast::new(DType::F64), &[n])?;
    let (nf, len) = super::bind::computed_dims(cx, nf, n, "size")?;
    let denom = if periodic {
        nf
    } else {
        let one = f64_const(cx, 1.0)?;
        cx.add1("denominator", Sub {}, &[nf, one])?
    };
    let i = cx.add1("n", Iota { len: len[0].to_string(), start: 0, delta: 1, dtype: DType::F64 }, &[])?;
    // theta = 2 pi n / N (N the denominator).
    let two_pi = f64_const(cx, 2.0 * std::f64::consts::PI)?;
    let a = cx.add1("two_pi_n", Mul {}, &[i, two_pi])?;
    let theta = cx.add1("theta", Div {}, &[a, denom])?;
    let y = match kind {
        Window::Hann => {
            // sin^2(pi n / N) = 0.5 - 0.5 cos(2 pi n / N).
            let half = f64_const(cx, 0.5)?;
            let c = cos_term(cx, theta, 1.0, 0.5, "c1")?;
            cx.add1("window", Sub {}, &[half, c])?
        }
        Window::Hamming => {
            let alpha = 25.0 / 46.0;
            let a = f64_const(cx, alpha)?;
            let c = cos_term(cx, theta, 1.0, 1.0 - alpha, "c1")?;
            cx.add1("window", Sub {}, &[a, c])?
        }
        Window::Blackman => {
            let c1 = cos_term(cx, theta, 1.0, -0.5, "c1")?;
            let c2 = cos_term(cx, theta, 2.0, 0.08, "c2")?;
            let s = cx.add1("sum", Add {}, &[c1, c2])?;
            let a = f64_const(cx, 0.42)?;
            cx.add1("window", Add {}, &[s, a])?
        }
    };
    cx.add("", Cast::new(out), &[y])
}
