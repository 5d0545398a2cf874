//! NonMaxSuppression's selection ([`dlc_ir::ops::Nms`]): classes in parallel, then the
//! rows gathered in order ([`nms`]).
//!
//! For each batch and class, boxes are visited in rank order (score descending, ties
//! by lower index): the boxes above the score threshold go into a heap with the best at
//! the root (`O(N)`), popped one at a time while they are visited (`O(log N)` each), so
//! a class that reaches `max_output_boxes_per_class` early sorts no further.
//! A box above the score threshold is kept unless a kept box of its class overlaps it
//! by more than the IoU threshold (the rule of `dlc_interp::nms_suppresses`, in f32; the
//! candidate's extents are computed once; the kept boxes' x extents, kept contiguous in
//! the class's scratch, are compared with the candidate's eight at a time, and only the
//! boxes that overlap along x get the rest of the test; blocks of 64 kept boxes whose x
//! span misses the candidate's are skipped whole; the scan stops at the first box that
//! suppresses); at most
//! `max_output_boxes_per_class` are kept. Classes are independent: on CPU targets each
//! is a pool task, in its own region of the result ([`nms`]); kept triples are then
//! written in order into the result rows, their number into `count`.
use crate::{LowerError, Node};
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };
/// Kept boxes tested at once.
const W: u32 = 8;
/// Kept boxes per block whose x span is tested before its groups (a multiple of `W`).
const BLOCK: u32 = 64;
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

/// The candidate box's extents and area, computed once per candidate.
struct Candidate {
    x: (ValId, ValId),
    y: (ValId, ValId),
    area: ValId,
}

/// The extents of the box at `p` (element offset into boxes).
fn candidate(b: &mut KernelBuilder, p: &Expr, center: bool) -> Candidate {
    let (xi, yi) = if center { (0, 1) } else { (1, 0) };
    let x = span(b, p, xi, center);
    let y = span(b, p, yi, center);
    let w = b.bin(BinOp::FSub, x.1, x.0);
    let h = b.bin(BinOp::FSub, y.1, y.0);
    Candidate { x, y, area: b.bin(BinOp::FMul, w, h) }
}

/// Sets `hit` when the kept box at `q_of` (its element offset, loaded when needed), whose
/// x extent is `qx`, suppresses the candidate `c` (the rule of `dlc_interp::nms_suppresses`). The x extents are compared first:
/// most kept boxes do not overlap the candidate along x (torchvision's batched NMS
/// offsets each class's boxes apart), and those need no more loads or arithmetic.
fn suppressed_by(
    b: &mut KernelBuilder,
    c: &Candidate,
    q_of: &dyn Fn(&mut KernelBuilder) -> Expr,
    qx: (ValId, ValId),
    center: bool,
    thr: ValId,
    hit: ValId,
) {
    let yi = if center { 1 } else { 0 };
    // Python's max/min: the first unless the second is larger (smaller).
    let mx = |b: &mut KernelBuilder, u: ValId, v: ValId| {
        let lt = b.cmp(CmpOp::FOlt, u, v);
        b.select(lt, v, u)
    };
    let mn = |b: &mut KernelBuilder, u: ValId, v: ValId| {
        let gt = b.cmp(CmpOp::FOgt, u, v);
        b.select(gt, v, u)
    };
    let (x2a, x2b) = qx;
    let (ixa, ixb) = (mx(b, c.x.0, x2a), mn(b, c.x.1, x2b));
    // Every guard of the reference must pass (a NaN fails each, as there).
    let x_overlap = b.cmp(CmpOp::FOgt, ixb, ixa);
    b.if_(
        x_overlap,
        |b| {
            let q = q_of(b);
            let (y2a, y2b) = span(b, &q, yi, center);
            let (iya, iyb) = (mx(b, c.y.0, y2a), mn(b, c.y.1, y2b));
            let w = b.bin(BinOp::FSub, ixb, ixa);
            let h = b.bin(BinOp::FSub, iyb, iya);
            let inter = b.bin(BinOp::FMul, w, h);
            let a2w = b.bin(BinOp::FSub, x2b, x2a);
            let a2h = b.bin(BinOp::FSub, y2b, y2a);
            let a2 = b.bin(BinOp::FMul, a2w, a2h);
            let sum = b.bin(BinOp::FAdd, c.area, a2);
            let union = b.bin(BinOp::FSub, sum, inter);
            let zero = f(b, 0.0);
            let mut ok = b.cmp(CmpOp::FOgt, iyb, iya);
            for (u, v) in [(inter, zero), (c.area, zero), (a2, zero), (union, zero)] {
                let g = b.cmp(CmpOp::FOgt, u, v);
                ok = b.select(ok, g, ok);
            }
            let iou = b.bin(BinOp::FDiv, inter, union);
            let over = b.cmp(CmpOp::FOgt, iou, thr);
            let s = b.select(ok, over, ok);
            b.stmt(Stmt::Set(hit, s));
        },
        |_| {},
    );
}

