//! BatchNormalization (inference) and Softmax.
use super::elementwise::{broadcast_strides, coalesce, nest, Drive};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::{normalize_axis, LayerNormalization, SoftmaxMode};
use inkwell::values::IntValue;
use inkwell::{FloatPredicate, IntPredicate};

pub(crate) fn batchnorm(kb: &Kb, n: &NodeInfo, epsilon: f32) -> R<()> {
    batchnorm_with(kb, n, epsilon, &nest)
}

/// BatchNormalization, one element per iteration of `drive` over `[N, C, inner]`.
pub(crate) fn batchnorm_with<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, epsilon: f32, drive: Drive<'_, 'ctx>) -> R<()> {
    n.require_f32()?;
    let x = n.in_dims(0);
    let (batch, c) = (x[0], x[1]);
    let inner: u64 = x[2..].iter().product();
    let (px, ps, pb, pm, pv, py) = (kb.param(0), kb.param(1), kb.param(2), kb.param(3), kb.param(4), kb.param(5));
    drive(kb, &[batch, c, inner], &|kb, idx| {
        let ch = idx[1];
        let inv = kb.fdiv(kb.cf(1.0), kb.libm("sqrtf", kb.fadd(kb.load_f32(pv, ch)?, kb.cf(epsilon))?)?)?;
        let scale = kb.fmul(kb.load_f32(ps, ch)?, inv)?;
        let at = kb.lin(&[(idx[0], c * inner), (ch, inner), (idx[2], 1)], 0)?;
        let v = kb.fmul(kb.fsub(kb.load_f32(px, at)?, kb.load_f32(pm, ch)?)?, scale)?;
        kb.store_f32(py, at, kb.fadd(v, kb.load_f32(pb, ch)?)?)
    })
}

pub(crate) fn softmax<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, axis: i64, mode: SoftmaxMode) -> R<()> {
    n.require_f32()?;
    let x = n.in_dims(0);
    let a = normalize_axis(axis, x.len()).ok_or_else(|| n.unsupported(format!("axis {axis} out of range")))?;
    let outer: u64 = x[..a].iter().product();
    let len = x.get(a).copied().unwrap_or(1);
    let inner: u64 = x.get(a + 1..).map_or(1, |s| s.iter().product());
    let (px, py) = (kb.param(0), kb.param(1));
    let mx = kb.alloca_f32()?;
    let sum = kb.alloca_f32()?;
    let arg = kb.alloca(kb.i64t.into())?;
    kb.nest(&[outer, inner], |kb, idx| {
        let base = kb.lin(&[(idx[0], len * inner), (idx[1], 1)], 0)?;
        let at = |kb: &Kb<'_, 'ctx>, l: IntValue<'ctx>| kb.add(base, kb.mul(l, kb.c(inner))?);
        kb.set(mx, kb.cf(f32::NEG_INFINITY))?;
        kb.b.build_store(arg, kb.c(0))?;
        kb.for_n(len, |kb, l| {
            let v = kb.load_f32(px, at(kb, l)?)?;
            let m = kb.get(mx)?;
            let gt = kb.b.build_float_compare(FloatPredicate::OGT, v, m, "")?;
            kb.set(mx, kb.select_f(gt, v, m)?)?;
            let cur = kb.b.build_load(kb.i64t, arg, "")?.into_int_value();
            kb.b.build_store(arg, kb.select_i(gt, l, cur)?)?;
            Ok(())
        })?;
        if mode == SoftmaxMode::Hardmax {
            let best = kb.b.build_load(kb.i64t, arg, "")?.into_int_value();
            return kb.for_n(len, |kb, l| {
                let hit = kb.icmp(IntPredicate::EQ, l, best)?;
                kb.store_f32(py, at(kb, l)?, kb.select_f(hit, kb.cf(1.0), kb.cf(0.0))?)
            });
        }
        kb.set(sum, kb.cf(0.0))?;
        kb.for_n(len, |kb, l| {
            let i = at(kb, l)?;
            let e = kb.libm("expf", kb.fsub(kb.load_f32(px, i)?, kb.get(mx)?)?)?;
            if mode == SoftmaxMode::Softmax {
                kb.store_f32(py, i, e)?;
            }
            kb.set(sum, kb.fadd(kb.get(sum)?, e)?)
        })?;
        match mode {
            SoftmaxMode::Softmax => kb.for_n(len, |kb, l| {
                let i = at(kb, l)?;
                kb.store_f32(py, i, kb.fdiv(kb.load_f32(py, i)?, kb.get(sum)?)?)
            }),
            _ => {
                let shift = kb.fadd(kb.get(mx)?, kb.libm("logf", kb.get(sum)?)?)?;
                kb.for_n(len, |kb, l| {
                    let i = at(kb, l)?;
                    kb.store_f32(py, i, kb.fsub(kb.load_f32(px, i)?, shift)?)
                })
            }
        }
    })
}

