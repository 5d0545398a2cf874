//! NonMaxSuppression's selection ([`dlc_ir::ops::Nms`]) as one serial kernel.
//!
//! For each batch and class, boxes are visited in rank order (score descending, ties
//! by lower index) without sorting: each step scans the scores for the best box ranked
//! after the previous step's (`O(N)` per step, `O(N^2)` per class, no scratch memory).
//! A box above the score threshold is kept unless a kept box of its class overlaps it
//! by more than the IoU threshold (the rule of `dlc_interp::nms_suppresses`, in f32);
//! at most `max_output_boxes_per_class` are kept. Kept triples are written in order into
//! the result rows, their number into `count`.
use crate::{LowerError, Node};
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };
const I64: Ty = Ty { elem: Elem::I64, lanes: 1 };

fn f(b: &mut KernelBuilder, v: f64) -> ValId {
    b.let_(Inst::Const { ty: F32, lit: Lit::Float(v) })
}

/// `(lo, hi)` of a box's extent along one axis: corners at `at` and `at + 2` in either
/// order, or a centre at `at` and a size at `at + 2`.
fn span(b: &mut KernelBuilder, base: &Expr, at: i64, center: bool) -> (ValId, ValId) {
    let a = b.load(F32, 0, base + &Expr::c(at), 4);
    let c = b.load(F32, 0, base + &Expr::c(at + 2), 4);
    if center {
        let two = f(b, 2.0);
        let half = b.bin(BinOp::FDiv, c, two);
        (b.bin(BinOp::FSub, a, half), b.bin(BinOp::FAdd, a, half))
    } else {
        // max_min of ONNX's reference: (a, c) unless a >= c.
        let ge = b.cmp(CmpOp::FOge, a, c);
        (b.select(ge, c, a), b.select(ge, a, c))
    }
}

/// Whether the box at `p` suppresses the box at `q` (element offsets into boxes).
fn suppresses(b: &mut KernelBuilder, p: &Expr, q: &Expr, center: bool, thr: ValId) -> ValId {
    let (xi, yi) = if center { (0, 1) } else { (1, 0) };
    let (x1a, x1b) = span(b, p, xi, center);
    let (x2a, x2b) = span(b, q, xi, center);
    let (y1a, y1b) = span(b, p, yi, center);
    let (y2a, y2b) = span(b, q, yi, center);
    // Python's max/min: the first unless the second is larger (smaller).
    let mx = |b: &mut KernelBuilder, u: ValId, v: ValId| {
        let lt = b.cmp(CmpOp::FOlt, u, v);
        b.select(lt, v, u)
    };
    let mn = |b: &mut KernelBuilder, u: ValId, v: ValId| {
        let gt = b.cmp(CmpOp::FOgt, u, v);
        b.select(gt, v, u)
    };
    let (ixa, ixb) = (mx(b, x1a, x2a), mn(b, x1b, x2b));
    let (iya, iyb) = (mx(b, y1a, y2a), mn(b, y1b, y2b));
    let w = b.bin(BinOp::FSub, ixb, ixa);
    let h = b.bin(BinOp::FSub, iyb, iya);
    let inter = b.bin(BinOp::FMul, w, h);
    let a1w = b.bin(BinOp::FSub, x1b, x1a);
    let a1h = b.bin(BinOp::FSub, y1b, y1a);
    let a1 = b.bin(BinOp::FMul, a1w, a1h);
    let a2w = b.bin(BinOp::FSub, x2b, x2a);
    let a2h = b.bin(BinOp::FSub, y2b, y2a);
    let a2 = b.bin(BinOp::FMul, a2w, a2h);
    let sum = b.bin(BinOp::FAdd, a1, a2);
    let union = b.bin(BinOp::FSub, sum, inter);
    let zero = f(b, 0.0);
    // Every guard of the reference must pass (a NaN fails each, as there).
    let mut ok = b.cmp(CmpOp::FOgt, ixb, ixa);
    for (u, v) in [(iyb, iya), (inter, zero), (a1, zero), (a2, zero), (union, zero)] {
        let c = b.cmp(CmpOp::FOgt, u, v);
        ok = b.select(ok, c, ok);
    }
    let iou = b.bin(BinOp::FDiv, inter, union);
    let over = b.cmp(CmpOp::FOgt, iou, thr);
    b.select(ok, over, ok)
}

