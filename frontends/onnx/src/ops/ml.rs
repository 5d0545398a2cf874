//! `ai.onnx.ml` ops that are tensor arithmetic: Binarizer (`x > threshold`, as 1 or 0 in
//! the input's type; NaN gives 0), ArrayFeatureExtractor (a Gather along the last axis
//! by the flattened indices; a vector input gives a `[1, K]` row, as ONNX's reference
//! does) and LabelEncoder (opsets 2-4: string or numeric keys to numeric or string
//! values, each element compared with every key, the first match's value or the
//! default; string values give a string tensor), Scaler (`(x - offset) * scale`), Normalizer (each row over its largest
//! value, its L1 or its L2 norm; a zero norm leaves the row as it is), LinearRegressor
//! and LinearClassifier (`x . coefficients^T + intercepts`, then labels and
//! post-transformed scores as ONNX Runtime gives them). Registered as
//! `ai.onnx.ml::OpType`; the tree ensembles are in `trees`.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("ai.onnx.ml::Binarizer", binarizer);
    reg.insert("ai.onnx.ml::ArrayFeatureExtractor", array_feature_extractor);
    reg.insert("ai.onnx.ml::LabelEncoder", label_encoder);
    reg.insert("ai.onnx.ml::Scaler", scaler);
    reg.insert("ai.onnx.ml::Normalizer", normalizer);
    reg.insert("ai.onnx.ml::LinearRegressor", linear_regressor);
    // Built by `linear_classifier` (its label may be a string tensor).
    reg.insert("ai.onnx.ml::LinearClassifier", |_| Err("internal: LinearClassifier reached the tensor path".into()));
}

/// A `[1]` constant of `dtype` holding `v`.
fn scalar(cx: &mut NodeCx, dtype: DType, v: f64) -> Result<Value, String> {
    numbers(cx, dtype, &[v])
}

fn binarizer(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let t: TensorType = cx.ty(x);
    if !matches!(t.dtype, DType::F32 | DType::F64 | DType::I64 | DType::I32) {
        return Err(format!("the input must be float, double, int64 or int32, got {t}"));
    }
    let threshold = f64::from(cx.float("threshold", 0.0));
    // Compared in f64 (an integer input against a fractional threshold), the result
    // in the input's type.
    let xf = if t.dtype == DType::F64 { x } else { cx.add1("x_f64", Cast::new(DType::F64), &[x])? };
    let th = scalar(cx, DType::F64, threshold)?;
    let above = cx.add1("above", Greater {}, &[xf, th])?;
    let (one, zero) = (scalar(cx, t.dtype, 1.0)?, scalar(cx, t.dtype, 0.0)?);
    cx.add("", Where {}, &[above, one, zero])
}

fn array_feature_extractor(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, idx) = (cx.input(0)?, cx.input(1)?);
    let (t, it) = (cx.ty(x), cx.ty(idx));
    if !matches!(it.dtype, DType::I64 | DType::I32) {
        return Err(format!("the indices must be int64, got {it}"));
    }
    if t.shape.rank() == 0 {
        return Err(format!("the input must have at least one axis, got {t}"));
    }
    let flat = cx.add1("indices_flat", Reshape { shape: vec![-1], allowzero: false }, &[idx])?;
    let y = cx.add1("gathered", Gather { axis: -1 }, &[x, flat])?;
    if t.shape.rank() == 1 {
        return cx.add("", Reshape { shape: vec![1, -1], allowzero: false }, &[y]);
    }
    Ok(vec![y])
}

/// A LabelEncoder attribute (`NAME_strings`, `NAME_int64s`, `NAME_floats` or
/// `NAME_tensor`) as byte strings, or as numbers with their type.
enum Table {
    Strings(Vec<Vec<u8>>),
    Numbers(DType, Vec<f64>),
}