/// `key(a) > key(b)` for box indices `a` and `b` of the class whose scores start at
/// `scores`, the key `(-score, index)`: `a` ranks after `b` (a lower score, or an equal
/// one and a higher index).
fn ranks_after(b: &mut KernelBuilder, scores: &Expr, a: ValId, c: ValId) -> ValId {
    let sa = b.load(F32, 1, scores + &Expr::val(a), 4);
    let sc = b.load(F32, 1, scores + &Expr::val(c), 4);
    let lower = b.cmp(CmpOp::FOlt, sa, sc);
    let same = b.cmp(CmpOp::FOeq, sa, sc);
    let later = b.cmp(CmpOp::Sgt, a, c);
    let tie = b.select(same, later, same);
    b.select(lower, lower, tie)
}

/// Sift-down of the heap `list[0..len)` (i64 box indices at element offset `list` of
/// parameter 5) from `root`, by [`ranks_after`]: the best box at the root (a min-heap
/// of keys). At most 48 levels (2^48 boxes).
fn sift(b: &mut KernelBuilder, scores: &Expr, list: &Expr, root: ValId, len: ValId) {
    let one = b.i64(1);
    let at = b.local(I64, root);
    let on = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(1) });
    let active = b.local(Ty::scalar(Elem::I1), on);
    b.for_(Expr::c(0), Expr::c(48), LoopKind::Serial, |b, _| {
        let go = b.let_(Inst::Get(active));
        b.if_(
            go,
            |b| {
                let r = b.let_(Inst::Get(at));
                let two = b.i64(2);
                let c1 = b.bin(BinOp::Mul, r, two);
                let c1 = b.bin(BinOp::Add, c1, one);
                let has = b.cmp(CmpOp::Slt, c1, len);
                b.if_(
                    has,
                    |b| {
                        // The child with the smaller key (the better box).
                        let c2 = b.bin(BinOp::Add, c1, one);
                        let has2 = b.cmp(CmpOp::Slt, c2, len);
                        let last = b.bin(BinOp::Sub, len, one);
                        let c2s = b.bin(BinOp::SMin, c2, last);
                        let v1 = b.load(I64, 5, list + &Expr::val(c1), 8);
                        let v2 = b.load(I64, 5, list + &Expr::val(c2s), 8);
                        let right = ranks_after(b, scores, v1, v2);
                        let right = b.select(has2, right, has2);
                        let c = b.select(right, c2s, c1);
                        let vc = b.select(right, v2, v1);
                        let vr = b.load(I64, 5, list + &Expr::val(r), 8);
                        let swap = ranks_after(b, scores, vr, vc);
                        b.if_(
                            swap,
                            |b| {
                                b.store(5, list + &Expr::val(r), vc, 8);
                                b.store(5, list + &Expr::val(c), vr, 8);
                                b.stmt(Stmt::Set(at, c));
                            },
                            |b| {
                                let off = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
                                b.stmt(Stmt::Set(active, off));
                            },
                        );
                    },
                    |b| {
                        let off = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
                        b.stmt(Stmt::Set(active, off));
                    },
                );
            },
            |_| {},
        );
    });
}

