//! Normalisations: BatchNormalization (inference), Softmax/LogSoftmax/Hardmax and
//! Layer/RMS normalisation, f32.
use crate::shape::{broadcast_strides, coalesce, contiguous_strides, linear};
use crate::{LowerError, Node};
use dlc_ir::ops::{normalize_axis, LayerNormalization, SoftmaxMode};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CastOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };
const F64: Ty = Ty { elem: Elem::F64, lanes: 1 };

fn konst(b: &mut KernelBuilder, ty: Ty, v: f64) -> ValId {
    b.let_(Inst::Const { ty, lit: Lit::Float(v) })
}

fn load(b: &mut KernelBuilder, param: u32, at: Expr) -> ValId {
    b.load(F32, param, at, 4)
}

fn call(b: &mut KernelBuilder, func: &str, ty: Ty, args: &[ValId]) -> ValId {
    b.let_(Inst::Call { func: func.into(), args: args.to_vec(), ty })
}

fn get(b: &mut KernelBuilder, l: u32) -> ValId {
    b.let_(Inst::Get(l))
}

/// BatchNormalization, one element per iteration of an `each` nest over `[N, C, inner]`:
/// `(x - mean) * (scale / sqrt(var + epsilon)) + bias`.
pub fn batchnorm(name: &str, n: &Node, epsilon: f32) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let x = Node::dims(&n.inputs[0]);
    if x.len() < 2 {
        return Err(n.error("needs at least 2 dims"));
    }
    let (batch, c) = (x[0].clone(), x[1].clone());
    let inner = x[2..].iter().fold(Expr::c(1), |a, d| &a * d);
    let mut params = vec![Access::Read; 5];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    b.nest(&[batch, c.clone(), inner.clone()], LoopKind::Each, |b, idx| {
        let ch = idx[1].clone();
        let var = load(b, 4, ch.clone());
        let eps = konst(b, F32, epsilon as f64);
        let d = b.bin(BinOp::FAdd, var, eps);
        let sd = call(b, "sqrtf", F32, &[d]);
        let one = konst(b, F32, 1.0);
        let inv = b.bin(BinOp::FDiv, one, sd);
        let s = load(b, 1, ch.clone());
        let scale = b.bin(BinOp::FMul, s, inv);
        let at = &(&(&idx[0] * &(&c * &inner)) + &(&ch * &inner)) + &idx[2];
        let xv = load(b, 0, at.clone());
        let m = load(b, 3, ch.clone());
        let centred = b.bin(BinOp::FSub, xv, m);
        let v = b.bin(BinOp::FMul, centred, scale);
        let bias = load(b, 2, ch);
        let y = b.bin(BinOp::FAdd, v, bias);
        b.store(5, at, y, 4);
    });
    Ok(b.finish())
}

/// Softmax (or LogSoftmax along the last axis) in f32 vectors of the target's width, by
/// rows ([`softmax_rows`]) or columns ([`softmax_columns`]); `None` where neither
/// applies (the generic kernel, [`softmax`], serves).
pub fn softmax_vector(
    name: &str,
    n: &Node,
    axis: i64,
    mode: SoftmaxMode,
    t: &crate::Target,
) -> Option<Result<Kernel, LowerError>> {
    let f32_only = n.inputs[0].dtype == DType::F32 && n.outputs[0].dtype == DType::F32;
    let (x, w) = (Node::dims(&n.inputs[0]), t.f32_lanes);
    let a = normalize_axis(axis, x.len())?;
    if !f32_only || w < 2 {
        return None;
    }
    match a + 1 == x.len() {
        true => softmax_rows(name, &x, w, mode),
        false => softmax_columns(name, &x, w, a, mode),
    }
}

