//! Reductions: for every output element, a loop nest over the reduced axes folds the
//! inputs into an accumulator of f64 (floating-point inputs) or 64-bit integers, which is
//! finalised (mean, sqrt, log) and converted to the output dtype.
use super::elementwise::{compute_dtype, contiguous_strides, convert, llvm_type, narrow, nest, widen, Drive};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::resolve_axes;
use dlc_ir::{DType, Op};
use inkwell::values::{BasicValueEnum, FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};

/// What a Reduce* op folds its inputs with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
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

/// The axes and kind of a Reduce* op (`None` for the other reductions).
fn reduction(op: &Op) -> Option<(&[i64], Kind)> {
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

/// For an f32 Sum, Mean, Max, Min, SumSquare, L1 or L2 reduction over the trailing axes
/// (what a GPU block computes as one row): its kind, the number of rows (outputs) and
/// the row length.
pub(crate) fn as_rows(n: &NodeInfo) -> Option<(Kind, u64, u64)> {
    let (axes, kind) = reduction(n.op)?;
    let by_rows =
        matches!(kind, Kind::Sum | Kind::Mean | Kind::Max | Kind::Min | Kind::SumSquare | Kind::L1 | Kind::L2);
    if !by_rows || n.inputs[0].dtype != DType::F32 || n.outputs[0].dtype != DType::F32 {
        return None;
    }
    let x = n.in_dims(0);
    let axes = resolve_axes(axes, x.len())?;
    let lead = x.len() - axes.len();
    (axes == (lead..x.len()).collect::<Vec<_>>())
        .then(|| (kind, x[..lead].iter().product(), x[lead..].iter().product()))
}

/// The accumulator dtype for inputs of dtype `d`: f64 for floats, 64-bit integers otherwise.
fn accumulator(d: DType) -> DType {
    if d.is_float() {
        DType::F64
    } else if d.is_signed_int() {
        DType::I64
    } else {
        DType::U64
    }
}

pub(crate) fn reduce<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo) -> R<()> {
    reduce_with(kb, n, &nest)
}

/// Whether the reduction `op` computes each output independently (so `reduce_with`
/// hands its outputs to `drive`); NllLoss with a reduction and CumSum are sequential.
pub(crate) fn per_output(op: &Op) -> bool {
    !matches!(op, Op::NllLoss(_) | Op::CumSum(_))
}

