//! Kernels for nodes whose shapes have run-time leading dims (a symbolic batch `N`, or
//! `N` and a sequence length `S` before fixed dims).
//!
//! When every result of a node has the same leading dims, the last of them run-time,
//! and fixed dims after them, every operand either has those leading dims (then fixed
//! dims after them) or has fixed dims (shared by every sample), and the op treats the
//! positions along those leading axes as independent samples, the node's kernel is the
//! one for a single sample, run for each sample at its offset
//! (`dlc_kir::transform::batch`, over the product of the leading dims). The one-sample
//! kernel is what a pinned shape with those dims 1 compiles to, so its tiles, vector
//! widths and packed weights are compile-time constants; only the count of samples is
//! read at run time.
use crate::{lower, LowerError, Node, Target};
use dlc_ir::{Dim, Op, Shape, TensorType};
use dlc_kir::Kernel;

/// The type with its `lead` leading dims set to 1 when `batched`.
fn one_sample(t: &TensorType, batched: bool, lead: usize) -> TensorType {
    let mut t = t.clone();
    if batched {
        t.shape.0[..lead].fill(Dim::Fixed(1));
    }
    t
}

fn normalized(axis: i64, rank: usize) -> Option<usize> {
    dlc_ir::ops::normalize_axis(axis, rank)
}