/// Softmax or LogSoftmax along the last axis, of a fixed length of at least one vector or
/// a run-time length (a sequence's attention scores where the attention was not fused):
/// per row the maximum, then `exp(x - max)` with dlc's vector exp and its sum in vector
/// lanes (the tail of the row, all of a row shorter than a vector, scalar), then the row
/// scaled by `1 / sum` (or shifted by `max + log(sum)`). Rows are split into pool tasks
/// by their work ([`crate::par_expr`]). `None` where it does not apply.
fn softmax_rows(name: &str, x: &[Expr], w: u32, mode: SoftmaxMode) -> Option<Result<Kernel, LowerError>> {
    let len = x.last()?.clone();
    if mode == SoftmaxMode::Hardmax || len.as_const().is_some_and(|l| l < w as i64) {
        return None;
    }
    let outer = x[..x.len() - 1].iter().fold(Expr::c(1), |p, d| &p * d);
    let vt = Ty { elem: Elem::F32, lanes: w };
    let c = Expr::c;
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    // About 24 steps an element: the maximum, the exponential, the sum and the scaling.
    let per = &len * &c(24);
    crate::par_expr(&mut b, &outer, &per, |b, r| {
        let len = crate::hoist(b, &len);
        let vectors = crate::hoist(b, &len.floor_div(&c(w as i64)));
        let full = crate::hoist(b, &(&vectors * &c(w as i64)));
        let base = &r * &len;
        let at = |j: &Expr| &base + j;
        let vmax0 = konst(b, vt, f64::NEG_INFINITY);
        let vmax = b.local(vt, vmax0);
        b.for_(c(0), vectors.clone(), LoopKind::Serial, |b, k| {
            let v = b.load(vt, 0, at(&(&k * &c(w as i64))), 4);
            let cur = get(b, vmax);
            let lt = b.cmp(CmpOp::FOlt, cur, v);
            let next = b.select(lt, v, cur);
            b.stmt(Stmt::Set(vmax, next));
        });
        let vm = get(b, vmax);
        let m0 = b.let_(Inst::Reduce(dlc_kir::ReduceOp::FMax, vm));
        let mx = b.local(F32, m0);
        b.for_(full.clone(), len.clone(), LoopKind::Serial, |b, j| {
            let v = load(b, 0, at(&j));
            let cur = get(b, mx);
            let lt = b.cmp(CmpOp::FOlt, cur, v);
            let next = b.select(lt, v, cur);
            b.stmt(Stmt::Set(mx, next));
        });
        let m = get(b, mx);
        let ms = b.let_(Inst::Splat(m, w));
        let vzero = konst(b, vt, 0.0);
        let vsum = b.local(vt, vzero);
        b.for_(c(0), vectors.clone(), LoopKind::Serial, |b, k| {
            let j = &k * &c(w as i64);
            let v = b.load(vt, 0, at(&j), 4);
            let d = b.bin(BinOp::FSub, v, ms);
            let e = crate::fastmath::exp(b, d, w);
            if mode == SoftmaxMode::Softmax {
                b.store(1, at(&j), e, 4);
            }
            let s = get(b, vsum);
            let ns = b.bin(BinOp::FAdd, s, e);
            b.stmt(Stmt::Set(vsum, ns));
        });
        let vs = get(b, vsum);
        let total = crate::attention::hsum(b, vs, w);
        let sum = b.local(F32, total);
        b.for_(full.clone(), len.clone(), LoopKind::Serial, |b, j| {
            let v = load(b, 0, at(&j));
            let d = b.bin(BinOp::FSub, v, m);
            // (The vector loop's exp: a row's tail computes as its body does.)
            let e = crate::fastmath::exp(b, d, 1);
            if mode == SoftmaxMode::Softmax {
                b.store(1, at(&j), e, 4);
            }
            let s = get(b, sum);
            let ns = b.bin(BinOp::FAdd, s, e);
            b.stmt(Stmt::Set(sum, ns));
        });
        let s = get(b, sum);
        let (op, k) = if mode == SoftmaxMode::Softmax {
            let one = konst(b, F32, 1.0);
            (BinOp::FMul, b.bin(BinOp::FDiv, one, s))
        } else {
            let ls = call(b, "logf", F32, &[s]);
            (BinOp::FSub, b.bin(BinOp::FAdd, m, ls))
        };
        let src = if mode == SoftmaxMode::Softmax { 1 } else { 0 };
        let ks = b.let_(Inst::Splat(k, w));
        b.for_(c(0), vectors.clone(), LoopKind::Serial, |b, q| {
            let j = &q * &c(w as i64);
            let v = b.load(vt, src, at(&j), 4);
            let y = b.bin(op, v, ks);
            b.store(1, at(&j), y, 4);
        });
        b.for_(full.clone(), len.clone(), LoopKind::Serial, |b, j| {
            let v = b.load(F32, src, at(&j), 4);
            let y = b.bin(op, v, k);
            b.store(1, at(&j), y, 4);
        });
    });
    Some(Ok(b.finish()))
}

