//! `ai.onnx.ml` ops that are tensor arithmetic: Binarizer (`x > threshold`, as 1 or 0 in
//! the input's type; NaN gives 0), ArrayFeatureExtractor (a Gather along the last axis
//! by the flattened indices; a vector input gives a `[1, K]` row, as ONNX's reference
//! does) and LabelEncoder (opsets 2-4: string or integer keys to integer or float
//! values, each element compared with every key, the first match's value or the
//! default). Registered as `ai.onnx.ml::OpType`.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("ai.onnx.ml::Binarizer", binarizer);
    reg.insert("ai.onnx.ml::ArrayFeatureExtractor", array_feature_extractor);
    reg.insert("ai.onnx.ml::LabelEncoder", label_encoder);
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
    let vals: Vec<f64> = match dtype {
        DType::F32 => {
            data.bytes().chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4")))).collect()
        }
        DType::F64 => data.bytes().chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8"))).collect(),
        d if d.is_signed_int() => data.to_i64().ok_or("internal: integers")?.into_iter().map(|v| v as f64).collect(),
        d => return Err(format!("{name}_tensor of {d} is not supported")),
    };
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
    let keys = table(cx, "keys")?.ok_or("LabelEncoder needs keys (opset 2 or newer: keys_* attributes)")?;
    let values = table(cx, "values")?.ok_or("LabelEncoder needs values (values_* attributes)")?;
    let (vt, vals) = match values {
        Table::Numbers(d, v) => (d, v),
        Table::Strings(_) => return Err("string values (a string output) are not supported yet".into()),
    };
    let k = vals.len();
    let nkeys = match &keys {
        Table::Strings(s) => s.len(),
        Table::Numbers(_, v) => v.len(),
    };
    if nkeys != k || k == 0 {
        return Err(format!("{nkeys} keys and {k} values: LabelEncoder needs as many, at least one"));
    }
    let default = match cx.node.attribute.iter().find(|a| a.name == "default_tensor").and_then(|a| a.t.as_ref()) {
        Some(t) => {
            let d = crate::tensor::tensor_from_proto(t, &cx.imp.base).map_err(|m| format!("default_tensor: {m}"))?;
            match d.ty().dtype {
                DType::F32 => f64::from(f32::from_le_bytes(d.bytes()[..4].try_into().map_err(|_| "default_tensor")?)),
                DType::F64 => f64::from_le_bytes(d.bytes()[..8].try_into().map_err(|_| "default_tensor")?),
                _ => {
                    *d.to_i64().and_then(|v| v.first().copied()).as_ref().ok_or("default_tensor must hold one value")?
                        as f64
                }
            }
        }
        None if vt == DType::I64 => cx.int("default_int64", -1) as f64,
        None => f64::from(cx.float("default_float", -0.0)),
    };
    // Each element against every key: `[..., K]`.
    let name = cx.node.input.first().cloned().unwrap_or_default();
    let eq = match (&keys, cx.imp.strings.get(&name).copied()) {
        (Table::Strings(ks), Some(x)) => {
            let rank = cx.ty(x.table).shape.rank() - 1;
            let mut shape = vec![0i64; rank];
            shape.extend([1, 2]);
            let col = cx.add1("elements", Reshape { shape, allowzero: false }, &[x.table])?;
            let kn = format!("{}/keys", cx.name);
            let kc = super::strings::constant(&mut cx.imp.graph, &mut cx.imp.known, &kn, &[k as u64], ks)?;
            cx.add1("matches", StringEqual {}, &[col, x.bytes, kc.table, kc.bytes])?
        }
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
    let hit = cx.add1("matches_i32", Cast::new(DType::I32), &[eq])?;
    let first = ArgMax { axis: -1, keepdims: false, select_last_index: false };
    let at = cx.add1("first_match", first, &[hit])?;
    let any = cx.add1("any_match", ReduceMax { axes: vec![-1], keepdims: false }, &[hit])?;
    let zero = scalar(cx, DType::I32, 0.0)?;
    let found = cx.add1("found", Greater {}, &[any, zero])?;
    let table = numbers(cx, vt, &vals)?;
    let mapped = cx.add1("mapped", Gather { axis: 0 }, &[table, at])?;
    let dflt = scalar(cx, vt, default)?;
    cx.add("", Where {}, &[found, mapped, dflt])
}
