//! The GPU kernels: one generator per op family, each written once against [`Gk`] (see
//! the module doc of `gpu`). Elementwise and fused ops, reductions, pools, data movement
//! and depthwise convolutions map one output element to a thread (most through the CPU
//! lowering's own per-element body, [`flat`]); matrix products and other convolutions
//! share one shared-memory tiled GEMM; softmax, LayerNorm and attention give a block to
//! a row and reduce with warp shuffles; any other op runs its CPU loop nest on one
//! thread ([`serial`]).
use super::{Factory, Geometry, Gk, Private, Reduce};
use crate::kernel::{Kb, R};
use crate::lower::elementwise::{activation, broadcast_strides, coalesce, Drive};
use crate::lower::elementwise::{compute_dtype, convert, llvm_type, widen};
use crate::lower::movement::{elem_int_type, load_index, GatherGeometry};
use crate::lower::reduce::{as_rows, per_output, Kind};
use crate::lower::{emit_body, NodeInfo};
use dlc_ir::ops::{normalize_axis, Activation, Attention, Gemm, LayerNormalization, PoolGeometry, SoftmaxMode};
use dlc_ir::{DType, Graph, NodeId, Op, OpKind};
use dlc_lower::linalg::MatMulShape;
use dlc_lower::pool::{Form, Pool};
use inkwell::values::{FloatValue, IntValue, PointerValue};
use inkwell::IntPredicate;

/// Threads per block of the one-element-per-thread kernels.
const FLAT: u32 = 256;

/// Emits the kernel of node `id` (`n`) and says how to launch it. Ops without a
/// parallel kernel here run their CPU loop nest on one GPU thread ([`serial`]).
pub(crate) fn lower(f: &Factory<'_, '_>, g: &Graph, id: NodeId, n: &NodeInfo) -> R<Geometry> {
    // Long rows: a block per output, reduced with warp shuffles.
    let rows = match n.op {
        Op::GlobalAveragePool(_) if n.inputs[0].dtype == DType::F32 => {
            let x = n.in_dims(0);
            Some((Kind::Mean, x[0] * x[1], x[2..].iter().product()))
        }
        _ => as_rows(n),
    };
    if let Some((kind, rows, len)) = rows.filter(|r| r.2 >= LONG_ROW) {
        return row_reduce(f, kind, rows, len);
    }
    match n.op.kind() {
        // One element (or output) per thread, through the op's kir kernel (an `each` nest).
        OpKind::Elementwise => {
            let k = n.kir().ok_or_else(|| n.unsupported("internal: an elementwise op without a kir lowering"))??;
            return flat(f, numel(n), |kb, drive| crate::kir::emit_with(kb, &k, drive));
        }
        OpKind::Reduction if per_output(n.op) => {
            if let Some(k) = n.kir() {
                let k = k?;
                return flat(f, numel(n), |kb, drive| crate::kir::emit_with(kb, &k, drive));
            }
        }
        _ => {}
    }
    match n.op {
        Op::MatMul(op) => matmul(f, n, op.act),
        Op::Gemm(op) => gemm(f, n, op),
        Op::Conv(op) => {
            n.require_f32()?;
            conv(f, n, op)
        }
        Op::MaxPool(op) => pool(f, n, &op.geometry(n.name, &n.inputs[0])?, Pool::Max),
        Op::AveragePool(op) => {
            let geo = op.geometry(n.name, &n.inputs[0])?;
            pool(f, n, &geo, Pool::Avg { count_include_pad: op.count_include_pad })
        }
        // One thread per plane, through the kir kernel's per-element form.
        Op::GlobalAveragePool(_) => {
            let k = dlc_lower::pool::global_avgpool(n.name, &n.lower_node(), Form::Elements)
                .map_err(|e| n.unsupported(e.reason))?;
            flat(f, n.in_dims(0)[..2].iter().product(), |kb, drive| crate::kir::emit_with(kb, &k, drive))
        }
        Op::Softmax(op) if op.mode != SoftmaxMode::Hardmax => softmax(f, n, op.axis, op.mode),
        Op::LayerNormalization(op) => layernorm(f, n, op),
        Op::Attention(op) => attention(f, n, op),
        Op::Gather(op) => gather(f, n, op.axis),
        Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_) => copy(f, n),
        // Per-element kernels from kir: the same kernel the CPU translates, one element
        // per thread.
        Op::Transpose(_)
        | Op::Slice(_)
        | Op::Trilu(_)
        | Op::GatherElements(_)
        | Op::Pad(_)
        | Op::ConvTranspose(_)
        | Op::GridSample(_)
        | Op::Einsum(_)
        | Op::BatchNormalization(_) => match n.kir() {
            Some(k) => {
                let k = k?;
                flat(f, numel(n), |kb, drive| crate::kir::emit_with(kb, &k, drive))
            }
            None => serial(f, g, id, n),
        },
        Op::Concat(op) => concat(f, n, op.axis),
        // No parallel kernel (yet): the CPU loop nest on one thread. Elementwise ops and
        // per-output reductions returned above; Softmax here is Hardmax.
        Op::Input(_)
        | Op::Const(_)
        | Op::Add(_)
        | Op::Sub(_)
        | Op::Mul(_)
        | Op::Div(_)
        | Op::Max(_)
        | Op::Min(_)
        | Op::Mod(_)
        | Op::Pow(_)
        | Op::PRelu(_)
        | Op::Equal(_)
        | Op::Greater(_)
        | Op::GreaterOrEqual(_)
        | Op::Less(_)
        | Op::LessOrEqual(_)
        | Op::And(_)
        | Op::Or(_)
        | Op::Xor(_)
        | Op::Not(_)
        | Op::BitwiseAnd(_)
        | Op::BitwiseOr(_)
        | Op::BitwiseXor(_)
        | Op::BitwiseNot(_)
        | Op::BitShift(_)
        | Op::Where(_)
        | Op::Cast(_)
        | Op::Abs(_)
        | Op::Neg(_)
        | Op::Sign(_)
        | Op::Relu(_)
        | Op::Sigmoid(_)
        | Op::Tanh(_)
        | Op::Exp(_)
        | Op::Log(_)
        | Op::Sqrt(_)
        | Op::Reciprocal(_)
        | Op::Sin(_)
        | Op::Cos(_)
        | Op::Tan(_)
        | Op::Asin(_)
        | Op::Acos(_)
        | Op::Atan(_)
        | Op::Sinh(_)
        | Op::Cosh(_)
        | Op::Asinh(_)
        | Op::Acosh(_)
        | Op::Atanh(_)
        | Op::Erf(_)
        | Op::Floor(_)
        | Op::Ceil(_)
        | Op::Round(_)
        | Op::Softplus(_)
        | Op::Softsign(_)
        | Op::Mish(_)
        | Op::HardSwish(_)
        | Op::HardSigmoid(_)
        | Op::LeakyRelu(_)
        | Op::Elu(_)
        | Op::Selu(_)
        | Op::Celu(_)
        | Op::ThresholdedRelu(_)
        | Op::Gelu(_)
        | Op::IsNaN(_)
        | Op::IsInf(_)
        | Op::Clip(_)
        | Op::Swish(_)
        | Op::Shrink(_)
        | Op::Expand(_)
        | Op::Fused(_)
        | Op::ReduceSum(_)
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
        | Op::ArgMin(_)
        | Op::NllLoss(_)
        | Op::CumSum(_)
        | Op::QConv(_)
        | Op::QuantPack(_)
        | Op::Softmax(_)
        | Op::ScatterElements(_)
        | Op::ScatterND(_) => serial(f, g, id, n),
    }
}

