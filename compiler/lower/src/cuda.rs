//! The CUDA kernels: what each node runs on an NVIDIA GPU, as kir.
//!
//! Three shapes of kernel, which the CUDA translator tells apart by their form alone:
//! - a **per-element** kernel (an `each` nest: elementwise and fused ops, per-output
//!   reductions, pools, data movement, depthwise convolutions) runs one element per
//!   thread; most are the CPU's own kernel ([`crate::lower`]), the rest (gather, concat,
//!   copies, depthwise convolution) are written here in per-element form;
//! - a **block** kernel ([`dlc_kir::Block`]: matrix products and convolutions as one
//!   shared-memory tiled GEMM, softmax, LayerNorm, long-row reductions and attention as
//!   a block per row with `blockreduce`) states its grid and block itself;
//! - any other kernel is the CPU's loop nest, run by one thread (docs/cuda.md lists the
//!   ops that still take it).
//!
//! Every kernel here is f32 where it computes (as the inkwell generators it replaces
//! were); the per-element ones move any dtype.
use crate::elementwise::activation;
use crate::reduce::Kind;
use crate::shape::{broadcast_strides, coalesce};
use crate::{in_bounds, pool, LowerError, Node, Target};
use dlc_ir::ops::{normalize_axis, resolve_axes, Activation, Attention, Conv, Gemm, LayerNormalization, SoftmaxMode};
use dlc_ir::{DType, Op, OpKind};
use dlc_kir::{
    Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, ReduceOp, Stmt, Ty, UnOp, ValId,
};

type B = KernelBuilder;

/// Rows at least this long are reduced by a block rather than a thread.
pub const LONG_ROW: u64 = 128;

/// The CUDA kernel of a node (see the module doc), or `None` for a source.
pub fn lower(kernel: &str, n: &Node, t: &Target) -> Option<Result<Kernel, LowerError>> {
    let k = match gpu_kernel(kernel, n) {
        Some(k) => k,
        None => return crate::lower(kernel, n, t),
    };
    Some(k.and_then(|k| {
        dlc_kir::verify::kernel(&k).map_err(|e| n.error(format!("internal: CUDA kernel does not verify: {e}")))?;
        Ok(k)
    }))
}

/// The kernels written for the GPU; `None` where the CPU's kernel serves.
fn gpu_kernel(kernel: &str, n: &Node) -> Option<Result<Kernel, LowerError>> {
    if !n.inputs.iter().chain(n.outputs).all(|t| t.shape.is_fixed()) {
        return None;
    }
    let dims = |t: &dlc_ir::TensorType| t.shape.as_fixed().unwrap_or_default();
    // Long rows: a block per output, reduced with warp shuffles.
    let rows = match n.op {
        Op::GlobalAveragePool(_) if n.inputs[0].dtype == DType::F32 => {
            let x = dims(&n.inputs[0]);
            Some((Kind::Mean, x[0] * x[1], x[2..].iter().product()))
        }
        _ => as_rows(n),
    };
    if let Some((kind, rows, len)) = rows.filter(|r| r.2 >= LONG_ROW) {
        return Some(Ok(row_reduce(kernel, kind, rows, len)));
    }
    if matches!(n.op.kind(), OpKind::Elementwise | OpKind::Reduction) {
        return None;
    }
    Some(match n.op {
        Op::MatMul(op) => n.require_f32().and_then(|_| matmul(kernel, n, op.act)),
        Op::Gemm(op) => n.require_f32().and_then(|_| gemm(kernel, n, op)),
        Op::Conv(op) => n.require_f32().and_then(|_| conv(kernel, n, op)),
        Op::MaxPool(op) => match op.window(n.name, &n.inputs[0]) {
            Ok(g) => pool::pool(kernel, n, &g, pool::Pool::Max, pool::Form::Elements),
            Err(e) => Err(n.error(e.to_string())),
        },
        Op::AveragePool(op) => match op.window(n.name, &n.inputs[0]) {
            Ok(g) => {
                let kind = pool::Pool::Avg { count_include_pad: op.count_include_pad };
                pool::pool(kernel, n, &g, kind, pool::Form::Elements)
            }
            Err(e) => Err(n.error(e.to_string())),
        },
        // One thread per plane.
        Op::GlobalAveragePool(_) => pool::global_avgpool(kernel, n, pool::Form::Elements),
        Op::Softmax(op) if op.mode != SoftmaxMode::Hardmax => {
            n.require_f32().and_then(|_| softmax(kernel, n, op.axis, op.mode))
        }
        Op::LayerNormalization(op) => n.require_f32().and_then(|_| layernorm(kernel, n, op)),
        Op::Attention(op) => attention(kernel, n, op),
        Op::Gather(op) => gather(kernel, n, op.axis),
        Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_) | Op::BitCast(_) | Op::View(_) => Ok(copy(kernel, n)),
        Op::Concat(op) => concat(kernel, n, op.axis),
        // The CPU's kernel: per-element ones run a thread per element, the others
        // (Hardmax, QConv, QuantPack, the scatters) their loop nest on one thread.
        Op::Transpose(_)
        | Op::Slice(_)
        | Op::Trilu(_)
        | Op::GatherElements(_)
        | Op::Pad(_)
        | Op::ConvTranspose(_)
        | Op::GridSample(_)
        | Op::ResizeTaps(_)
        | Op::Resize(_)
        | Op::Iota(_)
        | Op::Einsum(_)
        | Op::BatchNormalization(_)
        | Op::Input(_)
        | Op::Const(_)
        | dlc_ir::pointwise!()
        | Op::Cast(_)
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
        | Op::TopK(_)
        | Op::ArgMin(_)
        | Op::NllLoss(_)
        | Op::CumSum(_)
        | Op::QConv(_)
        | Op::IntMatMul(_)
        | Op::Patches(_)
        | Op::QuantPack(_)
        | Op::Softmax(_)
        | Op::ScatterElements(_)
        | Op::ScatterND(_)
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
        | Op::Loop(_)
        | Op::If(_)
        | Op::Compress(_) => return None,
    })
}

