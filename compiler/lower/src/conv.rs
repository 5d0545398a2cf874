//! Plain convolutions over NCHW, f32: the direct Conv that takes what the blocked
//! kernels do not (grouped convolutions whose groups no vector width divides, weights
//! given at run time, layers whose dims and dtypes the others refuse), and
//! ConvTranspose.
//!
//! [`conv`] accumulates into each output plane tap by tap (input channel, kh, kw); for
//! each tap the range of output rows and columns whose input position lies inside the
//! image is computed up front, so the innermost loop has no bounds checks and
//! vectorises when the stride is 1. Each output element still sums its terms in the
//! order (c, kh, kw), the order of a naive reference. Planes are pool tasks when the
//! work is worth it ([`crate::par`]).
//!
//! [`conv_transpose`] is a gather: each output pixel sums the input pixels and taps that
//! map onto it (`iy * s + ky * d - pad == oy`), in the order (c, ky, kx); one `each`
//! nest over the outputs (a loop nest on the CPU, one output per CUDA thread).
use crate::elementwise::activation;
use crate::{ival, par_expr, LowerError, Node};
use dlc_ir::ops::{Activation, Conv, ConvTranspose};
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

fn dims4(n: &Node, i: usize) -> Result<[u64; 4], LowerError> {
    let d = n.fixed_in(i)?;
    <[u64; 4]>::try_from(d.as_slice()).map_err(|_| n.error("only 2-D convolutions are supported"))
}

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

/// The output indices `o` in `[0, out)` for which `o*s + k*d - pad` lies in `[0, n)`,
/// as values: `lo = max(0, ceil((pad - k*d) / s))`, `hi = min(out, floor((n - 1 + pad -
/// k*d) / s) + 1)` (0 when negative). `n` and `out` may be run-time extents.
fn valid_range(b: &mut KernelBuilder, k: &Expr, s: u64, d: u64, pad: u64, n: &Expr, out: &Expr) -> (Expr, Expr) {
    let kd = k * &c(d);
    let num = b.index(&c(pad) - &kd);
    let zero = b.i64(0);
    let pos = b.cmp(CmpOp::Sgt, num, zero);
    let up = b.index(&Expr::val(num) + &c(s - 1));
    let sv = b.i64(s as i64);
    let up = b.bin(BinOp::SDiv, up, sv);
    let lo = b.select(pos, up, zero);
    let num2 = b.index(&(n + &Expr::c(pad as i64 - 1)) - &kd);
    let nonneg = b.cmp(CmpOp::Sge, num2, zero);
    let q = b.bin(BinOp::SDiv, num2, sv);
    let q = b.index(&Expr::val(q) + &Expr::c(1));
    let outv = ival(b, out);
    let below = b.cmp(CmpOp::Slt, q, outv);
    let q = b.select(below, q, outv);
    let hi = b.select(nonneg, q, zero);
    (Expr::val(lo), Expr::val(hi))
}

fn konst(b: &mut KernelBuilder, v: f64) -> ValId {
    b.let_(Inst::Const { ty: F32, lit: Lit::Float(v) })
}