/// The kernel: parameters boxes, scores, max count, IoU and score thresholds (read),
/// the selected rows and their count (written).
///
/// Two phases. First, each batch and class (pool tasks on CPU targets when `pool`:
/// classes are independent) works in its own region of the selected rows' buffer,
/// `3N` i64s from `3jN` for class `j = b C + c` (the buffer holds `3 B C N`): the boxes
/// above the score threshold are listed there (in index order) and made a heap with
/// the best box at the root, then popped and visited in rank order: a box is kept unless a kept box of
/// its class overlaps it by more than the IoU threshold (`O(N * kept)`), until
/// `max_output_boxes_per_class` are kept; the kept boxes go from `3jN + 2N`, their x
/// extents (two f32 per i64 slot) from `3jN + N` while the class is visited, and their
/// number at `3jN + N` after. Then one serial pass writes each class's rows after the ones
/// before it: class `j`'s rows start at row `s <= jN`, so its writes end below
/// `3(jN + i + 1)`, which never reaches the kept entries it has yet to read (`3jN + 2N
/// + i + 1` and on) nor a later class's region.
pub fn nms(name: &str, n: &Node, center: bool, pool: bool) -> Result<Kernel, LowerError> {
    // Extents as expressions: the box count may be a run-time dim.
    let sd = Node::dims(&n.inputs[1]);
    let (nb, nc, nbox) = (sd[0].clone(), sd[1].clone(), sd[2].clone());
    let r = Access::Read;
    let mut b = KernelBuilder::new(name, &[r, r, r, r, r, Access::Write, Access::Write]);
    let zero = b.i64(0);
    let total = b.local(I64, zero);
    let classes = &nb * &nc;
    // With no boxes the buffer is empty: no region to work in, nothing kept.
    let any = crate::in_bounds_expr(&mut b, Expr::c(0), &nbox);
    let kind = if pool { LoopKind::Parallel } else { LoopKind::Serial };
    b.if_(
        any,
        |b| {
            b.for_(Expr::c(0), classes.clone(), kind, |b, j| {
                let bi = j.floor_div(&nc);
                let region = &(&j * &nbox) * &Expr::c(3);
                let list = region.clone();
                let count_at = &region + &nbox;
                let kept_at = &region + &(&nbox * &Expr::c(2));
                // The kept boxes' x extents, contiguous: their lower ends then their upper
                // ends, f32s in the i64 slots [N, 2N) (free until the count is written at
                // N after the visits).
                let los = &count_at * &Expr::c(2);
                let his = &los + &nbox;
                // Block `i`'s x span: two f32s in the i64 slot `N - 1 - i` of the list,
                // below which the heap always is (when block `i` gets its first box, the
                // heap has lost at least `64 i + 1` boxes).
                let block_at = &(&(&list + &nbox) - &Expr::c(1)) * &Expr::c(2);
                let lanes = crate::conv1x1::iota(b, W);
                let scores = &j * &nbox;
                // The operands, read in each task (a task sees no value from outside).
                let zero = b.i64(0);
                let max = b.load(I64, 2, Expr::c(0), 8);
                let max = b.bin(BinOp::SMax, max, zero);
                let iou = b.load(F32, 3, Expr::c(0), 4);
                let sthr = b.load(F32, 4, Expr::c(0), 4);
                let one = b.i64(1);
                let kept = b.local(I64, zero);
                let count = b.local(I64, zero);
                // The boxes above the threshold (a NaN score is not).
                b.for_(Expr::c(0), nbox.clone(), LoopKind::Serial, |b, i| {
                    let s = b.load(F32, 1, &scores + &i, 4);
                    let above = b.cmp(CmpOp::FOgt, s, sthr);
                    b.if_(
                        above,
                        |b| {
                            let c = b.let_(Inst::Get(count));
                            let iv = b.index(i.clone());
                            b.store(5, &list + &Expr::val(c), iv, 8);
                            let c1 = b.bin(BinOp::Add, c, one);
                            b.stmt(Stmt::Set(count, c1));
                        },
                        |_| {},
                    );
                });
                let len = b.let_(Inst::Get(count));
                // A heap with the best box at the root (O(N)); boxes are then popped in
                // rank order only while they are visited (O(log N) each), so a class
                // that reaches its maximum early sorts no further.
                let two = b.i64(2);
                let half = b.bin(BinOp::SDiv, len, two);
                b.for_(Expr::c(0), Expr::val(half), LoopKind::Serial, |b, q| {
                    let h1 = b.bin(BinOp::Sub, half, one);
                    let qv = b.index(q.clone());
                    let root = b.bin(BinOp::Sub, h1, qv);
                    sift(b, &scores, &list, root, len);
                });
                let left = b.local(I64, len);
                // Visit in rank order.
                b.for_(Expr::c(0), Expr::val(len), LoopKind::Serial, |b, _| {
                    let k = b.let_(Inst::Get(kept));
                    let room = b.cmp(CmpOp::Slt, k, max);
                    b.if_(
                        room,
                        |b| {
                            // Pop the best box left.
                            let bx = b.load(I64, 5, list.clone(), 8);
                            let n = b.let_(Inst::Get(left));
                            let n1 = b.bin(BinOp::Sub, n, one);
                            let last = b.load(I64, 5, &list + &Expr::val(n1), 8);
                            b.store(5, list.clone(), last, 8);
                            b.stmt(Stmt::Set(left, n1));
                            let zero = b.i64(0);
                            sift(b, &scores, &list, zero, n1);
                            // Suppressed by a kept box of this class?
                            let no = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
                            let hit = b.local(Ty::scalar(Elem::I1), no);
                            let p = &(&(&bi * &nbox) + &Expr::val(bx)) * &Expr::c(4);
                            let cand = candidate(b, &p, center);
                            // The kept boxes, eight at a time: their x extents against
                            // the candidate's in one vector test; only a group where some
                            // overlap is tested box by box. Once suppressed, the remaining
                            // kept boxes are skipped (most candidates of a detector overlap
                            // one of the first kept). Kept boxes in blocks of 64: a block whose x span (the least
                            // lower end and greatest upper end of its boxes, kept at the
                            // list region's end) misses the candidate's is skipped whole
                            // (torchvision's batched NMS offsets each class's boxes apart,
                            // so only a few blocks are near a candidate).
                            let (clo, chi) = (b.let_(Inst::Splat(cand.x.0, W)), b.let_(Inst::Splat(cand.x.1, W)));
                            let kb = b.i64(BLOCK as i64 - 1);
                            let kb = b.bin(BinOp::Add, k, kb);
                            let shift = b.i64(BLOCK.trailing_zeros() as i64);
                            let blocks = b.bin(BinOp::AShr, kb, shift);
                            b.for_(Expr::c(0), Expr::val(blocks), LoopKind::Serial, |b, blk| {
                                let h = b.let_(Inst::Get(hit));
                                let at = &block_at + &(&blk * &Expr::c(-2));
                                let (lo, hi) = (b.load(F32, 5, at.clone(), 4), b.load(F32, 5, &at + &Expr::c(1), 4));
                                // As the groups' test below (a NaN bound skips nothing).
                                let lt = b.cmp(CmpOp::FOlt, cand.x.0, lo);
                                let ixa = b.select(lt, lo, cand.x.0);
                                let gt = b.cmp(CmpOp::FOgt, cand.x.1, hi);
                                let ixb = b.select(gt, hi, cand.x.1);
                                let near = b.cmp(CmpOp::FOgt, ixb, ixa);
                                let not_hit = b.let_(Inst::Un(dlc_kir::UnOp::Not, h));
                                let near = b.bin(BinOp::And, near, not_hit);
                                b.if_(
                                    near,
                                    |b| {
                                        let per = (BLOCK / W) as i64;
                                        b.for_(Expr::c(0), Expr::c(per), LoopKind::Serial, |b, gi| {
                                            let g = &(&blk * &Expr::c(per)) + &gi;
                                            let h = b.let_(Inst::Get(hit));
                                            let not_hit = b.let_(Inst::Un(dlc_kir::UnOp::Not, h));
                                            let first = b.index(&g * &Expr::c(W as i64));
                                            let inside = b.cmp(CmpOp::Slt, first, k);
                                            let go = b.bin(BinOp::And, inside, not_hit);
                                            b.if_(
                                                go,
                                                |b| {
                                                    let at0 = &g * &Expr::c(W as i64);
                                                    let m = crate::conv1x1::lanes_in(
                                                        b,
                                                        lanes,
                                                        &at0,
                                                        &Expr::c(0),
                                                        &Expr::val(k),
                                                        W,
                                                    );
                                                    let load = |b: &mut KernelBuilder, from: &Expr| {
                                                        let ty = Ty::vec(Elem::F32, W);
                                                        b.let_(Inst::Load {
                                                            ty,
                                                            param: 5,
                                                            index: from + &at0,
                                                            align: 4,
                                                            mask: Some(m),
                                                        })
                                                    };
                                                    let (lo, hi) = (load(b, &los), load(b, &his));
                                                    let lt = b.cmp(CmpOp::FOlt, clo, lo);
                                                    let ixa = b.select(lt, lo, clo);
                                                    let gt = b.cmp(CmpOp::FOgt, chi, hi);
                                                    let ixb = b.select(gt, hi, chi);
                                                    let over = b.cmp(CmpOp::FOgt, ixb, ixa);
                                                    let over = b.bin(BinOp::And, over, m);
                                                    let (on, off) = (
                                                        b.let_(Inst::Const {
                                                            ty: Ty::vec(Elem::I32, W),
                                                            lit: Lit::Int(1),
                                                        }),
                                                        b.let_(Inst::Const {
                                                            ty: Ty::vec(Elem::I32, W),
                                                            lit: Lit::Int(0),
                                                        }),
                                                    );
                                                    let flags = b.select(over, on, off);
                                                    let any = b.let_(Inst::Reduce(dlc_kir::ReduceOp::SMax, flags));
                                                    let zero32 = b.let_(Inst::Const {
                                                        ty: Ty::scalar(Elem::I32),
                                                        lit: Lit::Int(0),
                                                    });
                                                    let some = b.cmp(CmpOp::Sgt, any, zero32);
                                                    b.if_(
                                                        some,
                                                        |b| {
                                                            b.for_(
                                                                Expr::c(0),
                                                                Expr::c(W as i64),
                                                                LoopKind::Serial,
                                                                |b, l| {
                                                                    let jj = &at0 + &l;
                                                                    let jv = b.index(jj.clone());
                                                                    let inside = b.cmp(CmpOp::Slt, jv, k);
                                                                    let h = b.let_(Inst::Get(hit));
                                                                    let not_hit =
                                                                        b.let_(Inst::Un(dlc_kir::UnOp::Not, h));
                                                                    let go = b.bin(BinOp::And, inside, not_hit);
                                                                    b.if_(
                                                                        go,
                                                                        |b| {
                                                                            let qx = (
                                                                                b.load(F32, 5, &los + &jj, 4),
                                                                                b.load(F32, 5, &his + &jj, 4),
                                                                            );
                                                                            // The kept box's row, read only when the x extents overlap.
                                                                            let q_of = |b: &mut KernelBuilder| {
                                                                                let other =
                                                                                    b.load(I64, 5, &kept_at + &jj, 8);
                                                                                &(&(&bi * &nbox) + &Expr::val(other))
                                                                                    * &Expr::c(4)
                                                                            };
                                                                            suppressed_by(
                                                                                b, &cand, &q_of, qx, center, iou, hit,
                                                                            );
                                                                        },
                                                                        |_| {},
                                                                    );
                                                                },
                                                            );
                                                        },
                                                        |_| {},
                                                    );
                                                },
                                                |_| {},
                                            );
                                        });
                                    },
                                    |_| {},
                                );
                            });
                            let h = b.let_(Inst::Get(hit));
                            b.if_(
                                h,
                                |_| {},
                                |b| {
                                    b.store(5, &los + &Expr::val(k), cand.x.0, 4);
                                    b.store(5, &his + &Expr::val(k), cand.x.1, 4);
                                    b.store(5, &kept_at + &Expr::val(k), bx, 8);
                                    // Its block's x span: set by its first box, widened by
                                    // the others (a NaN bound stays: its block is never
                                    // skipped).
                                    let shift = b.i64(BLOCK.trailing_zeros() as i64);
                                    let blk = b.bin(BinOp::AShr, k, shift);
                                    let at = &block_at + &(&Expr::val(blk) * &Expr::c(-2));
                                    let mask = b.i64(BLOCK as i64 - 1);
                                    let pos = b.bin(BinOp::And, k, mask);
                                    let zero = b.i64(0);
                                    let first = b.cmp(CmpOp::Eq, pos, zero);
                                    b.if_(
                                        first,
                                        |b| {
                                            b.store(5, at.clone(), cand.x.0, 4);
                                            b.store(5, &at + &Expr::c(1), cand.x.1, 4);
                                        },
                                        |b| {
                                            let lo = b.load(F32, 5, at.clone(), 4);
                                            let hi = b.load(F32, 5, &at + &Expr::c(1), 4);
                                            let lt = b.cmp(CmpOp::FOlt, cand.x.0, lo);
                                            let lo = b.select(lt, cand.x.0, lo);
                                            let gt = b.cmp(CmpOp::FOgt, cand.x.1, hi);
                                            let hi = b.select(gt, cand.x.1, hi);
                                            b.store(5, at.clone(), lo, 4);
                                            b.store(5, &at + &Expr::c(1), hi, 4);
                                        },
                                    );
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
                b.store(5, count_at, k, 8);
            });
            // The rows, class after class.
            b.for_(Expr::c(0), classes.clone(), LoopKind::Serial, |b, j| {
                let region = &(&j * &nbox) * &Expr::c(3);
                let k = b.load(I64, 5, &region + &nbox, 8);
                let kept_at = &region + &(&nbox * &Expr::c(2));
                let start = b.let_(Inst::Get(total));
                let (bv, cv) = (b.index(j.floor_div(&nc)), b.index(j.modulo(&nc)));
                b.for_(Expr::c(0), Expr::val(k), LoopKind::Serial, |b, i| {
                    let bx = b.load(I64, 5, &kept_at + &i, 8);
                    let row = &(&Expr::val(start) + &i) * &Expr::c(3);
                    b.store(5, row.clone(), bv, 8);
                    b.store(5, &row + &Expr::c(1), cv, 8);
                    b.store(5, &row + &Expr::c(2), bx, 8);
                });
                let t = b.bin(BinOp::Add, start, k);
                b.stmt(Stmt::Set(total, t));
            });
        },
        |_| {},
    );
    let t = b.let_(Inst::Get(total));
    b.store(6, Expr::c(0), t, 8);
    Ok(b.finish())
}