/// For an f32 Sum, Mean, Max, Min, SumSquare, L1 or L2 reduction over the trailing axes
/// (what a GPU block computes as one row): its kind, the number of rows (outputs) and
/// the row length.
pub fn as_rows(n: &Node) -> Option<(Kind, u64, u64)> {
    let (axes, kind) = crate::reduce::reduction(n.op)?;
    let by_rows =
        matches!(kind, Kind::Sum | Kind::Mean | Kind::Max | Kind::Min | Kind::SumSquare | Kind::L1 | Kind::L2);
    if !by_rows || n.inputs[0].dtype != DType::F32 || n.outputs[0].dtype != DType::F32 {
        return None;
    }
    let x = n.inputs[0].shape.as_fixed()?;
    let axes = resolve_axes(axes, x.len())?;
    let lead = x.len() - axes.len();
    (axes == (lead..x.len()).collect::<Vec<_>>())
        .then(|| (kind, x[..lead].iter().product(), x[lead..].iter().product()))
}

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

fn f32t() -> Ty {
    Ty::scalar(Elem::F32)
}

fn fc(b: &mut B, v: f32) -> ValId {
    b.let_(Inst::Const { ty: f32t(), lit: Lit::Float(v as f64) })
}

fn ld(b: &mut B, mem: u32, at: Expr) -> ValId {
    b.load(f32t(), mem, at, 4)
}

fn st(b: &mut B, mem: u32, at: Expr, v: ValId) {
    b.store(mem, at, v, 4)
}

fn and(b: &mut B, x: ValId, y: ValId) -> ValId {
    b.bin(BinOp::And, x, y)
}

fn is_zero(b: &mut B, e: &Expr) -> ValId {
    let v = b.index(e.clone());
    let z = b.i64(0);
    b.cmp(CmpOp::Eq, v, z)
}

fn call(b: &mut B, func: &str, x: ValId) -> ValId {
    b.let_(Inst::Call { func: func.into(), args: vec![x], ty: f32t() })
}

/// `a < b ? b : a`.
fn fmax(b: &mut B, x: ValId, y: ValId) -> ValId {
    let lt = b.cmp(CmpOp::FOlt, x, y);
    b.select(lt, y, x)
}

/// What [`Inst::BlockReduce`] with `op` does to two values: `fadd`, `fmax` (`a < b ? b :
/// a`) or `fmin` (`b < a ? b : a`).
fn combine(b: &mut B, op: ReduceOp, x: ValId, y: ValId) -> ValId {
    match op {
        ReduceOp::FMax => fmax(b, x, y),
        ReduceOp::FMin => {
            let lt = b.cmp(CmpOp::FOlt, y, x);
            b.select(lt, y, x)
        }
        _ => b.bin(BinOp::FAdd, x, y),
    }
}

fn identity(op: ReduceOp) -> f32 {
    match op {
        ReduceOp::FMax => f32::NEG_INFINITY,
        ReduceOp::FMin => f32::INFINITY,
        _ => 0.0,
    }
}

/// Index `i` of a row-major `dims` as one index per dim (the first unbounded).
fn unravel(i: &Expr, dims: &[u64]) -> Vec<Expr> {
    let mut out = Vec::with_capacity(dims.len());
    let mut inner = 1u64;
    for (k, &d) in dims.iter().enumerate().rev() {
        let q = i.floor_div(&c(inner));
        out.push(if k == 0 { q } else { q.modulo(&c(d)) });
        inner *= d;
    }
    out.reverse();
    out
}

/// `sum idx[k] * strides[k]` for index `i` of `dims`.
fn offset(i: &Expr, dims: &[u64], strides: &[u64]) -> Expr {
    unravel(i, dims).iter().zip(strides).fold(Expr::c(0), |acc, (x, &s)| &acc + &x.scale(s as i64))
}

/// `body(b, l)` for the `l` of `t, t + step, ...` below `end` (a thread's share of a
/// row of `end` elements).
fn strided(b: &mut B, t: &Expr, end: u64, step: u64, body: impl FnOnce(&mut B, Expr)) {
    let t = t.clone();
    b.for_(Expr::c(0), c(end.div_ceil(step)), LoopKind::Serial, |b, it| {
        let l = &t + &it.scale(step as i64);
        let inside = in_bounds(b, l.clone(), end);
        b.if_(inside, |b| body(b, l), |_| {});
    });
}

/// Threads for a block that owns a row of `len` elements.
fn row_threads(len: u64) -> u32 {
    if len >= 256 {
        256
    } else {
        128
    }
}

fn params(n: &Node) -> Vec<Access> {
    let mut p = vec![Access::Read; n.inputs.len()];
    p.extend(vec![Access::Write; n.outputs.len()]);
    p
}

fn fixed(n: &Node, t: &dlc_ir::TensorType) -> Result<Vec<u64>, LowerError> {
    t.shape.as_fixed().ok_or_else(|| n.error(format!("symbolic shape {t}")))
}

/// Element `(batch, row, column)` of an operand, loaded.
type Load<'s> = &'s dyn Fn(&mut B, &Expr, &Expr, &Expr) -> ValId;
/// Writes the accumulated element `(batch, row, column)`.
type Store<'s> = &'s dyn Fn(&mut B, &Expr, &Expr, &Expr, ValId);

