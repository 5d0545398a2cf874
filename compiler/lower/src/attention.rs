//! Attention over packed heads, f32 (see [`Attention`]): one query row at a time, its
//! scores in a scratch row of `Sk` floats with their running max, the exponentials
//! and their sum, then the weighted sum of value rows.
//!
//! Two forms of the same computation, picked by the target's vector width `w`:
//! - [`vector`] when `w` divides both head sizes (and they are at most `8w` and `16w`):
//!   one pool task per query row ([`crate::par`]), q's row held in `D/w` registers,
//!   each score a `w`-lane FMA dot product summed by halving shuffles, the
//!   exponentials by whole vectors with dlc's fast exp (a scalar tail with `expf`),
//!   the output row accumulated in `Dv/w` registers by FMA over the value rows;
//! - [`scalar`] otherwise: a serial nest over (batch, head, query row) with `expf`;
//! - [`online`] when the batch or a sequence length is a run-time dim: one pass over
//!   the keys with a running max, so that nothing needs a compile-time key length.
//!
//! (The CUDA attention kernel, one block per query row with block reductions, is
//! `crate::cuda`'s.)
use crate::{par, LowerError, Node, Target};
use dlc_ir::ops::Attention;
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

fn lin(terms: &[(&Expr, u64)]) -> Expr {
    terms.iter().fold(Expr::c(0), |a, (i, s)| &a + &(*i * &c(*s)))
}

fn konst(b: &mut KernelBuilder, ty: Ty, v: f64) -> ValId {
    b.let_(Inst::Const { ty, lit: Lit::Float(v) })
}

fn get(b: &mut KernelBuilder, l: u32) -> ValId {
    b.let_(Inst::Get(l))
}

/// `a < b ? b : a` (the running max as the inkwell kernels computed it: a NaN score
/// is kept only when it comes first).
fn fmax(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    let lt = b.cmp(CmpOp::FOlt, x, y);
    b.select(lt, y, x)
}

/// The sum of a vector's lanes by halving (a fixed tree order): the low half plus the
/// high half until one lane is left.
pub fn hsum(b: &mut KernelBuilder, v: ValId, lanes: u32) -> ValId {
    let (mut v, mut n) = (v, lanes);
    while n > 1 {
        let half = n / 2;
        let lo = b.let_(Inst::Shuffle(v, v, (0..half).collect()));
        let hi = b.let_(Inst::Shuffle(v, v, (half..n).collect()));
        v = b.bin(BinOp::FAdd, lo, hi);
        n = half;
    }
    v
}

/// `[batch, heads, query length, key length, head size, value head size]` of an f32
/// Attention node.
pub fn dims(n: &Node, op: &Attention) -> Result<[u64; 6], LowerError> {
    for t in n.inputs[..3].iter().chain(n.outputs) {
        if t.dtype != DType::F32 {
            return Err(n.error(format!("dtype {} is not supported yet (f32 only)", t.dtype)));
        }
    }
    let (q, k, v) = (n.fixed_in(0)?, n.fixed_in(1)?, n.fixed_in(2)?);
    let h = op.heads as u64;
    Ok([q[0], h, q[1], k[1], q[2] / h, v[2] / h])
}

/// The mask operand (3): its dtype and dims.
type Mask = Option<(DType, Vec<u64>)>;

/// The mask's additive term for score `[bi, hi, i, j]`: a float mask broadcast to
/// `full`, or `(1 - mask[bi, j]) * padding_fill` for a key-padding mask of any dtype.
fn mask_term(
    b: &mut KernelBuilder,
    op: &Attention,
    (dt, dims): &(DType, Vec<u64>),
    full: [u64; 4],
    idx: [&Expr; 4],
) -> ValId {
    let [bi, hi, i, j] = idx;
    if op.key_padding {
        let mf = crate::dtype::load_as(b, 3, lin(&[(bi, full[3]), (j, 1)]), *dt, DType::F32);
        let one = konst(b, F32, 1.0);
        let keep = b.bin(BinOp::FSub, one, mf);
        let fill = konst(b, F32, op.padding_fill as f64);
        b.bin(BinOp::FMul, keep, fill)
    } else {
        let st = crate::shape::broadcast_strides_fixed(dims, &full);
        b.load(F32, 3, lin(&[(bi, st[0]), (hi, st[1]), (i, st[2]), (j, st[3])]), 4)
    }
}

