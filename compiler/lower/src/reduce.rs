//! Reductions: for every result element, a loop nest over the reduced axes folds the
//! inputs into an accumulator of f64 (floating-point inputs) or 64-bit integers, which is
//! finalised (mean, sqrt, log) and converted to the result dtype; f32 reductions over
//! trailing axes run in vectors instead ([`extremes_f32`], [`sums_f32`]). ArgMax/ArgMin keep the
//! first (or last) extreme; NllLoss and CumSum are sequential.
use crate::dtype::{accumulator, load_as, store_as};
use crate::shape::{contiguous_strides, linear};
use crate::{LowerError, Node};
use dlc_ir::ops::{resolve_axes, CumSum, LossReduction, NllLoss};
use dlc_ir::{DType, Op};
use dlc_kir::{
    Access, BinOp, CastOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, ReduceOp, Stmt, Ty, UnOp,
    ValId,
};

/// What a Reduce* op folds its inputs with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[allow(missing_docs)]
pub enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// The axes and kind of a Reduce* op (`None` for every other op).
pub fn reduction(op: &Op) -> Option<(&[i64], Kind)> {
    Some(match op {
        Op::ReduceSum(o) => (&o.axes, Kind::Sum),
        Op::ReduceMean(o) => (&o.axes, Kind::Mean),
        Op::ReduceMax(o) => (&o.axes, Kind::Max),
        Op::ReduceMin(o) => (&o.axes, Kind::Min),
        Op::ReduceProd(o) => (&o.axes, Kind::Prod),
        Op::ReduceL1(o) => (&o.axes, Kind::L1),
        Op::ReduceL2(o) => (&o.axes, Kind::L2),
        Op::ReduceLogSum(o) => (&o.axes, Kind::LogSum),
        Op::ReduceLogSumExp(o) => (&o.axes, Kind::LogSumExp),
        Op::ReduceSumSquare(o) => (&o.axes, Kind::SumSquare),
        _ => return None,
    })
}

/// Runs `f`, keeping its first error in `slot` (builder closures return nothing).
fn keep(slot: &mut Option<LowerError>, f: impl FnOnce() -> Result<(), LowerError>) {
    if slot.is_none() {
        if let Err(e) = f() {
            *slot = Some(e);
        }
    }
}

fn done(b: KernelBuilder, slot: Option<LowerError>) -> Result<Kernel, LowerError> {
    match slot {
        Some(e) => Err(e),
        None => Ok(b.finish()),
    }
}

fn f64c(b: &mut KernelBuilder, v: f64) -> ValId {
    b.let_(Inst::Const { ty: Ty::scalar(Elem::F64), lit: Lit::Float(v) })
}

