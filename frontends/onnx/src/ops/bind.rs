//! Operands that decide shapes but are only known at run time (a Reshape target, the
//! axes of a reduction or of Squeeze/Unsqueeze fed by a graph input or computed from
//! data): a `bind` node computes the dims from their values while the model runs
//! (`dlc_ir::bind`), and the rest of the graph computes with the symbols it binds.
use super::NodeCx;
use dlc_ir::bind::BindRule;
use dlc_ir::ops::{Bind, Transpose};
use dlc_ir::{DType, Dim, Expr, Op, Value};

/// Operand `i` as integers when it is a constant (or an empty vector), else the run-time
/// value; `None` when absent.
pub(crate) fn ints_or_value(cx: &mut NodeCx, i: usize, what: &str) -> Result<Option<Result<Vec<i64>, Value>>, String> {
    let Some(v) = cx.opt_input(i)? else { return Ok(None) };
    if let Some(t) = cx.const_input(i)? {
        return t.to_i64().map(|x| Some(Ok(x))).ok_or_else(|| format!("{what} must be integers"));
    }
    let ty = cx.ty(v);
    if ty.shape.0 == [Dim::Fixed(0)] {
        return Ok(Some(Ok(Vec::new())));
    }
    Ok(Some(Err(v)))
}

/// A Bind of `x`'s elements to the dims `rule` computes from the run-time vector `t`;
/// its symbols are named after the node.
pub(crate) fn bind(cx: &mut NodeCx, suffix: &str, x: Value, t: Value, rule: BindRule) -> Result<Value, String> {
    let tt = cx.ty(t);
    let m = match (tt.dtype, tt.shape.0.as_slice()) {
        (DType::I64, [Dim::Fixed(m)]) => *m as usize,
        _ => {
            return Err(format!(
                "a shape operand computed at run time must be a 1-D i64 tensor of known length, got {tt}"
            ))
        }
    };
    let n = cx.ty(x).shape.rank();
    let k = rule.count(n, m).ok_or_else(|| format!("{m} axes for a rank-{n} tensor"))?;
    let base =
        crate::import::symbol_name(&if suffix.is_empty() { cx.name.clone() } else { format!("{}_{suffix}", cx.name) });
    let syms: Vec<String> = (0..k).map(|j| format!("{base}_{j}")).collect();
    let op = Bind { rule: rule.text(), syms: syms.join(" ") };
    cx.add1(suffix, op, &[x, t])
}

/// Extents given as the values of the run-time vector `v` (ConstantOfShape's shape, a
/// Resize's sizes): a Bind of rule `values` binds one *computed dim* per element
/// (checked `0 <= e <= 2^40` when the model runs; the artifact's prologue computes them
/// before the run, so buffers are sized by them). Integer vectors of other widths are
/// cast to i64. Returns a view of `x` that the node using the extents must read instead
/// of `x` (the edge that keeps the Bind alive and ordered before it), and the extents
/// (constants when `v` folded).
pub(crate) fn computed_dims(
    cx: &mut NodeCx,
    x: Value,
    v: Value,
    what: &str,
) -> Result<(Value, Vec<dlc_ir::Expr>), String> {
    let t = cx.ty(v);
    let v = match t.dtype {
        DType::I64 => v,
        d if d.is_signed_int() => cx.add1(&format!("{what}_i64"), dlc_ir::ops::Cast::new(DType::I64), &[v])?,
        d => return Err(format!("{what} must be integers, got {d}")),
    };
    let v = match t.shape.rank() {
        1 => v,
        0 => cx.add1(&format!("{what}_1"), dlc_ir::ops::Reshape { shape: vec![1], allowzero: false }, &[v])?,
        _ => return Err(format!("{what} must be a vector, got {t}")),
    };
    if let Some(r) = partly_known(cx, x, v, what)? {
        return Ok(r);
    }
    let view = bind(cx, what, x, v, BindRule::Values)?;
    match &cx.imp.graph.node(view.node).op {
        Op::Bind(b) => Ok((view, b.symbols().map(dlc_ir::Expr::sym).collect())),
        _ => {
            let vals =
                cx.imp.known.get(&v).and_then(|t| t.to_i64()).ok_or("internal: a shape folded without values")?;
            if let Some(bad) = vals.iter().find(|&&x| !(0..=dlc_ir::bind::MAX_COMPUTED).contains(&x)) {
                return Err(format!("{what} has the invalid extent {bad}"));
            }
            Ok((x, vals.into_iter().map(dlc_ir::Expr::c).collect()))
        }
    }
}

