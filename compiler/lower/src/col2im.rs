//! Col2Im with its image and block shapes bound at run time ([`dlc_ir::ops::Col2Im`]):
//! every output pixel gathers the block values that land on it. One `each` nest over
//! `(n, c, pixel...)`; inside, a serial nest over the block's positions `(k...)`: the
//! pixel `o` receives block position `k` of grid cell `b` when `o + pad_begin - k *
//! dilation` is a non-negative multiple of the stride whose quotient `b` lies in the
//! grid. Extents are expressions of the bound symbols, so one kernel serves every shape.
use crate::{LowerError, Node};
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

/// The Col2Im kernel: operand `x` `[N, C * prod(block), L]`, result `[N, C, image...]`.
pub fn col2im(name: &str, n: &Node, op: &dlc_ir::ops::Col2Im) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let (image, block) = op.extents().ok_or_else(|| n.error("bad image or block extents"))?;
    let r = image.len();
    let grid = op.grid(&image, &block);
    let x = Node::dims(&n.inputs[0]);
    let out = Node::dims(&n.outputs[0]);
    let (rows, cols) = (x[1].clone(), x[2].clone());
    let kprod = block.iter().fold(Expr::c(1), |a, b| &a * b);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    b.nest(&out, LoopKind::Each, |b, idx| {
        let (bi, ci, pix) = (&idx[0], &idx[1], &idx[2..]);
        let zero = b.let_(Inst::Const { ty: F32, lit: Lit::Float(0.0) });
        let acc = b.local(F32, zero);
        b.nest(&block, LoopKind::Serial, |b, k| {
            let mut inside = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(1) });
            let mut col: Option<ValId> = None;
            for d in 0..r {
                let p = &(&pix[d] + &Expr::c(op.pads[d])) - &(&k[d] * &Expr::c(op.dilations[d]));
                let p = b.index(p);
                let (z, s) = (b.i64(0), b.i64(op.strides[d]));
                let nonneg = b.cmp(CmpOp::Sge, p, z);
                let rem = b.bin(BinOp::SRem, p, s);
                let on_stride = b.cmp(CmpOp::Eq, rem, z);
                let cell = b.bin(BinOp::SDiv, p, s);
                let g = b.index(grid[d].clone());
                let in_grid = b.cmp(CmpOp::Slt, cell, g);
                for ok in [nonneg, on_stride, in_grid] {
                    inside = b.bin(BinOp::And, inside, ok);
                }
                let cell = b.select(nonneg, cell, z);
                col = Some(match col {
                    None => cell,
                    Some(c) => {
                        let scaled = b.bin(BinOp::Mul, c, g);
                        b.bin(BinOp::Add, scaled, cell)
                    }
                });
            }
            let zero_i = b.i64(0);
            let col = b.select(inside, col.expect("r >= 1"), zero_i);
            // Row c * prod(block) + k (row-major over the block).
            let krow = k.iter().zip(&block).fold(Expr::c(0), |a, (ki, bd)| &(&a * bd) + ki);
            let row = &(ci * &kprod) + &krow;
            let at = &(&(&(bi * &rows) + &row) * &cols) + &Expr::val(col);
            let v = b.load(F32, 0, at, 4);
            let zf = b.let_(Inst::Const { ty: F32, lit: Lit::Float(0.0) });
            let v = b.select(inside, v, zf);
            let cur = b.let_(Inst::Get(acc));
            let next = b.bin(BinOp::FAdd, cur, v);
            b.stmt(Stmt::Set(acc, next));
        });
        let total = b.let_(Inst::Get(acc));
        let at = idx.iter().zip(&out).fold(Expr::c(0), |a, (i, e)| &(&a * e) + i);
        b.store(1, at, total, 4);
    });
    Ok(b.finish())
}