/// The CPU lowering of node `id` run by one thread of one block: correct for every op
/// the CPU backend has, but without parallelism (the fallback for ops with no GPU kernel
/// yet; docs/cuda.md lists them).
fn serial(f: &Factory<'_, '_>, g: &Graph, id: NodeId, n: &NodeInfo) -> R<Geometry> {
    if f.mode == super::Mode::Ptx {
        tracing::warn!(node = n.name, op = n.op.mnemonic(), "no parallel CUDA kernel: runs on one GPU thread");
    }
    let gk = f.kernel(32)?;
    gk.threads(|kb, t| kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| emit_body(kb, g, id, n)))?;
    Ok(Geometry { serial: true, ..gk.finish([1, 1, 1])? })
}

fn blocks(items: u64, per_block: u64) -> u64 {
    items.div_ceil(per_block).max(1)
}

/// Index `i` of a row-major `dims` as one index per dim.
fn unravel<'ctx>(kb: &Kb<'_, 'ctx>, i: IntValue<'ctx>, dims: &[u64]) -> R<Vec<IntValue<'ctx>>> {
    let mut idx = vec![kb.c(0); dims.len()];
    let mut rest = i;
    for (k, &d) in dims.iter().enumerate().rev() {
        if k == 0 {
            idx[k] = rest;
        } else {
            idx[k] = kb.b.build_int_unsigned_rem(rest, kb.c(d), "")?;
            rest = kb.b.build_int_unsigned_div(rest, kb.c(d), "")?;
        }
    }
    Ok(idx)
}

/// `sum idx[k] * strides[k]` for index `i` of `dims`.
fn offset<'ctx>(kb: &Kb<'_, 'ctx>, i: IntValue<'ctx>, dims: &[u64], strides: &[u64]) -> R<IntValue<'ctx>> {
    if dims.is_empty() {
        return Ok(kb.c(0));
    }
    let idx = unravel(kb, i, dims)?;
    kb.lin(&idx.into_iter().zip(strides.iter().copied()).collect::<Vec<_>>(), 0)
}

/// One thread per element of the iteration a CPU lowering hands its `drive` (`items`
/// elements): the lowering's own per-element body runs on each thread.
fn flat<'ctx>(
    f: &Factory<'_, 'ctx>,
    items: u64,
    lower: impl FnOnce(&Kb<'_, 'ctx>, Drive<'_, 'ctx>) -> R<()>,
) -> R<Geometry> {
    let gk = f.kernel(FLAT)?;
    let bx = gk.bid[0];
    lower(&gk.kb, &|_, dims, body| {
        gk.threads(|kb, t| {
            let i = kb.add(kb.mul(bx, kb.c(FLAT as u64))?, t)?;
            kb.if_then(kb.in_bounds(i, items)?, |kb| body(kb, &unravel(kb, i, dims)?))
        })
    })?;
    gk.finish([blocks(items, FLAT as u64), 1, 1])
}

fn numel(n: &NodeInfo) -> u64 {
    n.out_dims(0).iter().product()
}

