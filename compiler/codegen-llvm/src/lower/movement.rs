//! Data movement for any dtype: copies and concatenation move whole elements as integers
//! of the element's width (transpose and slice are lowered through kir: dlc-lower).
use super::elementwise::{broadcast_strides, nest, Drive};
use super::NodeInfo;
use crate::kernel::{Kb, R};

/// Reshape, Flatten, Identity: the bytes are unchanged.
pub(crate) fn copy(kb: &Kb, n: &NodeInfo) -> R<()> {
    let bytes = n.outputs[0].size_bytes().expect("fixed");
    kb.memcpy(kb.param(1), kb.param(0), kb.c(bytes))
}

pub(crate) fn concat(kb: &Kb, n: &NodeInfo, axis: i64) -> R<()> {
    let out = n.out_dims(0);
    let a = dlc_ir::ops::normalize_axis(axis, out.len()).ok_or_else(|| n.unsupported("axis out of range"))?;
    let es = n.outputs[0].dtype.size() as u64;
    let outer: u64 = out[..a].iter().product();
    let out_block = out[a..].iter().product::<u64>() * es;
    let py = kb.param(n.inputs.len());
    let mut offset = 0;
    for i in 0..n.inputs.len() {
        let block = n.in_dims(i)[a..].iter().product::<u64>() * es;
        if block > 0 {
            let px = kb.param(i);
            kb.for_n(outer, |kb, o| {
                let dst = kb.byte_offset(py, kb.lin(&[(o, out_block)], offset)?)?;
                let src = kb.byte_offset(px, kb.lin(&[(o, block)], 0)?)?;
                kb.memcpy(dst, src, kb.c(block))
            })?;
        }
        offset += block;
    }
    Ok(())
}

/// Gather: one block copy per (outer index, gathered index); indices are wrapped when
/// negative and clamped into range, so bad indices never read outside `data`.
pub(crate) fn gather(kb: &Kb, n: &NodeInfo, axis: i64) -> R<()> {
    let Some(geo) = GatherGeometry::of(n, axis)? else { return Ok(()) };
    kb.nest(&[geo.outer, geo.count], |kb, ij| gather_at(kb, n, &geo, ij[0], ij[1]))
}

/// Gather as `[outer, extent, block]` rows picked by `count` indices.
pub(crate) struct GatherGeometry {
    /// Product of the dims before the axis.
    pub outer: u64,
    /// Number of indices.
    pub count: u64,
    /// Bytes of one row (the dims after the axis).
    pub block: u64,
    /// Extent of the gathered axis.
    pub extent: u64,
}

impl GatherGeometry {
    /// `None` when there is nothing to copy.
    pub(crate) fn of(n: &NodeInfo, axis: i64) -> R<Option<GatherGeometry>> {
        let d = n.in_dims(0);
        let a = dlc_ir::ops::normalize_axis(axis, d.len()).ok_or_else(|| n.unsupported("axis out of range"))?;
        let es = n.inputs[0].dtype.size() as u64;
        let geo = GatherGeometry {
            outer: d[..a].iter().product(),
            count: n.in_dims(1).iter().product(),
            block: d[a + 1..].iter().product::<u64>() * es,
            extent: d[a],
        };
        Ok((geo.extent != 0 && geo.block != 0).then_some(geo))
    }
}

/// Copies row `j` of outer slice `o` (index `j` of the indices, clamped to the axis).
pub(crate) fn gather_at<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    geo: &GatherGeometry,
    o: inkwell::values::IntValue<'ctx>,
    j: inkwell::values::IntValue<'ctx>,
) -> R<()> {
    let (pd, pi, py) = (kb.param(0), kb.param(1), kb.param(2));
    let k = load_index(kb, n, pi, j, geo.extent)?;
    let src = kb.byte_offset(pd, kb.mul(kb.lin(&[(o, geo.extent), (k, 1)], 0)?, kb.c(geo.block))?)?;
    let dst = kb.byte_offset(py, kb.mul(kb.lin(&[(o, geo.count), (j, 1)], 0)?, kb.c(geo.block))?)?;
    kb.memcpy(dst, src, kb.c(geo.block))
}

pub(crate) fn elem_int_type<'ctx>(kb: &Kb<'_, 'ctx>, size: usize) -> inkwell::types::IntType<'ctx> {
    match size {
        1 => kb.cx.i8_type(),
        2 => kb.cx.i16_type(),
        4 => kb.cx.i32_type(),
        _ => kb.i64t,
    }
}