/// Extents `v` that are a concatenation of pieces some of which are known at import
/// (constants, dims of shape values: `torch.onnx`'s `[*x.shape[:2], *sizes]` for a
/// Resize): the known ones as they are, each other piece bound on its own (so a Resize
/// keeps its batch and channel dims). `None` when no piece is known, or none is only
/// known at run time (`computed_dims` binds or folds the whole vector then).
fn partly_known(cx: &mut NodeCx, x: Value, v: Value, what: &str) -> Result<Option<(Value, Vec<Expr>)>, String> {
    fn pieces(cx: &NodeCx, v: Value, out: &mut Vec<Result<Vec<Expr>, Value>>) {
        if let Some(t) = cx.imp.known.get(&v).and_then(|t| t.to_i64()) {
            return out.push(Ok(t.into_iter().map(Expr::c).collect()));
        }
        if let Some(e) = cx.imp.dim_tensors.get(&v) {
            // A dim the run may give negative (`S - 1`) is checked as a bound value is.
            if e.iter().all(super::shapes::nonneg) {
                return out.push(Ok(e.clone()));
            }
        }
        match &cx.imp.graph.node(v.node).op {
            Op::Concat(c) if c.axis == 0 && cx.ty(v).shape.rank() == 1 => {
                for p in cx.imp.graph.operands(v.node) {
                    pieces(cx, p, out);
                }
            }
            _ => out.push(Err(v)),
        }
    }
    let mut parts = Vec::new();
    pieces(cx, v, &mut parts);
    let known = parts.iter().filter(|p| p.is_ok()).count();
    if known == 0 || known == parts.len() && parts.iter().flatten().flatten().all(|e| e.as_const().is_some()) {
        return Ok(None);
    }
    let (mut view, mut dims) = (x, Vec::new());
    for (k, p) in parts.into_iter().enumerate() {
        match p {
            Ok(e) => {
                if let Some(bad) =
                    e.iter().filter_map(Expr::as_const).find(|c| !(0..=dlc_ir::bind::MAX_COMPUTED).contains(c))
                {
                    return Err(format!("{what} has the invalid extent {bad}"));
                }
                dims.extend(e);
            }
            Err(p) => {
                if cx.ty(p).dtype != DType::I64 || !matches!(cx.ty(p).shape.0.as_slice(), [Dim::Fixed(_)]) {
                    return Ok(None);
                }
                view = bind(cx, &format!("{what}_part{k}"), view, p, BindRule::Values)?;
                match &cx.imp.graph.node(view.node).op {
                    Op::Bind(b) => dims.extend(b.symbols().map(Expr::sym)),
                    _ => return Ok(None),
                }
            }
        }
    }
    Ok(Some((view, dims)))
}

/// The symbol Bind node `view` binds (its first), or `None` when the Bind folded to a
/// constant (every operand known at import).
fn bound_symbol(cx: &NodeCx, view: Value) -> Option<String> {
    match &cx.imp.graph.node(view.node).op {
        Op::Bind(b) => b.symbols().next().map(str::to_string),
        _ => None,
    }
}

/// A reduction over axes `t` given at run time: `x` viewed as `[e0, k0, e1, k1, ...]`
/// (the reduced axes' extents in the `k`s), transposed to `[e..., k...]` and reduced
/// over the `k`s (`make(axes, keepdims)` builds the reduction), which gives the
/// `keepdims` result; without `keepdims` its kept dims are bound again.
pub(crate) fn reduce(
    cx: &mut NodeCx,
    x: Value,
    t: Value,
    keepdims: bool,
    make: impl Fn(Vec<i64>, bool) -> Op,
) -> Result<Vec<Value>, String> {
    let n = cx.ty(x).shape.rank() as i64;
    let view = bind(cx, "axes", x, t, BindRule::ReduceAxes)?;
    let perm: Vec<i64> = (0..n).map(|i| 2 * i).chain((0..n).map(|i| 2 * i + 1)).collect();
    let tr = cx.add1("reduced_last", Transpose { perm }, &[view])?;
    let axes: Vec<i64> = (n..2 * n).collect();
    if keepdims {
        return cx.add("", make(axes, false), &[tr]);
    }
    let r = cx.add1("keepdims", make(axes, false), &[tr])?;
    Ok(vec![bind(cx, "", r, t, BindRule::ReduceSqueeze)?])
}

