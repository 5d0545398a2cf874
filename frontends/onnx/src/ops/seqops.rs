//! SwiGLU, ReverseSequence and TensorScatter, built from dlc's ops as ONNX's reference
//! computes them: ReverseSequence is a GatherElements along the time axis and
//! TensorScatter a ScatterElements along the sequence axis, each with indices computed
//! from the run-time lengths or write positions (so an index out of range fails the run,
//! as the reference raises).
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("SwiGLU", swiglu);
    reg.insert("ReverseSequence", reverse_sequence);
    reg.insert("TensorScatter", tensor_scatter);
    reg.insert("OneHot", one_hot);
    reg.insert("Det", det);
    reg.insert("AffineGrid", affine_grid);
}

/// AffineGrid (opset 20): for theta `[N, 2, 3]` (`[N, 3, 4]`) and size `[N, C, H, W]`
/// (`[N, C, D, H, W]`), the grid `[N, H, W, 2]` (`[N, D, H, W, 3]`) of `theta . [x, y,
/// (z,) 1]` over the normalised coordinates of each output position (`-1 + 2i / (s -
/// 1)` with `align_corners`, else `-1 + (2i + 1) / s`). The spatial sizes are computed
/// dims when the size is known only at run time; computed in f32 (ONNX's reference
/// builds the coordinates in f64).
fn affine_grid(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (theta, size) = (cx.input(0)?, cx.input(1)?);
    let tt = cx.ty(theta);
    let td = tt.shape.as_fixed().ok_or_else(|| format!("theta must have known dims, got {tt}"))?;
    let k = match td.as_slice() {
        [_, 2, 3] => 2usize,
        [_, 3, 4] => 3,
        _ => return Err(format!("theta must be [N, 2, 3] or [N, 3, 4], got {tt}")),
    };
    if cx.ty(size).shape.numel() != Some(k as u64 + 2) {
        return Err(format!("size must hold {} values for theta {tt}, got {}", k + 2, cx.ty(size)));
    }
    let align = cx.int("align_corners", 0) != 0;
    let theta = if tt.dtype == DType::F32 { theta } else { cx.add1("theta_f32", Cast::new(DType::F32), &[theta])? };
    let size =
        if cx.ty(size).dtype == DType::I64 { size } else { cx.add1("size_i64", Cast::new(DType::I64), &[size])? };
    let spatial =
        cx.add1("spatial", Slice { starts: vec![2], ends: vec![k as i64 + 2], axes: vec![0], steps: vec![] }, &[size])?;
    let (theta, dims) = super::bind::computed_dims(cx, theta, spatial, "size")?;
    let n = td[0];
    // The normalised coordinates along spatial axis `a` (0 = D or H first), shaped to
    // broadcast over [N, (D,) H, W].
    let mut coords = Vec::with_capacity(k);
    for (a, d) in dims.iter().enumerate() {
        let i =
            cx.add1(&format!("index{a}"), Iota { len: d.to_string(), start: 0, delta: 1, dtype: DType::F32 }, &[])?;
        let sv = cx.add1(
            &format!("size{a}"),
            Slice { starts: vec![a as i64], ends: vec![a as i64 + 1], axes: vec![0], steps: vec![] },
            &[spatial],
        )?;
        let sf = cx.add1(&format!("size{a}_f32"), Cast::new(DType::F32), &[sv])?;
        let one = cx.add_const(TensorData::from_f32(&[1], &[1.0]).ok_or("one")?);
        let two = cx.add_const(TensorData::from_f32(&[1], &[2.0]).ok_or("two")?);
        let c = if align {
            // -1 + 2i / (s - 1)
            let den = cx.add1(&format!("den{a}"), Sub {}, &[sf, one])?;
            let t = cx.add1(&format!("twice{a}"), Mul {}, &[i, two])?;
            let q = cx.add1(&format!("ratio{a}"), Div {}, &[t, den])?;
            cx.add1(&format!("coord{a}"), Sub {}, &[q, one])?
        } else {
            // -1 + (2i + 1) / s
            let t = cx.add1(&format!("twice{a}"), Mul {}, &[i, two])?;
            let t = cx.add1(&format!("odd{a}"), Add {}, &[t, one])?;
            let q = cx.add1(&format!("ratio{a}"), Div {}, &[t, sf])?;
            cx.add1(&format!("coord{a}"), Sub {}, &[q, one])?
        };
        let mut shape = vec!["1".to_string(); k + 1];
        shape[a + 1] = d.to_string();
        coords.push(cx.add1(&format!("coord{a}_b"), View { dims: shape.join(";") }, &[c])?);
    }
    // theta's rows: component j = sum over the homogeneous coordinates (x, y, (z,) 1),
    // x along the last axis (W), y along H, z along D.
    let mut comps = Vec::with_capacity(k);
    for j in 0..k {
        let entry = |cx: &mut NodeCx, m: usize| -> Result<Value, String> {
            let idx = (j * (k + 1) + m) as i64;
            let flat = cx.add1(
                &format!("theta_flat{j}_{m}"),
                Reshape { shape: vec![n as i64, (k * (k + 1)) as i64], allowzero: false },
                &[theta],
            )?;
            let e = cx.add1(
                &format!("theta{j}_{m}"),
                Slice { starts: vec![idx], ends: vec![idx + 1], axes: vec![1], steps: vec![] },
                &[flat],
            )?;
            let mut shape = vec!["1".to_string(); k + 1];
            shape[0] = n.to_string();
            cx.add1(&format!("theta{j}_{m}_b"), View { dims: shape.join(";") }, &[e])
        };
        let mut acc = entry(cx, k)?;
        for m in 0..k {
            // Homogeneous coordinate m is x (m = 0, the last spatial axis), y, then z.
            let coord = coords[k - 1 - m];
            let t = entry(cx, m)?;
            let p = cx.add1(&format!("term{j}_{m}"), Mul {}, &[t, coord])?;
            acc = cx.add1(&format!("sum{j}_{m}"), Add {}, &[acc, p])?;
        }
        let mut dims: Vec<String> = cx.ty(acc).shape.0.iter().map(|d| d.expr().to_string()).collect();
        dims.push("1".into());
        comps.push(cx.add1(&format!("component{j}"), View { dims: dims.join(";") }, &[acc])?);
    }
    let y = cx.add1("grid", Concat { axis: k as i64 + 1 }, &comps)?;
    cx.add("", Cast::new(tt.dtype), &[y])
}