/// Softmax along an axis that is not the last, `[outer, len, inner]` with at least one
/// vector of inner positions (YOLOv8's distribution-focal head: 16 bins over thousands
/// of anchors, at run-time image dims too): `w` inner positions at a time, contiguous
/// vector loads at each of the `len` steps, dlc's vector exp and a vector sum (f32: `len`
/// is at most 1024 here), the tail of the inner positions one at a time the same way.
/// `None` where it does not apply.
fn softmax_columns(name: &str, x: &[Expr], w: u32, a: usize, mode: SoftmaxMode) -> Option<Result<Kernel, LowerError>> {
    let len = x[a].as_const()?;
    let prod = |d: &[Expr]| d.iter().fold(Expr::c(1), |p, x| &p * x);
    let (outer, inner) = (prod(&x[..a]), prod(&x[a + 1..]));
    let wide = inner.as_const().is_none_or(|v| v >= w as i64);
    if mode != SoftmaxMode::Softmax || !(1..=1024).contains(&len) || !wide {
        return None;
    }
    let c = Expr::c;
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    // The column softmax of `lanes` inner positions from `j` of outer row `o`.
    let column = |b: &mut KernelBuilder, o: &Expr, j: &Expr, lanes: u32| {
        let vt = Ty { elem: Elem::F32, lanes };
        let at = |l: &Expr| &(&(&(o * &c(len)) + l) * &inner) + j;
        let ninf = konst(b, vt, f64::NEG_INFINITY);
        let mx = b.local(vt, ninf);
        b.for_(c(0), c(len), LoopKind::Serial, |b, l| {
            let v = b.load(vt, 0, at(&l), 4);
            let cur = get(b, mx);
            let lt = b.cmp(CmpOp::FOlt, cur, v);
            let next = b.select(lt, v, cur);
            b.stmt(Stmt::Set(mx, next));
        });
        let m = get(b, mx);
        let zero = konst(b, vt, 0.0);
        let sum = b.local(vt, zero);
        b.for_(c(0), c(len), LoopKind::Serial, |b, l| {
            let v = b.load(vt, 0, at(&l), 4);
            let d = b.bin(BinOp::FSub, v, m);
            let e = crate::fastmath::exp(b, d, lanes);
            b.store(1, at(&l), e, 4);
            let s = get(b, sum);
            let ns = b.bin(BinOp::FAdd, s, e);
            b.stmt(Stmt::Set(sum, ns));
        });
        let one = konst(b, vt, 1.0);
        let s = get(b, sum);
        let k = b.bin(BinOp::FDiv, one, s);
        b.for_(c(0), c(len), LoopKind::Serial, |b, l| {
            let v = b.load(vt, 1, at(&l), 4);
            let y = b.bin(BinOp::FMul, v, k);
            b.store(1, at(&l), y, 4);
        });
    };
    let vectors = inner.floor_div(&c(w as i64));
    let full = &vectors * &c(w as i64);
    b.for_(c(0), outer, LoopKind::Serial, |b, o| {
        b.for_(c(0), vectors.clone(), LoopKind::Serial, |b, k| column(b, &o, &(&k * &c(w as i64)), w));
        b.for_(full.clone(), inner.clone(), LoopKind::Serial, |b, j| column(b, &o, &j, 1));
    });
    Some(Ok(b.finish()))
}

