//! Reshape, Flatten, Transpose, Concat, Constant.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, Dim, TensorData, TensorType, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("Reshape", reshape);
    reg.insert("Flatten", flatten);
    reg.insert("Transpose", transpose);
    reg.insert("Concat", concat);
    reg.insert("Constant", constant);
    reg.insert("Gather", |cx| {
        let (d, i) = (cx.input(0)?, cx.input(1)?);
        let axis = cx.int("axis", 0);
        check_const_indices(cx, d, axis, 1)?;
        cx.add("", Gather { axis }, &[d, i])
    });
    reg.insert("Shape", shape);
    reg.insert("Size", |cx| {
        let x = cx.input(0)?;
        let n = cx.ty(x).shape.numel().ok_or("Size needs known dims")?;
        Ok(vec![cx.add_const(TensorData::from_i64(&[], &[n as i64]).expect("scalar"))])
    });
    reg.insert("Squeeze", |cx| squeeze(cx, false));
    reg.insert("Slice", slice);
    reg.insert("Expand", |cx| {
        let x = cx.input(0)?;
        if cx.const_input(1)?.is_none() {
            return Ok(vec![expand_computed(cx, x)?]);
        }
        let shape = cx.const_ints(1, "shape")?.ok_or("shape is required")?;
        cx.add("", Expand::to(shape), &[x])
    });
    reg.insert("ConstantOfShape", |cx| {
        if cx.const_input(0)?.is_none() {
            // A shape known only at run time: computed dims.
            let shape = cx.input(0)?;
            let v = super::shapes::fill_value(cx)?;
            let (v, target) = super::bind::computed_dims(cx, v, shape, "shape")?;
            return Ok(vec![super::shapes::expand_to(cx, v, &target, "")?]);
        }
        let dims = cx.const_ints(0, "shape")?.ok_or("shape is required")?;
        if dims.iter().any(|&d| d < 0) {
            return Err(format!("invalid shape {dims:?}"));
        }
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        let value = cx.tensor_attr("value")?.unwrap_or_else(|| TensorData::from_f32(&[1], &[0.0]).expect("scalar"));
        if value.numel() != 1 {
            return Err("value must hold one element".into());
        }
        let n: u64 = dims.iter().product();
        if n > 1 << 26 {
            return Err(format!("shape {dims:?} is too large to materialise"));
        }
        let bytes: Vec<u8> = value.bytes().iter().copied().cycle().take(n as usize * value.bytes().len()).collect();
        let t = TensorData::new(dlc_ir::TensorType::fixed(value.ty().dtype, &dims), bytes.into()).ok_or("bad value")?;
        Ok(vec![cx.add_const(t)])
    });
    reg.insert("Range", range);
    reg.insert("Pad", pad);
    reg.insert("Tile", tile);
    reg.insert("ScatterElements", |cx| {
        let reduction = scatter_reduction(cx)?;
        let ops = [cx.input(0)?, cx.input(1)?, cx.input(2)?];
        let axis = cx.int("axis", 0);
        cx.add("", ScatterElements { axis, reduction }, &ops)
    });
    reg.insert("Scatter", |cx| {
        let ops = [cx.input(0)?, cx.input(1)?, cx.input(2)?];
        let axis = cx.int("axis", 0);
        cx.add("", ScatterElements { axis, reduction: ScatterReduction::None }, &ops)
    });
    reg.insert("ScatterND", |cx| {
        let reduction = scatter_reduction(cx)?;
        let ops = [cx.input(0)?, cx.input(1)?, cx.input(2)?];
        cx.add("", ScatterND { reduction }, &ops)
    });
    reg.insert("Split", split);
    reg.insert("EyeLike", eye_like);
    reg.insert("BitCast", |cx| {
        let code = cx.int("to", 0) as i32;
        let to =
            crate::tensor::dtype_from_onnx(code).ok_or_else(|| format!("BitCast to type {code} is not supported"))?;
        let x = cx.input(0)?;
        cx.add("", BitCast { to }, &[x])
    });
    reg.insert("GatherND", gather_nd);
    reg.insert("Trilu", |cx| {
        let upper = cx.int("upper", 1) != 0;
        let mut ops = vec![cx.input(0)?];
        if let Some(k) = cx.opt_input(1)? {
            ops.push(k);
        }
        cx.add("", Trilu { upper }, &ops)
    });
    reg.insert("GatherElements", |cx| {
        let (d, i) = (cx.input(0)?, cx.input(1)?);
        let axis = cx.int("axis", 0);
        check_const_indices(cx, d, axis, 1)?;
        cx.add("", GatherElements { axis }, &[d, i])
    });
    reg.insert("DepthToSpace", |cx| depth_space(cx, true));
    reg.insert("SpaceToDepth", |cx| depth_space(cx, false));
    reg.insert("Unsqueeze", |cx| squeeze(cx, true));
    reg.insert("NonZero", super::bind::nonzero);
    reg.insert("TopK", super::bind::top_k);
    reg.insert("NonMaxSuppression", super::bind::nms);
    reg.insert("Unique", super::bind::unique);
    reg.insert("Compress", super::bind::compress);
}

fn reshape(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let shape = if cx.opset < 5 {
        cx.ints("shape")
    } else {
        let Some(t) = cx.const_input(1)? else {
            // Known only at run time: the dims are bound from its values.
            let (target, allowzero) = (cx.input(1)?, cx.int("allowzero", 0) != 0);
            let rule = dlc_ir::bind::BindRule::Reshape { allowzero };
            return Ok(vec![super::bind::bind(cx, "", x, target, rule)?]);
        };
        if t.ty().dtype != DType::I64 || t.ty().shape.rank() != 1 {
            return Err(format!("the target shape must be a 1-D i64 tensor, got {}", t.ty()));
        }
        t.to_i64().expect("i64 tensor")
    };
    let allowzero = cx.int("allowzero", 0) != 0;
    cx.add("", Reshape { shape, allowzero }, &[x])
}

