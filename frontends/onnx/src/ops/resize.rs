//! Resize (opsets 10-19) and Upsample (7-9): one 1-D resize per resized axis, in the
//! order the ONNX reference applies them (see `dlc_ir::ops::ResizeTaps`). With known
//! dims the taps are constants computed here (`dlc_interp::resize::taps`); with
//! run-time dims a `resize_taps` node computes them while the model runs. Opset 10's
//! Resize and Upsample use ONNX Runtime's legacy rules: asymmetric coordinates, nearest
//! rounding down when upsampling and up when downsampling.
use super::NodeCx;
use dlc_ir::ops::{scaled_dim, NearestMode, Resize, ResizeCoord, ResizeMode, ResizeTaps};
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

/// Operand `i` as floats when it is a non-empty constant; `None` when absent or empty.
fn floats(cx: &mut NodeCx, i: usize, what: &str) -> Result<Option<Vec<f32>>, String> {
    let Some(v) = cx.opt_input(i)? else { return Ok(None) };
    if cx.ty(v).shape.numel() == Some(0) {
        return Ok(None);
    }
    let t =
        cx.const_input(i)?.ok_or_else(|| format!("{what} (input {i}) computed at run time is not supported yet"))?;
    let f = t.to_f32().ok_or_else(|| format!("{what} must be floats"))?;
    Ok((!f.is_empty()).then_some(f))
}

/// Operand `i` as dims: a constant, or a shape of run-time dims; `None` when absent or
/// empty.
fn sizes(cx: &mut NodeCx, i: usize) -> Result<Option<Vec<Expr>>, String> {
    let Some(name) = cx.node.input.get(i).filter(|n| !n.is_empty()).cloned() else { return Ok(None) };
    if let Some(s) = cx.imp.shape_values.get(&name) {
        return Ok(Some(s.elems.clone()));
    }
    let v = cx.input(i)?;
    if cx.ty(v).shape.numel() == Some(0) {
        return Ok(None);
    }
    let t =
        cx.const_input(i)?.ok_or("sizes (input 3) computed from tensor values at run time are not supported yet")?;
    let ints = t.to_i64().ok_or("sizes must be integers")?;
    if let Some(bad) = ints.iter().find(|&&s| s < 0) {
        return Err(format!("sizes must not be negative, got {bad}"));
    }
    Ok(Some(ints.into_iter().map(Expr::c).collect()))
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
    let (mut roi, scales, sizes, axes, policy);
    if legacy {
        if mode == ResizeMode::Cubic {
            return Err("cubic mode needs Resize opset 11 or later".into());
        }
        roi = None;
        scales = if upsample && cx.opset < 9 {
            let a = cx.node.attribute.iter().find(|a| a.name == "scales").ok_or("attribute 'scales' is required")?;
            Some(a.floats.clone())
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
        roi = floats(cx, 1, "roi")?;
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
    if base.coord == ResizeCoord::TfCropAndResize {
        match &roi {
            Some(v) if v.len() == 2 * k => {}
            Some(v) => {
                return Err(format!(
                    "roi has {} values, tf_crop_and_resize needs {} (starts then ends)",
                    v.len(),
                    2 * k
                ))
            }
            None => return Err("tf_crop_and_resize needs a constant roi (input 1)".into()),
        }
    } else {
        roi = None;
    }
    // Per axis: output dim, scale (0: from sizes) and scale_of.
    let mut plan: Vec<(Dim, f32, String)> = Vec::with_capacity(k);
    match (scales, sizes) {
        (Some(_), Some(_)) => return Err("scales and sizes are both given; only one may be".into()),
        (None, None) => return Err("one of scales and sizes must be given".into()),
        (Some(s), None) => {
            if s.len() != k {
                return Err(format!("scales has {} values for {k} axes", s.len()));
            }
            for (&a, &sc) in ax.iter().zip(&s) {
                if !(sc > 0.0 && sc.is_finite()) {
                    return Err(format!("scale {sc} for axis {a} must be positive and finite"));
                }
                let out = scaled_dim(&ty.shape.0[a], sc)
                    .ok_or_else(|| format!("cannot scale dim {} by {sc}", ty.shape.0[a]))?;
                plan.push((out, sc, String::new()));
            }
        }
        (None, Some(z)) => {
            if z.len() != k {
                return Err(format!("sizes has {} values for {k} axes", z.len()));
            }
            match policy.as_str() {
                "stretch" => {
                    for e in z {
                        let d = Dim::from_expr(e.clone()).ok_or_else(|| format!("size {e} is not a dim"))?;
                        plan.push((d, 0.0, String::new()));
                    }
                }
                "not_larger" | "not_smaller" => {
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
                        plan.push((Dim::Fixed(out), 0.0, format!("{po};{pi}")));
                    }
                }
                p => {
                    return Err(format!(
                        "keep_aspect_ratio_policy '{p}' is not one of stretch, not_larger, not_smaller"
                    ))
                }
            }
        }
    }
    let mut y = x;
    for (j, (&a, (out, scale, scale_of))) in ax.iter().zip(plan).enumerate() {
        let cur = cx.ty(y);
        let in_dim = cur.shape.0[a].clone();
        let (r0, r1) = roi.as_ref().map_or((0.0, 1.0), |v| (v[j], v[k + j]));
        let unit_scale = match (scale, scale_of.split_once(';')) {
            (s, _) if s != 0.0 => s == 1.0,
            (_, Some((num, den))) => num == den,
            _ => true,
        };
        if unit_scale && out == in_dim && (base.coord != ResizeCoord::TfCropAndResize || (r0, r1) == (0.0, 1.0)) {
            continue;
        }
        let op = ResizeTaps {
            axis: a as i64,
            size: out.expr().to_string(),
            scale,
            scale_of,
            roi_start: r0,
            roi_end: r1,
            ..base.clone()
        };
        let (idx, w) = match (in_dim.fixed(), out.fixed()) {
            (Some(i), Some(o)) => {
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
