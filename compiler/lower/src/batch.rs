//! Kernels for nodes whose shapes have a run-time leading dim (a symbolic batch `N`).
//!
//! When every result of a node has the same symbolic leading dim and otherwise fixed
//! dims, every operand either has that leading dim (then fixed dims after it) or has
//! fixed dims (shared by every sample), and the op treats the leading axis as
//! independent samples, the node's kernel is the one for a single sample, run for each
//! sample at its offset (`dlc_kir::transform::batch`). The one-sample kernel is what a
//! pinned batch of 1 compiles to, so its tiles, vector widths and packed weights are
//! compile-time constants; only the count of samples is read at run time.
use crate::{lower, LowerError, Node, Target};
use dlc_ir::{Dim, Op, Shape, TensorType};
use dlc_kir::Kernel;

/// The type with its leading dim set to 1 when `batched`.
fn one_sample(t: &TensorType, batched: bool) -> TensorType {
    let mut t = t.clone();
    if batched {
        t.shape.0[0] = Dim::Fixed(1);
    }
    t
}

fn normalized(axis: i64, rank: usize) -> Option<usize> {
    dlc_ir::ops::normalize_axis(axis, rank)
}

/// Whether op `n` treats axis 0 of its batched operands and results as independent
/// samples (`batched[i]`: operand `i` carries the leading dim).
fn samples_independent(n: &Node, batched: &[bool]) -> bool {
    let rank = n.outputs[0].shape.rank();
    let axis_not_0 = |axis: i64, r: usize| normalized(axis, r).is_some_and(|a| a != 0);
    let only_first = batched.iter().enumerate().all(|(i, &b)| b == (i == 0));
    match n.op {
        // Expand broadcasts a sample-independent operand up to the batch (the kernel for
        // one sample would read the operand's own leading dim).
        Op::Expand(_) => false,
        dlc_ir::pointwise!() | Op::Cast(_) | Op::Fused(_) => true,
        Op::MatMul(_) => {
            let (a, b) = (&n.inputs[0], &n.inputs[1]);
            batched[0]
                && a.shape.rank() >= 2
                && (!batched[1] || (b.shape.rank() >= 3 && b.shape.rank() == a.shape.rank()))
                && !batched.get(2).copied().unwrap_or(false)
        }
        Op::Gemm(op) => !op.trans_a && batched[0] && !batched[1],
        // Weights, bias (and QConv's scales) are shared; a fused residual (the operand
        // after them) has the result's shape, so it is batched with it.
        Op::Conv(_) => batched_then_shared_then_batched(batched, 3),
        Op::QConv(_) => batched_then_shared_then_batched(batched, 4),
        Op::ConvTranspose(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool(_)
        | Op::BatchNormalization(_) => only_first,
        Op::GridSample(_) => batched[0] && batched[1],
        Op::Softmax(op) => axis_not_0(op.axis, rank),
        Op::LayerNormalization(op) => axis_not_0(op.axis, n.inputs[0].shape.rank()),
        Op::ReduceSum(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceMean(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceMax(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceMin(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceProd(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceL1(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceL2(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceLogSum(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceLogSumExp(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ReduceSumSquare(o) => reduce_ok(&o.axes, o.keepdims, n),
        Op::ArgMax(o) => axis_not_0(o.axis, n.inputs[0].shape.rank()),
        Op::ArgMin(o) => axis_not_0(o.axis, n.inputs[0].shape.rank()),
        Op::Transpose(op) => op.perm.first() == Some(&0) && only_first,
        Op::Concat(op) => axis_not_0(op.axis, rank),
        // Gathering along another axis than 0 per sample, or a shared table's rows
        // (axis 0) by each sample's indices.
        Op::Gather(op) => {
            let r = n.inputs[0].shape.rank();
            axis_not_0(op.axis, r) && only_first || normalized(op.axis, r) == Some(0) && !batched[0] && batched[1]
        }
        Op::Slice(op) => only_first && op.axes.iter().all(|&a| axis_not_0(a, rank)),
        Op::Pad(op) => {
            let r = n.inputs[0].shape.rank();
            only_first && op.pads.len() == 2 * r && op.pads[0] == 0 && op.pads[r] == 0
        }
        Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_) => only_first,
        Op::Attention(_) => batched.iter().take(3).all(|&b| b),
        // The triangle is of the last two axes, so of each sample when there are more.
        Op::Trilu(_) => only_first && rank >= 3,
        // Listed, not `_`, so that a new op is refused with a run-time batch only after
        // someone decides: GatherElements and the scatters address elements by value,
        // CumSum's axis and Einsum's equation are not read here, QuantPack runs only in
        // int8 programs (which refuse symbols), NllLoss reduces over the batch, and
        // sources have no kernel.
        Op::Einsum(_)
        | Op::GatherElements(_)
        | Op::ScatterElements(_)
        | Op::ScatterND(_)
        | Op::CumSum(_)
        | Op::NllLoss(_)
        | Op::QuantPack(_)
        | Op::Input(_)
        | Op::Const(_) => false,
    }
}

/// Operand 0 batched, operands `1..k` shared, the rest batched.
fn batched_then_shared_then_batched(batched: &[bool], k: usize) -> bool {
    batched.iter().enumerate().all(|(i, &b)| b == (i == 0 || i >= k))
}

/// A reduction over given axes other than 0 keeps axis 0 as samples (with or without
/// the reduced dims kept).
fn reduce_ok(axes: &[i64], _keepdims: bool, n: &Node) -> bool {
    let r = n.inputs[0].shape.rank();
    !axes.is_empty() && axes.iter().all(|&a| normalized(a, r).is_some_and(|a| a != 0))
}

/// The kernel of node `n`, some of whose shapes are symbolic: the one-sample kernel run
/// over the symbolic leading dim, or an error naming the node, the dim and why.
pub fn lower_batched(kernel: &str, n: &Node, t: &Target) -> Result<Kernel, LowerError> {
    let pin = |why: String| {
        n.error(format!(
            "{why}; run-time dims are supported as a leading batch dim of ops that treat samples independently \
             so far (pin the input shapes with --input-shape NAME=DIMS)"
        ))
    };
    let Some(lead @ Dim::Sym(_)) = n.outputs[0].shape.0.first().cloned() else {
        return Err(pin(format!("result {} has a run-time dim after its leading one", n.outputs[0])));
    };
    let rest_fixed = |s: &Shape| s.0[1..].iter().all(|d| d.fixed().is_some());
    for o in n.outputs {
        if o.shape.0.first() != Some(&lead) || !rest_fixed(&o.shape) {
            return Err(pin(format!("result {o} does not have {lead} as its only run-time dim, leading")));
        }
    }
    let mut batched = Vec::with_capacity(n.inputs.len());
    for (i, x) in n.inputs.iter().enumerate() {
        if x.shape.is_fixed() {
            batched.push(false);
        } else if x.shape.0.first() == Some(&lead) && rest_fixed(&x.shape) {
            batched.push(true);
        } else {
            return Err(pin(format!("operand {i} is {x}")));
        }
    }
    if !samples_independent(n, &batched) {
        return Err(pin(format!("this {} mixes samples along the leading dim {lead}", n.op.mnemonic())));
    }
    let inputs: Vec<TensorType> = n.inputs.iter().zip(&batched).map(|(x, &b)| one_sample(x, b)).collect();
    let outputs: Vec<TensorType> = n.outputs.iter().map(|o| one_sample(o, true)).collect();
    let one = Node {
        name: n.name,
        op: n.op,
        inputs: &inputs,
        outputs: &outputs,
        consts: n.consts,
        operand_max: n.operand_max,
    };
    let k = lower(kernel, &one, t).ok_or_else(|| n.error("internal: no kernel for this op"))??;
    let bytes = |x: &TensorType| x.size_bytes().expect("one sample has fixed dims");
    let mut stride: Vec<u64> = inputs.iter().zip(&batched).map(|(x, &b)| if b { bytes(x) } else { 0 }).collect();
    stride.extend(outputs.iter().map(bytes));
    // A one-sample kernel with no pool loop of its own (too little work per sample for
    // one) runs its samples as pool tasks when a sample is a task's worth of work.
    let work = {
        let dims: Vec<Vec<u64>> = inputs.iter().map(|x| x.shape.as_fixed().unwrap_or_default()).collect();
        let out = outputs[0].shape.numel().unwrap_or(0);
        dlc_passes::op_flops(n.op, &dims, out).max(out)
    };
    let samples = if !dlc_kir::transform::has_parallel_loop(&k) && work >= crate::TASK_WORK {
        dlc_kir::LoopKind::Parallel
    } else {
        dlc_kir::LoopKind::Serial
    };
    dlc_kir::transform::batch(&k, &lead.expr(), &stride, samples)
        .map_err(|e| pin(format!("its kernel cannot be batched ({e})")))
}