/// `C[b] = A[b] x B[b]` (`m x k` by `k x n`) for `b < batch`, with operand reads and the
/// result's write given as functions of (batch, row, column).
struct GemmSpec<'s> {
    batch: u64,
    m: u64,
    n: u64,
    k: u64,
    load_a: Load<'s>,
    load_b: Load<'s>,
    store: Store<'s>,
}

/// The tiled GEMM: a block computes a `bm x bn` tile of C, staging `bk`-deep slices of
/// A and B in shared memory (A transposed, so the inner loop reads both along the
/// tile); each thread accumulates `tm x tn` outputs in its scratch, at rows and columns
/// strided by the thread grid so shared-memory reads and global writes are consecutive
/// across a warp.
fn tiled_gemm(name: &str, params: &[Access], s: &GemmSpec) -> Kernel {
    const BK: u64 = 16;
    // Thin products (a vector times a matrix, the MLP's layers) waste less on short tiles.
    let (bm, bn, tm, tn) = if s.m <= 16 { (16u64, 64u64, 1u64, 4u64) } else { (64, 64, 4, 4) };
    let threads = (bm / tm) * (bn / tn);
    let (cols, rows) = (bn / tn, bm / tm);
    let mut b = B::new(name, params);
    let [bx, by, bz] = b.block(threads as u32, [c(s.n.div_ceil(bn)), c(s.m.div_ceil(bm)), c(s.batch)]);
    let i0 = by.scale(bm as i64);
    let j0 = bx.scale(bn as i64);
    let acc = b.scratch(Elem::F32, tm * tn);
    let a_s = b.shared(Elem::F32, BK * bm);
    let b_s = b.shared(Elem::F32, BK * bn);
    b.threads(|b, _| {
        let z = fc(b, 0.0);
        for r in 0..tm * tn {
            st(b, acc, c(r), z);
        }
    });
    // Thread `t`'s share of copying the `rows x cols` tile at (`r0`, `c0`) of an
    // `extent[0] x extent[1]` operand into shared memory `dst` (row-major, or
    // column-major when `transpose`), zero outside the operand.
    let stage = |b: &mut B,
                 t: &Expr,
                 dst: u32,
                 [rows, cols]: [u64; 2],
                 [r0, c0]: [&Expr; 2],
                 extent: [u64; 2],
                 transpose: bool,
                 load: &dyn Fn(&mut B, &Expr, &Expr) -> ValId| {
        for r in 0..(rows * cols) / threads {
            let e = t + &c(r * threads);
            let (p, q) = (e.floor_div(&c(cols)), e.modulo(&c(cols)));
            let (gr, gc) = (r0 + &p, c0 + &q);
            let zero = fc(b, 0.0);
            let tmp = b.local(f32t(), zero);
            let x = in_bounds(b, gr.clone(), extent[0]);
            let y = in_bounds(b, gc.clone(), extent[1]);
            let inside = and(b, x, y);
            b.if_(
                inside,
                |b| {
                    let v = load(b, &gr, &gc);
                    b.stmt(Stmt::Set(tmp, v));
                },
                |_| {},
            );
            let at = if transpose { &q.scale(rows as i64) + &p } else { &p.scale(cols as i64) + &q };
            let v = b.let_(Inst::Get(tmp));
            st(b, dst, at, v);
        }
    };
    b.for_(Expr::c(0), c(s.k.div_ceil(BK)), LoopKind::Serial, |b, kt| {
        let k0 = kt.scale(BK as i64);
        b.threads(|b, t| {
            stage(b, &t, a_s, [bm, BK], [&i0, &k0], [s.m, s.k], true, &|b, i, k| (s.load_a)(b, &bz, i, k));
            stage(b, &t, b_s, [BK, bn], [&k0, &j0], [s.k, s.n], false, &|b, k, j| (s.load_b)(b, &bz, k, j));
        });
        b.threads(|b, t| {
            let (ty, tx) = (t.floor_div(&c(cols)), t.modulo(&c(cols)));
            b.for_(Expr::c(0), c(BK), LoopKind::Serial, |b, kk| {
                let a: Vec<ValId> = (0..tm).map(|r| ld(b, a_s, &(&kk.scale(bm as i64) + &ty) + &c(r * rows))).collect();
                let bv: Vec<ValId> =
                    (0..tn).map(|q| ld(b, b_s, &(&kk.scale(bn as i64) + &tx) + &c(q * cols))).collect();
                for r in 0..tm {
                    for q in 0..tn {
                        let slot = c(r * tn + q);
                        let old = ld(b, acc, slot.clone());
                        let v = b.let_(Inst::Fma(a[r as usize], bv[q as usize], old));
                        st(b, acc, slot, v);
                    }
                }
            });
        });
    });
    b.threads(|b, t| {
        let (ty, tx) = (t.floor_div(&c(cols)), t.modulo(&c(cols)));
        for r in 0..tm {
            for q in 0..tn {
                let i = &i0 + &(&ty + &c(r * rows));
                let j = &j0 + &(&tx + &c(q * cols));
                let x = in_bounds(b, i.clone(), s.m);
                let y = in_bounds(b, j.clone(), s.n);
                let inside = and(b, x, y);
                b.if_(
                    inside,
                    |b| {
                        let v = ld(b, acc, c(r * tn + q));
                        (s.store)(b, &bz, &i, &j, v)
                    },
                    |_| {},
                );
            }
        }
    });
    b.finish()
}

fn act(b: &mut B, a: Activation, v: ValId) -> ValId {
    activation(b, a, v).unwrap_or(v)
}

