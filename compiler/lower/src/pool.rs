//! Pools over NCHW, f32: MaxPool, AveragePool (with or without the padding counted) and
//! GlobalAveragePool.
//!
//! Each output is one window walk ([`point`]): taps outside the image load element 0
//! of the plane and are masked out of the running max or sum, so the loop has no
//! branches. Two forms of the same computation: [`Form::Tasks`] for the CPU (planes as
//! pool tasks when the work is worth it, [`crate::par`]; rows and columns serial) and
//! [`Form::Elements`] for CUDA (one `each` nest over planes, rows and columns: one
//! output per thread).
use crate::{in_bounds_expr, ival, par_expr, LowerError, Node};
use dlc_ir::ops::Window;
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

/// Which pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The window's maximum.
    Max,
    /// The window's mean; `count_include_pad` counts padded taps in the divisor.
    Avg {
        /// ONNX's `count_include_pad`.
        count_include_pad: bool,
    },
}

/// How a pool kernel's outputs are iterated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Planes as CPU pool tasks (or a serial loop for small work), rows and columns
    /// serial inside.
    Tasks,
    /// One `each` nest over (plane, row, column): one output per GPU thread.
    Elements,
}

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

fn konst(b: &mut KernelBuilder, v: f64) -> ValId {
    b.let_(Inst::Const { ty: F32, lit: Lit::Float(v) })
}

fn require_f32_4d(n: &Node) -> Result<[Expr; 4], LowerError> {
    n.require_f32()?;
    let x = Node::dims(&n.inputs[0]);
    let rank = x.len();
    <[Expr; 4]>::try_from(x)
        .map_err(|_| n.error(format!("{}-D pooling is not supported yet (2-D only)", rank.saturating_sub(2))))
}

/// One output of a pool: plane `pl`, row `oy`, column `ox` of an input plane `[h, w]`
/// (extents that may be run-time dims).
fn point(b: &mut KernelBuilder, g: &Window, kind: Pool, [h, w, oh, ow]: [&Expr; 4], [pl, oy, ox]: [Expr; 3]) {
    let base = &pl * &(h * w);
    let init = konst(b, if kind == Pool::Max { f64::NEG_INFINITY } else { 0.0 });
    let acc = b.local(F32, init);
    let zero = konst(b, 0.0);
    let cnt = b.local(F32, zero);
    b.for_(Expr::c(0), c(g.kernel[0]), LoopKind::Serial, |b, ky| {
        // Positions are computed as if padded (offset by pad), then shifted back.
        let py_pad = &(&oy * &c(g.strides[0])) + &(&ky * &c(g.dilations[0]));
        let iy = &py_pad - &c(g.pad_begin[0]);
        let in_y = in_bounds_expr(b, iy.clone(), h);
        let in_y_pad = in_bounds_expr(b, py_pad, &(h + &c(g.pad_begin[0] + g.pad_end[0])));
        b.for_(Expr::c(0), c(g.kernel[1]), LoopKind::Serial, |b, kx| {
            let px_pad = &(&ox * &c(g.strides[1])) + &(&kx * &c(g.dilations[1]));
            let ix = &px_pad - &c(g.pad_begin[1]);
            let in_x = in_bounds_expr(b, ix.clone(), w);
            let inside = b.bin(BinOp::And, in_y, in_x);
            // Out-of-image taps load element 0 of the plane and are then masked out.
            let at = b.index(&(&base + &(&iy * w)) + &ix);
            let first = b.index(base.clone());
            let off = b.select(inside, at, first);
            let v = b.load(F32, 0, Expr::val(off), 4);
            let a = b.let_(Inst::Get(acc));
            match kind {
                Pool::Max => {
                    let lt = b.cmp(CmpOp::FOlt, a, v);
                    let m = b.select(lt, v, a);
                    let a2 = b.let_(Inst::Get(acc));
                    let next = b.select(inside, m, a2);
                    b.stmt(Stmt::Set(acc, next));
                }
                Pool::Avg { count_include_pad } => {
                    let s = b.bin(BinOp::FAdd, a, v);
                    let a2 = b.let_(Inst::Get(acc));
                    let next = b.select(inside, s, a2);
                    b.stmt(Stmt::Set(acc, next));
                    let counted = if count_include_pad {
                        let in_x_pad = in_bounds_expr(b, px_pad, &(w + &c(g.pad_begin[1] + g.pad_end[1])));
                        b.bin(BinOp::And, in_y_pad, in_x_pad)
                    } else {
                        inside
                    };
                    let k = b.let_(Inst::Get(cnt));
                    let one = konst(b, 1.0);
                    let k1 = b.bin(BinOp::FAdd, k, one);
                    let k2 = b.let_(Inst::Get(cnt));
                    let next = b.select(counted, k1, k2);
                    b.stmt(Stmt::Set(cnt, next));
                }
            }
        });
    });
    let mut r = b.let_(Inst::Get(acc));
    if let Pool::Avg { .. } = kind {
        let k = b.let_(Inst::Get(cnt));
        r = b.bin(BinOp::FDiv, r, k);
    }
    let at = &(&(&pl * &(oh * ow)) + &(&oy * ow)) + &ox;
    b.store(1, at, r, 4);
}

