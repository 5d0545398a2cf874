//! int8 kernels: [`quant_pack`] (f32 NCHW to the packed u8 layout) and [`qconv`]
//! (integer convolution with an f32 epilogue).
//!
//! `QConv` follows the channel-blocked f32 convolution ([`crate::convblk`]): vectors of 8
//! i32 accumulators run along output channels, weights are packed at compile time into
//! blocks of `CB = NF * 8` channels, `[block][ky][c/4][kx][CB][4]` (i8, a constant array
//! of the kernel), and each input pixel's 32-bit word (four input channels, u8) is
//! broadcast to all lanes. One step is a four-term dot product per lane, by the
//! target's [`Int8Dot`]: with VNNI one `vpdpbusd` (32 multiply-adds into the i32
//! accumulators; 64 on 512-bit vectors, whose accumulators hold 16 channels); on x86 with AVX2, `vpmaddubsw` (u8 x i8 pairs to saturating i16) then
//! `vpmaddwd` by ones (pairs of i16 to i32): 32 multiply-adds in two instructions where
//! f32 FMA does 8 in one. The pairs cannot saturate when every weight is within +-63
//! (2 x 255 x 63 < 2^15), which the quantization pass guarantees; a layer with larger
//! weights, and every other target, use exact i32 arithmetic instead (widen, multiply,
//! add the four products with shuffles). The input comes padded (the padding holds the
//! zero point), so no tap needs a bounds check. The intrinsics are kir's named
//! operations ([`dlc_kir::intrinsic`]), so the interpreter runs every path.
use crate::conv1x1::pixel_epilogue;
use crate::convblk::block_task;
use crate::{in_bounds, par, Int8Dot, LowerError, Node, Target};
use dlc_ir::ops::{QConv, QuantPack, PACK};
use dlc_kir::{
    Access, BinOp, CastOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, ReduceOp, Stmt, Ty, UnOp,
    ValId,
};

/// i32 lanes per accumulator vector.
const LANES: u64 = 8;
const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };
const I32: Ty = Ty { elem: Elem::I32, lanes: 1 };
const VPDPBUSD: &str = "x86.avx512.vpdpbusd.256";
const VPDPBUSD512: &str = "x86.avx512.vpdpbusd.512";
const PMADDUBSW: &str = "x86.avx2.pmadd.ub.sw";
const PMADDWD: &str = "x86.avx2.pmadd.wd";

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

fn fconst(b: &mut KernelBuilder, lanes: u32, v: f32) -> ValId {
    b.let_(Inst::Const { ty: Ty::vec(Elem::F32, lanes), lit: Lit::Float(v as f64) })
}

fn iconst(b: &mut KernelBuilder, ty: Ty, v: i64) -> ValId {
    b.let_(Inst::Const { ty, lit: Lit::Int(v) })
}

/// `x` in every one of `lanes` lanes (`x` itself for one lane).
fn splat(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    if lanes == 1 {
        x
    } else {
        b.let_(Inst::Splat(x, lanes))
    }
}

/// A `quant_pack`'s scale and zero point as f32 values: constants, or with `dynamic` the
/// ones the kernel stored in its second result (parameter 2).
fn qparams(b: &mut KernelBuilder, op: &QuantPack) -> (ValId, ValId) {
    if op.dynamic {
        return (b.load(F32, 2, c(0), 4), b.load(F32, 2, c(1), 4));
    }
    (fconst(b, 1, op.scale), fconst(b, 1, op.zero_point as f32))
}

/// ONNX QuantizeLinear of `v` (`lanes` f32s): `clamp(roundeven(v / scale) + zp, 0,
/// qmax)` as i32.
fn quantize(b: &mut KernelBuilder, v: ValId, lanes: u32, (scale, zp): (ValId, ValId), qmax: i64) -> ValId {
    let s = splat(b, scale, lanes);
    let v = b.bin(BinOp::FDiv, v, s);
    let v = b.let_(Inst::Un(UnOp::RoundEven, v));
    let z = splat(b, zp, lanes);
    let v = b.bin(BinOp::FAdd, v, z);
    let zero = fconst(b, lanes, 0.0);
    let v = b.bin(BinOp::FMax, v, zero);
    let hi = fconst(b, lanes, qmax as f32);
    let v = b.bin(BinOp::FMin, v, hi);
    b.let_(Inst::Cast(CastOp::FpToSi, v, Ty::vec(Elem::I32, lanes)))
}

/// A dynamic `quant_pack`'s first step, before the packing: the input's range (NaN
/// ignored), then `dlc_ir::ops::range_quantization` of it, stored as `[scale,
/// zero_point]` in the second result.
fn dynamic_range(b: &mut KernelBuilder, numel: u64, qmax: i64) {
    let vt = Ty::vec(Elem::F32, LANES as u32);
    let inf = fconst(b, LANES as u32, f32::INFINITY);
    let ninf = fconst(b, LANES as u32, f32::NEG_INFINITY);
    let (lo, hi) = (b.local(vt, inf), b.local(vt, ninf));
    let step = |b: &mut KernelBuilder, v: ValId| {
        for (slot, op) in [(lo, BinOp::FMin), (hi, BinOp::FMax)] {
            let cur = b.let_(Inst::Get(slot));
            let next = b.bin(op, cur, v);
            b.stmt(Stmt::Set(slot, next));
        }
    };
    b.for_(c(0), c(numel / LANES), LoopKind::Serial, |b, i| {
        let v = b.load(vt, 0, &i * &c(LANES), 4);
        step(b, v)
    });
    b.for_(c(numel / LANES * LANES), c(numel), LoopKind::Serial, |b, i| {
        let x = b.load(F32, 0, i, 4);
        let v = b.let_(Inst::Splat(x, LANES as u32));
        step(b, v)
    });
    let zero = fconst(b, 1, 0.0);
    let l = b.let_(Inst::Get(lo));
    let l = b.let_(Inst::Reduce(ReduceOp::FMin, l));
    let lo = b.bin(BinOp::FMin, l, zero);
    let h = b.let_(Inst::Get(hi));
    let h = b.let_(Inst::Reduce(ReduceOp::FMax, h));
    let hi = b.bin(BinOp::FMax, h, zero);
    // As range_quantization: an empty or non-finite range gives scale 1.
    let inf = fconst(b, 1, f32::INFINITY);
    let finite = |b: &mut KernelBuilder, v: ValId| {
        let a = b.let_(Inst::Un(UnOp::FAbs, v));
        b.cmp(CmpOp::FOlt, a, inf)
    };
    let width = b.bin(BinOp::FSub, hi, lo);
    let tiny = fconst(b, 1, f32::MIN_POSITIVE);
    let wide = b.cmp(CmpOp::FOgt, width, tiny);
    let (fl, fh) = (finite(b, lo), finite(b, hi));
    let both = b.bin(BinOp::And, fl, fh);
    let ok = b.bin(BinOp::And, both, wide);
    let q = fconst(b, 1, qmax as f32);
    let one = fconst(b, 1, 1.0);
    let s = b.bin(BinOp::FDiv, width, q);
    let scale = b.select(ok, s, one);
    let nlo = b.let_(Inst::Un(UnOp::FNeg, lo));
    let z = b.bin(BinOp::FDiv, nlo, scale);
    let z = b.let_(Inst::Un(UnOp::RoundEven, z));
    let z = b.bin(BinOp::FMax, z, zero);
    let z = b.bin(BinOp::FMin, z, q);
    let neg = b.cmp(CmpOp::FOlt, lo, zero);
    let dflt = b.select(neg, q, zero);
    let zp = b.select(ok, z, dflt);
    b.store(2, c(0), scale, 4);
    b.store(2, c(1), zp, 4);
}

