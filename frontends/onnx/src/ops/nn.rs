//! Conv, MaxPool, AveragePool (1-D and 2-D here, 3-D in `window3d`), GlobalAveragePool,
//! BatchNormalization, Softmax.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, Op, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("Conv", conv);
    reg.insert("MaxPool", maxpool);
    reg.insert("MaxUnpool", maxunpool);
    reg.insert("LpPool", lp_pool);
    reg.insert("LRN", lrn);
    reg.insert("RoiAlign", roi_align);
    reg.insert("Col2Im", col2im);
    reg.insert("DeformConv", deform_conv);
    reg.insert("GridSample", |cx| {
        let mode = match cx.string("mode", if cx.opset >= 20 { "linear" } else { "bilinear" })?.as_str() {
            "nearest" => SampleMode::Nearest,
            "linear" | "bilinear" => SampleMode::Linear,
            "cubic" | "bicubic" => SampleMode::Cubic,
            m => return Err(format!("unknown mode '{m}'")),
        };
        let padding = match cx.string("padding_mode", "zeros")?.as_str() {
            "zeros" => SamplePadding::Zeros,
            "border" => SamplePadding::Border,
            "reflection" => SamplePadding::Reflection,
            m => return Err(format!("unknown padding_mode '{m}'")),
        };
        let align_corners = cx.int("align_corners", 0) != 0;
        let (x, g) = (cx.input(0)?, cx.input(1)?);
        cx.add("", GridSample { mode, padding, align_corners }, &[x, g])
    });
    reg.insert("LpNormalization", |cx| {
        let x = cx.input(0)?;
        let axes = vec![cx.int("axis", -1)];
        let norm = match cx.int("p", 2) {
            1 => cx.add1("norm", ReduceL1 { axes, keepdims: true }, &[x])?,
            2 => cx.add1("norm", ReduceL2 { axes, keepdims: true }, &[x])?,
            p => return Err(format!("p must be 1 or 2, got {p}")),
        };
        // A zero norm gives 0 (opset 22), not 0/0.
        let dt = cx.ty(x).dtype;
        let zero =
            dlc_ir::TensorData::new(dlc_ir::TensorType::fixed(dt, &[]), vec![0u8; dt.size()].into()).ok_or("zero")?;
        let zero = cx.add_const(zero);
        let q = cx.add1("quotient", Div {}, &[x, norm])?;
        let is_zero = cx.add1("norm_is_zero", Equal {}, &[norm, zero])?;
        cx.add("", Where {}, &[is_zero, zero, q])
    });
    reg.insert("MeanVarianceNormalization", |cx| {
        // (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9), ONNX's function body.
        let x = cx.input(0)?;
        let axes = if cx.has("axes") { cx.ints("axes") } else { vec![0, 2, 3] };
        let mean = cx.add1("mean", ReduceMean { axes: axes.clone(), keepdims: true }, &[x])?;
        let sq = cx.add1("square", Mul {}, &[x, x])?;
        let mean_sq = cx.add1("mean_of_square", ReduceMean { axes, keepdims: true }, &[sq])?;
        let sq_mean = cx.add1("square_of_mean", Mul {}, &[mean, mean])?;
        let var = cx.add1("variance", Sub {}, &[mean_sq, sq_mean])?;
        let std = cx.add1("std", Sqrt {}, &[var])?;
        let dt = cx.ty(x).dtype;
        let eps = dlc_ir::TensorData::from_f32(&[], &[1e-9]).ok_or("eps")?;
        let eps = cx.add_const(eps);
        let eps = if dt == dlc_ir::DType::F32 { eps } else { cx.add1("eps", Cast::new(dt), &[eps])? };
        let den = cx.add1("denominator", Add {}, &[std, eps])?;
        let centred = cx.add1("centred", Sub {}, &[x, mean])?;
        cx.add("", Div {}, &[centred, den])
    });
    reg.insert("ConvTranspose", |cx| {
        let op = ConvTranspose {
            kernel_shape: cx.ints("kernel_shape"),
            strides: cx.ints("strides"),
            pads: cx.ints("pads"),
            dilations: cx.ints("dilations"),
            group: cx.int("group", 1),
            output_padding: cx.ints("output_padding"),
            output_shape: cx.ints("output_shape"),
            auto_pad: auto_pad(cx)?,
        };
        let mut operands = vec![cx.input(0)?, cx.input(1)?];
        if let Some(b) = cx.opt_input(2)? {
            operands.push(b);
        }
        if cx.ty(operands[0]).shape.rank() == 3 {
            return conv_transpose_1d(cx, op, operands);
        }
        if cx.ty(operands[0]).shape.rank() == 5 {
            return conv_transpose_3d(cx, op, operands);
        }
        if let Some(y) = conv_transpose_patches(cx, &op, &operands)? {
            return Ok(vec![y]);
        }
        cx.add("", op, &operands)
    });
    reg.insert("AveragePool", avgpool);
    reg.insert("GlobalAveragePool", |cx| {
        let x = cx.input(0)?;
        cx.add("", GlobalAveragePool {}, &[x])
    });
    reg.insert("BatchNormalization", batchnorm);
    reg.insert("LayerNormalization", |cx| layernorm(cx, false));
    reg.insert("RMSNormalization", |cx| layernorm(cx, true));
    reg.insert("Dropout", dropout);
    reg.insert("GlobalMaxPool", |cx| {
        let x = cx.input(0)?;
        let rank = cx.ty(x).shape.rank();
        if rank < 3 {
            return Err("needs rank >= 3".into());
        }
        cx.add("", ReduceMax { axes: (2..rank as i64).collect(), keepdims: true }, &[x])
    });
    reg.insert("InstanceNormalization", |cx| group_norm(cx, None));
    reg.insert("GroupNormalization", |cx| {
        let g = cx.int("num_groups", 0);
        group_norm(cx, Some(g))
    });
    reg.insert("Softmax", |cx| softmax(cx, SoftmaxMode::Softmax));
    reg.insert("LogSoftmax", |cx| softmax(cx, SoftmaxMode::LogSoftmax));
    reg.insert("Hardmax", |cx| softmax(cx, SoftmaxMode::Hardmax));
}

pub(crate) fn auto_pad(cx: &NodeCx) -> Result<AutoPad, String> {
    let s = cx.string("auto_pad", "NOTSET")?;
    AutoPad::from_name(&s).ok_or_else(|| format!("unknown auto_pad '{s}'"))
}

/// Window attributes of a 1-D op as those of a 2-D op over an `[N, C, 1, L]` view.
fn lift_ints(v: Vec<i64>, fill: i64) -> Vec<i64> {
    match v.as_slice() {
        [] => vec![],
        [a] => vec![fill, *a],
        [a, b] => vec![0, *a, 0, *b],
        _ => v,
    }
}

/// `[N, C, L]` as `[N, C, 1, L]`; 1-D windows run as 2-D windows of height 1.
fn lift_1d(cx: &mut NodeCx, x: Value, what: &str) -> Result<Value, String> {
    let t = cx.ty(x);
    if t.shape.rank() != 3 {
        return Err(format!("1-D windows need 3-D operands, got {t}"));
    }
    if let Some(d) = t.shape.as_fixed() {
        let shape = vec![d[0] as i64, d[1] as i64, 1, d[2] as i64];
        return cx.add1(what, Reshape { shape, allowzero: true }, &[x]);
    }
    // Run-time batch or length: a view to the same dims with a 1 inserted.
    let d = &t.shape.0;
    let dims = format!("{};{};1;{}", d[0], d[1], d[2]);
    cx.add1(what, dlc_ir::ops::View { dims }, &[x])
}

/// Reshapes a lifted `[N, C, 1, L]` result back to `[N, C, L]`.
fn lower_1d(cx: &mut NodeCx, y: Value) -> Result<Vec<Value>, String> {
    lower_1d_as(cx, y, "")
}

fn lower_1d_as(cx: &mut NodeCx, y: Value, suffix: &str) -> Result<Vec<Value>, String> {
    let t = cx.ty(y);
    if let Some(d) = t.shape.as_fixed() {
        return cx.add(suffix, Reshape { shape: vec![d[0] as i64, d[1] as i64, d[3] as i64], allowzero: true }, &[y]);
    }
    let d = &t.shape.0;
    cx.add(suffix, dlc_ir::ops::View { dims: format!("{};{};{}", d[0], d[1], d[3]) }, &[y])
}

fn conv(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    Ok(vec![conv_of(cx, "")?])
}