/// Operand `i` as an i64 vector of `k` values (i32 cast), or `default` when absent.
fn i64_operand(cx: &mut NodeCx, i: usize, k: u64, default: impl Fn(u64) -> i64, what: &str) -> Result<Value, String> {
    let v = match cx.opt_input(i)? {
        Some(v) => v,
        None => {
            let vals: Vec<i64> = (0..k).map(default).collect();
            let t = dlc_ir::TensorData::from_i64(&[k], &vals).ok_or("internal: i64 vector")?;
            return Ok(cx.add_const(t));
        }
    };
    let ty = cx.ty(v);
    if ty.shape.0 != [Dim::Fixed(k)] {
        return Err(format!("{what} (input {i}) must be a vector of {k} values like starts, got {ty}"));
    }
    match ty.dtype {
        DType::I64 => Ok(v),
        DType::I32 => cx.add1(&format!("{what}_i64"), dlc_ir::ops::Cast { to: DType::I64, saturate: true }, &[v]),
        d => Err(format!("{what} must be int32 or int64, got {d}")),
    }
}

/// Slice whose starts, ends, axes or steps arrive at run time: the four vectors joined
/// into one, a Bind computing every axis's first index, step and count, and a Strided
/// read of that window.
pub(crate) fn slice(cx: &mut NodeCx, x: Value) -> Result<Vec<Value>, String> {
    let starts = cx.input(1)?;
    let k = match cx.ty(starts).shape.0.as_slice() {
        [Dim::Fixed(k)] => *k,
        _ => return Err(format!("starts must be a vector of known length, got {}", cx.ty(starts))),
    };
    let parts = [
        i64_operand(cx, 1, k, |_| 0, "starts")?,
        i64_operand(cx, 2, k, |_| 0, "ends")?,
        i64_operand(cx, 3, k, |j| j as i64, "axes")?,
        i64_operand(cx, 4, k, |_| 1, "steps")?,
    ];
    let t = cx.add1("operands", dlc_ir::ops::Concat { axis: 0 }, &parts)?;
    let view = bind(cx, "window", x, t, BindRule::Slice)?;
    let syms: Vec<String> = match &cx.imp.graph.node(view.node).op {
        Op::Bind(b) => b.symbols().map(str::to_string).collect(),
        // Folded to a constant (every operand known): a plain Slice would have done.
        _ => return Err("internal: a run-time slice with constant operands".into()),
    };
    // Axes the slice does not touch (its axes known when compiling) keep their fixed
    // extents: start 0, step 1, the whole dim (the Bind computes the same).
    let rank = cx.ty(x).shape.rank() as i64;
    let untouched: Vec<Option<u64>> = match cx.opt_input(3)? {
        None => (0..rank).map(|j| if j < k as i64 { None } else { cx.ty(x).shape.0[j as usize].fixed() }).collect(),
        Some(_) => match cx.const_input(3)?.and_then(|t| t.to_i64()) {
            Some(axes) => {
                let sliced: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
                (0..rank)
                    .map(|j| if sliced.contains(&j) { None } else { cx.ty(x).shape.0[j as usize].fixed() })
                    .collect()
            }
            None => vec![None; rank as usize],
        },
    };
    let pick = |o: usize, whole: &dyn Fn(u64) -> String| {
        (0..rank as usize)
            .map(|j| match untouched[j] {
                Some(d) => whole(d),
                None => syms[3 * j + o].clone(),
            })
            .collect::<Vec<_>>()
            .join(";")
    };
    let op = dlc_ir::ops::Strided {
        counts: pick(2, &|d| d.to_string()),
        starts: pick(0, &|_| "0".into()),
        steps: pick(1, &|_| "1".into()),
    };
    cx.add("", op, &[view])
}

