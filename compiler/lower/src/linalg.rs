//! Matrix products as plain loop nests, f32: MatMul and Gemm when B is not a constant
//! the packed kernels can take (codegen-llvm's dispatch calls [`matmul`] and [`gemm`]
//! then), in i-k-j order so the inner loop is contiguous and vectorises (a dot-product
//! order when Gemm's B is transposed); and Einsum as one nest, output indices outside
//! (`each`: one output per CUDA thread), summed indices inside, the product of the
//! operands' elements accumulated in f64.
use crate::dtype::{convert, storage};
use crate::elementwise::{activation, activation_of};
use crate::{LowerError, Node};
use dlc_ir::ops::{Activation, Gemm};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

use crate::shape::broadcast_strides_fixed as strides;

fn lin(idx: &[Expr], st: &[u64]) -> Expr {
    idx.iter().zip(st).fold(Expr::c(0), |a, (i, &s)| &a + &(i * &c(s)))
}

/// A MatMul's shape: numpy's promotion of 1-D operands and broadcasting of the batch
/// dims; the operands' strides per batch dim (0 where broadcast), in elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatMulShape {
    /// Rows of the product.
    pub m: u64,
    /// The contracted extent.
    pub k: u64,
    /// Columns of the product.
    pub n: u64,
    /// The broadcast batch dims.
    pub batch: Vec<u64>,
    /// A's element stride per batch dim.
    pub a_strides: Vec<u64>,
    /// B's element stride per batch dim.
    pub b_strides: Vec<u64>,
}

impl MatMulShape {
    /// The shape of a MatMul of operands of dims `a` and `b`.
    pub fn of(a: &[u64], b: &[u64]) -> MatMulShape {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        if a.len() == 1 {
            a.insert(0, 1);
        }
        if b.len() == 1 {
            b.push(1);
        }
        let (m, k, nn) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
        let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
        let rank = ba.len().max(bb.len());
        let mut batch = vec![1u64; rank];
        for (i, d) in batch.iter_mut().enumerate() {
            let x = if i + ba.len() >= rank { ba[i + ba.len() - rank] } else { 1 };
            let y = if i + bb.len() >= rank { bb[i + bb.len() - rank] } else { 1 };
            *d = x.max(y);
        }
        let a_strides = strides(ba, &batch).iter().map(|s| s * m * k).collect();
        let b_strides = strides(bb, &batch).iter().map(|s| s * k * nn).collect();
        MatMulShape { m, k, n: nn, batch, a_strides, b_strides }
    }
}

fn params(n: &Node) -> Vec<Access> {
    let mut p = vec![Access::Read; n.inputs.len()];
    p.push(Access::Write);
    p
}

/// [`MatMulShape`] over dims that may be run-time ones (the same fields as expressions).
struct MatMulExprs {
    m: Expr,
    k: Expr,
    n: Expr,
    batch: Vec<Expr>,
    a_strides: Vec<Expr>,
    b_strides: Vec<Expr>,
}

