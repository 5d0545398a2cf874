//! Resize (opsets 10-19) and Upsample (7-9): one 1-D resize per resized axis, in the
//! order the ONNX reference applies them (see `dlc_ir::ops::ResizeTaps`). With known
//! dims the taps are constants computed here (`dlc_interp::resize::taps`); with
//! run-time dims a `resize_taps` node computes them while the model runs. Opset 10's
//! Resize and Upsample use ONNX Runtime's legacy rules: asymmetric coordinates, nearest
//! rounding down when upsampling and up when downsampling.
use super::NodeCx;
use dlc_ir::ops::{scaled_dim, Cast, NearestMode, Resize, ResizeCoord, ResizeMode, ResizeTaps};
use dlc_ir::{DType, Dim, Expr, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, super::BuildFn>) {
    reg.insert("Resize", resize);
    reg.insert("Upsample", resize);
}

fn mode(s: &str) -> Result<ResizeMode, String> {
    Ok(match s {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        "cubic" => ResizeMode::Cubic,
        _ => return Err(format!("mode '{s}' is not one of nearest, linear, cubic")),
    })
}

fn coord(s: &str) -> Result<ResizeCoord, String> {
    Ok(match s {
        "half_pixel" => ResizeCoord::HalfPixel,
        "half_pixel_symmetric" => ResizeCoord::HalfPixelSymmetric,
        "pytorch_half_pixel" => ResizeCoord::PytorchHalfPixel,
        "align_corners" => ResizeCoord::AlignCorners,
        "asymmetric" => ResizeCoord::Asymmetric,
        "tf_half_pixel_for_nn" => ResizeCoord::TfHalfPixelForNn,
        "tf_crop_and_resize" => ResizeCoord::TfCropAndResize,
        _ => return Err(format!("coordinate_transformation_mode '{s}' is not supported")),
    })
}

fn nearest(s: &str) -> Result<NearestMode, String> {
    Ok(match s {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        _ => {
            return Err(format!("nearest_mode '{s}' is not one of round_prefer_floor, round_prefer_ceil, floor, ceil"))
        }
    })
}

/// Floats a Resize takes (roi, scales): constants, or a tensor known only at run time.
enum Floats {
    Known(Vec<f32>),
    Run(Value),
}

/// Operand `i` as floats: `None` when absent or empty.
fn floats(cx: &mut NodeCx, i: usize, what: &str) -> Result<Option<Floats>, String> {
    let Some(v) = cx.opt_input(i)? else { return Ok(None) };
    if cx.ty(v).shape.numel() == Some(0) {
        return Ok(None);
    }
    let Some(t) = cx.const_input(i)? else {
        let ty = cx.ty(v);
        if !ty.dtype.is_float() || ty.shape.rank() != 1 || !ty.shape.is_fixed() {
            return Err(format!("{what} must be a float vector of known length, got {ty}"));
        }
        let v = if ty.dtype == DType::F32 { v } else { cx.add1(&format!("{what}_f32"), Cast::new(DType::F32), &[v])? };
        return Ok(Some(Floats::Run(v)));
    };
    let f = t.to_f32().ok_or_else(|| format!("{what} must be floats"))?;
    Ok((!f.is_empty()).then_some(Floats::Known(f)))
}

/// Element `j` of the f32 vector `v` as `f32[1]`.
fn element(cx: &mut NodeCx, v: Value, j: usize, what: &str) -> Result<Value, String> {
    let op = dlc_ir::ops::Slice { starts: vec![j as i64], ends: vec![j as i64 + 1], axes: vec![0], steps: vec![] };
    cx.add1(what, op, &[v])
}

/// Sizes a Resize takes: dims (constants or a shape of run-time dims), or a tensor of
/// values known only at run time.
enum Sizes {
    Dims(Vec<Expr>),
    Run(Value),
}