/// Concat: one thread per output element, copying from the operand whose block along
/// the axis holds it.
fn concat(f: &Factory<'_, '_>, n: &NodeInfo, axis: i64) -> R<Geometry> {
    let out = n.out_dims(0);
    let a = normalize_axis(axis, out.len()).ok_or_else(|| n.unsupported("axis out of range"))?;
    let outer: u64 = out[..a].iter().product();
    let row: u64 = out[a..].iter().product();
    flat(f, outer * row, |kb, drive| {
        let ty = elem_int_type(kb, n.outputs[0].dtype.size());
        drive(kb, &[outer, row], &|kb, idx| {
            let (o, j) = (idx[0], idx[1]);
            let mut start = 0;
            for i in 0..n.inputs.len() {
                let block: u64 = n.in_dims(i)[a..].iter().product();
                let k = kb.sub(j, kb.c(start))?;
                kb.if_then(kb.in_bounds(k, block)?, |kb| {
                    let v =
                        kb.b.build_load(ty, kb.gep(ty.into(), kb.param(i), kb.lin(&[(o, block), (k, 1)], 0)?)?, "")?;
                    let dst = kb.lin(&[(o, row), (j, 1)], 0)?;
                    kb.b.build_store(kb.gep(ty.into(), kb.param(n.inputs.len()), dst)?, v)?;
                    Ok(())
                })?;
                start += block;
            }
            Ok(())
        })
    })
}

/// Reshape, Flatten or Identity when the memory plan could not make it a view.
fn copy(f: &Factory<'_, '_>, n: &NodeInfo) -> R<Geometry> {
    let items = numel(n);
    flat(f, items, |kb, drive| {
        let ty = elem_int_type(kb, n.outputs[0].dtype.size());
        drive(kb, &[items], &|kb, idx| {
            let v = kb.b.build_load(ty, kb.gep(ty.into(), kb.param(0), idx[0])?, "")?;
            kb.b.build_store(kb.gep(ty.into(), kb.param(1), idx[0])?, v)?;
            Ok(())
        })
    })
}

/// One thread per output, through the kir kernel's per-element form.
fn pool(f: &Factory<'_, '_>, n: &NodeInfo, g: &PoolGeometry, kind: Pool) -> R<Geometry> {
    let k =
        dlc_lower::pool::pool(n.name, &n.lower_node(), g, kind, Form::Elements).map_err(|e| n.unsupported(e.reason))?;
    flat(f, numel(n), |kb, drive| crate::kir::emit_with(kb, &k, drive))
}

/// Gather: one thread per output element (consecutive threads copy consecutive elements
/// of a row), the index loaded and clamped as on the CPU.
fn gather(f: &Factory<'_, '_>, n: &NodeInfo, axis: i64) -> R<Geometry> {
    let Some(geo) = GatherGeometry::of(n, axis)? else {
        // Nothing to copy: an empty kernel keeps the launch table one entry per node.
        return flat(f, 0, |_, _| Ok(()));
    };
    let es = n.inputs[0].dtype.size() as u64;
    let row = geo.block / es;
    flat(f, geo.outer * geo.count * row, |kb, drive| {
        let ty = elem_int_type(kb, es as usize);
        drive(kb, &[geo.outer, geo.count, row], &|kb, idx| {
            let (o, j, e) = (idx[0], idx[1], idx[2]);
            let k = load_index(kb, n, kb.param(1), j, geo.extent)?;
            let src = kb.lin(&[(o, geo.extent * row), (k, row), (e, 1)], 0)?;
            let v = kb.b.build_load(ty, kb.gep(ty.into(), kb.param(0), src)?, "")?;
            let dst = kb.lin(&[(o, geo.count * row), (j, row), (e, 1)], 0)?;
            kb.b.build_store(kb.gep(ty.into(), kb.param(2), dst)?, v)?;
            Ok(())
        })
    })
}

/// Reads element (row, column) of an operand of product `batch`.
type Load<'s, 'ctx> = &'s dyn Fn(&Kb<'_, 'ctx>, IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>) -> R<FloatValue<'ctx>>;
/// Writes the accumulated element (row, column) of product `batch`.
type Store<'s, 'ctx> =
    &'s dyn Fn(&Kb<'_, 'ctx>, IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>, FloatValue<'ctx>) -> R<()>;

/// `C[b] = A[b] x B[b]` (`m x k` by `k x n`) for `b < batch`, with operand reads and the
/// result's write given as functions of (batch, row, column).
struct GemmSpec<'s, 'ctx> {
    batch: u64,
    m: u64,
    n: u64,
    k: u64,
    load_a: Load<'s, 'ctx>,
    load_b: Load<'s, 'ctx>,
    store: Store<'s, 'ctx>,
}