/// A reduction, each output element computed by one iteration of `drive` (see
/// [`per_output`] for the ops that ignore it).
pub(crate) fn reduce_with<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, drive: Drive<'_, 'ctx>) -> R<()> {
    let (axes, kind) = match (reduction(n.op), n.op) {
        (Some(r), _) => r,
        (None, Op::ArgMax(o)) => return arg(kb, n, o.axis, true, o.select_last_index, drive),
        (None, Op::ArgMin(o)) => return arg(kb, n, o.axis, false, o.select_last_index, drive),
        (None, Op::NllLoss(o)) => return nll_loss(kb, n, o),
        (None, Op::CumSum(o)) => return cumsum(kb, n, o),
        (None, other) => return Err(n.unsupported(format!("internal: {} is not a reduction", other.mnemonic()))),
    };
    let x = n.in_dims(0);
    let axes = resolve_axes(axes, x.len()).ok_or_else(|| n.unsupported("invalid axes"))?;
    let in_dt = n.inputs[0].dtype;
    let out_dt = n.outputs[0].dtype;
    let st = contiguous_strides(&x);
    let kept: Vec<usize> = (0..x.len()).filter(|i| !axes.contains(i)).collect();
    let kept_ext: Vec<u64> = kept.iter().map(|&i| x[i]).collect();
    let red_ext: Vec<u64> = axes.iter().map(|&i| x[i]).collect();
    let count: u64 = red_ext.iter().product();
    let out_st = contiguous_strides(&kept_ext);
    let in_ty = llvm_type(kb, in_dt).ok_or_else(|| n.unsupported(format!("dtype {in_dt} is not supported yet")))?;
    let out_ty = llvm_type(kb, out_dt).ok_or_else(|| n.unsupported(format!("dtype {out_dt} is not supported yet")))?;
    let float = in_dt.is_float();
    let acc_dt = accumulator(in_dt);
    let acc_ty = llvm_type(kb, acc_dt).expect("f64/i64");
    let acc = kb.alloca(acc_ty)?;
    let f64t = kb.cx.f64_type();
    let i64t = kb.i64t;
    let signed = in_dt.is_signed_int();
    let init: BasicValueEnum = if float {
        f64t.const_float(match kind {
            Kind::Max => f64::NEG_INFINITY,
            Kind::Min => f64::INFINITY,
            Kind::Prod => 1.0,
            _ => 0.0,
        })
        .into()
    } else {
        let v: u64 = match kind {
            Kind::Max if signed => i64::MIN as u64,
            Kind::Max => 0,
            Kind::Min if signed => i64::MAX as u64,
            Kind::Min => u64::MAX,
            Kind::Prod => 1,
            _ => 0,
        };
        i64t.const_int(v, false).into()
    };
    let (px, py) = (kb.param(0), kb.param(1));
    drive(kb, &kept_ext, &|kb, oi| {
        kb.b.build_store(acc, init)?;
        let base: Vec<(IntValue, u64)> = oi.iter().zip(&kept).map(|(&i, &d)| (i, st[d])).collect();
        kb.nest(&red_ext, |kb, ri| {
            let mut terms = base.clone();
            terms.extend(ri.iter().zip(&axes).map(|(&i, &d)| (i, st[d])));
            let p = kb.gep(in_ty, px, kb.lin(&terms, 0)?)?;
            let v = widen(kb, kb.b.build_load(in_ty, p, "")?, in_dt)?;
            let v = convert(kb, v, compute_dtype(in_dt), acc_dt)?;
            let a = kb.b.build_load(acc_ty, acc, "")?;
            let next: BasicValueEnum = if float {
                step_float(kb, kind, a.into_float_value(), v.into_float_value())?.into()
            } else {
                step_int(kb, kind, a.into_int_value(), v.into_int_value(), signed)?.into()
            };
            kb.b.build_store(acc, next)?;
            Ok(())
        })?;
        let a = kb.b.build_load(acc_ty, acc, "")?;
        let fin: BasicValueEnum = if float {
            let a = a.into_float_value();
            let call = |name: &str, x: FloatValue<'ctx>| -> R<BasicValueEnum<'ctx>> {
                Ok(kb.call_math(name, f64t, &[x])?.into())
            };
            match kind {
                Kind::Mean => kb.b.build_float_div(a, f64t.const_float(count as f64), "")?.into(),
                Kind::L2 => call("sqrt", a)?,
                Kind::LogSum | Kind::LogSumExp => call("log", a)?,
                _ => a.into(),
            }
        } else {
            let a = a.into_int_value();
            match kind {
                Kind::Mean if count > 0 => {
                    if signed {
                        kb.b.build_int_signed_div(a, i64t.const_int(count, false), "")?.into()
                    } else {
                        kb.b.build_int_unsigned_div(a, i64t.const_int(count, false), "")?.into()
                    }
                }
                Kind::L2 | Kind::LogSum | Kind::LogSumExp => {
                    let f = convert(kb, a.into(), acc_dt, DType::F64)?.into_float_value();
                    let name = if kind == Kind::L2 { "sqrt" } else { "log" };
                    let r = kb.call_math(name, f64t, &[f])?.into();
                    // The float result is rounded down to an integer like numpy's astype.
                    convert(kb, r, DType::F64, acc_dt)?
                }
                _ => a.into(),
            }
        };
        let from = if float { DType::F64 } else { acc_dt };
        let y = narrow(kb, convert(kb, fin, from, compute_dtype(out_dt))?, out_dt, true)?;
        let oidx = kb.lin(&oi.iter().copied().zip(out_st.iter().copied()).collect::<Vec<_>>(), 0)?;
        kb.b.build_store(kb.gep(out_ty, py, oidx)?, y)?;
        Ok(())
    })
}

fn step_float<'ctx>(kb: &Kb<'_, 'ctx>, kind: Kind, a: FloatValue<'ctx>, v: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
    let b = &kb.b;
    let f64t = kb.cx.f64_type();
    Ok(match kind {
        Kind::Sum | Kind::Mean | Kind::LogSum => b.build_float_add(a, v, "")?,
        Kind::Prod => b.build_float_mul(a, v, "")?,
        Kind::L1 => {
            let neg = b.build_float_compare(FloatPredicate::OLT, v, f64t.const_zero(), "")?;
            let abs = kb.select_f(neg, b.build_float_neg(v, "")?, v)?;
            b.build_float_add(a, abs, "")?
        }
        Kind::L2 | Kind::SumSquare => b.build_float_add(a, b.build_float_mul(v, v, "")?, "")?,
        Kind::LogSumExp => {
            let e = kb.call_math("exp", f64t, &[v])?;
            b.build_float_add(a, e, "")?
        }
        Kind::Max | Kind::Min => {
            // NaN propagates, as in numpy.
            let p = if kind == Kind::Max { FloatPredicate::OGT } else { FloatPredicate::OLT };
            let better = b.build_float_compare(p, v, a, "")?;
            let v_nan = b.build_float_compare(FloatPredicate::UNO, v, v, "")?;
            let a_nan = b.build_float_compare(FloatPredicate::UNO, a, a, "")?;
            let take = b.build_and(b.build_or(better, v_nan, "")?, b.build_not(a_nan, "")?, "")?;
            kb.select_f(take, v, a)?
        }
    })
}