/// [`point`] for an output whose every tap lies in the image: plain loads, no masks,
/// the count (for a mean) the window's size.
fn point_inside(
    b: &mut KernelBuilder,
    g: &Window,
    kind: Pool,
    [w, oh, ow]: [&Expr; 3],
    [pl, oy, ox, plane]: [Expr; 4],
) {
    let init = konst(b, if kind == Pool::Max { f64::NEG_INFINITY } else { 0.0 });
    let acc = b.local(F32, init);
    b.for_(Expr::c(0), c(g.kernel[0]), LoopKind::Serial, |b, ky| {
        let iy = &(&(&oy * &c(g.strides[0])) + &(&ky * &c(g.dilations[0]))) - &c(g.pad_begin[0]);
        b.for_(Expr::c(0), c(g.kernel[1]), LoopKind::Serial, |b, kx| {
            let ix = &(&(&ox * &c(g.strides[1])) + &(&kx * &c(g.dilations[1]))) - &c(g.pad_begin[1]);
            let v = b.load(F32, 0, &(&plane + &(&iy * w)) + &ix, 4);
            let a = b.let_(Inst::Get(acc));
            let next = match kind {
                Pool::Max => {
                    let lt = b.cmp(CmpOp::FOlt, a, v);
                    b.select(lt, v, a)
                }
                Pool::Avg { .. } => b.bin(BinOp::FAdd, a, v),
            };
            b.stmt(Stmt::Set(acc, next));
        });
    });
    let mut r = b.let_(Inst::Get(acc));
    if let Pool::Avg { .. } = kind {
        let k = konst(b, (g.kernel[0] * g.kernel[1]) as f64);
        r = b.bin(BinOp::FDiv, r, k);
    }
    let at = &(&(&pl * &(oh * ow)) + &(&oy * ow)) + &ox;
    b.store(1, at, r, 4);
}