fn table(cx: &NodeCx, name: &str) -> Result<Option<Table>, String> {
    let attr = |suffix: &str| cx.node.attribute.iter().find(|a| a.name == format!("{name}_{suffix}"));
    if let Some(a) = attr("strings") {
        return Ok(Some(Table::Strings(a.strings.clone())));
    }
    if let Some(a) = attr("int64s") {
        return Ok(Some(Table::Numbers(DType::I64, a.ints.iter().map(|&v| v as f64).collect())));
    }
    if let Some(a) = attr("floats") {
        return Ok(Some(Table::Numbers(DType::F32, a.floats.iter().map(|&v| f64::from(v)).collect())));
    }
    let Some(t) = attr("tensor").and_then(|a| a.t.as_ref()) else { return Ok(None) };
    if t.data_type == 8 {
        return Ok(Some(Table::Strings(t.string_data.clone())));
    }
    let data = crate::tensor::tensor_from_proto(t, &cx.imp.base).map_err(|m| format!("{name}_tensor: {m}"))?;
    let dtype = data.ty().dtype;
    let vals = match dtype {
        DType::F32 | DType::F64 => data.to_f64(),
        d if d.is_signed_int() => data.to_f64(),
        _ => None,
    };
    let vals = vals.ok_or_else(|| format!("{name}_tensor of {dtype} is not supported"))?;
    Ok(Some(Table::Numbers(dtype, vals)))
}

/// `values` (numbers) as a constant `[K]` tensor of `dtype`.
fn numbers(cx: &mut NodeCx, dtype: DType, values: &[f64]) -> Result<Value, String> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = TensorData::new(TensorType::fixed(DType::F64, &[values.len() as u64]), bytes.into())
        .ok_or("internal: a table")?;
    let c = cx.add_const(t);
    if dtype == DType::F64 {
        return Ok(c);
    }
    cx.add1(&format!("table_{dtype}"), Cast::new(dtype), &[c])
}

fn label_encoder(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (vt, vals) = match table(cx, "values")?.ok_or("LabelEncoder needs values (values_* attributes)")? {
        Table::Numbers(d, v) => (d, v),
        Table::Strings(_) => return Err("internal: string values reached the tensor path".into()),
    };
    let default = match cx.node.attribute.iter().find(|a| a.name == "default_tensor").and_then(|a| a.t.as_ref()) {
        Some(t) => {
            let d = crate::tensor::tensor_from_proto(t, &cx.imp.base).map_err(|m| format!("default_tensor: {m}"))?;
            d.to_f64().and_then(|v| v.first().copied()).ok_or("default_tensor must hold one number")?
        }
        None if vt == DType::I64 => cx.int("default_int64", -1) as f64,
        None => f64::from(cx.float("default_float", -0.0)),
    };
    let (at, found) = match_keys(cx, vals.len())?;
    let table = numbers(cx, vt, &vals)?;
    let mapped = cx.add1("mapped", Gather { axis: 0 }, &[table, at])?;
    let dflt = scalar(cx, vt, default)?;
    cx.add("", Where {}, &[found, mapped, dflt])
}

/// Whether the node is a LabelEncoder with string values (built by
/// [`label_encoder_strings`]: its result is a string tensor).
pub(crate) fn encodes_strings(cx: &NodeCx) -> bool {
    cx.node.domain == "ai.onnx.ml"
        && cx.node.op_type == "LabelEncoder"
        && matches!(table(cx, "values"), Ok(Some(Table::Strings(_))))
}

/// LabelEncoder to strings: the matched key's value, else `default_string` (or the
/// `default_tensor` string; "_Unused" when neither is given), as a string tensor whose
/// bytes are the values'.
pub(crate) fn label_encoder_strings(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    let Some(Table::Strings(mut vals)) = table(cx, "values")? else {
        return Err("internal: LabelEncoder without string values".into());
    };
    let k = vals.len();
    let default = match cx.node.attribute.iter().find(|a| a.name == "default_tensor").and_then(|a| a.t.as_ref()) {
        Some(t) if t.data_type == 8 => t.string_data.first().cloned().ok_or("default_tensor must hold one string")?,
        Some(_) => return Err("default_tensor must be a string for string values".into()),
        None => {
            cx.node.attribute.iter().find(|a| a.name == "default_string").map_or(b"_Unused".to_vec(), |a| a.s.clone())
        }
    };
    let (at, found) = match_keys(cx, k)?;
    // The default as element k.
    vals.push(default);
    let kv = cx.i64_const(&[], &[k as i64])?;
    let idx = cx.add1("value_index", Where {}, &[found, at, kv])?;
    let name = format!("{}/values", cx.name);
    let s = super::strings::constant(&mut cx.imp.graph, &mut cx.imp.known, &name, &[k as u64 + 1], &vals)?;
    let table = cx.add1("", Gather { axis: 0 }, &[s.table, idx])?;
    Ok(vec![super::shapes::Out::Str(super::strings::StrVal { table, bytes: s.bytes })])
}