fn flatten(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let axis = cx.int("axis", 1);
    cx.add("", Flatten { axis }, &[x])
}

fn transpose(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let perm = cx.ints("perm");
    cx.add("", Transpose { perm }, &[x])
}

fn concat(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if !cx.has("axis") {
        return Err("attribute 'axis' is required".into());
    }
    let axis = cx.int("axis", 0);
    let operands: Vec<Value> = (0..cx.num_inputs()).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
    if operands.is_empty() {
        return Err("needs at least one input".into());
    }
    cx.add("", Concat { axis }, &operands)
}

fn constant(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let t = if let Some(t) = cx.tensor_attr("value")? {
        t
    } else if cx.has("value_float") {
        TensorData::from_f32(&[], &[cx.float("value_float", 0.0)]).expect("scalar")
    } else if cx.has("value_int") {
        TensorData::from_i64(&[], &[cx.int("value_int", 0)]).expect("scalar")
    } else if cx.has("value_ints") {
        let v = cx.ints("value_ints");
        TensorData::from_i64(&[v.len() as u64], &v).expect("vector")
    } else if cx.has("value_floats") {
        let a = cx.node.attribute.iter().find(|a| a.name == "value_floats").expect("has");
        TensorData::from_f32(&[a.floats.len() as u64], &a.floats).expect("vector")
    } else if cx.has("sparse_value") {
        return Err("sparse constants are not supported".into());
    } else {
        return Err("no value attribute (value, value_float(s), value_int(s))".into());
    };
    let _: &TensorType = t.ty();
    Ok(vec![cx.add_const(t)])
}

/// Shape is known at compile time: it becomes a constant (with opset 15's start/end).
fn shape(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    let dims = ty.shape.as_fixed().ok_or_else(|| format!("Shape of {ty} needs known dims"))?;
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(cx.int("start", 0));
    let end = clamp(cx.int("end", r));
    let vals: Vec<i64> = dims[start..end.max(start)].iter().map(|&d| d as i64).collect();
    Ok(vec![cx.add_const(TensorData::from_i64(&[vals.len() as u64], &vals).expect("vector"))])
}

/// Squeeze and Unsqueeze are reshapes to a shape computed from the axes. Where run-time
/// dims move (a 1 removed or inserted before two of them), a Reshape cannot say it: the
/// 1s travel to the end with a Transpose, where a Reshape of copies drops or adds them.
fn squeeze(cx: &mut NodeCx, unsqueeze: bool) -> Result<Vec<Value>, String> {
    let mut x = cx.input(0)?;
    let axes = if cx.opset >= 13 {
        match super::bind::ints_or_value(cx, 1, "axes")? {
            Some(Err(t)) => {
                let rule = if unsqueeze { dlc_ir::bind::BindRule::Unsqueeze } else { dlc_ir::bind::BindRule::Squeeze };
                return Ok(vec![super::bind::bind(cx, "", x, t, rule)?]);
            }
            Some(Ok(a)) => a,
            None => Vec::new(),
        }
    } else {
        cx.ints_input_or_attr(1, "axes", 13)?.unwrap_or_default()
    };
    let ty = cx.ty(x);
    let dims = &ty.shape.0;
    // The result's dims, and the axes of 1s inserted into it (Unsqueeze) or removed from
    // the operand (Squeeze), ascending.
    let (out, ones): (Vec<Dim>, Vec<usize>) = if unsqueeze {
        let rank = dims.len() + axes.len();
        let mut ax: Vec<usize> = axes
            .iter()
            .map(|&a| normalize_axis(a, rank).ok_or(format!("axis {a} out of range")))
            .collect::<Result<_, _>>()?;
        ax.sort_unstable();
        ax.dedup();
        if ax.len() != axes.len() {
            return Err(format!("repeated axes {axes:?}"));
        }
        let mut it = dims.iter();
        let out = (0..rank)
            .map(|i| if ax.contains(&i) { Dim::Fixed(1) } else { it.next().expect("rank matches").clone() })
            .collect();
        (out, ax)
    } else {
        let mut ax: Vec<usize> = axes
            .iter()
            .map(|&a| normalize_axis(a, dims.len()).ok_or(format!("axis {a} out of range")))
            .collect::<Result<_, _>>()?;
        let mut at_run_time = Vec::new();
        for &a in &ax {
            match dims[a].fixed() {
                Some(1) => {}
                Some(e) => return Err(format!("cannot squeeze dim {a} of extent {e}")),
                // A run-time dim must be 1 when the model runs: checked then.
                None => at_run_time.push(a as i64),
            }
        }
        if !at_run_time.is_empty() {
            // The result's dims are then bound when the model runs (a Bind of rule
            // `squeeze`, which checks that the squeezed dims are 1).
            let all: Vec<i64> = ax.iter().map(|&a| a as i64).collect();
            let t = cx.add_const(TensorData::from_i64(&[all.len() as u64], &all).ok_or("axes")?);
            return Ok(vec![super::bind::bind(cx, "", x, t, dlc_ir::bind::BindRule::Squeeze)?]);
        }
        if ax.is_empty() {
            if dims.iter().any(|d| d.fixed().is_none()) {
                // The dims that are 1 now are dropped; a run-time dim is kept, and the
                // run fails, naming the node, if it is 1 then (the rank is fixed here).
                let ones: Vec<i64> = (0..dims.len() as i64).filter(|&i| dims[i as usize] == Dim::Fixed(1)).collect();
                let t = cx.add_const(TensorData::from_i64(&[ones.len() as u64], &ones).ok_or("squeeze axes")?);
                x = super::bind::bind(cx, "check", x, t, dlc_ir::bind::BindRule::SqueezeAll)?;
            }
            ax = (0..dims.len()).filter(|&i| dims[i] == Dim::Fixed(1)).collect();
        }
        ax.sort_unstable();
        ax.dedup();
        let out = dims.iter().enumerate().filter(|(i, _)| !ax.contains(i)).map(|(_, d)| d.clone()).collect();
        (out, ax)
    };
    if let Some((shape, allowzero)) = reshape_target(dims, &out) {
        return cx.add("", Reshape { shape, allowzero }, &[x]);
    }
    if unsqueeze {
        // [dims..., 1...], then each axis to its place.
        let mut shape = vec![0i64; dims.len()];
        shape.extend(std::iter::repeat_n(1, ones.len()));
        let r = cx.add1("append_ones", Reshape { shape, allowzero: false }, &[x])?;
        let (mut kept, mut one) = (0i64, dims.len() as i64);
        let perm: Vec<i64> = (0..out.len())
            .map(|i| {
                let from = if ones.contains(&i) { &mut one } else { &mut kept };
                *from += 1;
                *from - 1
            })
            .collect();
        cx.add("", Transpose { perm }, &[r])
    } else {
        let mut perm: Vec<i64> = (0..dims.len()).filter(|i| !ones.contains(i)).map(|i| i as i64).collect();
        perm.extend(ones.iter().map(|&i| i as i64));
        let t = cx.add1("ones_last", Transpose { perm }, &[x])?;
        cx.add("", Reshape { shape: vec![0; out.len()], allowzero: false }, &[t])
    }
}