/// The lowering of a Reduce* op; `w` f32 lanes for the vector kernels of f32 reductions
/// over trailing axes ([`extremes_f32`], [`sums_f32`]).
pub fn reduce(name: &str, n: &Node, axes: &[i64], kind: Kind, w: u32) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let axes = resolve_axes(axes, x.len()).ok_or_else(|| n.error("invalid axes"))?;
    let trailing = axes.iter().enumerate().all(|(i, &a)| a == x.len() - axes.len() + i);
    let f32s = n.inputs[0].dtype == DType::F32 && n.outputs[0].dtype == DType::F32;
    if f32s && trailing && !axes.is_empty() && w > 1 {
        let (kept, red) = x.split_at(x.len() - axes.len());
        let count = red.iter().fold(Expr::c(1), |p, d| &p * d);
        match kind {
            Kind::Max | Kind::Min => return Ok(extremes_f32(name, kept, &count, kind == Kind::Max, w)),
            Kind::Sum | Kind::Mean | Kind::SumSquare | Kind::L1 | Kind::L2 => {
                return Ok(sums_f32(name, kept, &count, kind, w));
            }
            _ => {}
        }
    }
    let (in_dt, out_dt) = (n.inputs[0].dtype, n.outputs[0].dtype);
    let st = contiguous_strides(&x);
    let kept: Vec<usize> = (0..x.len()).filter(|i| !axes.contains(i)).collect();
    let kept_ext: Vec<Expr> = kept.iter().map(|&i| x[i].clone()).collect();
    let red_ext: Vec<Expr> = axes.iter().map(|&i| x[i].clone()).collect();
    let count = red_ext.iter().fold(Expr::c(1), |p, d| &p * d);
    let out_st = contiguous_strides(&kept_ext);
    let float = in_dt.is_float();
    let acc_dt = accumulator(in_dt);
    let signed = in_dt.is_signed_int();
    let acc_ty = Ty::scalar(if float { Elem::F64 } else { Elem::I64 });
    let init = if float {
        Lit::Float(match kind {
            Kind::Max => f64::NEG_INFINITY,
            Kind::Min => f64::INFINITY,
            Kind::Prod => 1.0,
            _ => 0.0,
        })
    } else {
        Lit::Int(match kind {
            Kind::Max if signed => i64::MIN,
            Kind::Max => 0,
            Kind::Min if signed => i64::MAX,
            Kind::Min => -1, // u64::MAX
            Kind::Prod => 1,
            _ => 0,
        })
    };
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let mut err = None;
    b.nest(&kept_ext, LoopKind::Each, |b, oi| {
        keep(&mut err, || {
            let i = b.let_(Inst::Const { ty: acc_ty, lit: init });
            let acc = b.local(acc_ty, i);
            let base = oi.iter().zip(&kept).fold(Expr::c(0), |a, (i, &d)| &a + &(i * &st[d]));
            let mut inner = None;
            b.nest(&red_ext, LoopKind::Serial, |b, ri| {
                keep(&mut inner, || {
                    let at = ri.iter().zip(&axes).fold(base.clone(), |a, (i, &d)| &a + &(i * &st[d]));
                    let v = load_as(b, 0, at, in_dt, acc_dt);
                    let a = b.let_(Inst::Get(acc));
                    let next = if float { step_float(b, kind, a, v) } else { step_int(b, kind, a, v, signed) };
                    b.stmt(Stmt::Set(acc, next));
                    Ok(())
                })
            });
            if let Some(e) = inner {
                return Err(e);
            }
            let a = b.let_(Inst::Get(acc));
            let call = |b: &mut KernelBuilder, f: &str, x: ValId| {
                b.let_(Inst::Call { func: f.into(), args: vec![x], ty: Ty::scalar(Elem::F64) })
            };
            let fin = if float {
                finish_float(b, kind, a, &count)
            } else {
                match kind {
                    Kind::Mean if count.as_const() != Some(0) => {
                        let c = b.index(count.clone());
                        b.bin(if signed { BinOp::SDiv } else { BinOp::UDiv }, a, c)
                    }
                    Kind::L2 | Kind::LogSum | Kind::LogSumExp => {
                        let f = crate::dtype::convert(b, a, acc_dt, DType::F64);
                        let r = call(b, if kind == Kind::L2 { "sqrt" } else { "log" }, f);
                        // Rounded down to an integer like numpy's astype.
                        crate::dtype::convert(b, r, DType::F64, acc_dt)
                    }
                    _ => a,
                }
            };
            let from = if float { DType::F64 } else { acc_dt };
            store_as(b, 1, linear(oi, &out_st, Expr::c(0)), fin, from, out_dt);
            Ok(())
        })
    });
    done(b, err)
}

/// Calls `fold` on the `count` f32s of param 0 from element `base`, `w` lanes at a time:
/// whole vectors, then the remainder in a masked vector (its lanes past the row load 0)
/// with the mask.
fn row_vectors(
    b: &mut KernelBuilder,
    base: &Expr,
    count: &Expr,
    w: u32,
    fold: &dyn Fn(&mut KernelBuilder, ValId, Option<ValId>),
) {
    let (vt, wc) = (Ty::vec(Elem::F32, w), Expr::c(w as i64));
    let full = count.floor_div(&wc);
    b.for_(Expr::c(0), full.clone(), LoopKind::Serial, |b, i| {
        let v = b.load(vt, 0, base + &(&i * &wc), 4);
        fold(b, v, None);
    });
    let done = &full * &wc;
    let rest = crate::in_bounds_expr(b, done.clone(), count);
    b.if_(
        rest,
        |b| {
            let lanes = crate::conv1x1::iota(b, w);
            let m = crate::conv1x1::lanes_in(b, lanes, &done, &Expr::c(0), count, w);
            let v = b.let_(Inst::Load { ty: vt, param: 0, index: base + &done, align: 4, mask: Some(m) });
            fold(b, v, Some(m));
        },
        |_| {},
    );
}