/// The Conv of node `cx` (its operands 0-2 and ONNX Conv attributes), named with
/// `suffix`.
pub(crate) fn conv_of(cx: &mut NodeCx, suffix: &str) -> Result<Value, String> {
    let mut op = Conv {
        kernel_shape: cx.ints("kernel_shape"),
        strides: cx.ints("strides"),
        pads: cx.ints("pads"),
        dilations: cx.ints("dilations"),
        group: cx.int("group", 1),
        auto_pad: auto_pad(cx)?,
        act: Activation::None,
    };
    let (mut x, mut w) = (cx.input(0)?, cx.input(1)?);
    if cx.ty(x).shape.rank() == 5 {
        let bias = cx.opt_input(2)?;
        let a = super::window3d::Attrs {
            kernel: op.kernel_shape,
            strides: op.strides,
            pads: op.pads,
            dilations: op.dilations,
            auto_pad: op.auto_pad,
            ceil_mode: false,
        };
        return super::window3d::build(cx, super::window3d::Kind::Conv { group: op.group }, x, Some(w), bias, &a);
    }
    let one_d = cx.ty(x).shape.rank() == 3;
    if one_d {
        x = lift_1d(cx, x, "lift_x")?;
        w = lift_1d(cx, w, "lift_w")?;
        op.kernel_shape = lift_ints(op.kernel_shape, 1);
        op.strides = lift_ints(op.strides, 1);
        op.dilations = lift_ints(op.dilations, 1);
        op.pads = lift_ints(op.pads, 0);
    }
    if !one_d && !cx.imp.onnx_ops_only {
        let bias = cx.opt_input(2)?;
        if let Some(y) = super::quant::qdq_conv(cx, &op, x, w, bias)? {
            return Ok(y);
        }
    }
    let mut operands = vec![x, w];
    if let Some(b) = cx.opt_input(2)? {
        operands.push(b);
    }
    if one_d {
        let y = cx.add1(if suffix.is_empty() { "conv2d" } else { suffix }, op, &operands)?;
        return Ok(lower_1d_as(cx, y, suffix)?[0]);
    }
    cx.add1(suffix, op, &operands)
}

/// The window attributes shared by the pooling ops.
struct Window {
    kernel_shape: Vec<i64>,
    strides: Vec<i64>,
    pads: Vec<i64>,
    dilations: Vec<i64>,
}

impl Window {
    fn read(cx: &NodeCx) -> Window {
        Window {
            kernel_shape: cx.ints("kernel_shape"),
            strides: cx.ints("strides"),
            pads: cx.ints("pads"),
            dilations: cx.ints("dilations"),
        }
    }

    /// The same window over an `[N, C, 1, L]` view of a 1-D input.
    fn lifted(self) -> Window {
        Window {
            kernel_shape: lift_ints(self.kernel_shape, 1),
            strides: lift_ints(self.strides, 1),
            pads: lift_ints(self.pads, 0),
            dilations: lift_ints(self.dilations, 1),
        }
    }
}

/// Adds the pooling op `make(window)` on `x`; 1-D inputs run as height-1 2-D windows.
fn pool_op(cx: &mut NodeCx, x: Value, w: Window, make: impl FnOnce(Window) -> Op) -> Result<Value, String> {
    if cx.ty(x).shape.rank() == 3 {
        let l = lift_1d(cx, x, "lift_x")?;
        let y = cx.add1("pool2d", make(w.lifted()), &[l])?;
        return Ok(lower_1d(cx, y)?[0]);
    }
    cx.add1("", make(w), &[x])
}

/// MaxPool's Indices output (2-D): for each kernel offset, the input element it reads
/// at every output position (a Gather of the flattened image by constant positions);
/// the first offset, in the window's row-major order, whose element equals the maximum
/// gives the index: `(n * C + c) * H * W` plus `h * W + w` (`w * H + h` with
/// `storage_order = 1`).
fn maxpool_indices(cx: &mut NodeCx, x: Value, y: Value) -> Result<Value, String> {
    let (xt, yt) = (cx.ty(x), cx.ty(y));
    let (xd, yd) = match (xt.shape.as_fixed(), yt.shape.as_fixed()) {
        (Some(a), Some(b)) if a.len() == 4 => (a, b),
        _ => return Err(format!("the Indices output needs a 2-D pool with known dims, got {xt}")),
    };
    if auto_pad(cx)? != AutoPad::NotSet {
        return Err("the Indices output with auto_pad is not supported yet".into());
    }
    let w = Window::read(cx);
    let at = |v: &[i64], i: usize, d: i64| v.get(i).copied().unwrap_or(d);
    let (kh, kw) = (at(&w.kernel_shape, 0, 1), at(&w.kernel_shape, 1, 1));
    let (sh, sw) = (at(&w.strides, 0, 1), at(&w.strides, 1, 1));
    let (dh, dw) = (at(&w.dilations, 0, 1), at(&w.dilations, 1, 1));
    let (pt, pl) = (at(&w.pads, 0, 0), at(&w.pads, 1, 0));
    let column_major = cx.int("storage_order", 0) == 1;
    let (n, c, h, wd) = (xd[0], xd[1], xd[2] as i64, xd[3] as i64);
    let (oh, ow) = (yd[2] as i64, yd[3] as i64);
    let flat = cx.add1("image_flat", Reshape { shape: vec![n as i64, c as i64, h * wd], allowzero: false }, &[x])?;
    let yf = cx.add1("max_flat", Reshape { shape: vec![n as i64, c as i64, oh * ow], allowzero: false }, &[y])?;
    let big = i64::MAX;
    let mut best = cx.i64_const(&[1], &[big])?;
    // Offsets last to first, so that the first matching one wins.
    for i in (0..kh).rev() {
        for j in (0..kw).rev() {
            let mut pos = Vec::with_capacity((oh * ow) as usize);
            let mut idx = Vec::with_capacity(pos.capacity());
            let mut valid = Vec::with_capacity(pos.capacity());
            for a in 0..oh {
                for b in 0..ow {
                    let (r, q) = (a * sh - pt + i * dh, b * sw - pl + j * dw);
                    let inside = (0..h).contains(&r) && (0..wd).contains(&q);
                    pos.push(if inside { r * wd + q } else { 0 });
                    idx.push(if column_major { q * h + r } else { r * wd + q });
                    valid.push(inside as u8);
                }
            }
            let m = (oh * ow) as u64;
            let posv = cx.i64_const(&[m], &pos)?;
            let v = cx.add1(&format!("tap{i}_{j}"), Gather { axis: 2 }, &[flat, posv])?;
            let eq = cx.add1(&format!("is_max{i}_{j}"), Equal {}, &[v, yf])?;
            let valid = dlc_ir::TensorData::new(dlc_ir::TensorType::fixed(dlc_ir::DType::Bool, &[m]), valid.into());
            let valid = cx.add_const(valid.ok_or("mask")?);
            let hit = cx.add1(&format!("hit{i}_{j}"), And {}, &[eq, valid])?;
            let idxv = cx.i64_const(&[m], &idx)?;
            best = cx.add1(&format!("best{i}_{j}"), Where {}, &[hit, idxv, best])?;
        }
    }
    let base: Vec<i64> = (0..(n * c) as i64).map(|k| k * h * wd).collect();
    let base = cx.i64_const(&[n, c, 1], &base)?;
    let best = cx.add1("image_index", Add {}, &[best, base])?;
    cx.add1("indices", Reshape { shape: vec![n as i64, c as i64, oh, ow], allowzero: false }, &[best])
}

