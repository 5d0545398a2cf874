//! Text kernels: ops on string tensors, each an element table (`i64[..., 2]`: start and
//! end byte of every element) and its UTF-8 bytes (`u8[n]`), see docs/strings.md.
//!
//! The tables arrive from the runtime (built from the caller's strings), from constants
//! or from ops that only move their entries, so their ranges lie in the bytes; a C
//! caller may pass any table, so every range is clamped to the bytes before it is read
//! (a wrong table gives wrong strings, never a read outside the buffer).
use crate::dtype::store_as;
use crate::{LowerError, Node};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, LoopKind, Stmt, Ty, ValId};

const I64: Ty = Ty { elem: Elem::I64, lanes: 1 };

/// Start and length of element `e` of table `table`, clamped to `bytes` bytes.
fn element(b: &mut KernelBuilder, table: u32, e: Expr, bytes: &Expr) -> (ValId, ValId) {
    let s = b.load(I64, table, e.scale(2), 8);
    let t = b.load(I64, table, &e.scale(2) + &Expr::c(1), 8);
    let (zero, n) = (b.i64(0), b.index(bytes.clone()));
    let clamp = |b: &mut KernelBuilder, v: ValId, lo: ValId| {
        let below = b.cmp(CmpOp::Slt, v, lo);
        let v = b.select(below, lo, v);
        let above = b.cmp(CmpOp::Sgt, v, n);
        b.select(above, n, v)
    };
    let s = clamp(b, s, zero);
    let t = clamp(b, t, s);
    (s, b.bin(BinOp::Sub, t, s))
}

/// The flat index into an operand of element shape `dims` broadcast to `out`, at the
/// coordinates `coords` of the result.
fn broadcast_at(dims: &[Expr], out: &[Expr], coords: &[Expr]) -> Expr {
    let off = out.len() - dims.len();
    let mut at = Expr::c(0);
    for (d, extent) in dims.iter().enumerate() {
        let c = if *extent == Expr::c(1) { Expr::c(0) } else { coords[d + off].clone() };
        at = &(&at * extent) + &c;
    }
    at
}

/// StringEqual: operands a's table and bytes, b's table and bytes; a bool result of the
/// broadcast element shape. Lengths first, then the bytes until one differs.
pub fn string_equal(name: &str, n: &Node) -> Result<Kernel, LowerError> {
    let dims = |i: usize| {
        let mut d = Node::dims(&n.inputs[i]);
        d.pop();
        d
    };
    let (da, db) = (dims(0), dims(2));
    let (na, nb) = (Node::dims(&n.inputs[1])[0].clone(), Node::dims(&n.inputs[3])[0].clone());
    let out = Node::dims(&n.outputs[0]);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Write]);
    fn nest(
        b: &mut KernelBuilder,
        out: &[Expr],
        coords: &mut Vec<Expr>,
        body: &mut dyn FnMut(&mut KernelBuilder, &[Expr]),
    ) {
        if coords.len() == out.len() {
            body(b, coords);
            return;
        }
        let extent = out[coords.len()].clone();
        b.for_(Expr::c(0), extent, LoopKind::Serial, |b, i| {
            coords.push(i);
            nest(b, out, coords, body);
            coords.pop();
        });
    }
    nest(&mut b, &out, &mut Vec::new(), &mut |b, coords| {
        let (ia, ib) = (broadcast_at(&da, &out, coords), broadcast_at(&db, &out, coords));
        let (sa, la) = element(b, 0, ia, &na);
        let (sb, lb) = element(b, 2, ib, &nb);
        let same_len = b.cmp(CmpOp::Eq, la, lb);
        let one = b.i64(1);
        let zero = b.i64(0);
        let first = b.select(same_len, one, zero);
        let flag = b.local(I64, first);
        b.if_(
            same_len,
            |b| {
                b.for_(Expr::c(0), Expr::val(la), LoopKind::Serial, |b, k| {
                    let x = b.load(Ty::scalar(Elem::I8), 1, &Expr::val(sa) + &k, 1);
                    let y = b.load(Ty::scalar(Elem::I8), 3, &Expr::val(sb) + &k, 1);
                    let differ = b.cmp(CmpOp::Ne, x, y);
                    let f = b.let_(Inst::Get(flag));
                    let z = b.i64(0);
                    let next = b.select(differ, z, f);
                    b.stmt(Stmt::Set(flag, next));
                });
            },
            |_| {},
        );
        let f = b.let_(Inst::Get(flag));
        let at = coords.iter().zip(&out).fold(Expr::c(0), |at, (c, e)| &(&at * e) + c);
        store_as(b, 4, at, f, DType::I64, DType::Bool);
    });
    Ok(b.finish())
}

