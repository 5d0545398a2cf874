//! dlc-lower: graph nodes to kir kernels.
//!
//! `lower` turns one node of a planned graph into a [`dlc_kir::Kernel`] whose
//! parameters are the node's operands, then its results, each a pointer to the
//! tensor's first element. Extents come from the tensor types: a fixed dim is a
//! constant (so constant extents give exactly the loop nests the inkwell lowerings
//! built), a symbolic dim is a kir symbol.
//!
//! Every compute op has its kernel here: data movement, the normalisations and
//! reductions, the elementwise ops and fused programs (every dtype), the pools,
//! ConvTranspose, GridSample, Einsum, attention, the packed GEMM and the plain matrix
//! products, every convolution kernel, and the int8 family ([`quant`]: `quant_pack`
//! and `qconv` with its VNNI and AVX2 paths as kir intrinsics). Only sources
//! (`Input`, `Const`) return `None` from [`lower`]. [`cuda::lower`] gives the CUDA
//! kernels: the per-element ones, and block kernels (the shared-memory tiled GEMM and
//! implicit-GEMM convolution, the row kernels with block reductions, attention).
//!
//! Invariant: knows nothing of inkwell or LLVM; every kernel it returns verifies.
#![warn(missing_docs)]

pub mod attention;
pub mod batch;
pub mod bind;
pub mod check;
pub mod col2im;
pub mod control;
pub mod conv;
pub mod conv1x1;
pub mod convblk;
pub mod convdirect;
pub mod cuda;
pub mod dtype;
pub mod dwconv;
pub mod elementwise;
pub mod fastmath;
pub mod gemm;
pub mod linalg;
pub mod movement;
pub mod nms;
pub mod norm;
pub mod pool;
pub mod program;
pub mod quant;
pub mod random;
pub mod reduce;
pub mod resize;
pub mod roialign;
pub mod sample;
pub mod shape;
pub mod text;
mod topk;
pub mod unique;

use dlc_ir::{Dim, Op, TensorData, TensorType};
use dlc_kir::{Expr, Kernel, KernelBuilder, LoopKind};

/// Errors of lowering: the node cannot be lowered (dtype, attribute or shape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node '{node}' ({op}): {reason}")]
pub struct LowerError {
    /// Node name.
    pub node: String,
    /// Op mnemonic.
    pub op: &'static str,
    /// Why.
    pub reason: String,
}

/// What a lowering sees of a node.
pub struct Node<'g> {
    /// Its name.
    pub name: &'g str,
    /// Its op.
    pub op: &'g Op,
    /// Operand types.
    pub inputs: &'g [TensorType],
    /// Result types.
    pub outputs: &'g [TensorType],
    /// The operands' values where they are constants, by operand (shorter than
    /// `inputs`, or empty, where the rest are not): what kernels pack at compile time.
    pub consts: &'g [Option<&'g TensorData>],
    /// The largest value each operand's elements can hold where its producer bounds it
    /// (a `quant_pack`'s `qmax`), by operand (shorter, or empty, where unknown): see
    /// [`operand_max`].
    pub operand_max: &'g [Option<u64>],
}

/// [`Node::operand_max`] of node `id` of `g`.
pub fn operand_max(g: &dlc_ir::Graph, id: dlc_ir::NodeId) -> Vec<Option<u64>> {
    g.operands(id)
        .iter()
        .map(|v| match &g.node(v.node).op {
            Op::QuantPack(p) if v.port == 0 => Some(p.qmax as u64),
            _ => None,
        })
        .collect()
}

