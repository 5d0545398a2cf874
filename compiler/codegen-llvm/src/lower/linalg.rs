//! MatMul and Gemm as plain loop nests (i-k-j order so the inner loop is contiguous and
//! vectorises; a dot-product order when B is transposed). Fast packed kernels come later.
use super::elementwise::{activation, broadcast_strides};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::{Activation, Gemm};
use inkwell::values::{FloatValue, IntValue};

pub(crate) fn matmul(kb: &Kb, n: &NodeInfo, act: Activation) -> R<()> {
    n.require_f32()?;
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
    let sa: Vec<u64> = broadcast_strides(ba, &batch).iter().map(|s| s * m * k).collect();
    let sb: Vec<u64> = broadcast_strides(bb, &batch).iter().map(|s| s * k * nn).collect();
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
    use super::elementwise::{convert, llvm_type};
    let dt = n.outputs[0].dtype;
    if !matches!(dt, dlc_ir::DType::F32 | dlc_ir::DType::F64) {
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