fn step_int<'ctx>(
    kb: &Kb<'_, 'ctx>,
    kind: Kind,
    a: IntValue<'ctx>,
    v: IntValue<'ctx>,
    signed: bool,
) -> R<IntValue<'ctx>> {
    let b = &kb.b;
    Ok(match kind {
        Kind::Sum | Kind::Mean | Kind::LogSum | Kind::LogSumExp => b.build_int_add(a, v, "")?,
        Kind::Prod => b.build_int_mul(a, v, "")?,
        Kind::L1 => {
            let neg = kb.icmp(IntPredicate::SLT, v, kb.c(0))?;
            let abs = if signed { kb.select_i(neg, b.build_int_neg(v, "")?, v)? } else { v };
            b.build_int_add(a, abs, "")?
        }
        Kind::L2 | Kind::SumSquare => b.build_int_add(a, b.build_int_mul(v, v, "")?, "")?,
        Kind::Max | Kind::Min => {
            let p = match (kind == Kind::Max, signed) {
                (true, true) => IntPredicate::SGT,
                (true, false) => IntPredicate::UGT,
                (false, true) => IntPredicate::SLT,
                (false, false) => IntPredicate::ULT,
            };
            kb.select_i(kb.icmp(p, v, a)?, v, a)?
        }
    })
}

/// ArgMax / ArgMin along one axis; ties keep the first index, or the last when asked.
fn arg<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, axis: i64, is_max: bool, last: bool, drive: Drive<'_, 'ctx>) -> R<()> {
    let x = n.in_dims(0);
    let a = dlc_ir::ops::normalize_axis(axis, x.len()).ok_or_else(|| n.unsupported("axis out of range"))?;
    let in_dt = n.inputs[0].dtype;
    let in_ty = llvm_type(kb, in_dt).ok_or_else(|| n.unsupported(format!("dtype {in_dt} is not supported yet")))?;
    let float = in_dt.is_float();
    let signed = in_dt.is_signed_int();
    let val_dt = accumulator(in_dt);
    let val_ty = llvm_type(kb, val_dt).expect("f64/i64");
    let st = contiguous_strides(&x);
    let outer: Vec<usize> = (0..x.len()).filter(|&i| i != a).collect();
    let outer_ext: Vec<u64> = outer.iter().map(|&i| x[i]).collect();
    let out_st = contiguous_strides(&outer_ext);
    let best = kb.alloca(val_ty)?;
    let best_i = kb.alloca(kb.i64t.into())?;
    let (px, py) = (kb.param(0), kb.param(1));
    drive(kb, &outer_ext, &|kb, oi| {
        let base: Vec<(IntValue, u64)> = oi.iter().zip(&outer).map(|(&i, &d)| (i, st[d])).collect();
        let load = |kb: &Kb<'_, 'ctx>, j: IntValue<'ctx>| -> R<BasicValueEnum<'ctx>> {
            let mut t = base.clone();
            t.push((j, st[a]));
            let p = kb.gep(in_ty, px, kb.lin(&t, 0)?)?;
            let v = widen(kb, kb.b.build_load(in_ty, p, "")?, in_dt)?;
            convert(kb, v, compute_dtype(in_dt), val_dt)
        };
        kb.b.build_store(best, load(kb, kb.c(0))?)?;
        kb.b.build_store(best_i, kb.c(0))?;
        kb.for_range(kb.c(1), kb.c(x[a]), |kb, j| {
            let v = load(kb, j)?;
            let cur = kb.b.build_load(val_ty, best, "")?;
            let better = if float {
                let p = match (is_max, last) {
                    (true, false) => FloatPredicate::OGT,
                    (true, true) => FloatPredicate::OGE,
                    (false, false) => FloatPredicate::OLT,
                    (false, true) => FloatPredicate::OLE,
                };
                kb.b.build_float_compare(p, v.into_float_value(), cur.into_float_value(), "")?
            } else {
                use IntPredicate::*;
                let p = match (is_max, last, signed) {
                    (true, false, true) => SGT,
                    (true, true, true) => SGE,
                    (false, false, true) => SLT,
                    (false, true, true) => SLE,
                    (true, false, false) => UGT,
                    (true, true, false) => UGE,
                    (false, false, false) => ULT,
                    (false, true, false) => ULE,
                };
                kb.icmp(p, v.into_int_value(), cur.into_int_value())?
            };
            kb.b.build_store(best, kb.b.build_select(better, v, cur, "")?)?;
            let bi = kb.b.build_load(kb.i64t, best_i, "")?.into_int_value();
            kb.b.build_store(best_i, kb.select_i(better, j, bi)?)?;
            Ok(())
        })?;
        let oidx = kb.lin(&oi.iter().copied().zip(out_st.iter().copied()).collect::<Vec<_>>(), 0)?;
        let bi = kb.b.build_load(kb.i64t, best_i, "")?;
        kb.b.build_store(kb.gep(kb.i64t.into(), py, oidx)?, bi)?;
        Ok(())
    })
}