/// ReduceMax (`max`) or ReduceMin of f32 over the trailing axes, `count` elements
/// (contiguous) per result: `w` lanes at a time into a vector of running extremes (an
/// extreme of f32s is one of them, so f32 is exact), a masked vector for the remainder,
/// then across the lanes. A NaN anywhere in a row makes its result NaN (numpy's rule, as
/// the scalar kernel): a vector of flags records them, the lanes' comparisons being
/// ordered (a NaN never replaces an extreme).
fn extremes_f32(name: &str, kept: &[Expr], count: &Expr, max: bool, w: u32) -> Kernel {
    let vt = Ty::vec(Elem::F32, w);
    let it = Ty::vec(Elem::I32, w);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let out_st = contiguous_strides(kept);
    b.nest(kept, LoopKind::Each, |b, oi| {
        let row = linear(oi, &out_st, Expr::c(0));
        let base = &row * count;
        let init = if max { f64::NEG_INFINITY } else { f64::INFINITY };
        let i0 = b.let_(Inst::Const { ty: vt, lit: Lit::Float(init) });
        let acc = b.local(vt, i0);
        let z = b.let_(Inst::Const { ty: it, lit: Lit::Int(0) });
        let nan = b.local(it, z);
        let one = b.let_(Inst::Const { ty: it, lit: Lit::Int(1) });
        let better = if max { CmpOp::FOgt } else { CmpOp::FOlt };
        // Folds `v` in, in the lanes `m` allows (all when `None`).
        let fold = |b: &mut KernelBuilder, v: ValId, m: Option<ValId>| {
            let a = b.let_(Inst::Get(acc));
            let mut take = b.cmp(better, v, a);
            let mut bad = b.cmp(CmpOp::FUno, v, v);
            if let Some(m) = m {
                take = b.bin(BinOp::And, take, m);
                bad = b.bin(BinOp::And, bad, m);
            }
            let next = b.select(take, v, a);
            b.stmt(Stmt::Set(acc, next));
            let f = b.let_(Inst::Get(nan));
            let f = b.select(bad, one, f);
            b.stmt(Stmt::Set(nan, f));
        };
        row_vectors(b, &base, count, w, &fold);
        let a = b.let_(Inst::Get(acc));
        let r = b.let_(Inst::Reduce(if max { ReduceOp::FMax } else { ReduceOp::FMin }, a));
        let f = b.let_(Inst::Get(nan));
        let any = b.let_(Inst::Reduce(ReduceOp::SMax, f));
        let z = b.let_(Inst::Const { ty: Ty::scalar(Elem::I32), lit: Lit::Int(0) });
        let any = b.cmp(CmpOp::Sgt, any, z);
        let qnan = b.let_(Inst::Const { ty: Ty::scalar(Elem::F32), lit: Lit::Float(f64::NAN) });
        let r = b.select(any, qnan, r);
        b.store(1, row, r, 4);
    });
    b.finish()
}