/// MaxUnpool (2-D and up): zeros of the output shape with each input value scattered
/// to its flat index into the whole output (checked at run time like any scatter
/// index). The output shape is `output_shape` (constant, or known only at run time:
/// computed dims), else `(in - 1) * stride - pads + kernel` per spatial axis. This is
/// ONNX Runtime's kernel; ONNX's reference instead scatters into the default shape and
/// pads it at the end, which differs when `output_shape` is larger
/// (`test_maxunpool_export_with_output_shape` expects the reference's).
fn maxunpool(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, i) = (cx.input(0)?, cx.input(1)?);
    let xt = cx.ty(x);
    let xd = xt.shape.as_fixed().ok_or_else(|| format!("needs known dims, got {xt}"))?;
    let r = xd.len();
    if r < 3 || cx.ty(i).shape != xt.shape {
        return Err(format!("X {xt} and I {} must have one shape of rank 3 or more", cx.ty(i)));
    }
    let w = Window::read(cx);
    let k = r - 2;
    let nc = (xd[0] * xd[1]) as i64;
    let mut x = x;
    // The spatial extents.
    let spatial: Vec<dlc_ir::Expr> = match cx.opt_input(2)? {
        Some(shape) => {
            if cx.ty(shape).shape.numel() != Some(r as u64) {
                return Err(format!("output_shape {} must give {r} dims for {xt}", cx.ty(shape)));
            }
            let shape = if cx.ty(shape).dtype == dlc_ir::DType::I64 {
                shape
            } else {
                cx.add1("output_shape_i64", Cast::new(dlc_ir::DType::I64), &[shape])?
            };
            // Its batch and channel entries must be X's (else -1: the run fails).
            let ncv = cx.i64_const(&[2], &[xd[0] as i64, xd[1] as i64])?;
            let head =
                cx.add1("shape_nc", Slice { starts: vec![0], ends: vec![2], axes: vec![0], steps: vec![] }, &[shape])?;
            let tail = cx.add1(
                "shape_spatial",
                Slice { starts: vec![2], ends: vec![r as i64], axes: vec![0], steps: vec![] },
                &[shape],
            )?;
            let same = cx.add1("nc_same", Equal {}, &[head, ncv])?;
            let bad = cx.i64_const(&[2], &[-1, -1])?;
            let head = cx.add1("nc_checked", Where {}, &[same, ncv, bad])?;
            let checked = cx.add1("shape_checked", Concat { axis: 0 }, &[head, tail])?;
            let (view, e) = super::bind::computed_dims(cx, x, checked, "output_shape")?;
            x = view;
            e.into_iter().skip(2).collect()
        }
        None => {
            let mut d = Vec::with_capacity(k);
            for a in 0..k {
                let kk = *w.kernel_shape.get(a).ok_or("kernel_shape is required")?;
                let s = w.strides.get(a).copied().unwrap_or(1);
                let p = w.pads.get(a).copied().unwrap_or(0) + w.pads.get(a + k).copied().unwrap_or(0);
                let o = (xd[2 + a] as i64 - 1) * s - p + kk;
                if o < 0 {
                    return Err(format!("the output extent {o} along spatial axis {a} is negative"));
                }
                d.push(o);
            }
            d.into_iter().map(dlc_ir::Expr::c).collect()
        }
    };
    // One scatter over the flattened output, as ONNX Runtime's kernel does.
    let total = spatial.iter().fold(dlc_ir::Expr::c(nc), |a, d| &a * d);
    let dt = xt.dtype;
    let zero =
        dlc_ir::TensorData::new(dlc_ir::TensorType::fixed(dt, &[1]), vec![0u8; dt.size()].into()).ok_or("zero")?;
    let zero = cx.add_const(zero);
    let zeros = super::shapes::expand_to(cx, zero, &[total], "zeros")?;
    let all = xd.iter().product::<u64>() as i64;
    let xf = cx.add1("values_flat", Reshape { shape: vec![all], allowzero: false }, &[x])?;
    let i_f = cx.add1("indices_flat", Reshape { shape: vec![all], allowzero: false }, &[i])?;
    let op = ScatterElements { axis: 0, reduction: ScatterReduction::None };
    let y = cx.add1("scattered", op, &[zeros, i_f, xf])?;
    let mut dims = vec![xd[0].to_string(), xd[1].to_string()];
    dims.extend(spatial.iter().map(|e| e.to_string()));
    cx.add("", View { dims: dims.join(";") }, &[y])
}

fn maxpool(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if cx.node.output.get(1).is_some_and(|o| !o.is_empty()) {
        let x = cx.input(0)?;
        if cx.ty(x).shape.rank() != 4 {
            return Err("the Indices output is supported for 2-D pools only".into());
        }
        let y = maxpool_values(cx)?;
        let idx = maxpool_indices(cx, x, y)?;
        return Ok(vec![y, idx]);
    }
    cx.require_int("storage_order", 0)?;
    Ok(vec![maxpool_values(cx)?])
}

fn maxpool_values(cx: &mut NodeCx) -> Result<Value, String> {
    let (auto_pad, ceil_mode) = (auto_pad(cx)?, cx.int("ceil_mode", 0) != 0);
    let x = cx.input(0)?;
    let dt = cx.ty(x).dtype;
    // 8-bit integers pool exactly in f32 (every value is representable).
    let small_int = matches!(dt, dlc_ir::DType::U8 | dlc_ir::DType::I8);
    let x = if small_int { cx.add1("as_f32", Cast::new(dlc_ir::DType::F32), &[x])? } else { x };
    if cx.ty(x).shape.rank() == 5 {
        let a = attrs3d(Window::read(cx), auto_pad, ceil_mode);
        let y = super::window3d::build(cx, super::window3d::Kind::Max, x, None, None, &a)?;
        return if small_int { cx.add1("back", Cast::new(dt), &[y]) } else { Ok(y) };
    }
    let y = pool_op(cx, x, Window::read(cx), |w| {
        MaxPool {
            kernel_shape: w.kernel_shape,
            strides: w.strides,
            pads: w.pads,
            dilations: w.dilations,
            auto_pad,
            ceil_mode,
        }
        .into()
    })?;
    if small_int {
        return cx.add1("back", Cast::new(dt), &[y]);
    }
    Ok(y)
}

/// A 2-D ConvTranspose whose stride equals its kernel (no padding, dilation or groups;
/// the 2x2 stride-2 upsampling of U-Nets and DBNet heads): each input pixel gives its own
/// `kh x kw` patch of the output, so it is one matrix product, `[N*H*W, C] x [C,
/// M*kh*kw]` (the packed GEMM, the bias in its epilogue), whose rows are then laid out
/// as patches (`[N, H, W, M, kh, kw]` to `[N, M, H*kh, W*kw]`). The gather kernel that
/// takes the general case spends a division and a select per tap, and does 4 times the
/// work here (a tap of every output pixel reaches only one of the 4). `None` when the
/// node is not of that form.
fn conv_transpose_patches(cx: &mut NodeCx, op: &ConvTranspose, operands: &[Value]) -> Result<Option<Value>, String> {
    let (x, w) = (operands[0], operands[1]);
    let (xt, wt) = (cx.ty(x), cx.ty(w));
    let Some(wd) = wt.shape.as_fixed() else { return Ok(None) };
    let [c, m, kh, kw] = wd[..] else { return Ok(None) };
    let all = |v: &[i64], want: i64| v.iter().all(|&p| p == want);
    let kernel = [kh as i64, kw as i64];
    let plain = xt.dtype == DType::F32
        && xt.shape.rank() == 4
        && xt.shape.0[1].fixed() == Some(c)
        && op.group == 1
        && (op.kernel_shape.is_empty() || op.kernel_shape == kernel)
        && op.strides == kernel
        && all(&op.pads, 0)
        && all(&op.dilations, 1)
        && all(&op.output_padding, 0)
        && op.output_shape.is_empty()
        && matches!(op.auto_pad, AutoPad::NotSet | AutoPad::Valid);
    if !plain {
        return Ok(None);
    }
    let d: Vec<String> = xt.shape.0.iter().map(|d| format!("({})", d.expr())).collect();
    let (n, h, wi) = (&d[0], &d[2], &d[3]);
    let k = m * kh * kw;
    let pixels = cx.add1("pixels", Transpose { perm: vec![0, 2, 3, 1] }, &[x])?;
    let rows = cx.add1("rows", View { dims: format!("{n}*{h}*{wi};{c}") }, &[pixels])?;
    let wm = cx.add1("weights_matrix", View { dims: format!("{c};{k}") }, &[w])?;
    let mut mm = vec![rows, wm];
    // The bias, once per tap of each output channel (column `m * kh * kw + tap`).
    let bias = match operands.get(2) {
        Some(&b) => match cx.imp.known.get(&b).and_then(|t| t.to_f32()) {
            Some(v) if v.len() as u64 == m => {
                let rep: Vec<f32> = v.iter().flat_map(|&x| std::iter::repeat_n(x, (kh * kw) as usize)).collect();
                mm.push(cx.add_const(dlc_ir::TensorData::from_f32(&[k], &rep).ok_or("internal: bias")?));
                None
            }
            _ => Some(b),
        },
        None => None,
    };
    let y = cx.add1("patches", MatMul { act: Activation::None }, &mm)?;
    let y = cx.add1("patches_6d", View { dims: format!("{n};{h};{wi};{m};{kh};{kw}") }, &[y])?;
    let y = cx.add1("patches_placed", Transpose { perm: vec![0, 3, 1, 4, 2, 5] }, &[y])?;
    let dims = format!("{n};{m};{h}*{kh};{wi}*{kw}");
    let Some(b) = bias else { return cx.add1("", View { dims }, &[y]).map(Some) };
    let y = cx.add1("unbiased", View { dims }, &[y])?;
    let b = cx.add1("bias_channels", Reshape { shape: vec![m as i64, 1, 1], allowzero: false }, &[b])?;
    cx.add1("", Add {}, &[y, b]).map(Some)
}

