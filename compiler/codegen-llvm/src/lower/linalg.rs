//! Attention (packed heads, masks): one score row on the stack per query. (The plain
//! MatMul, Gemm and Einsum loop nests are lowered through kir: dlc-lower's
//! `linalg.rs`.)
use super::elementwise::{broadcast_strides, compute_dtype, convert, llvm_type, widen};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::Attention;
use dlc_ir::DType;
use inkwell::values::{FloatValue, IntValue, PointerValue, VectorValue};

/// `[batch, heads, query length, key length, head size, value head size]` of an f32
/// Attention node.
pub(crate) fn attention_dims(n: &NodeInfo, op: &Attention) -> R<[u64; 6]> {
    for t in n.inputs[..3].iter().chain(n.outputs) {
        if t.dtype != DType::F32 {
            return Err(n.unsupported(format!("dtype {} is not supported yet (f32 only)", t.dtype)));
        }
    }
    let (q, k, v) = (n.in_dims(0), n.in_dims(1), n.in_dims(2));
    let h = op.heads as u64;
    Ok([q[0], h, q[1], k[1], q[2] / h, v[2] / h])
}

/// Attention, one query row at a time: scores into a stack row of `Sk` floats (with the
/// running max), exponentials and their sum, then the weighted sum of value rows.
pub(crate) fn attention<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &Attention) -> R<()> {
    let [b, h, sq, sk, d, dv] = attention_dims(n, op)?;
    if sk > 1 << 14 {
        return Err(n.unsupported(format!("key length {sk} is above 16384 (the score row lives on the stack)")));
    }
    let mask_info = n.inputs.get(3).map(|t| (t.dtype, t.shape.as_fixed().unwrap_or_default()));
    let w = super::gemm::vector_width(n.target) as u64;
    if d % w == 0 && dv % w == 0 && d / w <= 8 && dv / w <= 16 {
        return attention_vec(kb, op, AttnDims { b, h, sq, sk, d, dv, w }, mask_info);
    }
    let (pq, pk, pv) = (kb.param(0), kb.param(1), kb.param(2));
    let mask = mask_info.map(|(dt, dims)| (kb.param(3), dt, dims));
    let py = kb.param(n.inputs.len());
    let row_ty = kb.f32t.array_type(sk as u32);
    let row = kb.alloca(row_ty.into())?;
    let (mx, sum) = (kb.alloca_f32()?, kb.alloca_f32()?);
    let at = |j: IntValue<'ctx>| kb.gep(kb.f32t.into(), row, j);
    kb.nest(&[b, h, sq], |kb, idx| {
        let (bi, hi, i) = (idx[0], idx[1], idx[2]);
        let q_row = kb.lin(&[(bi, sq * h * d), (i, h * d), (hi, d)], 0)?;
        kb.set(mx, kb.cf(f32::NEG_INFINITY))?;
        kb.for_n(sk, |kb, j| {
            let k_row = kb.lin(&[(bi, sk * h * d), (j, h * d), (hi, d)], 0)?;
            let acc = kb.alloca_f32()?;
            kb.set(acc, kb.cf(0.0))?;
            kb.for_n(d, |kb, e| {
                let qv = kb.load_f32(pq, kb.add(q_row, e)?)?;
                let kv = kb.load_f32(pk, kb.add(k_row, e)?)?;
                kb.set(acc, kb.fadd(kb.get(acc)?, kb.fmul(qv, kv)?)?)
            })?;
            let mut s = kb.fmul(kb.get(acc)?, kb.cf(op.scale))?;
            if let Some(m) = &mask {
                s = kb.fadd(s, mask_term(kb, op, m, [b, h, sq, sk], [bi, hi, i, j])?)?;
            }
            kb.b.build_store(at(j)?, s)?;
            kb.set(mx, kb.fmax(kb.get(mx)?, s)?)
        })?;
        kb.set(sum, kb.cf(0.0))?;
        exp_shift_sum(kb, row, kb.get(mx)?, sum, kb.c(0), kb.c(sk))?;
        let inv = kb.fdiv(kb.cf(1.0), kb.get(sum)?)?;
        let y_row = kb.lin(&[(bi, sq * h * dv), (i, h * dv), (hi, dv)], 0)?;
        kb.for_n(dv, |kb, e| kb.store_f32(py, kb.add(y_row, e)?, kb.cf(0.0)))?;
        kb.for_n(sk, |kb, j| {
            let p = kb.fmul(kb.b.build_load(kb.f32t, at(j)?, "")?.into_float_value(), inv)?;
            let v_row = kb.lin(&[(bi, sk * h * dv), (j, h * dv), (hi, dv)], 0)?;
            kb.for_n(dv, |kb, e| {
                let yi = kb.add(y_row, e)?;
                let vv = kb.load_f32(pv, kb.add(v_row, e)?)?;
                kb.store_f32(py, yi, kb.fadd(kb.load_f32(py, yi)?, kb.fmul(p, vv)?)?)
            })
        })
    })
}

