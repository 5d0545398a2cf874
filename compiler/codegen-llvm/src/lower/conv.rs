//! Direct 2-D convolution and pooling over NCHW.
//!
//! Convolution accumulates into each output plane tap by tap (input channel, kh, kw);
//! for each tap the range of output rows and columns whose input position lies inside
//! the image is computed up front, so the innermost loop has no bounds checks and
//! vectorises when the stride is 1. Each output element still sums its terms in the
//! order (c, kh, kw), the order of a naive reference.
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::{Conv, PoolGeometry};
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
    let has_bias = n.inputs.len() == 3;
    let (px, pw) = (kb.param(0), kb.param(1));
    let pb = has_bias.then(|| kb.param(2));
    let py = kb.param(if has_bias { 3 } else { 2 });
    kb.nest(&[batch, m], |kb, idx| {
        let (b, mi) = (idx[0], idx[1]);
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
        })
    })
}

pub(crate) enum Pool {
    Max,
    Avg { count_include_pad: bool },
}

pub(crate) fn pool(kb: &Kb, n: &NodeInfo, g: &PoolGeometry, kind: Pool) -> R<()> {
    n.require_f32()?;
    let x = n.in_dims(0);
    let (planes, h, w) = (x[0] * x[1], x[2], x[3]);
    let [oh, ow] = g.output;
    let (px, py) = (kb.param(0), kb.param(1));
    let acc = kb.alloca_f32()?;
    let cnt = kb.alloca_f32()?;
    kb.nest(&[planes, oh, ow], |kb, idx| {
        let (pl, oy, ox) = (idx[0], idx[1], idx[2]);
        let base = kb.mul(pl, kb.c(h * w))?;
        kb.set(acc, kb.cf(if matches!(kind, Pool::Max) { f32::NEG_INFINITY } else { 0.0 }))?;
        kb.set(cnt, kb.cf(0.0))?;
        kb.for_n(g.kernel[0], |kb, ky| {
            // Positions are computed as if padded (offset by pad), then shifted back.
            let py_pad = kb.lin(&[(oy, g.strides[0]), (ky, g.dilations[0])], 0)?;
            let iy = kb.sub(py_pad, kb.c(g.pad_begin[0]))?;
            let in_y = kb.in_bounds(iy, h)?;
            let in_y_pad = kb.in_bounds(py_pad, h + g.pad_begin[0] + g.pad_end[0])?;
            kb.for_n(g.kernel[1], |kb, kx| {
                let px_pad = kb.lin(&[(ox, g.strides[1]), (kx, g.dilations[1])], 0)?;
                let ix = kb.sub(px_pad, kb.c(g.pad_begin[1]))?;
                let inside = kb.and(in_y, kb.in_bounds(ix, w)?)?;
                // Out-of-image taps load element 0 and are then masked out.
                let off = kb.select_i(inside, kb.add(base, kb.add(kb.mul(iy, kb.c(w))?, ix)?)?, base)?;
                let v = kb.load_f32(px, off)?;
                match kind {
                    Pool::Max => {
                        let m = kb.fmax(kb.get(acc)?, v)?;
                        kb.set(acc, kb.select_f(inside, m, kb.get(acc)?)?)
                    }
                    Pool::Avg { count_include_pad } => {
                        let s = kb.fadd(kb.get(acc)?, v)?;
                        kb.set(acc, kb.select_f(inside, s, kb.get(acc)?)?)?;
                        let counted = if count_include_pad {
                            kb.and(in_y_pad, kb.in_bounds(px_pad, w + g.pad_begin[1] + g.pad_end[1])?)?
                        } else {
                            inside
                        };
                        let c1 = kb.fadd(kb.get(cnt)?, kb.cf(1.0))?;
                        kb.set(cnt, kb.select_f(counted, c1, kb.get(cnt)?)?)
                    }
                }
            })
        })?;
        let mut r = kb.get(acc)?;
        if let Pool::Avg { .. } = kind {
            r = kb.fdiv(r, kb.get(cnt)?)?;
        }
        kb.store_f32(py, kb.lin(&[(pl, oh * ow), (oy, ow), (ox, 1)], 0)?, r)
    })
}

pub(crate) fn global_avgpool(kb: &Kb, n: &NodeInfo) -> R<()> {
    n.require_f32()?;
    let x = n.in_dims(0);
    let planes = x[0] * x[1];
    let size: u64 = x[2..].iter().product();
    let (px, py) = (kb.param(0), kb.param(1));
    let acc = kb.alloca_f32()?;
    kb.for_n(planes, |kb, pl| {
        kb.set(acc, kb.cf(0.0))?;
        let base = kb.mul(pl, kb.c(size))?;
        kb.for_n(size, |kb, i| kb.set(acc, kb.fadd(kb.get(acc)?, kb.load_f32(px, kb.add(base, i)?)?)?))?;
        kb.store_f32(py, pl, kb.fdiv(kb.get(acc)?, kb.cf(size as f32))?)
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
    let py = kb.param(if has_bias { 3 } else { 2 });
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