/// A 1-D ConvTranspose as the 2-D one over a height of 1: `[N, C, L]` viewed as
/// `[N, C, 1, L]`, the weights `[C, M/g, k]` as `[C, M/g, 1, k]`, every attribute with a
/// leading height entry (kernel 1, stride 1, no padding).
fn conv_transpose_1d(cx: &mut NodeCx, op: ConvTranspose, mut operands: Vec<Value>) -> Result<Vec<Value>, String> {
    let lift = |v: &[i64], pad: i64| -> Vec<i64> {
        if v.is_empty() {
            Vec::new()
        } else {
            std::iter::once(pad).chain(v.iter().copied()).collect()
        }
    };
    let pads = if op.pads.len() == 2 { vec![0, op.pads[0], 0, op.pads[1]] } else { op.pads.clone() };
    let op2 = ConvTranspose {
        kernel_shape: lift(&op.kernel_shape, 1),
        strides: lift(&op.strides, 1),
        pads,
        dilations: lift(&op.dilations, 1),
        group: op.group,
        output_padding: lift(&op.output_padding, 0),
        output_shape: lift(&op.output_shape, 1),
        auto_pad: op.auto_pad,
    };
    for (i, what) in [(0, "input"), (1, "weights")] {
        let d: Vec<String> = cx.ty(operands[i]).shape.0.iter().map(|d| d.expr().to_string()).collect();
        let dims = format!("{};{};1;{}", d[0], d[1], d[2]);
        operands[i] = cx.add1(&format!("{what}_2d"), View { dims }, &[operands[i]])?;
    }
    let y = cx.add1("conv2d", op2, &operands)?;
    let d: Vec<String> = cx.ty(y).shape.0.iter().map(|d| d.expr().to_string()).collect();
    cx.add("", View { dims: format!("{};{};{}", d[0], d[1], d[3]) }, &[y])
}

/// 3-D ConvTranspose (`[N, Ci, D, H, W]`) from the 2-D one: each depth tap `kd` of the
/// weights is a 2-D transposed convolution of every input depth slice at once (a batch
/// of `N * D` planes); its slices land at output depths `id * sd + kd * dd` (zeros
/// interleaved for the stride, then padded to the full depth), the taps are summed, the
/// depth pads cropped (output padding added at the end) and the bias added once. Only
/// explicit pads (no `auto_pad`, no `output_shape`); known dims.
fn conv_transpose_3d(cx: &mut NodeCx, op: ConvTranspose, operands: Vec<Value>) -> Result<Vec<Value>, String> {
    if op.auto_pad != AutoPad::NotSet || !op.output_shape.is_empty() {
        return Err("3-D ConvTranspose with auto_pad or output_shape is not supported yet (give pads)".into());
    }
    let (x, w) = (operands[0], operands[1]);
    let dims =
        |cx: &NodeCx, v: Value| cx.ty(v).shape.as_fixed().ok_or_else(|| format!("needs known dims, got {}", cx.ty(v)));
    let (xd, wd) = (dims(cx, x)?, dims(cx, w)?);
    let [n, ci, d, h, wi] = xd[..] else { return Err("input must be [N, C, D, H, W]".into()) };
    let [wci, cog, kd, kh, kw] = wd[..] else { return Err("weights must be [C, C/group, KD, KH, KW]".into()) };
    if wci != ci {
        return Err(format!("the weights take {wci} channels, the input has {ci}"));
    }
    let at = |v: &[i64], i: usize, def: i64| v.get(i).copied().unwrap_or(def);
    let (sd, dd) = (at(&op.strides, 0, 1), at(&op.dilations, 0, 1));
    if kd > 1024 || [sd, dd, d as i64].iter().any(|&v| v > 1 << 24) {
        return Err(format!("a depth of {d}, {kd} depth taps, stride {sd} or dilation {dd} is too large"));
    }
    let (pb, pe) = (at(&op.pads, 0, 0), at(&op.pads, 3, 0));
    let opad = at(&op.output_padding, 0, 0);
    if sd <= 0 || dd <= 0 || pb < 0 || pe < 0 || opad < 0 {
        return Err(format!("invalid depth stride {sd}, dilation {dd}, pads {pb}/{pe} or output padding {opad}"));
    }
    let tail = |v: &[i64]| if v.is_empty() { vec![] } else { v[1..].to_vec() };
    let pads2 = if op.pads.is_empty() {
        vec![]
    } else {
        vec![at(&op.pads, 1, 0), at(&op.pads, 2, 0), at(&op.pads, 4, 0), at(&op.pads, 5, 0)]
    };
    let op2 = ConvTranspose {
        kernel_shape: vec![kh as i64, kw as i64],
        strides: tail(&op.strides),
        pads: pads2,
        dilations: tail(&op.dilations),
        group: op.group,
        output_padding: tail(&op.output_padding),
        output_shape: vec![],
        auto_pad: AutoPad::NotSet,
    };
    let (n, ci, d, h, wi, kd) = (n as i64, ci as i64, d as i64, h as i64, wi as i64, kd as i64);
    // [N * D, Ci, H, W]: every depth slice a plane.
    let xt = cx.add1("depth_major", Transpose { perm: vec![0, 2, 1, 3, 4] }, &[x])?;
    let planes = cx.add1("planes", Reshape { shape: vec![n * d, ci, h, wi], allowzero: false }, &[xt])?;
    let full = (d - 1) * sd + dd * (kd - 1) + 1;
    let reach = (d - 1) * sd + 1;
    let mut total: Option<Value> = None;
    for j in 0..kd {
        let wj = cx.add1(
            &format!("w{j}"),
            Slice { starts: vec![j], ends: vec![j + 1], axes: vec![2], steps: vec![] },
            &[w],
        )?;
        let wj = cx.add1(
            &format!("w{j}_2d"),
            Reshape { shape: vec![ci, cog as i64, kh as i64, kw as i64], allowzero: false },
            &[wj],
        )?;
        let y = cx.add1(&format!("tap{j}"), op2.clone(), &[planes, wj])?;
        let yd = dims(cx, y)?;
        let (co, oh, ow) = (yd[1] as i64, yd[2] as i64, yd[3] as i64);
        let mut y =
            cx.add1(&format!("tap{j}_depths"), Reshape { shape: vec![n, d, co, oh, ow], allowzero: false }, &[y])?;
        if sd > 1 {
            // Zeros between the slices: [N, D, sd, ...] flattened, cut after the last slice.
            let y1 =
                cx.add1(&format!("tap{j}_one"), Reshape { shape: vec![n, d, 1, co, oh, ow], allowzero: false }, &[y])?;
            let zeros = dlc_ir::TensorData::from_f32(&[1, 1, 1, 1, 1, 1], &[0.0]).ok_or("zero")?;
            let z = cx.add_const(zeros);
            let z = cx.add1(
                &format!("tap{j}_gaps"),
                Expand { shape: vec![n, d, sd - 1, co, oh, ow], dims: String::new() },
                &[z],
            )?;
            let y2 = cx.add1(&format!("tap{j}_strided"), Concat { axis: 2 }, &[y1, z])?;
            let y2 = cx.add1(
                &format!("tap{j}_flat"),
                Reshape { shape: vec![n, d * sd, co, oh, ow], allowzero: false },
                &[y2],
            )?;
            y = cx.add1(
                &format!("tap{j}_cut"),
                Slice { starts: vec![0], ends: vec![reach], axes: vec![1], steps: vec![] },
                &[y2],
            )?;
        }
        let before = j * dd;
        let after = full - reach - before + opad;
        let pads = vec![0, before, 0, 0, 0, 0, after, 0, 0, 0];
        let y = cx.add1(
            &format!("tap{j}_placed"),
            Pad { mode: PadMode::Constant, pads, value: 0.0, exprs: String::new() },
            &[y],
        )?;
        total = Some(match total {
            None => y,
            Some(t) => cx.add1(&format!("sum{j}"), Add {}, &[t, y])?,
        });
    }
    let total = total.ok_or("the weights have no depth")?;
    let od = full + opad - pb - pe;
    if od <= 0 {
        return Err(format!("the output depth {od} is not positive"));
    }
    let cut = cx.add1(
        "depth_cropped",
        Slice { starts: vec![pb], ends: vec![pb + od], axes: vec![1], steps: vec![] },
        &[total],
    )?;
    let mut y = cx.add1("channels_first", Transpose { perm: vec![0, 2, 1, 3, 4] }, &[cut])?;
    if let Some(&b) = operands.get(2) {
        let b = cx.add1("bias_5d", Reshape { shape: vec![1, -1, 1, 1, 1], allowzero: false }, &[b])?;
        y = cx.add1("biased", Add {}, &[y, b])?;
    }
    Ok(vec![y])
}

fn attrs3d(w: Window, auto_pad: AutoPad, ceil_mode: bool) -> super::window3d::Attrs {
    super::window3d::Attrs {
        kernel: w.kernel_shape,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        auto_pad,
        ceil_mode,
    }
}

fn avg_pool_of(w: Window, auto_pad: AutoPad, ceil_mode: bool, count_include_pad: bool) -> Op {
    AveragePool {
        kernel_shape: w.kernel_shape,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        auto_pad,
        ceil_mode,
        count_include_pad,
    }
    .into()
}