/// The [`MatMulExprs`] of node `n`, or an error when two batch dims that differ cannot
/// be told apart from a broadcast of 1 at compile time.
fn matmul_shape_expr(n: &Node) -> Result<MatMulExprs, LowerError> {
    let (mut a, mut b) = (Node::dims(&n.inputs[0]), Node::dims(&n.inputs[1]));
    if a.len() == 1 {
        a.insert(0, c(1));
    }
    if b.len() == 1 {
        b.push(c(1));
    }
    if a.len() < 2 || b.len() < 2 {
        return Err(n.error("MatMul operands must have a rank"));
    }
    let (m, k, nn) = (a[a.len() - 2].clone(), a[a.len() - 1].clone(), b[b.len() - 1].clone());
    let (ba, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let rank = ba.len().max(bb.len());
    let one = c(1);
    let mut batch = Vec::with_capacity(rank);
    for i in 0..rank {
        let x = if i + ba.len() >= rank { &ba[i + ba.len() - rank] } else { &one };
        let y = if i + bb.len() >= rank { &bb[i + bb.len() - rank] } else { &one };
        batch.push(match (x, y) {
            _ if x == y || y == &one => x.clone(),
            _ if x == &one => y.clone(),
            _ => return Err(n.error(format!("batch dims {x} and {y} do not broadcast"))),
        });
    }
    let sa = crate::shape::broadcast_strides(ba, &batch).iter().map(|s| &(s * &m) * &k).collect();
    let sb = crate::shape::broadcast_strides(bb, &batch).iter().map(|s| &(s * &k) * &nn).collect();
    Ok(MatMulExprs { m, k, n: nn, batch, a_strides: sa, b_strides: sb })
}

/// MatMul (with an optional bias, operand 2, and an activation), any batch broadcast;
/// dims may be run-time ones (computed once, at the kernel's start).
pub fn matmul(name: &str, n: &Node, act: Activation) -> Result<Kernel, LowerError> {
    // f32, or f64 (models that compute in double: the same loops in f64).
    let dt = n.outputs[0].dtype;
    let (ty, es) = match dt {
        DType::F64 if n.inputs.iter().all(|t| t.dtype == DType::F64) => (Ty::scalar(Elem::F64), 8),
        _ => {
            n.require_f32()?;
            (F32, 4)
        }
    };
    let MatMulExprs { m, k, n: nn, batch, a_strides: sa, b_strides: sb } = matmul_shape_expr(n)?;
    let has_bias = n.inputs.len() == 3;
    let py = n.inputs.len() as u32;
    let mut b = KernelBuilder::new(name, &params(n));
    let [m, k, nn] = [&m, &k, &nn].map(|e| crate::hoist(&mut b, e));
    let batch: Vec<Expr> = batch.iter().map(|e| crate::hoist(&mut b, e)).collect();
    let sa: Vec<Expr> = sa.iter().map(|e| crate::hoist(&mut b, e)).collect();
    let sb: Vec<Expr> = sb.iter().map(|e| crate::hoist(&mut b, e)).collect();
    let sy: Vec<Expr> = crate::shape::broadcast_strides(&batch, &batch)
        .iter()
        .map(|s| crate::hoist(&mut b, &(&(s * &m) * &nn)))
        .collect();
    let lin = |idx: &[Expr], st: &[Expr]| idx.iter().zip(st).fold(Expr::c(0), |a, (i, s)| &a + &(i * s));
    b.nest(&batch, LoopKind::Serial, |b, idx| {
        let (oa, ob, oy) = (lin(idx, &sa), lin(idx, &sb), lin(idx, &sy));
        b.for_(c(0), m.clone(), LoopKind::Serial, |b, i| {
            let row_y = &oy + &(&i * &nn);
            let zero = b.let_(Inst::Const { ty, lit: Lit::Float(0.0) });
            b.for_(c(0), nn.clone(), LoopKind::Serial, |b, j| b.store(py, &row_y + &j, zero, es));
            b.for_(c(0), k.clone(), LoopKind::Serial, |b, p| {
                let av = b.load(ty, 0, &(&oa + &(&i * &k)) + &p, es);
                let row_b = &ob + &(&p * &nn);
                b.for_(c(0), nn.clone(), LoopKind::Serial, |b, j| {
                    let yi = &row_y + &j;
                    let acc = b.load(ty, py, yi.clone(), es);
                    let bv = b.load(ty, 1, &row_b + &j, es);
                    let prod = b.bin(BinOp::FMul, av, bv);
                    let s = b.bin(BinOp::FAdd, acc, prod);
                    b.store(py, yi, s, es);
                });
            });
            // Epilogue on the finished row: bias, then activation.
            if !has_bias && act == Activation::None {
                return;
            }
            b.for_(c(0), nn.clone(), LoopKind::Serial, |b, j| {
                let yi = &row_y + &j;
                let mut y = b.load(ty, py, yi.clone(), es);
                if has_bias {
                    let bias = b.load(ty, 2, j.clone(), es);
                    y = b.bin(BinOp::FAdd, y, bias);
                }
                let y = activation_of(b, act, y, ty.elem).unwrap_or(y);
                b.store(py, yi, y, es);
            });
        });
    });
    Ok(b.finish())
}

/// Gemm: `alpha * op(A) op(B) + beta * C` (C broadcast to the result), then `act`.
pub fn gemm(name: &str, n: &Node, op: &Gemm) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let out = n.outputs[0].shape.as_fixed().ok_or_else(|| n.error("symbolic shape"))?;
    let a = n.fixed_in(0)?;
    if out.len() != 2 || a.len() != 2 {
        return Err(n.error("Gemm operands must be 2-D"));
    }
    let (m, nn) = (out[0], out[1]);
    let k = if op.trans_a { a[0] } else { a[1] };
    // Element offsets of op(A)[i, p] and op(B)[p, j].
    let (a_i, a_p) = if op.trans_a { (1, m) } else { (k, 1) };
    let (b_p, b_j) = if op.trans_b { (1, k) } else { (nn, 1) };
    let has_c = n.inputs.len() == 3;
    let py = n.inputs.len() as u32;
    let c_strides = if has_c { Some(strides(&n.fixed_in(2)?, &out)) } else { None };
    let mut b = KernelBuilder::new(name, &params(n));
    let epilogue = |b: &mut KernelBuilder, i: &Expr, j: &Expr, acc: ValId| {
        let mut y = acc;
        if op.alpha != 1.0 {
            let alpha = b.let_(Inst::Const { ty: F32, lit: Lit::Float(op.alpha as f64) });
            y = b.bin(BinOp::FMul, alpha, acc);
        }
        if let Some(cs) = &c_strides {
            let mut cv = b.load(F32, 2, &(i * &c(cs[0])) + &(j * &c(cs[1])), 4);
            if op.beta != 1.0 {
                let beta = b.let_(Inst::Const { ty: F32, lit: Lit::Float(op.beta as f64) });
                cv = b.bin(BinOp::FMul, beta, cv);
            }
            y = b.bin(BinOp::FAdd, y, cv);
        }
        let y = activation(b, op.act, y).unwrap_or(y);
        b.store(py, &(i * &c(nn)) + j, y, 4);
    };
    b.for_(c(0), c(m), LoopKind::Serial, |b, i| {
        let a_at = |p: &Expr| &(&i * &c(a_i)) + &(p * &c(a_p));
        if op.trans_b {
            // Dot products: op(B) rows are contiguous in memory.
            b.for_(c(0), c(nn), LoopKind::Serial, |b, j| {
                let zero = b.let_(Inst::Const { ty: F32, lit: Lit::Float(0.0) });
                let acc = b.local(F32, zero);
                b.for_(c(0), c(k), LoopKind::Serial, |b, p| {
                    let av = b.load(F32, 0, a_at(&p), 4);
                    let bv = b.load(F32, 1, &(&p * &c(b_p)) + &(&j * &c(b_j)), 4);
                    let cur = b.let_(Inst::Get(acc));
                    let prod = b.bin(BinOp::FMul, av, bv);
                    let s = b.bin(BinOp::FAdd, cur, prod);
                    b.stmt(Stmt::Set(acc, s));
                });
                let acc = b.let_(Inst::Get(acc));
                epilogue(b, &i, &j, acc);
            });
        } else {
            let row = &i * &c(nn);
            let zero = b.let_(Inst::Const { ty: F32, lit: Lit::Float(0.0) });
            b.for_(c(0), c(nn), LoopKind::Serial, |b, j| b.store(py, &row + &j, zero, 4));
            b.for_(c(0), c(k), LoopKind::Serial, |b, p| {
                let av = b.load(F32, 0, a_at(&p), 4);
                b.for_(c(0), c(nn), LoopKind::Serial, |b, j| {
                    let yi = &row + &j;
                    let bv = b.load(F32, 1, &(&p * &c(b_p)) + &(&j * &c(b_j)), 4);
                    let acc = b.load(F32, py, yi.clone(), 4);
                    let prod = b.bin(BinOp::FMul, av, bv);
                    let s = b.bin(BinOp::FAdd, acc, prod);
                    b.store(py, yi, s, 4);
                });
            });
            b.for_(c(0), c(nn), LoopKind::Serial, |b, j| {
                let acc = b.load(F32, py, &row + &j, 4);
                epilogue(b, &i, &j, acc);
            });
        }
    });
    Ok(b.finish())
}