/// The tiled GEMM: a block computes a `bm x bn` tile of C, staging `bk`-deep slices of
/// A and B in shared memory (A transposed, so the inner loop reads both along the
/// tile); each of the 256 threads accumulates `tm x tn` outputs in registers, at rows
/// and columns strided by the thread grid so shared-memory reads and global writes are
/// consecutive across a warp.
fn tiled_gemm<'ctx>(f: &Factory<'_, 'ctx>, s: &GemmSpec<'_, 'ctx>) -> R<Geometry> {
    const BK: u64 = 16;
    // Thin products (a vector times a matrix, the MLP's layers) waste less on short tiles.
    let (bm, bn, tm, tn) = if s.m <= 16 { (16u64, 64u64, 1u64, 4u64) } else { (64, 64, 4, 4) };
    let threads = (bm / tm) * (bn / tn);
    let (cols, rows) = (bn / tn, bm / tm);
    let gk = f.kernel(threads as u32)?;
    let [bx, by, bz] = gk.bid;
    let i0 = gk.kb.mul(by, gk.kb.c(bm))?;
    let j0 = gk.kb.mul(bx, gk.kb.c(bn))?;
    let a_s = gk.shared(BK * bm)?;
    let b_s = gk.shared(BK * bn)?;
    let acc: Private = gk.private(tm * tn)?;
    let tmp = gk.kb.alloca_f32()?;
    gk.threads(|kb, t| {
        for r in 0..tm * tn {
            kb.set(acc.at(kb, t, r)?, kb.cf(0.0))?;
        }
        Ok(())
    })?;
    // Thread `t`'s share of copying the `rows x cols` tile at (`r0`, `c0`) of an
    // `extent[0] x extent[1]` operand into shared memory `dst` (row-major, or column-major
    // when `transpose`), zero outside the operand.
    let stage = |kb: &Kb<'_, 'ctx>,
                 t: IntValue<'ctx>,
                 dst,
                 [rows, cols]: [u64; 2],
                 [r0, c0]: [IntValue<'ctx>; 2],
                 extent: [u64; 2],
                 transpose: bool,
                 load: &dyn Fn(&Kb<'_, 'ctx>, IntValue<'ctx>, IntValue<'ctx>) -> R<FloatValue<'ctx>>|
     -> R<()> {
        for r in 0..(rows * cols) / threads {
            let e = kb.add(kb.c(r * threads), t)?;
            let (p, q) =
                (kb.b.build_int_unsigned_div(e, kb.c(cols), "")?, kb.b.build_int_unsigned_rem(e, kb.c(cols), "")?);
            let (gr, gc) = (kb.add(r0, p)?, kb.add(c0, q)?);
            kb.set(tmp, kb.cf(0.0))?;
            kb.if_then(kb.and(kb.in_bounds(gr, extent[0])?, kb.in_bounds(gc, extent[1])?)?, |kb| {
                kb.set(tmp, load(kb, gr, gc)?)
            })?;
            let at = if transpose { kb.lin(&[(q, rows), (p, 1)], 0)? } else { kb.lin(&[(p, cols), (q, 1)], 0)? };
            kb.store_f32(dst, at, kb.get(tmp)?)?;
        }
        Ok(())
    };
    gk.kb.for_n(s.k.div_ceil(BK), |kb, kt| {
        let k0 = kb.mul(kt, kb.c(BK))?;
        gk.threads(|kb, t| {
            stage(kb, t, a_s, [bm, BK], [i0, k0], [s.m, s.k], true, &|kb, i, k| (s.load_a)(kb, bz, i, k))?;
            stage(kb, t, b_s, [BK, bn], [k0, j0], [s.k, s.n], false, &|kb, k, j| (s.load_b)(kb, bz, k, j))
        })?;
        gk.threads(|kb, t| {
            let ty = kb.b.build_int_unsigned_div(t, kb.c(cols), "")?;
            let tx = kb.b.build_int_unsigned_rem(t, kb.c(cols), "")?;
            kb.for_n(BK, |kb, kk| {
                let mut a = Vec::new();
                for r in 0..tm {
                    a.push(kb.load_f32(a_s, kb.lin(&[(kk, bm), (ty, 1)], r * rows)?)?);
                }
                let mut b = Vec::new();
                for c in 0..tn {
                    b.push(kb.load_f32(b_s, kb.lin(&[(kk, bn), (tx, 1)], c * cols)?)?);
                }
                for r in 0..tm {
                    for c in 0..tn {
                        let slot = acc.at(kb, t, r * tn + c)?;
                        let v = kb.call_intrinsic(
                            "llvm.fma",
                            &[kb.f32t.into()],
                            &[a[r as usize].into(), b[c as usize].into(), kb.get(slot)?.into()],
                        )?;
                        kb.set(slot, v.into_float_value())?;
                    }
                }
                Ok(())
            })
        })
    })?;
    gk.threads(|kb, t| {
        let ty = kb.b.build_int_unsigned_div(t, kb.c(cols), "")?;
        let tx = kb.b.build_int_unsigned_rem(t, kb.c(cols), "")?;
        for r in 0..tm {
            for c in 0..tn {
                let i = kb.add(i0, kb.add(ty, kb.c(r * rows))?)?;
                let j = kb.add(j0, kb.add(tx, kb.c(c * cols))?)?;
                let inside = kb.and(kb.in_bounds(i, s.m)?, kb.in_bounds(j, s.n)?)?;
                kb.if_then(inside, |kb| (s.store)(kb, bz, i, j, kb.get(acc.at(kb, t, r * tn + c)?)?))?;
            }
        }
        Ok(())
    })?;
    gk.finish([s.n.div_ceil(bn), s.m.div_ceil(bm), s.batch])
}

fn matmul(f: &Factory<'_, '_>, n: &NodeInfo, act: Activation) -> R<Geometry> {
    n.require_f32()?;
    let MatMulShape { m, k, n: nn, batch: batch_dims, a_strides: sa, b_strides: sb } =
        MatMulShape::of(&n.in_dims(0), &n.in_dims(1));
    let bias = n.inputs.len() == 3;
    let spec = GemmSpec {
        batch: batch_dims.iter().product(),
        m,
        n: nn,
        k,
        load_a: &|kb, z, i, kk| {
            kb.load_f32(kb.param(0), kb.add(offset(kb, z, &batch_dims, &sa)?, kb.lin(&[(i, k), (kk, 1)], 0)?)?)
        },
        load_b: &|kb, z, kk, j| {
            kb.load_f32(kb.param(1), kb.add(offset(kb, z, &batch_dims, &sb)?, kb.lin(&[(kk, nn), (j, 1)], 0)?)?)
        },
        store: &|kb, z, i, j, mut v| {
            if bias {
                v = kb.fadd(v, kb.load_f32(kb.param(2), j)?)?;
            }
            let y = kb.lin(&[(z, m * nn), (i, nn), (j, 1)], 0)?;
            kb.store_f32(kb.param(n.inputs.len()), y, activation(kb, act, v)?)
        },
    };
    tiled_gemm(f, &spec)
}

