//! Resize, one axis per node (see `dlc_ir::ops::ResizeTaps`): the taps kernel computes
//! each output position's input indices and weights in float64 (the arithmetic of
//! `dlc_interp::resize::taps`, which defines them), and the resize kernel applies them
//! to rows of the operand. Extents are expressions: both run at run-time dims.
use crate::dtype::{load_as, store_as};
use crate::{hoist, ival, LowerError, Node, TASK_WORK};
use dlc_ir::ops::{NearestMode, ResizeCoord, ResizeMode, ResizeTaps};
use dlc_ir::DType;
use dlc_kir::{
    Access, BinOp, CastOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, UnOp, ValId,
};

const F64: Ty = Ty { elem: Elem::F64, lanes: 1 };
const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };
const I64: Ty = Ty { elem: Elem::I64, lanes: 1 };

fn f(b: &mut KernelBuilder, v: f64) -> ValId {
    b.let_(Inst::Const { ty: F64, lit: Lit::Float(v) })
}
fn add(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    b.bin(BinOp::FAdd, x, y)
}
fn sub(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    b.bin(BinOp::FSub, x, y)
}
fn mul(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    b.bin(BinOp::FMul, x, y)
}
fn div(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    b.bin(BinOp::FDiv, x, y)
}
fn un(b: &mut KernelBuilder, op: UnOp, x: ValId) -> ValId {
    b.let_(Inst::Un(op, x))
}
fn to_f64(b: &mut KernelBuilder, i: ValId) -> ValId {
    b.let_(Inst::Cast(CastOp::SiToFp, i, F64))
}
/// `x` (an integral float) as an i64, clamped first so the conversion is defined.
fn to_i64(b: &mut KernelBuilder, x: ValId) -> ValId {
    let (lo, hi) = (f(b, -((1u64 << 40) as f64)), f(b, (1u64 << 40) as f64));
    let x = b.bin(BinOp::FMax, x, lo);
    let x = b.bin(BinOp::FMin, x, hi);
    b.let_(Inst::Cast(CastOp::FpToSi, x, I64))
}
/// `c ? x + 1 : x`.
fn plus_one_if(b: &mut KernelBuilder, c: ValId, x: ValId) -> ValId {
    let one = f(b, 1.0);
    let up = add(b, x, one);
    b.select(c, up, x)
}
fn feq(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    b.cmp(CmpOp::FOeq, x, y)
}

/// Keys' cubic kernel at distance `x` (ONNX's `compute_coeff`).
fn keys(b: &mut KernelBuilder, a: f64, x: ValId) -> ValId {
    let x = un(b, UnOp::FAbs, x);
    let x2 = mul(b, x, x);
    let x3 = mul(b, x2, x);
    // (a + 2) x^3 - (a + 3) x^2 + 1
    let (c1, c2, one) = (f(b, a + 2.0), f(b, a + 3.0), f(b, 1.0));
    let t1 = mul(b, c1, x3);
    let t2 = mul(b, c2, x2);
    let near = sub(b, t1, t2);
    let near = add(b, near, one);
    // a x^3 - 5a x^2 + 8a x - 4a
    let (a1, a5, a8, a4) = (f(b, a), f(b, 5.0 * a), f(b, 8.0 * a), f(b, 4.0 * a));
    let u1 = mul(b, a1, x3);
    let u2 = mul(b, a5, x2);
    let u3 = mul(b, a8, x);
    let far = sub(b, u1, u2);
    let far = add(b, far, u3);
    let far = sub(b, far, a4);
    let (one, two, zero) = (f(b, 1.0), f(b, 2.0), f(b, 0.0));
    let is_near = b.cmp(CmpOp::FOle, x, one);
    let is_far = b.cmp(CmpOp::FOlt, x, two);
    let outer = b.select(is_far, far, zero);
    b.select(is_near, near, outer)
}