fn avgpool(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (auto_pad, ceil_mode) = (auto_pad(cx)?, cx.int("ceil_mode", 0) != 0);
    let count_include_pad = cx.int("count_include_pad", 0) != 0;
    let x = cx.input(0)?;
    if cx.ty(x).shape.rank() == 5 {
        let a = attrs3d(Window::read(cx), auto_pad, ceil_mode);
        let kind = super::window3d::Kind::Avg { count_include_pad };
        return Ok(vec![super::window3d::build(cx, kind, x, None, None, &a)?]);
    }
    let y = pool_op(cx, x, Window::read(cx), |w| avg_pool_of(w, auto_pad, ceil_mode, count_include_pad))?;
    Ok(vec![y])
}

/// BatchNormalization with `training_mode = 1` (opset 14+), as ONNX's reference: the
/// batch's mean and (population) variance over every axis but the channel normalise
/// `x`; the running statistics come out as `running * momentum + batch * (1 -
/// momentum)`.
fn batchnorm_training(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let (scale, bias, mean_in, var_in) = (cx.input(1)?, cx.input(2)?, cx.input(3)?, cx.input(4)?);
    let ty = cx.ty(x);
    let r = ty.shape.rank();
    if r < 2 {
        return Err(format!("needs an input of rank 2 or more, got {ty}"));
    }
    let c = ty.shape.0[1].fixed().ok_or("the channel dim must be known")?;
    let axes: Vec<i64> = std::iter::once(0).chain(2..r as i64).collect();
    let epsilon = cx.float("epsilon", 1e-5);
    let momentum = cx.float("momentum", 0.9);
    let mean = cx.add1("batch_mean", ReduceMean { axes: axes.clone(), keepdims: true }, &[x])?;
    let centred = cx.add1("centred", Sub {}, &[x, mean])?;
    let sq = cx.add1("squared", Mul {}, &[centred, centred])?;
    let var = cx.add1("batch_var", ReduceMean { axes, keepdims: true }, &[sq])?;
    let flat = |cx: &mut NodeCx, v: Value, what: &str| -> Result<Value, String> {
        cx.add1(what, Reshape { shape: vec![c as i64], allowzero: false }, &[v])
    };
    let (mean_c, var_c) = (flat(cx, mean, "mean_c")?, flat(cx, var, "var_c")?);
    let y = cx.add1("", BatchNormalization { epsilon }, &[x, scale, bias, mean_c, var_c])?;
    let dt = ty.dtype;
    let scalar = |cx: &mut NodeCx, v: f32, what: &str| -> Result<Value, String> {
        let t = cx.add_const(dlc_ir::TensorData::from_f32(&[], &[v]).ok_or("scalar")?);
        if dt == dlc_ir::DType::F32 {
            Ok(t)
        } else {
            cx.add1(what, Cast::new(dt), &[t])
        }
    };
    let (m, one_m) = (scalar(cx, momentum, "momentum")?, scalar(cx, 1.0 - momentum, "one_minus_momentum")?);
    let blend = |cx: &mut NodeCx, running: Value, batch: Value, what: &str| -> Result<Value, String> {
        let a = cx.add1(&format!("{what}_kept"), Mul {}, &[running, m])?;
        let b = cx.add1(&format!("{what}_new"), Mul {}, &[batch, one_m])?;
        cx.add1(what, Add {}, &[a, b])
    };
    let out_mean = blend(cx, mean_in, mean_c, "running_mean")?;
    let out_var = blend(cx, var_in, var_c, "running_var")?;
    Ok(vec![y, out_mean, out_var])
}

fn batchnorm(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if cx.opset >= 14 && cx.int("training_mode", 0) == 1 {
        return batchnorm_training(cx);
    }
    cx.require_int("training_mode", 0)?;
    if cx.node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err("training outputs (running mean/var) are not supported; export the model in eval mode".into());
    }
    if cx.opset < 7 && cx.int("spatial", 1) == 0 {
        return Err("spatial=0 (opset < 7) is not supported".into());
    }
    let operands: Vec<Value> = (0..5).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
    let epsilon = cx.float("epsilon", 1e-5);
    cx.add("", BatchNormalization { epsilon }, &operands)
}

fn softmax(cx: &mut NodeCx, mode: SoftmaxMode) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    let rank = ty.shape.rank();
    if cx.opset >= 13 {
        let axis = cx.int("axis", -1);
        return cx.add("", Softmax { axis, mode }, &[x]);
    }
    // Opsets 1-12: the input is coerced to 2-D at `axis` and normalised over the second dim.
    let axis = cx.int("axis", 1);
    let a = normalize_axis(axis, rank).ok_or_else(|| format!("axis {axis} out of range for {}", ty.shape))?;
    if a + 1 == rank {
        return cx.add("", Softmax { axis: -1, mode }, &[x]);
    }
    let dims = ty.shape.as_fixed().ok_or("opset < 13 Softmax on a non-last axis needs known dims")?;
    let outer: u64 = dims[..a].iter().product();
    let inner: u64 = dims[a..].iter().product();
    let flat = cx.add1("coerce2d", Reshape { shape: vec![outer as i64, inner as i64], allowzero: false }, &[x])?;
    let sm = cx.add1("softmax", Softmax { axis: 1, mode }, &[flat])?;
    let back = dims.iter().map(|&d| d as i64).collect();
    cx.add("", Reshape { shape: back, allowzero: true }, &[sm])
}

fn layernorm(cx: &mut NodeCx, rms: bool) -> Result<Vec<Value>, String> {
    let stats = cx.node.output.iter().skip(1).any(|o| !o.is_empty());
    if stats && (rms || cx.int("stash_type", 1) != 1) {
        return Err("the Mean and InvStdDev outputs are supported only with stash_type=1".into());
    }
    let mut operands = vec![cx.input(0)?, cx.input(1)?];
    if let Some(b) = cx.opt_input(2)? {
        operands.push(b);
    }
    let op =
        LayerNormalization { axis: cx.int("axis", -1), epsilon: cx.float("epsilon", 1e-5), rms, stats, skip: false };
    cx.add("", op, &operands)
}

/// Inference-mode Dropout is the identity; its mask, when asked for, is all true.
fn dropout(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let want_mask = cx.node.output.get(1).is_some_and(|o| !o.is_empty());
    // training_mode: absent or constant false is inference (the identity).
    let training = match cx.opt_input(2)? {
        None => None,
        Some(t) => match cx.const_input(2)? {
            Some(c) if c.to_i64().is_some_and(|v| v.iter().all(|&b| b == 0)) => None,
            Some(_) => Some(None),
            None => Some(Some(t)),
        },
    };
    let Some(run_time) = training else {
        let y = cx.add1("", Identity {}, &[x])?;
        if want_mask {
            let t = cx.ty(x);
            let mask = super::random::all_true(cx, x, &t)?;
            return Ok(vec![y, mask]);
        }
        return Ok(vec![y]);
    };
    super::random::dropout_training(cx, x, run_time, want_mask)
}

/// Instance and group normalisation: normalise each (n, group) slice with a layer norm
/// of unit scale, then apply the per-channel scale and bias.
fn group_norm(cx: &mut NodeCx, groups: Option<i64>) -> Result<Vec<Value>, String> {
    let (x, scale, bias) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let ty = cx.ty(x);
    let dims = &ty.shape.0;
    if dims.len() < 3 {
        return Err(format!("needs rank >= 3, got {ty}"));
    }
    let c = dims[1].fixed().ok_or_else(|| format!("the channel dim must be known, got {ty}"))? as i64;
    if ty.dtype != dlc_ir::DType::F32 {
        return Err(format!("dtype {} is not supported yet (f32 only)", ty.dtype));
    }
    let g = groups.unwrap_or(c);
    if g <= 0 || c % g != 0 {
        return Err(format!("channels {c} do not divide into {g} groups"));
    }
    let epsilon = cx.float("epsilon", 1e-5);
    let rest = dlc_ir::Dim::product(&dims[2..]).expr().scale(c / g);
    // [N, G, rest]: a Reshape of known dims, a view of run-time ones.
    let (flat, d) = match ty.shape.as_fixed() {
        Some(d) => {
            let r = rest.as_const().expect("known dims");
            (cx.add1("group", Reshape { shape: vec![d[0] as i64, g, r], allowzero: true }, &[x])?, d)
        }
        None => {
            let v = dlc_ir::ops::View { dims: format!("{};{g};{rest}", dims[0]) };
            (cx.add1("group", v, &[x])?, vec![1; dims.len()])
        }
    };
    let ones = cx.add_const(dlc_ir::TensorData::from_f32(&[1], &[1.0]).expect("scalar"));
    let normed = cx.add1(
        "normalize",
        LayerNormalization { axis: 2, epsilon, rms: false, stats: false, skip: false },
        &[flat, ones],
    )?;
    let back = if ty.shape.is_fixed() {
        cx.add1("ungroup", Reshape { shape: d.iter().map(|&v| v as i64).collect(), allowzero: true }, &[normed])?
    } else {
        let text = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(";");
        cx.add1("ungroup", dlc_ir::ops::View { dims: text }, &[normed])?
    };
    // Scale and bias are per channel ([C]) for InstanceNormalization and for opset-21
    // GroupNormalization; opset-18 GroupNormalization gives them per group ([G]).
    let per = cx.ty(scale).shape.numel().unwrap_or(0) as i64;
    let spatial = vec![1i64; dims.len() - 2];
    let shape_for = |k: i64| -> Vec<i64> { std::iter::once(k).chain(spatial.iter().copied()).collect() };
    let (scale, bias) = if per == c {
        let s = cx.add1("scale_shape", Reshape { shape: shape_for(c), allowzero: true }, &[scale])?;
        let b = cx.add1("bias_shape", Reshape { shape: shape_for(c), allowzero: true }, &[bias])?;
        (s, b)
    } else if per == g {
        return Err("per-group scale and bias (GroupNormalization before opset 21) are not supported".into());
    } else {
        return Err(format!("scale has {per} elements, expected {c}"));
    };
    let y = cx.add1("apply_scale", Mul {}, &[back, scale])?;
    cx.add("", Add {}, &[y, bias])
}