fn params(outputs: usize) -> Vec<Access> {
    let mut p = vec![Access::Read];
    p.extend(std::iter::repeat_n(Access::Write, outputs));
    p
}

/// The quantize-and-pack kernel of node `n`: one task per output row `(n, c4, y)`;
/// pixels 8 at a time (then one at a time), four channel rows quantized and merged into
/// 32-bit words. Parameters: X, then the packed result (and with `dynamic` the
/// `[scale, zero_point]` result).
pub fn quant_pack(name: &str, n: &Node, op: &QuantPack) -> Result<Kernel, LowerError> {
    let x = n.fixed_in(0)?;
    let mut b = KernelBuilder::new(name, &params(n.outputs.len()));
    if op.dynamic {
        dynamic_range(&mut b, x.iter().product(), op.qmax);
    }
    if op.rows {
        quant_pack_rows(&mut b, n, op)?;
        return Ok(b.finish());
    }
    if x.len() != 4 {
        return Err(n.error("quant_pack needs an NCHW input"));
    }
    let (batch, ch, h, w) = (x[0], x[1], x[2], x[3]);
    let [pt, pl, _, _] = op.padding();
    let y = n.outputs[0].shape.as_fixed().ok_or_else(|| n.error("the packed result needs fixed dims"))?;
    let (c4, hp, wp) = (y[1], y[2], y[3]);
    let zp_int = |b: &mut KernelBuilder| {
        let zp = qparams(b, op).1;
        b.let_(Inst::Cast(CastOp::FpToSi, zp, I32))
    };
    let fill = |b: &mut KernelBuilder, start: Expr, count: u64| {
        let z = zp_int(b);
        let bytes = iconst(b, I32, 0x0101_0101);
        let word = b.bin(BinOp::Mul, z, bytes);
        b.for_(c(0), c(count), LoopKind::Serial, |b, i| b.store(1, &start + &i, word, 4));
    };
    // `lanes` pixels from column `x0` of row `yi` of the four channels of word `c4i`.
    let words = |b: &mut KernelBuilder, img: &Expr, c4i: &Expr, yi: &Expr, x0: &Expr, lanes: u32| -> ValId {
        let it = Ty::vec(Elem::I32, lanes);
        let qp = qparams(b, op);
        let mut word = iconst(b, it, 0);
        for sub in 0..PACK {
            let chn = &(c4i * &c(PACK)) + &c(sub);
            let at = &(&(&(img * &c(ch * h * w)) + &(&chn * &c(h * w))) + &(yi * &c(w))) + x0;
            let q = |b: &mut KernelBuilder| {
                let v = b.load(Ty::vec(Elem::F32, lanes), 0, at.clone(), 4);
                quantize(b, v, lanes, qp, op.qmax)
            };
            let q = if ch.is_multiple_of(PACK) {
                q(b)
            } else {
                // Channels past C hold the zero point.
                let z = zp_int(b);
                let z = splat(b, z, lanes);
                let slot = b.local(it, z);
                let inside = in_bounds(b, chn.clone(), ch);
                b.if_(
                    inside,
                    |b| {
                        let v = q(b);
                        b.stmt(Stmt::Set(slot, v));
                    },
                    |_| {},
                );
                b.let_(Inst::Get(slot))
            };
            let sh = iconst(b, it, (8 * sub) as i64);
            let shifted = b.bin(BinOp::Shl, q, sh);
            word = b.bin(BinOp::Or, word, shifted);
        }
        word
    };
    let flops = 8 * batch * c4 * PACK * h * w;
    par(&mut b, batch * c4 * hp, flops, |b, t| {
        let img = t.floor_div(&c(c4 * hp));
        let r = t.modulo(&c(c4 * hp));
        let (c4i, yp) = (r.floor_div(&c(hp)), r.modulo(&c(hp)));
        let row = &t * &c(wp);
        let yi = &yp - &c(pt);
        let inside = in_bounds(b, yi.clone(), h);
        b.if_(
            inside,
            |b| {
                fill(b, row.clone(), pl);
                fill(b, &row + &c(pl + w), wp - pl - w);
                let body = &row + &c(pl);
                b.for_(c(0), c(w / LANES), LoopKind::Serial, |b, i| {
                    let x0 = &i * &c(LANES);
                    let v = words(b, &img, &c4i, &yi, &x0, LANES as u32);
                    b.store(1, &body + &x0, v, 4);
                });
                b.for_(c(w / LANES * LANES), c(w), LoopKind::Serial, |b, x0| {
                    let v = words(b, &img, &c4i, &yi, &x0, 1);
                    b.store(1, &body + &x0, v, 4);
                });
            },
            |b| fill(b, row.clone(), wp),
        );
    });
    Ok(b.finish())
}

/// [`quant_pack`] of a matrix's rows: word `(k4, p)` holds row `p`'s values `4 k4..4 k4 +
/// 4` (contiguous in the input: one 4-lane load, quantized and narrowed to one 32-bit
/// word).
fn quant_pack_rows(b: &mut KernelBuilder, n: &Node, op: &QuantPack) -> Result<(), LowerError> {
    let x = n.fixed_in(0)?;
    let k = *x.last().ok_or_else(|| n.error("rows need a matrix input"))?;
    let y = n.outputs[0].shape.as_fixed().ok_or_else(|| n.error("the packed result needs fixed dims"))?;
    let (k4, p) = (y[1], y[3]);
    let ft = Ty::vec(Elem::F32, PACK as u32);
    par(b, p, 8 * p * k4 * PACK, |b, row| {
        b.for_(c(0), c(k4), LoopKind::Serial, |b, wi| {
            let ch0 = &wi * &c(PACK);
            let src = &(&row * &c(k)) + &ch0;
            let v = if k.is_multiple_of(PACK) {
                b.load(ft, 0, src, 4)
            } else {
                // The last word of a row may stop short: lanes past K read as 0.0, which
                // quantizes to the zero point.
                let mut v = fconst(b, PACK as u32, 0.0);
                let zero = fconst(b, 1, 0.0);
                for l in 0..PACK {
                    let inside = in_bounds(b, &ch0 + &c(l), k);
                    let (sl, s0) = (b.index(&src + &c(l)), b.index(src.clone()));
                    let at = b.select(inside, sl, s0);
                    let xl = b.load(F32, 0, Expr::val(at), 4);
                    let xl = b.select(inside, xl, zero);
                    v = b.let_(Inst::Insert(v, xl, l as u32));
                }
                v
            };
            let qp = qparams(b, op);
            let q = quantize(b, v, PACK as u32, qp, op.qmax);
            let q = b.let_(Inst::Cast(CastOp::Trunc, q, Ty::vec(Elem::I8, PACK as u32)));
            let word = b.let_(Inst::Cast(CastOp::Bitcast, q, I32));
            b.store(1, &(&wi * &c(p)) + &row, word, 4);
        });
    });
    Ok(())
}

