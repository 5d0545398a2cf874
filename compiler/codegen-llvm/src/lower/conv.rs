//! Direct 2-D convolution over NCHW (the fallback for grouped or dilated convolutions
//! the blocked kernels do not take), transposed convolution and GridSample. Pools are
//! lowered through kir (dlc-lower's `pool.rs`).
//!
//! Convolution accumulates into each output plane tap by tap (input channel, kh, kw);
//! for each tap the range of output rows and columns whose input position lies inside
//! the image is computed up front, so the innermost loop has no bounds checks and
//! vectorises when the stride is 1. Each output element still sums its terms in the
//! order (c, kh, kw), the order of a naive reference.
use super::elementwise::activation;
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::{Activation, Conv, PoolGeometry};
use inkwell::values::IntValue;
use inkwell::IntPredicate;

/// Output indices `o` in `[lo, hi)` for which `o*s + k*d - pad` lies in `[0, n)`.
fn valid_range<'ctx>(
    kb: &Kb<'_, 'ctx>,
    k: IntValue<'ctx>,
    s: u64,
    d: u64,
    pad: u64,
    n: u64,
    out: u64,
) -> R<(IntValue<'ctx>, IntValue<'ctx>)> {
    let kd = kb.mul(k, kb.c(d))?;
    // lo = max(0, ceil((pad - k*d) / s))
    let num = kb.sub(kb.c(pad), kd)?;
    let pos = kb.icmp(IntPredicate::SGT, num, kb.c(0))?;
    let up = kb.b.build_int_signed_div(kb.add(num, kb.c(s - 1))?, kb.c(s), "")?;
    let lo = kb.select_i(pos, up, kb.c(0))?;
    // hi = min(out, floor((n - 1 + pad - k*d) / s) + 1), or 0 when negative
    let num2 = kb.sub(kb.c(n - 1 + pad), kd)?;
    let nonneg = kb.icmp(IntPredicate::SGE, num2, kb.c(0))?;
    let q = kb.add(kb.b.build_int_signed_div(num2, kb.c(s), "")?, kb.c(1))?;
    let q = kb.select_i(kb.icmp(IntPredicate::SLT, q, kb.c(out))?, q, kb.c(out))?;
    let hi = kb.select_i(nonneg, q, kb.c(0))?;
    Ok((lo, hi))
}