/// LpPool as `(k * AveragePool(|x|^p))^(1/p)` with padding counted (the divisor is then
/// the kernel size k for every window).
fn lp_pool(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if cx.int("ceil_mode", 0) != 0 {
        return Err("ceil_mode is not supported for LpPool yet".into());
    }
    let p = cx.int("p", 2);
    if p <= 0 {
        return Err(format!("p must be positive, got {p}"));
    }
    let x = cx.input(0)?;
    let dt = cx.ty(x).dtype;
    if dt != dlc_ir::DType::F32 {
        return Err(format!("dtype {dt} is not supported yet (f32 only)"));
    }
    let window = Window::read(cx);
    let k: i64 = window.kernel_shape.iter().product();
    let a = cx.add1("abs", Abs {}, &[x])?;
    let pc = cx.add_const(dlc_ir::TensorData::from_f32(&[], &[p as f32]).expect("scalar"));
    let ap = if p == 2 { cx.add1("pow", Mul {}, &[a, a])? } else { cx.add1("pow", Pow {}, &[a, pc])? };
    let auto_pad = auto_pad(cx)?;
    let avg = if cx.ty(ap).shape.rank() == 5 {
        // 3-D: the window3d average over depth slices (padding counted, as here).
        let a = attrs3d(window, auto_pad, false);
        super::window3d::build(cx, super::window3d::Kind::Avg { count_include_pad: true }, ap, None, None, &a)?
    } else {
        pool_op(cx, ap, window, |w| avg_pool_of(w, auto_pad, false, true))?
    };
    let kc = cx.add_const(dlc_ir::TensorData::from_f32(&[], &[k as f32]).expect("scalar"));
    let sum = cx.add1("sum", Mul {}, &[avg, kc])?;
    if p == 2 {
        return cx.add("", Sqrt {}, &[sum]);
    }
    let inv = cx.add_const(dlc_ir::TensorData::from_f32(&[], &[1.0 / p as f32]).expect("scalar"));
    cx.add("", Pow {}, &[sum, inv])
}

/// LRN: `x / (bias + alpha / size * sum of x^2 over a window of channels)^beta`. The
/// window sum is an average pool (padding counted, so the divisor is always `size`) over
/// an `[N, 1, C, H*W]` view, times `size`.
fn lrn(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    let d = ty
        .shape
        .as_fixed()
        .filter(|d| d.len() >= 3)
        .ok_or_else(|| format!("needs known dims of rank >= 3, got {ty}"))?;
    if ty.dtype != dlc_ir::DType::F32 {
        return Err(format!("dtype {} is not supported yet (f32 only)", ty.dtype));
    }
    let size = cx.int("size", 0);
    if size <= 0 {
        return Err("size must be positive".into());
    }
    let (alpha, beta, bias) = (cx.float("alpha", 1e-4), cx.float("beta", 0.75), cx.float("bias", 1.0));
    let rest: i64 = d[2..].iter().map(|&v| v as i64).product();
    let sq = cx.add1("square", Mul {}, &[x, x])?;
    let view = cx.add1(
        "channels_as_rows",
        Reshape { shape: vec![d[0] as i64, 1, d[1] as i64, rest], allowzero: true },
        &[sq],
    )?;
    let window = Window {
        kernel_shape: vec![size, 1],
        strides: vec![],
        pads: vec![(size - 1) / 2, 0, size - 1 - (size - 1) / 2, 0],
        dilations: vec![],
    };
    let avg = cx.add1("window_mean", avg_pool_of(window, AutoPad::NotSet, false, true), &[view])?;
    let back = cx.add1("unview", Reshape { shape: d.iter().map(|&v| v as i64).collect(), allowzero: true }, &[avg])?;
    let scalar = |cx: &mut NodeCx, v: f32| cx.add_const(dlc_ir::TensorData::from_f32(&[], &[v]).expect("scalar"));
    // mean * size * alpha / size == mean * alpha
    let a = scalar(cx, alpha);
    let scaled = cx.add1("scaled", Mul {}, &[back, a])?;
    let b = scalar(cx, bias);
    let base = cx.add1("base", Add {}, &[scaled, b])?;
    let e = scalar(cx, beta);
    let denom = cx.add1("denominator", Pow {}, &[base, e])?;
    cx.add("", Div {}, &[x, denom])
}

/// RoiAlign (opsets 10-22) as dlc's `roi_align` (f32; other float types are converted).
/// The batch indices pass through a Gather of `0..N` first, a negative one replaced by
/// `N`: one outside `[0, N)` fails the run as any Gather index does.
fn roi_align(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, rois, idx) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let dt = cx.ty(x).dtype;
    if !dt.is_float() || cx.ty(rois).dtype != dt {
        return Err(format!("X and rois must be of one float type, got {} and {}", dt, cx.ty(rois).dtype));
    }
    let mode = cx.string("mode", "avg")?;
    let max = match mode.as_str() {
        "avg" => false,
        "max" => true,
        m => return Err(format!("mode '{m}' is not avg or max")),
    };
    // Opset 16 added the mode; before it, coordinates were not shifted.
    let ctm =
        cx.string("coordinate_transformation_mode", if cx.opset >= 16 { "half_pixel" } else { "output_half_pixel" })?;
    let half_pixel = match ctm.as_str() {
        "half_pixel" => true,
        "output_half_pixel" => false,
        m => return Err(format!("coordinate_transformation_mode '{m}' is not half_pixel or output_half_pixel")),
    };
    let n = cx.ty(x).shape.0.first().cloned().ok_or("X must be [N,C,H,W]")?;
    let all =
        cx.add1("images", dlc_ir::ops::Iota { len: n.to_string(), start: 0, delta: 1, dtype: DType::I64 }, &[])?;
    let idx = if cx.ty(idx).dtype == DType::I64 { idx } else { cx.add1("indices_i64", Cast::new(DType::I64), &[idx])? };
    // A negative index is out of range too (ONNX: within [0, N)): it reads position N.
    let zero = cx.i64_const(&[], &[0])?;
    let neg = cx.add1("negative_indices", Less {}, &[idx, zero])?;
    let past = cx.add1(
        "images_count",
        dlc_ir::ops::Iota { len: format!("{n} + 1"), start: 0, delta: 1, dtype: DType::I64 },
        &[],
    )?;
    let past = cx.add1("past_last", ReduceMax { axes: vec![0], keepdims: false }, &[past])?;
    let idx = cx.add1("indices_or_past", Where {}, &[neg, past, idx])?;
    let idx = cx.add1("checked_indices", Gather { axis: 0 }, &[all, idx])?;
    let to32 = |cx: &mut NodeCx, v: Value, w: &str| {
        if dt == DType::F32 {
            Ok(v)
        } else {
            cx.add1(&format!("{w}_f32"), Cast::new(DType::F32), &[v])
        }
    };
    let (x32, r32) = (to32(cx, x, "x")?, to32(cx, rois, "rois")?);
    let op = dlc_ir::ops::RoiAlign {
        max,
        half_pixel,
        output_height: cx.int("output_height", 1),
        output_width: cx.int("output_width", 1),
        sampling_ratio: cx.int("sampling_ratio", 0),
        spatial_scale: cx.float("spatial_scale", 1.0) as f64,
    };
    let y = cx.add1("align", op, &[x32, r32, idx])?;
    if dt == DType::F32 {
        return Ok(vec![y]);
    }
    cx.add("", Cast::new(dt), &[y])
}

/// Col2Im (opset 18), 2-D, with constant `image_shape` and `block_shape` (as models give
/// them): the blocks' values summed back into the image is a transposed convolution of
/// the `[N, C*kh*kw, Lh, Lw]` blocks with one group per channel and a one-hot kernel (tap
/// `t` of a group reads input channel `t`), the same strides, pads and dilations, and an
/// output padding for the rows or columns no block reaches.
/// Bounds on Col2Im's sizes and attributes that keep its index arithmetic exact.
const COL2IM_MAX: i64 = 1 << 24;

