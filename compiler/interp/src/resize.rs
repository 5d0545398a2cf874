//! The float64 meaning of [`ResizeTaps`] and [`Resize`] (the ONNX reference's
//! `_interpolate_1d_along_axis`, one output position at a time).
use dlc_ir::ops::{NearestMode, ResizeCoord, ResizeMode, ResizeTaps};

/// Keys' cubic kernel at distance `x` (ONNX's `compute_coeff`).
fn keys(a: f64, x: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// The input coordinate of output position `o` and whether it lies outside the crop
/// window (`tf_crop_and_resize` only).
pub fn coordinate(op: &ResizeTaps, o: f64, in_len: f64, out_len: f64, scale: f64) -> (f64, bool) {
    let width = scale * in_len;
    let (r0, r1) = (op.roi_start as f64, op.roi_end as f64);
    match op.coord {
        ResizeCoord::AlignCorners => (if width == 1.0 { 0.0 } else { o * (in_len - 1.0) / (width - 1.0) }, false),
        ResizeCoord::Asymmetric => (o / scale, false),
        ResizeCoord::TfCropAndResize => {
            let x = if width == 1.0 {
                (r1 - r0) * (in_len - 1.0) / 2.0
            } else {
                o * (r1 - r0) * (in_len - 1.0) / (width - 1.0)
            } + r0 * (in_len - 1.0);
            (x, x < 0.0 || x > in_len - 1.0)
        }
        ResizeCoord::PytorchHalfPixel => (if width == 1.0 { -0.5 } else { (o + 0.5) / scale - 0.5 }, false),
        ResizeCoord::HalfPixel => ((o + 0.5) / scale - 0.5, false),
        ResizeCoord::HalfPixelSymmetric => {
            let adjustment = out_len / width;
            let offset = in_len / 2.0 * (1.0 - adjustment);
            (offset + (o + 0.5) / scale - 0.5, false)
        }
        ResizeCoord::TfHalfPixelForNn => ((o + 0.5) / scale, false),
    }
}

/// The taps of `op` for an axis of `in_len` into `out_len`: `K` indices and `K + 1`
/// weights per output position (row-major), as [`ResizeTaps`] defines them.
pub fn taps(op: &ResizeTaps, in_len: u64, out_len: u64) -> Result<(Vec<i64>, Vec<f64>), String> {
    let k = op.taps(Some(in_len), Some(out_len)).ok_or("the kernel width is unknown")?;
    taps_of_width(op, in_len, out_len, k as usize)
}

/// [`taps`] with `k` taps per position (the width the node's type declares, which
/// [`ResizeTaps::width`] bounds when the scale was known only at run time: the taps
/// past the footprint get zero weight).
pub fn taps_of_width(op: &ResizeTaps, in_len: u64, out_len: u64, k: usize) -> Result<(Vec<i64>, Vec<f64>), String> {
    let (inf, outf) = (in_len as f64, out_len as f64);
    let scale = op.scale_at(Some(in_len), Some(out_len)).ok_or("the scale's dims must be known")?;
    let last = in_len.saturating_sub(1) as i64;
    let mut idx = Vec::with_capacity(out_len as usize * k);
    let mut w = Vec::with_capacity(out_len as usize * (k + 1));
    for o in 0..out_len {
        let (x, outside) = coordinate(op, o as f64, inf, outf, scale);
        let (is, mut cs): (Vec<i64>, Vec<f64>);
        if op.mode == ResizeMode::Nearest {
            let f = x.floor();
            let i = if x == f {
                x
            } else {
                let r = x - f;
                match op.nearest {
                    NearestMode::RoundPreferFloor => f + if r <= 0.5 { 0.0 } else { 1.0 },
                    NearestMode::RoundPreferCeil => f + if r < 0.5 { 0.0 } else { 1.0 },
                    NearestMode::Floor => f,
                    NearestMode::Ceil => f + 1.0,
                    NearestMode::Simple => {
                        if scale < 1.0 {
                            x.ceil()
                        } else {
                            x.trunc()
                        }
                    }
                }
            };
            (is, cs) = (vec![i as i64], vec![1.0]);
        } else {
            // The neighbour left of x (x itself when it is an integer: ratio 1).
            let base = x.ceil() - 1.0;
            let r = x - base;
            let start = 1 - (k as i64) / 2;
            is = (0..k as i64).map(|j| base as i64 + start + j).collect();
            let a = op.cubic_a as f64;
            cs = if op.antialias {
                let s = scale.min(1.0);
                let c: Vec<f64> = (0..k as i64)
                    .map(|j| {
                        let arg = ((start + j) as f64 - r) * s;
                        match op.mode {
                            ResizeMode::Linear => (1.0 - arg.abs()).clamp(0.0, 1.0),
                            _ => keys(a, arg),
                        }
                    })
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|v| v / sum).collect()
            } else if op.mode == ResizeMode::Linear {
                vec![1.0 - r, r]
            } else {
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                    ((a * (2.0 - r) - 5.0 * a) * (2.0 - r) + 8.0 * a) * (2.0 - r) - 4.0 * a,
                ]
            };
            if op.exclude_outside {
                for (c, &i) in cs.iter_mut().zip(&is) {
                    if i < 0 || i > last {
                        *c = 0.0;
                    }
                }
                let sum: f64 = cs.iter().sum();
                let sum = if sum == 0.0 { 1.0 } else { sum };
                cs.iter_mut().for_each(|c| *c /= sum);
            }
        }
        if outside {
            cs.iter_mut().for_each(|c| *c = 0.0);
        }
        idx.extend(is.iter().map(|&i| i.clamp(0, last)));
        w.extend(cs);
        w.push(if outside { 1.0 } else { 0.0 });
    }
    Ok((idx, w))
}

/// `y = sum_k w[o,k] * x[.., idx[o,k], ..] + w[o,K] * extrapolation` along axis `a` of
/// `x` (dims `xd`); `k` taps per output position.
pub fn apply(x: &[f64], xd: &[u64], a: usize, idx: &[i64], w: &[f64], k: usize, extrapolation: f64) -> Vec<f64> {
    let (pre, inl) = (xd[..a].iter().product::<u64>() as usize, xd[a] as usize);
    let post = xd[a + 1..].iter().product::<u64>() as usize;
    let out = idx.len() / k.max(1);
    let mut y = vec![0.0; pre * out * post];
    for p in 0..pre {
        for o in 0..out {
            for q in 0..post {
                let mut acc = w[o * (k + 1) + k] * extrapolation;
                if inl > 0 {
                    for j in 0..k {
                        let i = idx[o * k + j] as usize;
                        acc += w[o * (k + 1) + j] * x[(p * inl + i) * post + q];
                    }
                }
                y[(p * out + o) * post + q] = acc;
            }
        }
    }
    y
}