impl Node<'_> {
    /// An error naming this node.
    pub fn error(&self, reason: impl Into<String>) -> LowerError {
        LowerError { node: self.name.to_string(), op: self.op.mnemonic(), reason: reason.into() }
    }

    /// The dims of a type as expressions.
    pub fn dims(t: &TensorType) -> Vec<Expr> {
        t.shape.0.iter().map(dim).collect()
    }

    /// An error naming the node unless every operand and result is f32 (the arithmetic
    /// kernels that are f32-only for now).
    pub fn require_f32(&self) -> Result<(), LowerError> {
        for t in self.inputs.iter().chain(self.outputs) {
            if t.dtype != dlc_ir::DType::F32 {
                return Err(self.error(format!("dtype {} is not supported yet (f32 only)", t.dtype)));
            }
        }
        Ok(())
    }

    /// Fixed dims of operand `i`, or an error naming the node.
    pub fn fixed_in(&self, i: usize) -> Result<Vec<u64>, LowerError> {
        self.inputs[i].shape.as_fixed().ok_or_else(|| self.error(format!("symbolic shape {}", self.inputs[i])))
    }
}

/// A dim as an expression (a constant, or dlc-ir's expression over symbols).
pub fn dim(d: &Dim) -> Expr {
    d.expr()
}

/// What a lowering knows of the machine it lowers for: the choices that make a kernel
/// fast there (vector widths), never what it computes. Built by a backend from its
/// target description (dlc-codegen-llvm's `TargetSpec::lowering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// f32 lanes of the vectors the vector kernels use: 4 on NEON, 8 with AVX2, 16 with
    /// AVX-512; 1 where kernels stay scalar (CUDA threads).
    pub f32_lanes: u32,
    /// How the int8 kernels take four-term u8 x i8 dot products.
    pub int8: Int8Dot,
    /// Whether kernels may use `parallel` loops (pool tasks): CPU targets. CUDA's run
    /// `each` nests as a thread per element instead.
    pub pool: bool,
}

/// The int8 dot-product instructions a target has ([`quant::qconv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Dot {
    /// `vpdpbusd` on 512-bit vectors (AVX512-VNNI where the kernels use 512-bit vectors).
    Vnni512,
    /// `vpdpbusd` on 256-bit vectors (AVX-VNNI, or AVX512-VNNI with AVX512-VL).
    Vnni,
    /// AVX2's `vpmaddubsw` and `vpmaddwd` (for weights within +-63).
    Avx2Pairs,
    /// A kernel's path on an AVX2 target whose weights pass +-63 ([`quant::dot_path`]):
    /// the pairs on weights split into halves within +-64 (`w >> 1` and the rest) so that
    /// no pair sum can saturate: every weight in `qconv`, in `int_matmul` only the pairs
    /// that could saturate, their second halves in fix-up steps ([`quant::split_pairs`]).
    Avx2Halves,
    /// None: exact i32 arithmetic (widen, multiply, add).
    Exact,
}

impl Target {
    /// A target whose vectors hold `f32_lanes` f32s, with no int8 dot instructions.
    pub fn with_lanes(f32_lanes: u32) -> Target {
        Target { f32_lanes: f32_lanes.max(1), int8: Int8Dot::Exact, pool: true }
    }
}

/// `0 <= e < n` as one unsigned comparison of the index value.
pub fn in_bounds(b: &mut KernelBuilder, e: Expr, n: u64) -> dlc_kir::ValId {
    in_bounds_expr(b, e, &Expr::c(n as i64))
}

/// [`in_bounds`] with a bound that may be a run-time extent.
pub fn in_bounds_expr(b: &mut KernelBuilder, e: Expr, n: &Expr) -> dlc_kir::ValId {
    let v = b.index(e);
    let bound = ival(b, n);
    b.cmp(dlc_kir::CmpOp::Ult, v, bound)
}

/// Expression `e` as an i64 value: a constant where it is one (the code a constant
/// extent always gave), else computed at run time.
pub fn ival(b: &mut KernelBuilder, e: &Expr) -> dlc_kir::ValId {
    match e.as_const() {
        Some(v) => b.i64(v),
        None => b.index(e.clone()),
    }
}

/// `e` as an index expression that stays small: a constant or a lone symbol as it is,
/// anything else computed once into a value here (a run-time extent such as
/// `floordiv(H - 1, 2) + 1` would otherwise be multiplied out in every index that uses
/// it). The value is visible in the rest of the current body only (not in a `parallel`
/// loop's tasks, which hoist their own).
pub fn hoist(b: &mut KernelBuilder, e: &Expr) -> Expr {
    if e.is_const() || e.as_symbol().is_some() {
        return e.clone();
    }
    Expr::val(b.index(e.clone()))
}