/// Split into parts whose sizes arrive at run time: a Bind checking the sizes and
/// computing each part's offset, and one Strided read per part.
pub(crate) fn split(cx: &mut NodeCx, x: Value, sizes: Value, axis: usize) -> Result<Vec<Value>, String> {
    let m = match cx.ty(sizes).shape.0.as_slice() {
        [Dim::Fixed(m)] => *m as usize,
        _ => return Err(format!("split must be a vector of known length, got {}", cx.ty(sizes))),
    };
    if m != cx.node.output.len() {
        return Err(format!("{m} split sizes for {} outputs", cx.node.output.len()));
    }
    split_parts(cx, x, sizes, axis)
}

/// The parts of `x` along `axis` whose sizes are operand 1 (`sizes`, known only at run
/// time): one window per size (Split's outputs, SplitToSequence's elements).
pub(crate) fn split_parts(cx: &mut NodeCx, x: Value, sizes: Value, axis: usize) -> Result<Vec<Value>, String> {
    let m = match cx.ty(sizes).shape.0.as_slice() {
        [Dim::Fixed(m)] => *m as usize,
        _ => return Err(format!("split must be a vector of known length, got {}", cx.ty(sizes))),
    };
    let sizes = i64_operand(cx, 1, m as u64, |_| 0, "split")?;
    let view = bind(cx, "parts", x, sizes, BindRule::Split { axis })?;
    let syms: Vec<String> = match &cx.imp.graph.node(view.node).op {
        Op::Bind(b) => b.symbols().map(str::to_string).collect(),
        _ => return Err("internal: a run-time split with constant sizes".into()),
    };
    let dims: Vec<String> = cx.ty(x).shape.0.iter().map(|d| d.expr().to_string()).collect();
    let mut outs = Vec::with_capacity(m);
    for j in 0..m {
        let mut counts = dims.clone();
        counts[axis] = syms[2 * j + 1].clone();
        let starts: Vec<String> =
            (0..dims.len()).map(|i| if i == axis { syms[2 * j].clone() } else { "0".into() }).collect();
        let op = dlc_ir::ops::Strided {
            counts: counts.join(";"),
            starts: starts.join(";"),
            steps: vec!["1"; dims.len()].join(";"),
        };
        outs.push(cx.add1(&format!("part{j}"), op, &[view])?);
    }
    Ok(outs)
}

/// NonZero: the count of nonzero elements (a ReduceSum of `x != 0` as i64) bound to a
/// symbol by a Bind (rule `count`), then the indices written by a NonZero node sized by
/// it. A constant operand folds to a constant.
pub(crate) fn nonzero(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    if ty.shape.rank() == 0 {
        return Err("needs an operand of rank 1 or more".into());
    }
    if let (Some(t), Some(dims)) = (cx.const_input(0)?, ty.shape.as_fixed()) {
        let bytes = t.bytes();
        let es = ty.dtype.size();
        let nz: Vec<usize> = (0..t.numel())
            .filter(|&i| {
                let b = &bytes[i * es..(i + 1) * es];
                match ty.dtype {
                    DType::F32 => f32::from_le_bytes(b.try_into().unwrap_or([0; 4])) != 0.0,
                    DType::F64 => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) != 0.0,
                    _ => b.iter().any(|&x| x != 0),
                }
            })
            .collect();
        let r = dims.len();
        let mut vals = vec![0i64; r * nz.len()];
        for (j, &flat) in nz.iter().enumerate() {
            let mut rest = flat as u64;
            for d in (0..r).rev() {
                vals[d * nz.len() + j] = (rest % dims[d].max(1)) as i64;
                rest /= dims[d].max(1);
            }
        }
        let t =
            dlc_ir::TensorData::from_i64(&[r as u64, nz.len() as u64], &vals).ok_or("internal: NonZero constant")?;
        return Ok(vec![cx.add_const(t)]);
    }
    let flags = if ty.dtype == DType::Bool {
        x
    } else {
        let zero = dlc_ir::TensorData::new(dlc_ir::TensorType::fixed(ty.dtype, &[]), vec![0u8; ty.dtype.size()].into())
            .ok_or("internal: zero constant")?;
        let z = cx.add_const(zero);
        let eq = cx.add1("is_zero", dlc_ir::ops::Equal {}, &[x, z])?;
        cx.add1("nonzero", dlc_ir::ops::Not {}, &[eq])?
    };
    let ones = cx.add1("flags", dlc_ir::ops::Cast { to: DType::I64, saturate: true }, &[flags])?;
    let axes: Vec<i64> = (0..ty.shape.rank() as i64).collect();
    let total = cx.add1("count", dlc_ir::ops::ReduceSum { axes, keepdims: false }, &[ones])?;
    let total = cx.add1("count_vector", dlc_ir::ops::Reshape { shape: vec![1], allowzero: false }, &[total])?;
    let view = bind(cx, "counted", x, total, BindRule::Count)?;
    let count = bound_symbol(cx, view).ok_or("internal: NonZero's count folded")?;
    cx.add("", dlc_ir::ops::NonZero { count }, &[view])
}