fn gemm(f: &Factory<'_, '_>, n: &NodeInfo, op: &Gemm) -> R<Geometry> {
    n.require_f32()?;
    let (a, b) = (n.in_dims(0), n.in_dims(1));
    let (m, k) = if op.trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let nn = if op.trans_b { b[0] } else { b[1] };
    let c_strides = (n.inputs.len() == 3).then(|| broadcast_strides(&n.in_dims(2), &[m, nn]));
    let spec = GemmSpec {
        batch: 1,
        m,
        n: nn,
        k,
        load_a: &|kb, _, i, kk| {
            let at = if op.trans_a { kb.lin(&[(kk, a[1]), (i, 1)], 0)? } else { kb.lin(&[(i, a[1]), (kk, 1)], 0)? };
            kb.load_f32(kb.param(0), at)
        },
        load_b: &|kb, _, kk, j| {
            let at = if op.trans_b { kb.lin(&[(j, b[1]), (kk, 1)], 0)? } else { kb.lin(&[(kk, b[1]), (j, 1)], 0)? };
            kb.load_f32(kb.param(1), at)
        },
        store: &|kb, _, i, j, acc| {
            let mut v = if op.alpha == 1.0 { acc } else { kb.fmul(acc, kb.cf(op.alpha))? };
            if let Some(cs) = &c_strides {
                let mut c = kb.load_f32(kb.param(2), kb.lin(&[(i, cs[0]), (j, cs[1])], 0)?)?;
                if op.beta != 1.0 {
                    c = kb.fmul(c, kb.cf(op.beta))?;
                }
                v = kb.fadd(v, c)?;
            }
            kb.store_f32(kb.param(n.inputs.len()), kb.lin(&[(i, nn), (j, 1)], 0)?, activation(kb, op.act, v)?)
        },
    };
    tiled_gemm(f, &spec)
}

/// Convolution as an implicit GEMM per image and group: `W[m, (c, ky, kx)]` times the
/// input patches `X[(c, ky, kx), (oy, ox)]`, read in place (zero outside the image).
fn conv<'ctx>(f: &Factory<'_, 'ctx>, n: &NodeInfo, op: &dlc_ir::ops::Conv) -> R<Geometry> {
    let geo = op.geometry(n.name, &n.inputs[0], &n.inputs[1])?;
    let (x, w) = (n.in_dims(0), n.in_dims(1));
    if x.len() != 4 {
        return Err(n.unsupported("only 2-D convolution has a CUDA kernel"));
    }
    let groups = op.group as u64;
    let (batch, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
    let mg = m / groups;
    let [oh, ow] = geo.output;
    let kk = cg * kh * kw;
    let bias = n.inputs.len() >= 3;
    let residual = n.inputs.len() == 4;
    let split = |kb: &Kb<'_, 'ctx>, z: IntValue<'ctx>| -> R<(IntValue<'ctx>, IntValue<'ctx>)> {
        Ok((kb.b.build_int_unsigned_div(z, kb.c(groups), "")?, kb.b.build_int_unsigned_rem(z, kb.c(groups), "")?))
    };
    if mg == 1 {
        return conv_direct(f, n, op, &geo);
    }
    let spec = GemmSpec {
        batch: batch * groups,
        m: mg,
        n: oh * ow,
        k: kk,
        load_a: &|kb, z, i, k| {
            let (_, g) = split(kb, z)?;
            kb.load_f32(kb.param(1), kb.lin(&[(g, mg * kk), (i, kk), (k, 1)], 0)?)
        },
        load_b: &|kb, z, k, j| {
            let (img, g) = split(kb, z)?;
            let ck = unravel(kb, k, &[cg, kh, kw])?;
            let pix = unravel(kb, j, &[oh, ow])?;
            let iy =
                kb.sub(kb.lin(&[(pix[0], geo.strides[0]), (ck[1], geo.dilations[0])], 0)?, kb.c(geo.pad_begin[0]))?;
            let ix =
                kb.sub(kb.lin(&[(pix[1], geo.strides[1]), (ck[2], geo.dilations[1])], 0)?, kb.c(geo.pad_begin[1]))?;
            let inside = kb.and(kb.in_bounds(iy, h)?, kb.in_bounds(ix, wd)?)?;
            let ch = kb.add(kb.mul(g, kb.c(cg))?, ck[0])?;
            let at = kb.lin(&[(img, c * h * wd), (ch, h * wd), (iy, wd), (ix, 1)], 0)?;
            // Outside the image: read element 0 and use zero.
            let v = kb.load_f32(kb.param(0), kb.select_i(inside, at, kb.c(0))?)?;
            kb.select_f(inside, v, kb.cf(0.0))
        },
        store: &|kb, z, i, j, mut v| {
            let (img, g) = split(kb, z)?;
            let ch = kb.add(kb.mul(g, kb.c(mg))?, i)?;
            if bias {
                v = kb.fadd(v, kb.load_f32(kb.param(2), ch)?)?;
            }
            let y = kb.lin(&[(img, m * oh * ow), (ch, oh * ow), (j, 1)], 0)?;
            if residual {
                v = kb.fadd(v, kb.load_f32(kb.param(3), y)?)?;
            }
            kb.store_f32(kb.param(n.inputs.len()), y, activation(kb, op.act, v)?)
        },
    };
    tiled_gemm(f, &spec)
}

