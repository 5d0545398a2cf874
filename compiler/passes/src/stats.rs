//! Model statistics for reports: parameters, weight bytes, FLOPs per inference.
use dlc_ir::{Graph, Op, OpKind};

/// Size and work of a graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Scalars in constants.
    pub parameters: u64,
    /// Bytes of constants.
    pub weight_bytes: u64,
    /// Floating-point operations per inference (a multiply-add counts 2).
    pub flops: u64,
    /// Compute nodes (everything but inputs and constants).
    pub compute_nodes: u64,
    /// The run-time dims the shapes mention; the counts are at the value 1 of each.
    pub symbols: Vec<String>,
}

/// Floating-point operations of one `op` with operand dims `ins` and `out` result elements.
pub fn op_flops(op: &Op, ins: &[Vec<u64>], out: u64) -> u64 {
    let dim = |i: usize, d: usize| ins.get(i).and_then(|x| x.get(d)).copied().unwrap_or(0);
    let numel = |i: usize| ins.get(i).map(|d| d.iter().product::<u64>()).unwrap_or(0);
    match op {
        Op::Const(_) | Op::Input(_) => 0,
        Op::MatMul(_) | Op::IntMatMul(_) => 2 * out * ins[0].last().copied().unwrap_or(0),
        Op::Einsum(_) => 2 * ins.iter().map(|d| d.iter().product::<u64>()).max().unwrap_or(0),
        Op::Gemm(op) => 2 * out * if op.trans_a { dim(0, 0) } else { dim(0, 1) },
        // Scores and weighted sum (2 per multiply-add), softmax about 5 per score.
        Op::Attention(a) => {
            let (b, sq, sk) = (dim(0, 0), dim(0, 1), dim(1, 1));
            2 * b * sq * sk * (dim(0, 2) + dim(2, 2)) + 5 * b * sq * sk * a.heads.max(0) as u64
        }
        // Integer multiply-adds count like float ones ("FLOPs or integer ops").
        Op::Conv(_) | Op::QConv(_) => 2 * out * dim(1, 1) * dim(1, 2) * dim(1, 3),
        Op::QuantPack(_) => 4 * numel(0),
        Op::ConvTranspose(_) => 2 * numel(0) * dim(1, 1) * dim(1, 2) * dim(1, 3),
        Op::MaxPool(op) => out * op.kernel_shape.iter().product::<i64>().max(1) as u64,
        Op::AveragePool(op) => out * op.kernel_shape.iter().product::<i64>().max(1) as u64,
        Op::GlobalAveragePool(_) => numel(0),
        Op::BatchNormalization(_) => 2 * out,
        Op::Fused(f) => f.steps.len() as u64 * out,
        // The body's, once per iteration (a run-time count counts as one, and so does a
        // loop's "no bound", INT64_MAX, past 2^32 iterations).
        Op::Loop(l) => {
            let per = graph_stats(&l.body.0).flops;
            let count = l.count_expr().and_then(|c| c.as_const()).filter(|&c| c < 1 << 32);
            per.saturating_mul(count.map_or(1, |c| c.max(0) as u64))
        }
        // The costlier branch (only one runs).
        Op::If(i) => graph_stats(&i.then.0).flops.max(graph_stats(&i.els.0).flops),
        Op::Softmax(_) => 5 * out,
        Op::LayerNormalization(_) => 8 * out,
        // A multiply-add per tap (K = idx's last dim) per result; the taps about 30 per row.
        Op::Resize(_) => 2 * out * dim(1, 1),
        Op::ResizeTaps(_) => 30 * out,
        // A byte comparison per byte of the left operand's elements, at most (the bytes are
        // known only at run time: its byte count as the bound).
        Op::StringEqual(_) => out.max(numel(1)),
        Op::StringRegexMatch(_) => out.max(numel(1)),
        Op::StringCase(_) => out,
        Op::StringConcat(_) => out.max(numel(1) + numel(3)),
        Op::StringSplitCount(_) | Op::StringSplit(_) => out.max(numel(1)),
        // About 12 integer operations per value, and a logarithm, square root and
        // cosine more for a normal one.
        Op::Random(r) => out * if r.normal { 40 } else { 12 },
        // About 40 per sample of a 2x2 grid per bin (the usual sampling ratio).
        Op::RoiAlign(_) => 160 * out,
        Op::Col2Im(_) => out.max(numel(0)),
        // One operation per result element.
        dlc_ir::pointwise!() | Op::Cast(_) | Op::Expand(_) | Op::GridSample(_) => out,
        // One per operand element.
        Op::ReduceSum(_)
        | Op::ReduceMean(_)
        | Op::ReduceMax(_)
        | Op::ReduceMin(_)
        | Op::ReduceProd(_)
        | Op::ReduceL1(_)
        | Op::ReduceL2(_)
        | Op::ReduceLogSum(_)
        | Op::ReduceLogSumExp(_)
        | Op::ReduceSumSquare(_)
        | Op::ArgMax(_)
        | Op::TopK(_)
        | Op::Nms(_)
        | Op::Unique(_)
        | Op::ArgMin(_)
        | Op::NllLoss(_)
        | Op::CumSum(_) => numel(0),
        // Data movement computes nothing.
        Op::Reshape(_)
        | Op::View(_)
        | Op::Bind(_)
        | Op::Strided(_)
        | Op::NonZero(_)
        | Op::Compress(_)
        | Op::Iota(_)
        | Op::Flatten(_)
        | Op::Transpose(_)
        | Op::Identity(_)
        | Op::BitCast(_)
        | Op::Concat(_)
        | Op::Gather(_)
        | Op::GatherElements(_)
        | Op::Slice(_)
        | Op::Trilu(_)
        | Op::Pad(_)
        | Op::ScatterElements(_)
        | Op::ScatterND(_)
        | Op::Patches(_) => 0,
    }
}

/// Computes [`GraphStats`]; symbolic dims count at 1 (a batch of one).
pub fn graph_stats(g: &Graph) -> GraphStats {
    let mut s = GraphStats::default();
    let mut symbols = std::collections::BTreeSet::new();
    for id in g.node_ids() {
        let node = g.node(id);
        for t in &node.outputs {
            for d in &t.shape.0 {
                let mut v = Vec::new();
                d.expr().symbols(&mut v);
                symbols.extend(v);
            }
        }
        let out: u64 = node.outputs.first().map(|t| t.shape.at_ones().iter().product()).unwrap_or(0);
        let ins: Vec<Vec<u64>> = g.operands(id).iter().map(|v| g.value_type(*v).shape.at_ones()).collect();
        if let Op::Const(c) = &node.op {
            s.parameters += c.value.numel() as u64;
            s.weight_bytes += c.value.bytes().len() as u64;
        }
        let flops = op_flops(&node.op, &ins, out);
        if node.op.kind() != OpKind::Source {
            s.compute_nodes += 1;
        }
        s.flops = s.flops.saturating_add(flops);
    }
    s.symbols = symbols.into_iter().collect();
    s
}
