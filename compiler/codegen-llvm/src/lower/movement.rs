//! Data movement for any dtype: copies and concatenation move whole elements as integers
//! of the element's width (transpose and slice are lowered through kir: dlc-lower).
use super::elementwise::broadcast_strides;
use super::NodeInfo;
use crate::kernel::{Kb, R};

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

pub(crate) fn elem_int_type<'ctx>(kb: &Kb<'_, 'ctx>, size: usize) -> inkwell::types::IntType<'ctx> {
    match size {
        1 => kb.cx.i8_type(),
        2 => kb.cx.i16_type(),
        4 => kb.cx.i32_type(),
        _ => kb.i64t,
    }
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