/// ReduceSum, ReduceMean, ReduceSumSquare, ReduceL1 or ReduceL2 of f32 over the trailing
/// axes, `count` elements (contiguous) per result: `w` lanes at a time, each term
/// widened to f64 and added into its lane's f64 sum (the scalar kernel's accumulator
/// precision; only the order of the additions differs), a masked vector for the
/// remainder, then the lanes added in lane order and the result finished as the scalar
/// kernel does.
pub(crate) fn sums_f32(name: &str, kept: &[Expr], count: &Expr, kind: Kind, w: u32) -> Kernel {
    let dt = Ty::vec(Elem::F64, w);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let out_st = contiguous_strides(kept);
    b.nest(kept, LoopKind::Each, |b, oi| {
        let row = linear(oi, &out_st, Expr::c(0));
        let base = &row * count;
        let z = b.let_(Inst::Const { ty: dt, lit: Lit::Float(0.0) });
        let acc = b.local(dt, z);
        // Adds the terms of `v` (masked-off lanes load 0, which adds 0 in every kind).
        let fold = |b: &mut KernelBuilder, v: ValId| {
            let d = b.let_(Inst::Cast(CastOp::FpExt, v, dt));
            let t = match kind {
                Kind::SumSquare | Kind::L2 => b.bin(BinOp::FMul, d, d),
                Kind::L1 => {
                    let zero = b.let_(Inst::Const { ty: dt, lit: Lit::Float(0.0) });
                    let neg = b.cmp(CmpOp::FOlt, d, zero);
                    let nd = b.let_(Inst::Un(UnOp::FNeg, d));
                    b.select(neg, nd, d)
                }
                _ => d,
            };
            let a = b.let_(Inst::Get(acc));
            let next = b.bin(BinOp::FAdd, a, t);
            b.stmt(Stmt::Set(acc, next));
        };
        row_vectors(b, &base, count, w, &|b, v, _| fold(b, v));
        let a = b.let_(Inst::Get(acc));
        let sum = b.let_(Inst::Reduce(ReduceOp::FAdd, a));
        let fin = finish_float(b, kind, sum, count);
        let r = b.let_(Inst::Cast(CastOp::FpTrunc, fin, Ty::scalar(Elem::F32)));
        b.store(1, row, r, 4);
    });
    b.finish()
}

/// The result of a float reduction of `count` terms from its f64 accumulator `a`: the
/// mean divides, L2 takes the square root, the log-sums the logarithm.
fn finish_float(b: &mut KernelBuilder, kind: Kind, a: ValId, count: &Expr) -> ValId {
    let call = |b: &mut KernelBuilder, f: &str, x: ValId| {
        b.let_(Inst::Call { func: f.into(), args: vec![x], ty: Ty::scalar(Elem::F64) })
    };
    match kind {
        Kind::Mean => {
            let c = match count.as_const() {
                Some(c) => f64c(b, c as f64),
                None => {
                    let c = b.index(count.clone());
                    b.let_(Inst::Cast(CastOp::SiToFp, c, Ty::scalar(Elem::F64)))
                }
            };
            b.bin(BinOp::FDiv, a, c)
        }
        Kind::L2 => call(b, "sqrt", a),
        Kind::LogSum | Kind::LogSumExp => call(b, "log", a),
        _ => a,
    }
}

fn step_float(b: &mut KernelBuilder, kind: Kind, a: ValId, v: ValId) -> ValId {
    match kind {
        Kind::Sum | Kind::Mean | Kind::LogSum => b.bin(BinOp::FAdd, a, v),
        Kind::Prod => b.bin(BinOp::FMul, a, v),
        Kind::L1 => {
            let zero = f64c(b, 0.0);
            let neg = b.cmp(CmpOp::FOlt, v, zero);
            let nv = b.let_(Inst::Un(UnOp::FNeg, v));
            let abs = b.select(neg, nv, v);
            b.bin(BinOp::FAdd, a, abs)
        }
        Kind::L2 | Kind::SumSquare => {
            let sq = b.bin(BinOp::FMul, v, v);
            b.bin(BinOp::FAdd, a, sq)
        }
        Kind::LogSumExp => {
            let e = b.let_(Inst::Call { func: "exp".into(), args: vec![v], ty: Ty::scalar(Elem::F64) });
            b.bin(BinOp::FAdd, a, e)
        }
        Kind::Max | Kind::Min => {
            // NaN propagates, as in numpy.
            let better = b.cmp(if kind == Kind::Max { CmpOp::FOgt } else { CmpOp::FOlt }, v, a);
            let v_nan = b.cmp(CmpOp::FUno, v, v);
            let a_nan = b.cmp(CmpOp::FUno, a, a);
            let either = b.bin(BinOp::Or, better, v_nan);
            let a_ok = b.let_(Inst::Un(UnOp::Not, a_nan));
            let take = b.bin(BinOp::And, either, a_ok);
            b.select(take, v, a)
        }
    }
}

