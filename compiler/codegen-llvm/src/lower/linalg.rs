//! MatMul and Gemm as plain loop nests (i-k-j order so the inner loop is contiguous and
//! vectorises; a dot-product order when B is transposed). Fast packed kernels come later.
use super::elementwise::{activation, broadcast_strides, compute_dtype, convert, llvm_type, widen};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::{Activation, Attention, Gemm};
use dlc_ir::DType;
use inkwell::values::{FloatValue, IntValue, PointerValue, VectorValue};

/// A MatMul's shape: numpy's promotion of 1-D operands and broadcasting of the batch
/// dims; the operands' strides per batch dim (0 where broadcast), in elements.
pub(crate) struct MatMulShape {
    pub m: u64,
    pub k: u64,
    pub n: u64,
    pub batch: Vec<u64>,
    pub a_strides: Vec<u64>,
    pub b_strides: Vec<u64>,
}

impl MatMulShape {
    pub(crate) fn of(n: &NodeInfo) -> MatMulShape {
        let (mut a, mut b) = (n.in_dims(0), n.in_dims(1));
        if a.len() == 1 {
            a.insert(0, 1);
        }
        if b.len() == 1 {
            b.push(1);
        }
        let (m, k, nn) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
        let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
        let rank = ba.len().max(bb.len());
        let mut batch = vec![1u64; rank];
        for (i, d) in batch.iter_mut().enumerate() {
            let x = if i + ba.len() >= rank { ba[i + ba.len() - rank] } else { 1 };
            let y = if i + bb.len() >= rank { bb[i + bb.len() - rank] } else { 1 };
            *d = x.max(y);
        }
        let a_strides = broadcast_strides(ba, &batch).iter().map(|s| s * m * k).collect();
        let b_strides = broadcast_strides(bb, &batch).iter().map(|s| s * k * nn).collect();
        MatMulShape { m, k, n: nn, batch, a_strides, b_strides }
    }
}

pub(crate) fn matmul(kb: &Kb, n: &NodeInfo, act: Activation) -> R<()> {
    n.require_f32()?;
    let MatMulShape { m, k, n: nn, batch, a_strides: sa, b_strides: sb } = MatMulShape::of(n);
    let sy: Vec<u64> = broadcast_strides(&batch, &batch).iter().map(|s| s * m * nn).collect();
    let (pa, pb) = (kb.param(0), kb.param(1));
    let bias = (n.inputs.len() == 3).then(|| kb.param(2));
    let py = kb.param(n.inputs.len());
    kb.nest(&batch, |kb, idx| {
        let off = |s: &[u64]| kb.lin(&idx.iter().copied().zip(s.iter().copied()).collect::<Vec<_>>(), 0);
        let (oa, ob, oy) = (off(&sa)?, off(&sb)?, off(&sy)?);
        kb.for_n(m, |kb, i| {
            let row_y = kb.add(oy, kb.mul(i, kb.c(nn))?)?;
            kb.for_n(nn, |kb, j| kb.store_f32(py, kb.add(row_y, j)?, kb.cf(0.0)))?;
            kb.for_n(k, |kb, p| {
                let av = kb.load_f32(pa, kb.add(oa, kb.lin(&[(i, k), (p, 1)], 0)?)?)?;
                let row_b = kb.add(ob, kb.mul(p, kb.c(nn))?)?;
                kb.for_n(nn, |kb, j| {
                    let yi = kb.add(row_y, j)?;
                    let acc = kb.load_f32(py, yi)?;
                    let bv = kb.load_f32(pb, kb.add(row_b, j)?)?;
                    kb.store_f32(py, yi, kb.fadd(acc, kb.fmul(av, bv)?)?)
                })
            })?;
            // Epilogue on the finished row: bias, then activation.
            if bias.is_none() && act == Activation::None {
                return Ok(());
            }
            kb.for_n(nn, |kb, j| {
                let yi = kb.add(row_y, j)?;
                let mut y = kb.load_f32(py, yi)?;
                if let Some(pbias) = bias {
                    y = kb.fadd(y, kb.load_f32(pbias, j)?)?;
                }
                kb.store_f32(py, yi, activation(kb, act, y)?)
            })
        })
    })
}