/// Det of `[..., n, n]` matrices with `n` at most 5, by Leibniz's formula: one Gather
/// picks every permutation's `n` entries, their products take the permutation's sign,
/// and the sum is the determinant (exact for the integer-valued and small matrices
/// models compute it of; larger `n` is refused).
fn det(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let t = cx.ty(x);
    let r = t.shape.rank();
    let n = match (r >= 2).then(|| (t.shape.0[r - 2].fixed(), t.shape.0[r - 1].fixed())) {
        Some((Some(a), Some(b))) if a == b => a as usize,
        _ => return Err(format!("needs [..., n, n] matrices with n known, got {t}")),
    };
    if !(1..=5).contains(&n) {
        return Err(format!("Det of {n}x{n} matrices is not supported yet (at most 5x5)"));
    }
    // Every permutation of 0..n with its sign (Heap's algorithm order does not matter).
    fn perms(n: usize) -> Vec<(Vec<usize>, i64)> {
        if n == 1 {
            return vec![(vec![0], 1)];
        }
        let mut out = Vec::new();
        for (p, s) in perms(n - 1) {
            for pos in 0..n {
                let mut q = p.clone();
                q.insert(pos, n - 1);
                // Inserting n - 1 at `pos` passes over n - 1 - pos larger-indexed entries.
                let sign = if (n - 1 - pos).is_multiple_of(2) { s } else { -s };
                out.push((q, sign));
            }
        }
        out
    }
    let ps = perms(n);
    let idx: Vec<i64> = ps.iter().flat_map(|(p, _)| (0..n).map(move |i| (i * n + p[i]) as i64)).collect();
    let mut flat: Vec<String> = t.shape.0[..r - 2].iter().map(|d| d.expr().to_string()).collect();
    flat.push((n * n).to_string());
    let xf = cx.add1("flat", View { dims: flat.join(";") }, &[x])?;
    let idx = cx.i64_const(&[ps.len() as u64, n as u64], &idx)?;
    let picked = cx.add1("entries", Gather { axis: r as i64 - 2 }, &[xf, idx])?;
    let prods = cx.add1("products", ReduceProd { axes: vec![-1], keepdims: false }, &[picked])?;
    let signs: Vec<f32> = ps.iter().map(|(_, s)| *s as f32).collect();
    let signs = cx.add_const(TensorData::from_f32(&[ps.len() as u64], &signs).ok_or("signs")?);
    let signs = if t.dtype == DType::F32 { signs } else { cx.add1("signs_cast", Cast::new(t.dtype), &[signs])? };
    let terms = cx.add1("terms", Mul {}, &[prods, signs])?;
    cx.add("", ReduceSum { axes: vec![-1], keepdims: false }, &[terms])
}