/// The mask's additive term for score `[bi, hi, i, j]` (see [`Attention`]): a float mask
/// broadcast to `full`, or `(1 - mask[bi, j]) * padding_fill` for a key-padding mask.
pub(crate) fn mask_term<'ctx>(
    kb: &Kb<'_, 'ctx>,
    op: &Attention,
    (pm, mdt, mdims): &(PointerValue<'ctx>, DType, Vec<u64>),
    full: [u64; 4],
    [bi, hi, i, j]: [IntValue<'ctx>; 4],
) -> R<FloatValue<'ctx>> {
    if op.key_padding {
        let ty = llvm_type(kb, *mdt).expect("numeric");
        let raw = kb.b.build_load(ty, kb.gep(ty, *pm, kb.lin(&[(bi, full[3]), (j, 1)], 0)?)?, "")?;
        let mf = convert(kb, widen(kb, raw, *mdt)?, compute_dtype(*mdt), DType::F32)?.into_float_value();
        kb.fmul(kb.fsub(kb.cf(1.0), mf)?, kb.cf(op.padding_fill))
    } else {
        let st = broadcast_strides(mdims, &full);
        kb.load_f32(*pm, kb.lin(&[(bi, st[0]), (hi, st[1]), (i, st[2]), (j, st[3])], 0)?)
    }
}

struct AttnDims {
    b: u64,
    h: u64,
    sq: u64,
    sk: u64,
    d: u64,
    dv: u64,
    w: u64,
}

/// The mask operand's dtype and dims (operand 3), when there is one.
type MaskArg = Option<(DType, Vec<u64>)>;