/// Reshape's `shape` (and `allowzero`) that turns dims `from` into `to` (same element
/// count): fixed dims as numbers, a run-time dim at the index it has in `from` as 0
/// (copied), and one other run-time dim as -1 (inferred as the exact quotient). `None`
/// when that does not express `to` (two run-time dims that move, or a copy beside a
/// fixed 0).
pub(crate) fn reshape_target(from: &[Dim], to: &[Dim]) -> Option<(Vec<i64>, bool)> {
    let zero = to.iter().any(|d| d.fixed() == Some(0));
    let (mut shape, mut copies, mut inferred) = (Vec::with_capacity(to.len()), false, false);
    for (i, d) in to.iter().enumerate() {
        if let Some(n) = d.fixed() {
            shape.push(n as i64);
        } else if !zero && from.get(i) == Some(d) {
            shape.push(0);
            copies = true;
        } else if !inferred {
            shape.push(-1);
            inferred = true;
        } else {
            return None;
        }
    }
    // Without copies, zeros are literal extents.
    Some((shape, !copies))
}

fn slice(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let op = if cx.opset < 10 {
        Slice { starts: cx.ints("starts"), ends: cx.ints("ends"), axes: cx.ints("axes"), steps: vec![] }
    } else {
        let run_time = (1..=4).any(|i| cx.node.input.get(i).is_some_and(|n| !n.is_empty()))
            && (1..=4).any(|i| matches!(super::bind::ints_or_value(cx, i, "slice operands"), Ok(Some(Err(_)))));
        if run_time {
            return super::bind::slice(cx, x);
        }
        let starts = cx.const_ints(1, "starts")?.ok_or("starts is required")?;
        let ends = cx.const_ints(2, "ends")?.ok_or("ends is required")?;
        let axes = cx.const_ints(3, "axes")?.unwrap_or_default();
        let steps = cx.const_ints(4, "steps")?.unwrap_or_default();
        // Constant bounds on a run-time dim (`x[:, :, :-1]`): a strided read whose count
        // is an expression of the dim (positive steps).
        let dims = cx.ty(x).shape.0;
        let sliced: Vec<i64> = if axes.is_empty() { (0..starts.len() as i64).collect() } else { axes.clone() };
        let run_time = sliced.iter().any(|&a| normalize_axis(a, dims.len()).is_some_and(|a| dims[a].fixed().is_none()));
        if run_time && steps.iter().all(|&s| s > 0) {
            return Ok(vec![super::shapes::tensor_slice(cx)?]);
        }
        Slice { starts, ends, axes, steps }
    };
    cx.add("", op, &[x])
}

fn split(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    if cx.opset >= 13 {
        if let Some(Err(sizes)) = super::bind::ints_or_value(cx, 1, "split")? {
            let axis = cx.int("axis", 0);
            let a = normalize_axis(axis, ty.shape.rank()).ok_or(format!("axis {axis} out of range"))?;
            return super::bind::split(cx, x, sizes, a);
        }
    }
    let axis = cx.int("axis", 0);
    let a = normalize_axis(axis, ty.shape.rank()).ok_or(format!("axis {axis} out of range"))?;
    // Only the split axis needs a known extent (the other dims may be run-time).
    let extent = ty.shape.0[a].fixed().ok_or_else(|| format!("splitting run-time dim {} of {ty}", ty.shape.0[a]))?;
    let dims: Vec<u64> = ty.shape.0.iter().map(|d| d.fixed().unwrap_or(extent)).collect();
    let outputs = cx.node.output.len();
    let sizes: Vec<i64> = match cx.ints_input_or_attr(1, "split", 13)?.filter(|v| !v.is_empty()) {
        Some(v) => v,
        None => {
            let n = if cx.has("num_outputs") { cx.int("num_outputs", 1) as usize } else { outputs };
            if n == 0 {
                return Err("no outputs".into());
            }
            // Equal parts; with num_outputs the last part may be smaller.
            let part = (dims[a] as usize).div_ceil(n) as i64;
            (0..n as i64).map(|i| part.min(dims[a] as i64 - i * part).max(0)).collect()
        }
    };
    if sizes.iter().sum::<i64>() != dims[a] as i64 || sizes.iter().any(|&s| s < 0) {
        return Err(format!("split sizes {sizes:?} do not add up to dim {a} of {}", ty.shape));
    }
    let mut start = 0;
    let mut outs = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let op = Slice { starts: vec![start], ends: vec![start + len], axes: vec![a as i64], steps: vec![] };
        outs.push(cx.add1(&format!("part{i}"), op, &[x])?);
        start += len;
    }
    Ok(outs)
}