/// OneHot (opsets 9-11): `depth` positions (`ceil(depth)`, a computed dim when depth is
/// known only at run time) inserted at `axis`; a position equal to its index (negative
/// indices wrapped by adding depth; indices compared in f64, as ONNX's reference compares
/// them with `arange(depth)`) takes `values[1]`, every other `values[0]`.
fn one_hot(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (idx, depth, values) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (it, dt, vt) = (cx.ty(idx), cx.ty(depth), cx.ty(values));
    if dt.shape.numel() != Some(1) {
        return Err(format!("depth must hold one value, got {dt}"));
    }
    if vt.shape.numel() != Some(2) {
        return Err(format!("values must hold [off_value, on_value], got {vt}"));
    }
    let r = it.shape.rank();
    let axis = cx.int("axis", -1);
    let a = normalize_axis(axis, r + 1).ok_or_else(|| format!("axis {axis} out of range for rank {}", r + 1))?;
    let flat = |cx: &mut NodeCx, v: Value, what: &str| -> Result<Value, String> {
        let v = cx.add1(&format!("{what}_f64"), Cast::new(DType::F64), &[v])?;
        cx.add1(&format!("{what}_1"), Reshape { shape: vec![1], allowzero: false }, &[v])
    };
    let df = flat(cx, depth, "depth")?;
    let up = cx.add1("depth_ceil", Ceil {}, &[df])?;
    let n = cx.add1("depth_i64", Cast { to: DType::I64, saturate: true }, &[up])?;
    let (df, d) = super::bind::computed_dims(cx, df, n, "depth")?;
    let xf = cx.add1("indices_f64", Cast::new(DType::F64), &[idx])?;
    let zero =
        cx.add_const(TensorData::new(dlc_ir::TensorType::fixed(DType::F64, &[1]), vec![0u8; 8].into()).ok_or("0")?);
    let neg = cx.add1("negative", Less {}, &[xf, zero])?;
    let moved = cx.add1("wrapped", Add {}, &[xf, df])?;
    let xf = cx.add1("index", Where {}, &[neg, moved, xf])?;
    let dims = |with: Option<String>| -> String {
        let mut v: Vec<String> = it.shape.0.iter().map(|x| x.expr().to_string()).collect();
        v.insert(a, with.unwrap_or_else(|| "1".into()));
        v.join(";")
    };
    let xu = cx.add1("index_at_axis", View { dims: dims(None) }, &[xf])?;
    let pos = cx.add1("positions", Iota { len: d[0].to_string(), start: 0, delta: 1, dtype: DType::F64 }, &[])?;
    let mut pd = vec!["1".to_string(); r + 1];
    pd[a] = d[0].to_string();
    let pos = cx.add1("positions_at_axis", View { dims: pd.join(";") }, &[pos])?;
    let hot = cx.add1("hot", Equal {}, &[xu, pos])?;
    let off =
        cx.add1("off_value", Slice { starts: vec![0], ends: vec![1], axes: vec![0], steps: vec![] }, &[values])?;
    let on = cx.add1("on_value", Slice { starts: vec![1], ends: vec![2], axes: vec![0], steps: vec![] }, &[values])?;
    let off = cx.add1("off", Reshape { shape: vec![], allowzero: false }, &[off])?;
    let on = cx.add1("on", Reshape { shape: vec![], allowzero: false }, &[on])?;
    cx.add("", Where {}, &[hot, on, off])
}

fn known(cx: &NodeCx, v: Value, what: &str) -> Result<Vec<u64>, String> {
    let t = cx.ty(v);
    t.shape.as_fixed().ok_or_else(|| format!("{what} must have a known shape, got {t}"))
}

/// `0..n` as an i64 tensor of rank `rank` with the `n` values along `axis`.
fn iota_along(cx: &mut NodeCx, n: u64, axis: usize, rank: usize) -> Result<Value, String> {
    let mut dims = vec![1u64; rank];
    dims[axis] = n;
    let v: Vec<i64> = (0..n as i64).collect();
    cx.i64_const(&dims, &v)
}