/// Negative log-likelihood loss, accumulated in f64. Out-of-range targets are clamped so
/// they never read outside the input.
pub(crate) fn nll_loss<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &dlc_ir::ops::NllLoss) -> R<()> {
    use dlc_ir::ops::LossReduction;
    let x = n.in_dims(0);
    let (batch, classes) = (x[0], x[1]);
    let inner: u64 = x[2..].iter().product();
    let in_dt = n.inputs[0].dtype;
    let out_dt = n.outputs[0].dtype;
    let in_ty = llvm_type(kb, in_dt).ok_or_else(|| n.unsupported(format!("dtype {in_dt} is not supported yet")))?;
    let out_ty = llvm_type(kb, out_dt).ok_or_else(|| n.unsupported(format!("dtype {out_dt} is not supported yet")))?;
    let t_ty = if n.inputs[1].dtype == DType::I32 { kb.cx.i32_type() } else { kb.i64t };
    let has_w = n.inputs.len() == 3;
    let (px, pt) = (kb.param(0), kb.param(1));
    let pw = has_w.then(|| kb.param(2));
    let py = kb.param(n.inputs.len());
    let f64t = kb.cx.f64_type();
    let acc = kb.alloca(f64t.into())?;
    let wsum = kb.alloca(f64t.into())?;
    kb.b.build_store(acc, f64t.const_zero())?;
    kb.b.build_store(wsum, f64t.const_zero())?;
    let load_f64 = |kb: &Kb<'_, 'ctx>, p, i| -> R<FloatValue<'ctx>> {
        let v = widen(kb, kb.b.build_load(in_ty, kb.gep(in_ty, p, i)?, "")?, in_dt)?;
        Ok(convert(kb, v, compute_dtype(in_dt), DType::F64)?.into_float_value())
    };
    if classes > 0 {
        kb.nest(&[batch, inner], |kb, idx| {
            let (b, d) = (idx[0], idx[1]);
            let ti = kb.lin(&[(b, inner), (d, 1)], 0)?;
            let raw = kb.b.build_load(t_ty, kb.gep(t_ty.into(), pt, ti)?, "")?.into_int_value();
            let t = kb.b.build_int_s_extend_or_bit_cast(raw, kb.i64t, "")?;
            let ignored = if op.has_ignore_index {
                kb.icmp(IntPredicate::EQ, t, kb.i64t.const_int(op.ignore_index as u64, true))?
            } else {
                kb.cx.bool_type().const_zero()
            };
            let tc = kb.select_i(kb.icmp(IntPredicate::SLT, t, kb.c(0))?, kb.c(0), t)?;
            let tc = kb.select_i(kb.icmp(IntPredicate::SGE, tc, kb.c(classes))?, kb.c(classes - 1), tc)?;
            let w = match pw {
                Some(pw) => load_f64(kb, pw, tc)?,
                None => f64t.const_float(1.0),
            };
            let w = kb.select_f(ignored, f64t.const_zero(), w)?;
            let xv = load_f64(kb, px, kb.lin(&[(b, classes * inner), (tc, inner), (d, 1)], 0)?)?;
            let loss = kb.b.build_float_neg(kb.b.build_float_mul(xv, w, "")?, "")?;
            if op.reduction == LossReduction::None {
                let y = narrow(kb, convert(kb, loss.into(), DType::F64, compute_dtype(out_dt))?, out_dt, true)?;
                kb.b.build_store(kb.gep(out_ty, py, ti)?, y)?;
            } else {
                let a = kb.b.build_load(f64t, acc, "")?.into_float_value();
                kb.b.build_store(acc, kb.b.build_float_add(a, loss, "")?)?;
                let s = kb.b.build_load(f64t, wsum, "")?.into_float_value();
                kb.b.build_store(wsum, kb.b.build_float_add(s, w, "")?)?;
            }
            Ok(())
        })?;
    }
    if op.reduction != LossReduction::None {
        let mut r = kb.b.build_load(f64t, acc, "")?.into_float_value();
        if op.reduction == LossReduction::Mean {
            r = kb.b.build_float_div(r, kb.b.build_load(f64t, wsum, "")?.into_float_value(), "")?;
        }
        let y = narrow(kb, convert(kb, r.into(), DType::F64, compute_dtype(out_dt))?, out_dt, true)?;
        kb.b.build_store(py, y)?;
    }
    Ok(())
}