/// Direct Conv with bias (operand 2), residual (operand 3) and activation epilogues.
/// The batch and image extents may be run-time dims (channels and weights are known).
pub fn conv(name: &str, n: &Node, op: &Conv) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let g = op.window(n.name, &n.inputs[0], &n.inputs[1]).map_err(|e| n.error(e.to_string()))?;
    let x = Node::dims(&n.inputs[0]);
    let [batch, ch, h, wd] = <[Expr; 4]>::try_from(x).map_err(|_| n.error("only 2-D convolutions are supported"))?;
    let ch = ch.as_const().ok_or_else(|| n.error("the channel dim must be known"))? as u64;
    let [m, cg, kh, kw] = dims4(n, 1)?;
    let groups = op.group.max(1) as u64;
    let mg = m / groups;
    let [oh, ow] = g.output.clone();
    let has_bias = n.inputs.len() >= 3;
    let has_res = n.inputs.len() == 4;
    let py = n.inputs.len() as u32;
    let mut params = vec![Access::Read; n.inputs.len()];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    let per = (&oh * &ow).scale((2 * cg * kh * kw) as i64);
    par_expr(&mut b, &(&batch * &c(m)), &per, |b, plane| {
        // Run-time extents computed once per plane (constants stay constants).
        let [h, wd, oh, ow] = [&h, &wd, &oh, &ow].map(|e| crate::hoist(b, e));
        let plane_size = &oh * &ow;
        let bi = plane.floor_div(&c(m));
        let mi = plane.modulo(&c(m));
        let grp = mi.floor_div(&c(mg));
        let out_base = &(&(&bi * &c(m)) + &mi) * &plane_size;
        let init = if has_bias { b.load(F32, 2, mi.clone(), 4) } else { konst(b, 0.0) };
        b.for_(c(0), plane_size.clone(), LoopKind::Serial, |b, p| b.store(py, &out_base + &p, init, 4));
        b.for_(c(0), c(cg), LoopKind::Serial, |b, ci| {
            let chan = &(&(&bi * &c(ch)) + &(&grp * &c(cg))) + &ci;
            let in_base = &chan * &(&h * &wd);
            b.for_(c(0), c(kh), LoopKind::Serial, |b, ky| {
                let (oy_lo, oy_hi) = valid_range(b, &ky, g.strides[0], g.dilations[0], g.pad_begin[0], &h, &oh);
                b.for_(c(0), c(kw), LoopKind::Serial, |b, kx| {
                    let (ox_lo, ox_hi) = valid_range(b, &kx, g.strides[1], g.dilations[1], g.pad_begin[1], &wd, &ow);
                    let wat = &(&(&(&mi * &c(cg * kh * kw)) + &(&ci * &c(kh * kw))) + &(&ky * &c(kw))) + &kx;
                    let wv = b.load(F32, 1, wat, 4);
                    b.for_(oy_lo, oy_hi, LoopKind::Serial, |b, oy| {
                        // iy = oy*s + ky*d - pad (in range by construction)
                        let iy = &(&(&oy * &c(g.strides[0])) + &(&ky * &c(g.dilations[0]))) - &c(g.pad_begin[0]);
                        let row_in = &in_base + &(&iy * &wd);
                        let row_out = &out_base + &(&oy * &ow);
                        let col0 = &(&kx * &c(g.dilations[1])) - &c(g.pad_begin[1]);
                        b.for_(ox_lo, ox_hi, LoopKind::Serial, |b, ox| {
                            let ix = &(&ox * &c(g.strides[1])) + &col0;
                            let xv = b.load(F32, 0, &row_in + &ix, 4);
                            let yi = &row_out + &ox;
                            let acc = b.load(F32, py, yi.clone(), 4);
                            let prod = b.bin(BinOp::FMul, wv, xv);
                            let s = b.bin(BinOp::FAdd, acc, prod);
                            b.store(py, yi, s, 4);
                        });
                    });
                });
            });
        });
        // Epilogue, while the output plane is in cache: residual, then activation.
        if !has_res && op.act == Activation::None {
            return;
        }
        b.for_(c(0), plane_size.clone(), LoopKind::Serial, |b, p| {
            let yi = &out_base + &p;
            let mut y = b.load(F32, py, yi.clone(), 4);
            if has_res {
                let r = b.load(F32, 3, yi.clone(), 4);
                y = b.bin(BinOp::FAdd, y, r);
            }
            let y = activation(b, op.act, y).unwrap_or(y);
            b.store(py, yi, y, 4);
        });
    });
    Ok(b.finish())
}

/// The input index `(o + pad - k*d) / s` of output `o` and tap `k` along one axis of a
/// transposed convolution, and whether it exists: the division is exact and the index
/// below `n`.
fn source(b: &mut KernelBuilder, o: &Expr, k: &Expr, pad: u64, d: u64, s: u64, n: &Expr) -> (ValId, ValId) {
    let num = b.index(&(o + &c(pad)) - &(k * &c(d)));
    let sv = b.i64(s as i64);
    let i = b.bin(BinOp::SDiv, num, sv);
    let r = b.bin(BinOp::SRem, num, sv);
    let zero = b.i64(0);
    let exact = b.cmp(CmpOp::Eq, r, zero);
    let lim = ival(b, &n.scale(s as i64));
    let inside = b.cmp(CmpOp::Ult, num, lim);
    (i, b.bin(BinOp::And, exact, inside))
}