/// Einsum of `equation` (f32 or f64 operands).
pub fn einsum(name: &str, n: &Node, equation: &str) -> Result<Kernel, LowerError> {
    let dt = n.outputs[0].dtype;
    if !matches!(dt, DType::F32 | DType::F64) {
        return Err(n.error(format!("dtype {dt} is not supported yet (f32 and f64)")));
    }
    let dims: Vec<Vec<u64>> = (0..n.inputs.len()).map(|i| n.fixed_in(i)).collect::<Result<_, _>>()?;
    let ranks: Vec<usize> = dims.iter().map(Vec::len).collect();
    let (ins, out) = dlc_ir::ops::parse_einsum(equation, &ranks).map_err(|m| n.error(m))?;
    let ext = dlc_ir::ops::einsum_extents(&ins, &dims).map_err(|m| n.error(m))?;
    let summed: Vec<char> = ext.keys().copied().filter(|ch| !out.contains(ch)).collect();
    let order: Vec<char> = out.iter().chain(&summed).copied().collect();
    // Per operand, its element stride for every letter in `order` (0 where absent or broadcast).
    let op_strides: Vec<Vec<u64>> = ins
        .iter()
        .zip(&dims)
        .map(|(letters, d)| {
            let st = strides(d, d);
            order
                .iter()
                .map(|ch| {
                    letters.iter().zip(d).zip(&st).filter(|((l, &e), _)| *l == ch && e != 1).map(|(_, &s)| s).sum()
                })
                .collect()
        })
        .collect();
    let out_ext: Vec<u64> = out.iter().map(|ch| ext[ch]).collect();
    let sum_ext: Vec<u64> = summed.iter().map(|ch| ext[ch]).collect();
    let out_st = strides(&out_ext, &out_ext);
    let e = storage(dt);
    let f64t = Ty::scalar(Elem::F64);
    let py = n.inputs.len() as u32;
    let mut b = KernelBuilder::new(name, &params(n));
    let oe: Vec<Expr> = out_ext.iter().map(|&d| c(d)).collect();
    let se: Vec<Expr> = sum_ext.iter().map(|&d| c(d)).collect();
    b.nest(&oe, LoopKind::Each, |b, oi| {
        let zero = b.let_(Inst::Const { ty: f64t, lit: Lit::Float(0.0) });
        let acc = b.local(f64t, zero);
        b.nest(&se, LoopKind::Serial, |b, si| {
            let idx: Vec<Expr> = oi.iter().chain(si).cloned().collect();
            let mut prod = b.let_(Inst::Const { ty: f64t, lit: Lit::Float(1.0) });
            for (k, st) in op_strides.iter().enumerate() {
                let raw = b.load(Ty::scalar(e), k as u32, lin(&idx, st), e.bytes());
                let v = convert(b, raw, dt, DType::F64);
                prod = b.bin(BinOp::FMul, prod, v);
            }
            let a = b.let_(Inst::Get(acc));
            let s = b.bin(BinOp::FAdd, a, prod);
            b.stmt(Stmt::Set(acc, s));
        });
        let a = b.let_(Inst::Get(acc));
        let y = convert(b, a, DType::F64, dt);
        b.store(py, lin(oi, &out_st), y, e.bytes());
    });
    Ok(b.finish())
}