/// Trilu: copies the kept triangle and writes zeros elsewhere.
pub(crate) fn trilu(kb: &Kb, n: &NodeInfo, upper: bool) -> R<()> {
    trilu_with(kb, n, upper, &nest)
}

/// [`trilu`], one output element per iteration of `drive`.
pub(crate) fn trilu_with<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, upper: bool, drive: Drive<'_, 'ctx>) -> R<()> {
    let x = n.in_dims(0);
    let r = x.len();
    let (rows, cols) = (x[r - 2], x[r - 1]);
    let batch: u64 = x[..r - 2].iter().product();
    let ty = elem_int_type(kb, n.outputs[0].dtype.size());
    let has_k = n.inputs.len() == 2;
    let px = kb.param(0);
    let py = kb.param(if has_k { 2 } else { 1 });
    let k = if has_k { kb.b.build_load(kb.i64t, kb.param(1), "")?.into_int_value() } else { kb.c(0) };
    drive(kb, &[batch, rows, cols], &|kb, idx| {
        let at = kb.lin(&[(idx[0], rows * cols), (idx[1], cols), (idx[2], 1)], 0)?;
        let diff = kb.sub(idx[2], idx[1])?;
        let p = if upper { inkwell::IntPredicate::SGE } else { inkwell::IntPredicate::SLE };
        let keep = kb.icmp(p, diff, k)?;
        let v = kb.b.build_load(ty, kb.gep(ty.into(), px, at)?, "")?.into_int_value();
        let y = kb.select_i(keep, v, ty.const_zero())?;
        kb.b.build_store(kb.gep(ty.into(), py, at)?, y)?;
        Ok(())
    })
}

/// GatherElements: every output position reads the data element its index names along
/// the axis (wrapped when negative, clamped into range).
pub(crate) fn gather_elements(kb: &Kb, n: &NodeInfo, axis: i64) -> R<()> {
    gather_elements_with(kb, n, axis, &nest)
}

/// [`gather_elements`], one output element per iteration of `drive`.
pub(crate) fn gather_elements_with<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, axis: i64, drive: Drive<'_, 'ctx>) -> R<()> {
    let d = n.in_dims(0);
    let out = n.in_dims(1);
    let a = dlc_ir::ops::normalize_axis(axis, d.len()).ok_or_else(|| n.unsupported("axis out of range"))?;
    if out.contains(&0) || d[a] == 0 {
        return Ok(());
    }
    let ty = elem_int_type(kb, n.outputs[0].dtype.size());
    let ds = broadcast_strides(&d, &d);
    let os = broadcast_strides(&out, &out);
    let extent = d[a];
    let (pd, pi, py) = (kb.param(0), kb.param(1), kb.param(2));
    drive(kb, &out, &|kb, idx| {
        let o = kb.lin(&idx.iter().copied().zip(os.iter().copied()).collect::<Vec<_>>(), 0)?;
        let k = load_index(kb, n, pi, o, extent)?;
        let mut terms: Vec<_> = idx.iter().copied().zip(ds.iter().copied()).collect();
        terms[a].0 = k;
        let src = kb.lin(&terms, 0)?;
        let v = kb.b.build_load(ty, kb.gep(ty.into(), pd, src)?, "")?;
        kb.b.build_store(kb.gep(ty.into(), py, o)?, v)?;
        Ok(())
    })
}

/// Pad: each output position maps per dim to a source index (or to the constant).
pub(crate) fn pad(kb: &Kb, n: &NodeInfo, op: &dlc_ir::ops::Pad) -> R<()> {
    pad_with(kb, n, op, &nest)
}

