//! GridSample (2-D, f32) following the ONNX reference: each output denormalises its
//! grid coordinates, rounds them (nearest mode, half to even), folds out-of-range ones
//! by the padding mode, then interpolates (nearest, bilinear, or bicubic with Keys'
//! a = -0.75) from pixels fetched with the padding rule. Indices are clamped before
//! every load. One `each` nest over (batch, channel, row, column).
use crate::dtype::convert;
use crate::{LowerError, Node};
use dlc_ir::ops::{GridSample, SampleMode, SamplePadding};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

struct S<'a> {
    op: &'a GridSample,
    /// `[W, H]`: the extent of coordinate 0 (x) and 1 (y).
    extent: [u64; 2],
    /// Valid coordinate range per dim.
    bounds: [(f64, f64); 2],
}

fn f(b: &mut KernelBuilder, v: f64) -> ValId {
    b.let_(Inst::Const { ty: F32, lit: Lit::Float(v) })
}

fn bin(b: &mut KernelBuilder, op: BinOp, x: ValId, y: ValId) -> ValId {
    b.bin(op, x, y)
}

fn lt(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    b.cmp(CmpOp::FOlt, x, y)
}

fn call(b: &mut KernelBuilder, func: &str, x: ValId) -> ValId {
    b.let_(Inst::Call { func: func.into(), args: vec![x], ty: F32 })
}

fn to_int(b: &mut KernelBuilder, v: ValId) -> ValId {
    convert(b, v, DType::F32, DType::I64)
}

/// `v` reflected into `[lo, hi]` (the ONNX reference's fold).
fn reflect(b: &mut KernelBuilder, v: ValId, lo: f64, hi: f64) -> ValId {
    let rng = hi - lo;
    if rng <= 0.0 {
        return f(b, lo);
    }
    let fold = |b: &mut KernelBuilder, dx: ValId, from_lo: bool| {
        let r_ = f(b, rng);
        let d = bin(b, BinOp::FDiv, dx, r_);
        let q = call(b, "truncf", d);
        let qr = bin(b, BinOp::FMul, q, r_);
        let r = bin(b, BinOp::FSub, dx, qr);
        let qi = to_int(b, q);
        let one = b.i64(1);
        let odd = bin(b, BinOp::And, qi, one);
        let zero = b.i64(0);
        let even = b.cmp(CmpOp::Eq, odd, zero);
        let (lo_, hi_) = (f(b, lo), f(b, hi));
        let a = bin(b, BinOp::FAdd, lo_, r);
        let c = bin(b, BinOp::FSub, hi_, r);
        if from_lo {
            b.select(even, a, c)
        } else {
            b.select(even, c, a)
        }
    };
    let lo_ = f(b, lo);
    let dl = bin(b, BinOp::FSub, lo_, v);
    let below = fold(b, dl, true);
    let hi_ = f(b, hi);
    let dh = bin(b, BinOp::FSub, v, hi_);
    let above = fold(b, dh, false);
    let is_below = lt(b, v, lo_);
    let v2 = b.select(is_below, below, v);
    let is_above = lt(b, hi_, v);
    b.select(is_above, above, v2)
}

impl S<'_> {
    /// The pixel at integer coordinates `(yi, xi)` of the plane at `base`, with the
    /// padding rule (0 outside for Zeros).
    fn pixel(&self, b: &mut KernelBuilder, base: &Expr, yi: ValId, xi: ValId) -> ValId {
        let mut idx = [xi, yi];
        let mut inside = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(1) });
        for ((slot, &d), &(lo, hi)) in idx.iter_mut().zip(&self.extent).zip(&self.bounds) {
            let i = match self.op.padding {
                SamplePadding::Zeros => {
                    let dv = b.i64(d as i64);
                    let ok = b.cmp(CmpOp::Ult, *slot, dv);
                    inside = bin(b, BinOp::And, inside, ok);
                    *slot
                }
                SamplePadding::Border => *slot,
                SamplePadding::Reflection => {
                    let fv = convert(b, *slot, DType::I64, DType::F32);
                    let r = reflect(b, fv, lo, hi);
                    to_int(b, r)
                }
            };
            let zero = b.i64(0);
            let neg = b.cmp(CmpOp::Slt, i, zero);
            let i = b.select(neg, zero, i);
            let dv = b.i64(d as i64);
            let past = b.cmp(CmpOp::Sge, i, dv);
            let last = b.i64(d as i64 - 1);
            *slot = b.select(past, last, i);
        }
        let at = base + &(&(&Expr::val(idx[1]) * &Expr::c(self.extent[0] as i64)) + &Expr::val(idx[0]));
        let v = b.load(F32, 0, at, 4);
        let zero = f(b, 0.0);
        b.select(inside, v, zero)
    }
}

