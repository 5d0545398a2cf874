//! TopK: for every row along the axis, an insertion into the sorted result row.
//!
//! Each row keeps its best `c` elements so far (`c <= k`), sorted best first, in the
//! output rows themselves: an element's place is the number of kept elements that rank
//! before it (a better value, or an equal one, which came earlier: ties keep the lower
//! index first); if that place is below `k` the kept elements from it on move down one
//! and the element goes in. `O(n * k)` per row, no scratch memory; `k` may be a run-time
//! dim. Rows are an `each` nest (one per GPU thread on CUDA); on the CPU, pool tasks of
//! rows when there is enough work. Values are compared as f64 or i64 (unsigned as
//! unsigned); NaN ranks above every number.
use crate::dtype::{accumulator, load_as, storage};
use crate::{LowerError, Node};
use dlc_ir::ops::TopK;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

/// The TopK kernel of `n`: parameters x (read), values and indices (written); rows in
/// pool tasks when `pool` (a CPU target).
pub fn topk(name: &str, n: &Node, op: &TopK, pool: bool) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let a = dlc_ir::ops::normalize_axis(op.axis, x.len()).ok_or_else(|| n.error("axis out of range"))?;
    let dt = n.inputs[0].dtype;
    if dt.is_storage_only() || matches!(dt, dlc_ir::DType::F16 | dlc_ir::DType::BF16 | dlc_ir::DType::Bool) {
        return Err(n.error(format!("TopK of {dt} is not supported yet")));
    }
    let k = Node::dims(&n.outputs[0])[a].clone();
    let len = x[a].clone();
    let prod = |v: &[Expr]| v.iter().fold(Expr::c(1), |p, e| &p * e);
    let (outer, inner) = (prod(&x[..a]), prod(&x[a + 1..]));
    let (float, signed) = (dt.is_float(), dt.is_signed_int());
    let acc = accumulator(dt);
    let raw = Ty::scalar(storage(dt));
    let bytes = storage(dt).bytes();
    let before_op = match (op.largest, float, signed) {
        (true, true, _) => CmpOp::FOge,
        (false, true, _) => CmpOp::FOle,
        (true, false, true) => CmpOp::Sge,
        (false, false, true) => CmpOp::Sle,
        (true, false, false) => CmpOp::Uge,
        (false, false, false) => CmpOp::Ule,
    };
    // Whether kept value `w` ranks before the new value `v` (NaN ranks above every
    // number: first when largest, last otherwise).
    let largest = op.largest;
    let ranks_before = move |b: &mut KernelBuilder, w: ValId, v: ValId| -> ValId {
        let before = b.cmp(before_op, w, v);
        if !float {
            return before;
        }
        let nan = if largest { b.cmp(CmpOp::FUno, w, w) } else { b.cmp(CmpOp::FUno, v, v) };
        b.select(nan, nan, before)
    };
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write, Access::Write]);
    // Work per row: about len * k comparisons (len * 8 when k is a run-time dim).
    let rows = &outer * &inner;
    let per_row = len.as_const().unwrap_or(1).max(1) as u64 * k.as_const().unwrap_or(8).max(1) as u64;
    let each_row = |r: Expr| -> (Expr, Expr) {
        if inner.as_const() == Some(1) {
            (r, Expr::c(0))
        } else {
            (r.floor_div(&inner), r.modulo(&inner))
        }
    };
    let row_loop = |b: &mut KernelBuilder, body: &mut dyn FnMut(&mut KernelBuilder, Expr, Expr)| {
        if !pool {
            return b
                .nest(&[outer.clone(), inner.clone()], LoopKind::Each, |b, oi| body(b, oi[0].clone(), oi[1].clone()));
        }
        let work = rows.as_const().map(|r| r.max(0) as u64 * per_row);
        match (rows.as_const(), work) {
            (Some(r), Some(w)) => crate::par(b, r.max(0) as u64, w, |b, r| {
                let (o, i) = each_row(r);
                body(b, o, i)
            }),
            // Run-time rows: tasks when each row is long.
            _ if per_row >= crate::TASK_WORK => b.for_(Expr::c(0), rows.clone(), LoopKind::Parallel, |b, r| {
                let (o, i) = each_row(r);
                body(b, o, i)
            }),
            _ => b.nest(&[outer.clone(), inner.clone()], LoopKind::Each, |b, oi| body(b, oi[0].clone(), oi[1].clone())),
        }
    };
    row_loop(&mut b, &mut |b, o, i| {
        // Element `t` of this row in x, and slot `j` of its result rows.
        let src = |t: &Expr| &(&(&(&o * &len) + t) * &inner) + &i;
        let dst = |j: &Expr| &(&(&(&o * &k) + j) * &inner) + &i;
        let zero = b.i64(0);
        let cnt = b.local(Ty::scalar(Elem::I64), zero);
        let kv = crate::ival(b, &k);
        b.for_(Expr::c(0), len.clone(), LoopKind::Serial, |b, t| {
            let v = load_as(b, 0, src(&t), dt, acc);
            // A full row takes the element only if it beats the row's last (worst) one:
            // one comparison for most elements once the row has k.
            let c0 = b.let_(Inst::Get(cnt));
            let full = b.cmp(CmpOp::Sge, c0, kv);
            let yes = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(1) });
            let go = b.local(Ty::scalar(Elem::I1), yes);
            b.if_(
                full,
                |b| {
                    let no = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
                    b.stmt(Stmt::Set(go, no));
                    let zero = b.i64(0);
                    let some = b.cmp(CmpOp::Sgt, kv, zero);
                    b.if_(
                        some,
                        |b| {
                            let one = b.i64(1);
                            let last = b.bin(BinOp::Sub, kv, one);
                            let w = load_as(b, 1, dst(&Expr::val(last)), dt, acc);
                            let before = ranks_before(b, w, v);
                            let no = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(0) });
                            let beats = b.select(before, no, yes);
                            b.stmt(Stmt::Set(go, beats));
                        },
                        |_| {},
                    );
                },
                |_| {},
            );
            let go = b.let_(Inst::Get(go));
            b.if_(
                go,
                |b| {
                    let zero = b.i64(0);
                    let place = b.local(Ty::scalar(Elem::I64), zero);
                    let c = b.let_(Inst::Get(cnt));
                    b.for_(Expr::c(0), Expr::val(c), LoopKind::Serial, |b, j| {
                        let w = load_as(b, 1, dst(&j), dt, acc);
                        let before = ranks_before(b, w, v);
                        let (one, zero) = (b.i64(1), b.i64(0));
                        let inc = b.select(before, one, zero);
                        let p = b.let_(Inst::Get(place));
                        let p = b.bin(BinOp::Add, p, inc);
                        b.stmt(Stmt::Set(place, p));
                    });
                    let p = b.let_(Inst::Get(place));
                    let fits = b.cmp(CmpOp::Slt, p, kv);
                    b.if_(
                        fits,
                        |b| {
                            // Slots [p, m) move to [p + 1, m + 1), m = min(c, k - 1), last first.
                            let one = b.i64(1);
                            let km1 = b.bin(BinOp::Sub, kv, one);
                            let m = b.bin(BinOp::SMin, c, km1);
                            let moves = b.bin(BinOp::Sub, m, p);
                            b.for_(Expr::c(0), Expr::val(moves), LoopKind::Serial, |b, s| {
                                let j = &(&Expr::val(m) - &s) - &Expr::c(1);
                                let next = &j + &Expr::c(1);
                                let val: ValId = b.load(raw, 1, dst(&j), bytes);
                                b.store(1, dst(&next), val, bytes);
                                let ix = b.load(Ty::scalar(Elem::I64), 2, dst(&j), 8);
                                b.store(2, dst(&next), ix, 8);
                            });
                            let r = b.load(raw, 0, src(&t), bytes);
                            b.store(1, dst(&Expr::val(p)), r, bytes);
                            let ti = b.index(t.clone());
                            b.store(2, dst(&Expr::val(p)), ti, 8);
                            let c1 = b.bin(BinOp::Add, c, one);
                            let c1 = b.bin(BinOp::SMin, c1, kv);
                            b.stmt(Stmt::Set(cnt, c1));
                        },
                        |_| {},
                    );
                },
                |_| {},
            );
        });
    });
    Ok(b.finish())
}
