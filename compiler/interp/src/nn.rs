//! Float kernels of the reference interpreter: contractions, convolution,
//! normalisations and attention, in f64, written for clarity rather than speed. Each
//! takes operand values and dims (already checked by the IR's type rules) and returns
//! the result values in row-major order.
use dlc_ir::ops::{range_quantization, Activation, Attention, Conv, Gemm, PoolGeometry, QConv, QuantPack, PACK};

/// A Conv/Gemm/MatMul epilogue activation.
pub fn activation(act: Activation, x: f64) -> f64 {
    match act {
        Activation::None => x,
        Activation::Relu => x.max(0.0),
        Activation::Clip { min, max } => x.max(min as f64).min(max as f64),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::Swish => x / (1.0 + (-x).exp()),
    }
}

fn strides(dims: &[u64]) -> Vec<u64> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// numpy matmul with broadcast batch dims, then `+ bias[n]` and `act`.
pub fn matmul(a: &[f64], ad: &[u64], b: &[f64], bd: &[u64], bias: Option<&[f64]>, act: Activation) -> Vec<f64> {
    let (mut ad, mut bd) = (ad.to_vec(), bd.to_vec());
    if ad.len() == 1 {
        ad.insert(0, 1);
    }
    if bd.len() == 1 {
        bd.push(1);
    }
    let (m, k, n) = (ad[ad.len() - 2], ad[ad.len() - 1], bd[bd.len() - 1]);
    let (ba, bb) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
    let rank = ba.len().max(bb.len());
    let pad = |d: &[u64]| -> Vec<u64> { std::iter::repeat_n(1, rank - d.len()).chain(d.iter().copied()).collect() };
    let (pa, pb) = (pad(ba), pad(bb));
    let batch: Vec<u64> = pa.iter().zip(&pb).map(|(x, y)| *x.max(y)).collect();
    let (sa, sb) = (strides(&pa), strides(&pb));
    let nb: u64 = batch.iter().product();
    let bs = strides(&batch);
    let mut out = Vec::with_capacity((nb * m * n) as usize);
    for flat in 0..nb {
        let (mut oa, mut ob) = (0, 0);
        for d in 0..rank {
            let i = (flat / bs[d]) % batch[d];
            oa += if pa[d] == 1 { 0 } else { i * sa[d] };
            ob += if pb[d] == 1 { 0 } else { i * sb[d] };
        }
        let (oa, ob) = ((oa * m * k) as usize, (ob * k * n) as usize);
        for i in 0..m as usize {
            for j in 0..n as usize {
                let mut acc = 0.0;
                for p in 0..k as usize {
                    acc += a[oa + i * k as usize + p] * b[ob + p * n as usize + j];
                }
                out.push(activation(act, acc + bias.map_or(0.0, |b| b[j])));
            }
        }
    }
    out
}

/// Gemm: `act(alpha * op(A) op(B) + beta * C)`, C broadcast to `[M, N]`.
pub fn gemm(op: &Gemm, a: &[f64], ad: &[u64], b: &[f64], bd: &[u64], c: Option<(&[f64], &[u64])>) -> Vec<f64> {
    let (m, k) = if op.trans_a { (ad[1], ad[0]) } else { (ad[0], ad[1]) };
    let n = if op.trans_b { bd[0] } else { bd[1] };
    let at = |i: u64, p: u64| if op.trans_a { a[(p * m + i) as usize] } else { a[(i * k + p) as usize] };
    let bt = |p: u64, j: u64| if op.trans_b { b[(j * k + p) as usize] } else { b[(p * n + j) as usize] };
    let mut out = Vec::with_capacity((m * n) as usize);
    for i in 0..m {
        for j in 0..n {
            let acc: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
            let cv = c.map_or(0.0, |(c, cd)| {
                let cd: Vec<u64> = std::iter::repeat_n(1, 2 - cd.len()).chain(cd.iter().copied()).collect();
                let (ci, cj) = (if cd[0] == 1 { 0 } else { i }, if cd[1] == 1 { 0 } else { j });
                c[(ci * cd[1] + cj) as usize]
            });
            out.push(activation(op.act, op.alpha as f64 * acc + op.beta as f64 * cv));
        }
    }
    out
}