/// A convolution with one output channel per group (depthwise): one thread per output
/// element, summing its window (a GEMM tile would leave most threads idle).
fn conv_direct(f: &Factory<'_, '_>, n: &NodeInfo, op: &dlc_ir::ops::Conv, geo: &PoolGeometry) -> R<Geometry> {
    let (x, w) = (n.in_dims(0), n.in_dims(1));
    let (batch, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
    let [oh, ow] = geo.output;
    let (bias, residual) = (n.inputs.len() >= 3, n.inputs.len() == 4);
    flat(f, batch * m * oh * ow, |kb, drive| {
        let acc = kb.alloca_f32()?;
        drive(kb, &[batch, m, oh, ow], &|kb, idx| {
            let (img, ch, oy, ox) = (idx[0], idx[1], idx[2], idx[3]);
            kb.set(acc, kb.cf(0.0))?;
            kb.nest(&[cg, kh, kw], |kb, k| {
                let iy =
                    kb.sub(kb.lin(&[(oy, geo.strides[0]), (k[1], geo.dilations[0])], 0)?, kb.c(geo.pad_begin[0]))?;
                let ix =
                    kb.sub(kb.lin(&[(ox, geo.strides[1]), (k[2], geo.dilations[1])], 0)?, kb.c(geo.pad_begin[1]))?;
                let inside = kb.and(kb.in_bounds(iy, h)?, kb.in_bounds(ix, wd)?)?;
                // Channel `ch * cg + k` of the input: group `ch`, as there is one output per group.
                let at = kb.lin(&[(img, c * h * wd), (ch, cg * h * wd), (k[0], h * wd), (iy, wd), (ix, 1)], 0)?;
                let xv = kb.load_f32(kb.param(0), kb.select_i(inside, at, kb.c(0))?)?;
                let xv = kb.select_f(inside, xv, kb.cf(0.0))?;
                let wv = kb
                    .load_f32(kb.param(1), kb.lin(&[(ch, cg * kh * kw), (k[0], kh * kw), (k[1], kw), (k[2], 1)], 0)?)?;
                let v =
                    kb.call_intrinsic("llvm.fma", &[kb.f32t.into()], &[xv.into(), wv.into(), kb.get(acc)?.into()])?;
                kb.set(acc, v.into_float_value())
            })?;
            let mut v = kb.get(acc)?;
            if bias {
                v = kb.fadd(v, kb.load_f32(kb.param(2), ch)?)?;
            }
            let y = kb.lin(&[(img, m * oh * ow), (ch, oh * ow), (oy, ow), (ox, 1)], 0)?;
            if residual {
                v = kb.fadd(v, kb.load_f32(kb.param(3), y)?)?;
            }
            kb.store_f32(kb.param(n.inputs.len()), y, activation(kb, op.act, v)?)
        })
    })
}

/// Rows at least this long are reduced by a block rather than a thread.
const LONG_ROW: u64 = 128;

/// A reduction of `rows` rows of `len` contiguous f32: a block per row, each thread a
/// strided partial, then a block reduction with warp shuffles.
fn row_reduce(f: &Factory<'_, '_>, kind: Kind, rows: u64, len: u64) -> R<Geometry> {
    let gk = f.kernel(row_threads(len))?;
    let step = gk.threads as u64;
    let kb0 = &gk.kb;
    let base = kb0.mul(gk.bid[0], kb0.c(len))?;
    let (px, py) = (kb0.param(0), kb0.param(1));
    let op = match kind {
        Kind::Max => Reduce::Max,
        Kind::Min => Reduce::Min,
        _ => Reduce::Sum,
    };
    let v = gk.private(1)?;
    let acc = kb0.alloca_f32()?;
    gk.threads(|kb, t| {
        kb.set(acc, kb.cf(op.identity()))?;
        Gk::strided(kb, t, len, step, |kb, l| {
            let x = kb.load_f32(px, kb.add(base, l)?)?;
            let term = match kind {
                Kind::SumSquare | Kind::L2 => kb.fmul(x, x)?,
                Kind::L1 => kb.libm("fabsf", x)?,
                _ => x,
            };
            kb.set(acc, op.combine(kb, kb.get(acc)?, term)?)
        })?;
        kb.set(v.at(kb, t, 0)?, kb.get(acc)?)
    })?;
    let total = gk.block_reduce(v, op)?;
    gk.threads(|kb, t| {
        kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| {
            let r = kb.get(total)?;
            let r = match kind {
                Kind::Mean => kb.fdiv(r, kb.cf(len as f32))?,
                Kind::L2 => kb.libm("sqrtf", r)?,
                _ => r,
            };
            kb.store_f32(py, gk.bid[0], r)
        })
    })?;
    gk.finish([rows, 1, 1])
}

/// Threads for a block that owns a row of `len` elements.
fn row_threads(len: u64) -> u32 {
    if len >= 256 {
        256
    } else {
        128
    }
}

