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

/// Serial loops over the coordinates of a result of element shape `out`, the body given
/// them (row-major).
fn each_element(b: &mut KernelBuilder, out: &[Expr], body: &mut dyn FnMut(&mut KernelBuilder, &[Expr])) {
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
    nest(b, out, &mut Vec::new(), body)
}

/// The element shapes and byte counts of the two string operands (tables 0 and 2,
/// bytes 1 and 3) of a binary string op.
fn two_operands(n: &Node) -> ([Vec<Expr>; 2], [Expr; 2]) {
    let elems = |i: usize| {
        let mut d = Node::dims(&n.inputs[i]);
        d.pop();
        d
    };
    let bytes = |i: usize| Node::dims(&n.inputs[i])[0].clone();
    ([elems(0), elems(2)], [bytes(1), bytes(3)])
}

/// StringEqual: operands a's table and bytes, b's table and bytes; a bool result of the
/// broadcast element shape. Lengths first, then the bytes until one differs.
pub fn string_equal(name: &str, n: &Node) -> Result<Kernel, LowerError> {
    let ([da, db], [na, nb]) = two_operands(n);
    let out = Node::dims(&n.outputs[0]);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Write]);
    each_element(&mut b, &out, &mut |b, coords| {
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
    let ([da, db], [na, nb]) = two_operands(n);
    let mut out = Node::dims(&n.outputs[0]);
    out.pop();
    let cap = Node::dims(&n.outputs[1])[0].clone();
    let access = [Access::Read, Access::Read, Access::Read, Access::Read, Access::Write, Access::Write];
    let mut b = KernelBuilder::new(name, &access);
    let zero = b.i64(0);
    let pos = b.local(I64, zero);
    each_element(&mut b, &out, &mut |b, coords| {
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

/// The StringSplit scan of each element (as `dlc_ir::ops::split_ranges` defines it), one
/// element after another: `emit(b, e, count, start, end)` for each piece (`e` the
/// element's flat index, `count` the pieces before it), then `done(b, e, count)`.
fn split_scan(
    b: &mut KernelBuilder,
    n: &Node,
    delimiter: &[u8],
    maxsplit: i64,
    emit: &dyn Fn(&mut KernelBuilder, &Expr, ValId, ValId, ValId),
    done: &dyn Fn(&mut KernelBuilder, &Expr, ValId),
) {
    let mut elems = Node::dims(&n.inputs[0]);
    elems.pop();
    let numel = elems.iter().fold(Expr::c(1), |p, d| &p * d);
    let nbytes = Node::dims(&n.inputs[1])[0].clone();
    let limit = if maxsplit < 0 { i64::MAX } else { maxsplit };
    let byte = |b: &mut KernelBuilder, at: Expr| {
        let raw = b.load(Ty::scalar(Elem::I8), 1, at, 1);
        b.let_(Inst::Cast(dlc_kir::CastOp::Zext, raw, I64))
    };
    b.for_(Expr::c(0), numel, LoopKind::Serial, |b, e| {
        let (s, len) = element(b, 0, e.clone(), &nbytes);
        let end = b.bin(BinOp::Add, s, len);
        let zero = b.i64(0);
        let count = b.local(I64, zero);
        let lim = b.i64(limit);
        let bump = |b: &mut KernelBuilder| {
            let c = b.let_(Inst::Get(count));
            let one = b.i64(1);
            let c1 = b.bin(BinOp::Add, c, one);
            b.stmt(Stmt::Set(count, c1));
        };
        if delimiter.is_empty() {
            let (in_piece, start, stop) = (b.local(I64, zero), b.local(I64, zero), b.local(I64, zero));
            b.for_(Expr::val(s), Expr::val(end), LoopKind::Serial, |b, i| {
                let x = byte(b, i.clone());
                // ASCII whitespace: 9..=13, 28..=31 and the space.
                let ws = [(9, 13), (28, 32)].iter().fold(None, |acc: Option<ValId>, &(lo, hi)| {
                    let (l, h) = (b.i64(lo), b.i64(hi));
                    let ge = b.cmp(CmpOp::Sge, x, l);
                    let le = b.cmp(CmpOp::Sle, x, h);
                    let r = b.bin(BinOp::And, ge, le);
                    Some(match acc {
                        Some(a) => b.bin(BinOp::Or, a, r),
                        None => r,
                    })
                });
                let ws = ws.expect("two ranges");
                let iv = b.index(i.clone());
                let st = b.let_(Inst::Get(stop));
                let z = b.i64(0);
                let running = b.cmp(CmpOp::Eq, st, z);
                b.if_(
                    running,
                    |b| {
                        let ip = b.let_(Inst::Get(in_piece));
                        let z = b.i64(0);
                        let outside = b.cmp(CmpOp::Eq, ip, z);
                        let t = b.cmp(CmpOp::Eq, ws, ws);
                        let not_ws = b.bin(BinOp::Xor, ws, t);
                        let begins = b.bin(BinOp::And, outside, not_ws);
                        b.if_(
                            begins,
                            |b| {
                                let c = b.let_(Inst::Get(count));
                                let last = b.cmp(CmpOp::Eq, c, lim);
                                b.if_(
                                    last,
                                    |b| {
                                        emit(b, &e, c, iv, end);
                                        bump(b);
                                        let one = b.i64(1);
                                        b.stmt(Stmt::Set(stop, one));
                                    },
                                    |b| {
                                        let one = b.i64(1);
                                        b.stmt(Stmt::Set(in_piece, one));
                                        b.stmt(Stmt::Set(start, iv));
                                    },
                                );
                            },
                            |b| {
                                let ip = b.let_(Inst::Get(in_piece));
                                let one = b.i64(1);
                                let inside = b.cmp(CmpOp::Eq, ip, one);
                                let ends = b.bin(BinOp::And, inside, ws);
                                b.if_(
                                    ends,
                                    |b| {
                                        let (c, st) = (b.let_(Inst::Get(count)), b.let_(Inst::Get(start)));
                                        emit(b, &e, c, st, iv);
                                        bump(b);
                                        let z = b.i64(0);
                                        b.stmt(Stmt::Set(in_piece, z));
                                    },
                                    |_| {},
                                );
                            },
                        );
                    },
                    |_| {},
                );
            });
            let (ip, st) = (b.let_(Inst::Get(in_piece)), b.let_(Inst::Get(stop)));
            let one = b.i64(1);
            let z = b.i64(0);
            let inside = b.cmp(CmpOp::Eq, ip, one);
            let running = b.cmp(CmpOp::Eq, st, z);
            let open = b.bin(BinOp::And, inside, running);
            b.if_(
                open,
                |b| {
                    let (c, sv) = (b.let_(Inst::Get(count)), b.let_(Inst::Get(start)));
                    emit(b, &e, c, sv, end);
                    bump(b);
                },
                |_| {},
            );
        } else {
            let d = delimiter.len() as i64;
            let (start, next) = (b.local(I64, s), b.local(I64, s));
            let last_byte = b.index(&nbytes - &Expr::c(1));
            b.for_(Expr::val(s), Expr::val(end), LoopKind::Serial, |b, i| {
                let iv = b.index(i.clone());
                let nx = b.let_(Inst::Get(next));
                let c = b.let_(Inst::Get(count));
                let dv = b.i64(d);
                let past = b.bin(BinOp::Add, iv, dv);
                let mut ok = b.cmp(CmpOp::Sge, iv, nx);
                let under = b.cmp(CmpOp::Slt, c, lim);
                ok = b.bin(BinOp::And, ok, under);
                let fits = b.cmp(CmpOp::Sle, past, end);
                ok = b.bin(BinOp::And, ok, fits);
                for (j, &want) in delimiter.iter().enumerate() {
                    // In bounds whatever `fits` says (the value only matters when it holds).
                    let jv = b.i64(j as i64);
                    let at = b.bin(BinOp::Add, iv, jv);
                    let at = b.bin(BinOp::SMin, at, last_byte);
                    let x = byte(b, Expr::val(at));
                    let w = b.i64(want as i64);
                    let same = b.cmp(CmpOp::Eq, x, w);
                    ok = b.bin(BinOp::And, ok, same);
                }
                b.if_(
                    ok,
                    |b| {
                        let st = b.let_(Inst::Get(start));
                        emit(b, &e, c, st, iv);
                        bump(b);
                        b.stmt(Stmt::Set(start, past));
                        b.stmt(Stmt::Set(next, past));
                    },
                    |_| {},
                );
            });
            let (c, st) = (b.let_(Inst::Get(count)), b.let_(Inst::Get(start)));
            emit(b, &e, c, st, end);
            bump(b);
        }
        let c = b.let_(Inst::Get(count));
        done(b, &e, c);
    });
}

/// StringSplitCount: each element's number of pieces, or (`most`) the largest.
pub fn string_split_count(name: &str, n: &Node, op: &dlc_ir::ops::StringSplitCount) -> Result<Kernel, LowerError> {
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    let zero = b.i64(0);
    let best = b.local(I64, zero);
    let done = |b: &mut KernelBuilder, e: &Expr, c: ValId| {
        if op.most {
            let m = b.let_(Inst::Get(best));
            let m = b.bin(BinOp::SMax, m, c);
            b.stmt(Stmt::Set(best, m));
        } else {
            b.store(2, e.clone(), c, 8)
        }
    };
    split_scan(&mut b, n, op.delimiter.as_bytes(), op.maxsplit, &|_, _, _, _, _| {}, &done);
    if op.most {
        let m = b.let_(Inst::Get(best));
        b.store(2, Expr::c(0), m, 8);
    }
    Ok(b.finish())
}

/// StringSplit: each element's pieces (as ranges into the operand's bytes), then empty
/// strings to the result's `pieces` extent; a piece past it is not written.
pub fn string_split(name: &str, n: &Node, op: &dlc_ir::ops::StringSplit) -> Result<Kernel, LowerError> {
    let k = {
        let d = Node::dims(&n.outputs[0]);
        d[d.len() - 2].clone()
    };
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    let emit = |b: &mut KernelBuilder, e: &Expr, c: ValId, s: ValId, t: ValId| {
        let kv = b.index(k.clone());
        let room = b.cmp(CmpOp::Slt, c, kv);
        let k = k.clone();
        let e = e.clone();
        b.if_(
            room,
            |b| {
                let at = &(&e * &k) + &Expr::val(c);
                b.store(2, at.scale(2), s, 8);
                b.store(2, &at.scale(2) + &Expr::c(1), t, 8);
            },
            |_| {},
        );
    };
    let done = |b: &mut KernelBuilder, e: &Expr, c: ValId| {
        let (k, e) = (k.clone(), e.clone());
        b.for_(Expr::val(c), k.clone(), LoopKind::Serial, |b, j| {
            let z = b.i64(0);
            let at = &(&e * &k) + &j;
            b.store(2, at.scale(2), z, 8);
            b.store(2, &at.scale(2) + &Expr::c(1), z, 8);
        });
    };
    split_scan(&mut b, n, op.delimiter.as_bytes(), op.maxsplit, &emit, &done);
    Ok(b.finish())
}

/// RegexFullMatch: each element's bytes through the pattern's automaton
/// ([`dlc_ir::ops::regex_dfa`], its transitions and accepting states constant arrays of
/// the kernel), one byte a step; the element matches when the last state accepts.
pub fn string_regex_match(name: &str, n: &Node, op: &dlc_ir::ops::StringRegexMatch) -> Result<Kernel, LowerError> {
    let dfa = dlc_ir::ops::regex_dfa(&op.pattern).map_err(|e| n.error(e))?;
    let mut out = Node::dims(&n.inputs[0]);
    out.pop();
    let bytes = Node::dims(&n.inputs[1])[0].clone();
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    let trans: Vec<u8> = dfa.trans.iter().flat_map(|t| t.to_le_bytes()).collect();
    let trans = b.data(&format!("{name}.regex_trans"), Elem::I32, trans);
    let accept: Vec<u8> = dfa.accept.iter().map(|&a| u8::from(a)).collect();
    let accept = b.data(&format!("{name}.regex_accept"), Elem::I8, accept);
    each_element(&mut b, &out, &mut |b, coords| {
        let at = coords.iter().zip(&out).fold(Expr::c(0), |at, (c, e)| &(&at * e) + c);
        let (s, len) = element(b, 0, at.clone(), &bytes);
        let first = b.i64(dfa.start as i64);
        let state = b.local(I64, first);
        b.for_(Expr::c(0), Expr::val(len), LoopKind::Serial, |b, k| {
            let raw = b.load(Ty::scalar(Elem::I8), 1, &Expr::val(s) + &k, 1);
            let c = b.let_(Inst::Cast(dlc_kir::CastOp::Zext, raw, I64));
            let cur = b.let_(Inst::Get(state));
            let next = b.load(Ty::scalar(Elem::I32), trans, &Expr::val(cur).scale(256) + &Expr::val(c), 4);
            let next = b.let_(Inst::Cast(dlc_kir::CastOp::Zext, next, I64));
            b.stmt(Stmt::Set(state, next));
        });
        let last = b.let_(Inst::Get(state));
        let ok = b.load(Ty::scalar(Elem::I8), accept, Expr::val(last), 1);
        let ok = b.let_(Inst::Cast(dlc_kir::CastOp::Zext, ok, I64));
        store_as(b, 2, at, ok, DType::I64, DType::Bool);
    });
    Ok(b.finish())
}