/// ConvTranspose with an optional bias (operand 2).
pub fn conv_transpose(name: &str, n: &Node, op: &ConvTranspose) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    // Image dims (and the batch) may be run-time extents.
    let g = op.window(n.name, &n.inputs[0], &n.inputs[1]).map_err(|e| n.error(e.to_string()))?;
    let xd = Node::dims(&n.inputs[0]);
    let ch = n.inputs[0].shape.0[1].fixed().ok_or_else(|| n.error("the channel dim must be known"))?;
    let (batch, h, wd) = (xd[0].clone(), g.input[0].clone(), g.input[1].clone());
    let [_, mg, kh, kw] = dims4(n, 1)?;
    let groups = op.group.max(1) as u64;
    let cg = ch / groups;
    let m = mg * groups;
    let [oh, ow] = g.output.clone();
    let has_bias = n.inputs.len() == 3;
    let py = n.inputs.len() as u32;
    let mut params = vec![Access::Read; n.inputs.len()];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    let pixel = |b: &mut KernelBuilder, bi: &Expr, mi: &Expr, oy: &Expr, ox: &Expr| {
        let grp = mi.floor_div(&c(mg));
        let mm = mi.modulo(&c(mg));
        let init = if has_bias { b.load(F32, 2, mi.clone(), 4) } else { konst(b, 0.0) };
        let acc = b.local(F32, init);
        b.for_(c(0), c(cg), LoopKind::Serial, |b, ci| {
            let chn = &(&grp * &c(cg)) + &ci;
            b.for_(c(0), c(kh), LoopKind::Serial, |b, ky| {
                // iy * s = oy + pad - ky * d must be a non-negative multiple of s below H*s.
                let (iy, ok_y) = source(b, oy, &ky, g.pad_begin[0], g.dilations[0], g.strides[0], &h);
                b.for_(c(0), c(kw), LoopKind::Serial, |b, kx| {
                    let (ix, ok_x) = source(b, ox, &kx, g.pad_begin[1], g.dilations[1], g.strides[1], &wd);
                    let ok = b.bin(BinOp::And, ok_y, ok_x);
                    let zero = b.i64(0);
                    let plane = &h * &wd;
                    let at =
                        b.index(&(&(&(&(bi * &c(ch)) + &chn) * &plane) + &(&Expr::val(iy) * &wd)) + &Expr::val(ix));
                    let xi = b.select(ok, at, zero);
                    let xv = b.load(F32, 0, Expr::val(xi), 4);
                    let wat = &(&(&(&chn * &c(mg * kh * kw)) + &(&mm * &c(kh * kw))) + &(&ky * &c(kw))) + &kx;
                    let wv = b.load(F32, 1, wat, 4);
                    let a = b.let_(Inst::Get(acc));
                    let prod = b.bin(BinOp::FMul, xv, wv);
                    let s = b.bin(BinOp::FAdd, a, prod);
                    let a2 = b.let_(Inst::Get(acc));
                    let next = b.select(ok, s, a2);
                    b.stmt(Stmt::Set(acc, next));
                });
            });
        });
        let y = b.let_(Inst::Get(acc));
        let at = &(&(&(&(&(bi * &c(m)) + mi) * &oh) + oy) * &ow) + ox;
        b.store(py, at, y, 4);
    };
    let fixed = [&batch, &oh, &ow].iter().all(|e| e.is_const());
    if fixed {
        // One `each` nest over the outputs (one per CUDA thread).
        b.nest(&[batch, c(m), oh.clone(), ow.clone()], LoopKind::Each, |b, idx| {
            pixel(b, &idx[0], &idx[1], &idx[2], &idx[3])
        });
    } else {
        // Run-time extents: output planes as pool tasks, rows and columns in each.
        let planes = &batch * &c(m);
        b.for_(c(0), planes, LoopKind::Parallel, |b, pl| {
            let (bi, mi) = (pl.floor_div(&c(m)), pl.modulo(&c(m)));
            b.for_(c(0), oh.clone(), LoopKind::Serial, |b, oy| {
                b.for_(c(0), ow.clone(), LoopKind::Serial, |b, ox| pixel(b, &bi, &mi, &oy, &ox));
            });
        });
    }
    Ok(b.finish())
}