/// Dilations, pads and strides.
type Geometry = (Vec<i64>, Vec<i64>, Vec<i64>);

/// Col2Im's `dilations`, `pads` and `strides` for `r` spatial dims (defaults 1, 0, 1),
/// checked: as many as the dims, positive (pads not negative), at most [`COL2IM_MAX`].
fn col2im_geometry(cx: &NodeCx, r: usize) -> Result<Geometry, String> {
    let attr = |name: &str, n: usize, default: i64| {
        let v = cx.ints(name);
        if v.is_empty() {
            vec![default; n]
        } else {
            v
        }
    };
    let (d, p, s) = (attr("dilations", r, 1), attr("pads", 2 * r, 0), attr("strides", r, 1));
    if d.len() != r
        || s.len() != r
        || p.len() != 2 * r
        || s.iter().chain(&d).any(|&v| v <= 0 || v > COL2IM_MAX)
        || p.iter().any(|&v| !(0..=COL2IM_MAX).contains(&v))
    {
        return Err(format!("invalid dilations {d:?}, pads {p:?} or strides {s:?}"));
    }
    Ok((d, p, s))
}

/// Col2Im whose `image_shape` or `block_shape` is known only at run time: both become
/// computed dims (checked first: positive sizes, the channels a multiple of the block's
/// size, the columns the grid's count; else the run fails naming the node), and the
/// [`Col2Im`](dlc_ir::ops::Col2Im) kernel takes them as symbols.
fn col2im_run_time(cx: &mut NodeCx, x: Value) -> Result<Vec<Value>, String> {
    let t = cx.ty(x);
    let (rows, cols) = match t.shape.0.as_slice() {
        [_, r, c] => (
            r.fixed().ok_or("the input's channel count must be known")? as i64,
            c.fixed().ok_or("the input's column count must be known")? as i64,
        ),
        _ => return Err(format!("the input must be [N, C*prod(block), L], got {t}")),
    };
    let ints = |cx: &mut NodeCx, i: usize, what: &str| -> Result<(Value, usize), String> {
        let v = cx.input(i)?;
        let vt = cx.ty(v);
        let r = match vt.shape.0.as_slice() {
            [dlc_ir::Dim::Fixed(r)] if vt.dtype.is_signed_int() && *r >= 1 => *r as usize,
            _ => return Err(format!("{what} must be a 1-D integer tensor of known length, got {vt}")),
        };
        let v = if vt.dtype == DType::I64 { v } else { cx.add1(&format!("{what}_i64"), Cast::new(DType::I64), &[v])? };
        Ok((v, r))
    };
    let (image, r) = ints(cx, 1, "image_shape")?;
    let (block, rb) = ints(cx, 2, "block_shape")?;
    if rb != r || r > 3 {
        return Err(format!("image_shape ({r}) and block_shape ({rb}) must give as many dims, at most 3"));
    }
    let (d, p, s) = col2im_geometry(cx, r)?;
    // Checks, each a 0/1 per entry: sizes in [1, 2^24], rows a multiple of the block's
    // size, the grid's count the columns.
    let c = |cx: &mut NodeCx, v: Vec<i64>| cx.i64_const(&[v.len() as u64], &v);
    let (one, big) = (c(cx, vec![1])?, c(cx, vec![COL2IM_MAX])?);
    let mut flags = Vec::new();
    for (v, what) in [(image, "image"), (block, "block")] {
        let lo = cx.add1(&format!("{what}_small"), Less {}, &[v, one])?;
        let hi = cx.add1(&format!("{what}_big"), Greater {}, &[v, big])?;
        let bad = cx.add1(&format!("{what}_bad"), Or {}, &[lo, hi])?;
        flags.push(cx.add1(&format!("{what}_ok"), Not {}, &[bad])?);
    }
    let kprod = cx.add1("block_size", ReduceProd { axes: vec![0], keepdims: true }, &[block])?;
    let rows_v = c(cx, vec![rows])?;
    let rem = cx.add1("rows_rem", Mod { fmod: false }, &[rows_v, kprod])?;
    let zero = c(cx, vec![0])?;
    flags.push(cx.add1("rows_fit", Equal {}, &[rem, zero])?);
    // Grid: (image + pads - dilation * (block - 1) - 1) / stride + 1, the span >= 0.
    let pads: Vec<i64> = (0..r).map(|a| p[a] + p[a + r] - 1).collect();
    let (pv, dv, sv) = (c(cx, pads)?, c(cx, d.clone())?, c(cx, s.clone())?);
    let bm1 = cx.add1("block_m1", Sub {}, &[block, one])?;
    let reach = cx.add1("block_reach", Mul {}, &[bm1, dv])?;
    let span = cx.add1("span_pad", Add {}, &[image, pv])?;
    let span = cx.add1("span", Sub {}, &[span, reach])?;
    let neg = cx.add1("span_negative", Less {}, &[span, zero])?;
    flags.push(cx.add1("span_ok", Not {}, &[neg])?);
    let cells = cx.add1("cells_m1", Div {}, &[span, sv])?;
    let cells = cx.add1("cells", Add {}, &[cells, one])?;
    let count = cx.add1("cell_count", ReduceProd { axes: vec![0], keepdims: true }, &[cells])?;
    let cols_v = c(cx, vec![cols])?;
    flags.push(cx.add1("cols_fit", Equal {}, &[count, cols_v])?);
    let flags: Vec<Value> = flags
        .into_iter()
        .enumerate()
        .map(|(i, f)| cx.add1(&format!("flag{i}"), Cast::new(DType::I64), &[f]))
        .collect::<Result<_, _>>()?;
    let all = cx.add1("flags", Concat { axis: 0 }, &flags)?;
    let ok = cx.add1("all_ok", ReduceMin { axes: vec![0], keepdims: true }, &[all])?;
    let ok = cx.add1("ok", Equal {}, &[ok, one])?;
    let vals = cx.add1("extents", Concat { axis: 0 }, &[image, block])?;
    let bad = c(cx, vec![-1; 2 * r])?;
    let checked = cx.add1("extents_checked", Where {}, &[ok, vals, bad])?;
    let (x, e) = super::bind::computed_dims(cx, x, checked, "col2im_shape")?;
    let join = |v: &[dlc_ir::Expr]| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(";");
    let op = dlc_ir::ops::Col2Im { image: join(&e[..r]), block: join(&e[r..]), dilations: d, pads: p, strides: s };
    cx.add("", op, &[x])
}

fn col2im(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let known = cx.const_input(1)?.is_some() && cx.const_input(2)?.is_some();
    let (image, block) =
        if known { (cx.const_ints(1, "image_shape")?, cx.const_ints(2, "block_shape")?) } else { (None, None) };
    let (image, block) = match (image, block) {
        (Some(i), Some(b)) if i.len() == 2 && b.len() == 2 => (i, b),
        // Shapes given at run time, or other than 2-D: the Col2Im kernel (its extents
        // constants when the shapes are).
        _ => return col2im_run_time(cx, x),
    };
    let (d, p, s) = col2im_geometry(cx, 2)?;
    if image.iter().chain(&block).any(|&v| v > COL2IM_MAX) {
        return Err(format!("image_shape {image:?} or block_shape {block:?} is too large"));
    }
    let t = cx.ty(x);
    let dims = t.shape.as_fixed().ok_or_else(|| format!("the input must have known dims, got {t}"))?;
    let [n, ck, l] = dims[..] else { return Err(format!("the input must be [N, C*kh*kw, L], got {t}")) };
    let k = (block[0] * block[1]) as u64;
    if block.iter().chain(&image).any(|&v| v <= 0) || ck % k != 0 {
        return Err(format!("{ck} channels are not a multiple of the block's {k} values"));
    }
    let c = ck / k;
    if ck.saturating_mul(k) > 1 << 26 {
        return Err(format!("a one-hot kernel of {ck} x {k} values is too large"));
    }
    let mut blocks = [0i64; 2];
    let mut extra = [0i64; 2];
    for a in 0..2 {
        let span = image[a] + p[a] + p[a + 2] - d[a] * (block[a] - 1) - 1;
        if span < 0 {
            return Err(format!("a block of {} does not fit in {} (with pads)", block[a], image[a]));
        }
        blocks[a] = span / s[a] + 1;
        extra[a] = span % s[a];
    }
    if (blocks[0] * blocks[1]) as u64 != l {
        return Err(format!("{l} blocks given, the image and block shapes make {} x {}", blocks[0], blocks[1]));
    }
    let grid =
        cx.add1("blocks", Reshape { shape: vec![n as i64, ck as i64, blocks[0], blocks[1]], allowzero: false }, &[x])?;
    let dt = t.dtype;
    let mut w = vec![0f32; (ck * k) as usize];
    for ci in 0..ck as usize {
        let tap = ci % k as usize;
        w[ci * k as usize + tap] = 1.0;
    }
    let w = dlc_ir::TensorData::from_f32(&[ck, 1, block[0] as u64, block[1] as u64], &w).ok_or("internal: kernel")?;
    let w = cx.add_const(w);
    let w = if dt == DType::F32 { w } else { cx.add1("kernel", Cast::new(dt), &[w])? };
    let op = ConvTranspose {
        kernel_shape: block.clone(),
        strides: s,
        pads: p,
        dilations: d,
        group: c as i64,
        output_padding: extra.to_vec(),
        output_shape: vec![],
        auto_pad: AutoPad::NotSet,
    };
    cx.add("", op, &[grid, w])
}

