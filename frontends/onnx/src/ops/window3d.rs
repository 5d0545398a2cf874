//! 3-D Conv, MaxPool and AveragePool (`[N, C, D, H, W]`) as 2-D ones over depth slices.
//!
//! A 3-D window is a 2-D window (over H and W) repeated at `KD` depth taps, so the op
//! is built from the 2-D kernels dlc already has: the input is padded along D (zeros,
//! or -inf for MaxPool), moved to `[N, D, C, H, W]`, and for each tap `j` the depth
//! slice `j * dilation + od * stride` (`od < OD`) is taken as a batch of `N * OD` planes
//! `[C, H, W]`; the 2-D op runs on it (Conv with the weights' depth slice `j`, the pool
//! with the H and W attributes) and the taps combine by addition (Conv), maximum
//! (MaxPool) or addition then a per-depth divisor (AveragePool: a box window's tap count
//! is the depth count times the H-W count, and the 2-D pool already divides by the
//! latter). The result is moved back to `[N, C', OD, OH, OW]`. D, H, W and C must be
//! known; N may be a run-time dim.
use super::NodeCx;
use dlc_ir::ops::{Add, Conv, Gather, Max, Mul, Pad, PadMode, Reshape, Slice, Transpose};
use dlc_ir::ops::{AutoPad, PoolGeometry, WindowAttrs};
use dlc_ir::{Op, TensorData, Value};

