//! RandomUniform(Like), RandomNormal(Like), Bernoulli and Dropout in training mode: dlc's counter-based generator
//! ([`dlc_ir::ops::Random`], docs/random.md). With `seed` the values depend only on it;
//! without one the node's name keys the generator, so every run gives the same values
//! (an AOT artifact has no entropy source; a model that needs fresh noise per run takes
//! it as an input), and a warning says so.
use super::NodeCx;
use dlc_ir::ops::{seed_key, Cast, Div, GreaterOrEqual, Less, Mul, Random, Reshape, Sub, Where};
use dlc_ir::{DType, TensorData, TensorType, Value};

pub(crate) fn register(reg: &mut std::collections::HashMap<&'static str, super::BuildFn>) {
    reg.insert("RandomUniform", |cx| random(cx, false, false));
    reg.insert("RandomNormal", |cx| random(cx, true, false));
    reg.insert("RandomUniformLike", |cx| random(cx, false, true));
    reg.insert("RandomNormalLike", |cx| random(cx, true, true));
    reg.insert("Bernoulli", bernoulli);
}

/// The generator's key: from `seed`, else from the node's name (with a warning).
fn key(cx: &NodeCx) -> i64 {
    if cx.has("seed") {
        seed_key(Some(cx.float("seed", 0.0)), "")
    } else {
        tracing::warn!(
            node = %cx.name,
            "{} has no seed: dlc keys it by the node's name, so every run gives the same values (docs/random.md)",
            cx.node.op_type
        );
        seed_key(None, &cx.name)
    }
}

/// The dtype of attribute `dtype`, or `default`.
fn dtype(cx: &NodeCx, default: DType) -> Result<DType, String> {
    if !cx.has("dtype") {
        return Ok(default);
    }
    let code = cx.int("dtype", 1) as i32;
    crate::tensor::dtype_from_onnx(code)
        .ok_or_else(|| format!("dtype {} is not supported", crate::tensor::onnx_type_name(code)))
}

fn random(cx: &mut NodeCx, normal: bool, like: bool) -> Result<Vec<Value>, String> {
    let (a, b) = if normal {
        (cx.float("mean", 0.0) as f64, cx.float("scale", 1.0) as f64)
    } else {
        (cx.float("low", 0.0) as f64, cx.float("high", 1.0) as f64)
    };
    let key = key(cx);
    let (operands, dims, default) = if like {
        let x = cx.input(0)?;
        let d = cx.ty(x).dtype;
        (vec![x], String::new(), if d.is_float() { d } else { DType::F32 })
    } else {
        let shape = cx.ints("shape");
        if shape.iter().any(|&d| d <= 0) {
            return Err(format!("shape {shape:?} must have positive extents"));
        }
        (vec![], shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(";"), DType::F32)
    };
    let dtype = dtype(cx, default)?;
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16) {
        return Err(format!("random values of {dtype} are not supported (float, double, float16)"));
    }
    Ok(vec![cx.add1("", Random { normal, a, b, key, dtype, dims }, &operands)?])
}

/// Bernoulli: `u < p` for a uniform `u` in `[0, 1)` per element, as `dtype` (default the
/// input's).
fn bernoulli(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let p = cx.input(0)?;
    let pd = cx.ty(p).dtype;
    if !matches!(pd, DType::F32 | DType::F64 | DType::F16) {
        return Err(format!("probabilities of {pd} are not supported"));
    }
    let key = key(cx);
    let to = dtype(cx, pd)?;
    let u = cx.add1("uniform", Random { normal: false, a: 0.0, b: 1.0, key, dtype: pd, dims: String::new() }, &[p])?;
    let hit = cx.add1("hit", Less {}, &[u, p])?;
    if to == DType::Bool {
        return Ok(vec![hit]);
    }
    Ok(vec![cx.add1("", Cast { to, saturate: true }, &[hit])?])
}