/// TopK (opsets 1-24): `k` from the attribute (opset < 10) or operand 1; a constant k
/// becomes a fixed dim, one computed at run time is bound by a Bind (rule `extent`: at
/// most the axis's extent), then the TopK node computes values and indices sorted best
/// first (`sorted = 0` leaves the order to the implementation: dlc sorts too).
pub(crate) fn top_k(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    let axis = cx.int("axis", -1);
    let a = dlc_ir::ops::normalize_axis(axis, ty.shape.rank())
        .filter(|_| ty.shape.rank() > 0)
        .ok_or_else(|| format!("axis {axis} out of range for {}", ty.shape))?;
    let largest = cx.int("largest", 1) != 0;
    let k_shape = cx.node.input.get(1).and_then(|n| cx.imp.shape_values.get(n)).cloned();
    let k_const = if cx.opset < 10 {
        Some(cx.int("k", -1))
    } else if let Some(s) = &k_shape {
        match s.elems.as_slice() {
            [e] => e.as_const(),
            _ => return Err("k must hold one value".into()),
        }
    } else {
        match cx.const_input(1)? {
            Some(t) => match t.to_i64().as_deref() {
                Some([k]) => Some(*k),
                _ => return Err(format!("k must hold one integer, got {}", t.ty())),
            },
            None => None,
        }
    };
    let (src, k) = match k_const {
        Some(k) if k < 0 => return Err(format!("k must be >= 0, got {k}")),
        Some(k) => (x, k.to_string()),
        None => {
            let t = match &k_shape {
                // k computed from run-time dims: as a tensor (the sum of k ones), so that
                // the bind checks it against the axis like a k given as data.
                Some(s) => {
                    let e = &s.elems[0];
                    let ones = dlc_ir::ops::Iota {
                        len: e.max_with(&dlc_ir::Expr::c(0)).to_string(),
                        start: 1,
                        delta: 0,
                        dtype: DType::I64,
                    };
                    let ones = cx.add1("k_ones", ones, &[])?;
                    cx.add1("k_value", dlc_ir::ops::ReduceSum { axes: vec![0], keepdims: true }, &[ones])?
                }
                None => cx.input(1)?,
            };
            let view = bind(cx, "k", x, t, BindRule::Extent { axis: a })?;
            let sym = bound_symbol(cx, view).ok_or("internal: TopK's k folded")?;
            (view, sym)
        }
    };
    cx.add("", dlc_ir::ops::TopK { axis: a as i64, largest, k }, &[src])
}