fn matmul(name: &str, n: &Node, a: Activation) -> Result<Kernel, LowerError> {
    let crate::linalg::MatMulShape { m, k, n: nn, batch: batch_dims, a_strides: sa, b_strides: sb } =
        crate::linalg::MatMulShape::of(&n.fixed_in(0)?, &n.fixed_in(1)?);
    let bias = n.inputs.len() == 3;
    let out = n.inputs.len() as u32;
    let spec = GemmSpec {
        batch: batch_dims.iter().product(),
        m,
        n: nn,
        k,
        load_a: &|b, z, i, kk| ld(b, 0, &offset(z, &batch_dims, &sa) + &(&i.scale(k as i64) + kk)),
        load_b: &|b, z, kk, j| ld(b, 1, &offset(z, &batch_dims, &sb) + &(&kk.scale(nn as i64) + j)),
        store: &|b, z, i, j, mut v| {
            if bias {
                let bv = ld(b, 2, j.clone());
                v = b.bin(BinOp::FAdd, v, bv);
            }
            let y = &(&z.scale((m * nn) as i64) + &i.scale(nn as i64)) + j;
            let v = act(b, a, v);
            st(b, out, y, v)
        },
    };
    Ok(tiled_gemm(name, &params(n), &spec))
}

fn gemm(name: &str, n: &Node, op: &Gemm) -> Result<Kernel, LowerError> {
    let (a, bd) = (n.fixed_in(0)?, n.fixed_in(1)?);
    let (m, k) = if op.trans_a { (a[1], a[0]) } else { (a[0], a[1]) };
    let nn = if op.trans_b { bd[0] } else { bd[1] };
    let c_strides = match n.inputs.get(2) {
        Some(t) => Some(crate::shape::broadcast_strides_fixed(&fixed(n, t)?, &[m, nn])),
        None => None,
    };
    let out = n.inputs.len() as u32;
    let (a1, b1) = (a[1] as i64, bd[1] as i64);
    let spec = GemmSpec {
        batch: 1,
        m,
        n: nn,
        k,
        load_a: &|b, _, i, kk| ld(b, 0, if op.trans_a { &kk.scale(a1) + i } else { &i.scale(a1) + kk }),
        load_b: &|b, _, kk, j| ld(b, 1, if op.trans_b { &j.scale(b1) + kk } else { &kk.scale(b1) + j }),
        store: &|b, _, i, j, acc| {
            let mut v = acc;
            if op.alpha != 1.0 {
                let al = fc(b, op.alpha);
                v = b.bin(BinOp::FMul, acc, al);
            }
            if let Some(cs) = &c_strides {
                let mut cv = ld(b, 2, &i.scale(cs[0] as i64) + &j.scale(cs[1] as i64));
                if op.beta != 1.0 {
                    let be = fc(b, op.beta);
                    cv = b.bin(BinOp::FMul, cv, be);
                }
                v = b.bin(BinOp::FAdd, v, cv);
            }
            let v = act(b, op.act, v);
            st(b, out, &i.scale(nn as i64) + j, v)
        },
    };
    Ok(tiled_gemm(name, &params(n), &spec))
}