/// DepthToSpace / SpaceToDepth as reshape, transpose, reshape (exact data movement).
fn depth_space(cx: &mut NodeCx, to_space: bool) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    let d = ty.shape.as_fixed().filter(|d| d.len() == 4).ok_or_else(|| format!("needs a known 4-D input, got {ty}"))?;
    let b = cx.int("blocksize", 0);
    if b <= 0 {
        return Err("blocksize must be positive".into());
    }
    let (n, c, h, w) = (d[0] as i64, d[1] as i64, d[2] as i64, d[3] as i64);
    let (mid, perm, out) = if to_space {
        if c % (b * b) != 0 {
            return Err(format!("channels {c} do not divide by blocksize^2"));
        }
        let crd = cx.string("mode", "DCR")? == "CRD";
        if crd {
            (vec![n, c / (b * b), b, b, h, w], vec![0, 1, 4, 2, 5, 3], vec![n, c / (b * b), h * b, w * b])
        } else {
            (vec![n, b, b, c / (b * b), h, w], vec![0, 3, 4, 1, 5, 2], vec![n, c / (b * b), h * b, w * b])
        }
    } else {
        if h % b != 0 || w % b != 0 {
            return Err(format!("spatial dims {h}x{w} do not divide by blocksize {b}"));
        }
        // DCR (the default): blocks first; CRD (opset 28): channels first.
        let perm = if cx.string("mode", "DCR")? == "CRD" { vec![0, 1, 3, 5, 2, 4] } else { vec![0, 3, 5, 1, 2, 4] };
        (vec![n, c, h / b, b, w / b, b], perm, vec![n, c * b * b, h / b, w / b])
    };
    let r = cx.add1("split", Reshape { shape: mid, allowzero: true }, &[x])?;
    let t = cx.add1("permute", Transpose { perm }, &[r])?;
    cx.add("", Reshape { shape: out, allowzero: true }, &[t])
}

/// Range with constant operands becomes a constant.
/// Range whose operands are known only at run time: `n = max(ceil((limit - start) /
/// delta), 0)` computed in f64 (as ONNX Runtime does) is a computed dim, and element `i`
/// is `start + i * delta`, computed in f64 (i64 for integers) and cast to the type.
fn range_computed(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (s, l, d) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let dtype = cx.ty(s).dtype;
    for v in [s, l, d] {
        let t = cx.ty(v);
        if t.shape.numel() != Some(1) || t.dtype != dtype {
            return Err(format!("start, limit and delta must be scalars of one type, got {t}"));
        }
    }
    let wide = if dtype.is_float() { DType::F64 } else { DType::I64 };
    let as_f64 = |cx: &mut NodeCx, v: Value, what: &str| -> Result<Value, String> {
        let v = cx.add1(&format!("{what}_f64"), Cast::new(DType::F64), &[v])?;
        cx.add1(&format!("{what}_1"), Reshape { shape: vec![1], allowzero: false }, &[v])
    };
    let (sf, lf, df) = (as_f64(cx, s, "start")?, as_f64(cx, l, "limit")?, as_f64(cx, d, "delta")?);
    let span = cx.add1("span", dlc_ir::ops::Sub {}, &[lf, sf])?;
    let q = cx.add1("steps", dlc_ir::ops::Div {}, &[span, df])?;
    let q = cx.add1("ceil", dlc_ir::ops::Ceil {}, &[q])?;
    let zero = TensorData::new(TensorType::fixed(DType::F64, &[1]), 0f64.to_le_bytes().to_vec().into());
    let zero = cx.add_const(zero.ok_or("internal: zero")?);
    let q = cx.add1("count_f64", dlc_ir::ops::Max {}, &[q, zero])?;
    // NaN (delta 0 with an empty span, or infinities) counts as an invalid extent.
    let q = cx.add1("count", Cast { to: DType::I64, saturate: true }, &[q])?;
    let sw = if wide == DType::F64 { sf } else { cx.add1("start_i64", Cast::new(DType::I64), &[s])? };
    let (sw, n) = super::bind::computed_dims(cx, sw, q, "count")?;
    let sw =
        if wide == DType::I64 { cx.add1("start_1", Reshape { shape: vec![1], allowzero: false }, &[sw])? } else { sw };
    let iota = dlc_ir::ops::Iota { len: n[0].to_string(), start: 0, delta: 1, dtype: wide };
    let i = cx.add1("iota", iota, &[])?;
    let dw = if wide == DType::F64 {
        df
    } else {
        let d = cx.add1("delta_i64", Cast::new(DType::I64), &[d])?;
        cx.add1("delta_1", Reshape { shape: vec![1], allowzero: false }, &[d])?
    };
    let steps = cx.add1("offsets", dlc_ir::ops::Mul {}, &[i, dw])?;
    let v = cx.add1("values", dlc_ir::ops::Add {}, &[steps, sw])?;
    cx.add("", Cast::new(dtype), &[v])
}