fn step_int(b: &mut KernelBuilder, kind: Kind, a: ValId, v: ValId, signed: bool) -> ValId {
    match kind {
        Kind::Sum | Kind::Mean | Kind::LogSum | Kind::LogSumExp => b.bin(BinOp::Add, a, v),
        Kind::Prod => b.bin(BinOp::Mul, a, v),
        Kind::L1 => {
            let abs = if signed {
                let zero = b.i64(0);
                let neg = b.cmp(CmpOp::Slt, v, zero);
                let nv = b.let_(Inst::Un(UnOp::Neg, v));
                b.select(neg, nv, v)
            } else {
                v
            };
            b.bin(BinOp::Add, a, abs)
        }
        Kind::L2 | Kind::SumSquare => {
            let sq = b.bin(BinOp::Mul, v, v);
            b.bin(BinOp::Add, a, sq)
        }
        Kind::Max | Kind::Min => {
            let p = match (kind == Kind::Max, signed) {
                (true, true) => CmpOp::Sgt,
                (true, false) => CmpOp::Ugt,
                (false, true) => CmpOp::Slt,
                (false, false) => CmpOp::Ult,
            };
            let c = b.cmp(p, v, a);
            b.select(c, v, a)
        }
    }
}

/// ArgMax / ArgMin along one axis; ties keep the first index, or the last when asked.
pub fn arg(name: &str, n: &Node, axis: i64, is_max: bool, last: bool) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let a = dlc_ir::ops::normalize_axis(axis, x.len()).ok_or_else(|| n.error("axis out of range"))?;
    let in_dt = n.inputs[0].dtype;
    let (float, signed) = (in_dt.is_float(), in_dt.is_signed_int());
    let val_dt = accumulator(in_dt);
    let val_ty = Ty::scalar(if float { Elem::F64 } else { Elem::I64 });
    let st = contiguous_strides(&x);
    let outer: Vec<usize> = (0..x.len()).filter(|&i| i != a).collect();
    let outer_ext: Vec<Expr> = outer.iter().map(|&i| x[i].clone()).collect();
    let out_st = contiguous_strides(&outer_ext);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let mut err = None;
    b.nest(&outer_ext, LoopKind::Each, |b, oi| {
        keep(&mut err, || {
            let base = oi.iter().zip(&outer).fold(Expr::c(0), |acc, (i, &d)| &acc + &(i * &st[d]));
            let v0 = load_as(b, 0, base.clone(), in_dt, val_dt);
            let best = b.local(val_ty, v0);
            let z = b.i64(0);
            let best_i = b.local(Ty::scalar(Elem::I64), z);
            let mut inner = None;
            b.for_(Expr::c(1), x[a].clone(), LoopKind::Serial, |b, j| {
                keep(&mut inner, || {
                    let v = load_as(b, 0, &base + &(&j * &st[a]), in_dt, val_dt);
                    let cur = b.let_(Inst::Get(best));
                    let p = if float {
                        match (is_max, last) {
                            (true, false) => CmpOp::FOgt,
                            (true, true) => CmpOp::FOge,
                            (false, false) => CmpOp::FOlt,
                            (false, true) => CmpOp::FOle,
                        }
                    } else {
                        match (is_max, last, signed) {
                            (true, false, true) => CmpOp::Sgt,
                            (true, true, true) => CmpOp::Sge,
                            (false, false, true) => CmpOp::Slt,
                            (false, true, true) => CmpOp::Sle,
                            (true, false, false) => CmpOp::Ugt,
                            (true, true, false) => CmpOp::Uge,
                            (false, false, false) => CmpOp::Ult,
                            (false, true, false) => CmpOp::Ule,
                        }
                    };
                    let better = b.cmp(p, v, cur);
                    let nb = b.select(better, v, cur);
                    b.stmt(Stmt::Set(best, nb));
                    let ji = b.index(j);
                    let bi = b.let_(Inst::Get(best_i));
                    let ni = b.select(better, ji, bi);
                    b.stmt(Stmt::Set(best_i, ni));
                    Ok(())
                })
            });
            if let Some(e) = inner {
                return Err(e);
            }
            let bi = b.let_(Inst::Get(best_i));
            b.store(1, linear(oi, &out_st, Expr::c(0)), bi, 8);
            Ok(())
        })
    });
    done(b, err)
}