/// NonMaxSuppression: an `nms` node selects into rows sized for every box of every
/// class and counts them; [`first_slices`] cuts ONNX's `i64[count, 3]`. Absent operands take ONNX's defaults (no boxes kept,
/// IoU threshold 0, no score threshold: `-inf`).
pub(crate) fn nms(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (boxes, scores) = (cx.input(0)?, cx.input(1)?);
    let center = match cx.int("center_point_box", 0) {
        0 => false,
        1 => true,
        c => return Err(format!("center_point_box must be 0 or 1, got {c}")),
    };
    let scalar_f32 = |cx: &mut NodeCx, v: f32| cx.add_const(dlc_ir::TensorData::from_f32(&[1], &[v]).expect("scalar"));
    let one = |cx: &mut NodeCx, v: Value, what: &str, dt: DType| -> Result<Value, String> {
        let t = cx.ty(v);
        if t.shape.numel() != Some(1) {
            return Err(format!("{what} must hold one value, got {t}"));
        }
        let v = if t.dtype == dt { v } else { cx.add1(&format!("{what}_cast"), dlc_ir::ops::Cast::new(dt), &[v])? };
        cx.add1(&format!("{what}_1"), dlc_ir::ops::Reshape { shape: vec![1], allowzero: false }, &[v])
    };
    // An empty max_output_boxes_per_class keeps nothing, as an absent one does.
    let max = match cx.opt_input(2)? {
        Some(v) if cx.ty(v).shape.numel() == Some(0) => cx.i64_const(&[1], &[0])?,
        Some(v) => one(cx, v, "max_output_boxes_per_class", DType::I64)?,
        None => cx.i64_const(&[1], &[0])?,
    };
    let iou = match cx.opt_input(3)? {
        Some(v) => one(cx, v, "iou_threshold", DType::F32)?,
        None => scalar_f32(cx, 0.0),
    };
    let sthr = match cx.opt_input(4)? {
        Some(v) => one(cx, v, "score_threshold", DType::F32)?,
        None => scalar_f32(cx, f32::NEG_INFINITY),
    };
    let outs = cx.add("select", dlc_ir::ops::Nms { center_point_box: center }, &[boxes, scores, max, iou, sthr])?;
    let [sel, count] = outs[..] else { return Err("internal: nms gives two results".into()) };
    Ok(vec![first_slices(cx, "", sel, count, 0)?])
}

/// The first `count` slices of `v` along `axis`: a Bind (rule `extent_AXIS`: the count
/// is at most that extent) of the count and a `strided` window (a Slice when everything
/// folded to constants).
pub(crate) fn first_slices(cx: &mut NodeCx, what: &str, v: Value, count: Value, axis: usize) -> Result<Value, String> {
    // Its dims may be run-time ones (NMS over boxes a TopK counted).
    let dims: Vec<String> = cx.ty(v).shape.0.iter().map(|d| d.expr().to_string()).collect();
    let view = bind(cx, &format!("{what}_count"), v, count, BindRule::Extent { axis })?;
    let Some(c) = bound_symbol(cx, view) else {
        // Constant operands folded: the count is known.
        let n = cx.imp.known.get(&count).and_then(|t| t.to_i64()).and_then(|v| v.first().copied());
        let n = n.ok_or("internal: a count folded without a value")?;
        let op = dlc_ir::ops::Slice { starts: vec![0], ends: vec![n], axes: vec![axis as i64], steps: vec![] };
        return cx.add1(what, op, &[v]);
    };
    let counts: Vec<String> =
        dims.iter().enumerate().map(|(i, d)| if i == axis { c.clone() } else { d.to_string() }).collect();
    let op = dlc_ir::ops::Strided {
        counts: counts.join(";"),
        starts: vec!["0"; dims.len()].join(";"),
        steps: vec!["1"; dims.len()].join(";"),
    };
    cx.add1(what, op, &[view])
}

/// Unique: a `unique` node finds the distinct slices (sorted or in order of first
/// occurrence) into results sized for all of them and counts them; each result sized
/// by the count is cut by [`first_slices`]. Without `axis` the operand is flattened.
pub(crate) fn unique(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let mut x = cx.input(0)?;
    let axis = if cx.has("axis") {
        let r = cx.ty(x).shape.rank();
        let a = cx.int("axis", 0);
        dlc_ir::ops::normalize_axis(a, r).filter(|_| r > 0).ok_or_else(|| format!("axis {a} out of range"))?
    } else {
        x = cx.add1("flat", dlc_ir::ops::Reshape { shape: vec![-1], allowzero: false }, &[x])?;
        0
    };
    let sorted = cx.int("sorted", 1) != 0;
    let outs = cx.add("select", dlc_ir::ops::Unique { axis: axis as i64, sorted }, &[x])?;
    let [y, idx, inv, counts, count] = outs[..] else { return Err("internal: unique gives five results".into()) };
    let wanted = |i: usize| cx.node.output.get(i).is_some_and(|o| !o.is_empty());
    let (wy, wi, wc) = (wanted(0), wanted(1), wanted(3));
    let y = if wy { first_slices(cx, "", y, count, axis)? } else { y };
    let idx = if wi { first_slices(cx, "indices", idx, count, 0)? } else { idx };
    let counts = if wc { first_slices(cx, "counts", counts, count, 0)? } else { counts };
    Ok(vec![y, idx, inv, counts])
}