/// Operand `i` as sizes; `None` when absent or empty.
fn sizes(cx: &mut NodeCx, i: usize) -> Result<Option<Sizes>, String> {
    let Some(name) = cx.node.input.get(i).filter(|n| !n.is_empty()).cloned() else { return Ok(None) };
    if let Some(s) = cx.imp.shape_values.get(&name) {
        return Ok(Some(Sizes::Dims(s.elems.clone())));
    }
    let v = cx.input(i)?;
    if cx.ty(v).shape.numel() == Some(0) {
        return Ok(None);
    }
    let Some(t) = cx.const_input(i)? else { return Ok(Some(Sizes::Run(v))) };
    let ints = t.to_i64().ok_or("sizes must be integers")?;
    if let Some(bad) = ints.iter().find(|&&s| s < 0) {
        return Err(format!("sizes must not be negative, got {bad}"));
    }
    Ok(Some(Sizes::Dims(ints.into_iter().map(Expr::c).collect())))
}

pub(crate) fn resize(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let upsample = cx.node.op_type == "Upsample";
    let legacy = upsample || cx.opset < 11;
    let x = cx.input(0)?;
    let ty = cx.ty(x);
    let r = ty.shape.rank();
    let mode = mode(&cx.string("mode", "nearest")?)?;
    if ty.dtype.minifloat().is_some() || ty.dtype.narrow_int_bits().is_some() || ty.dtype == DType::F8E8M0 {
        return Err(format!("Resize of {} is not supported yet", ty.dtype));
    }
    if mode != ResizeMode::Nearest && !ty.dtype.is_float() {
        return Err(format!("{mode:?} interpolation of {} is not supported yet (nearest is)", ty.dtype).to_lowercase());
    }
    let mut base = ResizeTaps {
        axis: 0,
        size: String::new(),
        scale: 0.0,
        scale_of: String::new(),
        mode,
        coord: ResizeCoord::Asymmetric,
        nearest: NearestMode::Simple,
        cubic_a: -0.75,
        exclude_outside: false,
        antialias: false,
        roi_start: 0.0,
        roi_end: 1.0,
    };
    let mut extrapolation = 0.0;
    let (roi_in, scales, sizes, axes, policy);
    if legacy {
        if mode == ResizeMode::Cubic {
            return Err("cubic mode needs Resize opset 11 or later".into());
        }
        roi_in = None;
        scales = if upsample && cx.opset < 9 {
            let a = cx.node.attribute.iter().find(|a| a.name == "scales").ok_or("attribute 'scales' is required")?;
            Some(Floats::Known(a.floats.clone()))
        } else {
            floats(cx, 1, "scales")?
        };
        sizes = None;
        axes = (0..r as i64).collect::<Vec<_>>();
        policy = "stretch".to_string();
    } else {
        base.coord = coord(&cx.string("coordinate_transformation_mode", "half_pixel")?)?;
        if base.coord == ResizeCoord::HalfPixelSymmetric && cx.opset < 19 {
            return Err("half_pixel_symmetric needs opset 19".into());
        }
        if base.coord == ResizeCoord::TfHalfPixelForNn && mode != ResizeMode::Nearest {
            return Err("tf_half_pixel_for_nn applies to nearest mode only".into());
        }
        base.nearest = nearest(&cx.string("nearest_mode", "round_prefer_floor")?)?;
        base.cubic_a = cx.float("cubic_coeff_a", -0.75);
        base.exclude_outside = cx.int("exclude_outside", 0) != 0;
        extrapolation = cx.float("extrapolation_value", 0.0);
        base.antialias = cx.opset >= 18 && cx.int("antialias", 0) != 0;
        if base.antialias && mode == ResizeMode::Nearest {
            return Err("antialias applies to linear and cubic modes only".into());
        }
        roi_in = floats(cx, 1, "roi")?;
        scales = floats(cx, 2, "scales")?;
        sizes = self::sizes(cx, 3)?;
        axes = if cx.opset >= 18 && cx.has("axes") { cx.ints("axes") } else { (0..r as i64).collect() };
        policy = if cx.opset >= 18 { cx.string("keep_aspect_ratio_policy", "stretch")? } else { "stretch".into() };
    }
    // Axes, normalised and distinct.
    let mut ax = Vec::with_capacity(axes.len());
    for &a in &axes {
        let n = dlc_ir::ops::normalize_axis(a, r)
            .filter(|_| r > 0)
            .ok_or_else(|| format!("axis {a} out of range for {}", ty.shape))?;
        if ax.contains(&n) {
            return Err(format!("axis {a} is repeated in axes {axes:?}"));
        }
        ax.push(n);
    }
    let k = ax.len();
    let mut x = x;
    // roi: constants, or values known only at run time (each axis's start and end
    // then reach its taps kernel as run-time parameters).
    let (mut roi, mut roi_run) = (None, None);
    if base.coord == ResizeCoord::TfCropAndResize {
        let n = match &roi_in {
            Some(Floats::Known(v)) => v.len() as u64,
            Some(Floats::Run(v)) => cx.ty(*v).shape.numel().unwrap_or(0),
            None => return Err("tf_crop_and_resize needs a roi (input 1)".into()),
        };
        if n != 2 * k as u64 {
            return Err(format!("roi has {n} values, tf_crop_and_resize needs {} (starts then ends)", 2 * k));
        }
        match roi_in {
            Some(Floats::Known(v)) => roi = Some(v),
            Some(Floats::Run(v)) => roi_run = Some(v),
            None => {}
        }
    }
    // Per axis: output dim, scale (0: from sizes), scale_of, and a run-time scale.
    let mut plan: Vec<(Dim, f32, String, Option<Value>)> = Vec::with_capacity(k);
    let in_consts = |cx: &mut NodeCx, what: &str| -> Result<Value, String> {
        let d: Option<Vec<f64>> = ax.iter().map(|&a| ty.shape.0[a].fixed().map(|v| v as f64)).collect();
        let d = d.ok_or_else(|| format!("{what} known only at run time over run-time dims are not supported yet"))?;
        let bytes: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = TensorData::new(dlc_ir::TensorType::fixed(DType::F64, &[k as u64]), bytes.into());
        Ok(cx.add_const(t.ok_or("internal: dims")?))
    };
    match (scales, sizes) {
        (Some(_), Some(_)) => return Err("scales and sizes are both given; only one may be".into()),
        (None, None) => return Err("one of scales and sizes must be given".into()),
        (Some(Floats::Known(s)), None) => {
            if s.len() != k {
                return Err(format!("scales has {} values for {k} axes", s.len()));
            }
            for (&a, &sc) in ax.iter().zip(&s) {
                if !(sc > 0.0 && sc.is_finite()) {
                    return Err(format!("scale {sc} for axis {a} must be positive and finite"));
                }
                let out = scaled_dim(&ty.shape.0[a], sc)
                    .ok_or_else(|| format!("cannot scale dim {} by {sc}", ty.shape.0[a]))?;
                plan.push((out, sc, String::new(), None));
            }
        }
        (Some(Floats::Run(sv)), None) => {
            // Scales known only at run time: each output extent floor(d * scale) (in
            // f64, as ONNX's reference computes it) is a computed dim.
            if cx.ty(sv).shape.numel() != Some(k as u64) {
                return Err(format!("scales {} must hold one value per axis ({k})", cx.ty(sv)));
            }
            let d = in_consts(cx, "scales")?;
            let s64 = cx.add1("scales_f64", Cast::new(DType::F64), &[sv])?;
            let o = cx.add1("scaled", dlc_ir::ops::Mul {}, &[s64, d])?;
            let o = cx.add1("scaled_floor", dlc_ir::ops::Floor {}, &[o])?;
            let o = cx.add1("out_dims", Cast { to: DType::I64, saturate: true }, &[o])?;
            let (view, e) = super::bind::computed_dims(cx, x, o, "sizes")?;
            x = view;
            for (j, e) in e.into_iter().enumerate() {
                let d = Dim::from_expr(e.clone()).ok_or_else(|| format!("size {e} is not a dim"))?;
                let sj = element(cx, sv, j, &format!("scale{j}"))?;
                plan.push((d, 0.0, String::new(), Some(sj)));
            }
        }
        (None, Some(z)) => {
            let z = match z {
                Sizes::Dims(z) => Ok(z),
                Sizes::Run(v) => Err(v),
            };
            let n = match &z {
                Ok(z) => z.len() as u64,
                Err(v) => cx.ty(*v).shape.numel().unwrap_or(0),
            };
            if n != k as u64 {
                return Err(format!("sizes has {n} values for {k} axes"));
            }
            match (policy.as_str(), z) {
                ("stretch", Ok(z)) => {
                    for e in z {
                        let d = Dim::from_expr(e.clone()).ok_or_else(|| format!("size {e} is not a dim"))?;
                        plan.push((d, 0.0, String::new(), None));
                    }
                }
                ("stretch", Err(v)) => {
                    // Sizes known only at run time: computed dims; the scale is out / in.
                    let (view, e) = super::bind::computed_dims(cx, x, v, "sizes")?;
                    x = view;
                    for e in e {
                        let d = Dim::from_expr(e.clone()).ok_or_else(|| format!("size {e} is not a dim"))?;
                        plan.push((d, 0.0, String::new(), None));
                    }
                }
                ("not_larger" | "not_smaller", Err(v)) => {
                    // One scale for every axis, the smallest (largest) of sizes / dims,
                    // in f64; extents round(scale * d), computed dims.
                    let d = in_consts(cx, "sizes")?;
                    let v64 = cx.add1("sizes_f64", Cast::new(DType::F64), &[v])?;
                    let ratios = cx.add1("ratios", dlc_ir::ops::Div {}, &[v64, d])?;
                    let pick = if policy == "not_larger" {
                        dlc_ir::Op::from(dlc_ir::ops::ReduceMin { axes: vec![0], keepdims: true })
                    } else {
                        dlc_ir::Op::from(dlc_ir::ops::ReduceMax { axes: vec![0], keepdims: true })
                    };
                    let sc = cx.add1("scale", pick, &[ratios])?;
                    let o = cx.add1("scaled", dlc_ir::ops::Mul {}, &[sc, d])?;
                    let half = TensorData::new(
                        dlc_ir::TensorType::fixed(DType::F64, &[1]),
                        0.5f64.to_le_bytes().to_vec().into(),
                    );
                    let half = cx.add_const(half.ok_or("internal: 0.5")?);
                    let o = cx.add1("rounded", dlc_ir::ops::Add {}, &[o, half])?;
                    let o = cx.add1("rounded_floor", dlc_ir::ops::Floor {}, &[o])?;
                    let o = cx.add1("out_dims", Cast { to: DType::I64, saturate: true }, &[o])?;
                    let (view, e) = super::bind::computed_dims(cx, x, o, "sizes")?;
                    x = view;
                    let sc32 = cx.add1("scale_f32", Cast::new(DType::F32), &[sc])?;
                    for e in e {
                        let d = Dim::from_expr(e.clone()).ok_or_else(|| format!("size {e} is not a dim"))?;
                        plan.push((d, 0.0, String::new(), Some(sc32)));
                    }
                }
                ("not_larger" | "not_smaller", Ok(z)) => {
                    let known: Option<Vec<(u64, u64)>> =
                        ax.iter().zip(&z).map(|(&a, e)| Some((ty.shape.0[a].fixed()?, e.as_const()? as u64))).collect();
                    let known = known.ok_or("keep_aspect_ratio_policy with run-time dims is not supported yet")?;
                    let ratio = |&(i, o): &(u64, u64)| if i == 0 { f64::INFINITY } else { o as f64 / i as f64 };
                    let pick = known.iter().enumerate().min_by(|(_, p), (_, q)| {
                        let c = ratio(p).total_cmp(&ratio(q));
                        if policy == "not_larger" {
                            c
                        } else {
                            c.reverse()
                        }
                    });
                    let (_, &(pi, po)) = pick.ok_or("no axes to resize")?;
                    let s = if pi == 0 { 1.0 } else { po as f64 / pi as f64 };
                    for &(i, _) in &known {
                        let out = (s * i as f64 + 0.5).floor() as u64;
                        plan.push((Dim::Fixed(out), 0.0, format!("{po};{pi}"), None));
                    }
                }
                (p, _) => {
                    return Err(format!(
                        "keep_aspect_ratio_policy '{p}' is not one of stretch, not_larger, not_smaller"
                    ))
                }
            }
        }
    }
    let mut y = x;
    for (j, (&a, (out, scale, scale_of, run_scale))) in ax.iter().zip(plan).enumerate() {
        let cur = cx.ty(y);
        let in_dim = cur.shape.0[a].clone();
        let (r0, r1) = roi.as_ref().map_or((0.0, 1.0), |v| (v[j], v[k + j]));
        let unit_scale = match (scale, scale_of.split_once(';')) {
            (s, _) if s != 0.0 => s == 1.0,
            (_, Some((num, den))) => num == den,
            _ => true,
        };
        let run_time = run_scale.is_some() || roi_run.is_some();
        if !run_time
            && unit_scale
            && out == in_dim
            && (base.coord != ResizeCoord::TfCropAndResize || (r0, r1) == (0.0, 1.0))
        {
            continue;
        }
        // Run-time parameters of this axis: [scale (0: out / in), roi start, roi end].
        let params = if run_time {
            let s = match run_scale {
                Some(s) => s,
                None => {
                    let t = TensorData::from_f32(&[1], &[scale]).ok_or("internal: scale")?;
                    cx.add_const(t)
                }
            };
            let (a0, a1) = match roi_run {
                Some(rv) => {
                    (element(cx, rv, j, &format!("roi_start{j}"))?, element(cx, rv, k + j, &format!("roi_end{j}"))?)
                }
                None => {
                    let t0 = TensorData::from_f32(&[1], &[r0]).ok_or("internal: roi")?;
                    let t1 = TensorData::from_f32(&[1], &[r1]).ok_or("internal: roi")?;
                    (cx.add_const(t0), cx.add_const(t1))
                }
            };
            Some(cx.add1(&format!("params{a}"), dlc_ir::ops::Concat { axis: 0 }, &[s, a0, a1])?)
        } else {
            None
        };
        let op = ResizeTaps {
            axis: a as i64,
            size: out.expr().to_string(),
            scale,
            scale_of,
            roi_start: r0,
            roi_end: r1,
            ..base.clone()
        };
        let (idx, w) = match (in_dim.fixed(), out.fixed(), params) {
            (_, _, Some(p)) => {
                let t = cx.add(&format!("taps{a}"), op, &[y, p])?;
                (t[0], t[1])
            }
            (Some(i), Some(o), None) => {
                let taps = op.taps(Some(i), Some(o)).ok_or("internal: the tap count of known dims")?;
                let (iv, wv) = dlc_interp::resize::taps(&op, i, o)?;
                let wf: Vec<f32> = wv.iter().map(|&v| v as f32).collect();
                let it = TensorData::from_i64(&[o, taps], &iv).ok_or("internal: resize indices")?;
                let wt = TensorData::from_f32(&[o, taps + 1], &wf).ok_or("internal: resize weights")?;
                (cx.add_const(it), cx.add_const(wt))
            }
            _ => {
                let t = cx.add(&format!("taps{a}"), op, &[y])?;
                (t[0], t[1])
            }
        };
        y = cx.add1(&format!("axis{a}"), Resize { axis: a as i64, extrapolation }, &[y, idx, w])?;
    }
    if y == x {
        y = cx.add1("", dlc_ir::ops::Identity {}, &[x])?;
    }
    Ok(vec![y])
}