/// StringCase: each byte from itself and its neighbours (an `each` loop: no byte depends
/// on another's result). A byte below 0x80 is looked up; the lead byte of a two-byte
/// character followed by a continuation byte, and a continuation byte after a lead byte,
/// take their part of the mapped character; any other byte is kept.
pub fn string_case(name: &str, n: &Node, op: &dlc_ir::ops::StringCase) -> Result<Kernel, LowerError> {
    let len = Node::dims(&n.inputs[0])[0].clone();
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let tag = format!("dlc.case.{}{}", if op.upper { "upper" } else { "lower" }, if op.ascii { ".ascii" } else { "" });
    let t = b.table(&tag, Elem::I32, || {
        dlc_ir::ops::case_table(op.upper, op.ascii).into_iter().map(|c| dlc_kir::Lit::Int(c as i64)).collect()
    });
    let i32t = Ty::scalar(Elem::I32);
    b.for_(Expr::c(0), len.clone(), LoopKind::Each, |b, i| {
        let byte = |b: &mut KernelBuilder, at: Expr| {
            let raw = b.load(Ty::scalar(Elem::I8), 0, at, 1);
            b.let_(Inst::Cast(dlc_kir::CastOp::Zext, raw, i32t))
        };
        let c = |b: &mut KernelBuilder, v: i64| b.let_(Inst::Const { ty: i32t, lit: dlc_kir::Lit::Int(v) });
        let x = byte(b, i.clone());
        // Neighbours, read in bounds (a missing one reads as 0: neither lead nor continuation).
        let (zero64, last) = (b.i64(0), b.index(&len - &Expr::c(1)));
        let iv = b.index(i.clone());
        let one64 = b.i64(1);
        let pi = b.bin(BinOp::Sub, iv, one64);
        let pi = b.bin(BinOp::SMax, pi, zero64);
        let ni = b.bin(BinOp::Add, iv, one64);
        let ni = b.bin(BinOp::SMin, ni, last);
        let has_prev = b.cmp(CmpOp::Sgt, iv, zero64);
        let has_next = b.cmp(CmpOp::Slt, iv, last);
        let p = byte(b, Expr::val(pi));
        let q = byte(b, Expr::val(ni));
        let z = c(b, 0);
        let p = b.select(has_prev, p, z);
        let q = b.select(has_next, q, z);
        let is = |b: &mut KernelBuilder, v: ValId, mask: i64, want: i64| {
            let (m, w) = (c(b, mask), c(b, want));
            let a = b.bin(BinOp::And, v, m);
            b.cmp(CmpOp::Eq, a, w)
        };
        let code = |b: &mut KernelBuilder, l: ValId, t2: ValId| {
            let (m1, m2, six) = (c(b, 0x1F), c(b, 0x3F), c(b, 6));
            let hi = b.bin(BinOp::And, l, m1);
            let hi = b.bin(BinOp::Shl, hi, six);
            let lo = b.bin(BinOp::And, t2, m2);
            b.bin(BinOp::Or, hi, lo)
        };
        // The three cases, each a table index and how the result byte comes from it.
        let x_lead = is(b, x, 0xE0, 0xC0);
        let q_cont = is(b, q, 0xC0, 0x80);
        let lead = b.bin(BinOp::And, x_lead, q_cont);
        let x_cont = is(b, x, 0xC0, 0x80);
        let p_lead = is(b, p, 0xE0, 0xC0);
        let cont = b.bin(BinOp::And, x_cont, p_lead);
        let lead_code = code(b, x, q);
        let cont_code = code(b, p, x);
        let c80_ = c(b, 0x80);
        let ascii = b.cmp(CmpOp::Ult, x, c80_);
        let idx = b.select(cont, cont_code, x);
        let idx = b.select(lead, lead_code, idx);
        let idx = b.select(ascii, x, idx);
        let m = b.let_(Inst::Lookup { table: t, index: idx });
        let (six, c0, c80, m3f) = (c(b, 6), c(b, 0xC0), c(b, 0x80), c(b, 0x3F));
        let hi = b.bin(BinOp::LShr, m, six);
        let lead_byte = b.bin(BinOp::Or, hi, c0);
        let lo = b.bin(BinOp::And, m, m3f);
        let cont_byte = b.bin(BinOp::Or, lo, c80);
        let y = b.select(cont, cont_byte, x);
        let y = b.select(lead, lead_byte, y);
        let y = b.select(ascii, m, y);
        let y = b.let_(Inst::Cast(dlc_kir::CastOp::Trunc, y, Ty::scalar(Elem::I8)));
        b.store(1, i, y, 1);
    });
    Ok(b.finish())
}