/// Convolution as an implicit GEMM per image and group: `W[m, (c, ky, kx)]` times the
/// input patches `X[(c, ky, kx), (oy, ox)]`, read in place (zero outside the image).
fn conv(name: &str, n: &Node, op: &Conv) -> Result<Kernel, LowerError> {
    let geo = op.geometry(n.name, &n.inputs[0], &n.inputs[1]).map_err(|e| n.error(e.to_string()))?;
    let (x, w) = (n.fixed_in(0)?, n.fixed_in(1)?);
    if x.len() != 4 {
        return Err(n.error("only 2-D convolution has a CUDA kernel"));
    }
    let groups = op.group as u64;
    let (batch, ch, h, wd) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (w[0], w[1], w[2], w[3]);
    let mg = m / groups;
    let [oh, ow] = geo.output;
    let kk = cg * kh * kw;
    let (bias, residual) = (n.inputs.len() >= 3, n.inputs.len() == 4);
    let out = n.inputs.len() as u32;
    let i = |v: u64| v as i64;
    // Input element (img, channel, iy, ix), zero outside the image: element 0 is read
    // there and replaced.
    let pixel = move |b: &mut B, img: &Expr, chan: &Expr, iy: &Expr, ix: &Expr| -> ValId {
        // The row and column as values, so the address reuses them.
        let (iy, ix) = (b.index(iy.clone()), b.index(ix.clone()));
        let (hv, wv) = (b.i64(h as i64), b.i64(wd as i64));
        let y_in = b.cmp(CmpOp::Ult, iy, hv);
        let x_in = b.cmp(CmpOp::Ult, ix, wv);
        let inside = and(b, y_in, x_in);
        let (iy, ix) = (Expr::val(iy), Expr::val(ix));
        let at = b.index(&(&(&img.scale(i(ch * h * wd)) + &chan.scale(i(h * wd))) + &iy.scale(i(wd))) + &ix);
        let zero = b.i64(0);
        let at = b.select(inside, at, zero);
        let v = ld(b, 0, Expr::val(at));
        let fz = fc(b, 0.0);
        b.select(inside, v, fz)
    };
    let epilogue = move |b: &mut B, chan: &Expr, y: Expr, mut v: ValId| {
        if bias {
            let bv = ld(b, 2, chan.clone());
            v = b.bin(BinOp::FAdd, v, bv);
        }
        if residual {
            let r = ld(b, 3, y.clone());
            v = b.bin(BinOp::FAdd, v, r);
        }
        let v = act(b, op.act, v);
        st(b, out, y, v)
    };
    if mg == 1 {
        // One output channel per group (depthwise): one thread per output element,
        // summing its window (a GEMM tile would leave most threads idle).
        let mut b = B::new(name, &params(n));
        b.nest(&[c(batch), c(m), c(oh), c(ow)], LoopKind::Each, |b, idx| {
            let (img, chan, oy, ox) = (&idx[0], &idx[1], &idx[2], &idx[3]);
            let zero = fc(b, 0.0);
            let acc = b.local(f32t(), zero);
            b.nest(&[c(cg), c(kh), c(kw)], LoopKind::Serial, |b, k| {
                let iy = &(&oy.scale(i(geo.strides[0])) + &k[1].scale(i(geo.dilations[0]))) - &c(geo.pad_begin[0]);
                let ix = &(&ox.scale(i(geo.strides[1])) + &k[2].scale(i(geo.dilations[1]))) - &c(geo.pad_begin[1]);
                // Channel `chan * cg + k` of the input: group `chan`.
                let xv = pixel(b, img, &(&chan.scale(i(cg)) + &k[0]), &iy, &ix);
                let wat = &(&(&chan.scale(i(kk)) + &k[0].scale(i(kh * kw))) + &k[1].scale(i(kw))) + &k[2];
                let wv = ld(b, 1, wat);
                let old = b.let_(Inst::Get(acc));
                let v = b.let_(Inst::Fma(xv, wv, old));
                b.stmt(Stmt::Set(acc, v));
            });
            let v = b.let_(Inst::Get(acc));
            let y = &(&(&img.scale(i(m * oh * ow)) + &chan.scale(i(oh * ow))) + &oy.scale(i(ow))) + ox;
            epilogue(b, chan, y, v);
        });
        return Ok(b.finish());
    }
    let split = |z: &Expr| (z.floor_div(&c(groups)), z.modulo(&c(groups)));
    let spec = GemmSpec {
        batch: batch * groups,
        m: mg,
        n: oh * ow,
        k: kk,
        load_a: &|b, z, r, k| {
            let (_, g) = split(z);
            ld(b, 1, &(&g.scale(i(mg * kk)) + &r.scale(i(kk))) + k)
        },
        load_b: &|b, z, k, j| {
            let (img, g) = split(z);
            let ck = unravel(k, &[cg, kh, kw]);
            let pix = unravel(j, &[oh, ow]);
            let iy = &(&pix[0].scale(i(geo.strides[0])) + &ck[1].scale(i(geo.dilations[0]))) - &c(geo.pad_begin[0]);
            let ix = &(&pix[1].scale(i(geo.strides[1])) + &ck[2].scale(i(geo.dilations[1]))) - &c(geo.pad_begin[1]);
            pixel(b, &img, &(&g.scale(i(cg)) + &ck[0]), &iy, &ix)
        },
        store: &|b, z, r, j, v| {
            let (img, g) = split(z);
            let chan = &g.scale(i(mg)) + r;
            let y = &(&img.scale(i(m * oh * ow)) + &chan.scale(i(oh * ow))) + j;
            epilogue(b, &chan, y, v)
        },
    };
    Ok(tiled_gemm(name, &params(n), &spec))
}

/// A reduction of `rows` rows of `len` contiguous f32: a block per row, each thread a
/// strided partial, then a block reduction.
fn row_reduce(name: &str, kind: Kind, rows: u64, len: u64) -> Kernel {
    let threads = row_threads(len);
    let step = threads as u64;
    let mut b = B::new(name, &[Access::Read, Access::Write]);
    let [row, _, _] = b.block(threads, [c(rows), c(1), c(1)]);
    let base = row.scale(len as i64);
    let v = b.scratch(Elem::F32, 1);
    let op = match kind {
        Kind::Max => ReduceOp::FMax,
        Kind::Min => ReduceOp::FMin,
        _ => ReduceOp::FAdd,
    };
    b.threads(|b, t| {
        let init = fc(b, identity(op));
        let acc = b.local(f32t(), init);
        strided(b, &t, len, step, |b, l| {
            let x = ld(b, 0, &base + &l);
            let term = match kind {
                Kind::SumSquare | Kind::L2 => b.bin(BinOp::FMul, x, x),
                Kind::L1 => b.let_(Inst::Un(UnOp::FAbs, x)),
                _ => x,
            };
            let old = b.let_(Inst::Get(acc));
            let new = combine(b, op, old, term);
            b.stmt(Stmt::Set(acc, new));
        });
        let a = b.let_(Inst::Get(acc));
        st(b, v, Expr::c(0), a);
    });
    let total = b.let_(Inst::BlockReduce { op, mem: v });
    b.threads(|b, t| {
        let first = is_zero(b, &t);
        b.if_(
            first,
            |b| {
                let r = match kind {
                    Kind::Mean => {
                        let l = fc(b, len as f32);
                        b.bin(BinOp::FDiv, total, l)
                    }
                    Kind::L2 => b.let_(Inst::Un(UnOp::Sqrt, total)),
                    _ => total,
                };
                st(b, 1, row.clone(), r);
            },
            |_| {},
        );
    });
    b.finish()
}