/// DeformConv (opset 19), 2-D, as ONNX's reference defines it: for each offset group and
/// kernel tap, the input channels of the group sampled (bilinear, zeros outside,
/// `align_corners`) at the tap's position plus its learned offset, times the mask; the
/// samples stacked to `[N, C * kh * kw, OH, OW]` and multiplied by the weights as a
/// grouped 1x1 convolution (plus the bias). One GridSample per group and tap.
fn deform_conv(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, w, off) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (bias, mask) = (cx.opt_input(3)?, cx.opt_input(4)?);
    let (xt, wt, ot) = (cx.ty(x), cx.ty(w), cx.ty(off));
    let dims = |t: &dlc_ir::TensorType| t.shape.as_fixed().ok_or_else(|| format!("needs known dims, got {t}"));
    let (xd, wd, od) = (dims(&xt)?, dims(&wt)?, dims(&ot)?);
    if xd.len() != 4 || wd.len() != 4 || od.len() != 4 {
        return Err(format!("only 2-D DeformConv is supported (X {xt}, W {wt}, offset {ot})"));
    }
    if xt.dtype != DType::F32 || wt.dtype != DType::F32 || ot.dtype != DType::F32 {
        return Err(format!("f32 operands are supported, got X {xt}, W {wt}, offset {ot}"));
    }
    let (n, ic, ih, iw) = (xd[0] as i64, xd[1] as i64, xd[2] as i64, xd[3] as i64);
    let (oc, icpg, kh, kw) = (wd[0] as i64, wd[1] as i64, wd[2] as i64, wd[3] as i64);
    let (oh, ow) = (od[2] as i64, od[3] as i64);
    let group = cx.int("group", 1);
    let og = cx.int("offset_group", 1);
    let ks = cx.ints("kernel_shape");
    if !ks.is_empty() && ks != [kh, kw] {
        return Err(format!("kernel_shape {ks:?} differs from the weights' {kh}x{kw}"));
    }
    let attr = |name: &str, n: usize, d: i64| {
        let v = cx.ints(name);
        if v.is_empty() {
            vec![d; n]
        } else {
            v
        }
    };
    let (dil, pads, st) = (attr("dilations", 2, 1), attr("pads", 4, 0), attr("strides", 2, 1));
    if group <= 0 || og <= 0 || ic != icpg * group || oc % group != 0 || ic % og != 0 {
        return Err(format!("channels: X has {ic}, W is {wt}, group {group}, offset_group {og}"));
    }
    let k = kh * kw;
    // One GridSample per group and tap: a bound on the graph it builds; attributes
    // bounded so the position arithmetic is exact.
    if og.saturating_mul(k) > 4096 {
        return Err(format!("{og} offset groups of {kh}x{kw} taps are too many (at most 4096)"));
    }
    if dil.iter().chain(&pads).chain(&st).any(|&v| !(0..=1 << 24).contains(&v)) {
        return Err(format!("dilations {dil:?}, pads {pads:?} or strides {st:?} out of range"));
    }
    if od[1] as i64 != og * k * 2 || od[0] as i64 != n {
        return Err(format!("offset {ot} must be [{n}, {}, OH, OW]", og * k * 2));
    }
    if ih < 2 || iw < 2 {
        return Err(format!("an image of {ih}x{iw} is not supported (the sampling grid divides by H - 1 and W - 1)"));
    }
    let expect = |i: i64, p0: i64, p1: i64, a: usize| {
        (i + p0 + p1 - ((if a == 0 { kh } else { kw }) - 1) * dil[a] - 1) / st[a] + 1
    };
    if oh != expect(ih, pads[0], pads[2], 0) || ow != expect(iw, pads[1], pads[3], 1) {
        return Err(format!(
            "the offsets' {oh}x{ow} do not match the output size the pads, strides and dilations give"
        ));
    }
    if let Some(m) = mask {
        let md = dims(&cx.ty(m))?;
        if md != [n as u64, (og * k) as u64, oh as u64, ow as u64] {
            return Err(format!("mask {} must be [{n}, {}, {oh}, {ow}]", cx.ty(m), og * k));
        }
    }
    let f32c = |cx: &mut NodeCx, dims: &[u64], v: Vec<f32>| -> Result<Value, String> {
        Ok(cx.add_const(dlc_ir::TensorData::from_f32(dims, &v).ok_or("internal: a constant")?))
    };
    let channel = |cx: &mut NodeCx, v: Value, c0: i64, c1: i64, what: &str| {
        cx.add1(what, Slice { starts: vec![c0], ends: vec![c1], axes: vec![1], steps: vec![] }, &[v])
    };
    let icpog = ic / og;
    let mut groups = Vec::new();
    for g in 0..og {
        let xg = channel(cx, x, g * icpog, (g + 1) * icpog, &format!("x_g{g}"))?;
        let mut taps = Vec::new();
        for a in 0..kh {
            for b in 0..kw {
                let t = (g * kh + a) * kw + b;
                let tag = format!("g{g}_t{a}_{b}");
                // Sampling positions in pixels, then in GridSample's [-1, 1] (align_corners).
                let dy = channel(cx, off, 2 * t, 2 * t + 1, &format!("{tag}_dy"))?;
                let dx = channel(cx, off, 2 * t + 1, 2 * t + 2, &format!("{tag}_dx"))?;
                let by: Vec<f32> = (0..oh).map(|i| (-pads[0] + st[0] * i + a * dil[0]) as f32).collect();
                let bx: Vec<f32> = (0..ow).map(|j| (-pads[1] + st[1] * j + b * dil[1]) as f32).collect();
                let by = f32c(cx, &[1, 1, oh as u64, 1], by)?;
                let bx = f32c(cx, &[1, 1, 1, ow as u64], bx)?;
                let y = cx.add1(&format!("{tag}_y"), Add {}, &[dy, by])?;
                let xx = cx.add1(&format!("{tag}_x"), Add {}, &[dx, bx])?;
                let sy = f32c(cx, &[], vec![2.0 / (ih - 1) as f32])?;
                let sx = f32c(cx, &[], vec![2.0 / (iw - 1) as f32])?;
                let one = f32c(cx, &[], vec![1.0])?;
                let gy = cx.add1(&format!("{tag}_gy0"), Mul {}, &[y, sy])?;
                let gy = cx.add1(&format!("{tag}_gy"), Sub {}, &[gy, one])?;
                let gx = cx.add1(&format!("{tag}_gx0"), Mul {}, &[xx, sx])?;
                let gx = cx.add1(&format!("{tag}_gx"), Sub {}, &[gx, one])?;
                let grid = cx.add1(&format!("{tag}_grid0"), Concat { axis: 1 }, &[gx, gy])?;
                let grid = cx.add1(&format!("{tag}_grid"), Transpose { perm: vec![0, 2, 3, 1] }, &[grid])?;
                let op = GridSample { mode: SampleMode::Linear, padding: SamplePadding::Zeros, align_corners: true };
                let mut s = cx.add1(&format!("{tag}_sample"), op, &[xg, grid])?;
                if let Some(m) = mask {
                    let mt = channel(cx, m, t, t + 1, &format!("{tag}_mask"))?;
                    s = cx.add1(&format!("{tag}_masked"), Mul {}, &[s, mt])?;
                }
                let shape = vec![n, icpog, 1, oh, ow];
                taps.push(cx.add1(&format!("{tag}_col"), Reshape { shape, allowzero: false }, &[s])?);
            }
        }
        groups.push(cx.add1(&format!("cols_g{g}"), Concat { axis: 2 }, &taps)?);
    }
    let cols = if groups.len() == 1 { groups[0] } else { cx.add1("cols", Concat { axis: 1 }, &groups)? };
    let cols = cx.add1("columns", Reshape { shape: vec![n, ic * k, oh, ow], allowzero: false }, &[cols])?;
    let w1 = cx.add1("weights", Reshape { shape: vec![oc, icpg * k, 1, 1], allowzero: false }, &[w])?;
    let conv = Conv {
        kernel_shape: vec![1, 1],
        strides: vec![1, 1],
        pads: vec![0, 0, 0, 0],
        dilations: vec![1, 1],
        group,
        auto_pad: AutoPad::NotSet,
        act: Activation::None,
    };
    let mut operands = vec![cols, w1];
    if let Some(b) = bias {
        operands.push(b);
    }
    cx.add("", conv, &operands)
}