/// Softmax, LogSoftmax or Hardmax along `axis`: per (outer, inner) position the maximum
/// (and its first index), then the sum of `exp(x - max)`, then the normalisation.
pub fn softmax(name: &str, n: &Node, axis: i64, mode: SoftmaxMode) -> Result<Kernel, LowerError> {
    // f32 (its sum in f64), or f64 throughout.
    let wide = n.inputs[0].dtype == DType::F64 && n.outputs[0].dtype == DType::F64;
    if !wide {
        n.require_f32()?;
    }
    let (ty, es) = if wide { (Ty::scalar(Elem::F64), 8) } else { (F32, 4) };
    let (exp, log) = if wide { ("exp", "log") } else { ("expf", "logf") };
    let load = |b: &mut KernelBuilder, param: u32, at: Expr| b.load(ty, param, at, es);
    let x = Node::dims(&n.inputs[0]);
    let a = normalize_axis(axis, x.len()).ok_or_else(|| n.error(format!("axis {axis} out of range")))?;
    let prod = |d: &[Expr]| d.iter().fold(Expr::c(1), |p, x| &p * x);
    let outer = prod(&x[..a]);
    let len = x.get(a).cloned().unwrap_or(Expr::c(1));
    let inner = x.get(a + 1..).map_or(Expr::c(1), prod);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    b.nest(&[outer, inner.clone()], LoopKind::Serial, |b, idx| {
        let base = &(&idx[0] * &(&len * &inner)) + &idx[1];
        let at = |l: &Expr| &base + &(l * &inner);
        let ninf = konst(b, ty, f64::NEG_INFINITY);
        let mx = b.local(ty, ninf);
        let zero_i = b.i64(0);
        let arg = b.local(Ty::scalar(Elem::I64), zero_i);
        b.for_(Expr::c(0), len.clone(), LoopKind::Serial, |b, l| {
            let v = load(b, 0, at(&l));
            let m = get(b, mx);
            let gt = b.cmp(CmpOp::FOgt, v, m);
            let nm = b.select(gt, v, m);
            b.stmt(Stmt::Set(mx, nm));
            let li = b.index(l);
            let cur = get(b, arg);
            let na = b.select(gt, li, cur);
            b.stmt(Stmt::Set(arg, na));
        });
        if mode == SoftmaxMode::Hardmax {
            let best = get(b, arg);
            b.for_(Expr::c(0), len.clone(), LoopKind::Serial, |b, l| {
                let li = b.index(l.clone());
                let hit = b.cmp(CmpOp::Eq, li, best);
                let (one, zero) = (konst(b, ty, 1.0), konst(b, ty, 0.0));
                let y = b.select(hit, one, zero);
                b.store(1, at(&l), y, es);
            });
            return;
        }
        // The sum in f64: rows of tens of thousands of classes would lose 1e-4 of it in
        // f32 (a vocabulary softmax), more than the result's own rounding.
        let f64t = Ty::scalar(Elem::F64);
        let zero = konst(b, f64t, 0.0);
        let sum = b.local(f64t, zero);
        b.for_(Expr::c(0), len.clone(), LoopKind::Serial, |b, l| {
            let v = load(b, 0, at(&l));
            let m = get(b, mx);
            let d = b.bin(BinOp::FSub, v, m);
            let e = call(b, exp, ty, &[d]);
            if mode == SoftmaxMode::Softmax {
                b.store(1, at(&l), e, es);
            }
            let s = get(b, sum);
            let e64 = if wide { e } else { b.let_(Inst::Cast(CastOp::FpExt, e, f64t)) };
            let ns = b.bin(BinOp::FAdd, s, e64);
            b.stmt(Stmt::Set(sum, ns));
        });
        let s64 = get(b, sum);
        let s32 = if wide { s64 } else { b.let_(Inst::Cast(CastOp::FpTrunc, s64, F32)) };
        let sum = b.local(ty, s32);
        if mode == SoftmaxMode::Softmax {
            b.for_(Expr::c(0), len.clone(), LoopKind::Serial, |b, l| {
                let v = b.load(ty, 1, at(&l), es);
                let s = get(b, sum);
                let y = b.bin(BinOp::FDiv, v, s);
                b.store(1, at(&l), y, es);
            });
        } else {
            let m = get(b, mx);
            let s = get(b, sum);
            let ls = call(b, log, ty, &[s]);
            let shift = b.bin(BinOp::FAdd, m, ls);
            b.for_(Expr::c(0), len.clone(), LoopKind::Serial, |b, l| {
                let v = load(b, 0, at(&l));
                let y = b.bin(BinOp::FSub, v, shift);
                b.store(1, at(&l), y, es);
            });
        }
    });
    Ok(b.finish())
}