fn range(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if (0..3).any(|i| cx.const_input(i).ok().flatten().is_none()) {
        return range_computed(cx);
    }
    let get = |cx: &mut NodeCx, i: usize| -> Result<TensorData, String> {
        cx.const_input(i)?.ok_or_else(|| format!("input {i} must be a constant"))
    };
    let (s, l, d) = (get(cx, 0)?, get(cx, 1)?, get(cx, 2)?);
    let dtype = s.ty().dtype;
    if let (Some(s), Some(l), Some(d)) = (s.to_i64(), l.to_i64(), d.to_i64()) {
        let (s, l, d) = (s[0], l[0], d[0]);
        if d == 0 {
            return Err("delta must be non-zero".into());
        }
        let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as i64;
        if n > 1 << 26 {
            return Err(format!("a range of {n} elements is too large to materialise"));
        }
        let v: Vec<i64> = (0..n).map(|i| s + i * d).collect();
        let t = TensorData::from_i64(&[n as u64], &v).expect("vector");
        let t = if dtype == dlc_ir::DType::I64 { t } else { cast_const(t, dtype)? };
        return Ok(vec![cx.add_const(t)]);
    }
    match (s.to_f32(), l.to_f32(), d.to_f32()) {
        (Some(s), Some(l), Some(d)) if d[0] != 0.0 => {
            let n = ((l[0] - s[0]) / d[0]).ceil().max(0.0) as u64;
            if n > 1 << 26 {
                return Err(format!("a range of {n} elements is too large to materialise"));
            }
            let v: Vec<f32> = (0..n).map(|i| s[0] + i as f32 * d[0]).collect();
            Ok(vec![cx.add_const(TensorData::from_f32(&[n], &v).expect("vector"))])
        }
        _ => Err(format!("Range of {dtype} is not supported")),
    }
}

fn cast_const(t: TensorData, to: dlc_ir::DType) -> Result<TensorData, String> {
    let ty = t.ty().clone();
    dlc_interp::eval(&Cast::new(to).into(), &[t], &[dlc_ir::TensorType { dtype: to, shape: ty.shape }])
        .map_err(|e| e.to_string())
        .map(|mut v| v.remove(0))
}

/// Pad's amounts: constants, or (opset 11+) known only at run time, computed dims (at
/// least 0: negative pads given at run time fail the run rather than crop).
enum Amounts {
    Known(Vec<i64>),
    Computed(Vec<dlc_ir::Expr>),
}

pub(crate) fn pad(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let mut x = cx.input(0)?;
    let rank = cx.ty(x).shape.rank();
    let mode = match cx.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return Err(format!("unknown mode '{m}'")),
    };
    // The fill value: a constant, or a value known only at run time (`None`).
    let mut run_value = None;
    // Opset 18: pads may name a subset of the axes; axes known only at run time
    // scatter the pads into a full list while the model runs.
    let run_axes = cx.opset >= 18 && cx.opt_input(3)?.is_some() && cx.const_input(3)?.is_none();
    let (pads, value) = if cx.opset < 11 {
        (Amounts::Known(cx.ints("pads")), cx.float("value", 0.0) as f64)
    } else {
        let shape_pads = cx.node.input.get(1).and_then(|n| cx.imp.shape_values.get(n)).cloned();
        let pads = match shape_pads {
            // Amounts computed from run-time dims (Swin's padding to whole windows,
            // `(7 - W % 7) % 7`), which must be at least 0.
            Some(s) if !run_axes => {
                if let Some(e) = s.elems.iter().find(|e| !super::shapes::nonneg(e)) {
                    return Err(format!("a pad of {e} computed from run-time dims may be negative (a crop)"));
                }
                Amounts::Computed(s.elems)
            }
            _ => match cx.const_input(1)? {
                Some(_) if !run_axes => Amounts::Known(cx.const_ints(1, "pads")?.ok_or("pads is required")?),
                _ if run_axes => {
                    let (p, a) = (cx.input(1)?, cx.input(3)?);
                    let k = match cx.ty(a).shape.0.as_slice() {
                        [Dim::Fixed(k)] => *k,
                        _ => return Err(format!("axes must be a vector of known length, got {}", cx.ty(a))),
                    };
                    let p = if cx.ty(p).dtype == DType::I64 {
                        p
                    } else {
                        cx.add1("pads_i64", Cast::new(DType::I64), &[p])?
                    };
                    let a = if cx.ty(a).dtype == DType::I64 {
                        a
                    } else {
                        cx.add1("axes_i64", Cast::new(DType::I64), &[a])?
                    };
                    let zero = cx.i64_const(&[1], &[0])?;
                    let rv = cx.i64_const(&[1], &[rank as i64])?;
                    let neg = cx.add1("axes_negative", Less {}, &[a, zero])?;
                    let up = cx.add1("axes_up", Add {}, &[a, rv])?;
                    let a = cx.add1("axes_normalised", Where {}, &[neg, up, a])?;
                    let ends = cx.add1("end_axes", Add {}, &[a, rv])?;
                    let idx = cx.add1("pad_positions", Concat { axis: 0 }, &[a, ends])?;
                    if cx.ty(p).shape.numel() != Some(2 * k) {
                        return Err(format!("pads {} must hold 2 values per axis of {}", cx.ty(p), cx.ty(a)));
                    }
                    let zeros = cx.i64_const(&[2 * rank as u64], &vec![0; 2 * rank])?;
                    let op = ScatterElements { axis: 0, reduction: ScatterReduction::None };
                    let full = cx.add1("full_pads", op, &[zeros, idx, p])?;
                    let (view, e) = super::bind::computed_dims(cx, x, full, "pads")?;
                    x = view;
                    Amounts::Computed(e)
                }
                _ => {
                    let v = cx.input(1)?;
                    let (view, e) = super::bind::computed_dims(cx, x, v, "pads")?;
                    x = view;
                    Amounts::Computed(e)
                }
            },
        };
        let value = match cx.opt_input(2)? {
            None => 0.0,
            Some(v) if mode == PadMode::Constant && cx.const_input(2)?.is_none() => {
                run_value = Some(v);
                0.0
            }
            Some(_) => match cx.const_input(2)? {
                // Other modes ignore the value.
                None => 0.0,
                Some(t) => match (t.to_f32(), t.to_i64()) {
                    (Some(v), _) if !v.is_empty() => v[0] as f64,
                    (_, Some(v)) if !v.is_empty() => v[0] as f64,
                    _ => match dlc_interp::eval(
                        &Cast::new(dlc_ir::DType::F64).into(),
                        std::slice::from_ref(&t),
                        &[dlc_ir::TensorType { dtype: dlc_ir::DType::F64, shape: t.ty().shape.clone() }],
                    ) {
                        Ok(v) => f64::from_le_bytes(
                            v[0].bytes().get(..8).ok_or("empty constant_value")?.try_into().expect("8 bytes"),
                        ),
                        Err(e) => return Err(format!("constant_value: {e}")),
                    },
                },
            },
        };
        (pads, value)
    };
    let axes = if cx.opset >= 18 && !run_axes { cx.const_ints(3, "axes")? } else { None };
    let full = |p: &[dlc_ir::Expr]| -> Result<Vec<dlc_ir::Expr>, String> {
        let Some(axes) = &axes else { return Ok(p.to_vec()) };
        let mut full = vec![dlc_ir::Expr::c(0); 2 * rank];
        for (i, &a) in axes.iter().enumerate() {
            let a = normalize_axis(a, rank).ok_or(format!("axis {a} out of range"))?;
            full[a] = p.get(i).ok_or("pads shorter than axes")?.clone();
            full[a + rank] = p.get(i + axes.len()).ok_or("pads shorter than axes")?.clone();
        }
        Ok(full)
    };
    let op = match pads {
        Amounts::Known(p) => {
            let e: Vec<dlc_ir::Expr> = p.iter().map(|&v| dlc_ir::Expr::c(v)).collect();
            let p = full(&e)?.iter().map(|e| e.as_const().unwrap_or(0)).collect();
            Pad::new(p, mode, value)
        }
        Amounts::Computed(e) => {
            let e = full(&e)?;
            if e.len() != 2 * rank {
                return Err(format!("pads give {} amounts for the {} dims of {}", e.len(), rank, cx.ty(x)));
            }
            let exprs = e.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(";");
            Pad { pads: Vec::new(), mode, value, exprs }
        }
    };
    let Some(v) = run_value else { return cx.add("", op, &[x]) };
    // A fill value known only at run time: pad with 0, then put the value where a
    // padded mask of ones is 0.
    let ty = cx.ty(x);
    let v = if cx.ty(v).dtype == ty.dtype { v } else { cx.add1("value_cast", Cast::new(ty.dtype), &[v])? };
    let v = cx.add1("value_scalar", Reshape { shape: vec![], allowzero: true }, &[v])?;
    let ones = cx.add1("ones", Cast::new(DType::Bool), &[x])?;
    let tr = TensorData::new(TensorType::fixed(DType::Bool, &[]), vec![1u8].into()).ok_or("true")?;
    let tr = cx.add_const(tr);
    let t = cx.add1("inside_true", dlc_ir::ops::Or {}, &[ones, tr])?;
    let mut mop = op.clone();
    mop.value = 0.0;
    let inside = cx.add1("inside", mop, &[t])?;
    let padded = cx.add1("padded", op, &[x])?;
    cx.add("", dlc_ir::ops::Where {}, &[inside, padded, v])
}