/// `i * stride + k * dilation - pad` along `axis`, when it lies in `[0, n)`: the input
/// row a convolution's output `i` reads at tap `k` (or the output row a transposed
/// convolution's input `i` writes).
fn tap(g: &PoolGeometry, axis: usize, i: u64, k: u64, n: u64) -> Option<u64> {
    let p = (i * g.strides[axis] + k * g.dilations[axis]).checked_sub(g.pad_begin[axis])?;
    (p < n).then_some(p)
}

/// 2-D convolution with groups, bias, residual and activation.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    op: &Conv,
    g: &PoolGeometry,
    x: &[f64],
    xd: &[u64],
    w: &[f64],
    wd: &[u64],
    bias: Option<&[f64]>,
    residual: Option<&[f64]>,
) -> Vec<f64> {
    let (nb, c, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (m, cg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let groups = op.group as u64;
    let mg = m / groups;
    let [oh, ow] = g.output;
    let mut out = Vec::with_capacity((nb * m * oh * ow) as usize);
    for b in 0..nb {
        for mi in 0..m {
            let grp = mi / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[mi as usize]);
                    for ci in 0..cg {
                        let chan = grp * cg + ci;
                        for ky in 0..kh {
                            let Some(iy) = tap(g, 0, oy, ky, h) else { continue };
                            for kx in 0..kw {
                                let Some(ix) = tap(g, 1, ox, kx, wi) else { continue };
                                let xv = x[(((b * c + chan) * h + iy) * wi + ix) as usize];
                                acc += xv * w[(((mi * cg + ci) * kh + ky) * kw + kx) as usize];
                            }
                        }
                    }
                    let o = out.len();
                    out.push(activation(op.act, acc + residual.map_or(0.0, |r| r[o])));
                }
            }
        }
    }
    out
}