/// Softmax or LogSoftmax.
fn softmax<'ctx>(f: &Factory<'_, 'ctx>, n: &NodeInfo, axis: i64, mode: SoftmaxMode) -> R<Geometry> {
    n.require_f32()?;
    let d = n.in_dims(0);
    let a = normalize_axis(axis, d.len()).ok_or_else(|| n.unsupported(format!("axis {axis} out of range")))?;
    let (outer, len, inner) = (d[..a].iter().product::<u64>(), d[a], d[a + 1..].iter().product::<u64>());
    let gk = f.kernel(row_threads(len))?;
    let step = gk.threads as u64;
    let row = gk.bid[0];
    let (px, py) = (gk.kb.param(0), gk.kb.param(1));
    let base = {
        let kb = &gk.kb;
        let o = kb.b.build_int_unsigned_div(row, kb.c(inner), "")?;
        let i = kb.b.build_int_unsigned_rem(row, kb.c(inner), "")?;
        kb.lin(&[(o, len * inner), (i, 1)], 0)?
    };
    let at = |kb: &Kb<'_, 'ctx>, l: IntValue<'ctx>| kb.add(base, kb.mul(l, kb.c(inner))?);
    let v = gk.private(1)?;
    let acc = gk.kb.alloca_f32()?;
    gk.threads(|kb, t| {
        kb.set(acc, kb.cf(f32::NEG_INFINITY))?;
        Gk::strided(kb, t, len, step, |kb, l| kb.set(acc, kb.fmax(kb.get(acc)?, kb.load_f32(px, at(kb, l)?)?)?))?;
        kb.set(v.at(kb, t, 0)?, kb.get(acc)?)
    })?;
    let mx = gk.block_reduce(v, Reduce::Max)?;
    gk.threads(|kb, t| {
        kb.set(acc, kb.cf(0.0))?;
        let m = kb.get(mx)?;
        Gk::strided(kb, t, len, step, |kb, l| {
            let e = kb.libm("expf", kb.fsub(kb.load_f32(px, at(kb, l)?)?, m)?)?;
            kb.store_f32(py, at(kb, l)?, e)?;
            kb.set(acc, kb.fadd(kb.get(acc)?, e)?)
        })?;
        kb.set(v.at(kb, t, 0)?, kb.get(acc)?)
    })?;
    let sum = gk.block_reduce(v, Reduce::Sum)?;
    gk.threads(|kb, t| {
        if mode == SoftmaxMode::LogSoftmax {
            // x - max - log(sum)
            let shift = kb.fadd(kb.get(mx)?, kb.libm("logf", kb.get(sum)?)?)?;
            return Gk::strided(kb, t, len, step, |kb, l| {
                let p = at(kb, l)?;
                kb.store_f32(py, p, kb.fsub(kb.load_f32(px, p)?, shift)?)
            });
        }
        let inv = kb.fdiv(kb.cf(1.0), kb.get(sum)?)?;
        Gk::strided(kb, t, len, step, |kb, l| {
            let p = at(kb, l)?;
            kb.store_f32(py, p, kb.fmul(kb.load_f32(py, p)?, inv)?)
        })
    })?;
    gk.finish([outer * inner, 1, 1])
}

fn layernorm<'ctx>(f: &Factory<'_, 'ctx>, n: &NodeInfo, op: &LayerNormalization) -> R<Geometry> {
    n.require_f32()?;
    let x = n.in_dims(0);
    let a = normalize_axis(op.axis, x.len()).ok_or_else(|| n.unsupported(format!("axis {} out of range", op.axis)))?;
    let rows: u64 = x[..a].iter().product();
    let norm_dims = &x[a..];
    let len: u64 = norm_dims.iter().product();
    let params = if op.skip { n.inputs.len() - 1 } else { n.inputs.len() };
    let has_bias = params == 3;
    let contiguous = broadcast_strides(norm_dims, norm_dims);
    let ss = broadcast_strides(&n.in_dims(1), norm_dims);
    let bs = if has_bias { broadcast_strides(&n.in_dims(2), norm_dims) } else { contiguous.clone() };
    let (dims, st) = coalesce(norm_dims, &[contiguous, ss, bs]);
    let stats = n.outputs.len() == 3;
    let gk = f.kernel(row_threads(len))?;
    let step = gk.threads as u64;
    let row = gk.bid[0];
    let kb0 = &gk.kb;
    let (px, ps, py) = (kb0.param(0), kb0.param(1), kb0.param(n.inputs.len()));
    let pb = has_bias.then(|| kb0.param(2));
    let pskip = op.skip.then(|| kb0.param(n.inputs.len() - 1));
    let base = kb0.mul(row, kb0.c(len))?;
    let xv = |kb: &Kb<'_, 'ctx>, l: IntValue<'ctx>| -> R<FloatValue<'ctx>> {
        let i = kb.add(base, l)?;
        let mut v = kb.load_f32(px, i)?;
        if let Some(p) = pskip {
            v = kb.fadd(v, kb.load_f32(p, i)?)?;
        }
        Ok(v)
    };
    let v = gk.private(1)?;
    let acc = kb0.alloca_f32()?;
    let inv_len = 1.0 / len as f32;
    gk.threads(|kb, t| {
        kb.set(acc, kb.cf(0.0))?;
        if !op.rms {
            Gk::strided(kb, t, len, step, |kb, l| kb.set(acc, kb.fadd(kb.get(acc)?, xv(kb, l)?)?))?;
        }
        kb.set(v.at(kb, t, 0)?, kb.get(acc)?)
    })?;
    let sum = gk.block_reduce(v, Reduce::Sum)?;
    let mean = |kb: &Kb<'_, 'ctx>| kb.fdiv(kb.get(sum)?, kb.cf(len as f32));
    gk.threads(|kb, t| {
        kb.set(acc, kb.cf(0.0))?;
        let mu = mean(kb)?;
        Gk::strided(kb, t, len, step, |kb, l| {
            let d = kb.fsub(xv(kb, l)?, mu)?;
            kb.set(acc, kb.fadd(kb.get(acc)?, kb.fmul(d, d)?)?)
        })?;
        kb.set(v.at(kb, t, 0)?, kb.get(acc)?)
    })?;
    let sq = gk.block_reduce(v, Reduce::Sum)?;
    gk.threads(|kb, t| {
        let mu = mean(kb)?;
        let var = kb.fmul(kb.get(sq)?, kb.cf(inv_len))?;
        let inv = kb.fdiv(kb.cf(1.0), kb.libm("sqrtf", kb.fadd(var, kb.cf(op.epsilon))?)?)?;
        if stats {
            kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| {
                kb.store_f32(kb.param(n.inputs.len() + 1), row, mu)?;
                kb.store_f32(kb.param(n.inputs.len() + 2), row, inv)
            })?;
        }
        Gk::strided(kb, t, len, step, |kb, l| {
            let mut y =
                kb.fmul(kb.fmul(kb.fsub(xv(kb, l)?, mu)?, inv)?, kb.load_f32(ps, offset(kb, l, &dims, &st[1])?)?)?;
            if let Some(pb) = pb {
                y = kb.fadd(y, kb.load_f32(pb, offset(kb, l, &dims, &st[2])?)?)?;
            }
            kb.store_f32(py, kb.add(base, l)?, y)
        })
    })?;
    gk.finish([rows, 1, 1])
}