/// Negative log-likelihood loss, accumulated in f64. Out-of-range targets are clamped so
/// they never read outside the input.
pub fn nll_loss(name: &str, n: &Node, op: &NllLoss) -> Result<Kernel, LowerError> {
    let x = n.fixed_in(0)?;
    if x.len() < 2 {
        return Err(n.error("needs at least 2 dims"));
    }
    let (batch, classes) = (x[0] as i64, x[1] as i64);
    let inner: i64 = x[2..].iter().product::<u64>() as i64;
    let (in_dt, out_dt) = (n.inputs[0].dtype, n.outputs[0].dtype);
    let t32 = n.inputs[1].dtype == DType::I32;
    let has_w = n.inputs.len() == 3;
    let mut params = vec![Access::Read; n.inputs.len()];
    params.push(Access::Write);
    let py = n.inputs.len() as u32;
    let mut b = KernelBuilder::new(name, &params);
    let z = f64c(&mut b, 0.0);
    let acc = b.local(Ty::scalar(Elem::F64), z);
    let wsum = b.local(Ty::scalar(Elem::F64), z);
    let mut err = None;
    if classes > 0 {
        b.nest(&[Expr::c(batch), Expr::c(inner)], LoopKind::Serial, |b, idx| {
            keep(&mut err, || {
                let ti = &(&idx[0] * &Expr::c(inner)) + &idx[1];
                let t = if t32 {
                    let r = b.load(Ty::scalar(Elem::I32), 1, ti.clone(), 4);
                    b.let_(Inst::Cast(CastOp::Sext, r, Ty::scalar(Elem::I64)))
                } else {
                    b.load(Ty::scalar(Elem::I64), 1, ti.clone(), 8)
                };
                let ignored = if op.has_ignore_index {
                    let ig = b.i64(op.ignore_index);
                    b.cmp(CmpOp::Eq, t, ig)
                } else {
                    b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) })
                };
                let (zero, cls) = (b.i64(0), b.i64(classes));
                let neg = b.cmp(CmpOp::Slt, t, zero);
                let tc = b.select(neg, zero, t);
                let past = b.cmp(CmpOp::Sge, tc, cls);
                let lastc = b.i64(classes - 1);
                let tc = b.select(past, lastc, tc);
                let w = if has_w { load_as(b, 2, Expr::val(tc), in_dt, DType::F64) } else { f64c(b, 1.0) };
                let wz = f64c(b, 0.0);
                let w = b.select(ignored, wz, w);
                let at = &(&(&idx[0] * &Expr::c(classes * inner)) + &(&Expr::val(tc) * &Expr::c(inner))) + &idx[1];
                let xv = load_as(b, 0, at, in_dt, DType::F64);
                let xw = b.bin(BinOp::FMul, xv, w);
                let loss = b.let_(Inst::Un(UnOp::FNeg, xw));
                if op.reduction == LossReduction::None {
                    store_as(b, py, ti, loss, DType::F64, out_dt);
                } else {
                    let a = b.let_(Inst::Get(acc));
                    let na = b.bin(BinOp::FAdd, a, loss);
                    b.stmt(Stmt::Set(acc, na));
                    let s = b.let_(Inst::Get(wsum));
                    let ns = b.bin(BinOp::FAdd, s, w);
                    b.stmt(Stmt::Set(wsum, ns));
                }
                Ok(())
            })
        });
    }
    if err.is_none() && op.reduction != LossReduction::None {
        let mut r = b.let_(Inst::Get(acc));
        if op.reduction == LossReduction::Mean {
            let s = b.let_(Inst::Get(wsum));
            r = b.bin(BinOp::FDiv, r, s);
        }
        store_as(&mut b, py, Expr::c(0), r, DType::F64, out_dt);
    }
    done(b, err)
}