/// Softmax or LogSoftmax: a block per row.
fn softmax(name: &str, n: &Node, axis: i64, mode: SoftmaxMode) -> Result<Kernel, LowerError> {
    let d = n.fixed_in(0)?;
    let a = normalize_axis(axis, d.len()).ok_or_else(|| n.error(format!("axis {axis} out of range")))?;
    let (outer, len, inner) = (d[..a].iter().product::<u64>(), d[a], d[a + 1..].iter().product::<u64>());
    let threads = row_threads(len);
    let step = threads as u64;
    let mut b = B::new(name, &[Access::Read, Access::Write]);
    let [row, _, _] = b.block(threads, [c(outer * inner), c(1), c(1)]);
    let base = &row.floor_div(&c(inner)).scale((len * inner) as i64) + &row.modulo(&c(inner));
    let at = |l: &Expr| &base + &l.scale(inner as i64);
    let v = b.scratch(Elem::F32, 1);
    b.threads(|b, t| {
        let init = fc(b, f32::NEG_INFINITY);
        let acc = b.local(f32t(), init);
        strided(b, &t, len, step, |b, l| {
            let x = ld(b, 0, at(&l));
            let old = b.let_(Inst::Get(acc));
            let m = fmax(b, old, x);
            b.stmt(Stmt::Set(acc, m));
        });
        let r = b.let_(Inst::Get(acc));
        st(b, v, Expr::c(0), r);
    });
    let mx = b.let_(Inst::BlockReduce { op: ReduceOp::FMax, mem: v });
    b.threads(|b, t| {
        let init = fc(b, 0.0);
        let acc = b.local(f32t(), init);
        strided(b, &t, len, step, |b, l| {
            let x = ld(b, 0, at(&l));
            let d = b.bin(BinOp::FSub, x, mx);
            let e = call(b, "expf", d);
            st(b, 1, at(&l), e);
            let old = b.let_(Inst::Get(acc));
            let s = b.bin(BinOp::FAdd, old, e);
            b.stmt(Stmt::Set(acc, s));
        });
        let r = b.let_(Inst::Get(acc));
        st(b, v, Expr::c(0), r);
    });
    let sum = b.let_(Inst::BlockReduce { op: ReduceOp::FAdd, mem: v });
    b.threads(|b, t| {
        if mode == SoftmaxMode::LogSoftmax {
            // x - max - log(sum)
            let lg = call(b, "logf", sum);
            let shift = b.bin(BinOp::FAdd, mx, lg);
            strided(b, &t, len, step, |b, l| {
                let x = ld(b, 0, at(&l));
                let y = b.bin(BinOp::FSub, x, shift);
                st(b, 1, at(&l), y);
            });
            return;
        }
        let one = fc(b, 1.0);
        let inv = b.bin(BinOp::FDiv, one, sum);
        strided(b, &t, len, step, |b, l| {
            let e = ld(b, 1, at(&l));
            let y = b.bin(BinOp::FMul, e, inv);
            st(b, 1, at(&l), y);
        });
    });
    Ok(b.finish())
}

fn layernorm(name: &str, n: &Node, op: &LayerNormalization) -> Result<Kernel, LowerError> {
    let x = n.fixed_in(0)?;
    let a = normalize_axis(op.axis, x.len()).ok_or_else(|| n.error(format!("axis {} out of range", op.axis)))?;
    let rows: u64 = x[..a].iter().product();
    let norm_dims: Vec<Expr> = x[a..].iter().map(|&d| c(d)).collect();
    let len: u64 = x[a..].iter().product();
    let nparams = if op.skip { n.inputs.len() - 1 } else { n.inputs.len() };
    let has_bias = nparams == 3;
    let contiguous = broadcast_strides(&norm_dims, &norm_dims);
    let ss = broadcast_strides(&Node::dims(&n.inputs[1]), &norm_dims);
    let bs = if has_bias { broadcast_strides(&Node::dims(&n.inputs[2]), &norm_dims) } else { contiguous.clone() };
    let (dims, strides) = coalesce(&norm_dims, &[contiguous, ss, bs]);
    let consts = |v: &[Expr]| -> Option<Vec<u64>> { v.iter().map(|e| e.as_const().map(|x| x as u64)).collect() };
    let (Some(dims), Some(st1), Some(st2)) = (consts(&dims), consts(&strides[1]), consts(&strides[2])) else {
        return Err(n.error("symbolic normalised dims"));
    };
    let stats = n.outputs.len() == 3;
    let threads = row_threads(len);
    let step = threads as u64;
    let out = n.inputs.len() as u32;
    let skip = op.skip.then(|| n.inputs.len() as u32 - 1);
    let mut b = B::new(name, &params(n));
    let [row, _, _] = b.block(threads, [c(rows), c(1), c(1)]);
    let base = row.scale(len as i64);
    let xv = |b: &mut B, l: &Expr| -> ValId {
        let i = &base + l;
        let v = ld(b, 0, i.clone());
        match skip {
            Some(p) => {
                let s = ld(b, p, i);
                b.bin(BinOp::FAdd, v, s)
            }
            None => v,
        }
    };
    let v = b.scratch(Elem::F32, 1);
    b.threads(|b, t| {
        let init = fc(b, 0.0);
        let acc = b.local(f32t(), init);
        if !op.rms {
            strided(b, &t, len, step, |b, l| {
                let x = xv(b, &l);
                let old = b.let_(Inst::Get(acc));
                let s = b.bin(BinOp::FAdd, old, x);
                b.stmt(Stmt::Set(acc, s));
            });
        }
        let r = b.let_(Inst::Get(acc));
        st(b, v, Expr::c(0), r);
    });
    let sum = b.let_(Inst::BlockReduce { op: ReduceOp::FAdd, mem: v });
    let lenf = fc(&mut b, len as f32);
    let mu = b.bin(BinOp::FDiv, sum, lenf);
    b.threads(|b, t| {
        let init = fc(b, 0.0);
        let acc = b.local(f32t(), init);
        strided(b, &t, len, step, |b, l| {
            let x = xv(b, &l);
            let d = b.bin(BinOp::FSub, x, mu);
            let sq = b.bin(BinOp::FMul, d, d);
            let old = b.let_(Inst::Get(acc));
            let s = b.bin(BinOp::FAdd, old, sq);
            b.stmt(Stmt::Set(acc, s));
        });
        let r = b.let_(Inst::Get(acc));
        st(b, v, Expr::c(0), r);
    });
    let sq = b.let_(Inst::BlockReduce { op: ReduceOp::FAdd, mem: v });
    b.threads(|b, t| {
        let il = fc(b, 1.0 / len as f32);
        let var = b.bin(BinOp::FMul, sq, il);
        let eps = fc(b, op.epsilon);
        let ve = b.bin(BinOp::FAdd, var, eps);
        let sd = b.let_(Inst::Un(UnOp::Sqrt, ve));
        let one = fc(b, 1.0);
        let inv = b.bin(BinOp::FDiv, one, sd);
        if stats {
            let first = is_zero(b, &t);
            b.if_(
                first,
                |b| {
                    st(b, out + 1, row.clone(), mu);
                    st(b, out + 2, row.clone(), inv);
                },
                |_| {},
            );
        }
        strided(b, &t, len, step, |b, l| {
            let x = xv(b, &l);
            let d = b.bin(BinOp::FSub, x, mu);
            let nrm = b.bin(BinOp::FMul, d, inv);
            let sc = ld(b, 1, offset(&l, &dims, &st1));
            let mut y = b.bin(BinOp::FMul, nrm, sc);
            if has_bias {
                let bv = ld(b, 2, offset(&l, &dims, &st2));
                y = b.bin(BinOp::FAdd, y, bv);
            }
            st(b, out, &base + &l, y);
        });
    });
    Ok(b.finish())
}