/// ConvTranspose over NCHW (`W` is `[C, M/group, KH, KW]`): every input pixel and tap
/// adds `x * w` to the output pixel `iy * s + ky * d - pad` it lands on, plus the bias.
pub fn conv_transpose(
    group: u64,
    g: &PoolGeometry,
    x: &[f64],
    xd: &[u64],
    w: &[f64],
    wd: &[u64],
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let (nb, c, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (mg, kh, kw) = (wd[1], wd[2], wd[3]);
    let cg = c / group.max(1);
    let m = mg * group.max(1);
    let [oh, ow] = g.output;
    let mut out = vec![0.0; (nb * m * oh * ow) as usize];
    for b in 0..nb {
        for mi in 0..m {
            let base = ((b * m + mi) * oh * ow) as usize;
            let bv = bias.map_or(0.0, |bs| bs[mi as usize]);
            out[base..base + (oh * ow) as usize].iter_mut().for_each(|v| *v = bv);
            let (grp, mm) = (mi / mg, mi % mg);
            for ci in 0..cg {
                let ch = grp * cg + ci;
                for iy in 0..h {
                    for ix in 0..wi {
                        let xv = x[(((b * c + ch) * h + iy) * wi + ix) as usize];
                        for ky in 0..kh {
                            let Some(oy) = tap(g, 0, iy, ky, oh) else { continue };
                            for kx in 0..kw {
                                let Some(ox) = tap(g, 1, ix, kx, ow) else { continue };
                                let wv = w[(((ch * mg + mm) * kh + ky) * kw + kx) as usize];
                                out[base + (oy * ow + ox) as usize] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// GridSample (any spatial rank) as ONNX's reference implementation computes it, in
/// f64: coordinates denormalised, rounded half to even for `nearest`, folded into the
/// valid range by the padding mode, then nearest, N-linear or N-cubic (Keys, a = -0.75)
/// interpolation from pixels read with the padding rule.
pub fn grid_sample(op: &dlc_ir::ops::GridSample, x: &[f64], xd: &[u64], grid: &[f64], gd: &[u64]) -> Vec<f64> {
    use dlc_ir::ops::{SampleMode, SamplePadding};
    let r = xd.len() - 2;
    let (nb, ch) = (xd[0] as usize, xd[1] as usize);
    // Spatial extents, x (the last dim) first, as the grid orders coordinates.
    let ext: Vec<i64> = xd[2..].iter().rev().map(|&d| d as i64).collect();
    let plane: usize = ext.iter().product::<i64>() as usize;
    let opos: usize = gd[1..=r].iter().product::<u64>() as usize;
    let bounds = |d: i64| if op.align_corners { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) };
    let reflect = |v: f64, lo: f64, hi: f64| -> f64 {
        let rng = hi - lo;
        if rng <= 0.0 {
            return lo;
        }
        if v < lo {
            let dx = lo - v;
            let (q, r) = ((dx / rng).trunc(), dx % rng);
            if q as i64 % 2 == 0 {
                lo + r
            } else {
                hi - r
            }
        } else if v > hi {
            let dx = v - hi;
            let (q, r) = ((dx / rng).trunc(), dx % rng);
            if q as i64 % 2 == 0 {
                hi - r
            } else {
                lo + r
            }
        } else {
            v
        }
    };
    let denorm = |g: f64, d: i64| {
        if op.align_corners {
            (g + 1.0) / 2.0 * (d as f64 - 1.0)
        } else {
            ((g + 1.0) * d as f64 - 1.0) / 2.0
        }
    };
    let cubic = |t: f64| {
        let a = -0.75;
        let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
        let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
        vec![far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
    };
    let mut out = Vec::with_capacity(nb * ch * opos);
    for b in 0..nb {
        for c in 0..ch {
            let data = &x[(b * ch + c) * plane..][..plane];
            let pixel = |at: &[i64]| -> f64 {
                let (mut flat, mut stride) = (0i64, 1i64);
                for (k, &i) in at.iter().enumerate() {
                    let mut i = i;
                    match op.padding {
                        SamplePadding::Zeros if i < 0 || i >= ext[k] => return 0.0,
                        SamplePadding::Reflection => {
                            let (lo, hi) = bounds(ext[k]);
                            i = reflect(i as f64, lo, hi) as i64;
                        }
                        _ => {}
                    }
                    flat += i.clamp(0, ext[k] - 1) * stride;
                    stride *= ext[k];
                }
                data[flat as usize]
            };
            for o in 0..opos {
                let gi = (b * opos + o) * r;
                let mut taps: Vec<(i64, Vec<f64>)> = Vec::with_capacity(r);
                for (k, &d) in ext.iter().enumerate() {
                    let mut v = denorm(grid[gi + k], d);
                    if op.mode == SampleMode::Nearest {
                        v = v.round_ties_even();
                    }
                    let (lo, hi) = bounds(d);
                    if v < lo || v > hi {
                        v = match op.padding {
                            SamplePadding::Zeros => v,
                            SamplePadding::Border => v.clamp(0.0, d as f64 - 1.0),
                            SamplePadding::Reflection => reflect(v, lo, hi),
                        };
                    }
                    taps.push(match op.mode {
                        SampleMode::Nearest => (v as i64, vec![1.0]),
                        SampleMode::Linear => (v.floor() as i64, vec![1.0 - (v - v.floor()), v - v.floor()]),
                        SampleMode::Cubic => (v.floor() as i64 - 1, cubic(v - v.floor())),
                    });
                }
                let per = taps[0].1.len();
                let mut sum = 0.0;
                for combo in 0..per.pow(r as u32) {
                    let (mut at, mut w, mut rest) = (Vec::with_capacity(r), 1.0, combo);
                    for (i0, ws) in &taps {
                        at.push(i0 + (rest % per) as i64);
                        w *= ws[rest % per];
                        rest /= per;
                    }
                    sum += w * pixel(&at);
                }
                out.push(sum);
            }
        }
    }
    out
}

/// Einsum in f64: every assignment of the letters, the product of the operands'
/// elements summed into the output element the output letters select.
pub fn einsum(equation: &str, xs: &[Vec<f64>], dims: &[Vec<u64>]) -> Result<Vec<f64>, String> {
    let ranks: Vec<usize> = dims.iter().map(Vec::len).collect();
    let (ins, out) = dlc_ir::ops::parse_einsum(equation, &ranks)?;
    let ext = dlc_ir::ops::einsum_extents(&ins, dims)?;
    let letters: Vec<char> = ext.keys().copied().collect();
    let sizes: Vec<u64> = letters.iter().map(|l| ext[l]).collect();
    let pos = |l: &char| letters.iter().position(|x| x == l).unwrap_or(0);
    let out_len: u64 = out.iter().map(|l| ext[l]).product();
    let mut y = vec![0.0; out_len as usize];
    let total: u64 = sizes.iter().product();
    let mut at = vec![0u64; letters.len()];
    for _ in 0..total {
        let mut prod = 1.0;
        for ((op, x), d) in ins.iter().zip(xs).zip(dims) {
            // A dim of extent 1 broadcasts: index 0 whatever the letter's value.
            let i = op.iter().zip(d).fold(0, |acc, (l, &e)| acc * e + if e == 1 { 0 } else { at[pos(l)] });
            prod *= x[i as usize];
        }
        let o = out.iter().fold(0, |acc, l| acc * ext[l] + at[pos(l)]);
        y[o as usize] += prod;
        for k in (0..at.len()).rev() {
            at[k] += 1;
            if at[k] < sizes[k] {
                break;
            }
            at[k] = 0;
        }
    }
    Ok(y)
}

/// MaxPool (`avg: None`) or AveragePool (`avg: Some(count_include_pad)`) over NCHW:
/// taps outside the image are skipped; with `count_include_pad` the divisor counts the
/// taps inside the padded image.
pub fn pool(g: &PoolGeometry, avg: Option<bool>, x: &[f64], xd: &[u64]) -> Vec<f64> {
    let (planes, h, w) = (xd[0] * xd[1], xd[2], xd[3]);
    let [oh, ow] = g.output;
    let mut out = Vec::with_capacity((planes * oh * ow) as usize);
    for pl in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut acc, mut count) = (if avg.is_some() { 0.0 } else { f64::NEG_INFINITY }, 0.0);
                for ky in 0..g.kernel[0] {
                    let py = oy * g.strides[0] + ky * g.dilations[0];
                    for kx in 0..g.kernel[1] {
                        let px = ox * g.strides[1] + kx * g.dilations[1];
                        let (iy, ix) = (py as i64 - g.pad_begin[0] as i64, px as i64 - g.pad_begin[1] as i64);
                        let inside = (0..h as i64).contains(&iy) && (0..w as i64).contains(&ix);
                        let padded = py < h + g.pad_begin[0] + g.pad_end[0] && px < w + g.pad_begin[1] + g.pad_end[1];
                        if inside {
                            let v = x[((pl * h + iy as u64) * w + ix as u64) as usize];
                            acc = if avg.is_some() { acc + v } else { acc.max(v) };
                        }
                        if inside || (avg == Some(true) && padded) {
                            count += 1.0;
                        }
                    }
                }
                out.push(if avg.is_some() { acc / count } else { acc });
            }
        }
    }
    out
}

/// Softmax over the last `inner` elements of each row.
pub fn softmax(x: &[f64], inner: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(inner.max(1)) {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

/// Layer (or RMS) normalisation over rows of `inner` elements; scale and bias already
/// broadcast to `inner` values.
pub fn layernorm(x: &[f64], inner: usize, eps: f64, rms: bool, scale: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(inner.max(1)) {
        let n = row.len() as f64;
        let mean = if rms { 0.0 } else { row.iter().sum::<f64>() / n };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        out.extend(row.iter().enumerate().map(|(i, v)| (v - mean) * inv * scale[i] + bias.map_or(0.0, |b| b[i])));
    }
    out
}

/// Attention over packed heads (see [`Attention`]); `mask` holds the additive values
/// already broadcast to `[B, H, Sq, Sk]`.
pub fn attention(op: &Attention, q: &[f64], k: &[f64], v: &[f64], dims: [u64; 5], mask: Option<&[f64]>) -> Vec<f64> {
    let [b, sq, sk, hd, hdv] = dims.map(|d| d as usize);
    let h = op.heads as usize;
    let (d, dv) = (hd / h, hdv / h);
    let mut out = vec![0.0; b * sq * hdv];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..sq {
                let scores: Vec<f64> = (0..sk)
                    .map(|j| {
                        let dot: f64 = (0..d)
                            .map(|e| q[(bi * sq + i) * hd + hi * d + e] * k[(bi * sk + j) * hd + hi * d + e])
                            .sum();
                        op.scale as f64 * dot + mask.map_or(0.0, |m| m[((bi * h + hi) * sq + i) * sk + j])
                    })
                    .collect();
                let p = softmax(&scores, sk);
                for (j, pj) in p.iter().enumerate() {
                    for e in 0..dv {
                        out[(bi * sq + i) * hdv + hi * dv + e] += pj * v[(bi * sk + j) * hdv + hi * dv + e];
                    }
                }
            }
        }
    }
    out
}

/// `QuantPack`: ONNX QuantizeLinear to u8 (division and rounding in f32, as the ONNX
/// reference and ONNX Runtime do) in the packed `[N, C/4, H', W', 4]` layout, padding
/// and missing channels at the zero point.
/// Returns the packed values and the `(scale, zero_point)` used: the op's, or with
/// `dynamic` those of the input's range (in f32, NaN ignored).
pub fn quant_pack(op: &QuantPack, x: &[f64], xd: &[u64]) -> (Vec<i64>, f32, i64) {
    let (scale, zp) = if op.dynamic {
        let (lo, hi) =
            x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v as f32), b.max(v as f32)));
        range_quantization(lo, hi, op.qmax)
    } else {
        (op.scale, op.zero_point)
    };
    (quant_pack_with(op, scale, zp, x, xd), scale, zp)
}

fn quant_pack_with(op: &QuantPack, scale: f32, zp: i64, x: &[f64], xd: &[u64]) -> Vec<i64> {
    let quantize = |v: f64| {
        let q = ((v as f32 / scale).round_ties_even() as f64 + zp as f64).clamp(0.0, op.qmax as f64);
        if q.is_nan() {
            0
        } else {
            q as i64
        }
    };
    if op.rows {
        // Row p's K values are pixel p's channels: [1, K/4, 1, P, 4].
        let k = xd[xd.len() - 1];
        let (p, k4) = (x.len() as u64 / k.max(1), k.div_ceil(PACK));
        let mut out = vec![zp; (k4 * p * PACK) as usize];
        for (i, &v) in x.iter().enumerate() {
            let (row, ch) = (i as u64 / k, i as u64 % k);
            out[((ch / PACK * p + row) * PACK + ch % PACK) as usize] = quantize(v);
        }
        return out;
    }
    let (n, c, h, w) = (xd[0], xd[1], xd[2], xd[3]);
    let [pt, pl, pb, pr] = op.padding();
    let (c4, hp, wp) = (c.div_ceil(PACK), pt + h + pb, pl + w + pr);
    let mut out = vec![zp; (n * c4 * hp * wp * PACK) as usize];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for xi in 0..w {
                    let v = x[(((b * c + ch) * h + y) * w + xi) as usize];
                    let dst = ((((b * c4 + ch / PACK) * hp + y + pt) * wp + xi + pl) * PACK) + ch % PACK;
                    out[dst as usize] = quantize(v);
                }
            }
        }
    }
    out
}

