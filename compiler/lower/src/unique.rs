//! Unique ([`dlc_ir::ops::Unique`]) as one serial kernel.
//!
//! Slices along the axis are compared element by element (row-major over the other
//! dims) by a running three-way state. Each slice is looked up among the distinct ones
//! found so far (their first indices, kept in the `indices` result in output order:
//! sorted ascending by insertion, or in order of first occurrence); a new one is
//! inserted. Then the distinct slices are copied out, and each slice's place and the
//! counts are found by a second lookup. `O(n^2)` slice comparisons, no scratch memory.
//! Floats compare as numbers with NaN above every number and equal to NaN (-0.0 and 0.0
//! are equal here).
use crate::dtype::{accumulator, load_as};
use crate::{LowerError, Node};
use dlc_ir::ops::Unique;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, LoopKind, Stmt, Ty, ValId};

const I64: Ty = Ty { elem: Elem::I64, lanes: 1 };

struct Slices {
    n: i64,
    outer: i64,
    inner: i64,
    dt: dlc_ir::DType,
}

impl Slices {
    /// The three-way comparison (-1, 0, 1) of slices `p` and `q` (i64 values).
    fn cmp(&self, b: &mut KernelBuilder, p: ValId, q: ValId) -> ValId {
        let zero = b.i64(0);
        let state = b.local(I64, zero);
        let (float, signed) = (self.dt.is_float(), self.dt.is_signed_int());
        let acc = accumulator(self.dt);
        let (n, inner) = (self.n, self.inner);
        b.for_(Expr::c(0), Expr::c(self.outer), LoopKind::Serial, |b, o| {
            b.for_(Expr::c(0), Expr::c(inner), LoopKind::Serial, |b, r| {
                let at = |s: ValId| &(&(&(&o * &Expr::c(n)) + &Expr::val(s)) * &Expr::c(inner)) + &r;
                let x = load_as(b, 0, at(p), self.dt, acc);
                let y = load_as(b, 0, at(q), self.dt, acc);
                let (lt, gt) = if float {
                    let (xn, yn) = (b.cmp(CmpOp::FUno, x, x), b.cmp(CmpOp::FUno, y, y));
                    let (l, g) = (b.cmp(CmpOp::FOlt, x, y), b.cmp(CmpOp::FOgt, x, y));
                    let (t, f) = (b.cmp(CmpOp::Eq, zero, zero), b.cmp(CmpOp::Ne, zero, zero));
                    let x_num = b.select(xn, f, t);
                    let y_num = b.select(yn, f, t);
                    let nan_above = b.select(yn, x_num, f);
                    let nan_below = b.select(xn, y_num, f);
                    (b.select(l, l, nan_above), b.select(g, g, nan_below))
                } else if signed {
                    (b.cmp(CmpOp::Slt, x, y), b.cmp(CmpOp::Sgt, x, y))
                } else {
                    (b.cmp(CmpOp::Ult, x, y), b.cmp(CmpOp::Ugt, x, y))
                };
                let (m1, one) = (b.i64(-1), b.i64(1));
                let here = b.select(gt, one, zero);
                let here = b.select(lt, m1, here);
                let st = b.let_(Inst::Get(state));
                let undecided = b.cmp(CmpOp::Eq, st, zero);
                let next = b.select(undecided, here, st);
                b.stmt(Stmt::Set(state, next));
            });
        });
        b.let_(Inst::Get(state))
    }
}