fn scatter_reduction(cx: &NodeCx) -> Result<ScatterReduction, String> {
    Ok(match cx.string("reduction", "none")?.as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        r => return Err(format!("unknown reduction '{r}'")),
    })
}

/// Tile as reshape to `[1, d0, 1, d1, ...]`, expand to `[r0, d0, r1, d1, ...]`, reshape to
/// `[r0 * d0, r1 * d1, ...]` (exact data movement).
/// Expand to a shape known only at run time (operand 1): ONNX's two-way broadcast.
/// Along an axis where `x` has extent 1 (or none), the result's extent is the value
/// given, a computed dim; where `x` has a fixed extent `d != 1`, it stays `d`, and the
/// value must be 1 or `d` (else the run fails as the computed dim's check: the value
/// is replaced by -1).
fn expand_computed(cx: &mut NodeCx, x: Value) -> Result<Value, String> {
    let t = cx.input(1)?;
    let tt = cx.ty(t);
    let m = match tt.shape.0.as_slice() {
        [Dim::Fixed(m)] => *m as usize,
        _ => return Err(format!("shape must be a vector of known length, got {tt}")),
    };
    let t = if tt.dtype == DType::I64 { t } else { cx.add1("shape_i64", Cast::new(DType::I64), &[t])? };
    let xs = cx.ty(x).shape.0.clone();
    let r = xs.len().max(m);
    // Each axis of the result: x's extent (1 when x lacks the axis).
    let xd: Vec<Dim> =
        (0..r).map(|i| if i + xs.len() < r { Dim::Fixed(1) } else { xs[i + xs.len() - r].clone() }).collect();
    // The axes the given values decide (x's extent 1) and the fixed ones they must match.
    let tail = &xd[r - m..];
    if let Some(d) = tail.iter().find(|d| d.fixed().is_none()) {
        return Err(format!("a run-time shape against the run-time dim {d} of {} is not supported yet", cx.ty(x)));
    }
    let fixed: Vec<i64> = tail.iter().map(|d| d.fixed().unwrap_or(1) as i64).collect();
    let w = if fixed.iter().all(|&d| d == 1) {
        t
    } else {
        let dvec = cx.i64_const(&[m as u64], &fixed)?;
        let ones = cx.i64_const(&[m as u64], &vec![1; m])?;
        let bad = cx.i64_const(&[m as u64], &vec![-1; m])?;
        let is_one = cx.add1("is_one", dlc_ir::ops::Equal {}, &[t, ones])?;
        let is_d = cx.add1("is_d", dlc_ir::ops::Equal {}, &[t, dvec])?;
        let ok = cx.add1("ok", dlc_ir::ops::Or {}, &[is_one, is_d])?;
        let checked = cx.add1("checked", dlc_ir::ops::Where {}, &[ok, dvec, bad])?;
        let mask: Vec<u8> = fixed.iter().map(|&d| (d != 1) as u8).collect();
        let mask = cx.add_const(
            TensorData::new(dlc_ir::TensorType::fixed(DType::Bool, &[m as u64]), mask.into()).ok_or("mask")?,
        );
        cx.add1("target", dlc_ir::ops::Where {}, &[mask, checked, t])?
    };
    let (x, vals) = super::bind::computed_dims(cx, x, w, "shape")?;
    let target: Vec<dlc_ir::Expr> = (0..r)
        .map(|i| match (i + m).checked_sub(r) {
            Some(j) if fixed[j] == 1 => vals[j].clone(),
            _ => xd[i].expr(),
        })
        .collect();
    super::shapes::expand_to(cx, x, &target, "")
}