/// MaxPool or AveragePool of window `g` (its extents may be run-time dims).
pub fn pool(name: &str, n: &Node, g: &Window, kind: Pool, form: Form) -> Result<Kernel, LowerError> {
    let [x0, x1, h, w] = require_f32_4d(n)?;
    let planes = &x0 * &x1;
    let [oh, ow] = &g.output;
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    match form {
        Form::Elements => b.nest(&[planes, oh.clone(), ow.clone()], LoopKind::Each, |b, i| {
            point(b, g, kind, [&h, &w, oh, ow], [i[0].clone(), i[1].clone(), i[2].clone()])
        }),
        Form::Tasks => {
            let per = (oh * ow).scale((g.kernel[0] * g.kernel[1]) as i64);
            let run_time = g.fixed().is_none();
            par_expr(&mut b, &planes, &per, |b, pl| {
                // Run-time extents computed once per plane (constants stay constants).
                let [h, w, oh, ow] = [&h, &w, oh, ow].map(|e| crate::hoist(b, e));
                if !run_time {
                    return b.nest(&[oh.clone(), ow.clone()], LoopKind::Serial, |b, i| {
                        point(b, g, kind, [&h, &w, &oh, &ow], [pl, i[0].clone(), i[1].clone()])
                    });
                }
                // Run-time dims: the outputs whose window lies in the image (rows whose
                // taps are all inside, columns [left, right)) take the unmasked walk.
                let sy = g.strides[0];
                let reach = ((g.kernel[0] - 1) * g.dilations[0]) as i64 - g.pad_begin[0] as i64;
                let (left, right) = g.interior(1, &w, &ow);
                let [left, right] = [&left, &right].map(|e| crate::hoist(b, e));
                let plane = &pl * &(&h * &w);
                b.for_(c(0), oh.clone(), LoopKind::Serial, |b, oy| {
                    let top = b.index(&(&oy * &c(sy)) - &c(g.pad_begin[0]));
                    let zero = b.i64(0);
                    let from_top = b.cmp(CmpOp::Sge, top, zero);
                    let bottom = b.index(&(&oy * &c(sy)) + &Expr::c(reach));
                    let hv = ival(b, &h);
                    let above_end = b.cmp(CmpOp::Slt, bottom, hv);
                    let rows_in = b.bin(BinOp::And, from_top, above_end);
                    let checked = |b: &mut KernelBuilder, lo: &Expr, hi: &Expr| {
                        b.for_(lo.clone(), hi.clone(), LoopKind::Serial, |b, ox| {
                            point(b, g, kind, [&h, &w, &oh, &ow], [pl.clone(), oy.clone(), ox])
                        })
                    };
                    b.if_(
                        rows_in,
                        |b| {
                            checked(b, &c(0), &left);
                            b.for_(left.clone(), right.clone(), LoopKind::Serial, |b, ox| {
                                point_inside(b, g, kind, [&w, &oh, &ow], [pl.clone(), oy.clone(), ox, plane.clone()])
                            });
                            checked(b, &right, &ow);
                        },
                        |b| checked(b, &c(0), &ow),
                    );
                });
            });
        }
    }
    Ok(b.finish())
}

/// GlobalAveragePool of f32 as rows: the planes' dims (N, C) and each plane's size,
/// for [`crate::reduce::sums_f32`] (CPU: the planes in an `each` nest, each summed in
/// vectors); `None` for other types or ranks below 3.
pub fn global_mean_rows(n: &Node) -> Option<(Vec<Expr>, Expr)> {
    let x = Node::dims(&n.inputs[0]);
    if n.inputs[0].dtype != DType::F32 || n.outputs[0].dtype != DType::F32 || x.len() < 3 {
        return None;
    }
    Some((x[..2].to_vec(), x[2..].iter().fold(Expr::c(1), |a, d| &a * d)))
}

/// GlobalAveragePool: the mean of each plane, summed in order.
pub fn global_avgpool(name: &str, n: &Node, form: Form) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let x = Node::dims(&n.inputs[0]);
    if x.len() < 2 {
        return Err(n.error("needs at least 2 dims"));
    }
    let planes = &x[0] * &x[1];
    let size = x[2..].iter().fold(Expr::c(1), |a, d| &a * d);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let plane = |b: &mut KernelBuilder, pl: Expr| {
        let size = crate::hoist(b, &size);
        let zero = konst(b, 0.0);
        let acc = b.local(F32, zero);
        let base = &pl * &size;
        b.for_(Expr::c(0), size.clone(), LoopKind::Serial, |b, i| {
            let a = b.let_(Inst::Get(acc));
            let v = b.load(F32, 0, &base + &i, 4);
            let s = b.bin(BinOp::FAdd, a, v);
            b.stmt(Stmt::Set(acc, s));
        });
        let a = b.let_(Inst::Get(acc));
        let count = match size.as_const() {
            Some(k) => konst(b, k as f32 as f64),
            None => {
                let k = ival(b, &size);
                b.let_(Inst::Cast(dlc_kir::CastOp::SiToFp, k, F32))
            }
        };
        let m = b.bin(BinOp::FDiv, a, count);
        b.store(1, pl, m, 4);
    };
    match form {
        Form::Elements => b.nest(&[planes], LoopKind::Each, |b, i| plane(b, i[0].clone())),
        Form::Tasks => par_expr(&mut b, &planes, &size, plane),
    }
    Ok(b.finish())
}