/// The resize_taps kernel: `idx[o, k]`, `w[o, k]` for every output position `o` (see
/// `dlc_interp::resize::taps`, which this computes step for step).
pub fn taps(name: &str, n: &Node, op: &ResizeTaps) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let a = dlc_ir::ops::normalize_axis(op.axis, x.len()).ok_or_else(|| n.error("axis out of range"))?;
    let out = Node::dims(&n.outputs[0]);
    let k = n.outputs[0].shape.0[1].fixed().ok_or_else(|| n.error("the tap count must be known"))? as usize;
    // With run-time parameters (`[scale, roi_start, roi_end]`, f32) as operand 1.
    let params = n.inputs.len() == 2;
    let access: &[Access] = if params {
        &[Access::Read, Access::Read, Access::Write, Access::Write]
    } else {
        &[Access::Read, Access::Write, Access::Write]
    };
    let (p_idx, p_w) = if params { (2, 3) } else { (1, 2) };
    let mut b = KernelBuilder::new(name, access);
    let param = |b: &mut KernelBuilder, j: i64| -> ValId {
        let v = b.load(F32, 1, Expr::c(j), 4);
        b.let_(Inst::Cast(CastOp::FpExt, v, F64))
    };
    let (in_e, out_e) = (x[a].clone(), out[0].clone());
    let in_i = ival(&mut b, &in_e);
    let in_f = to_f64(&mut b, in_i);
    let out_i = ival(&mut b, &out_e);
    let out_f = to_f64(&mut b, out_i);
    let scale = if op.scale != 0.0 {
        f(&mut b, op.scale as f64)
    } else if let Some((num, den)) = op.scale_ratio() {
        let (ni, di) = (ival(&mut b, &num), ival(&mut b, &den));
        let (nf, df) = (to_f64(&mut b, ni), to_f64(&mut b, di));
        let zero = b.i64(0);
        let bad = b.cmp(CmpOp::Sle, di, zero);
        let q = div(&mut b, nf, df);
        let one = f(&mut b, 1.0);
        b.select(bad, one, q)
    } else {
        // sizes: out / in (1 for an empty input, which has nothing to read).
        let zero = b.i64(0);
        let empty = b.cmp(CmpOp::Eq, in_i, zero);
        let q = div(&mut b, out_f, in_f);
        let one = f(&mut b, 1.0);
        b.select(empty, one, q)
    };
    let (scale, roi) = if params {
        let s = param(&mut b, 0);
        let zero = f(&mut b, 0.0);
        let given = b.cmp(CmpOp::FOne, s, zero);
        let scale = b.select(given, s, scale);
        (scale, Some((param(&mut b, 1), param(&mut b, 2))))
    } else {
        (scale, None)
    };
    let width = mul(&mut b, scale, in_f);
    let one = f(&mut b, 1.0);
    let in_m1 = sub(&mut b, in_f, one);
    let last = {
        let one = b.i64(1);
        let l = b.bin(BinOp::Sub, in_i, one);
        let zero = b.i64(0);
        b.bin(BinOp::SMax, l, zero)
    };
    let (kk, k1) = (Expr::c(k as i64), Expr::c(k as i64 + 1));
    b.for_(Expr::c(0), out_e, LoopKind::Serial, |b, o| {
        let oi = b.index(o.clone());
        let of = to_f64(b, oi);
        let half = f(b, 0.5);
        let width_is_1 = {
            let one = f(b, 1.0);
            feq(b, width, one)
        };
        let half_pixel = |b: &mut KernelBuilder| {
            let t = add(b, of, half);
            let t = div(b, t, scale);
            sub(b, t, half)
        };
        let mut outside = None;
        let xo = match op.coord {
            ResizeCoord::AlignCorners => {
                let t = mul(b, of, in_m1);
                let one = f(b, 1.0);
                let wm1 = sub(b, width, one);
                let t = div(b, t, wm1);
                let zero = f(b, 0.0);
                b.select(width_is_1, zero, t)
            }
            ResizeCoord::Asymmetric => div(b, of, scale),
            ResizeCoord::TfCropAndResize => {
                let (r0, r1) = match roi {
                    Some(r) => r,
                    None => (f(b, op.roi_start as f64), f(b, op.roi_end as f64)),
                };
                let span = sub(b, r1, r0);
                let sm = mul(b, span, in_m1);
                let two = f(b, 2.0);
                let centre = div(b, sm, two);
                let t = mul(b, of, span);
                let t = mul(b, t, in_m1);
                let one = f(b, 1.0);
                let wm1 = sub(b, width, one);
                let t = div(b, t, wm1);
                let t = b.select(width_is_1, centre, t);
                let off = mul(b, r0, in_m1);
                let xo = add(b, t, off);
                let zero = f(b, 0.0);
                let below = b.cmp(CmpOp::FOlt, xo, zero);
                let above = b.cmp(CmpOp::FOgt, xo, in_m1);
                outside = Some(b.bin(BinOp::Or, below, above));
                xo
            }
            ResizeCoord::PytorchHalfPixel => {
                let t = half_pixel(b);
                let m = f(b, -0.5);
                b.select(width_is_1, m, t)
            }
            ResizeCoord::HalfPixel => half_pixel(b),
            ResizeCoord::HalfPixelSymmetric => {
                let adjustment = div(b, out_f, width);
                let one = f(b, 1.0);
                let r = sub(b, one, adjustment);
                let two = f(b, 2.0);
                let centre = div(b, in_f, two);
                let offset = mul(b, centre, r);
                let t = half_pixel(b);
                add(b, offset, t)
            }
            ResizeCoord::TfHalfPixelForNn => {
                let t = add(b, of, half);
                div(b, t, scale)
            }
        };
        let (idx, mut cs): (Vec<ValId>, Vec<ValId>) = if op.mode == ResizeMode::Nearest {
            let fl = un(b, UnOp::Floor, xo);
            let r = sub(b, xo, fl);
            let integral = feq(b, xo, fl);
            let half = f(b, 0.5);
            let rounded = match op.nearest {
                NearestMode::RoundPreferFloor => {
                    let up = b.cmp(CmpOp::FOgt, r, half);
                    plus_one_if(b, up, fl)
                }
                NearestMode::RoundPreferCeil => {
                    let up = b.cmp(CmpOp::FOge, r, half);
                    plus_one_if(b, up, fl)
                }
                NearestMode::Floor => fl,
                NearestMode::Ceil => {
                    let one = f(b, 1.0);
                    add(b, fl, one)
                }
                NearestMode::Simple => {
                    let (c, t) = (un(b, UnOp::Ceil, xo), un(b, UnOp::Trunc, xo));
                    let one = f(b, 1.0);
                    let down = b.cmp(CmpOp::FOlt, scale, one);
                    b.select(down, c, t)
                }
            };
            let i = b.select(integral, xo, rounded);
            let one = f(b, 1.0);
            (vec![to_i64(b, i)], vec![one])
        } else {
            let c = un(b, UnOp::Ceil, xo);
            let one = f(b, 1.0);
            let base = sub(b, c, one);
            let r = sub(b, xo, base);
            let base_i = to_i64(b, base);
            let start = 1 - (k as i64) / 2;
            let idx: Vec<ValId> = (0..k as i64)
                .map(|j| {
                    let d = b.i64(start + j);
                    b.bin(BinOp::Add, base_i, d)
                })
                .collect();
            let a_ = op.cubic_a as f64;
            let cs = if op.antialias {
                let s = {
                    let one = f(b, 1.0);
                    b.bin(BinOp::FMin, scale, one)
                };
                let c: Vec<ValId> = (0..k as i64)
                    .map(|j| {
                        let off = f(b, (start + j) as f64);
                        let d = sub(b, off, r);
                        let arg = mul(b, d, s);
                        match op.mode {
                            ResizeMode::Linear => {
                                let ab = un(b, UnOp::FAbs, arg);
                                let one = f(b, 1.0);
                                let t = sub(b, one, ab);
                                let zero = f(b, 0.0);
                                let t = b.bin(BinOp::FMax, t, zero);
                                b.bin(BinOp::FMin, t, one)
                            }
                            _ => keys(b, a_, arg),
                        }
                    })
                    .collect();
                normalised(b, c)
            } else if op.mode == ResizeMode::Linear {
                let one = f(b, 1.0);
                vec![sub(b, one, r), r]
            } else {
                let av = f(b, a_);
                let (a5, a8, a4) = (f(b, 5.0 * a_), f(b, 8.0 * a_), f(b, 4.0 * a_));
                // ((a t - 5a) t + 8a) t - 4a at t = r + 1 and 2 - r.
                let far = |b: &mut KernelBuilder, t: ValId| {
                    let u = mul(b, av, t);
                    let u = sub(b, u, a5);
                    let u = mul(b, u, t);
                    let u = add(b, u, a8);
                    let u = mul(b, u, t);
                    sub(b, u, a4)
                };
                let (a2, a3) = (f(b, a_ + 2.0), f(b, a_ + 3.0));
                // ((a + 2) t - (a + 3)) t t + 1 at t = r and 1 - r.
                let near = |b: &mut KernelBuilder, t: ValId| {
                    let u = mul(b, a2, t);
                    let u = sub(b, u, a3);
                    let u = mul(b, u, t);
                    let u = mul(b, u, t);
                    let one = f(b, 1.0);
                    add(b, u, one)
                };
                let (one, two) = (f(b, 1.0), f(b, 2.0));
                let rp1 = add(b, r, one);
                let omr = sub(b, one, r);
                let tmr = sub(b, two, r);
                vec![far(b, rp1), near(b, r), near(b, omr), far(b, tmr)]
            };
            (idx, cs)
        };
        if op.exclude_outside && op.mode != ResizeMode::Nearest {
            let zero = f(b, 0.0);
            for (c, &i) in cs.iter_mut().zip(&idx) {
                let z = b.i64(0);
                let neg = b.cmp(CmpOp::Slt, i, z);
                let past = b.cmp(CmpOp::Sgt, i, last);
                let out = b.bin(BinOp::Or, neg, past);
                *c = b.select(out, zero, *c);
            }
            cs = normalised_nonzero(b, cs);
        }
        let zero = f(b, 0.0);
        let one = f(b, 1.0);
        let extra = match outside {
            Some(out) => {
                for c in cs.iter_mut() {
                    *c = b.select(out, zero, *c);
                }
                b.select(out, one, zero)
            }
            None => zero,
        };
        for (j, &i) in idx.iter().enumerate() {
            let z = b.i64(0);
            let i = b.bin(BinOp::SMax, i, z);
            let i = b.bin(BinOp::SMin, i, last);
            b.store(p_idx, &(&o * &kk) + &Expr::c(j as i64), i, 8);
        }
        for (j, &c) in cs.iter().chain(std::iter::once(&extra)).enumerate() {
            let c32 = b.let_(Inst::Cast(CastOp::FpTrunc, c, F32));
            b.store(p_w, &(&o * &k1) + &Expr::c(j as i64), c32, 4);
        }
    });
    Ok(b.finish())
}