/// Whether op `n` treats the positions along axes `0..lead` of its batched operands and
/// results as independent samples (`batched[i]`: operand `i` carries the leading dims).
fn samples_independent(n: &Node, batched: &[bool], lead: usize) -> bool {
    let rank = n.outputs[0].shape.rank();
    let axis_not_0 = |axis: i64, r: usize| normalized(axis, r).is_some_and(|a| a >= lead);
    let only_first = batched.iter().enumerate().all(|(i, &b)| b == (i == 0));
    // Ops whose axis 1 is channels (and whose later axes are windows) have one sample
    // axis.
    let one = lead == 1;
    match n.op {
        // Expand broadcasts a sample-independent operand up to the batch (the kernel for
        // one sample would read the operand's own leading dim).
        Op::Expand(_) => false,
        // A fixed operand is shared by every sample only where it broadcasts along the
        // leading axes (its dims there are 1): `[1,4,1,1] + [1,4,3,W]` varies along the
        // leading (run-time W's) axes and is not a per-sample kernel.
        dlc_ir::pointwise!() | Op::Cast(_) | Op::Fused(_) => n.inputs.iter().zip(batched).all(|(x, &b)| {
            let off = rank as isize - x.shape.rank() as isize;
            b || (0..lead).all(|p| {
                let k = p as isize - off;
                k < 0 || x.shape.0.get(k as usize) == Some(&Dim::Fixed(1))
            })
        }),
        // Rows of A (its leading axes and M) against a shared B, or matrices of a batch
        // (leading axes before M) against their own.
        Op::MatMul(_) => {
            let (a, b) = (&n.inputs[0], &n.inputs[1]);
            let ar = a.shape.rank();
            batched[0]
                && ar >= 2
                && if batched[1] {
                    b.shape.rank() >= 3 && b.shape.rank() == ar && lead + 2 <= ar
                } else {
                    b.shape.rank() <= 2 && lead < ar
                }
                && !batched.get(2).copied().unwrap_or(false)
        }
        Op::Gemm(op) => !op.trans_a && batched[0] && !batched[1],
        // The kernel takes every row of A itself (a run-time count included).
        Op::IntMatMul(_) | Op::Patches(_) => false,
        // Weights, bias (and QConv's scales) are shared; a fused residual (the operand
        // after them) has the result's shape, so it is batched with it.
        Op::Conv(_) => one && batched_then_shared_then_batched(batched, 3),
        Op::QConv(_) => one && batched_then_shared_then_batched(batched, 4),
        Op::ConvTranspose(_)
        | Op::MaxPool(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool(_)
        | Op::BatchNormalization(_) => one && only_first,
        Op::GridSample(_) => one && batched[0] && batched[1],
        Op::Softmax(op) => axis_not_0(op.axis, rank),
        Op::LayerNormalization(op) => axis_not_0(op.axis, n.inputs[0].shape.rank()),
        Op::ReduceSum(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceMean(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceMax(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceMin(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceProd(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceL1(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceL2(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceLogSum(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceLogSumExp(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ReduceSumSquare(o) => reduce_ok(&o.axes, o.keepdims, n, lead),
        Op::ArgMax(o) => axis_not_0(o.axis, n.inputs[0].shape.rank()),
        Op::TopK(o) => axis_not_0(o.axis, n.inputs[0].shape.rank()),
        Op::ArgMin(o) => axis_not_0(o.axis, n.inputs[0].shape.rank()),
        Op::Transpose(op) => {
            op.perm.len() >= lead && op.perm[..lead].iter().enumerate().all(|(i, &p)| p == i as i64) && only_first
        }
        Op::Concat(op) => axis_not_0(op.axis, rank),
        // Elements picked along a later axis, each sample's indices into its own data.
        Op::GatherElements(op) => axis_not_0(op.axis, rank) && batched.iter().all(|&b| b),
        // Gathering along another axis than 0 per sample, or a shared table's rows
        // (axis 0) by each sample's indices.
        Op::Gather(op) => {
            let r = n.inputs[0].shape.rank();
            axis_not_0(op.axis, r) && only_first
                || normalized(op.axis, r) == Some(0) && !batched[0] && batched[1] && lead <= n.inputs[1].shape.rank()
        }
        Op::Slice(op) => only_first && op.axes.iter().all(|&a| axis_not_0(a, rank)),
        Op::Pad(op) => {
            let r = n.inputs[0].shape.rank();
            only_first && op.pads.len() == 2 * r && (0..lead.min(r)).all(|a| op.pads[a] == 0 && op.pads[r + a] == 0)
        }
        Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_) | Op::BitCast(_) | Op::View(_) => only_first,
        // Rows along an axis after the leading ones, with shared taps.
        Op::Resize(op) => only_first && axis_not_0(op.axis, rank),
        // Queries attend to every key: only the batch axis holds samples.
        Op::Attention(_) => one && batched.iter().take(3).all(|&b| b),
        // The triangle is of the last two axes, so of each sample when there are more.
        Op::Trilu(_) => only_first && rank >= lead + 2,
        // Listed, not `_`, so that a new op is refused with a run-time batch only after
        // someone decides: the scatters address elements by value,
        // CumSum's axis and Einsum's equation are not read here, QuantPack runs only in
        // int8 programs (which refuse symbols), NllLoss reduces over the batch, and
        // sources have no kernel.
        Op::Einsum(_)
        | Op::ScatterElements(_)
        | Op::ScatterND(_)
        | Op::CumSum(_)
        | Op::NllLoss(_)
        | Op::QuantPack(_)
        | Op::Bind(_)
        | Op::Strided(_)
        | Op::NonZero(_)
        | Op::Nms(_)
        | Op::Unique(_)
        | Op::StringEqual(_)
        | Op::StringRegexMatch(_)
        | Op::StringCase(_)
        | Op::StringConcat(_)
        | Op::StringSplitCount(_)
        | Op::StringSplit(_)
        | Op::Random(_)
        | Op::RoiAlign(_)
        | Op::Col2Im(_)
        | Op::Compress(_)
        | Op::ResizeTaps(_)
        | Op::Iota(_)
        | Op::Loop(_)
        | Op::If(_)
        | Op::Input(_)
        | Op::Const(_) => false,
    }
}

/// Operand 0 batched, operands `1..k` shared, the rest batched.
fn batched_then_shared_then_batched(batched: &[bool], k: usize) -> bool {
    batched.iter().enumerate().all(|(i, &b)| b == (i == 0 || i >= k))
}

/// A reduction over given axes after the leading ones keeps them as samples (with or without
/// the reduced dims kept).
fn reduce_ok(axes: &[i64], _keepdims: bool, n: &Node, lead: usize) -> bool {
    let r = n.inputs[0].shape.rank();
    !axes.is_empty() && axes.iter().all(|&a| normalized(a, r).is_some_and(|a| a >= lead))
}

/// The kernel of node `n`, some of whose shapes are symbolic: the one-sample kernel run
/// over the symbolic leading dim, or an error naming the node, the dim and why.
pub fn lower_batched(kernel: &str, n: &Node, t: &Target) -> Result<Kernel, LowerError> {
    let pin = |why: String| {
        n.error(format!(
            "{why}; run-time dims are supported as leading dims (before fixed ones) of ops that treat those \
             positions independently so far (pin the input shapes with --input-shape NAME=DIMS)"
        ))
    };
    let out0 = &n.outputs[0].shape.0;
    let lead = out0.iter().rposition(|d| d.fixed().is_none()).map_or(0, |i| i + 1);
    if lead == 0 {
        return Err(n.error(format!("internal: result {} has no run-time dim", n.outputs[0])));
    }
    let head = &out0[..lead];
    let shape_ok =
        |s: &Shape| s.rank() >= lead && s.0[..lead] == *head && s.0[lead..].iter().all(|d| d.fixed().is_some());
    let lead_text = || Shape(head.to_vec()).to_string();
    for o in n.outputs {
        if !shape_ok(&o.shape) {
            return Err(pin(format!("result {o} does not lead with {} and then fixed dims", lead_text())));
        }
    }
    let mut batched = Vec::with_capacity(n.inputs.len());
    for (i, x) in n.inputs.iter().enumerate() {
        if x.shape.is_fixed() {
            batched.push(false);
        } else if shape_ok(&x.shape) {
            batched.push(true);
        } else {
            return Err(pin(format!("operand {i} is {x}, not {} and then fixed dims", lead_text())));
        }
    }
    if !samples_independent(n, &batched, lead) {
        let what = if lead == 1 {
            format!("the leading dim {}", head[0])
        } else {
            format!("the leading dims {}", lead_text())
        };
        return Err(pin(format!("this {} mixes samples along {what}", n.op.mnemonic())));
    }
    let inputs: Vec<TensorType> = n.inputs.iter().zip(&batched).map(|(x, &b)| one_sample(x, b, lead)).collect();
    let outputs: Vec<TensorType> = n.outputs.iter().map(|o| one_sample(o, true, lead)).collect();
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
    let count = head.iter().fold(dlc_ir::Expr::c(1), |a, d| &a * &d.expr());
    dlc_kir::transform::batch(&k, &count, &stride, samples)
        .map_err(|e| pin(format!("its kernel cannot be batched ({e})")))
}
