//! Reductions are lowered through kir (dlc-lower's `reduce`); what stays here is how
//! the CUDA backend classifies them: [`as_rows`] picks the reductions a block computes
//! as one row with warp shuffles.
use super::NodeInfo;
use dlc_ir::ops::resolve_axes;
use dlc_ir::{DType, Op};

/// What a Reduce* op folds its inputs with, and which Reduce* an op is (dlc-lower's,
/// which the GPU's row kernels share).
pub(crate) use dlc_lower::reduce::{reduction, Kind};

/// For an f32 Sum, Mean, Max, Min, SumSquare, L1 or L2 reduction over the trailing axes
/// (what a GPU block computes as one row): its kind, the number of rows (outputs) and
/// the row length.
pub(crate) fn as_rows(n: &NodeInfo) -> Option<(Kind, u64, u64)> {
    let (axes, kind) = reduction(n.op)?;
    let by_rows =
        matches!(kind, Kind::Sum | Kind::Mean | Kind::Max | Kind::Min | Kind::SumSquare | Kind::L1 | Kind::L2);
    if !by_rows || n.inputs[0].dtype != DType::F32 || n.outputs[0].dtype != DType::F32 {
        return None;
    }
    let x = n.in_dims(0);
    let axes = resolve_axes(axes, x.len())?;
    let lead = x.len() - axes.len();
    (axes == (lead..x.len()).collect::<Vec<_>>())
        .then(|| (kind, x[..lead].iter().product(), x[lead..].iter().product()))
}

/// Whether the reduction `op` computes each output independently (its kir kernel is an
/// `each` nest over the outputs, one per GPU thread); NllLoss and CumSum are sequential.
pub(crate) fn per_output(op: &Op) -> bool {
    !matches!(op, Op::NllLoss(_) | Op::CumSum(_))
}