/// Each element of operand 0 against every key: the first matching key's index and
/// whether one matched (element-shaped); `k` values must pair with the keys.
fn match_keys(cx: &mut NodeCx, k: usize) -> Result<(Value, Value), String> {
    let keys = table(cx, "keys")?.ok_or("LabelEncoder needs keys (opset 2 or newer: keys_* attributes)")?;
    let nkeys = match &keys {
        Table::Strings(s) => s.len(),
        Table::Numbers(_, v) => v.len(),
    };
    if nkeys != k || k == 0 {
        return Err(format!("{nkeys} keys and {k} values: LabelEncoder needs as many, at least one"));
    }
    // Each element against every key: `[..., K]`.
    let name = cx.node.input.first().cloned().unwrap_or_default();
    let eq = match (&keys, cx.imp.strings.get(&name).copied()) {
        (Table::Strings(ks), Some(x)) => return super::strings::match_strings(cx, x, ks),
        (Table::Numbers(kt, kv), None) => {
            let x = cx.input(0)?;
            let xt = cx.ty(x);
            if !(xt.dtype.is_signed_int() || xt.dtype.is_float()) {
                return Err(format!("numeric keys take an integer or float input, got {xt}"));
            }
            let kc = numbers(cx, *kt, kv)?;
            let kc = if *kt == xt.dtype { kc } else { cx.add1("keys_cast", Cast::new(xt.dtype), &[kc])? };
            let mut shape = vec![0i64; xt.shape.rank()];
            shape.push(1);
            let col = cx.add1("elements", Reshape { shape, allowzero: false }, &[x])?;
            cx.add1("matches", Equal {}, &[col, kc])?
        }
        (Table::Strings(_), None) => return Err("string keys take a string input".into()),
        (Table::Numbers(..), Some(_)) => return Err("a string input needs string keys".into()),
    };
    super::strings::first_match(cx, eq)
}

/// The input as f32 `[rows, features]` (a vector is one row), as ONNX Runtime computes
/// these ops in float.
fn rows_f32(cx: &mut NodeCx) -> Result<Value, String> {
    let x = cx.input(0)?;
    let t = cx.ty(x);
    if !matches!(t.dtype, DType::F32 | DType::F64 | DType::I64 | DType::I32) {
        return Err(format!("the input must be float, double, int64 or int32, got {t}"));
    }
    let x = if t.dtype == DType::F32 { x } else { cx.add1("as_f32", Cast::new(DType::F32), &[x])? };
    match t.shape.rank() {
        2 => Ok(x),
        1 => cx.add1("row", Reshape { shape: vec![1, -1], allowzero: false }, &[x]),
        _ => Err(format!("the input must be [rows, features] or [features], got {t}")),
    }
}

/// A per-feature attribute (`NAME`: one value for every feature, or one per feature)
/// as an f32 vector.
fn per_feature(cx: &mut NodeCx, x: Value, name: &str, default: f32) -> Result<Value, String> {
    let v = cx.floats(name);
    let v = if v.is_empty() { vec![default] } else { v };
    if let Some(w) = cx.ty(x).shape.0.last().and_then(|d| d.fixed()) {
        if v.len() != 1 && v.len() as u64 != w {
            return Err(format!("{name} has {} values for {w} features", v.len()));
        }
    }
    let t = TensorData::from_f32(&[v.len() as u64], &v).ok_or("internal: a vector")?;
    Ok(cx.add_const(t))
}