pub(crate) fn gemm<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &Gemm) -> R<()> {
    n.require_f32()?;
    let out = n.out_dims(0);
    let (m, nn) = (out[0], out[1]);
    let a = n.in_dims(0);
    let k = if op.trans_a { a[0] } else { a[1] };
    // Element offsets of op(A)[i, p] and op(B)[p, j].
    let (a_i, a_p) = if op.trans_a { (1, m) } else { (k, 1) };
    let (b_p, b_j) = if op.trans_b { (1, k) } else { (nn, 1) };
    let (pa, pb) = (kb.param(0), kb.param(1));
    let has_c = n.inputs.len() == 3;
    let (pc, py) = if has_c { (Some(kb.param(2)), kb.param(3)) } else { (None, kb.param(2)) };
    let c_strides = has_c.then(|| broadcast_strides(&n.in_dims(2), &out));
    let epilogue = |kb: &Kb<'_, 'ctx>, i: IntValue<'ctx>, j: IntValue<'ctx>, acc: FloatValue<'ctx>| -> R<()> {
        let mut y = if op.alpha == 1.0 { acc } else { kb.fmul(kb.cf(op.alpha), acc)? };
        if let (Some(pc), Some(cs)) = (pc, &c_strides) {
            let c = kb.load_f32(pc, kb.lin(&[(i, cs[0]), (j, cs[1])], 0)?)?;
            let c = if op.beta == 1.0 { c } else { kb.fmul(kb.cf(op.beta), c)? };
            y = kb.fadd(y, c)?;
        }
        kb.store_f32(py, kb.lin(&[(i, nn), (j, 1)], 0)?, activation(kb, op.act, y)?)
    };
    kb.for_n(m, |kb, i| {
        if op.trans_b {
            // Dot products: op(B) rows are contiguous in memory.
            kb.for_n(nn, |kb, j| {
                let acc_ptr = kb.alloca_f32()?;
                kb.set(acc_ptr, kb.cf(0.0))?;
                kb.for_n(k, |kb, p| {
                    let av = kb.load_f32(pa, kb.lin(&[(i, a_i), (p, a_p)], 0)?)?;
                    let bv = kb.load_f32(pb, kb.lin(&[(p, b_p), (j, b_j)], 0)?)?;
                    let acc = kb.get(acc_ptr)?;
                    kb.set(acc_ptr, kb.fadd(acc, kb.fmul(av, bv)?)?)
                })?;
                let acc = kb.get(acc_ptr)?;
                epilogue(kb, i, j, acc)
            })
        } else {
            let row = kb.mul(i, kb.c(nn))?;
            kb.for_n(nn, |kb, j| kb.store_f32(py, kb.add(row, j)?, kb.cf(0.0)))?;
            kb.for_n(k, |kb, p| {
                let av = kb.load_f32(pa, kb.lin(&[(i, a_i), (p, a_p)], 0)?)?;
                kb.for_n(nn, |kb, j| {
                    let yi = kb.add(row, j)?;
                    let bv = kb.load_f32(pb, kb.lin(&[(p, b_p), (j, b_j)], 0)?)?;
                    let acc = kb.load_f32(py, yi)?;
                    kb.store_f32(py, yi, kb.fadd(acc, kb.fmul(av, bv)?)?)
                })
            })?;
            kb.for_n(nn, |kb, j| {
                let acc = kb.load_f32(py, kb.add(row, j)?)?;
                epilogue(kb, i, j, acc)
            })
        }
    })
}

/// Einsum as one loop nest: output indices outside, summed indices inside, the product
/// of the operands' elements accumulated in f64.
pub(crate) fn einsum<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, equation: &str) -> R<()> {
    let dt = n.outputs[0].dtype;
    if !matches!(dt, DType::F32 | DType::F64) {
        return Err(n.unsupported(format!("dtype {dt} is not supported yet (f32 and f64)")));
    }
    let ty = llvm_type(kb, dt).expect("float type");
    let dims: Vec<Vec<u64>> = (0..n.inputs.len()).map(|i| n.in_dims(i)).collect();
    let ranks: Vec<usize> = dims.iter().map(Vec::len).collect();
    let (ins, out) = dlc_ir::ops::parse_einsum(equation, &ranks).map_err(|m| n.unsupported(m))?;
    let ext = dlc_ir::ops::einsum_extents(&ins, &dims).map_err(|m| n.unsupported(m))?;
    let summed: Vec<char> = ext.keys().copied().filter(|c| !out.contains(c)).collect();
    let order: Vec<char> = out.iter().chain(&summed).copied().collect();
    // Per operand, its element stride for every letter in `order` (0 where absent or broadcast).
    let strides: Vec<Vec<u64>> = ins
        .iter()
        .zip(&dims)
        .map(|(letters, d)| {
            let st = broadcast_strides(d, d);
            order
                .iter()
                .map(|c| letters.iter().zip(d).zip(&st).filter(|((l, &e), _)| *l == c && e != 1).map(|(_, &s)| s).sum())
                .collect()
        })
        .collect();
    let out_ext: Vec<u64> = out.iter().map(|c| ext[c]).collect();
    let sum_ext: Vec<u64> = summed.iter().map(|c| ext[c]).collect();
    let out_st = broadcast_strides(&out_ext, &out_ext);
    let f64t = kb.cx.f64_type();
    let acc = kb.alloca(f64t.into())?;
    let py = kb.param(n.inputs.len());
    kb.nest(&out_ext, |kb, oi| {
        kb.b.build_store(acc, f64t.const_zero())?;
        kb.nest(&sum_ext, |kb, si| {
            let idx: Vec<_> = oi.iter().chain(si).copied().collect();
            let mut prod = f64t.const_float(1.0);
            for (k, st) in strides.iter().enumerate() {
                let off = kb.lin(&idx.iter().copied().zip(st.iter().copied()).collect::<Vec<_>>(), 0)?;
                let raw = kb.b.build_load(ty, kb.gep(ty, kb.param(k), off)?, "")?;
                let v = convert(kb, raw, dt, dlc_ir::DType::F64)?.into_float_value();
                prod = kb.b.build_float_mul(prod, v, "")?;
            }
            let a = kb.b.build_load(f64t, acc, "")?.into_float_value();
            kb.b.build_store(acc, kb.b.build_float_add(a, prod, "")?)?;
            Ok(())
        })?;
        let a = kb.b.build_load(f64t, acc, "")?.into_float_value();
        let o = kb.lin(&oi.iter().copied().zip(out_st.iter().copied()).collect::<Vec<_>>(), 0)?;
        let y = convert(kb, a.into(), dlc_ir::DType::F64, dt)?;
        kb.b.build_store(kb.gep(ty, py, o)?, y)?;
        Ok(())
    })
}

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
            let e = crate::fastmath::exp(kb, kb.b.build_float_sub(x, ms, "")?)?;
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