pub(crate) fn conv(kb: &Kb, n: &NodeInfo, op: &Conv) -> R<()> {
    n.require_f32()?;
    let g: PoolGeometry = op.geometry(n.name, &n.inputs[0], &n.inputs[1])?;
    let x = n.in_dims(0);
    let w = n.in_dims(1);
    let (batch, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
    let groups = op.group as u64;
    let mg = m / groups;
    let [oh, ow] = g.output;
    let has_bias = n.inputs.len() >= 3;
    let flops = 2 * batch * m * cg * kh * kw * oh * ow;
    // Parallel over (image, output channel) planes.
    super::gemm::par(kb, batch * m, flops, |kb, plane| {
        let (px, pw) = (kb.param(0), kb.param(1));
        let pb = has_bias.then(|| kb.param(2));
        let pr = (n.inputs.len() == 4).then(|| kb.param(3));
        let py = kb.param(n.inputs.len());
        let b = kb.b.build_int_unsigned_div(plane, kb.c(m), "")?;
        let mi = kb.b.build_int_unsigned_rem(plane, kb.c(m), "")?;
        let grp = kb.b.build_int_unsigned_div(mi, kb.c(mg), "")?;
        let out_base = kb.mul(kb.lin(&[(b, m), (mi, 1)], 0)?, kb.c(oh * ow))?;
        let init = match pb {
            Some(pb) => kb.load_f32(pb, mi)?,
            None => kb.cf(0.0),
        };
        kb.for_n(oh * ow, |kb, p| kb.store_f32(py, kb.add(out_base, p)?, init))?;
        kb.for_n(cg, |kb, ci| {
            let chan = kb.lin(&[(b, c), (grp, cg), (ci, 1)], 0)?;
            let in_base = kb.mul(chan, kb.c(h * wd))?;
            kb.for_n(kh, |kb, ky| {
                let (oy_lo, oy_hi) = valid_range(kb, ky, g.strides[0], g.dilations[0], g.pad_begin[0], h, oh)?;
                kb.for_n(kw, |kb, kx| {
                    let (ox_lo, ox_hi) = valid_range(kb, kx, g.strides[1], g.dilations[1], g.pad_begin[1], wd, ow)?;
                    let wv = kb.load_f32(pw, kb.lin(&[(mi, cg * kh * kw), (ci, kh * kw), (ky, kw), (kx, 1)], 0)?)?;
                    kb.for_range(oy_lo, oy_hi, |kb, oy| {
                        // iy = oy*s + ky*d - pad (in range by construction)
                        let iy =
                            kb.sub(kb.lin(&[(oy, g.strides[0]), (ky, g.dilations[0])], 0)?, kb.c(g.pad_begin[0]))?;
                        let row_in = kb.add(in_base, kb.mul(iy, kb.c(wd))?)?;
                        let row_out = kb.add(out_base, kb.mul(oy, kb.c(ow))?)?;
                        let col0 = kb.sub(kb.mul(kx, kb.c(g.dilations[1]))?, kb.c(g.pad_begin[1]))?;
                        kb.for_range(ox_lo, ox_hi, |kb, ox| {
                            let ix = kb.add(kb.mul(ox, kb.c(g.strides[1]))?, col0)?;
                            let xv = kb.load_f32(px, kb.add(row_in, ix)?)?;
                            let yi = kb.add(row_out, ox)?;
                            let acc = kb.load_f32(py, yi)?;
                            kb.store_f32(py, yi, kb.fadd(acc, kb.fmul(wv, xv)?)?)
                        })
                    })
                })
            })
        })?;
        // Epilogue, while the output plane is in cache: residual, then activation.
        if pr.is_none() && op.act == Activation::None {
            return Ok(());
        }
        kb.for_n(oh * ow, |kb, p| {
            let yi = kb.add(out_base, p)?;
            let mut y = kb.load_f32(py, yi)?;
            if let Some(pr) = pr {
                y = kb.fadd(y, kb.load_f32(pr, yi)?)?;
            }
            kb.store_f32(py, yi, activation(kb, op.act, y)?)
        })
    })
}

/// Transposed convolution as a gather: each output pixel sums the input pixels and taps
/// that map onto it (`iy * s + ky * d - pad == oy`), in the order (c, ky, kx).
pub(crate) fn conv_transpose(kb: &Kb, n: &NodeInfo, op: &dlc_ir::ops::ConvTranspose) -> R<()> {
    n.require_f32()?;
    let g = op.geometry(n.name, &n.inputs[0], &n.inputs[1])?;
    let x = n.in_dims(0);
    let w = n.in_dims(1);
    let (batch, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (mg, kh, kw) = (w[1], w[2], w[3]);
    let groups = op.group as u64;
    let cg = c / groups;
    let m = mg * groups;
    let [oh, ow] = g.output;
    let has_bias = n.inputs.len() == 3;
    let (px, pw) = (kb.param(0), kb.param(1));
    let pb = has_bias.then(|| kb.param(2));
    let py = kb.param(n.inputs.len());
    let acc = kb.alloca_f32()?;
    kb.nest(&[batch, m, oh, ow], |kb, idx| {
        let (b, mi, oy, ox) = (idx[0], idx[1], idx[2], idx[3]);
        let grp = kb.b.build_int_unsigned_div(mi, kb.c(mg), "")?;
        let mm = kb.b.build_int_unsigned_rem(mi, kb.c(mg), "")?;
        kb.set(
            acc,
            match pb {
                Some(pb) => kb.load_f32(pb, mi)?,
                None => kb.cf(0.0),
            },
        )?;
        kb.for_n(cg, |kb, ci| {
            let ch = kb.lin(&[(grp, cg), (ci, 1)], 0)?;
            kb.for_n(kh, |kb, ky| {
                // iy * s = oy + pad - ky * d must be a non-negative multiple of s below H*s.
                let ny = kb.sub(kb.add(oy, kb.c(g.pad_begin[0]))?, kb.mul(ky, kb.c(g.dilations[0]))?)?;
                let iy = kb.b.build_int_signed_div(ny, kb.c(g.strides[0]), "")?;
                let ry = kb.b.build_int_signed_rem(ny, kb.c(g.strides[0]), "")?;
                let ok_y = kb.and(kb.icmp(IntPredicate::EQ, ry, kb.c(0))?, kb.in_bounds(ny, h * g.strides[0])?)?;
                kb.for_n(kw, |kb, kx| {
                    let nx = kb.sub(kb.add(ox, kb.c(g.pad_begin[1]))?, kb.mul(kx, kb.c(g.dilations[1]))?)?;
                    let ix = kb.b.build_int_signed_div(nx, kb.c(g.strides[1]), "")?;
                    let rx = kb.b.build_int_signed_rem(nx, kb.c(g.strides[1]), "")?;
                    let ok_x = kb.and(kb.icmp(IntPredicate::EQ, rx, kb.c(0))?, kb.in_bounds(nx, wd * g.strides[1])?)?;
                    let ok = kb.and(ok_y, ok_x)?;
                    let xi =
                        kb.select_i(ok, kb.lin(&[(b, c * h * wd), (ch, h * wd), (iy, wd), (ix, 1)], 0)?, kb.c(0))?;
                    let xv = kb.load_f32(px, xi)?;
                    let wv = kb.load_f32(pw, kb.lin(&[(ch, mg * kh * kw), (mm, kh * kw), (ky, kw), (kx, 1)], 0)?)?;
                    let s = kb.fadd(kb.get(acc)?, kb.fmul(xv, wv)?)?;
                    kb.set(acc, kb.select_f(ok, s, kb.get(acc)?)?)
                })
            })
        })?;
        kb.store_f32(py, kb.lin(&[(b, m * oh * ow), (mi, oh * ow), (oy, ow), (ox, 1)], 0)?, kb.get(acc)?)
    })
}

/// GridSample (2-D) following the ONNX reference: denormalise, round (nearest), fold
/// out-of-range coordinates by the padding mode, then interpolate from pixels fetched
/// with the padding rule. Indices are always clamped before loads.
pub(crate) fn grid_sample<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &dlc_ir::ops::GridSample) -> R<()> {
    use dlc_ir::ops::{SampleMode, SamplePadding};
    use inkwell::values::FloatValue;
    use inkwell::FloatPredicate::*;
    n.require_f32()?;
    let xd = n.in_dims(0);
    let gd = n.in_dims(1);
    let (batch, ch, h, w) = (xd[0], xd[1], xd[2], xd[3]);
    let (oh, ow) = (gd[1], gd[2]);
    if h == 0 || w == 0 {
        return Err(n.unsupported("empty images cannot be sampled"));
    }
    let (px, pg, py) = (kb.param(0), kb.param(1), kb.param(2));
    let f = |v: f64| kb.f32t.const_float(v);
    let lt = |a: FloatValue<'ctx>, b: FloatValue<'ctx>| kb.b.build_float_compare(OLT, a, b, "");
    let to_int = |v: FloatValue<'ctx>| -> R<IntValue<'ctx>> {
        Ok(super::elementwise::convert(kb, v.into(), dlc_ir::DType::F32, dlc_ir::DType::I64)?.into_int_value())
    };
    let floor = |v: FloatValue<'ctx>| kb.libm("floorf", v);
    // [min, max] of valid coordinates per dim (0: x over W, 1: y over H).
    let extent = [w, h];
    let bounds: Vec<(f64, f64)> =
        extent.iter().map(|&d| if op.align_corners { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) }).collect();
    let reflect = |v: FloatValue<'ctx>, lo: f64, hi: f64| -> R<FloatValue<'ctx>> {
        let rng = hi - lo;
        if rng <= 0.0 {
            return Ok(f(lo));
        }
        let fold = |dx: FloatValue<'ctx>, from_lo: bool| -> R<FloatValue<'ctx>> {
            let q = kb.libm("truncf", kb.fdiv(dx, f(rng))?)?;
            let r = kb.fsub(dx, kb.fmul(q, f(rng))?)?;
            let even = kb.icmp(IntPredicate::EQ, kb.b.build_and(to_int(q)?, kb.c(1), "")?, kb.c(0))?;
            let (a, b) = (kb.fadd(f(lo), r)?, kb.fsub(f(hi), r)?);
            if from_lo {
                kb.select_f(even, a, b)
            } else {
                kb.select_f(even, b, a)
            }
        };
        let below = fold(kb.fsub(f(lo), v)?, true)?;
        let above = fold(kb.fsub(v, f(hi))?, false)?;
        let v2 = kb.select_f(lt(v, f(lo))?, below, v)?;
        kb.select_f(lt(f(hi), v)?, above, v2)
    };
    // A pixel at integer coordinates with the padding rule; 0 outside for Zeros.
    let pixel = |base: IntValue<'ctx>, yi: IntValue<'ctx>, xi: IntValue<'ctx>| -> R<FloatValue<'ctx>> {
        let mut idx = [xi, yi];
        let mut inside = kb.cx.bool_type().const_all_ones();
        for k in 0..2 {
            let d = extent[k];
            let i = match op.padding {
                SamplePadding::Zeros => {
                    inside = kb.and(inside, kb.in_bounds(idx[k], d)?)?;
                    idx[k]
                }
                SamplePadding::Border => idx[k],
                SamplePadding::Reflection => {
                    let fv = kb.b.build_signed_int_to_float(idx[k], kb.f32t, "")?;
                    to_int(reflect(fv, bounds[k].0, bounds[k].1)?)?
                }
            };
            let i = kb.select_i(kb.icmp(IntPredicate::SLT, i, kb.c(0))?, kb.c(0), i)?;
            idx[k] = kb.select_i(kb.icmp(IntPredicate::SGE, i, kb.c(d))?, kb.c(d - 1), i)?;
        }
        let v = kb.load_f32(px, kb.add(base, kb.lin(&[(idx[1], w), (idx[0], 1)], 0)?)?)?;
        kb.select_f(inside, v, f(0.0))
    };
    let cubic = |t: FloatValue<'ctx>| -> R<[FloatValue<'ctx>; 4]> {
        let a = -0.75;
        let poly = |x: FloatValue<'ctx>, far: bool| -> R<FloatValue<'ctx>> {
            if far {
                // ((a(x) - 5a) x + 8a) x - 4a for 1 <= x < 2
                let t1 = kb.fsub(kb.fmul(f(a), x)?, f(5.0 * a))?;
                let t2 = kb.fadd(kb.fmul(t1, x)?, f(8.0 * a))?;
                kb.fsub(kb.fmul(t2, x)?, f(4.0 * a))
            } else {
                // ((a + 2) x - (a + 3)) x x + 1 for x < 1
                let t1 = kb.fsub(kb.fmul(f(a + 2.0), x)?, f(a + 3.0))?;
                kb.fadd(kb.fmul(kb.fmul(t1, x)?, x)?, f(1.0))
            }
        };
        let one_minus = kb.fsub(f(1.0), t)?;
        Ok([
            poly(kb.fadd(t, f(1.0))?, true)?,
            poly(t, false)?,
            poly(one_minus, false)?,
            poly(kb.fsub(f(2.0), t)?, true)?,
        ])
    };
    let acc = kb.alloca_f32()?;
    kb.nest(&[batch, ch, oh, ow], |kb, idx| {
        let (b, c, oy, ox) = (idx[0], idx[1], idx[2], idx[3]);
        let gi = kb.lin(&[(b, oh * ow * 2), (oy, ow * 2), (ox, 2)], 0)?;
        let base = kb.lin(&[(b, ch * h * w), (c, h * w)], 0)?;
        let mut coord = Vec::new();
        for k in 0..2 {
            let g = kb.load_f32(pg, kb.add(gi, kb.c(k as u64))?)?;
            let d = extent[k] as f64;
            let mut v = if op.align_corners {
                kb.fmul(kb.fdiv(kb.fadd(g, f(1.0))?, f(2.0))?, f(d - 1.0))?
            } else {
                kb.fdiv(kb.fsub(kb.fmul(kb.fadd(g, f(1.0))?, f(d))?, f(1.0))?, f(2.0))?
            };
            if op.mode == SampleMode::Nearest {
                v = kb.libm("roundevenf", v)?;
            }
            let (lo, hi) = bounds[k];
            let outside = kb.b.build_or(lt(v, f(lo))?, lt(f(hi), v)?, "")?;
            let adjusted = match op.padding {
                SamplePadding::Zeros => v,
                SamplePadding::Border => {
                    let c0 = kb.select_f(lt(v, f(0.0))?, f(0.0), v)?;
                    kb.select_f(lt(f(d - 1.0), c0)?, f(d - 1.0), c0)?
                }
                SamplePadding::Reflection => reflect(v, lo, hi)?,
            };
            coord.push(kb.select_f(outside, adjusted, v)?);
        }
        let (vx, vy) = (coord[0], coord[1]);
        let value = match op.mode {
            SampleMode::Nearest => pixel(base, to_int(vy)?, to_int(vx)?)?,
            SampleMode::Linear => {
                let (fx, fy) = (floor(vx)?, floor(vy)?);
                let (dx, dy) = (kb.fsub(vx, fx)?, kb.fsub(vy, fy)?);
                let (x0, y0) = (to_int(fx)?, to_int(fy)?);
                let wx = [kb.fsub(f(1.0), dx)?, dx];
                let wy = [kb.fsub(f(1.0), dy)?, dy];
                kb.set(acc, f(0.0))?;
                for (a, wya) in wy.iter().enumerate() {
                    for (bb, wxb) in wx.iter().enumerate() {
                        let p = pixel(base, kb.add(y0, kb.c(a as u64))?, kb.add(x0, kb.c(bb as u64))?)?;
                        kb.set(acc, kb.fadd(kb.get(acc)?, kb.fmul(kb.fmul(*wya, *wxb)?, p)?)?)?;
                    }
                }
                kb.get(acc)?
            }
            SampleMode::Cubic => {
                let (fx, fy) = (floor(vx)?, floor(vy)?);
                let cx = cubic(kb.fsub(vx, fx)?)?;
                let cy = cubic(kb.fsub(vy, fy)?)?;
                let (x0, y0) = (kb.sub(to_int(fx)?, kb.c(1))?, kb.sub(to_int(fy)?, kb.c(1))?);
                kb.set(acc, f(0.0))?;
                for (a, cya) in cy.iter().enumerate() {
                    let mut row = f(0.0);
                    for (bb, cxb) in cx.iter().enumerate() {
                        let p = pixel(base, kb.add(y0, kb.c(a as u64))?, kb.add(x0, kb.c(bb as u64))?)?;
                        row = kb.fadd(row, kb.fmul(*cxb, p)?)?;
                    }
                    kb.set(acc, kb.fadd(kb.get(acc)?, kb.fmul(*cya, row)?)?)?;
                }
                kb.get(acc)?
            }
        };
        kb.store_f32(py, kb.lin(&[(b, ch * oh * ow), (c, oh * ow), (oy, ow), (ox, 1)], 0)?, value)
    })
}