fn scaler(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x0 = cx.input(0)?;
    let rank = cx.ty(x0).shape.rank();
    let x = rows_f32(cx)?;
    let offset = per_feature(cx, x, "offset", 0.0)?;
    let scale = per_feature(cx, x, "scale", 1.0)?;
    let d = cx.add1("centred", Sub {}, &[x, offset])?;
    let y = cx.add1("scaled", Mul {}, &[d, scale])?;
    if rank == 1 {
        return cx.add("", Reshape { shape: vec![-1], allowzero: false }, &[y]);
    }
    Ok(vec![y])
}

fn normalizer(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = rows_f32(cx)?;
    let norm = cx.string("norm", "MAX")?;
    let keep = |axes: Vec<i64>| (axes, true);
    let (axes, keepdims) = keep(vec![1]);
    let d = match norm.as_str() {
        "MAX" => cx.add1("max", ReduceMax { axes, keepdims }, &[x])?,
        "L1" => {
            let a = cx.add1("abs", Abs {}, &[x])?;
            cx.add1("l1", ReduceSum { axes, keepdims }, &[a])?
        }
        "L2" => {
            let sq = cx.add1("square", Mul {}, &[x, x])?;
            let s = cx.add1("sum_squares", ReduceSum { axes, keepdims }, &[sq])?;
            cx.add1("l2", Sqrt {}, &[s])?
        }
        n => return Err(format!("norm must be MAX, L1 or L2, got '{n}'")),
    };
    // A zero norm leaves the row as it is.
    let (zero, one) = (scalar(cx, DType::F32, 0.0)?, scalar(cx, DType::F32, 1.0)?);
    let is_zero = cx.add1("zero_norm", Equal {}, &[d, zero])?;
    let d = cx.add1("divisor", Where {}, &[is_zero, one, d])?;
    cx.add("", Div {}, &[x, d])
}

/// `x . coefficients^T + intercepts` (`[rows, targets]`, f32) with `targets` rows of
/// coefficients.
fn linear(cx: &mut NodeCx, x: Value, targets: usize) -> Result<Value, String> {
    let coef = cx.floats("coefficients");
    if targets == 0 || coef.is_empty() || !coef.len().is_multiple_of(targets) {
        return Err(format!("{} coefficients for {targets} targets", coef.len()));
    }
    let f = coef.len() / targets;
    if let Some(w) = cx.ty(x).shape.0[1].fixed() {
        if w as usize != f {
            return Err(format!("the coefficients have {f} features per target, the input {w}"));
        }
    }
    // Transposed at import: [features, targets].
    let mut ct = vec![0f32; coef.len()];
    for t in 0..targets {
        for j in 0..f {
            ct[j * targets + t] = coef[t * f + j];
        }
    }
    let w = cx.add_const(TensorData::from_f32(&[f as u64, targets as u64], &ct).ok_or("internal: coefficients")?);
    let mut y = cx.add1("product", MatMul { act: Activation::None }, &[x, w])?;
    let b = cx.floats("intercepts");
    if !b.is_empty() {
        if b.len() != targets && b.len() != 1 {
            return Err(format!("{} intercepts for {targets} targets", b.len()));
        }
        let b = cx.add_const(TensorData::from_f32(&[b.len() as u64], &b).ok_or("internal: intercepts")?);
        y = cx.add1("with_intercepts", Add {}, &[y, b])?;
    }
    Ok(y)
}

/// ONNX Runtime's post transform of `[rows, k]` scores (`trees::post`).
fn post_transform(cx: &mut NodeCx, y: Value, post: &str) -> Result<Value, String> {
    let p = super::trees::post_of(post)?;
    super::trees::post(cx, p, y, "")
}