/// `row[j] = expf(row[j] - m)` for `j` in `lo..hi`, each added to local `sum`.
fn exp_shift_sum(b: &mut KernelBuilder, row: u32, m: ValId, sum: u32, lo: u64, hi: u64) {
    b.for_(c(lo), c(hi), LoopKind::Serial, |b, j| {
        let x = b.load(F32, row, j.clone(), 4);
        let d = b.bin(BinOp::FSub, x, m);
        let e = b.let_(Inst::Call { func: "expf".into(), args: vec![d], ty: F32 });
        b.store(row, j, e, 4);
        let s = get(b, sum);
        let s2 = b.bin(BinOp::FAdd, s, e);
        b.stmt(Stmt::Set(sum, s2));
    });
}

/// The Attention kernel of node `n` for target `t`.
pub fn attention(name: &str, n: &Node, op: &Attention, t: &Target) -> Result<Kernel, LowerError> {
    if n.inputs.iter().take(4).chain(n.outputs).any(|x| !x.shape.is_fixed()) {
        return online(name, n, op, t);
    }
    let [b, h, sq, sk, d, dv] = dims(n, op)?;
    if sk > 1 << 14 {
        return Err(n.error(format!("key length {sk} is above 16384 (the score row lives on the stack)")));
    }
    let mask = match n.inputs.get(3) {
        Some(m) => Some((m.dtype, n.fixed_in(3)?)),
        None => None,
    };
    let w = t.f32_lanes as u64;
    let shape = AttnDims { b, h, sq, sk, d, dv };
    if w > 1 && d % w == 0 && dv % w == 0 && d / w <= 8 && dv / w <= 16 {
        Ok(vector(name, op, shape, w as u32, &mask))
    } else {
        Ok(scalar(name, op, shape, &mask))
    }
}

#[derive(Clone, Copy)]
struct AttnDims {
    b: u64,
    h: u64,
    sq: u64,
    sk: u64,
    d: u64,
    dv: u64,
}

fn params(mask: &Mask) -> Vec<Access> {
    let mut p = vec![Access::Read; 3 + mask.is_some() as usize];
    p.push(Access::Write);
    p
}