/// The attention kernel with vectors of `w` lanes along the head dims: q's row held in
/// registers, each score a vector dot product summed by halving, the output row
/// accumulated with FMA over the value rows.
fn attention_vec<'ctx>(kb: &Kb<'_, 'ctx>, op: &Attention, t: AttnDims, mask: MaskArg) -> R<()> {
    use super::gemm::{hsum, load_vec, par, splat, store_vec, vfma};
    let AttnDims { b, h, sq, sk, d, dv, w } = t;
    let vt = kb.f32t.vec_type(w as u32);
    let flops = 2 * b * h * sq * sk * (d + dv);
    // One task per query row; its score row and accumulators live on the task's stack.
    par(kb, b * h * sq, flops, |kb, task| {
        let (pq, pk, pv) = (kb.param(0), kb.param(1), kb.param(2));
        let py = kb.param(if mask.is_some() { 4 } else { 3 });
        let pm = mask.as_ref().map(|(dt, dims)| (kb.param(3), *dt, dims.clone()));
        let row = kb.alloca(kb.f32t.array_type(sk as u32).into())?;
        let (mx, sum) = (kb.alloca_f32()?, kb.alloca_f32()?);
        let at = |j: IntValue<'ctx>| kb.gep(kb.f32t.into(), row, j);
        let accs: Vec<PointerValue<'ctx>> = (0..dv / w).map(|_| kb.alloca(vt.into())).collect::<R<_>>()?;
        let bi = kb.b.build_int_unsigned_div(task, kb.c(h * sq), "")?;
        let hi = kb.b.build_int_unsigned_rem(kb.b.build_int_unsigned_div(task, kb.c(sq), "")?, kb.c(h), "")?;
        let i = kb.b.build_int_unsigned_rem(task, kb.c(sq), "")?;
        let q_row = kb.lin(&[(bi, sq * h * d), (i, h * d), (hi, d)], 0)?;
        let qs: Vec<VectorValue<'ctx>> =
            (0..d / w).map(|c| load_vec(kb, vt, pq, kb.add(q_row, kb.c(c * w))?)).collect::<R<_>>()?;
        kb.set(mx, kb.cf(f32::NEG_INFINITY))?;
        kb.for_n(sk, |kb, j| {
            let k_row = kb.lin(&[(bi, sk * h * d), (j, h * d), (hi, d)], 0)?;
            let mut acc = vt.const_zero();
            for (c, q) in qs.iter().enumerate() {
                let kv = load_vec(kb, vt, pk, kb.add(k_row, kb.c(c as u64 * w))?)?;
                acc = vfma(kb, *q, kv, acc)?;
            }
            let mut s = kb.fmul(hsum(kb, acc)?, kb.cf(op.scale))?;
            if let Some(m) = &pm {
                s = kb.fadd(s, mask_term(kb, op, m, [b, h, sq, sk], [bi, hi, i, j])?)?;
            }
            kb.b.build_store(at(j)?, s)?;
            kb.set(mx, kb.fmax(kb.get(mx)?, s)?)
        })?;
        // Exponentials: whole vectors with the fast exp, a scalar tail with expf.
        let m = kb.get(mx)?;
        let ms = splat(kb, vt, m)?;
        let vsum = kb.alloca(vt.into())?;
        kb.b.build_store(vsum, vt.const_zero())?;
        kb.for_n(sk / w, |kb, c| {
            let j = kb.mul(c, kb.c(w))?;
            let x = load_vec(kb, vt, row, j)?;
            let d = kb.b.build_float_sub(x, ms, "")?;
            let ty = dlc_kir::Ty::vec(dlc_kir::Elem::F32, w as u32);
            let e = crate::kir::inline(kb, &[(d.into(), ty)], |b, a| dlc_lower::fastmath::exp(b, a[0], w as u32))?
                .into_vector_value();
            store_vec(kb, vt, row, j, e)?;
            let acc = kb.b.build_load(vt, vsum, "")?.into_vector_value();
            kb.b.build_store(vsum, kb.b.build_float_add(acc, e, "")?)?;
            Ok(())
        })?;
        kb.set(sum, hsum(kb, kb.b.build_load(vt, vsum, "")?.into_vector_value())?)?;
        exp_shift_sum(kb, row, m, sum, kb.c(sk / w * w), kb.c(sk))?;
        let inv = kb.fdiv(kb.cf(1.0), kb.get(sum)?)?;
        for a in &accs {
            kb.b.build_store(*a, vt.const_zero())?;
        }
        kb.for_n(sk, |kb, j| {
            let p = kb.fmul(kb.b.build_load(kb.f32t, at(j)?, "")?.into_float_value(), inv)?;
            let ps = splat(kb, vt, p)?;
            let v_row = kb.lin(&[(bi, sk * h * dv), (j, h * dv), (hi, dv)], 0)?;
            for (c, a) in accs.iter().enumerate() {
                let vv = load_vec(kb, vt, pv, kb.add(v_row, kb.c(c as u64 * w))?)?;
                let cur = kb.b.build_load(vt, *a, "")?.into_vector_value();
                kb.b.build_store(*a, vfma(kb, ps, vv, cur)?)?;
            }
            Ok(())
        })?;
        let y_row = kb.lin(&[(bi, sq * h * dv), (i, h * dv), (hi, dv)], 0)?;
        for (c, a) in accs.iter().enumerate() {
            let v = kb.b.build_load(vt, *a, "")?.into_vector_value();
            store_vec(kb, vt, py, kb.add(y_row, kb.c(c as u64 * w))?, v)?;
        }
        Ok(())
    })
}

/// `row[j] = expf(row[j] - m)` for `j` in `lo..hi` (a softmax row's exponentials with
/// the C library's exp), each added to the f32 slot `sum`.
fn exp_shift_sum<'ctx>(
    kb: &Kb<'_, 'ctx>,
    row: PointerValue<'ctx>,
    m: FloatValue<'ctx>,
    sum: PointerValue<'ctx>,
    lo: IntValue<'ctx>,
    hi: IntValue<'ctx>,
) -> R<()> {
    kb.for_range(lo, hi, |kb, j| {
        let p = kb.gep(kb.f32t.into(), row, j)?;
        let e = kb.libm("expf", kb.fsub(kb.b.build_load(kb.f32t, p, "")?.into_float_value(), m)?)?;
        kb.b.build_store(p, e)?;
        kb.set(sum, kb.fadd(kb.get(sum)?, e)?)
    })
}
