//! Window functions (HannWindow, HammingWindow, BlackmanWindow, opset 17): the length
//! is a computed dim when the size is known only at run time; the values are computed
//! in f64 from an Iota as ONNX's reference writes them, then cast to `output_datatype`.
//! DFT (opsets 17-20) as matrix products: the signal's axis moved last and multiplied by
//! cosine and sine tables (computed in f64, stored in f32) for the forward transform,
//! the inverse, the one-sided forward and the one-sided inverse (`irfft`, the Hermitian
//! extension's weights folded into the tables); an axis given at run time (opset 20)
//! computes the transform along every axis whose result has the same shape and
//! selects one.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("HannWindow", |cx| window(cx, Window::Hann));
    reg.insert("HammingWindow", |cx| window(cx, Window::Hamming));
    reg.insert("BlackmanWindow", |cx| window(cx, Window::Blackman));
    reg.insert("DFT", dft);
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
    let dims = t.shape.as_fixed().ok_or_else(|| format!("DFT needs known dims, got {t}"))?;
    let c = dims[r - 1];
    let l = dims[d.axis] as usize;
    let n = d.len.map_or(if d.inverse && d.onesided { 2 * l.saturating_sub(1) } else { l }, |n| n as usize);
    if n == 0 || l == 0 {
        return Err(format!("a DFT of length {n} over {l} elements along axis {} of {t}", d.axis));
    }
    // The real and imaginary parts, as [..] (the last dim dropped).
    let part = |cx: &mut NodeCx, j: i64| -> Result<Value, String> {
        let op = Slice { starts: vec![j], ends: vec![j + 1], axes: vec![r as i64 - 1], steps: vec![] };
        let p = cx.add1(&format!("{tag}part{j}"), op, &[x])?;
        let keep: Vec<i64> = dims[..r - 1].iter().map(|&v| v as i64).collect();
        cx.add1(&format!("{tag}part{j}_flat"), Reshape { shape: keep, allowzero: true }, &[p])
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
                let mut picked: Option<(Value, Value)> = None;
                for a in 0..r - 1 {
                    // An axis the transform cannot run along (length 0) is not a candidate.
                    let Ok(y) = dft_along(cx, xf, &Dft { axis: a, inverse, onesided, len }, &format!("axis{a}_"))
                    else {
                        continue;
                    };
                    let is = cx.i64_const(&[], &[a as i64])?;
                    let hit = cx.add1(&format!("axis_is_{a}"), Equal {}, &[av, is])?;
                    picked = Some(match picked {
                        None => (y, hit),
                        Some((p, _)) if cx.ty(p) != cx.ty(y) => continue,
                        Some((p, any)) => {
                            let sel = cx.add1(&format!("select{a}"), Where {}, &[hit, y, p])?;
                            (sel, cx.add1(&format!("any{a}"), Or {}, &[any, hit])?)
                        }
                    });
                }
                let (y, any) = picked.ok_or("no axis to transform")?;
                // An axis none of the candidates covers: index 1 into a 1-element tensor
                // fails the run at the Gather's index check.
                let one = cx.add_const(TensorData::from_f32(&[1], &[1.0]).ok_or("one")?);
                let (i0, i1) = (cx.i64_const(&[], &[0])?, cx.i64_const(&[], &[1])?);
                let idx = cx.add1("axis_supported", Where {}, &[any, i0, i1])?;
                let unit = cx.add1("axis_check", Gather { axis: 0 }, &[one, idx])?;
                cx.add1("checked", Mul {}, &[y, unit])?
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