/// `c / sum(c)`.
fn normalised(b: &mut KernelBuilder, c: Vec<ValId>) -> Vec<ValId> {
    let zero = f(b, 0.0);
    let sum = c.iter().fold(zero, |s, &v| add(b, s, v));
    c.into_iter().map(|v| div(b, v, sum)).collect()
}

/// `c / sum(c)`, or `c` when the sum is 0.
fn normalised_nonzero(b: &mut KernelBuilder, c: Vec<ValId>) -> Vec<ValId> {
    let zero = f(b, 0.0);
    let sum = c.iter().fold(zero, |s, &v| add(b, s, v));
    let is_zero = feq(b, sum, zero);
    let one = f(b, 1.0);
    let d = b.select(is_zero, one, sum);
    c.into_iter().map(|v| div(b, v, d)).collect()
}

/// `body(b, p)` for `p` in `0..n`, as pool tasks of about `TASK_WORK` each when the
/// rows are large enough to split (`row`: the work of one iteration, where known).
fn rows(b: &mut KernelBuilder, n: &Expr, row: Option<u64>, body: impl FnOnce(&mut KernelBuilder, Expr)) {
    let per = match row {
        Some(r) => (TASK_WORK / r.max(1)).max(1),
        // A run-time row (a plane of run-time width): a few per task.
        None => 16,
    };
    if let Some(total) = n.as_const() {
        return crate::par(
            b,
            total.max(0) as u64,
            row.map_or(u64::MAX, |r| r.saturating_mul(total.max(0) as u64)),
            body,
        );
    }
    let c = Expr::c(per as i64);
    let tasks = (n + &Expr::c(per as i64 - 1)).floor_div(&c);
    b.for_(Expr::c(0), tasks, LoopKind::Parallel, |b, t| {
        let lo = &t * &c;
        let hi = (&lo + &c).min_with(n);
        b.for_(lo, hi, LoopKind::Serial, body)
    })
}