fn linear_regressor(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = rows_f32(cx)?;
    let targets = cx.int("targets", 1);
    if !(1..=1 << 20).contains(&targets) {
        return Err(format!("targets must be positive, got {targets}"));
    }
    let y = linear(cx, x, targets as usize)?;
    let post = cx.string("post_transform", "NONE")?;
    // ONNX Runtime transforms one target only by PROBIT.
    if targets == 1 && post != "PROBIT" {
        return Ok(vec![y]);
    }
    Ok(vec![post_transform(cx, y, &post)?])
}

/// A classifier's label output: element `index` (`[rows]` i64) of the labels, a string
/// tensor for string labels.
pub(crate) fn labels_at(
    cx: &mut NodeCx,
    ints: &[i64],
    strs: &[Vec<u8>],
    index: Value,
) -> Result<super::shapes::Out, String> {
    use super::shapes::Out;
    if !strs.is_empty() {
        let name = format!("{}_labels", cx.name);
        let s = super::strings::constant(&mut cx.imp.graph, &mut cx.imp.known, &name, &[strs.len() as u64], strs)?;
        let table = cx.add1("label", Gather { axis: 0 }, &[s.table, index])?;
        return Ok(Out::Str(super::strings::StrVal { table, bytes: s.bytes }));
    }
    let l = cx.i64_const(&[ints.len() as u64], ints)?;
    Ok(Out::Value(cx.add1("label", Gather { axis: 0 }, &[l, index])?))
}

/// LinearClassifier: scores `x . coefficients^T + intercepts`. One score per row (two
/// labels): the label is the second when the score is positive, else the first, and
/// the scores are `[1 - t, t]` with `t` the score, or its logistic under LOGISTIC (as
/// ONNX Runtime 1.32 gives them). More: the label of the highest score (the first of
/// equals), the scores post-transformed.
pub(crate) fn linear_classifier(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    use super::shapes::Out;
    let ints = cx.ints("classlabels_ints");
    let strs: Vec<Vec<u8>> =
        cx.node.attribute.iter().find(|a| a.name == "classlabels_strings").map_or_else(Vec::new, |a| a.strings.clone());
    if !ints.is_empty() && !strs.is_empty() {
        return Err("give classlabels_ints or classlabels_strings, not both".into());
    }
    let n_labels = ints.len().max(strs.len());
    let c = cx.floats("intercepts").len();
    if c == 0 {
        return Err("intercepts (one per class) are required".into());
    }
    let x = rows_f32(cx)?;
    let y = linear(cx, x, c)?;
    let post = cx.string("post_transform", "NONE")?;
    if c == 1 {
        let zero = scalar(cx, DType::F32, 0.0)?;
        let pos = cx.add1("positive", Greater {}, &[y, zero])?;
        let pos = cx.add1("positive_flat", Reshape { shape: vec![-1], allowzero: false }, &[pos])?;
        let idx = cx.add1("label_index", Cast::new(DType::I64), &[pos])?;
        if n_labels != 2 {
            return Err(format!("one score per row (one intercept) needs two class labels, got {n_labels}"));
        }
        let label = labels_at(cx, &ints, &strs, idx)?;
        // [1 - t, t], t the score (its logistic under LOGISTIC; PROBIT refused).
        let t = match post.as_str() {
            "LOGISTIC" => cx.add1("logistic", Sigmoid {}, &[y])?,
            "PROBIT" => return Err("post_transform PROBIT is not supported yet".into()),
            "NONE" | "SOFTMAX" | "SOFTMAX_ZERO" => y,
            p => return Err(format!("unknown post_transform '{p}'")),
        };
        let one = scalar(cx, DType::F32, 1.0)?;
        let c0 = cx.add1("complement", Sub {}, &[one, t])?;
        let z = cx.add1("scores", Concat { axis: 1 }, &[c0, t])?;
        return Ok(vec![label, Out::Value(z)]);
    }
    if n_labels != c {
        return Err(format!("{n_labels} class labels for {c} classes"));
    }
    let idx = cx.add1("best", ArgMax { axis: -1, keepdims: false, select_last_index: false }, &[y])?;
    let label = labels_at(cx, &ints, &strs, idx)?;
    let z = post_transform(cx, y, &post)?;
    Ok(vec![label, Out::Value(z)])
}