/// CumSum/CumProd with a run-time axis: one scan loop nest per possible axis, selected by
/// the loaded axis value (out-of-range axes leave the output as a copy of the input).
pub(crate) fn cumsum<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &dlc_ir::ops::CumSum) -> R<()> {
    let x = n.in_dims(0);
    let dt = n.inputs[0].dtype;
    let ty = llvm_type(kb, dt).ok_or_else(|| n.unsupported(format!("dtype {dt} is not supported yet")))?;
    let float = dt.is_float();
    let acc_dt = accumulator(dt);
    let acc_ty = llvm_type(kb, acc_dt).expect("f64/i64");
    let acc = kb.alloca(acc_ty)?;
    let (px, pa, py) = (kb.param(0), kb.param(1), kb.param(2));
    let bytes = n.outputs[0].size_bytes().unwrap_or(0);
    kb.memcpy(py, px, kb.c(bytes))?;
    if x.contains(&0) {
        return Ok(());
    }
    let a_ty = if n.inputs[1].dtype == DType::I32 { kb.cx.i32_type() } else { kb.i64t };
    let raw = kb.b.build_load(a_ty, pa, "")?.into_int_value();
    let axis = kb.b.build_int_s_extend_or_bit_cast(raw, kb.i64t, "")?;
    let axis = kb.select_i(kb.icmp(IntPredicate::SLT, axis, kb.c(0))?, kb.add(axis, kb.c(x.len() as u64))?, axis)?;
    let st = contiguous_strides(&x);
    let init: BasicValueEnum = if float {
        kb.cx.f64_type().const_float(if op.product { 1.0 } else { 0.0 }).into()
    } else {
        kb.i64t.const_int(op.product as u64, false).into()
    };
    for a in 0..x.len() {
        kb.if_then(kb.icmp(IntPredicate::EQ, axis, kb.c(a as u64))?, |kb| {
            let outer: Vec<usize> = (0..x.len()).filter(|&i| i != a).collect();
            let ext: Vec<u64> = outer.iter().map(|&i| x[i]).collect();
            kb.nest(&ext, |kb, oi| {
                kb.b.build_store(acc, init)?;
                let base: Vec<(IntValue, u64)> = oi.iter().zip(&outer).map(|(&i, &d)| (i, st[d])).collect();
                kb.for_n(x[a], |kb, j| {
                    let pos = if op.reverse { kb.sub(kb.c(x[a] - 1), j)? } else { j };
                    let mut t = base.clone();
                    t.push((pos, st[a]));
                    let off = kb.lin(&t, 0)?;
                    let v = widen(kb, kb.b.build_load(ty, kb.gep(ty, px, off)?, "")?, dt)?;
                    let v = convert(kb, v, compute_dtype(dt), acc_dt)?;
                    let cur = kb.b.build_load(acc_ty, acc, "")?;
                    let next: BasicValueEnum = match (float, op.product) {
                        (true, false) => kb.b.build_float_add(cur.into_float_value(), v.into_float_value(), "")?.into(),
                        (true, true) => kb.b.build_float_mul(cur.into_float_value(), v.into_float_value(), "")?.into(),
                        (false, false) => kb.b.build_int_add(cur.into_int_value(), v.into_int_value(), "")?.into(),
                        (false, true) => kb.b.build_int_mul(cur.into_int_value(), v.into_int_value(), "")?.into(),
                    };
                    let out = if op.exclusive { cur } else { next };
                    let y = narrow(kb, convert(kb, out, acc_dt, compute_dtype(dt))?, dt, true)?;
                    kb.b.build_store(kb.gep(ty, py, off)?, y)?;
                    kb.b.build_store(acc, next)?;
                    Ok(())
                })
            })
        })?;
    }
    Ok(())
}