/// StringConcat: one serial pass over the result's elements, appending each pair's bytes
/// at a running position (each copy cut to the room left), then zeros to the end.
pub fn string_concat(name: &str, n: &Node) -> Result<Kernel, LowerError> {
    let dims = |i: usize| {
        let mut d = Node::dims(&n.inputs[i]);
        d.pop();
        d
    };
    let (da, db) = (dims(0), dims(2));
    let (na, nb) = (Node::dims(&n.inputs[1])[0].clone(), Node::dims(&n.inputs[3])[0].clone());
    let mut out = Node::dims(&n.outputs[0]);
    out.pop();
    let cap = Node::dims(&n.outputs[1])[0].clone();
    let access = [Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
    let mut b = KernelBuilder::new(name, &access);
    let zero = b.i64(0);
    let pos = b.local(I64, zero);
    fn nest(
        b: &mut KernelBuilder,
        out: &[Expr],
        coords: &mut Vec<Expr>,
        body: &mut dyn FnMut(&mut KernelBuilder, &[Expr]),
    ) {
        if coords.len() == out.len() {
            body(b, coords);
            return;
        }
        let extent = out[coords.len()].clone();
        b.for_(Expr::c(0), extent, LoopKind::Serial, |b, i| {
            coords.push(i);
            nest(b, out, coords, body);
            coords.pop();
        });
    }
    nest(&mut b, &out, &mut Vec::new(), &mut |b, coords| {
        let (ia, ib) = (broadcast_at(&da, &out, coords), broadcast_at(&db, &out, coords));
        let start = b.let_(Inst::Get(pos));
        for (table, bytes, at, total) in [(0, 1, ia, &na), (2, 3, ib, &nb)] {
            let (s, len) = element(b, table, at, total);
            let p = b.let_(Inst::Get(pos));
            let capv = b.index(cap.clone());
            let room = b.bin(BinOp::Sub, capv, p);
            let k = b.bin(BinOp::SMin, len, room);
            b.stmt(Stmt::Memcpy {
                dst: 5,
                dst_off: Expr::val(p),
                src: bytes,
                src_off: Expr::val(s),
                bytes: Expr::val(k),
            });
            let next = b.bin(BinOp::Add, p, k);
            b.stmt(Stmt::Set(pos, next));
        }
        let end = b.let_(Inst::Get(pos));
        let at = coords.iter().zip(&out).fold(Expr::c(0), |at, (c, e)| &(&at * e) + c);
        b.store(4, at.scale(2), start, 8);
        b.store(4, &at.scale(2) + &Expr::c(1), end, 8);
    });
    let end = b.let_(Inst::Get(pos));
    b.for_(Expr::val(end), cap, LoopKind::Serial, |b, i| {
        let z = b.let_(Inst::Const { ty: Ty::scalar(Elem::I8), lit: dlc_kir::Lit::Int(0) });
        b.store(5, i, z, 1);
    });
    Ok(b.finish())
}
