//! GridSample (f32, any spatial rank) following the ONNX reference: each output denormalises its
//! grid coordinates, rounds them (nearest mode, half to even), folds out-of-range ones
//! by the padding mode, then interpolates (nearest, bilinear, or bicubic with Keys'
//! a = -0.75) from pixels fetched with the padding rule. Indices are clamped before
//! every load. One `each` nest over (batch,
//! channel, output position); linear and cubic modes sum `2^r` / `4^r` taps.
use crate::dtype::convert;
use crate::{LowerError, Node};
use dlc_ir::ops::{GridSample, SampleMode, SamplePadding};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

struct S<'a> {
    op: &'a GridSample,
    /// The spatial extents, x (the last dim) first.
    extent: Vec<u64>,
    /// Valid coordinate range per dim.
    bounds: Vec<(f64, f64)>,
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
    /// The pixel at integer coordinates `idx` (x first) of the plane at `base`, with
    /// the padding rule (0 outside for Zeros).
    fn pixel(&self, b: &mut KernelBuilder, base: &Expr, idx: &[ValId]) -> ValId {
        let mut inside = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(1) });
        let mut at = base.clone();
        let mut stride = 1u64;
        for ((&i, &d), &(lo, hi)) in idx.iter().zip(&self.extent).zip(&self.bounds) {
            let i = match self.op.padding {
                SamplePadding::Zeros => {
                    let dv = b.i64(d as i64);
                    let ok = b.cmp(CmpOp::Ult, i, dv);
                    inside = bin(b, BinOp::And, inside, ok);
                    i
                }
                SamplePadding::Border => i,
                SamplePadding::Reflection => {
                    let fv = convert(b, i, DType::I64, DType::F32);
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
            let i = b.select(past, last, i);
            at = &at + &(&Expr::val(i) * &Expr::c(stride as i64));
            stride *= d;
        }
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

/// GridSample of `x` `[N, C, d1..dr]` at `grid` `[N, o1..or, r]` (coordinates x first,
/// so `grid[..., 0]` indexes `dr`).
pub fn grid_sample(name: &str, n: &Node, op: &GridSample) -> Result<Kernel, LowerError> {
    n.require_f32()?;
    let xd = n.fixed_in(0)?;
    let gd = n.fixed_in(1)?;
    let r = xd.len().saturating_sub(2);
    if r == 0 || gd.len() != r + 2 || gd[r + 1] != r as u64 {
        return Err(n.error("X must be [N, C, d1..dr] and grid [N, o1..or, r]"));
    }
    if xd[2..].contains(&0) {
        return Err(n.error("empty images cannot be sampled"));
    }
    let (batch, ch) = (xd[0], xd[1]);
    // Spatial extents, x (the last dim) first, as the grid orders its coordinates.
    let extent: Vec<u64> = xd[2..].iter().rev().copied().collect();
    let outs = &gd[1..=r];
    let (plane, oplane): (u64, u64) = (extent.iter().product(), outs.iter().product());
    let bound = |d: u64| if op.align_corners { (0.0, d as f64 - 1.0) } else { (-0.5, d as f64 - 0.5) };
    let s = S { op, bounds: extent.iter().map(|&d| bound(d)).collect(), extent: extent.clone() };
    let c = |v: u64| Expr::c(v as i64);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    let mut extents = vec![c(batch), c(ch)];
    extents.extend(outs.iter().map(|&o| c(o)));
    b.nest(&extents, LoopKind::Each, |b, idx| {
        let (bi, ci) = (&idx[0], &idx[1]);
        // The output position's flat index within its batch's grid.
        let mut o = Expr::c(0);
        for (i, &od) in idx[2..].iter().zip(outs) {
            o = &(&o * &c(od)) + i;
        }
        let gi = &(&(bi * &c(oplane)) + &o) * &c(r as u64);
        let base = &(bi * &c(ch * plane)) + &(ci * &c(plane));
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
        // Per dim: the first tap's integer coordinate and each tap's weight.
        let mut taps: Vec<(ValId, Vec<ValId>)> = Vec::new();
        for &v in &coord {
            taps.push(match op.mode {
                SampleMode::Nearest => (to_int(b, v), vec![]),
                SampleMode::Linear => {
                    let fl = call(b, "floorf", v);
                    let t = bin(b, BinOp::FSub, v, fl);
                    let one = f(b, 1.0);
                    (to_int(b, fl), vec![bin(b, BinOp::FSub, one, t), t])
                }
                SampleMode::Cubic => {
                    let fl = call(b, "floorf", v);
                    let t = bin(b, BinOp::FSub, v, fl);
                    let i0 = to_int(b, fl);
                    (b.index(&Expr::val(i0) - &Expr::c(1)), cubic(b, t).to_vec())
                }
            });
        }
        let value = if op.mode == SampleMode::Nearest {
            let at: Vec<ValId> = taps.iter().map(|t| t.0).collect();
            s.pixel(b, &base, &at)
        } else {
            // Every combination of taps, the weights multiplied (x varies fastest).
            let per = taps[0].1.len();
            let zero = f(b, 0.0);
            let acc = b.local(F32, zero);
            for combo in 0..per.pow(r as u32) {
                let (mut at, mut w, mut rest) = (Vec::new(), None, combo);
                for (i0, ws) in &taps {
                    let j = rest % per;
                    rest /= per;
                    at.push(b.index(&Expr::val(*i0) + &c(j as u64)));
                    w = Some(match w {
                        None => ws[j],
                        Some(p) => bin(b, BinOp::FMul, p, ws[j]),
                    });
                }
                let p = s.pixel(b, &base, &at);
                let t = bin(b, BinOp::FMul, w.expect("r >= 1"), p);
                let cur = b.let_(Inst::Get(acc));
                let next = bin(b, BinOp::FAdd, cur, t);
                b.stmt(Stmt::Set(acc, next));
            }
            b.let_(Inst::Get(acc))
        };
        let at = &(&(bi * &c(ch * oplane)) + &(ci * &c(oplane))) + &o;
        b.store(2, at, value, 4);
    });
    Ok(b.finish())
}