/// The resize kernel: operands `x`, `idx`, `w`, result `y` (see `dlc_ir::ops::Resize`).
pub fn resize(name: &str, n: &Node, op: &dlc_ir::ops::Resize) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let a = dlc_ir::ops::normalize_axis(op.axis, x.len()).ok_or_else(|| n.error("axis out of range"))?;
    let k = n.inputs[1].shape.0[1].fixed().ok_or_else(|| n.error("the tap count must be known"))? as i64;
    let out = Node::dims(&n.outputs[0])[a].clone();
    let prod = |d: &[Expr]| d.iter().fold(Expr::c(1), |acc, e| &acc * e);
    let (pre, inl, post) = (prod(&x[..a]), x[a].clone(), prod(&x[a + 1..]));
    let dt = n.inputs[0].dtype;
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Read, Access::Write]);
    if [&pre, &inl, &post, &out].iter().any(|e| e.as_const() == Some(0)) {
        return Ok(b.finish());
    }
    let interpolates = k > 1;
    if interpolates && !dt.is_float() {
        return Err(n.error(format!("interpolating {dt} is not supported yet (nearest is)")));
    }
    let es = dt.size() as i64;
    let row = match (out.as_const(), post.as_const()) {
        (Some(o), Some(p)) => Some((o * p * k) as u64),
        _ => None,
    };
    let (kk, k1) = (Expr::c(k), Expr::c(k + 1));
    let e = op.extrapolation as f64;
    rows(&mut b, &pre, row, |b, p| {
        // (A parallel task sees only its own values: hoisted here.)
        let (inl_h, post_h, out_h) = (hoist(b, &inl), hoist(b, &post), hoist(b, &out));
        let in_zero = {
            let z = b.i64(0);
            let v = ival(b, &inl_h);
            b.cmp(CmpOp::Eq, v, z)
        };
        b.for_(Expr::c(0), out_h.clone(), LoopKind::Serial, |b, o| {
            let dst = &(&(&p * &out_h) + &o) * &post_h;
            let idx: Vec<ValId> = (0..k).map(|j| b.load(I64, 1, &(&o * &kk) + &Expr::c(j), 8)).collect();
            let extra = b.load(F32, 2, &(&o * &k1) + &kk, 4);
            let zero = b.let_(Inst::Const { ty: F32, lit: Lit::Float(0.0) });
            let plain = b.cmp(CmpOp::FOeq, extra, zero);
            let yes = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(1) });
            let no = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
            let ok = b.select(in_zero, no, yes);
            let copy = b.bin(BinOp::And, plain, ok);
            let src = |j: usize| &(&(&p * &inl_h) + &Expr::val(idx[j])) * &post_h;
            if !interpolates {
                // Nearest: a copy of the row, or the extrapolation value.
                let s0 = src(0);
                b.if_(
                    copy,
                    |b| {
                        b.stmt(Stmt::Memcpy {
                            dst: 3,
                            dst_off: &dst * &Expr::c(es),
                            src: 0,
                            src_off: &s0 * &Expr::c(es),
                            bytes: &post_h * &Expr::c(es),
                        })
                    },
                    |b| {
                        b.for_(Expr::c(0), post_h.clone(), LoopKind::Serial, |b, q| {
                            let v = b.let_(Inst::Const { ty: F32, lit: Lit::Float(e) });
                            let w = b.load(F32, 2, &(&o * &k1) + &kk, 4);
                            let v = b.bin(BinOp::FMul, v, w);
                            store_as(b, 3, &dst + &q, v, DType::F32, dt);
                        });
                    },
                );
                return;
            }
            let ws: Vec<ValId> = (0..k).map(|j| b.load(F32, 2, &(&o * &k1) + &Expr::c(j), 4)).collect();
            let bases: Vec<Expr> = (0..k as usize).map(src).collect();
            let ev = b.let_(Inst::Const { ty: F32, lit: Lit::Float(e) });
            let init = b.bin(BinOp::FMul, extra, ev);
            b.if_(
                ok,
                |b| {
                    b.for_(Expr::c(0), post_h.clone(), LoopKind::Serial, |b, q| {
                        let mut acc = init;
                        for (j, base) in bases.iter().enumerate() {
                            let v = load_as(b, 0, base + &q, dt, DType::F32);
                            acc = b.let_(Inst::Fma(ws[j], v, acc));
                        }
                        store_as(b, 3, &dst + &q, acc, DType::F32, dt);
                    });
                },
                |b| {
                    b.for_(Expr::c(0), post_h.clone(), LoopKind::Serial, |b, q| {
                        store_as(b, 3, &dst + &q, init, DType::F32, dt);
                    });
                },
            );
        });
    });
    Ok(b.finish())
}