/// CumSum/CumProd with a run-time axis: one scan loop nest per possible axis, selected by
/// the loaded axis value (out-of-range axes leave the result as a copy of the input).
/// Extents may be run-time dims (the scan along one is as long as the run says).
pub fn cumsum(name: &str, n: &Node, op: &CumSum) -> Result<Kernel, LowerError> {
    let xs: Vec<Expr> = Node::dims(&n.inputs[0]);
    let dt = n.inputs[0].dtype;
    let float = dt.is_float();
    let acc_dt = accumulator(dt);
    let acc_ty = Ty::scalar(if float { Elem::F64 } else { Elem::I64 });
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    let bytes = xs.iter().fold(Expr::c(dt.size() as i64), |p, d| &p * d);
    b.stmt(Stmt::Memcpy { dst: 2, dst_off: Expr::c(0), src: 0, src_off: Expr::c(0), bytes });
    if xs.iter().any(|d| d.as_const() == Some(0)) {
        return Ok(b.finish());
    }
    let axis = if n.inputs[1].dtype == DType::I32 {
        let r = b.load(Ty::scalar(Elem::I32), 1, Expr::c(0), 4);
        b.let_(Inst::Cast(CastOp::Sext, r, Ty::scalar(Elem::I64)))
    } else {
        b.load(Ty::scalar(Elem::I64), 1, Expr::c(0), 8)
    };
    let (zero, rank) = (b.i64(0), b.i64(xs.len() as i64));
    let neg = b.cmp(CmpOp::Slt, axis, zero);
    let wrapped = b.bin(BinOp::Add, axis, rank);
    let axis = b.select(neg, wrapped, axis);
    let st = contiguous_strides(&xs);
    let init = if float { Lit::Float(if op.product { 1.0 } else { 0.0 }) } else { Lit::Int(op.product as i64) };
    let mut err = None;
    for a in 0..xs.len() {
        let ai = b.i64(a as i64);
        let here = b.cmp(CmpOp::Eq, axis, ai);
        let outer: Vec<usize> = (0..xs.len()).filter(|&i| i != a).collect();
        let ext: Vec<Expr> = outer.iter().map(|&i| xs[i].clone()).collect();
        b.if_(
            here,
            |b| {
                b.nest(&ext, LoopKind::Serial, |bb, oi| {
                    let i = bb.let_(Inst::Const { ty: acc_ty, lit: init });
                    let acc = bb.local(acc_ty, i);
                    let base = oi.iter().zip(&outer).fold(Expr::c(0), |s, (i, &d)| &s + &(i * &st[d]));
                    let len = xs[a].clone();
                    bb.for_(Expr::c(0), len.clone(), LoopKind::Serial, |bb, j| {
                        keep(&mut err, || {
                            let pos = if op.reverse { &(&len - &Expr::c(1)) - &j } else { j };
                            let off = &base + &(&pos * &st[a]);
                            let v = load_as(bb, 0, off.clone(), dt, acc_dt);
                            let cur = bb.let_(Inst::Get(acc));
                            let opk = match (float, op.product) {
                                (true, false) => BinOp::FAdd,
                                (true, true) => BinOp::FMul,
                                (false, false) => BinOp::Add,
                                (false, true) => BinOp::Mul,
                            };
                            let next = bb.bin(opk, cur, v);
                            let out = if op.exclusive { cur } else { next };
                            store_as(bb, 2, off, out, acc_dt, dt);
                            bb.stmt(Stmt::Set(acc, next));
                            Ok(())
                        })
                    });
                });
            },
            |_| {},
        );
    }
    done(b, err)
}