/// Keys' cubic weights of the four taps around fraction `t`.
fn cubic(b: &mut KernelBuilder, t: ValId) -> [ValId; 4] {
    let a = -0.75;
    let poly = |b: &mut KernelBuilder, x: ValId, far: bool| {
        if far {
            // ((a(x) - 5a) x + 8a) x - 4a for 1 <= x < 2
            let av = f(b, a);
            let ax = bin(b, BinOp::FMul, av, x);
            let a5 = f(b, 5.0 * a);
            let t1 = bin(b, BinOp::FSub, ax, a5);
            let t1x = bin(b, BinOp::FMul, t1, x);
            let a8 = f(b, 8.0 * a);
            let t2 = bin(b, BinOp::FAdd, t1x, a8);
            let t2x = bin(b, BinOp::FMul, t2, x);
            let a4 = f(b, 4.0 * a);
            bin(b, BinOp::FSub, t2x, a4)
        } else {
            // ((a + 2) x - (a + 3)) x x + 1 for x < 1
            let a2 = f(b, a + 2.0);
            let ax = bin(b, BinOp::FMul, a2, x);
            let a3 = f(b, a + 3.0);
            let t1 = bin(b, BinOp::FSub, ax, a3);
            let t1x = bin(b, BinOp::FMul, t1, x);
            let t1xx = bin(b, BinOp::FMul, t1x, x);
            let one = f(b, 1.0);
            bin(b, BinOp::FAdd, t1xx, one)
        }
    };
    let one = f(b, 1.0);
    let one_minus = bin(b, BinOp::FSub, one, t);
    let tp1 = bin(b, BinOp::FAdd, t, one);
    let w0 = poly(b, tp1, true);
    let w1 = poly(b, t, false);
    let w2 = poly(b, one_minus, false);
    let two = f(b, 2.0);
    let tm2 = bin(b, BinOp::FSub, two, t);
    let w3 = poly(b, tm2, true);
    [w0, w1, w2, w3]
}