/// The scalar form: a serial nest over (batch, head, query row).
fn scalar(name: &str, op: &Attention, t: AttnDims, mask: &Mask) -> Kernel {
    let AttnDims { b: nb, h, sq, sk, d, dv } = t;
    let mut b = KernelBuilder::new(name, &params(mask));
    let py = 3 + mask.is_some() as u32;
    let row = b.scratch(Elem::F32, sk);
    b.nest(&[c(nb), c(h), c(sq)], LoopKind::Serial, |b, idx| {
        let (bi, hi, i) = (&idx[0], &idx[1], &idx[2]);
        let q_row = lin(&[(bi, sq * h * d), (i, h * d), (hi, d)]);
        let ninf = konst(b, F32, f64::NEG_INFINITY);
        let mx = b.local(F32, ninf);
        b.for_(c(0), c(sk), LoopKind::Serial, |b, j| {
            let k_row = lin(&[(bi, sk * h * d), (&j, h * d), (hi, d)]);
            let zero = konst(b, F32, 0.0);
            let acc = b.local(F32, zero);
            b.for_(c(0), c(d), LoopKind::Serial, |b, e| {
                let qv = b.load(F32, 0, &q_row + &e, 4);
                let kv = b.load(F32, 1, &k_row + &e, 4);
                let a = get(b, acc);
                let p = b.bin(BinOp::FMul, qv, kv);
                let a2 = b.bin(BinOp::FAdd, a, p);
                b.stmt(Stmt::Set(acc, a2));
            });
            let a = get(b, acc);
            let scale = konst(b, F32, op.scale as f64);
            let mut s = b.bin(BinOp::FMul, a, scale);
            if let Some(m) = mask {
                let term = mask_term(b, op, m, [nb, h, sq, sk], [bi, hi, i, &j]);
                s = b.bin(BinOp::FAdd, s, term);
            }
            b.store(row, j, s, 4);
            let cur = get(b, mx);
            let next = fmax(b, cur, s);
            b.stmt(Stmt::Set(mx, next));
        });
        let zero = konst(b, F32, 0.0);
        let sum = b.local(F32, zero);
        let m = get(b, mx);
        exp_shift_sum(b, row, m, sum, 0, sk);
        let one = konst(b, F32, 1.0);
        let s = get(b, sum);
        let inv = b.bin(BinOp::FDiv, one, s);
        let y_row = lin(&[(bi, sq * h * dv), (i, h * dv), (hi, dv)]);
        b.for_(c(0), c(dv), LoopKind::Serial, |b, e| {
            let zero = konst(b, F32, 0.0);
            b.store(py, &y_row + &e, zero, 4);
        });
        b.for_(c(0), c(sk), LoopKind::Serial, |b, j| {
            let r = b.load(F32, row, j.clone(), 4);
            let p = b.bin(BinOp::FMul, r, inv);
            let v_row = lin(&[(bi, sk * h * dv), (&j, h * dv), (hi, dv)]);
            b.for_(c(0), c(dv), LoopKind::Serial, |b, e| {
                let yi = &y_row + &e;
                let vv = b.load(F32, 2, &v_row + &e, 4);
                let y = b.load(F32, py, yi.clone(), 4);
                let pv = b.bin(BinOp::FMul, p, vv);
                let y2 = b.bin(BinOp::FAdd, y, pv);
                b.store(py, yi, y2, 4);
            });
        });
    });
    b.finish()
}

/// The vector form: one pool task per query row, vectors of `w` lanes along the head
/// dims.
fn vector(name: &str, op: &Attention, t: AttnDims, w: u32, mask: &Mask) -> Kernel {
    let AttnDims { b: nb, h, sq, sk, d, dv } = t;
    let wu = w as u64;
    let vt = Ty::vec(Elem::F32, w);
    let mut b = KernelBuilder::new(name, &params(mask));
    let py = 3 + mask.is_some() as u32;
    let row = b.scratch(Elem::F32, sk);
    let flops = 2 * nb * h * sq * sk * (d + dv);
    par(&mut b, nb * h * sq, flops, |b, task| {
        let bi = task.floor_div(&c(h * sq));
        let hi = task.floor_div(&c(sq)).modulo(&c(h));
        let i = task.modulo(&c(sq));
        let q_row = lin(&[(&bi, sq * h * d), (&i, h * d), (&hi, d)]);
        let qs: Vec<ValId> = (0..d / wu).map(|cc| b.load(vt, 0, &q_row + &c(cc * wu), 4)).collect();
        let ninf = konst(b, F32, f64::NEG_INFINITY);
        let mx = b.local(F32, ninf);
        b.for_(c(0), c(sk), LoopKind::Serial, |b, j| {
            let k_row = lin(&[(&bi, sk * h * d), (&j, h * d), (&hi, d)]);
            let mut acc = konst(b, vt, 0.0);
            for (cc, q) in qs.iter().enumerate() {
                let kv = b.load(vt, 1, &k_row + &c(cc as u64 * wu), 4);
                acc = b.let_(Inst::Fma(*q, kv, acc));
            }
            let dot = hsum(b, acc, w);
            let scale = konst(b, F32, op.scale as f64);
            let mut s = b.bin(BinOp::FMul, dot, scale);
            if let Some(m) = mask {
                let term = mask_term(b, op, m, [nb, h, sq, sk], [&bi, &hi, &i, &j]);
                s = b.bin(BinOp::FAdd, s, term);
            }
            b.store(row, j, s, 4);
            let cur = get(b, mx);
            let next = fmax(b, cur, s);
            b.stmt(Stmt::Set(mx, next));
        });
        // Exponentials: whole vectors with the fast exp, a scalar tail with expf.
        let m = get(b, mx);
        let ms = b.let_(Inst::Splat(m, w));
        let vzero = konst(b, vt, 0.0);
        let vsum = b.local(vt, vzero);
        b.for_(c(0), c(sk / wu), LoopKind::Serial, |b, cc| {
            let j = &cc * &c(wu);
            let x = b.load(vt, row, j.clone(), 4);
            let dlt = b.bin(BinOp::FSub, x, ms);
            let e = crate::fastmath::exp(b, dlt, w);
            b.store(row, j, e, 4);
            let a = get(b, vsum);
            let a2 = b.bin(BinOp::FAdd, a, e);
            b.stmt(Stmt::Set(vsum, a2));
        });
        let vs = get(b, vsum);
        let total = hsum(b, vs, w);
        let sum = b.local(F32, total);
        exp_shift_sum(b, row, m, sum, sk / wu * wu, sk);
        let one = konst(b, F32, 1.0);
        let s = get(b, sum);
        let inv = b.bin(BinOp::FDiv, one, s);
        let accs = crate::gemm::zero_accumulators(b, vt, dv / wu);
        b.for_(c(0), c(sk), LoopKind::Serial, |b, j| {
            let r = b.load(F32, row, j.clone(), 4);
            let p = b.bin(BinOp::FMul, r, inv);
            let ps = b.let_(Inst::Splat(p, w));
            let v_row = lin(&[(&bi, sk * h * dv), (&j, h * dv), (&hi, dv)]);
            for (cc, a) in accs.iter().enumerate() {
                let vv = b.load(vt, 2, &v_row + &c(cc as u64 * wu), 4);
                let cur = get(b, *a);
                let next = b.let_(Inst::Fma(ps, vv, cur));
                b.stmt(Stmt::Set(*a, next));
            }
        });
        let y_row = lin(&[(&bi, sq * h * dv), (&i, h * dv), (&hi, dv)]);
        for (cc, a) in accs.iter().enumerate() {
            let v = get(b, *a);
            b.store(py, &y_row + &c(cc as u64 * wu), v, 4);
        }
    });
    b.finish()
}