/// [`par`] over `n` iterations where `n` or the work of one iteration, `per`, may be
/// run-time extents: constants are [`par`]; otherwise the same decision is taken when
/// the kernel runs, from the extents: one task below [`PAR_MIN_WORK`] in all (the loop
/// runs on the caller's thread, no pool), else tasks of about [`TASK_WORK`] of whole
/// iterations (a late CNN layer of a few pixels is one task, as its pinned kernel is).
pub fn par_expr(b: &mut KernelBuilder, n: &Expr, per: &Expr, body: impl FnOnce(&mut KernelBuilder, Expr)) {
    let c = |v: u64| Expr::c(v as i64);
    if let (Some(k), Some(w)) = (n.as_const(), per.as_const()) {
        let k = k.max(0) as u64;
        return par(b, k, k.saturating_mul(w.max(0) as u64), body);
    }
    let total = n * per;
    let big = total.floor_div(&c(PAR_MIN_WORK)).min_with(&c(1));
    let tasks = (&big * &total.floor_div(&c(TASK_WORK)).min_with(n)).max_with(&c(1));
    let each = (&(n + &tasks) - &c(1)).floor_div(&tasks).max_with(&c(1));
    let count = (&(n + &each) - &c(1)).floor_div(&each);
    b.for_(c(0), count, LoopKind::Parallel, |b, t| {
        let lo = &t * &each;
        let hi = (&lo + &each).min_with(n);
        b.for_(lo, hi, LoopKind::Serial, body)
    })
}

/// Work (about one flop per unit) below which a kernel's outer loop stays serial.
pub const PAR_MIN_WORK: u64 = 500_000;

/// The least work of one CPU pool task (a few microseconds).
pub const TASK_WORK: u64 = 200_000;

/// `body(b, i)` for `i` in `0..n`, where the iterations are independent and cost
/// `work` in all: a serial loop for small work, else a `parallel` loop of pool tasks
/// (one iteration each, or a serial run of about `TASK_WORK` each).
pub fn par(b: &mut KernelBuilder, n: u64, work: u64, body: impl FnOnce(&mut KernelBuilder, Expr)) {
    let c = |v: u64| Expr::c(v as i64);
    if n < 2 || work < PAR_MIN_WORK {
        return b.for_(c(0), c(n), LoopKind::Serial, body);
    }
    let tasks = (work / TASK_WORK).clamp(2, n);
    if tasks == n {
        return b.for_(c(0), c(n), LoopKind::Parallel, body);
    }
    let per = n.div_ceil(tasks);
    b.for_(c(0), c(n.div_ceil(per)), LoopKind::Parallel, |b, t| {
        let lo = &t * &c(per);
        let hi = (&lo + &c(per)).min_with(&c(n));
        b.for_(lo, hi, LoopKind::Serial, body)
    })
}