/// The output extents `[OH, OW]` of a `QConv` over packed input dims `xd` and weight
/// dims `wd`.
fn qconv_out(op: &QConv, xd: &[u64], wd: &[u64]) -> [u64; 2] {
    let ([sy, sx], [dy, dx]) = op.steps();
    [(xd[2] - (wd[2] - 1) * dy - 1) / sy + 1, (xd[3] - (wd[3] - 1) * dx - 1) / sx + 1]
}

/// The image, output channel, row and column `[n, m, oy, ox]` of `QConv` result element
/// `index` (row-major NCHW, or `[P, M]` with `rows`).
pub fn qconv_coords(op: &QConv, xd: &[u64], wd: &[u64], index: usize) -> [u64; 4] {
    let [oh, ow] = qconv_out(op, xd, wd);
    let (i, m) = (index as u64, wd[0]);
    if op.rows {
        return [0, i % m, 0, i / m];
    }
    [i / (ow * oh * m), (i / (ow * oh)) % m, (i / ow) % oh, i % ow]
}

/// The exact integer sum of `QConv` output element `index` (see [`qconv_coords`]).
pub fn qconv_at(op: &QConv, xq: &[i64], xd: &[u64], w: &[i64], wd: &[u64], index: usize) -> i64 {
    let (c4, hp, wp) = (xd[1], xd[2], xd[3]);
    let (c, kh, kw) = (wd[1], wd[2], wd[3]);
    let ([sy, sx], [dy, dx]) = op.steps();
    let [b, mi, oy, ox] = qconv_coords(op, xd, wd, index);
    let mut acc = 0i64;
    for ci in 0..c {
        for ky in 0..kh {
            for kx in 0..kw {
                let (iy, ix) = (oy * sy + ky * dy, ox * sx + kx * dx);
                let xv = xq[((((b * c4 + ci / PACK) * hp + iy) * wp + ix) * PACK + ci % PACK) as usize];
                acc += xv * w[(((mi * c + ci) * kh + ky) * kw + kx) as usize];
            }
        }
    }
    acc
}

