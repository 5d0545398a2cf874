//! Data movement is lowered through kir (dlc-lower's `movement`); what stays here is
//! what the CUDA gather kernel shares with it: the gather geometry, the element types
//! moved as integers, and the clamped index load.
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