/// Layer/RMS normalisation: per outer index, mean and variance (or mean square) of the
/// normalised elements are accumulated in f64, then each element is scaled.
pub(crate) fn layernorm<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &LayerNormalization) -> R<()> {
    n.require_f32()?;
    let (axis, epsilon, rms) = (op.axis, op.epsilon, op.rms);
    let stats = n.outputs.len() == 3;
    // With a skip operand, x + skip is written to y first and normalised from there.
    let params = if op.skip { n.inputs.len() - 1 } else { n.inputs.len() };
    let p_skip = op.skip.then(|| kb.param(n.inputs.len() - 1));
    let x = n.in_dims(0);
    let a = normalize_axis(axis, x.len()).ok_or_else(|| n.unsupported(format!("axis {axis} out of range")))?;
    let outer: u64 = x[..a].iter().product();
    let norm_dims = &x[a..];
    let inner: u64 = norm_dims.iter().product();
    let has_bias = params == 3;
    let contiguous = broadcast_strides(norm_dims, norm_dims);
    let ss = broadcast_strides(&n.in_dims(1), norm_dims);
    let bs = if has_bias { broadcast_strides(&n.in_dims(2), norm_dims) } else { contiguous.clone() };
    let (dims, st) = coalesce(norm_dims, &[contiguous, ss, bs]);
    let (px, ps) = (kb.param(0), kb.param(1));
    let pb = has_bias.then(|| kb.param(2));
    let py = kb.param(n.inputs.len());
    let src = if op.skip { py } else { px };
    let (p_mean, p_inv) =
        if stats { (Some(kb.param(n.inputs.len() + 1)), Some(kb.param(n.inputs.len() + 2))) } else { (None, None) };
    let f64t = kb.cx.f64_type();
    let sum = kb.alloca(f64t.into())?;
    let sq = kb.alloca(f64t.into())?;
    kb.for_n(outer, |kb, o| {
        let base = kb.mul(o, kb.c(inner))?;
        kb.b.build_store(sum, f64t.const_zero())?;
        kb.b.build_store(sq, f64t.const_zero())?;
        kb.for_n(inner, |kb, i| {
            let xi = kb.add(base, i)?;
            let mut x = kb.load_f32(px, xi)?;
            if let Some(pr) = p_skip {
                x = kb.fadd(x, kb.load_f32(pr, xi)?)?;
                kb.store_f32(py, xi, x)?;
            }
            let v = kb.b.build_float_ext(x, f64t, "")?;
            let s = kb.b.build_load(f64t, sum, "")?.into_float_value();
            kb.b.build_store(sum, kb.b.build_float_add(s, v, "")?)?;
            let q = kb.b.build_load(f64t, sq, "")?.into_float_value();
            kb.b.build_store(sq, kb.b.build_float_add(q, kb.b.build_float_mul(v, v, "")?, "")?)?;
            Ok(())
        })?;
        let cnt = f64t.const_float(inner as f64);
        let mean = kb.b.build_float_div(kb.b.build_load(f64t, sum, "")?.into_float_value(), cnt, "")?;
        let msq = kb.b.build_float_div(kb.b.build_load(f64t, sq, "")?.into_float_value(), cnt, "")?;
        let (center, var) = if rms {
            (f64t.const_zero(), msq)
        } else {
            (mean, kb.b.build_float_sub(msq, kb.b.build_float_mul(mean, mean, "")?, "")?)
        };
        let denom = kb.b.build_float_add(var, f64t.const_float(epsilon as f64), "")?;
        let sd = kb.call_math("sqrt", f64t, &[denom])?;
        let inv = kb.b.build_float_trunc(kb.b.build_float_div(f64t.const_float(1.0), sd, "")?, kb.f32t, "")?;
        let center = kb.b.build_float_trunc(center, kb.f32t, "")?;
        if let (Some(pm), Some(pi)) = (p_mean, p_inv) {
            kb.store_f32(pm, o, center)?;
            kb.store_f32(pi, o, inv)?;
        }
        kb.nest(&dims, |kb, idx| {
            let off = |s: &[u64]| kb.lin(&idx.iter().copied().zip(s.iter().copied()).collect::<Vec<_>>(), 0);
            let xi = kb.add(base, off(&st[0])?)?;
            let v = kb.fmul(kb.fsub(kb.load_f32(src, xi)?, center)?, inv)?;
            let mut y = kb.fmul(v, kb.load_f32(ps, off(&st[1])?)?)?;
            if let Some(pb) = pb {
                y = kb.fadd(y, kb.load_f32(pb, off(&st[2])?)?)?;
            }
            kb.store_f32(py, xi, y)
        })
    })
}