/// A dynamic `QConv`'s per-channel `(mult, offset)` for its input's `(scale,
/// zero_point)`: `scale * mult[m]` and `offset[m] - scale * zero_point * sum(w[m])`.
pub fn qconv_dynamic_params(mult: &[f64], offset: &[f64], w: &[i64], scale: f64, zp: f64) -> (Vec<f64>, Vec<f64>) {
    let per = w.len() / mult.len().max(1);
    let sums = w.chunks(per.max(1)).map(|c| c.iter().sum::<i64>() as f64);
    let m = mult.iter().map(|v| (scale * v) as f32 as f64).collect::<Vec<_>>();
    let o = offset.iter().zip(sums).zip(&m).map(|((b, s), mu)| b - mu * zp * s).collect();
    (m, o)
}

/// `QConv`: exact integer sums, then `act(acc * mult + offset + residual)`.
#[allow(clippy::too_many_arguments)]
pub fn qconv(
    op: &QConv,
    xq: &[i64],
    xd: &[u64],
    w: &[i64],
    wd: &[u64],
    mult: &[f64],
    offset: &[f64],
    residual: Option<&[f64]>,
) -> Vec<f64> {
    let [oh, ow] = qconv_out(op, xd, wd);
    (0..(xd[0] * wd[0] * oh * ow) as usize)
        .map(|i| {
            let mi = qconv_coords(op, xd, wd, i)[1];
            let acc = qconv_at(op, xq, xd, w, wd, i);
            let v = acc as f64 * mult[mi as usize] + offset[mi as usize] + residual.map_or(0.0, |r| r[i]);
            activation(op.act, v)
        })
        .collect()
}

