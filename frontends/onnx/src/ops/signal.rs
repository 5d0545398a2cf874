//! Window functions (HannWindow, HammingWindow, BlackmanWindow, opset 17): the length
//! is a computed dim when the size is known only at run time; the values are computed
//! in f64 from an Iota as ONNX's reference writes them, then cast to `output_datatype`.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("HannWindow", |cx| window(cx, Window::Hann));
    reg.insert("HammingWindow", |cx| window(cx, Window::Hamming));
    reg.insert("BlackmanWindow", |cx| window(cx, Window::Blackman));
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