/// One block per (query row, head, batch): the query row in shared memory, one thread
/// per key for the scores (kept in shared memory), block reductions for the softmax's
/// max and sum, then one thread per output channel for the weighted sum of values.
fn attention(name: &str, n: &Node, op: &Attention) -> Result<Kernel, LowerError> {
    let [bsz, h, sq, sk, d, dv] = crate::attention::dims(n, op)?;
    if (d + sk + 2 * 33) * 4 > 48 * 1024 {
        return Err(n.error(format!("key length {sk} and head size {d} need more than 48 KiB of shared memory")));
    }
    let threads = 128u32;
    let step = threads as u64;
    let out = n.inputs.len() as u32;
    let mask = match n.inputs.get(3) {
        Some(t) => Some((t.dtype, fixed(n, t)?)),
        None => None,
    };
    let i64c = |v: u64| v as i64;
    let mut b = B::new(name, &params(n));
    let [i, hi, bi] = b.block(threads, [c(sq), c(h), c(bsz)]);
    let vals = b.scratch(Elem::F32, 1);
    let q_s = b.shared(Elem::F32, d);
    let scores = b.shared(Elem::F32, sk);
    let q_row = &(&bi.scale(i64c(sq * h * d)) + &i.scale(i64c(h * d))) + &hi.scale(i64c(d));
    let y_row = &(&bi.scale(i64c(sq * h * dv)) + &i.scale(i64c(h * dv))) + &hi.scale(i64c(dv));
    b.threads(|b, t| {
        strided(b, &t, d, step, |b, e| {
            let q = ld(b, 0, &q_row + &e);
            st(b, q_s, e, q);
        })
    });
    b.threads(|b, t| {
        let init = fc(b, f32::NEG_INFINITY);
        let acc = b.local(f32t(), init);
        strided(b, &t, sk, step, |b, j| {
            let k_row = &(&bi.scale(i64c(sk * h * d)) + &j.scale(i64c(h * d))) + &hi.scale(i64c(d));
            let z = fc(b, 0.0);
            let dot = b.local(f32t(), z);
            b.for_(Expr::c(0), c(d), LoopKind::Serial, |b, e| {
                let qv = ld(b, q_s, e.clone());
                let kv = ld(b, 1, &k_row + &e);
                let p = b.bin(BinOp::FMul, qv, kv);
                let old = b.let_(Inst::Get(dot));
                let s = b.bin(BinOp::FAdd, old, p);
                b.stmt(Stmt::Set(dot, s));
            });
            let dv_ = b.let_(Inst::Get(dot));
            let scale = fc(b, op.scale);
            let mut s = b.bin(BinOp::FMul, dv_, scale);
            if let Some((mdt, mdims)) = &mask {
                let m = if op.key_padding {
                    let mf = crate::dtype::load_as(b, 3, &bi.scale(i64c(sk)) + &j, *mdt, DType::F32);
                    let one = fc(b, 1.0);
                    let inv = b.bin(BinOp::FSub, one, mf);
                    let fill = fc(b, op.padding_fill);
                    b.bin(BinOp::FMul, inv, fill)
                } else {
                    let st_ = crate::shape::broadcast_strides_fixed(mdims, &[bsz, h, sq, sk]);
                    let at = &(&(&bi.scale(i64c(st_[0])) + &hi.scale(i64c(st_[1]))) + &i.scale(i64c(st_[2])))
                        + &j.scale(i64c(st_[3]));
                    ld(b, 3, at)
                };
                s = b.bin(BinOp::FAdd, s, m);
            }
            st(b, scores, j, s);
            let old = b.let_(Inst::Get(acc));
            let mx = fmax(b, old, s);
            b.stmt(Stmt::Set(acc, mx));
        });
        let r = b.let_(Inst::Get(acc));
        st(b, vals, Expr::c(0), r);
    });
    let mx = b.let_(Inst::BlockReduce { op: ReduceOp::FMax, mem: vals });
    b.threads(|b, t| {
        let init = fc(b, 0.0);
        let acc = b.local(f32t(), init);
        strided(b, &t, sk, step, |b, j| {
            let s = ld(b, scores, j.clone());
            let dd = b.bin(BinOp::FSub, s, mx);
            let e = call(b, "expf", dd);
            st(b, scores, j, e);
            let old = b.let_(Inst::Get(acc));
            let sum = b.bin(BinOp::FAdd, old, e);
            b.stmt(Stmt::Set(acc, sum));
        });
        let r = b.let_(Inst::Get(acc));
        st(b, vals, Expr::c(0), r);
    });
    let sum = b.let_(Inst::BlockReduce { op: ReduceOp::FAdd, mem: vals });
    b.threads(|b, t| {
        let one = fc(b, 1.0);
        let inv = b.bin(BinOp::FDiv, one, sum);
        strided(b, &t, dv, step, |b, e| {
            let z = fc(b, 0.0);
            let acc = b.local(f32t(), z);
            b.for_(Expr::c(0), c(sk), LoopKind::Serial, |b, j| {
                let at = &(&(&bi.scale(i64c(sk * h * dv)) + &j.scale(i64c(h * dv))) + &hi.scale(i64c(dv))) + &e;
                let vv = ld(b, 2, at);
                let p = ld(b, scores, j);
                let pv = b.bin(BinOp::FMul, p, vv);
                let old = b.let_(Inst::Get(acc));
                let s = b.bin(BinOp::FAdd, old, pv);
                b.stmt(Stmt::Set(acc, s));
            });
            let a = b.let_(Inst::Get(acc));
            let y = b.bin(BinOp::FMul, a, inv);
            st(b, out, &y_row + &e, y);
        })
    });
    Ok(b.finish())
}