fn tile(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    if cx.const_input(1)?.is_none() {
        // Repeats known only at run time: computed dims, the same interleave.
        let r = cx.input(1)?;
        let d = cx.ty(x).shape.0.clone();
        let (x, reps) = super::bind::computed_dims(cx, x, r, "repeats")?;
        if reps.len() != d.len() {
            return Err(format!("repeats give {} counts for the {} dims of {}", reps.len(), d.len(), cx.ty(x)));
        }
        let join = |v: Vec<dlc_ir::Expr>| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(";");
        let inter = join(d.iter().flat_map(|n| [dlc_ir::Expr::c(1), n.expr()]).collect());
        let wide: Vec<dlc_ir::Expr> = d.iter().zip(&reps).flat_map(|(n, r)| [r.clone(), n.expr()]).collect();
        let out = join(d.iter().zip(&reps).map(|(n, r)| &n.expr() * r).collect());
        let a = cx.add1("interleave", dlc_ir::ops::View { dims: inter }, &[x])?;
        let b = super::shapes::expand_to(cx, a, &wide, "repeat")?;
        return cx.add("", dlc_ir::ops::View { dims: out }, &[b]);
    }
    let reps = cx.const_ints(1, "repeats")?.ok_or("repeats is required")?;
    let ty = cx.ty(x);
    let d = ty.shape.as_fixed().ok_or_else(|| format!("needs known dims, got {ty}"))?;
    if reps.len() != d.len() || reps.iter().any(|&r| r < 0) {
        return Err(format!("repeats {reps:?} must give a non-negative count per dim of {}", ty.shape));
    }
    let inter: Vec<i64> = d.iter().flat_map(|&n| [1, n as i64]).collect();
    let wide: Vec<i64> = d.iter().zip(&reps).flat_map(|(&n, &r)| [r, n as i64]).collect();
    let out: Vec<i64> = d.iter().zip(&reps).map(|(&n, &r)| r * n as i64).collect();
    let a = cx.add1("interleave", Reshape { shape: inter, allowzero: true }, &[x])?;
    let b = cx.add1("repeat", Expand::to(wide), &[a])?;
    cx.add("", Reshape { shape: out, allowzero: true }, &[b])
}

/// Constant indices (operand `operand`) into `data` along `axis` must lie in
/// `[-n, n - 1]` for a known extent `n`: ONNX Runtime fails such a model when it runs;
/// dlc refuses it when compiling rather than clamp. (Indices known only at run time are
/// clamped into range by the kernels, so a run never reads outside its buffer.)
fn check_const_indices(cx: &mut NodeCx, data: Value, axis: i64, operand: usize) -> Result<(), String> {
    let ty = cx.ty(data);
    let rank = ty.shape.rank() as i64;
    let a = if axis < 0 { axis + rank } else { axis };
    let Some(n) = (0..rank).contains(&a).then(|| ty.shape.0[a as usize].fixed()).flatten() else {
        return Ok(());
    };
    let Some(idx) = cx.const_input(operand)?.and_then(|t| t.to_i64()) else { return Ok(()) };
    let n = n as i64;
    if let Some(bad) = idx.iter().find(|&&k| k < -n || k >= n) {
        return Err(format!("index {bad} is out of range for axis {axis} of extent {n} (valid: {} to {})", -n, n - 1));
    }
    Ok(())
}

/// EyeLike: a constant (the input's shape must be known): ones on diagonal `k` (column
/// = row + k), zeros elsewhere, of the `dtype` attribute's type or the input's.
fn eye_like(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let t = cx.ty(x);
    let dims = t.shape.as_fixed().ok_or_else(|| format!("EyeLike needs an input of known shape, got {t}"))?;
    let [rows, cols] = dims[..] else { return Err(format!("EyeLike needs a 2-D input, got {t}")) };
    let to = match cx.attr("dtype") {
        Some(a) => {
            crate::tensor::dtype_from_onnx(a.i as i32).ok_or_else(|| format!("dtype {} is not supported", a.i))?
        }
        None => t.dtype,
    };
    let k = cx.int("k", 0);
    if rows.saturating_mul(cols) > 1 << 26 {
        return Err(format!("shape {t} is too large to materialise"));
    }
    let v: Vec<f32> =
        (0..rows as i64).flat_map(|r| (0..cols as i64).map(move |c| if c - r == k { 1.0 } else { 0.0 })).collect();
    let ones = cx.add_const(TensorData::from_f32(&dims, &v).ok_or("an identity constant")?);
    if to == DType::F32 {
        return Ok(vec![ones]);
    }
    cx.add("", Cast::new(to), &[ones])
}