/// [`pad`], one output element per iteration of `drive`.
pub(crate) fn pad_with<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &dlc_ir::ops::Pad, drive: Drive<'_, 'ctx>) -> R<()> {
    use dlc_ir::ops::PadMode;
    use inkwell::IntPredicate::*;
    let x = n.in_dims(0);
    let out = n.out_dims(0);
    if out.contains(&0) {
        return Ok(());
    }
    let dt = n.outputs[0].dtype;
    let ty = super::elementwise::llvm_type(kb, dt)
        .ok_or_else(|| n.unsupported(format!("dtype {dt} is not supported yet")))?;
    let fill: inkwell::values::BasicValueEnum = match dt {
        dlc_ir::DType::F32 => kb.f32t.const_float(op.value).into(),
        dlc_ir::DType::F64 => kb.cx.f64_type().const_float(op.value).into(),
        dlc_ir::DType::F16 => kb.cx.f16_type().const_float(op.value).into(),
        dlc_ir::DType::BF16 => kb.cx.i16_type().const_int(((op.value as f32).to_bits() >> 16) as u64, false).into(),
        _ => ty.into_int_type().const_int(op.value as i64 as u64, true).into(),
    };
    let r = x.len();
    let xs = broadcast_strides(&x, &x);
    let os = broadcast_strides(&out, &out);
    let (px, py) = (kb.param(0), kb.param(1));
    drive(kb, &out, &|kb, idx| {
        let mut src = kb.c(0);
        let mut inside = kb.cx.bool_type().const_all_ones();
        for d in 0..r {
            let extent = x[d] as i64;
            let i = kb.sub(idx[d], kb.i64t.const_int(op.pads[d] as u64, true))?;
            let ok = kb.in_bounds(i, x[d])?;
            let j = match op.mode {
                PadMode::Constant => {
                    inside = kb.and(inside, ok)?;
                    kb.select_i(ok, i, kb.c(0))?
                }
                PadMode::Edge => {
                    let lo = kb.select_i(kb.icmp(SLT, i, kb.c(0))?, kb.c(0), i)?;
                    kb.select_i(kb.icmp(SGE, lo, kb.c(x[d]))?, kb.c(x[d] - 1), lo)?
                }
                PadMode::Wrap => {
                    let m = kb.b.build_int_signed_rem(i, kb.c(x[d]), "")?;
                    kb.select_i(kb.icmp(SLT, m, kb.c(0))?, kb.add(m, kb.c(x[d]))?, m)?
                }
                PadMode::Reflect if extent == 1 => kb.c(0),
                PadMode::Reflect => {
                    let p = 2 * (extent - 1);
                    let m = kb.b.build_int_signed_rem(i, kb.i64t.const_int(p as u64, true), "")?;
                    let m = kb.select_i(kb.icmp(SLT, m, kb.c(0))?, kb.add(m, kb.c(p as u64))?, m)?;
                    kb.select_i(kb.icmp(SLT, m, kb.c(x[d]))?, m, kb.sub(kb.c(p as u64), m)?)?
                }
            };
            src = kb.add(src, kb.mul(j, kb.c(xs[d]))?)?;
        }
        let v = kb.b.build_load(ty, kb.gep(ty, px, src)?, "")?;
        let v = kb.b.build_select(inside, v, fill, "")?;
        let o = kb.lin(&idx.iter().copied().zip(os.iter().copied()).collect::<Vec<_>>(), 0)?;
        kb.b.build_store(kb.gep(ty, py, o)?, v)?;
        Ok(())
    })
}

/// Combines an existing element with an update by `r` (f32 for arithmetic reductions).
fn combine<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    r: dlc_ir::ops::ScatterReduction,
    ty: inkwell::types::BasicTypeEnum<'ctx>,
    dst: inkwell::values::PointerValue<'ctx>,
    upd: inkwell::values::BasicValueEnum<'ctx>,
) -> R<()> {
    use dlc_ir::ops::ScatterReduction as S;
    let v = match r {
        S::None => upd,
        _ if n.outputs[0].dtype != dlc_ir::DType::F32 => {
            return Err(n.unsupported(format!("reduction {r:?} on {} is not supported yet", n.outputs[0].dtype)));
        }
        _ => {
            let old = kb.b.build_load(ty, dst, "")?.into_float_value();
            let u = upd.into_float_value();
            match r {
                S::Add => kb.fadd(old, u)?.into(),
                S::Mul => kb.fmul(old, u)?.into(),
                S::Max => kb.fmax(old, u)?.into(),
                _ => {
                    let gt = kb.b.build_float_compare(inkwell::FloatPredicate::OGT, old, u, "")?;
                    kb.select_f(gt, u, old)?.into()
                }
            }
        }
    };
    kb.b.build_store(dst, v)?;
    Ok(())
}