/// `v` (a vector) as a tensor of rank `rank` with its values along `axis`, as i64.
fn along(cx: &mut NodeCx, name: &str, v: Value, axis: usize, rank: usize) -> Result<Value, String> {
    let n = *known(cx, v, name)?.first().ok_or_else(|| format!("{name} must be a vector"))?;
    let v =
        if cx.ty(v).dtype == DType::I64 { v } else { cx.add1(&format!("{name}_i64"), Cast::new(DType::I64), &[v])? };
    let mut shape = vec![1i64; rank];
    shape[axis] = n as i64;
    cx.add1(name, Reshape { shape, allowzero: false }, &[v])
}

/// SwiGLU (opset 28): `a * sigmoid(alpha * a) * b`, `a` and `b` of one shape.
fn swiglu(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    if cx.ty(a) != cx.ty(b) {
        return Err(format!("A and B must have one type and shape, got {} and {}", cx.ty(a), cx.ty(b)));
    }
    let dt = cx.ty(a).dtype;
    let alpha = cx.float("alpha", 1.0);
    let scaled = if alpha == 1.0 {
        a
    } else {
        let c = cx.add_const(TensorData::from_f32(&[], &[alpha]).ok_or("alpha")?);
        let c = if dt == DType::F32 { c } else { cx.add1("alpha_cast", Cast::new(dt), &[c])? };
        cx.add1("alpha_a", Mul {}, &[a, c])?
    };
    let g = cx.add1("gate", Sigmoid {}, &[scaled])?;
    let s = cx.add1("swish", Mul {}, &[a, g])?;
    cx.add("", Mul {}, &[s, b])
}

/// ReverseSequence: element `t` of batch `b` along the time axis reads `len[b] - 1 - t`
/// when `t < len[b]`, else itself.
fn reverse_sequence(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, lens) = (cx.input(0)?, cx.input(1)?);
    let d = known(cx, x, "input")?;
    let (ba, ta) = (cx.int("batch_axis", 1), cx.int("time_axis", 0));
    if !matches!((ba, ta), (0, 1) | (1, 0)) || d.len() < 2 {
        return Err(format!(
            "batch_axis {ba} and time_axis {ta} must be 0 and 1 (in either order) of a rank >= 2 input"
        ));
    }
    let (ba, ta) = (ba as usize, ta as usize);
    let t = iota_along(cx, d[ta], ta, d.len())?;
    let l = along(cx, "lens", lens, ba, d.len())?;
    let one = cx.i64_const(&[], &[1])?;
    let last = cx.add1("last", Sub {}, &[l, one])?;
    let rev = cx.add1("reversed", Sub {}, &[last, t])?;
    let inside = cx.add1("inside", Less {}, &[t, l])?;
    let idx = cx.add1("source", Where {}, &[inside, rev, t])?;
    let full = cx.add1("source_full", Expand::to(d.iter().map(|&v| v as i64).collect()), &[idx])?;
    cx.add("", GatherElements { axis: ta as i64 }, &[x, full])
}

/// TensorScatter (opset 24): the update's slices along `axis` written into the cache
/// from each batch's write index on (`circular`: modulo the cache's length).
fn tensor_scatter(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (past, update) = (cx.input(0)?, cx.input(1)?);
    let (pd, ud) = (known(cx, past, "past_cache")?, known(cx, update, "update")?);
    let r = pd.len();
    let axis = normalize_axis(cx.int("axis", -2), r)
        .filter(|&a| a > 0 && r == ud.len())
        .ok_or("axis must be a dim after the batch")?;
    let circular = match cx.string("mode", "linear")?.as_str() {
        "linear" => false,
        "circular" => true,
        m => return Err(format!("unknown mode '{m}'")),
    };
    let w = match cx.opt_input(2)? {
        Some(w) => along(cx, "write_indices", w, 0, r)?,
        None => cx.i64_const(&[], &[0])?,
    };
    let s = iota_along(cx, ud[axis], axis, r)?;
    let mut idx = cx.add1("positions", Add {}, &[s, w])?;
    if circular {
        let len = cx.i64_const(&[], &[pd[axis] as i64])?;
        idx = cx.add1("wrapped", Mod { fmod: false }, &[idx, len])?;
    }
    let full = cx.add1("positions_full", Expand::to(ud.iter().map(|&v| v as i64).collect()), &[idx])?;
    cx.add("", ScatterElements { axis: axis as i64, reduction: ScatterReduction::None }, &[past, full, update])
}