/// The integer element of `bytes` bytes (data movement copies bits).
fn bits(n: &Node, bytes: usize) -> Result<Ty, LowerError> {
    Elem::int_of_bytes(bytes).map(Ty::scalar).ok_or_else(|| n.error(format!("elements of {bytes} bytes")))
}

/// Gather: one thread per output element (consecutive threads copy consecutive elements
/// of a row), the index loaded and clamped as on the CPU.
fn gather(name: &str, n: &Node, axis: i64) -> Result<Kernel, LowerError> {
    let d = n.fixed_in(0)?;
    let a = normalize_axis(axis, d.len()).ok_or_else(|| n.error("axis out of range"))?;
    let es = n.inputs[0].dtype.size();
    let (outer, extent) = (d[..a].iter().product::<u64>(), d[a]);
    let count: u64 = n.fixed_in(1)?.iter().product();
    let row: u64 = d[a + 1..].iter().product();
    let ty = bits(n, es)?;
    let w = es as u32;
    let mut b = B::new(name, &[Access::Read, Access::Read, Access::Write]);
    // Nothing to copy: an empty nest keeps the launch table one entry per node.
    let live = extent != 0 && row != 0;
    let dims = if live { [c(outer), c(count), c(row)] } else { [c(0), c(1), c(1)] };
    let idt = n.inputs[1].dtype;
    b.nest(&dims, LoopKind::Each, |b, idx| {
        let (o, j, e) = (&idx[0], &idx[1], &idx[2]);
        let k = crate::movement::load_index(b, 1, idt, j.clone(), extent as i64);
        let src = &(&o.scale((extent * row) as i64) + &Expr::val(k).scale(row as i64)) + e;
        let v = b.load(ty, 0, src, w);
        let dst = &(&o.scale((count * row) as i64) + &j.scale(row as i64)) + e;
        b.store(2, dst, v, w);
    });
    Ok(b.finish())
}

/// Concat: one thread per output element, copying from the operand whose block along
/// the axis holds it.
fn concat(name: &str, n: &Node, axis: i64) -> Result<Kernel, LowerError> {
    let out = fixed(n, &n.outputs[0])?;
    let a = normalize_axis(axis, out.len()).ok_or_else(|| n.error("axis out of range"))?;
    let outer: u64 = out[..a].iter().product();
    let row: u64 = out[a..].iter().product();
    let es = n.outputs[0].dtype.size();
    let (ty, w) = (bits(n, es)?, es as u32);
    let blocks: Vec<u64> =
        n.inputs.iter().map(|t| fixed(n, t).map(|d| d[a..].iter().product())).collect::<Result<_, _>>()?;
    let np = n.inputs.len() as u32;
    let mut b = B::new(name, &params(n));
    b.nest(&[c(outer), c(row)], LoopKind::Each, |b, idx| {
        let (o, j) = (&idx[0], &idx[1]);
        let mut start = 0u64;
        for (i, &block) in blocks.iter().enumerate() {
            let k = j - &c(start);
            let inside = in_bounds(b, k.clone(), block);
            b.if_(
                inside,
                |b| {
                    let v = b.load(ty, i as u32, &o.scale(block as i64) + &k, w);
                    b.store(np, &o.scale(row as i64) + j, v, w);
                },
                |_| {},
            );
            start += block;
        }
    });
    Ok(b.finish())
}

/// Reshape, Flatten or Identity when the memory plan could not make it a view: one
/// thread per element.
fn copy(name: &str, n: &Node) -> Kernel {
    let items: u64 = n.outputs[0].shape.as_fixed().unwrap_or_default().iter().product();
    let es = n.outputs[0].dtype.size();
    let mut b = B::new(name, &[Access::Read, Access::Write]);
    let ty = Elem::int_of_bytes(es).map_or(Ty::scalar(Elem::I8), Ty::scalar);
    let (items, w) = if Elem::int_of_bytes(es).is_some() { (items, es as u32) } else { (items * es as u64, 1) };
    b.nest(&[c(items)], LoopKind::Each, |b, idx| {
        let v = b.load(ty, 0, idx[0].clone(), w);
        b.store(1, idx[0].clone(), v, w);
    });
    b.finish()
}