/// The kernel: x (read); the distinct slices, their first indices, the inverse
/// indices, the counts and the count of distinct slices (written).
pub fn unique(name: &str, n: &Node, op: &Unique) -> Result<Kernel, LowerError> {
    let x = n.fixed_in(0)?;
    let a = dlc_ir::ops::normalize_axis(op.axis, x.len()).ok_or_else(|| n.error("axis out of range"))?;
    let dt = n.inputs[0].dtype;
    if dt.is_storage_only() || dt == dlc_ir::DType::Bool {
        return Err(n.error(format!("Unique of {dt} is not supported yet")));
    }
    let s = Slices {
        n: x[a] as i64,
        outer: x[..a].iter().product::<u64>() as i64,
        inner: x[a + 1..].iter().product::<u64>() as i64,
        dt,
    };
    let es = dt.size() as u32;
    let raw = Ty::scalar(Elem::int_of_bytes(dt.size()).ok_or_else(|| n.error("element size"))?);
    let w = Access::Write;
    let mut b = KernelBuilder::new(name, &[Access::Read, w, w, w, w, w]);
    let zero = b.i64(0);
    let count = b.local(I64, zero);
    // Distinct slices, by first index, in output order (indices result, param 2).
    b.for_(Expr::c(0), Expr::c(s.n), LoopKind::Serial, |b, i| {
        let iv = b.index(i.clone());
        let no = b.cmp(CmpOp::Ne, zero, zero);
        let found = b.local(Ty::scalar(Elem::I1), no);
        let place = b.local(I64, zero);
        let c = b.let_(Inst::Get(count));
        b.for_(Expr::c(0), Expr::val(c), LoopKind::Serial, |b, j| {
            let u = b.load(I64, 2, j.clone(), 8);
            let st = s.cmp(b, u, iv);
            let eq = b.cmp(CmpOp::Eq, st, zero);
            let f = b.let_(Inst::Get(found));
            let f = b.select(eq, eq, f);
            b.stmt(Stmt::Set(found, f));
            let below = b.cmp(CmpOp::Slt, st, zero);
            let one = b.i64(1);
            let inc = b.select(below, one, zero);
            let p = b.let_(Inst::Get(place));
            let p = b.bin(BinOp::Add, p, inc);
            b.stmt(Stmt::Set(place, p));
        });
        let f = b.let_(Inst::Get(found));
        b.if_(
            f,
            |_| {},
            |b| {
                let at = if op.sorted {
                    let p = b.let_(Inst::Get(place));
                    // Entries [p, c) move down one, last first.
                    let moves = b.bin(BinOp::Sub, c, p);
                    b.for_(Expr::c(0), Expr::val(moves), LoopKind::Serial, |b, t| {
                        let j = &(&Expr::val(c) - &t) - &Expr::c(1);
                        let v = b.load(I64, 2, j.clone(), 8);
                        b.store(2, &j + &Expr::c(1), v, 8);
                    });
                    p
                } else {
                    c
                };
                b.store(2, Expr::val(at), iv, 8);
                let one = b.i64(1);
                let c1 = b.bin(BinOp::Add, c, one);
                b.stmt(Stmt::Set(count, c1));
            },
        );
    });
    let c = b.let_(Inst::Get(count));
    b.store(5, Expr::c(0), c, 8);
    // The distinct slices, zeroed counts.
    b.for_(Expr::c(0), Expr::val(c), LoopKind::Serial, |b, j| {
        let u = b.load(I64, 2, j.clone(), 8);
        b.store(4, j.clone(), zero, 8);
        let (nn, inner) = (s.n, s.inner);
        b.for_(Expr::c(0), Expr::c(s.outer), LoopKind::Serial, |b, o| {
            b.for_(Expr::c(0), Expr::c(inner), LoopKind::Serial, |b, r| {
                let src = &(&(&(&o * &Expr::c(nn)) + &Expr::val(u)) * &Expr::c(inner)) + &r;
                let dst = &(&(&(&o * &Expr::c(nn)) + &j) * &Expr::c(inner)) + &r;
                let v = b.load(raw, 0, src, es);
                b.store(1, dst, v, es);
            });
        });
    });
    // Each slice's place among the distinct ones, and the counts.
    b.for_(Expr::c(0), Expr::c(s.n), LoopKind::Serial, |b, i| {
        let iv = b.index(i.clone());
        let place = b.local(I64, zero);
        b.for_(Expr::c(0), Expr::val(c), LoopKind::Serial, |b, j| {
            let u = b.load(I64, 2, j.clone(), 8);
            let st = s.cmp(b, u, iv);
            let eq = b.cmp(CmpOp::Eq, st, zero);
            let jv = b.index(j.clone());
            let p = b.let_(Inst::Get(place));
            let p = b.select(eq, jv, p);
            b.stmt(Stmt::Set(place, p));
        });
        let p = b.let_(Inst::Get(place));
        b.store(3, i.clone(), p, 8);
        let k = b.load(I64, 4, Expr::val(p), 8);
        let one = b.i64(1);
        let k = b.bin(BinOp::Add, k, one);
        b.store(4, Expr::val(p), k, 8);
    });
    Ok(b.finish())
}