/// The kernel: parameters boxes, scores, max count, IoU and score thresholds (read),
/// the selected rows and their count (written).
pub fn nms(name: &str, n: &Node, center: bool) -> Result<Kernel, LowerError> {
    // Extents as expressions: the box count may be a run-time dim.
    let sd = Node::dims(&n.inputs[1]);
    let (nb, nc, nbox) = (sd[0].clone(), sd[1].clone(), sd[2].clone());
    let r = Access::Read;
    let mut b = KernelBuilder::new(name, &[r, r, r, r, r, Access::Write, Access::Write]);
    let max = b.load(I64, 2, Expr::c(0), 8);
    let zero = b.i64(0);
    let max = b.bin(BinOp::SMax, max, zero);
    let iou = b.load(F32, 3, Expr::c(0), 4);
    let sthr = b.load(F32, 4, Expr::c(0), 4);
    let total = b.local(I64, zero);
    b.for_(Expr::c(0), nb.clone(), LoopKind::Serial, |b, bi| {
        b.for_(Expr::c(0), nc.clone(), LoopKind::Serial, |b, ci| {
            let scores = &(&(&bi * &nc.clone()) + &ci) * &nbox.clone();
            let zero = b.i64(0);
            let kept = b.local(I64, zero);
            let start = b.let_(Inst::Get(total));
            // The previous step's box (score, index); -1 before the first.
            let inf = f(b, f64::INFINITY);
            let prev_s = b.local(F32, inf);
            let m1 = b.i64(-1);
            let prev_i = b.local(I64, m1);
            b.for_(Expr::c(0), nbox.clone(), LoopKind::Serial, |b, _step| {
                let (ps, pi) = (b.let_(Inst::Get(prev_s)), b.let_(Inst::Get(prev_i)));
                let ninf = f(b, f64::NEG_INFINITY);
                let best_s = b.local(F32, ninf);
                let m1 = b.i64(-1);
                let best_i = b.local(I64, m1);
                b.for_(Expr::c(0), nbox.clone(), LoopKind::Serial, |b, i| {
                    let s = b.load(F32, 1, &scores + &i, 4);
                    let iv = b.index(i.clone());
                    // Ranked after the previous box, above the threshold, better than
                    // the best so far (a strict test keeps the lower index on ties).
                    let lower = b.cmp(CmpOp::FOlt, s, ps);
                    let same = b.cmp(CmpOp::FOeq, s, ps);
                    let later = b.cmp(CmpOp::Sgt, iv, pi);
                    let tie = b.select(same, later, same);
                    let after = b.select(lower, lower, tie);
                    let above = b.cmp(CmpOp::FOgt, s, sthr);
                    let bs = b.let_(Inst::Get(best_s));
                    let bi_ = b.let_(Inst::Get(best_i));
                    let better = b.cmp(CmpOp::FOgt, s, bs);
                    let none = b.cmp(CmpOp::Slt, bi_, zero);
                    let better = b.select(none, none, better);
                    let take = b.select(after, above, after);
                    let take = b.select(take, better, take);
                    let ns = b.select(take, s, bs);
                    b.stmt(Stmt::Set(best_s, ns));
                    let ni = b.select(take, iv, bi_);
                    b.stmt(Stmt::Set(best_i, ni));
                });
                let (bs, bx) = (b.let_(Inst::Get(best_s)), b.let_(Inst::Get(best_i)));
                let found = b.cmp(CmpOp::Sge, bx, zero);
                let k = b.let_(Inst::Get(kept));
                let room = b.cmp(CmpOp::Slt, k, max);
                let go = b.select(found, room, found);
                b.if_(
                    go,
                    |b| {
                        b.stmt(Stmt::Set(prev_s, bs));
                        b.stmt(Stmt::Set(prev_i, bx));
                        // Suppressed by a kept box of this class?
                        let no = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
                        let hit = b.local(Ty::scalar(Elem::I1), no);
                        let p = &(&(&bi * &nbox.clone()) + &Expr::val(bx)) * &Expr::c(4);
                        b.for_(Expr::c(0), Expr::val(k), LoopKind::Serial, |b, j| {
                            let row = &(&Expr::val(start) + &j) * &Expr::c(3);
                            let other = b.load(I64, 5, &row + &Expr::c(2), 8);
                            let q = &(&(&bi * &nbox.clone()) + &Expr::val(other)) * &Expr::c(4);
                            let s = suppresses(b, &p, &q, center, iou);
                            let h = b.let_(Inst::Get(hit));
                            let h = b.select(h, h, s);
                            b.stmt(Stmt::Set(hit, h));
                        });
                        let h = b.let_(Inst::Get(hit));
                        b.if_(
                            h,
                            |_| {},
                            |b| {
                                let row = &(&Expr::val(start) + &Expr::val(k)) * &Expr::c(3);
                                let (bv, cv) = (b.index(bi.clone()), b.index(ci.clone()));
                                b.store(5, row.clone(), bv, 8);
                                b.store(5, &row + &Expr::c(1), cv, 8);
                                b.store(5, &row + &Expr::c(2), bx, 8);
                                let one = b.i64(1);
                                let k1 = b.bin(BinOp::Add, k, one);
                                b.stmt(Stmt::Set(kept, k1));
                            },
                        );
                    },
                    |_| {},
                );
            });
            let k = b.let_(Inst::Get(kept));
            let t = b.bin(BinOp::Add, start, k);
            b.stmt(Stmt::Set(total, t));
        });
    });
    let t = b.let_(Inst::Get(total));
    b.store(6, Expr::c(0), t, 8);
    Ok(b.finish())
}