/// Compress: the count of true entries of the condition (up to the axis's extent) bound
/// by a Bind (rule `count`), then a Compress node copying those slices. Without `axis`
/// the operand is flattened first.
pub(crate) fn compress(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let mut x = cx.input(0)?;
    let cond = cx.input(1)?;
    let axis = if cx.has("axis") {
        cx.int("axis", 0)
    } else {
        x = cx.add1("flat", dlc_ir::ops::Reshape { shape: vec![-1], allowzero: false }, &[x])?;
        0
    };
    Ok(vec![compress_values(cx, x, cond, axis)?])
}

/// Compress of `x` by the bool vector `cond` along `axis` (see [`compress`]).
pub(crate) fn compress_values(cx: &mut NodeCx, x: Value, cond: Value, axis: i64) -> Result<Value, String> {
    let ty = cx.ty(x);
    let a = dlc_ir::ops::normalize_axis(axis, ty.shape.rank())
        .filter(|_| ty.shape.rank() > 0)
        .ok_or_else(|| format!("axis {axis} out of range for {}", ty.shape))?;
    let ct = cx.ty(cond);
    let len = match (ct.dtype, ct.shape.0.as_slice()) {
        (DType::Bool, [Dim::Fixed(l)]) => Some(*l),
        // As long as the axis, a run-time dim (a mask computed from the same input).
        (DType::Bool, [d]) if *d == ty.shape.0[a] => None,
        _ => {
            return Err(format!(
                "the condition must be a bool vector of known length, or as long as the axis ({}), got {ct}",
                ty.shape.0[a]
            ))
        }
    };
    // A constant condition: a Gather of the kept slices.
    if let Some(c) = cx.imp.known.get(&cond).cloned() {
        let d = ty.shape.0[a].fixed().unwrap_or(u64::MAX);
        let keep: Vec<i64> =
            c.bytes().iter().enumerate().filter(|&(i, &b)| b != 0 && (i as u64) < d).map(|(i, _)| i as i64).collect();
        let idx = dlc_ir::TensorData::from_i64(&[keep.len() as u64], &keep).ok_or("internal: indices")?;
        let idx = cx.add_const(idx);
        return cx.add1("", dlc_ir::ops::Gather { axis: a as i64 }, &[x, idx]);
    }
    // Entries past the axis's extent are ignored: count only those within it.
    let counted = match (ty.shape.0[a].fixed(), len) {
        (Some(d), Some(len)) if d < len => {
            let op = dlc_ir::ops::Slice { starts: vec![0], ends: vec![d as i64], axes: vec![0], steps: vec![] };
            cx.add1("within", op, &[cond])?
        }
        (_, None) | (Some(_), Some(_)) => cond,
        (None, Some(_)) => {
            return Err(format!("Compress along a run-time dim ({}) is not supported yet", ty.shape.0[a]))
        }
    };
    let ones = cx.add1("flags", dlc_ir::ops::Cast { to: DType::I64, saturate: true }, &[counted])?;
    let total = cx.add1("count", dlc_ir::ops::ReduceSum { axes: vec![0], keepdims: true }, &[ones])?;
    let view = bind(cx, "counted", cond, total, BindRule::Count)?;
    let count = bound_symbol(cx, view).ok_or("Compress with a constant condition is not supported yet")?;
    cx.add1("", dlc_ir::ops::Compress { axis: a as i64, count }, &[x, view])
}