/// A Conv's kernel: the channel-blocked one for constant weights (a 1x1 only where its
/// cost model prefers it to the 1x1 GEMM), else the 1x1 GEMM, else the direct vector
/// convolution, else the plain loop nests ([`conv::conv`]).
fn conv_kernel(kernel: &str, n: &Node, op: &dlc_ir::ops::Conv, t: &Target) -> Result<Kernel, LowerError> {
    if n.inputs.len() < 2 {
        return Err(n.error("a Conv needs an input and weights"));
    }
    // Run-time image dims: the channel-blocked kernel with run-time tile counts for
    // constant weights, the pixel-vector 1x1 GEMM with run-time panels, the depthwise
    // vector kernel, else the plain loop nests (their extents are expressions).
    let spatial_fixed = |t: &TensorType| t.shape.0.iter().skip(2).all(|d| d.fixed().is_some());
    if !spatial_fixed(&n.inputs[0]) {
        let g = op.window(n.name, &n.inputs[0], &n.inputs[1]).map_err(|e| n.error(e.to_string()))?;
        if convblk::applies(n, op, t).is_some() {
            return convblk::conv(kernel, n, op, &g, t);
        }
        let known_channels = n.inputs[0].shape.0.get(1).and_then(|d| d.fixed()).is_some();
        let f32 = n.inputs.iter().chain(n.outputs).all(|t| t.dtype == dlc_ir::DType::F32);
        if op.group == 1 && known_channels && f32 && n.fixed_in(1).is_ok_and(|wd| conv1x1::pointwise(op, &wd)) {
            return conv1x1::conv1x1_run_time(kernel, n, op, t);
        }
        if dwconv::applies(n, op, &g) {
            return dwconv::dwconv(kernel, n, op, &g, t);
        }
        return conv::conv(kernel, n, op);
    }
    let g = op.geometry(n.name, &n.inputs[0], &n.inputs[1]).map_err(|e| n.error(e.to_string()))?;
    if convblk::applies(n, op, t).is_some() {
        convblk::conv(kernel, n, op, &(&g).into(), t)
    } else if conv1x1::applies(n, op) {
        conv1x1::conv1x1(kernel, n, op, t)
    } else if convdirect::applies(&g, op, n, t) {
        convdirect::conv_direct(kernel, n, op, &g, t)
    } else {
        conv::conv(kernel, n, op)
    }
}