/// One block per (query row, head, batch): the query row in shared memory, one thread
/// per key for the scores (kept in shared memory), block reductions for the softmax's
/// max and sum, then one thread per output channel for the weighted sum of values.
fn attention<'ctx>(f: &Factory<'_, 'ctx>, n: &NodeInfo, op: &Attention) -> R<Geometry> {
    let [b, h, sq, sk, d, dv] = dlc_lower::attention::dims(&n.lower_node(), op).map_err(|e| n.unsupported(e.reason))?;
    if (d + sk + 2 * 33) * 4 > 48 * 1024 {
        return Err(n.unsupported(format!("key length {sk} and head size {d} need more than 48 KiB of shared memory")));
    }
    let gk = f.kernel(128)?;
    let step = gk.threads as u64;
    let [i, hi, bi] = gk.bid;
    let kb0 = &gk.kb;
    let (pq, pk, pv, py) = (kb0.param(0), kb0.param(1), kb0.param(2), kb0.param(n.inputs.len()));
    let mask = n.inputs.get(3).map(|t| (kb0.param(3), t.dtype, t.shape.as_fixed().unwrap_or_default()));
    let q_s = gk.shared(d)?;
    let scores = gk.shared(sk)?;
    let q_row = kb0.lin(&[(bi, sq * h * d), (i, h * d), (hi, d)], 0)?;
    let y_row = kb0.lin(&[(bi, sq * h * dv), (i, h * dv), (hi, dv)], 0)?;
    let vals = gk.private(1)?;
    let acc = kb0.alloca_f32()?;
    let dot = kb0.alloca_f32()?;
    gk.threads(|kb, t| Gk::strided(kb, t, d, step, |kb, e| kb.store_f32(q_s, e, kb.load_f32(pq, kb.add(q_row, e)?)?)))?;
    gk.threads(|kb, t| {
        kb.set(acc, kb.cf(f32::NEG_INFINITY))?;
        Gk::strided(kb, t, sk, step, |kb, j| {
            let k_row = kb.lin(&[(bi, sk * h * d), (j, h * d), (hi, d)], 0)?;
            kb.set(dot, kb.cf(0.0))?;
            kb.for_n(d, |kb, e| {
                let p = kb.fmul(kb.load_f32(q_s, e)?, kb.load_f32(pk, kb.add(k_row, e)?)?)?;
                kb.set(dot, kb.fadd(kb.get(dot)?, p)?)
            })?;
            let mut s = kb.fmul(kb.get(dot)?, kb.cf(op.scale))?;
            if let Some(m) = &mask {
                s = kb.fadd(s, mask_term(kb, op, m, [b, h, sq, sk], [bi, hi, i, j])?)?;
            }
            kb.store_f32(scores, j, s)?;
            kb.set(acc, kb.fmax(kb.get(acc)?, s)?)
        })?;
        kb.set(vals.at(kb, t, 0)?, kb.get(acc)?)
    })?;
    let mx = gk.block_reduce(vals, Reduce::Max)?;
    gk.threads(|kb, t| {
        kb.set(acc, kb.cf(0.0))?;
        let m = kb.get(mx)?;
        Gk::strided(kb, t, sk, step, |kb, j| {
            let e = kb.libm("expf", kb.fsub(kb.load_f32(scores, j)?, m)?)?;
            kb.store_f32(scores, j, e)?;
            kb.set(acc, kb.fadd(kb.get(acc)?, e)?)
        })?;
        kb.set(vals.at(kb, t, 0)?, kb.get(acc)?)
    })?;
    let sum = gk.block_reduce(vals, Reduce::Sum)?;
    gk.threads(|kb, t| {
        let inv = kb.fdiv(kb.cf(1.0), kb.get(sum)?)?;
        Gk::strided(kb, t, dv, step, |kb, e| {
            kb.set(acc, kb.cf(0.0))?;
            kb.for_n(sk, |kb, j| {
                let vv = kb.load_f32(pv, kb.add(kb.lin(&[(bi, sk * h * dv), (j, h * dv), (hi, dv)], 0)?, e)?)?;
                kb.set(acc, kb.fadd(kb.get(acc)?, kb.fmul(kb.load_f32(scores, j)?, vv)?)?)
            })?;
            kb.store_f32(py, kb.add(y_row, e)?, kb.fmul(kb.get(acc)?, inv)?)
        })
    })?;
    gk.finish([sq, h, b])
}

/// The mask's additive term for score `[bi, hi, i, j]` (see [`Attention`]): a float mask
/// broadcast to `full`, or `(1 - mask[bi, j]) * padding_fill` for a key-padding mask.
fn mask_term<'ctx>(
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