/// GridSample of `x` `[N, C, H, W]` at `grid` `[N, OH, OW, 2]`.
pub fn grid_sample(name: &str, n: &Node, op: &GridSample) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let xd = n.fixed_in(0)?;
    let gd = n.fixed_in(1)?;
    if xd.len() != 4 || gd.len() != 4 {
        return Err(n.error("only 2-D sampling is supported"));
    }
    let (batch, ch, h, w) = (xd[0], xd[1], xd[2], xd[3]);
    let (oh, ow) = (gd[1], gd[2]);
    if h == 0 || w == 0 {
        return Err(n.error("empty images cannot be sampled"));
    }
    let extent = [w, h];
    let bound = |d: u64| if op.align_corners { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) };
    let s = S { op, extent, bounds: [bound(w), bound(h)] };
    let c = |v: u64| Expr::c(v as i64);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    b.nest(&[c(batch), c(ch), c(oh), c(ow)], LoopKind::Each, |b, idx| {
        let (bi, ci, oy, ox) = (&idx[0], &idx[1], &idx[2], &idx[3]);
        let gi = &(&(bi * &c(oh * ow * 2)) + &(oy * &c(ow * 2))) + &(ox * &c(2));
        let base = &(bi * &c(ch * h * w)) + &(ci * &c(h * w));
        let mut coord = Vec::new();
        for (k, &dk) in extent.iter().enumerate() {
            let g = b.load(F32, 1, &gi + &c(k as u64), 4);
            let d = dk as f64;
            let one = f(b, 1.0);
            let g1 = bin(b, BinOp::FAdd, g, one);
            let mut v = if op.align_corners {
                let two = f(b, 2.0);
                let h = bin(b, BinOp::FDiv, g1, two);
                let dm1 = f(b, d - 1.0);
                bin(b, BinOp::FMul, h, dm1)
            } else {
                let dv = f(b, d);
                let m = bin(b, BinOp::FMul, g1, dv);
                let one = f(b, 1.0);
                let m1 = bin(b, BinOp::FSub, m, one);
                let two = f(b, 2.0);
                bin(b, BinOp::FDiv, m1, two)
            };
            if op.mode == SampleMode::Nearest {
                v = call(b, "roundevenf", v);
            }
            let (lo, hi) = s.bounds[k];
            let lo_ = f(b, lo);
            let below = lt(b, v, lo_);
            let hi_ = f(b, hi);
            let above = lt(b, hi_, v);
            let outside = bin(b, BinOp::Or, below, above);
            let adjusted = match op.padding {
                SamplePadding::Zeros => v,
                SamplePadding::Border => {
                    let zero = f(b, 0.0);
                    let neg = lt(b, v, zero);
                    let c0 = b.select(neg, zero, v);
                    let last = f(b, d - 1.0);
                    let past = lt(b, last, c0);
                    b.select(past, last, c0)
                }
                SamplePadding::Reflection => reflect(b, v, lo, hi),
            };
            coord.push(b.select(outside, adjusted, v));
        }
        let (vx, vy) = (coord[0], coord[1]);
        let value = match op.mode {
            SampleMode::Nearest => {
                let (yi, xi) = (to_int(b, vy), to_int(b, vx));
                s.pixel(b, &base, yi, xi)
            }
            SampleMode::Linear => {
                let (fx, fy) = (call(b, "floorf", vx), call(b, "floorf", vy));
                let (dx, dy) = (bin(b, BinOp::FSub, vx, fx), bin(b, BinOp::FSub, vy, fy));
                let (x0, y0) = (to_int(b, fx), to_int(b, fy));
                let one = f(b, 1.0);
                let wx = [bin(b, BinOp::FSub, one, dx), dx];
                let wy = [bin(b, BinOp::FSub, one, dy), dy];
                let zero = f(b, 0.0);
                let acc = b.local(F32, zero);
                for (a, wya) in wy.iter().enumerate() {
                    for (bb, wxb) in wx.iter().enumerate() {
                        let yi = b.index(&Expr::val(y0) + &c(a as u64));
                        let xi = b.index(&Expr::val(x0) + &c(bb as u64));
                        let p = s.pixel(b, &base, yi, xi);
                        let wgt = bin(b, BinOp::FMul, *wya, *wxb);
                        let t = bin(b, BinOp::FMul, wgt, p);
                        let cur = b.let_(Inst::Get(acc));
                        let next = bin(b, BinOp::FAdd, cur, t);
                        b.stmt(Stmt::Set(acc, next));
                    }
                }
                b.let_(Inst::Get(acc))
            }
            SampleMode::Cubic => {
                let (fx, fy) = (call(b, "floorf", vx), call(b, "floorf", vy));
                let tx = bin(b, BinOp::FSub, vx, fx);
                let cx = cubic(b, tx);
                let ty = bin(b, BinOp::FSub, vy, fy);
                let cy = cubic(b, ty);
                let (x0, y0) = (to_int(b, fx), to_int(b, fy));
                let zero = f(b, 0.0);
                let acc = b.local(F32, zero);
                for (a, cya) in cy.iter().enumerate() {
                    let mut row = f(b, 0.0);
                    for (bb, cxb) in cx.iter().enumerate() {
                        let yi = b.index(&(&Expr::val(y0) - &Expr::c(1)) + &c(a as u64));
                        let xi = b.index(&(&Expr::val(x0) - &Expr::c(1)) + &c(bb as u64));
                        let p = s.pixel(b, &base, yi, xi);
                        let t = bin(b, BinOp::FMul, *cxb, p);
                        row = bin(b, BinOp::FAdd, row, t);
                    }
                    let cur = b.let_(Inst::Get(acc));
                    let t = bin(b, BinOp::FMul, *cya, row);
                    let next = bin(b, BinOp::FAdd, cur, t);
                    b.stmt(Stmt::Set(acc, next));
                }
                b.let_(Inst::Get(acc))
            }
        };
        let at = &(&(&(bi * &c(ch * oh * ow)) + &(ci * &c(oh * ow))) + &(oy * &c(ow))) + ox;
        b.store(2, at, value, 4);
    });
    Ok(b.finish())
}