/// The kir kernel of a node named `kernel` for target `t`, or `None` for a source
/// (`Input`, `Const`), which has no kernel.
pub fn lower(kernel: &str, n: &Node, t: &Target) -> Option<Result<Kernel, LowerError>> {
    let k = match n.op {
        Op::Transpose(op) => movement::transpose(kernel, n, op, t.pool),
        Op::Slice(op) => movement::slice(kernel, n, op),
        Op::Trilu(op) => movement::trilu(kernel, n, op.upper),
        Op::GatherElements(op) => movement::gather_elements(kernel, n, op.axis),
        Op::Pad(op) => movement::pad(kernel, n, op),
        Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_) | Op::BitCast(_) | Op::View(_) => movement::copy(kernel, n),
        // The rule's kernel (the data is a view: see `program`).
        Op::Bind(op) => bind::bind(kernel, n, op),
        Op::Strided(op) => movement::strided(kernel, n, op),
        Op::NonZero(op) => movement::nonzero(kernel, n, op),
        Op::Nms(op) => nms::nms(kernel, n, op.center_point_box, t.pool),
        Op::Unique(op) => unique::unique(kernel, n, op),
        Op::StringEqual(_) => text::string_equal(kernel, n),
        Op::StringRegexMatch(op) => text::string_regex_match(kernel, n, op),
        Op::StringCase(op) => text::string_case(kernel, n, op),
        Op::StringConcat(_) => text::string_concat(kernel, n),
        Op::StringSplitCount(op) => text::string_split_count(kernel, n, op),
        Op::StringSplit(op) => text::string_split(kernel, n, op),
        Op::Random(op) => random::random(kernel, n, op),
        Op::RoiAlign(op) => roialign::roi_align(kernel, n, op),
        Op::Col2Im(op) => col2im::col2im(kernel, n, op),
        Op::Compress(op) => movement::compress(kernel, n, op),
        Op::Iota(op) => movement::iota(kernel, n, op),
        Op::Concat(op) => movement::concat(kernel, n, op.axis),
        Op::Gather(op) => movement::gather(kernel, n, op.axis),
        Op::ScatterElements(op) => movement::scatter_elements(kernel, n, op),
        Op::ScatterND(op) => movement::scatter_nd(kernel, n, op),
        Op::BatchNormalization(op) => norm::batchnorm(kernel, n, op.epsilon),
        Op::Softmax(op) => match norm::softmax_vector(kernel, n, op.axis, op.mode, t) {
            Some(k) => k,
            None => norm::softmax(kernel, n, op.axis, op.mode),
        },
        Op::LayerNormalization(op) => norm::layernorm(kernel, n, op),
        Op::ReduceSum(_)
        | Op::ReduceMean(_)
        | Op::ReduceMax(_)
        | Op::ReduceMin(_)
        | Op::ReduceProd(_)
        | Op::ReduceL1(_)
        | Op::ReduceL2(_)
        | Op::ReduceLogSum(_)
        | Op::ReduceLogSumExp(_)
        | Op::ReduceSumSquare(_) => match reduce::reduction(n.op) {
            Some((axes, kind)) => reduce::reduce(kernel, n, axes, kind, t.f32_lanes),
            None => Err(n.error("internal: not a Reduce* op")),
        },
        Op::ArgMax(o) => reduce::arg(kernel, n, o.axis, true, o.select_last_index),
        Op::TopK(o) => topk::topk(kernel, n, o, t.pool),
        Op::ArgMin(o) => reduce::arg(kernel, n, o.axis, false, o.select_last_index),
        Op::NllLoss(o) => reduce::nll_loss(kernel, n, o),
        Op::CumSum(o) => reduce::cumsum(kernel, n, o),
        Op::MaxPool(op) => match op.window(n.name, &n.inputs[0]) {
            Ok(g) => pool::pool(kernel, n, &g, pool::Pool::Max, pool::Form::Tasks),
            Err(e) => Err(n.error(e.to_string())),
        },
        Op::AveragePool(op) => match op.window(n.name, &n.inputs[0]) {
            Ok(g) => {
                let kind = pool::Pool::Avg { count_include_pad: op.count_include_pad };
                pool::pool(kernel, n, &g, kind, pool::Form::Tasks)
            }
            Err(e) => Err(n.error(e.to_string())),
        },
        Op::GlobalAveragePool(_) => match pool::global_mean_rows(n) {
            // Each plane's mean as ReduceMean's vector kernel takes it (f64 lane sums).
            Some((planes, size)) if t.f32_lanes > 1 => {
                Ok(reduce::sums_f32(kernel, &planes, &size, reduce::Kind::Mean, t.f32_lanes))
            }
            _ => pool::global_avgpool(kernel, n, pool::Form::Tasks),
        },
        Op::ConvTranspose(op) => conv::conv_transpose(kernel, n, op),
        Op::Conv(op) => conv_kernel(kernel, n, op, t),
        Op::GridSample(op) => sample::grid_sample(kernel, n, op),
        Op::ResizeTaps(op) => resize::taps(kernel, n, op),
        Op::Resize(op) => resize::resize(kernel, n, op),
        Op::Einsum(op) => linalg::einsum(kernel, n, &op.equation),
        Op::Attention(op) => attention::attention(kernel, n, op, t),
        // A constant B takes the packed GEMM, else the plain loop nests.
        Op::MatMul(op) => match gemm::plan(n) {
            Some(s) => gemm::packed(kernel, n, &s, t),
            None => linalg::matmul(kernel, n, op.act),
        },
        Op::Gemm(op) => match gemm::plan(n) {
            Some(s) => gemm::packed(kernel, n, &s, t),
            None => linalg::gemm(kernel, n, op),
        },
        dlc_ir::pointwise!() | Op::Cast(_) | Op::Expand(_) | Op::Fused(_) => elementwise::map(kernel, n),
        Op::QuantPack(op) => quant::quant_pack(kernel, n, op),
        Op::QConv(op) => quant::qconv(kernel, n, op, t),
        Op::IntMatMul(_) => quant::int_matmul(kernel, n, t),
        Op::Patches(op) => quant::patches(kernel, n, op),
        // A loop and an if are schedule steps around their bodies' programs (`program`),
        // not kernels.
        Op::Loop(_) | Op::If(_) => Err(n.error("internal: control flow is lowered as schedule steps, not as a kernel")),
        // Sources have no kernel (listed, not `_`, so a new op does not compile until
        // someone decides how it is lowered).
        Op::Input(_) | Op::Const(_) => return None,
    };
    Some(k.and_then(|k| {
        dlc_kir::verify::kernel(&k).map_err(|e| n.error(format!("internal: lowered kernel does not verify: {e}")))?;
        Ok(k)
    }))
}