/// The tile `(NF, NP)`: `NF` vectors of `lanes` channels by `NP` pixels of one row, at
/// most `regs` vector registers (accumulators, weights, one broadcast, the ones and a
/// temporary). The cost of a row of tiles over the channel blocks (the last block may
/// be part padding), one cycle per dot product of a vector plus two per tile step and a
/// quarter per load, over the useful work.
pub fn qtile(m: u64, ow: u64, lanes: u64, regs: u64) -> (u64, u64) {
    let mut best = (f64::INFINITY, (1, 1));
    for nf in 1..=4u64 {
        for np in 1..=ow.min(12) {
            if nf * np + nf + 3 > regs {
                continue;
            }
            let step = |cnt: u64| (nf * cnt) as f64 + 2.0 + (nf + cnt) as f64 * 0.25;
            let row = (ow / np) as f64 * step(np) + if !ow.is_multiple_of(np) { step(ow % np) } else { 0.0 };
            let cost = row * m.div_ceil(nf * lanes) as f64 / (m * ow) as f64;
            if cost < best.0 - 1e-9 {
                best = (cost, (nf, np));
            }
        }
    }
    best.1
}

/// Packs `[M, C, KH, KW]` i8 weights (as bytes) into `[ceil(M / cb)][KH][C4][KW][cb][4]`.
pub fn pack(w: &[u8], [m, c, kh, kw]: [u64; 4], cb: u64) -> Vec<u8> {
    let (blocks, c4) = (m.div_ceil(cb), c.div_ceil(PACK));
    let mut out = vec![0u8; (blocks * kh * c4 * kw * cb * PACK) as usize];
    for co in 0..m {
        let (b, lane) = (co / cb, co % cb);
        for ci in 0..c {
            for ky in 0..kh {
                for kx in 0..kw {
                    let src = ((co * c + ci) * kh + ky) * kw + kx;
                    let dst = ((((b * kh + ky) * c4 + ci / PACK) * kw + kx) * cb + lane) * PACK + ci % PACK;
                    out[dst as usize] = w[src as usize];
                }
            }
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// How a kernel with these (i8) weights takes its dot products on target `t`: VNNI
/// where the target has it; on AVX2 the pairs when every weight is within +-63 (no pair
/// sum can saturate), else the weights' halves; else exact i32 arithmetic.
pub fn dot_path(t: &Target, w: &[u8]) -> Int8Dot {
    match t.int8 {
        Int8Dot::Vnni512 => Int8Dot::Vnni512,
        Int8Dot::Vnni => Int8Dot::Vnni,
        Int8Dot::Avx2Pairs | Int8Dot::Avx2Halves if w.iter().all(|&v| (-63..=63).contains(&(v as i8))) => {
            Int8Dot::Avx2Pairs
        }
        Int8Dot::Avx2Pairs | Int8Dot::Avx2Halves => Int8Dot::Avx2Halves,
        Int8Dot::Exact => Int8Dot::Exact,
    }
}

fn intrinsic(b: &mut KernelBuilder, name: &str, args: Vec<ValId>, ty: Ty) -> ValId {
    b.let_(Inst::Intrinsic { name: name.to_string(), args, ty })
}

/// Four-term dot products, per lane, of the u8 input word `xw` (broadcast: `4 * lanes`
/// bytes) with the i8 weight vector `wv`, as `lanes` i32s, on the paths without VNNI:
/// the AVX2 pairs (weights within +-63), else exact i32 arithmetic.
fn dot4(b: &mut KernelBuilder, path: Int8Dot, xw: ValId, wv: ValId, lanes: u32) -> ValId {
    let accv = Ty::vec(Elem::I32, lanes);
    let i16v = Ty::vec(Elem::I16, 2 * lanes);
    let pairs = |b: &mut KernelBuilder, wv: ValId| {
        let t = intrinsic(b, PMADDUBSW, vec![xw, wv], i16v);
        let ones = iconst(b, i16v, 1);
        intrinsic(b, PMADDWD, vec![t, ones], accv)
    };
    match path {
        Int8Dot::Avx2Pairs => return pairs(b, wv),
        Int8Dot::Avx2Halves => {
            // w = (w >> 1) + (w - (w >> 1)), both halves within +-64: a pair sum is at
            // most 2 x 255 x 64 < 2^15. (LLVM computes the halves of one weight vector
            // once for all the rows that share it.)
            let one = iconst(b, Ty::vec(Elem::I8, 4 * lanes), 1);
            let lo = b.bin(BinOp::AShr, wv, one);
            let hi = b.bin(BinOp::Sub, wv, lo);
            let (x, y) = (pairs(b, lo), pairs(b, hi));
            return b.bin(BinOp::Add, x, y);
        }
        _ => {}
    }
    let wide = Ty::vec(Elem::I32, 4 * lanes);
    let a = b.let_(Inst::Cast(CastOp::Zext, xw, wide));
    let bw = b.let_(Inst::Cast(CastOp::Sext, wv, wide));
    let p = b.bin(BinOp::Mul, a, bw);
    let mut sum: Option<ValId> = None;
    for j in 0..PACK as u32 {
        let mask: Vec<u32> = (0..lanes).map(|l| l * PACK as u32 + j).collect();
        let part = b.let_(Inst::Shuffle(p, p, mask));
        sum = Some(match sum {
            None => part,
            Some(s) => b.bin(BinOp::Add, s, part),
        });
    }
    sum.expect("four parts")
}

/// `acc` plus the four-term dot products of `xw` and `wv` per lane ([`dot4`]): one
/// `vpdpbusd` with VNNI.
fn dot_add(b: &mut KernelBuilder, path: Int8Dot, acc: ValId, xw: ValId, wv: ValId, lanes: u32) -> ValId {
    let accv = Ty::vec(Elem::I32, lanes);
    match path {
        Int8Dot::Vnni512 => intrinsic(b, VPDPBUSD512, vec![acc, xw, wv], accv),
        Int8Dot::Vnni => intrinsic(b, VPDPBUSD, vec![acc, xw, wv], accv),
        _ => {
            let d = dot4(b, path, xw, wv, lanes);
            b.bin(BinOp::Add, acc, d)
        }
    }
}

/// The `QConv` kernel of node `n` for target `t`. Operands 1 to 3 (weights, mult,
/// offset) must be constants (the kernel packs them); `n.operand_max[0]` bounds the
/// input's quantized values (its `quant_pack`'s `qmax`, else 255). Parameters: Xq, Wq,
/// mult, offset (those three unread), the residual or the dynamic `[scale,
/// zero_point]`, then Y.
pub fn qconv(name: &str, n: &Node, op: &QConv, t: &Target) -> Result<Kernel, LowerError> {
    let konst = |i: usize| n.consts.get(i).copied().flatten();
    let (Some(wt), Some(mt), Some(ot)) = (konst(1), konst(2), konst(3)) else {
        return Err(n.error("weights, mult and offset must be constants"));
    };
    let (x, wd) = (n.fixed_in(0)?, n.fixed_in(1)?);
    let y = n.outputs[0].shape.as_fixed().ok_or_else(|| n.error("the result needs fixed dims"))?;
    if x.len() != 5 || wd.len() != 4 {
        return Err(n.error("needs a packed input and [M, C, KH, KW] weights"));
    }
    let (batch, c4, hp, wp) = (x[0], x[1], x[2], x[3]);
    let (m, ch, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    // With `rows` the result is [P, M]: one output row of P pixels, channels contiguous.
    let (oh, ow) = if op.rows { (1, y[0]) } else { (y[2], y[3]) };
    let ([sy, sx], [dy, dx]) = op.steps();
    let w = wt.bytes();
    let (Some(mult), Some(offset)) = (mt.to_f32(), ot.to_f32()) else {
        return Err(n.error("mult and offset must be f32 constants"));
    };
    let input_max = n.operand_max.first().copied().flatten().unwrap_or(255);
    let path = dot_path(t, w);
    // Two steps' pair sums fit 16 bits: 2 x 2 x 127 x 63 < 2^15.
    let paired = path == Int8Dot::Avx2Pairs && input_max <= 127;
    // Channel words per step group: two when they pair up evenly, else the kernel
    // columns pair up.
    let words = if paired && c4 % 2 == 0 { 2 } else { 1 };
    // 512-bit VNNI: 16 i32 lanes and 32 vector registers; else 8 lanes in 16.
    let (lanes, regs) = if path == Int8Dot::Vnni512 { (16, 32) } else { (LANES, 16) };
    let (nf, np) = qtile(m, ow, lanes, regs);
    let cb = nf * lanes;
    let blocks = m.div_ceil(cb);
    tracing::debug!(node = n.name, nf, np, ?path, paired, "int8 convolution tile");
    let n_in = n.inputs.len();
    let mut access = vec![Access::Read; n_in];
    access.push(Access::Write);
    let mut b = KernelBuilder::new(name, &access);
    let pw = b.data("wpack", Elem::I8, pack(w, [m, ch, kh, kw], cb));
    let pad = |v: &[f32]| -> Vec<u8> {
        let mut p = v.to_vec();
        p.resize((blocks * cb) as usize, 0.0);
        f32_bytes(&p)
    };
    let (pm, po) = (b.data("mult", Elem::F32, pad(&mult)), b.data("offset", Elem::F32, pad(&offset)));
    // Dynamic: each channel's weight sum, for the run's zero-point term.
    let psum = op.dynamic.then(|| {
        let per = (ch * kh * kw) as usize;
        let sums: Vec<f32> =
            w.chunks(per.max(1)).map(|cw| cw.iter().map(|&v| v as i8 as i32).sum::<i32>() as f32).collect();
        b.data("wsum", Elem::F32, pad(&sums))
    });
    let has_res = n_in == 5 && !op.dynamic;
    let out = n_in as u32;
    let (bv, accv, fv) =
        (Ty::vec(Elem::I8, 4 * lanes as u32), Ty::vec(Elem::I32, lanes as u32), Ty::vec(Elem::F32, lanes as u32));
    let i16v = Ty::vec(Elem::I16, 16);
    let dot4 = |b: &mut KernelBuilder, xw: ValId, wv: ValId| dot4(b, path, xw, wv, lanes as u32);
    let taps = c4 * kh * kw;
    // One tile: pixels ox0.. (`cnt` of them) of output row `oy` of image `img` and
    // channel block `blk`; `last` is whether the block is the last, partly filled one.
    let tile = |b: &mut KernelBuilder,
                (img, oy, blk): (&Expr, &Expr, &Expr),
                last: Option<ValId>,
                ox0: Expr,
                cnt: u64| {
        let accs: Vec<u32> = (0..nf * cnt)
            .map(|_| {
                let z = iconst(b, accv, 0);
                b.local(accv, z)
            })
            .collect();
        let wblk = blk * &c(taps * cb * PACK);
        let kxo: Vec<Expr> = (0..kw)
            .map(|kx| {
                let v = b.i64((kx * dx) as i64);
                Expr::val(b.let_(Inst::Opaque(v)))
            })
            .collect();
        b.for_(c(0), c(kh), LoopKind::Serial, |b, ky| {
            let iy = &(oy * &c(sy)) + &(&ky * &c(dy));
            let wky = &wblk + &(&ky * &c(c4 * kw * cb * PACK));
            b.for_(c(0), c(c4 / words), LoopKind::Serial, |b, cj| {
                // Per channel word of this step: the word index of pixel (iy, ox0 * sx),
                // and where its weights start.
                let mut rows = Vec::new();
                let mut taps0 = Vec::new();
                for wi in 0..words {
                    let ci = &(&cj * &c(words)) + &c(wi);
                    let r = &(&(&(img * &c(c4 * hp * wp)) + &(&ci * &c(hp * wp))) + &(&iy * &c(wp))) + &(&ox0 * &c(sx));
                    rows.push(r);
                    taps0.push(&wky + &(&ci * &c(kw * cb * PACK)));
                }
                let steps: Vec<(usize, u64)> =
                    (0..kw).flat_map(|kx| (0..words as usize).map(move |wi| (wi, kx))).collect();
                for chunk in steps.chunks(if paired { 2 } else { 1 }) {
                    let ws: Vec<Vec<ValId>> = chunk
                        .iter()
                        .map(|&(wi, kx)| {
                            (0..nf).map(|f| b.load(bv, pw, &taps0[wi] + &c((kx * cb + f * lanes) * PACK), 32)).collect()
                        })
                        .collect();
                    for p in 0..cnt {
                        let xs: Vec<ValId> = chunk
                            .iter()
                            .map(|&(wi, kx)| {
                                let idx = &(&rows[wi] + &kxo[kx as usize]) + &c(p * sx);
                                let word = b.load(I32, 0, idx, 4);
                                let s = b.let_(Inst::Splat(word, lanes as u32));
                                b.let_(Inst::Cast(CastOp::Bitcast, s, bv))
                            })
                            .collect();
                        for f in 0..nf as usize {
                            let slot = accs[f * cnt as usize + p as usize];
                            let cur = b.let_(Inst::Get(slot));
                            let next = if matches!(path, Int8Dot::Vnni512 | Int8Dot::Vnni) {
                                dot_add(b, path, cur, xs[0], ws[0][f], lanes as u32)
                            } else {
                                let d = if chunk.len() == 2 {
                                    // Two steps' pair sums added in 16 bits, then widened once.
                                    let a = intrinsic(b, PMADDUBSW, vec![xs[0], ws[0][f]], i16v);
                                    let a2 = intrinsic(b, PMADDUBSW, vec![xs[1], ws[1][f]], i16v);
                                    let t = b.bin(BinOp::Add, a, a2);
                                    let ones = iconst(b, i16v, 1);
                                    intrinsic(b, PMADDWD, vec![t, ones], accv)
                                } else {
                                    dot4(b, xs[0], ws[0][f])
                                };
                                b.bin(BinOp::Add, cur, d)
                            };
                            b.stmt(Stmt::Set(slot, next));
                        }
                    }
                }
            });
        });
        // Epilogue: lane l of vector f is channel blk*cb + f*8 + l.
        let co0 = blk * &c(cb);
        let valid_last = m - (blocks - 1) * cb;
        for f in 0..nf {
            let lanes_here = if f * lanes >= valid_last { 0 } else { (valid_last - f * lanes).min(lanes) };
            let chan = &co0 + &c(f * lanes);
            let body = |b: &mut KernelBuilder, valid: u64| {
                let mut mv = b.load(fv, pm, chan.clone(), 4);
                let mut ov = b.load(fv, po, chan.clone(), 4);
                if let Some(psum) = psum {
                    // mult = scale * wscale, offset = bias - mult * zero_point * sum(w).
                    let (scale, zp) = (b.load(F32, 4, c(0), 4), b.load(F32, 4, c(1), 4));
                    let s = b.let_(Inst::Splat(scale, lanes as u32));
                    mv = b.bin(BinOp::FMul, mv, s);
                    let sum = b.load(fv, psum, chan.clone(), 4);
                    let z = b.let_(Inst::Splat(zp, lanes as u32));
                    let zs = b.bin(BinOp::FMul, sum, z);
                    let t = b.bin(BinOp::FMul, mv, zs);
                    ov = b.bin(BinOp::FSub, ov, t);
                }
                for p in 0..cnt {
                    let acc = b.let_(Inst::Get(accs[(f * cnt + p) as usize]));
                    let accf = b.let_(Inst::Cast(CastOp::SiToFp, acc, fv));
                    let mut v = b.let_(Inst::Fma(accf, mv, ov));
                    let ox = &ox0 + &c(p);
                    let (y0, plane) = if op.rows {
                        (&(&ox * &c(m)) + &chan, 1)
                    } else {
                        (&(&(&(img * &c(m * oh * ow)) + &(&chan * &c(oh * ow))) + &(oy * &c(ow))) + &ox, oh * ow)
                    };
                    if has_res {
                        let mut r = fconst(b, lanes as u32, 0.0);
                        for l in 0..valid {
                            let xl = b.load(F32, 4, &y0 + &c(l * plane), 4);
                            r = b.let_(Inst::Insert(r, xl, l as u32));
                        }
                        v = b.bin(BinOp::FAdd, v, r);
                    }
                    let v = pixel_epilogue(b, op.act, v, lanes as u32, None, None);
                    for l in 0..valid {
                        let xl = b.let_(Inst::Extract(v, l as u32));
                        b.store(out, &y0 + &c(l * plane), xl, 4);
                    }
                }
            };
            match last {
                Some(is_last) if lanes_here < lanes => b.if_(is_last, |b| body(b, lanes_here), |b| body(b, lanes)),
                _ => body(b, lanes),
            }
        }
    };
    let flops = 2 * batch * m * ch * kh * kw * oh * ow;
    let weights_outer = m * taps * PACK > 256 * 1024;
    par(&mut b, batch * oh * blocks, flops / 2, |b, tk| {
        let (img, oy, blk) = block_task(&tk, &Expr::c(oh as i64), blocks, weights_outer);
        let last = (m % cb != 0).then(|| {
            let bv = b.index(blk.clone());
            let lb = b.i64(blocks as i64 - 1);
            b.cmp(CmpOp::Eq, bv, lb)
        });
        if ow / np > 0 {
            b.for_(c(0), c(ow / np), LoopKind::Serial, |b, i| tile(b, (&img, &oy, &blk), last, &i * &c(np), np));
        }
        if !ow.is_multiple_of(np) {
            tile(b, (&img, &oy, &blk), last, c(ow / np * np), ow % np);
        }
    });
    Ok(b.finish())
}

/// Rows whose sums an `int_matmul` task keeps at a time.
const SUM_ROWS: u64 = 256;

/// The `int_matmul` kernel of node `n` for target `t` (ONNX MatMulInteger with a u8 left
/// operand, [`dlc_ir::ops::IntMatMul`]). The weights and their zero points must be
/// constants (the kernel packs them) and `K` a multiple of 4. Parameters: A, B, a_zp,
/// b_zp (B and b_zp unread), Y.
///
/// u8 weights are taken as `b8 = b - 128` (i8; `u = 128`, 0 for i8 weights), so every
/// product is a u8 x i8 dot product of the target's [`Int8Dot`] path: `vpdpbusd` with
/// VNNI. The integer sum splits, exactly, into
/// `sum_k a b8 + (u - zb[n]) * rowsum(a) + a_zp * (K (zb[n] - u) - colsum(b8)[n])`: the
/// products' tile, one sum per row (computed once per task for up to 256 rows), and two
/// per-column constants. A's rows are read in place, four `k` per 32-bit word
/// broadcast to every lane; B is packed `[column block][K / 4][cb][4]`. A task takes up
/// to 256 rows and a run of column blocks; within one, each block of weights serves
/// every row.
pub fn int_matmul(name: &str, n: &Node, t: &Target) -> Result<Kernel, LowerError> {
    let konst = |i: usize| n.consts.get(i).copied().flatten();
    let (Some(bt), Some(zt)) = (konst(1), konst(3)) else {
        return Err(n.error("the weights and their zero points must be constants"));
    };
    let bd = n.fixed_in(1)?;
    let (k, nn) = (bd[0], bd[1]);
    if !k.is_multiple_of(PACK) || k == 0 || nn == 0 {
        return Err(n.error(format!("needs K a positive multiple of 4 and N > 0, got K = {k}, N = {nn}")));
    }
    let a = &n.inputs[0].shape.0;
    let m = a[..a.len() - 1].iter().fold(Expr::c(1), |p, d| &p * &d.expr());
    let signed = bt.ty().dtype == dlc_ir::DType::I8;
    let u: i64 = if signed { 0 } else { 128 };
    let b8: Vec<u8> = bt.bytes().iter().map(|&v| if signed { v } else { v.wrapping_sub(128) }).collect();
    let zb = zt.to_i64().ok_or_else(|| n.error("the weights' zero points must be integers"))?;
    let zb_at = |j: usize| zb[if zb.len() == 1 { 0 } else { j }];
    let path = dot_path(t, &b8);
    // On AVX2 with weights past +-63: the pairs on weights split so that no pair sum can
    // saturate, and a short list of fix-up steps (see `split_pairs`).
    let (main_b8, fix_b8) =
        if path == Int8Dot::Avx2Halves { split_pairs(&b8, k, nn) } else { (b8.clone(), Vec::new()) };
    let step_path = if path == Int8Dot::Avx2Halves { Int8Dot::Avx2Pairs } else { path };
    // Vectors per row of the tile (no more than the columns fill) and rows per tile,
    // within the vector registers (32 with 512-bit VNNI, else 16).
    let (lanes, nf, mr) = match path {
        Int8Dot::Vnni512 => match nn.div_ceil(16).min(4) {
            4 => (16, 4, 6),
            nf => (16, nf, 8),
        },
        _ => match nn.div_ceil(LANES).min(2) {
            2 => (LANES, 2, 4),
            nf => (LANES, nf, 6),
        },
    };
    let cb = nf * lanes;
    let blocks = nn.div_ceil(cb);
    let k4 = k / PACK;
    // [block][k4][cb][4], columns past N zero.
    let mut packed = vec![0u8; (blocks * k * cb) as usize];
    for kk in 0..k {
        for j in 0..nn {
            let (blk, lane) = (j / cb, j % cb);
            packed[(((blk * k4 + kk / PACK) * cb + lane) * PACK + kk % PACK) as usize] =
                main_b8[(kk * nn + j) as usize];
        }
    }
    let pad = |v: Vec<i32>| -> Vec<u8> {
        let mut v = v;
        v.resize((blocks * cb) as usize, 0);
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    };
    let c1: Vec<i32> = (0..nn as usize).map(|j| (u - zb_at(j)) as i32).collect();
    let c2: Vec<i32> = (0..nn as usize)
        .map(|j| {
            let colsum: i64 = (0..k as usize).map(|kk| b8[kk * nn as usize + j] as i8 as i64).sum();
            (k as i64 * (zb_at(j) - u) - colsum) as i32
        })
        .collect();
    tracing::debug!(node = n.name, ?path, nf, mr, blocks, "int8 matrix product tile");
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Read, Access::Read, Access::Write]);
    let out = 4;
    let pb = b.data("bpack", Elem::I8, packed);
    // Where no pair needed splitting, no fix-up steps.
    let fix_list = (!fix_b8.is_empty()).then(|| fix_steps(&fix_b8, k, nn, cb)).filter(|(s, _, _)| !s.is_empty());
    let fix = fix_list.map(|(steps, weights, offsets)| {
        let bytes = |v: Vec<i64>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        tracing::debug!(node = n.name, steps = steps.len(), of = blocks * k4, "int8 fix-up steps");
        (
            b.data("fix_steps", Elem::I64, bytes(steps)),
            b.data("fix_weights", Elem::I8, weights),
            b.data("fix_offsets", Elem::I64, bytes(offsets)),
        )
    });
    let (p1, p2) = (b.data("rowsum_factor", Elem::I32, pad(c1)), b.data("zero_point_factor", Elem::I32, pad(c2)));
    let sums = b.scratch(Elem::I32, SUM_ROWS);
    let (bv, accv) = (Ty::vec(Elem::I8, 4 * lanes as u32), Ty::vec(Elem::I32, lanes as u32));
    // A task per run of 256 rows and group of column blocks (up to 16 groups).
    // Worth tasks by the whole product's work: a run-time row count (an image's pixels)
    // counts as many rows (a 3x3 layer of 64 channels over 56 x 56 pixels is 115M
    // products, though its K x N alone is small).
    let rows_known = m.as_const().map(|v| v.max(0) as u64);
    let parallel = t.pool && rows_known.map_or(u64::MAX, |r| r.saturating_mul(k * nn)) >= crate::PAR_MIN_WORK;
    let per = if parallel { blocks.div_ceil(16).max(1) } else { blocks };
    let groups = blocks.div_ceil(per);
    let kind = if parallel { LoopKind::Parallel } else { LoopKind::Serial };
    let last_block = (!nn.is_multiple_of(cb)).then_some(blocks - 1);
    let chunks = (&m + &c(SUM_ROWS - 1)).floor_div(&c(SUM_ROWS));
    b.for_(c(0), &chunks * &c(groups), kind, |b, tk| {
        let za = b.load(Ty { elem: Elem::I8, lanes: 1 }, 2, c(0), 1);
        let za = b.let_(Inst::Cast(CastOp::Zext, za, I32));
        let zav = b.let_(Inst::Splat(za, lanes as u32));
        let m = crate::hoist(b, &m);
        let (rc, grp) = (tk.floor_div(&c(groups)), tk.modulo(&c(groups)));
        {
            let r0 = &rc * &c(SUM_ROWS);
            let rows = (&m - &r0).min_with(&c(SUM_ROWS));
            // Each row's sum of A, 4 * lanes bytes at a time.
            b.for_(c(0), rows.clone(), LoopKind::Serial, |b, r| {
                let acc = iconst(b, I32, 0);
                let s = b.local(I32, acc);
                let wide = Ty::vec(Elem::I32, 4 * lanes as u32);
                let step = 4 * lanes;
                let row = &(&r0 + &r) * &c(k);
                b.for_(c(0), c(k / step), LoopKind::Serial, |b, j| {
                    let v = b.load(bv, 0, &row + &(&j * &c(step)), 1);
                    let w = b.let_(Inst::Cast(CastOp::Zext, v, wide));
                    let t = b.let_(Inst::Reduce(ReduceOp::Add, w));
                    let cur = b.let_(Inst::Get(s));
                    let next = b.bin(BinOp::Add, cur, t);
                    b.stmt(Stmt::Set(s, next));
                });
                for kk in k / step * step..k {
                    let v = b.load(Ty { elem: Elem::I8, lanes: 1 }, 0, &row + &c(kk), 1);
                    let w = b.let_(Inst::Cast(CastOp::Zext, v, I32));
                    let cur = b.let_(Inst::Get(s));
                    let next = b.bin(BinOp::Add, cur, w);
                    b.stmt(Stmt::Set(s, next));
                }
                let total = b.let_(Inst::Get(s));
                b.store(sums, r.clone(), total, 4);
            });
            let lo = &grp * &c(per);
            let hi = (&lo + &c(per)).min_with(&c(blocks));
            b.for_(lo, hi, LoopKind::Serial, |b, blk| {
                let is_last = last_block.map(|l| {
                    let bv = b.index(blk.clone());
                    let lv = b.i64(l as i64);
                    b.cmp(CmpOp::Eq, bv, lv)
                });
                let tile = |b: &mut KernelBuilder, first: Expr, cnt: u64| {
                    let accs: Vec<u32> = (0..nf * cnt)
                        .map(|_| {
                            let z = iconst(b, accv, 0);
                            b.local(accv, z)
                        })
                        .collect();
                    let wbase = &blk * &c(k4 * cb * PACK);
                    // One step: the four codes at word `q` of each row, times the weight
                    // vectors at `wq` of array `arr`.
                    let step = |b: &mut KernelBuilder, q: &Expr, arr: u32, wq: &Expr| {
                        let ws: Vec<ValId> = (0..nf).map(|f| b.load(bv, arr, wq + &c(f * lanes * PACK), 32)).collect();
                        for r in 0..cnt {
                            let word = b.load(I32, 0, &(&(&(&r0 + &first) + &c(r)) * &c(k4)) + q, 4);
                            let sp = b.let_(Inst::Splat(word, lanes as u32));
                            let x = b.let_(Inst::Cast(CastOp::Bitcast, sp, bv));
                            for f in 0..nf {
                                let slot = accs[(r * nf + f) as usize];
                                let cur = b.let_(Inst::Get(slot));
                                let next = dot_add(b, step_path, cur, x, ws[f as usize], lanes as u32);
                                b.stmt(Stmt::Set(slot, next));
                            }
                        }
                    };
                    b.for_(c(0), c(k4), LoopKind::Serial, |b, q| {
                        step(b, &q, pb, &(&wbase + &(&q * &c(cb * PACK))));
                    });
                    // The block's fix-up steps: entries `from..to` of the list.
                    if let Some((fq, fw, fo)) = fix {
                        let from = b.load(Ty::scalar(Elem::I64), fo, blk.clone(), 8);
                        let to = b.load(Ty::scalar(Elem::I64), fo, &blk + &c(1), 8);
                        b.for_(Expr::val(from), Expr::val(to), LoopKind::Serial, |b, e| {
                            let q = Expr::val(b.load(Ty::scalar(Elem::I64), fq, e.clone(), 8));
                            step(b, &q, fw, &(&e * &c(cb * PACK)));
                        });
                    }
                    let col0 = &blk * &c(cb);
                    for r in 0..cnt {
                        let rs = b.load(I32, sums, &first + &c(r), 4);
                        let rsv = b.let_(Inst::Splat(rs, lanes as u32));
                        let yrow = &(&(&r0 + &first) + &c(r)) * &c(nn);
                        for f in 0..nf {
                            let col = &col0 + &c(f * lanes);
                            let f1 = b.load(accv, p1, col.clone(), 4);
                            let f2 = b.load(accv, p2, col.clone(), 4);
                            let acc = b.let_(Inst::Get(accs[(r * nf + f) as usize]));
                            let t1 = b.bin(BinOp::Mul, f1, rsv);
                            let t2 = b.bin(BinOp::Mul, f2, zav);
                            let y = b.bin(BinOp::Add, acc, t1);
                            let y = b.bin(BinOp::Add, y, t2);
                            let at = &yrow + &col;
                            let full = |b: &mut KernelBuilder| b.store(out, at.clone(), y, 4);
                            let valid_last = nn - (blocks - 1) * cb;
                            let here = valid_last.saturating_sub(f * lanes).min(lanes);
                            match is_last {
                                Some(l) if here < lanes => b.if_(
                                    l,
                                    |b| {
                                        for lane in 0..here {
                                            let v = b.let_(Inst::Extract(y, lane as u32));
                                            b.store(out, &at + &c(lane), v, 4);
                                        }
                                    },
                                    full,
                                ),
                                _ => full(b),
                            }
                        }
                    }
                };
                crate::gemm::row_blocks_expr(b, &rows, mr, &tile);
            });
        }
    });
    Ok(b.finish())
}

/// Weights `[k, n]` (i8 as bytes; `k` a multiple of 4) split for AVX2's `vpmaddubsw`,
/// which sums the products of byte pairs `(2i, 2i + 1)` of a four-code word into a
/// saturating i16: a pair whose positive weights, or whose negative ones, add up past 128
/// could pass 2^15 - 1 with u8 codes (255 x 128 = 32,640 cannot). Such a pair's weights
/// become their halves `w >> 1` in the main weights, the rest `w - (w >> 1)` (both
/// within +-64) in the fix weights; every other pair stays whole (its fix weights 0).
/// Main plus fix is the weights exactly. Real layers have few such pairs (ResNet-50's
/// QDQ weights: 2%), so the fix-up steps (`fix_steps`) are a short list.
pub fn split_pairs(w: &[u8], k: u64, n: u64) -> (Vec<u8>, Vec<u8>) {
    let (mut main, mut fix) = (w.to_vec(), vec![0u8; w.len()]);
    for kk in (0..k as usize).step_by(2) {
        for j in 0..n as usize {
            let at = [kk * n as usize + j, (kk + 1) * n as usize + j];
            let ws = at.map(|i| w[i] as i8 as i32);
            let pos: i32 = ws.iter().map(|&v| v.max(0)).sum();
            let neg: i32 = ws.iter().map(|&v| (-v).max(0)).sum();
            if pos > 128 || neg > 128 {
                for (i, v) in at.into_iter().zip(ws) {
                    main[i] = (v >> 1) as i8 as u8;
                    fix[i] = (v - (v >> 1)) as i8 as u8;
                }
            }
        }
    }
    (main, fix)
}

/// The fix-up steps of `int_matmul`'s split weights (`split_pairs`), by column block of
/// `cb` columns: each four-code step `q` of a block with a nonzero fix weight, its
/// weights packed as a main step's (`[cb][4]`, columns past `n` zero), and each block's
/// first entry (`blocks + 1` offsets).
fn fix_steps(fix: &[u8], k: u64, n: u64, cb: u64) -> (Vec<i64>, Vec<u8>, Vec<i64>) {
    let (blocks, k4) = (n.div_ceil(cb), k / PACK);
    let (mut steps, mut weights, mut offsets) = (Vec::new(), Vec::new(), vec![0i64]);
    for blk in 0..blocks {
        for q in 0..k4 {
            let cols = blk * cb..((blk + 1) * cb).min(n);
            let at = |kk: u64, j: u64| fix[(kk * n + j) as usize];
            if !cols.clone().any(|j| (0..PACK).any(|i| at(q * PACK + i, j) != 0)) {
                continue;
            }
            steps.push(q as i64);
            let mut v = vec![0u8; (cb * PACK) as usize];
            for j in cols {
                for i in 0..PACK {
                    v[((j - blk * cb) * PACK + i) as usize] = at(q * PACK + i, j);
                }
            }
            weights.extend(v);
        }
        offsets.push(steps.len() as i64);
    }
    (steps, weights, offsets)
}

/// The `patches` kernel (im2col over u8 codes, [`dlc_ir::ops::Patches`]): a task per
/// output row `(n, oy)` (run-time counts included); for each output pixel, each tap's
/// offset in a channel plane and whether it lies in the image are computed once, then
/// copied for every channel (a tap in the padding takes the padding value).
pub fn patches(name: &str, n: &Node, op: &dlc_ir::ops::Patches) -> Result<Kernel, LowerError> {
    let x = &n.inputs[0];
    let g = op.window(n.name, x).map_err(|e| n.error(e.to_string()))?;
    let ch = op.channels(x).ok_or_else(|| n.error("the channel dim must be known"))?;
    if op.channels_last {
        return Ok(patches_nhwc(name, n, &g, ch, op.row_pad.max(0) as u64));
    }
    let [kh, kw] = g.kernel;
    let taps = ch * kh * kw;
    let row_len = taps + op.row_pad.max(0) as u64;
    let rows = &x.shape.0[0].expr() * &g.output[0];
    let byte = Ty { elem: Elem::I8, lanes: 1 };
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    crate::par_expr(&mut b, &rows, &Expr::c((taps * 8) as i64), |b, t| {
        let [h, w, oh, ow] = hoisted_extents(b, &g);
        let pad = b.load(byte, 1, c(0), 1);
        let (img, oy) = (t.floor_div(&oh), t.modulo(&oh));
        let plane = &h * &w;
        let base = &(&img * &c(ch)) * &plane;
        b.for_(c(0), ow.clone(), LoopKind::Serial, |b, ox| {
            // Each tap's offset in a plane (0 where it is outside) and whether it is inside.
            let at = window_taps(b, &g, [&oy, &ox], [&h, &w], &c(0), 1);
            let row = &(&(&t * &ow) + &ox) * &c(row_len);
            for j in taps..row_len {
                b.store(2, &row + &c(j), pad, 1);
            }
            b.for_(c(0), c(ch), LoopKind::Serial, |b, ci| {
                let src = &base + &(&ci * &plane);
                let dst = &row + &(&ci * &c(kh * kw));
                for (j, (inside, off)) in at.iter().enumerate() {
                    let v = b.load(byte, 0, &src + off, 1);
                    let v = b.select(*inside, v, pad);
                    b.store(2, &dst + &c(j as u64), v, 1);
                }
            });
        });
    });
    Ok(b.finish())
}

/// For each tap `(ky, kx)` of the window at output pixel `[oy, ox]` of an image `[h, w]`:
/// whether it lies inside the image, and the element offset `(first + iy * w + ix) *
/// scale` of its pixel (0 where it is outside, so a load stays in bounds).
fn window_taps(
    b: &mut KernelBuilder,
    g: &dlc_ir::ops::Window,
    [oy, ox]: [&Expr; 2],
    [h, w]: [&Expr; 2],
    first: &Expr,
    scale: u64,
) -> Vec<(ValId, Expr)> {
    let mut at = Vec::with_capacity((g.kernel[0] * g.kernel[1]) as usize);
    for ky in 0..g.kernel[0] {
        let iy = &(&(oy * &c(g.strides[0])) + &c(ky * g.dilations[0])) - &c(g.pad_begin[0]);
        let row_in = crate::in_bounds_expr(b, iy.clone(), h);
        for kx in 0..g.kernel[1] {
            let ix = &(&(ox * &c(g.strides[1])) + &c(kx * g.dilations[1])) - &c(g.pad_begin[1]);
            let col_in = crate::in_bounds_expr(b, ix.clone(), w);
            let inside = b.bin(BinOp::And, row_in, col_in);
            let off = b.index(&(&(first + &(&iy * w)) + &ix) * &c(scale));
            let zero = b.i64(0);
            at.push((inside, Expr::val(b.select(inside, off, zero))));
        }
    }
    at
}

/// A window's input and output extents `[H, W, OH, OW]`, each computed once.
fn hoisted_extents(b: &mut KernelBuilder, g: &dlc_ir::ops::Window) -> [Expr; 4] {
    [&g.input[0], &g.input[1], &g.output[0], &g.output[1]].map(|e| crate::hoist(b, e))
}

/// [`patches`] of an NHWC input, taps in the order `(ky, kx, c)`: each tap of a window
/// is one run of `ch` bytes of the input, copied in vectors of 32, 16, 8, 4, 2 and 1
/// bytes (the padding value where the tap is outside the image); `row_pad` bytes of the
/// padding value end each row.
fn patches_nhwc(name: &str, n: &Node, g: &dlc_ir::ops::Window, ch: u64, row_pad: u64) -> Kernel {
    let x = &n.inputs[0];
    let [kh, kw] = g.kernel;
    let taps = ch * kh * kw;
    let row_len = taps + row_pad;
    let rows = &x.shape.0[0].expr() * &g.output[0];
    let mut chunks = Vec::new();
    let mut at = 0;
    for lanes in [32, 16, 8, 4, 2, 1] {
        while ch - at >= lanes {
            chunks.push((at, lanes as u32));
            at += lanes;
        }
    }
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Write]);
    crate::par_expr(&mut b, &rows, &Expr::c(taps as i64), |b, t| {
        let [h, w, oh, ow] = hoisted_extents(b, g);
        let pad = b.load(Ty { elem: Elem::I8, lanes: 1 }, 1, c(0), 1);
        let pads: Vec<ValId> =
            chunks.iter().map(|&(_, l)| if l == 1 { pad } else { b.let_(Inst::Splat(pad, l)) }).collect();
        let (img, oy) = (t.floor_div(&oh), t.modulo(&oh));
        let first = &(&img * &h) * &w;
        b.for_(c(0), ow.clone(), LoopKind::Serial, |b, ox| {
            let row = &(&(&t * &ow) + &ox) * &c(row_len);
            for j in taps..row_len {
                b.store(2, &row + &c(j), pad, 1);
            }
            for (j, (inside, src)) in window_taps(b, g, [&oy, &ox], [&h, &w], &first, ch).into_iter().enumerate() {
                let dst = &row + &c(j as u64 * ch);
                for (&(o, l), &p) in chunks.iter().zip(&pads) {
                    let v = b.load(Ty { elem: Elem::I8, lanes: l }, 0, &src + &c(o), 1);
                    let keep = if l == 1 { inside } else { b.let_(Inst::Splat(inside, l)) };
                    let v = b.select(keep, v, p);
                    b.store(2, &dst + &c(o), v, 1);
                }
            }
        });
    });
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every i8 weight value beside every other: main plus fix is the weight, no pair of
    /// either can saturate `vpmaddubsw` with u8 codes, pairs that could not stay whole,
    /// and the fix-up list holds exactly the steps with a nonzero fix weight.
    #[test]
    fn split_weights_add_up_and_no_pair_saturates() {
        let vals: Vec<i32> = (-128..=127).collect();
        let (k, n) = (4u64, (vals.len() * vals.len() / 2) as u64);
        // Column j: the pair (a, b) in rows 0 and 1, and in rows 2 and 3 the pair (3, -3).
        let mut w = vec![0u8; (k * n) as usize];
        for (j, (a, b)) in vals.iter().flat_map(|&a| vals.iter().map(move |&b| (a, b))).step_by(2).enumerate() {
            for (row, v) in [(0, a), (1, b), (2, 3), (3, -3)] {
                w[row * n as usize + j] = v as i8 as u8;
            }
        }
        let (main, fix) = split_pairs(&w, k, n);
        let worst = |p: [i32; 2]| {
            let pos: i32 = p.iter().map(|v| 255 * v.max(&0)).sum();
            let neg: i32 = p.iter().map(|v| 255 * (-v).max(0)).sum();
            pos.max(neg)
        };
        let at = |v: &[u8], r: u64, j: u64| v[(r * n + j) as usize] as i8 as i32;
        let mut split = 0;
        for j in 0..n {
            for r in 0..k {
                assert_eq!(at(&main, r, j) + at(&fix, r, j), at(&w, r, j), "row {r} column {j}");
            }
            for r in [0, 2] {
                for v in [&main, &fix] {
                    assert!(worst([at(v, r, j), at(v, r + 1, j)]) <= i16::MAX as i32, "row {r} column {j}");
                }
                let whole = worst([at(&w, r, j), at(&w, r + 1, j)]) <= i16::MAX as i32;
                assert_eq!(at(&fix, r, j) == 0 && at(&fix, r + 1, j) == 0, whole, "row {r} column {j}");
                split += usize::from(!whole);
            }
        }
        assert!(split > 0 && split < n as usize, "{split} of {n} pairs split");
        let cb = 16;
        let (steps, weights, offsets) = fix_steps(&fix, k, n, cb);
        assert_eq!(offsets.len() as u64, n.div_ceil(cb) + 1);
        for blk in 0..n.div_ceil(cb) {
            let any = (blk * cb..((blk + 1) * cb).min(n)).any(|j| (0..k).any(|r| at(&fix, r, j) != 0));
            let (from, to) = (offsets[blk as usize] as usize, offsets[blk as usize + 1] as usize);
            assert_eq!(to - from, usize::from(any), "block {blk}");
            for e in from..to {
                assert_eq!(steps[e], 0);
                for j in blk * cb..((blk + 1) * cb).min(n) {
                    for r in 0..k {
                        let got = weights[e * (cb * PACK) as usize + ((j - blk * cb) * PACK + r) as usize];
                        assert_eq!(got as i8 as i32, at(&fix, r, j));
                    }
                }
            }
        }
    }

    #[test]
    fn tiles_fit_sixteen_registers() {
        for m in [8, 20, 64, 128, 512] {
            for ow in [1, 3, 7, 14, 56, 112] {
                for (lanes, regs) in [(8, 16), (16, 32)] {
                    let (nf, np) = qtile(m, ow, lanes, regs);
                    assert!(nf * np + nf + 3 <= regs && np <= ow, "m={m} ow={ow}: {nf}x{np}");
                }
            }
        }
    }

    #[test]
    fn packing_puts_each_weight_at_its_lane_and_byte() {
        let [m, c, kh, kw] = [10u64, 6, 2, 3];
        let w: Vec<u8> = (0..m * c * kh * kw).map(|i| ((i % 120) as i8 - 60) as u8).collect();
        let cb = 8;
        let p = pack(&w, [m, c, kh, kw], cb);
        assert_eq!(p.len() as u64, 2 * kh * 2 * kw * cb * 4);
        for co in 0..m {
            for ci in 0..c {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let dst = ((((co / cb * kh + ky) * 2 + ci / 4) * kw + kx) * cb + co % cb) * 4 + ci % 4;
                        assert_eq!(p[dst as usize], w[(((co * c + ci) * kh + ky) * kw + kx) as usize]);
                    }
                }
            }
        }
        // Channels 6 and 7 of each word, and the lanes past channel 10, are zero.
        let nonzero = p.iter().filter(|&&v| v != 0).count() as u64;
        assert!(nonzero <= m * c * kh * kw);
    }
}