/// Starts a scatter: copies `data` into the output and returns the element type and the
/// indices, updates and output pointers.
fn scatter_start<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
) -> R<(
    inkwell::types::BasicTypeEnum<'ctx>,
    inkwell::values::PointerValue<'ctx>,
    inkwell::values::PointerValue<'ctx>,
    inkwell::values::PointerValue<'ctx>,
)> {
    let dt = n.outputs[0].dtype;
    let ty = super::elementwise::llvm_type(kb, dt)
        .ok_or_else(|| n.unsupported(format!("dtype {dt} is not supported yet")))?;
    let bytes = n.outputs[0].size_bytes().unwrap_or(0);
    kb.memcpy(kb.param(3), kb.param(0), kb.c(bytes))?;
    Ok((ty, kb.param(1), kb.param(2), kb.param(3)))
}

/// Loads index `j` of an i32/i64 index tensor as i64, wrapped when negative and clamped
/// into `0..extent`.
pub(crate) fn load_index<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    p: inkwell::values::PointerValue<'ctx>,
    j: inkwell::values::IntValue<'ctx>,
    extent: u64,
) -> R<inkwell::values::IntValue<'ctx>> {
    use inkwell::IntPredicate::*;
    let it = if n.inputs[1].dtype == dlc_ir::DType::I32 { kb.cx.i32_type() } else { kb.i64t };
    let raw = kb.b.build_load(it, kb.gep(it.into(), p, j)?, "")?.into_int_value();
    let k = kb.b.build_int_s_extend_or_bit_cast(raw, kb.i64t, "")?;
    let k = kb.select_i(kb.icmp(SLT, k, kb.c(0))?, kb.add(k, kb.c(extent))?, k)?;
    let k = kb.select_i(kb.icmp(SLT, k, kb.c(0))?, kb.c(0), k)?;
    kb.select_i(kb.icmp(SGE, k, kb.c(extent))?, kb.c(extent.saturating_sub(1)), k)
}

pub(crate) fn scatter_elements(kb: &Kb, n: &NodeInfo, op: &dlc_ir::ops::ScatterElements) -> R<()> {
    let d = n.in_dims(0);
    let id = n.in_dims(1);
    let a = dlc_ir::ops::normalize_axis(op.axis, d.len()).ok_or_else(|| n.unsupported("axis out of range"))?;
    let (ty, pi, pu, py) = scatter_start(kb, n)?;
    if id.contains(&0) || d[a] == 0 {
        return Ok(());
    }
    let ds = broadcast_strides(&d, &d);
    let is = broadcast_strides(&id, &id);
    kb.nest(&id, |kb, idx| {
        let j = kb.lin(&idx.iter().copied().zip(is.iter().copied()).collect::<Vec<_>>(), 0)?;
        let k = load_index(kb, n, pi, j, d[a])?;
        let mut terms: Vec<_> = idx.iter().copied().zip(ds.iter().copied()).collect();
        terms[a].0 = k;
        let dst = kb.gep(ty, py, kb.lin(&terms, 0)?)?;
        let u = kb.b.build_load(ty, kb.gep(ty, pu, j)?, "")?;
        combine(kb, n, op.reduction, ty, dst, u)
    })
}

pub(crate) fn scatter_nd(kb: &Kb, n: &NodeInfo, op: &dlc_ir::ops::ScatterND) -> R<()> {
    let d = n.in_dims(0);
    let id = n.in_dims(1);
    let k = *id.last().expect("checked rank") as usize;
    let tuples: u64 = id[..id.len() - 1].iter().product();
    let slice: u64 = d[k..].iter().product();
    let (ty, pi, pu, py) = scatter_start(kb, n)?;
    if tuples == 0 || slice == 0 || d[..k].contains(&0) {
        return Ok(());
    }
    let ds = broadcast_strides(&d, &d);
    kb.nest(&[tuples, slice], |kb, ts| {
        let (t, s) = (ts[0], ts[1]);
        let mut base = kb.c(0);
        for (q, &extent) in d[..k].iter().enumerate() {
            let c = load_index(kb, n, pi, kb.lin(&[(t, k as u64)], q as u64)?, extent)?;
            base = kb.add(base, kb.mul(c, kb.c(ds[q]))?)?;
        }
        let dst = kb.gep(ty, py, kb.add(base, s)?)?;
        let u = kb.b.build_load(ty, kb.gep(ty, pu, kb.lin(&[(t, slice), (s, 1)], 0)?)?, "")?;
        combine(kb, n, op.reduction, ty, dst, u)
    })
}