/// GatherND as a Gather over the data with its batch and indexed dims flattened: each
/// index tuple (negative entries wrapped) becomes one row number, plus its batch's
/// offset. A tuple with an entry out of range becomes a row number out of range, so the
/// Gather's index check fails the run (a wrong row is never read). The data's indexed
/// and trailing dims may be run-time dims (a detector's scores of every anchor and
/// class, flattened): their extents and strides are then computed as tensors while the
/// model runs; the batch dims and the tuple length must be known.
fn gather_nd(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    use super::shapes::{shape_tensor, ShapeVal};
    use dlc_ir::Expr;
    let (data, idx) = (cx.input(0)?, cx.input(1)?);
    let (dt, it) = (cx.ty(data), cx.ty(idx));
    let dd: Vec<Expr> = dt.shape.0.iter().map(Dim::expr).collect();
    let b = usize::try_from(cx.int("batch_dims", 0)).map_err(|_| "batch_dims must be >= 0")?;
    // The indices' leading dims may be run-time dims (a NonZero's count); the tuple
    // length and the batch dims must be known.
    let known = |i: usize| it.shape.0.get(i).and_then(|d| d.fixed());
    let q = it.shape.rank();
    let k = q
        .checked_sub(1)
        .and_then(known)
        .ok_or_else(|| format!("GatherND needs a known index tuple length, got {it}"))? as usize;
    let id: Vec<u64> = (0..b.min(q))
        .map(known)
        .collect::<Option<_>>()
        .ok_or_else(|| format!("GatherND needs known batch dims, got {it}"))?;
    let r = dd.len();
    if k == 0 || b >= q || b + k > r {
        return Err(format!("indices {it} do not fit data {dt} with batch_dims={b}"));
    }
    let db: Vec<u64> = dd[..b]
        .iter()
        .map(|e| e.as_const().map(|c| c as u64))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("GatherND needs data whose batch dims are known, got {dt}"))?;
    if id[..b] != db[..] {
        return Err(format!("indices {it} do not fit data {dt} with batch_dims={b}"));
    }
    // An i64 vector of dim expressions: a constant, or computed while the model runs.
    let vector = |cx: &mut NodeCx, v: &[Expr], what: &str| -> Result<Value, String> {
        match v.iter().map(Expr::as_const).collect::<Option<Vec<i64>>>() {
            Some(c) => cx.i64_const(&[c.len() as u64], &c),
            None => shape_tensor(cx, &ShapeVal { elems: v.to_vec(), scalar: false }, &format!("{}_{what}", cx.name)),
        }
    };
    let ix = if it.dtype == DType::I64 { idx } else { cx.add1("indices_i64", Cast::new(DType::I64), &[idx])? };
    // Wrap negative entries by their dim's extent, and flag entries out of range.
    let ext: Vec<Expr> = dd[b..b + k].to_vec();
    let e = vector(cx, &ext, "extents")?;
    let zero = cx.i64_const(&[], &[0])?;
    let neg = cx.add1("negative", Less {}, &[ix, zero])?;
    let plus = cx.add1("wrapped", Add {}, &[ix, e])?;
    let w = cx.add1("entries", Where {}, &[neg, plus, ix])?;
    let below = cx.add1("below", Less {}, &[w, zero])?;
    let inside = cx.add1("inside", Less {}, &[w, e])?;
    let past = cx.add1("past", Not {}, &[inside])?;
    let bad = cx.add1("bad", Or {}, &[below, past])?;
    // Row numbers within a batch: entries times the strides of the indexed dims.
    let product = |v: &[Expr]| v.iter().fold(Expr::c(1), |a, x| &a * x);
    let strides: Vec<Expr> = (0..k).map(|j| product(&ext[j + 1..])).collect();
    let st = vector(cx, &strides, "strides")?;
    let scaled = cx.add1("scaled", Mul {}, &[w, st])?;
    let mut row = cx.add1("rows", ReduceSum { axes: vec![-1], keepdims: false }, &[scaled])?;
    let per_batch = product(&ext);
    if b > 0 {
        // Batch j's rows start at j * per_batch.
        let per_batch =
            per_batch.as_const().ok_or_else(|| format!("GatherND with batch dims needs known data, got {dt}"))?;
        let nb: u64 = id[..b].iter().product();
        let mut shape: Vec<u64> = id[..b].to_vec();
        shape.extend(std::iter::repeat_n(1, q - 1 - b));
        let offs: Vec<i64> = (0..nb as i64).map(|j| j * per_batch).collect();
        let o = cx.i64_const(&shape, &offs)?;
        row = cx.add1("batch_rows", Add {}, &[row, o])?;
    }
    let total = &Expr::c(db.iter().product::<u64>() as i64) * &per_batch;
    let bad_i = cx.add1("bad_i64", Cast::new(DType::I64), &[bad])?;
    let any = cx.add1("any_bad", ReduceMax { axes: vec![-1], keepdims: false }, &[bad_i])?;
    let any = cx.add1("any_bad_bool", Greater {}, &[any, zero])?;
    // A row below any the Gather wraps (it checks its indices).
    let outside = match total.as_const() {
        Some(t) => -t - 1,
        None => -(1i64 << 62),
    };
    let outside = cx.i64_const(&[], &[outside])?;
    let row = cx.add1("checked_rows", Where {}, &[any, outside, row])?;
    let mut flat = vec![total];
    flat.extend(dd[b + k..].iter().cloned());
    let data2 = match flat.iter().map(Expr::as_const).collect::<Option<Vec<i64>>>() {
        Some(f) => cx.add1("flat_data", Reshape { shape: f, allowzero: true }, &[data])?,
        None => {
            let dims = flat.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(";");
            cx.add1("flat_data", View { dims }, &[data])?
        }
    };
    cx.add("", Gather { axis: 0 }, &[data2, row])
}