/// The Attention kernel when the batch or the sequence lengths are run-time dims: one
/// pass over the keys per query row with a running max `m` (the scores are not kept,
/// so nothing needs a compile-time key length). With vectors of `w` lanes along the
/// head dims, keys go in blocks of `w`: the block's scores (in a `w`-float scratch),
/// its max, one rescale of the sum and the output row by `exp(m - m')`, the
/// exponentials as one vector with dlc's fast exp, then `w` FMAs of value rows; the
/// last `sk % w` keys, and every key of the scalar form, one at a time with `expf`.
/// Pool tasks are the heads (a compile-time count).
fn online(name: &str, n: &Node, op: &Attention, t: &Target) -> Result<Kernel, LowerError> {
    for x in n.inputs[..3].iter().chain(n.outputs) {
        if x.dtype != DType::F32 {
            return Err(n.error(format!("dtype {} is not supported yet (f32 only)", x.dtype)));
        }
    }
    let (q, k, v) = (Node::dims(&n.inputs[0]), Node::dims(&n.inputs[1]), Node::dims(&n.inputs[2]));
    let h = op.heads as u64;
    let width = |e: &Expr, what: &str| {
        e.as_const()
            .map(|v| v as u64)
            .ok_or_else(|| n.error(format!("the {what} width {e} must be a compile-time dim")))
    };
    let (d, dv) = (width(&q[2], "query")? / h, width(&v[2], "value")? / h);
    let (nb, sq, sk) = (q[0].clone(), q[1].clone(), k[1].clone());
    let mask = n.inputs.get(3).map(|m| (m.dtype, Node::dims(m)));
    let w = t.f32_lanes as u64;
    let (lanes, nd, ndv) = if w > 1 && d % w == 0 && dv % w == 0 && d / w <= 8 && dv / w <= 16 {
        (w as u32, d / w, dv / w)
    } else {
        (1, d, dv)
    };
    let vt = Ty::vec(Elem::F32, lanes);
    let lw = lanes as u64;
    let mut access = vec![Access::Read; 3 + mask.is_some() as usize];
    access.push(Access::Write);
    let mut b = KernelBuilder::new(name, &access);
    let py = 3 + mask.is_some() as u32;
    let (hd, hdv) = (c(h * d), c(h * dv));
    // Element strides of the mask broadcast to [batch, heads, query, key].
    let full = [nb.clone(), c(h), sq.clone(), sk.clone()];
    let mstrides = mask.as_ref().map(|(_, m)| crate::shape::broadcast_strides(m, &full));
    let block = (lanes > 1).then(|| b.scratch(Elem::F32, lw));
    let par_kind = if h > 1 { LoopKind::Parallel } else { LoopKind::Serial };
    b.for_(c(0), c(h), par_kind, |b, hi| {
        b.for_(c(0), nb.clone(), LoopKind::Serial, |b, bi| {
            b.for_(c(0), sq.clone(), LoopKind::Serial, |b, i| {
                let q_row = &(&(&(&bi * &sq) + &i) * &hd) + &(&hi * &c(d));
                let qs: Vec<ValId> = (0..nd).map(|cc| b.load(vt, 0, &q_row + &c(cc * lw), 4)).collect();
                let ninf = konst(b, F32, f64::NEG_INFINITY);
                let mx = b.local(F32, ninf);
                let zero = konst(b, F32, 0.0);
                let sum = b.local(F32, zero);
                let accs = crate::gemm::zero_accumulators(b, vt, ndv);
                let key_row = |j: &Expr, width: &Expr, dh: u64| &(&(&(&bi * &sk) + j) * width) + &(&hi * &c(dh));
                // Score of key `j`: q . k_j * scale + the mask's term.
                let score = |b: &mut KernelBuilder, j: &Expr| {
                    let k_row = key_row(j, &hd, d);
                    let mut acc = konst(b, vt, 0.0);
                    for (cc, qv) in qs.iter().enumerate() {
                        let kv = b.load(vt, 1, &k_row + &c(cc as u64 * lw), 4);
                        acc = b.let_(Inst::Fma(*qv, kv, acc));
                    }
                    let dot = if lanes > 1 { hsum(b, acc, lanes) } else { acc };
                    let scale = konst(b, F32, op.scale as f64);
                    let s = b.bin(BinOp::FMul, dot, scale);
                    let Some((dt, _)) = &mask else { return s };
                    let term = if op.key_padding {
                        let mf = crate::dtype::load_as(b, 3, &(&bi * &sk) + j, *dt, DType::F32);
                        let one = konst(b, F32, 1.0);
                        let keep = b.bin(BinOp::FSub, one, mf);
                        let fill = konst(b, F32, op.padding_fill as f64);
                        b.bin(BinOp::FMul, keep, fill)
                    } else {
                        let st = mstrides.as_ref().expect("a float mask has strides");
                        let idx = &(&(&(&bi * &st[0]) + &(&hi * &st[1])) + &(&i * &st[2])) + &(j * &st[3]);
                        b.load(F32, 3, idx, 4)
                    };
                    b.bin(BinOp::FAdd, s, term)
                };
                // m' = max(m, x); the factor exp(m - m') is 1 when the max stays
                // (exp(-inf - -inf) would be NaN).
                let new_max = |b: &mut KernelBuilder, x: ValId| {
                    let m = get(b, mx);
                    let m2 = fmax(b, m, x);
                    let same = b.cmp(CmpOp::FOeq, m, m2);
                    let dm = b.bin(BinOp::FSub, m, m2);
                    let e_dm = b.let_(Inst::Call { func: "expf".into(), args: vec![dm], ty: F32 });
                    let one = konst(b, F32, 1.0);
                    let corr = b.select(same, one, e_dm);
                    b.stmt(Stmt::Set(mx, m2));
                    (m2, corr)
                };
                // The output row times `corr`, plus `p_j * v_j` for each (p_j, j).
                let accumulate = |b: &mut KernelBuilder, corr: ValId, terms: &[(ValId, Expr)]| {
                    let cs = if lanes > 1 { b.let_(Inst::Splat(corr, lanes)) } else { corr };
                    let mut cur: Vec<ValId> = accs.iter().map(|a| get(b, *a)).collect();
                    for x in &mut cur {
                        *x = b.bin(BinOp::FMul, *x, cs);
                    }
                    for (p, j) in terms {
                        let ps = if lanes > 1 { b.let_(Inst::Splat(*p, lanes)) } else { *p };
                        let v_row = key_row(j, &hdv, dv);
                        for (cc, x) in cur.iter_mut().enumerate() {
                            let vv = b.load(vt, 2, &v_row + &c(cc as u64 * lw), 4);
                            *x = b.let_(Inst::Fma(ps, vv, *x));
                        }
                    }
                    for (a, x) in accs.iter().zip(cur) {
                        b.stmt(Stmt::Set(*a, x));
                    }
                };
                let keys_done = if let Some(blk) = block {
                    let blocks = sk.floor_div(&c(lw));
                    b.for_(c(0), blocks.clone(), LoopKind::Serial, |b, jb| {
                        let j0 = &jb * &c(lw);
                        for l in 0..lw {
                            let s = score(b, &(&j0 + &c(l)));
                            b.store(blk, c(l), s, 4);
                        }
                        let sv = b.load(vt, blk, c(0), 4);
                        let bm = b.let_(Inst::Reduce(dlc_kir::ReduceOp::FMax, sv));
                        let (m2, corr) = new_max(b, bm);
                        // Exponentials; a score of -inf contributes 0 (also when the
                        // max is still -inf).
                        let ms = b.let_(Inst::Splat(m2, lanes));
                        let dlt = b.bin(BinOp::FSub, sv, ms);
                        let e = crate::fastmath::exp(b, dlt, lanes);
                        let ninf = konst(b, vt, f64::NEG_INFINITY);
                        let dead = b.cmp(CmpOp::FOeq, sv, ninf);
                        let zero = konst(b, vt, 0.0);
                        let pv = b.select(dead, zero, e);
                        let psum = hsum(b, pv, lanes);
                        let l = get(b, sum);
                        let l2 = b.let_(Inst::Fma(l, corr, psum));
                        b.stmt(Stmt::Set(sum, l2));
                        let terms: Vec<(ValId, Expr)> =
                            (0..lanes).map(|l| (b.let_(Inst::Extract(pv, l)), &j0 + &c(l as u64))).collect();
                        accumulate(b, corr, &terms);
                    });
                    &blocks * &c(lw)
                } else {
                    c(0)
                };
                b.for_(keys_done, sk.clone(), LoopKind::Serial, |b, j| {
                    let s = score(b, &j);
                    let (m2, corr) = new_max(b, s);
                    let ds = b.bin(BinOp::FSub, s, m2);
                    let e_ds = b.let_(Inst::Call { func: "expf".into(), args: vec![ds], ty: F32 });
                    let ninf = konst(b, F32, f64::NEG_INFINITY);
                    let dead = b.cmp(CmpOp::FOeq, s, ninf);
                    let zero = konst(b, F32, 0.0);
                    let p = b.select(dead, zero, e_ds);
                    let l = get(b, sum);
                    let l2 = b.let_(Inst::Fma(l, corr, p));
                    b.stmt(Stmt::Set(sum, l2));
                    accumulate(b, corr, &[(p, j)]);
                });
                let one = konst(b, F32, 1.0);
                let l = get(b, sum);
                let inv = b.bin(BinOp::FDiv, one, l);
                let invs = if lanes > 1 { b.let_(Inst::Splat(inv, lanes)) } else { inv };
                let y_row = &(&(&(&bi * &sq) + &i) * &hdv) + &(&hi * &c(dv));
                for (cc, a) in accs.iter().enumerate() {
                    let acc = get(b, *a);
                    let y = b.bin(BinOp::FMul, acc, invs);
                    b.store(py, &y_row + &c(cc as u64 * lw), y, 4);
                }
            });
        });
    });
    Ok(b.finish())
}