/// A bool tensor of `x`'s shape, all true: a constant for known dims, else `u >= 0` over
/// a uniform draw of its shape (which always holds; `x == x` would be false at NaNs).
pub(crate) fn all_true(cx: &mut NodeCx, x: Value, t: &TensorType) -> Result<Value, String> {
    if let Some(dims) = t.shape.as_fixed() {
        let n: u64 = dims.iter().product();
        let mask = TensorData::new(TensorType::fixed(DType::Bool, &dims), vec![1u8; n as usize].into())
            .ok_or("the mask is too large")?;
        return Ok(cx.add_const(mask));
    }
    let draw = Random { normal: false, a: 0.0, b: 1.0, key: 0, dtype: DType::F32, dims: String::new() };
    let u = cx.add1("mask_shape", draw, &[x])?;
    let zero = cx.add_const(TensorData::from_f32(&[1], &[0.0]).ok_or("zero")?);
    cx.add1("mask", GreaterOrEqual {}, &[u, zero])
}

/// Dropout with training_mode true (`run_time` None) or given at run time: a uniform
/// `u` per element from dlc's generator (keyed by `seed`, else the node's name), the
/// mask `u >= ratio`, the output `x * mask / (1 - ratio)` (ratio 0: `x` itself, every
/// mask element true); with a run-time mode, `x` and an all-true mask where it is false.
pub(crate) fn dropout_training(
    cx: &mut NodeCx,
    x: Value,
    run_time: Option<Value>,
    want_mask: bool,
) -> Result<Vec<Value>, String> {
    let t = cx.ty(x);
    if !matches!(t.dtype, DType::F32 | DType::F64 | DType::F16) {
        return Err(format!("dropout of {} is not supported (float, double, float16)", t.dtype));
    }
    let ratio = match cx.opt_input(1)? {
        Some(r) => {
            if let Some(c) = cx.const_input(1)? {
                if let Some(v) = c.to_f64().and_then(|v| v.first().copied()) {
                    if !(0.0..1.0).contains(&v) {
                        return Err(format!("ratio must be in [0, 1), got {v}"));
                    }
                }
            }
            let r = if cx.ty(r).dtype == t.dtype { r } else { cx.add1("ratio_cast", Cast::new(t.dtype), &[r])? };
            cx.add1("ratio", Reshape { shape: vec![1], allowzero: false }, &[r])?
        }
        None => {
            let half = cx.add_const(TensorData::from_f32(&[1], &[0.5]).ok_or("ratio")?);
            if t.dtype == DType::F32 {
                half
            } else {
                cx.add1("ratio", Cast::new(t.dtype), &[half])?
            }
        }
    };
    let key = key(cx);
    let u =
        cx.add1("uniform", Random { normal: false, a: 0.0, b: 1.0, key, dtype: t.dtype, dims: String::new() }, &[x])?;
    let keep = cx.add1("keep", GreaterOrEqual {}, &[u, ratio])?;
    let one = cx.add_const(TensorData::from_f32(&[1], &[1.0]).ok_or("one")?);
    let one = if t.dtype == DType::F32 { one } else { cx.add1("one", Cast::new(t.dtype), &[one])? };
    let kept = cx.add1("kept_fraction", Sub {}, &[one, ratio])?;
    let scale = cx.add1("scale", Div {}, &[one, kept])?;
    let m = cx.add1("mask_values", Cast::new(t.dtype), &[keep])?;
    let xm = cx.add1("masked", Mul {}, &[x, m])?;
    let mut y = cx.add1("scaled", Mul {}, &[xm, scale])?;
    let mut mask = keep;
    if let Some(mode) = run_time {
        let mode = cx.add1("mode", Cast::new(DType::Bool), &[mode])?;
        let mode = cx.add1("mode_vector", Reshape { shape: vec![1], allowzero: false }, &[mode])?;
        y = cx.add1("", Where {}, &[mode, y, x])?;
        if want_mask {
            let all = all_true(cx, x, &t)?;
            mask = cx.add1("mask", Where {}, &[mode, keep, all])?;
        }
    } else {
        y = cx.add1("", dlc_ir::ops::Identity {}, &[y])?;
    }
    if want_mask {
        return Ok(vec![y, mask]);
    }
    Ok(vec![y])
}
