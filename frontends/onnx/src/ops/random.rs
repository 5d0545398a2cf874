//! RandomUniform(Like), RandomNormal(Like) and Bernoulli: dlc's counter-based generator
//! ([`dlc_ir::ops::Random`], docs/random.md). With `seed` the values depend only on it;
//! without one the node's name keys the generator, so every run gives the same values
//! (an AOT artifact has no entropy source; a model that needs fresh noise per run takes
//! it as an input), and a warning says so.
use super::NodeCx;
use dlc_ir::ops::{seed_key, Cast, Less, Random};
use dlc_ir::{DType, Value};

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