/// The window attributes of a 3-D op, as ONNX gives them (empty: defaults).
pub(crate) struct Attrs {
    pub kernel: Vec<i64>,
    pub strides: Vec<i64>,
    pub pads: Vec<i64>,
    pub dilations: Vec<i64>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

/// Which 3-D op.
pub(crate) enum Kind {
    Max,
    Avg {
        count_include_pad: bool,
    },
    /// Conv with this group count (weights operand 1, optional bias operand 2).
    Conv {
        group: i64,
    },
}

/// Element `i` of `v`, or `default` when `v` is empty.
fn at(v: &[i64], i: usize, default: i64, what: &str) -> Result<i64, String> {
    match v {
        [] => Ok(default),
        v => v.get(i).copied().ok_or_else(|| format!("{what} must have 3 values for a 3-D window, got {v:?}")),
    }
}

/// The depth axis's geometry: `(OD, pad_begin, declared pad_end)`, by the 2-D rule over a
/// `[D, 1]` plane (one axis of the same rule).
fn depth(d: u64, a: &Attrs) -> Result<(u64, u64, u64, [i64; 3]), String> {
    let (k, s, dl) =
        (at(&a.kernel, 0, 1, "kernel_shape")?, at(&a.strides, 0, 1, "strides")?, at(&a.dilations, 0, 1, "dilations")?);
    let pads = [at(&a.pads, 0, 0, "pads")?, 0, at(&a.pads, 3, 0, "pads")?, 0];
    let pads: &[i64] = if a.pads.is_empty() { &[] } else { &pads };
    let w = WindowAttrs {
        kernel: &[k, 1],
        strides: &[s, 1],
        pads,
        dilations: &[dl, 1],
        auto_pad: a.auto_pad,
        ceil_mode: a.ceil_mode,
    };
    let g = PoolGeometry::resolve([d, 1], &w).map_err(|m| format!("depth axis: {m}"))?;
    Ok((g.output[0], g.pad_begin[0], g.pad_end[0], [k, s, dl]))
}

/// The H and W part of a 3-D attribute list (`pads`: begins then ends).
fn hw(v: &[i64], pads: bool) -> Vec<i64> {
    match (v.len(), pads) {
        (0, _) => vec![],
        (6, true) => vec![v[1], v[2], v[4], v[5]],
        (3, false) => v[1..].to_vec(),
        _ => v.to_vec(),
    }
}

/// Builds the 3-D op `kind` on `x` (and, for Conv, `w` and an optional bias).
pub(crate) fn build(
    cx: &mut NodeCx,
    kind: Kind,
    x: Value,
    w: Option<Value>,
    bias: Option<Value>,
    a: &Attrs,
) -> Result<Value, String> {
    let t = cx.ty(x);
    let dims = &t.shape.0;
    if dims.len() != 5 {
        return Err(format!("a 3-D window needs a 5-D operand [N, C, D, H, W], got {t}"));
    }
    let fixed = |i: usize| dims[i].fixed().ok_or_else(|| format!("3-D windows need a known C, D, H and W, got {t}"));
    let (c, d, h, wd) = (fixed(1)?, fixed(2)?, fixed(3)?, fixed(4)?);
    for (v, what, n) in [
        (&a.kernel, "kernel_shape", 3),
        (&a.strides, "strides", 3),
        (&a.dilations, "dilations", 3),
        (&a.pads, "pads", 6),
    ] {
        if !v.is_empty() && v.len() != n {
            return Err(format!("{what} must have {n} values for a 3-D window, got {v:?}"));
        }
    }
    if a.kernel.is_empty() && !matches!(kind, Kind::Conv { .. }) {
        return Err("kernel_shape is required".into());
    }
    // Conv's kernel extents come from its weights when kernel_shape is absent.
    let mut kernel = a.kernel.clone();
    if let (Kind::Conv { .. }, Some(w)) = (&kind, w) {
        let ty = cx.ty(w);
        let wd: Vec<i64> =
            ty.shape.as_fixed().ok_or("3-D Conv weights must have known dims")?.iter().map(|&v| v as i64).collect();
        if wd.len() != 5 {
            return Err(format!("3-D Conv weights must be 5-D, got {ty}"));
        }
        if kernel.is_empty() {
            kernel = wd[2..].to_vec();
        }
    }
    let a = Attrs {
        kernel,
        strides: a.strides.clone(),
        pads: a.pads.clone(),
        dilations: a.dilations.clone(),
        auto_pad: a.auto_pad,
        ceil_mode: a.ceil_mode,
    };
    let (od, pb, pe, [kd, sd, dd]) = depth(d, &a)?;
    let (od, pb, pe) = (od as i64, pb as i64, pe as i64);
    // Pad D so that every tap's slice exists: the last window reaches `span` positions.
    let span = (od - 1) * sd + (kd - 1) * dd + 1;
    let end = (span - pb - d as i64).max(0);
    let fill = if matches!(kind, Kind::Max) { f64::NEG_INFINITY } else { 0.0 };
    let mut xp = x;
    if pb > 0 || end > 0 {
        let pads = vec![0, 0, pb, 0, 0, 0, 0, end, 0, 0];
        xp = cx.add1("pad_depth", Pad::new(pads, PadMode::Constant, fill), &[xp])?;
    }
    let xt = cx.add1("depth_major", Transpose { perm: vec![0, 2, 1, 3, 4] }, &[xp])?;
    // The 2-D attributes: H and W of each list (auto_pad resolves H and W in the 2-D op).
    let (k2, s2, p2, d2) = (hw(&a.kernel, false), hw(&a.strides, false), hw(&a.pads, true), hw(&a.dilations, false));
    let mut acc: Option<Value> = None;
    for j in 0..kd {
        let start = j * dd;
        let slice =
            Slice { starts: vec![start], ends: vec![start + (od - 1) * sd + 1], axes: vec![1], steps: vec![sd] };
        let xs = cx.add1(&format!("tap{j}"), slice, &[xt])?;
        let planes = cx.add1(
            &format!("tap{j}_planes"),
            Reshape { shape: vec![-1, c as i64, h as i64, wd as i64], allowzero: false },
            &[xs],
        )?;
        let op: Op = match kind {
            Kind::Max => dlc_ir::ops::MaxPool {
                kernel_shape: k2.clone(),
                strides: s2.clone(),
                pads: p2.clone(),
                dilations: d2.clone(),
                auto_pad: a.auto_pad,
                ceil_mode: a.ceil_mode,
            }
            .into(),
            Kind::Avg { count_include_pad } => dlc_ir::ops::AveragePool {
                kernel_shape: k2.clone(),
                strides: s2.clone(),
                pads: p2.clone(),
                dilations: d2.clone(),
                auto_pad: a.auto_pad,
                ceil_mode: a.ceil_mode,
                count_include_pad,
            }
            .into(),
            Kind::Conv { group } => Conv {
                kernel_shape: k2.clone(),
                strides: s2.clone(),
                pads: p2.clone(),
                dilations: d2.clone(),
                group,
                auto_pad: a.auto_pad,
                act: dlc_ir::ops::Activation::None,
            }
            .into(),
        };
        let mut operands = vec![planes];
        if let (Kind::Conv { .. }, Some(w)) = (&kind, w) {
            let jt = cx.add_const(TensorData::from_i64(&[], &[j]).ok_or("a tap index")?);
            let wj = cx.add1(&format!("tap{j}_weights"), Gather { axis: 2 }, &[w, jt])?;
            operands.push(wj);
            if j == 0 {
                operands.extend(bias);
            }
        }
        let y = cx.add1(&format!("tap{j}_2d"), op, &operands)?;
        acc = Some(match acc {
            None => y,
            Some(s) if matches!(kind, Kind::Max) => cx.add1(&format!("tap{j}_max"), Max {}, &[s, y])?,
            Some(s) => cx.add1(&format!("tap{j}_sum"), Add {}, &[s, y])?,
        });
    }
    let y = acc.ok_or("kernel_shape must be positive")?;
    let yt = cx.ty(y);
    let yd = yt.shape.as_fixed().map(|v| v.iter().map(|&x| x as i64).collect::<Vec<_>>());
    let yd = match yd {
        Some(v) => v,
        None => yt.shape.0.iter().map(|x| x.fixed().map_or(-1, |v| v as i64)).collect(),
    };
    let (co, oh, ow) = (yd[1], yd[2], yd[3]);
    let mut y = cx.add1("depth_split", Reshape { shape: vec![-1, od, co, oh, ow], allowzero: false }, &[y])?;
    if let Kind::Avg { count_include_pad } = kind {
        // The depth taps counted for each output depth (padded coordinates: data at
        // [pb, pb + D), declared padding up to pb + D + pe).
        let hi = if count_include_pad { pb + d as i64 + pe } else { pb + d as i64 };
        let lo = if count_include_pad { 0 } else { pb };
        let inv: Vec<f32> = (0..od)
            .map(|o| {
                let n = (0..kd).filter(|&j| (lo..hi).contains(&(o * sd + j * dd))).count();
                1.0 / n.max(1) as f32
            })
            .collect();
        let f = cx.add_const(TensorData::from_f32(&[od as u64, 1, 1, 1], &inv).ok_or("depth divisors")?);
        y = cx.add1("depth_mean", Mul {}, &[y, f])?;
    }
    cx.add1("", Transpose { perm: vec![0, 2, 1, 3, 4] }, &[y])
}