/// Layer/RMS normalisation: per outer index, the mean and variance (or mean square) of
/// the normalised elements accumulated in f64, then each element scaled (and shifted).
/// With `skip`, `x + skip` is written to the result first and normalised from there;
/// with `stats`, the mean and inverse standard deviation are results too.
pub fn layernorm(name: &str, n: &Node, op: &LayerNormalization) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let stats = n.outputs.len() == 3;
    let params_in = if op.skip { n.inputs.len() - 1 } else { n.inputs.len() };
    let skip = op.skip.then_some(n.inputs.len() as u32 - 1);
    let x = Node::dims(&n.inputs[0]);
    let a = normalize_axis(op.axis, x.len()).ok_or_else(|| n.error(format!("axis {} out of range", op.axis)))?;
    let outer = x[..a].iter().fold(Expr::c(1), |p, d| &p * d);
    let norm_dims = &x[a..];
    // The normalised element count: a constant, or an expression of run-time dims (an
    // instance norm over a run-time length).
    let inner = norm_dims.iter().fold(Expr::c(1), |p, d| &p * d);
    let has_bias = params_in == 3;
    let contiguous = contiguous_strides(norm_dims);
    let ss = broadcast_strides(&Node::dims(&n.inputs[1]), norm_dims);
    let bs = if has_bias { broadcast_strides(&Node::dims(&n.inputs[2]), norm_dims) } else { contiguous.clone() };
    let (dims, st) = coalesce(norm_dims, &[contiguous, ss, bs]);
    let mut params = vec![Access::Read; n.inputs.len()];
    params.extend(std::iter::repeat_n(Access::Write, n.outputs.len()));
    let py = n.inputs.len() as u32;
    let src = if op.skip { py } else { 0 };
    let (epsilon, rms) = (op.epsilon, op.rms);
    let mut b = KernelBuilder::new(name, &params);
    b.for_(Expr::c(0), outer, LoopKind::Serial, |b, o| {
        let base = &o * &inner;
        let z = konst(b, F64, 0.0);
        let sum = b.local(F64, z);
        let sq = b.local(F64, z);
        b.for_(Expr::c(0), inner.clone(), LoopKind::Serial, |b, i| {
            let xi = &base + &i;
            let mut xv = load(b, 0, xi.clone());
            if let Some(pr) = skip {
                let r = load(b, pr, xi.clone());
                xv = b.bin(BinOp::FAdd, xv, r);
                b.store(py, xi, xv, 4);
            }
            let v = b.let_(Inst::Cast(CastOp::FpExt, xv, F64));
            let s = get(b, sum);
            let ns = b.bin(BinOp::FAdd, s, v);
            b.stmt(Stmt::Set(sum, ns));
            let q = get(b, sq);
            let vv = b.bin(BinOp::FMul, v, v);
            let nq = b.bin(BinOp::FAdd, q, vv);
            b.stmt(Stmt::Set(sq, nq));
        });
        let cnt = match inner.as_const() {
            Some(count) => konst(b, F64, count as f64),
            None => {
                let c = b.index(inner.clone());
                b.let_(Inst::Cast(CastOp::SiToFp, c, F64))
            }
        };
        let s = get(b, sum);
        let mean = b.bin(BinOp::FDiv, s, cnt);
        let q = get(b, sq);
        let msq = b.bin(BinOp::FDiv, q, cnt);
        let (center, var) = if rms {
            (konst(b, F64, 0.0), msq)
        } else {
            let mm = b.bin(BinOp::FMul, mean, mean);
            (mean, b.bin(BinOp::FSub, msq, mm))
        };
        let eps = konst(b, F64, epsilon as f64);
        let denom = b.bin(BinOp::FAdd, var, eps);
        let sd = call(b, "sqrt", F64, &[denom]);
        let one = konst(b, F64, 1.0);
        let inv64 = b.bin(BinOp::FDiv, one, sd);
        let inv = b.let_(Inst::Cast(CastOp::FpTrunc, inv64, F32));
        let center = b.let_(Inst::Cast(CastOp::FpTrunc, center, F32));
        if stats {
            b.store(py + 1, o.clone(), center, 4);
            b.store(py + 2, o.clone(), inv, 4);
        }
        b.nest(&dims, LoopKind::Serial, |b, idx| {
            let xi = &base + &linear(idx, &st[0], Expr::c(0));
            let xv = load(b, src, xi.clone());
            let c = b.bin(BinOp::FSub, xv, center);
            let v = b.bin(BinOp::FMul, c, inv);
            let s = load(b, 1, linear(idx, &st[1], Expr::c(0)));
            let mut y = b.bin(BinOp::FMul, v, s);
            if has_bias {
                let bias = load(b, 2, linear(idx, &st[2], Expr::c(0)));
                y = b.bin(BinOp::FAdd, y, bias);
            }
            b.store(py, xi, y, 4);
        });
    });
    Ok(b.finish())
}