/// ONNX RoiAlign as its reference computes it (f32 arithmetic in the reference's order):
/// `x` `[N,C,H,W]`, `rois` `[R,4]`, `batch` `[R]`; the result `[R,C,oh,ow]`.
pub fn roi_align(
    op: &dlc_ir::ops::RoiAlign,
    x: &[f32],
    xd: &[u64],
    rois: &[f32],
    batch: &[i64],
) -> Result<Vec<f32>, String> {
    let (n, c, h, w) = (xd[0] as usize, xd[1] as usize, xd[2] as usize, xd[3] as usize);
    let (oh, ow) = (op.output_height as usize, op.output_width as usize);
    let mut out = Vec::with_capacity(batch.len() * c * oh * ow);
    let off = if op.half_pixel { 0.5f32 } else { 0.0 };
    let ss = op.spatial_scale as f32;
    for (r, &b) in batch.iter().enumerate() {
        let b =
            usize::try_from(b).ok().filter(|&b| b < n).ok_or_else(|| format!("batch index {b} outside [0, {n})"))?;
        let roi = &rois[4 * r..4 * r + 4];
        let (sw, sh) = (roi[0] * ss - off, roi[1] * ss - off);
        let (ew, eh) = (roi[2] * ss - off, roi[3] * ss - off);
        let (mut rw, mut rh) = (ew - sw, eh - sh);
        if !op.half_pixel {
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (bh, bw) = (rh / oh as f32, rw / ow as f32);
        let grid = |side: f32, bins: usize| {
            if op.sampling_ratio > 0 {
                op.sampling_ratio
            } else {
                (side / bins as f32).ceil() as i64
            }
        };
        let (gh, gw) = (grid(rh, oh), grid(rw, ow));
        // The work of folding at compile time is bounded (the kernel runs it otherwise).
        let work = (gh.max(0) as u128) * (gw.max(0) as u128) * (oh * ow * c) as u128;
        if work > 1 << 26 {
            return Err("unsupported: this much work".into());
        }
        let count = (gh * gw).max(1) as f32;
        // (weights, positions) of every sample, bin by bin.
        let mut samples = Vec::new();
        for ph in 0..oh {
            for pw in 0..ow {
                for iy in 0..gh.max(0) {
                    let yy = sh + ph as f32 * bh + (iy as f32 + 0.5) * bh / gh as f32;
                    for ix in 0..gw.max(0) {
                        let xx = sw + pw as f32 * bw + (ix as f32 + 0.5) * bw / gw as f32;
                        if yy < -1.0 || yy > h as f32 || xx < -1.0 || xx > w as f32 {
                            samples.push(([0f32; 4], [0usize; 4]));
                            continue;
                        }
                        let axis = |v: f32, ext: usize| {
                            let mut v = v.max(0.0);
                            let mut lo = v as usize;
                            let hi;
                            if lo >= ext - 1 {
                                lo = ext - 1;
                                hi = lo;
                                v = lo as f32;
                            } else {
                                hi = lo + 1;
                            }
                            (lo, hi, v - lo as f32)
                        };
                        let (yl, yh, ly) = axis(yy, h);
                        let (xl, xh, lx) = axis(xx, w);
                        let (hy, hx) = (1.0 - ly, 1.0 - lx);
                        samples.push((
                            [hy * hx, hy * lx, ly * hx, ly * lx],
                            [yl * w + xl, yl * w + xh, yh * w + xl, yh * w + xh],
                        ));
                    }
                }
            }
        }
        let per_bin = (gh.max(0) * gw.max(0)) as usize;
        for ch in 0..c {
            let plane = &x[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
            for bin in 0..oh * ow {
                let mut acc = 0f32;
                for (k, (wt, pos)) in samples[bin * per_bin..(bin + 1) * per_bin].iter().enumerate() {
                    let t: Vec<f32> = (0..4).map(|j| wt[j] * plane[pos[j]]).collect();
                    if op.max {
                        let m = t[0].max(t[1]).max(t[2]).max(t[3]);
                        acc = if k == 0 { m } else { acc.max(m) };
                    } else {
                        acc += t[0] + t[1] + t[2] + t[3];
                    }
                }
                out.push(if op.max { acc } else { acc / count });
            }
        }
    }
    Ok(out)
}

/// Col2Im in f64, as ONNX's reference scatters it: each value of column `l` (block
/// position `(b...)`, row-major in the grid) and row `c * prod(block) + (k...)` is added at
/// `b * stride - pad_begin + k * dilation` of image `c` when that lies inside the image.
pub fn col2im(
    op: &dlc_ir::ops::Col2Im,
    x: &[f32],
    xd: &[u64],
    image: &[i64],
    block: &[i64],
) -> Result<Vec<f64>, String> {
    let r = image.len();
    let (n, rows, cols) = (xd[0] as usize, xd[1] as usize, xd[2] as usize);
    let kprod: i64 = block.iter().product();
    if kprod <= 0 || rows as i64 % kprod != 0 {
        return Err(format!("{rows} rows are not a multiple of the block's {kprod} values"));
    }
    let c = rows / kprod as usize;
    let grid: Vec<i64> = (0..r)
        .map(|d| {
            (image[d] + op.pads[d] + op.pads[d + r] - op.dilations[d] * (block[d] - 1) - 1).div_euclid(op.strides[d])
                + 1
        })
        .collect();
    if grid.iter().product::<i64>() != cols as i64 {
        return Err(format!("{cols} columns, the shapes make {grid:?}"));
    }
    let plane: usize = image.iter().product::<i64>() as usize;
    let mut y = vec![0f64; n * c * plane];
    // Mixed-radix counters over the block's and the grid's positions.
    let unflat = |mut i: i64, dims: &[i64]| -> Vec<i64> {
        let mut v = vec![0; dims.len()];
        for d in (0..dims.len()).rev() {
            v[d] = i % dims[d];
            i /= dims[d];
        }
        v
    };
    for b in 0..n {
        for row in 0..rows {
            let (ci, k) = (row / kprod as usize, unflat(row as i64 % kprod, block));
            for l in 0..cols {
                let g = unflat(l as i64, &grid);
                let mut at = 0i64;
                let mut inside = true;
                for d in 0..r {
                    let p = g[d] * op.strides[d] - op.pads[d] + k[d] * op.dilations[d];
                    inside &= (0..image[d]).contains(&p);
                    at = at * image[d] + p;
                }
                if inside {
                    y[(b * c + ci) * plane + at as usize] += x[(b * rows + row) * cols + l] as f64;
                }
            }
        }
    }
    Ok(y)
}
