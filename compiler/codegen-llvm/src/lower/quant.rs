//! int8 kernels: [`QuantPack`] (f32 NCHW to the packed u8 layout) and [`QConv`] (integer
//! convolution with an f32 epilogue).
//!
//! `QConv` follows the channel-blocked f32 convolution (`convblk.rs`): vectors of 8 i32
//! accumulators run along output channels, weights are packed at compile time into
//! blocks of `CB = NF * 8` channels, `[block][ky][c/4][kx][CB][4]` (i8), and each input
//! pixel's 32-bit word (four input channels, u8) is broadcast to all lanes. One step is a
//! four-term dot product per lane: with VNNI one `vpdpbusd` (32 multiply-adds into the
//! i32 accumulators); on x86 with AVX2, `vpmaddubsw` (u8 x i8 pairs to saturating i16)
//! then `vpmaddwd` by ones (pairs of i16 to i32): 32 multiply-adds in two instructions
//! where f32 FMA does 8 in one. The pairs cannot saturate when every weight
//! is within +-63 (2 x 255 x 63 < 2^15), which the quantization pass guarantees; a layer
//! with larger weights, and every other target, use exact i32 arithmetic instead. The
//! input comes padded (the padding holds the zero point), so no tap needs a bounds check.
use super::convblk::{block_task, store_lanes, Epilogue};
use super::gemm::{const_bytes_global, const_f32_global, load_vec, par};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use dlc_ir::ops::{QConv, QuantPack, PACK};
use dlc_ir::TensorData;
use inkwell::types::VectorType;
use inkwell::values::{FloatValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// i32 lanes per accumulator vector.
const LANES: u64 = 8;

/// `llvm.<name>` overloaded on `overload`, on vector arguments.
fn vcall<'ctx>(
    kb: &Kb<'_, 'ctx>,
    name: &str,
    overload: &[VectorType<'ctx>],
    args: &[VectorValue<'ctx>],
) -> R<VectorValue<'ctx>> {
    let tys: Vec<_> = overload.iter().map(|t| (*t).into()).collect();
    let args: Vec<_> = args.iter().map(|v| (*v).into()).collect();
    Ok(kb.call_intrinsic(name, &tys, &args)?.into_vector_value())
}

/// A `quant_pack`'s scale and zero point as values: constants, or with `dynamic` the
/// ones the kernel stored in its second result (read through the `kb` at hand: a
/// parallel task is its own function).
fn qparams<'ctx>(kb: &Kb<'_, 'ctx>, op: &QuantPack) -> R<(FloatValue<'ctx>, FloatValue<'ctx>)> {
    if op.dynamic {
        return Ok((kb.load_f32(kb.param(2), kb.c(0))?, kb.load_f32(kb.param(2), kb.c(1))?));
    }
    Ok((kb.cf(op.scale), kb.cf(op.zero_point as f32)))
}

/// ONNX QuantizeLinear of a vector: `clamp(roundeven(v / scale) + zp, 0, qmax)` as i32.
fn quantize<'ctx>(
    kb: &Kb<'_, 'ctx>,
    v: VectorValue<'ctx>,
    (scale, zp): (FloatValue<'ctx>, FloatValue<'ctx>),
    qmax: i64,
) -> R<VectorValue<'ctx>> {
    let (ft, lanes) = (v.get_type(), v.get_type().get_size());
    let v = kb.b.build_float_div(v, kb.splat(scale.into(), lanes)?, "")?;
    let v = vcall(kb, "llvm.roundeven", &[ft], &[v])?;
    let v = kb.b.build_float_add(v, kb.splat(zp.into(), lanes)?, "")?;
    let v = vcall(kb, "llvm.maxnum", &[ft], &[v, ft.const_zero()])?;
    let v = vcall(kb, "llvm.minnum", &[ft], &[v, kb.splat(kb.cf(qmax as f32).into(), lanes)?])?;
    Ok(kb.b.build_float_to_signed_int(v, kb.cx.i32_type().vec_type(lanes), "")?)
}

/// A dynamic `quant_pack`'s first step, on the calling thread: the input's range (NaN
/// ignored), then `dlc_ir::ops::range_quantization` of it, stored as `[scale,
/// zero_point]` in the second result.
fn dynamic_range<'ctx>(kb: &Kb<'_, 'ctx>, numel: u64, qmax: i64) -> R<()> {
    let ft = kb.f32t.vec_type(LANES as u32);
    let (lo, hi) = (kb.alloca(ft.into())?, kb.alloca(ft.into())?);
    kb.b.build_store(lo, kb.splat(kb.cf(f32::INFINITY).into(), LANES as u32)?)?;
    kb.b.build_store(hi, kb.splat(kb.cf(f32::NEG_INFINITY).into(), LANES as u32)?)?;
    let step = |kb: &Kb<'_, 'ctx>, v: VectorValue<'ctx>| -> R<()> {
        let l = kb.b.build_load(ft, lo, "")?.into_vector_value();
        kb.b.build_store(lo, vcall(kb, "llvm.minnum", &[ft], &[l, v])?)?;
        let h = kb.b.build_load(ft, hi, "")?.into_vector_value();
        kb.b.build_store(hi, vcall(kb, "llvm.maxnum", &[ft], &[h, v])?)?;
        Ok(())
    };
    kb.for_n(numel / LANES, |kb, i| {
        let p = kb.gep(kb.f32t.into(), kb.param(0), kb.mul(i, kb.c(LANES))?)?;
        step(kb, kb.load_aligned(ft.into(), p, 4)?.into_vector_value())
    })?;
    kb.for_range(kb.c(numel / LANES * LANES), kb.c(numel), |kb, i| {
        step(kb, kb.splat(kb.load_f32(kb.param(0), i)?.into(), LANES as u32)?)
    })?;
    let reduce = |name: &str, slot| -> R<FloatValue<'ctx>> {
        let v = kb.b.build_load(ft, slot, "")?.into_vector_value();
        Ok(kb.call_intrinsic(name, &[ft.into()], &[v.into()])?.into_float_value())
    };
    let zero = kb.cf(0.0);
    let lo = kb.call_math_intrinsic("llvm.minnum", reduce("llvm.vector.reduce.fmin", lo)?, zero)?;
    let hi = kb.call_math_intrinsic("llvm.maxnum", reduce("llvm.vector.reduce.fmax", hi)?, zero)?;
    // As range_quantization: an empty or non-finite range gives scale 1.
    let finite = |v: FloatValue<'ctx>| {
        let a = kb.call_intrinsic("llvm.fabs", &[kb.f32t.into()], &[v.into()])?.into_float_value();
        Ok::<_, crate::CodegenError>(kb.b.build_float_compare(
            inkwell::FloatPredicate::OLT,
            a,
            kb.cf(f32::INFINITY),
            "",
        )?)
    };
    let width = kb.fsub(hi, lo)?;
    let wide = kb.b.build_float_compare(inkwell::FloatPredicate::OGT, width, kb.cf(f32::MIN_POSITIVE), "")?;
    let ok = kb.and(kb.and(finite(lo)?, finite(hi)?)?, wide)?;
    let scale = kb.select_f(ok, kb.fdiv(width, kb.cf(qmax as f32))?, kb.cf(1.0))?;
    let zp = kb.call_intrinsic(
        "llvm.roundeven",
        &[kb.f32t.into()],
        &[kb.fdiv(kb.b.build_float_neg(lo, "")?, scale)?.into()],
    )?;
    let zp = kb.call_math_intrinsic("llvm.maxnum", zp.into_float_value(), zero)?;
    let zp = kb.call_math_intrinsic("llvm.minnum", zp, kb.cf(qmax as f32))?;
    let neg = kb.b.build_float_compare(inkwell::FloatPredicate::OLT, lo, zero, "")?;
    let zp = kb.select_f(ok, zp, kb.select_f(neg, kb.cf(qmax as f32), zero)?)?;
    kb.store_f32(kb.param(2), kb.c(0), scale)?;
    kb.store_f32(kb.param(2), kb.c(1), zp)
}

/// The quantize-and-pack kernel: one task per output row `(n, c4, y)`; pixels 8 at a
/// time (then one at a time), four channel rows quantized and merged into 32-bit words.
pub(crate) fn quant_pack<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &QuantPack) -> R<()> {
    if op.dynamic {
        dynamic_range(kb, n.in_dims(0).iter().product(), op.qmax)?;
    }
    if op.rows {
        return quant_pack_rows(kb, n, op);
    }
    let x = n.in_dims(0);
    let (batch, c, h, w) = (x[0], x[1], x[2], x[3]);
    let [pt, pl, _, _] = op.padding();
    let y = n.out_dims(0);
    let (c4, hp, wp) = (y[1], y[2], y[3]);
    let i32t = kb.cx.i32_type();
    let store_words = |kb: &Kb<'_, 'ctx>, idx: IntValue<'ctx>, v: VectorValue<'ctx>| -> R<()> {
        kb.store_aligned(kb.gep(i32t.into(), kb.param(1), idx)?, v, 4)
    };
    let zp_int =
        |kb: &Kb<'_, 'ctx>| -> R<IntValue<'ctx>> { Ok(kb.b.build_float_to_signed_int(qparams(kb, op)?.1, i32t, "")?) };
    let fill = |kb: &Kb<'_, 'ctx>, start: IntValue<'ctx>, count: u64| -> R<()> {
        let word = kb.b.build_int_mul(zp_int(kb)?, i32t.const_int(0x0101_0101, false), "")?;
        let z1 = kb.splat(word.into(), 1)?;
        kb.for_n(count, |kb, i| store_words(kb, kb.add(start, i)?, z1))
    };
    // `lanes` pixels from column `x0` of row `yi` of the four channels of word `c4i`.
    let words = |kb: &Kb<'_, 'ctx>,
                 img: IntValue<'ctx>,
                 c4i: IntValue<'ctx>,
                 yi: IntValue<'ctx>,
                 x0: IntValue<'ctx>,
                 lanes: u32|
     -> R<VectorValue<'ctx>> {
        let ft = kb.f32t.vec_type(lanes);
        let it = i32t.vec_type(lanes);
        let qp = qparams(kb, op)?;
        let mut word = it.const_zero();
        for sub in 0..PACK {
            let ch = kb.add(kb.mul(c4i, kb.c(PACK))?, kb.c(sub))?;
            let q = |kb: &Kb<'_, 'ctx>| -> R<VectorValue<'ctx>> {
                let idx = kb.lin(&[(img, c * h * w), (ch, h * w), (yi, w), (x0, 1)], 0)?;
                let p = kb.gep(kb.f32t.into(), kb.param(0), idx)?;
                quantize(kb, kb.load_aligned(ft.into(), p, 4)?.into_vector_value(), qp, op.qmax)
            };
            let q = if c.is_multiple_of(PACK) {
                q(kb)?
            } else {
                // Channels past C hold the zero point.
                let slot = kb.alloca(it.into())?;
                kb.b.build_store(slot, kb.splat(zp_int(kb)?.into(), lanes)?)?;
                kb.if_then(kb.icmp(IntPredicate::ULT, ch, kb.c(c))?, |kb| {
                    kb.b.build_store(slot, q(kb)?)?;
                    Ok(())
                })?;
                kb.b.build_load(it, slot, "")?.into_vector_value()
            };
            let shifted = kb.b.build_left_shift(q, kb.splat(i32t.const_int(8 * sub, false).into(), lanes)?, "")?;
            word = kb.b.build_or(word, shifted, "")?;
        }
        Ok(word)
    };
    let flops = 8 * batch * c4 * PACK * h * w;
    par(kb, batch * c4 * hp, flops, |kb, t| {
        let img = kb.b.build_int_unsigned_div(t, kb.c(c4 * hp), "")?;
        let r = kb.b.build_int_unsigned_rem(t, kb.c(c4 * hp), "")?;
        let (c4i, yp) = (kb.b.build_int_unsigned_div(r, kb.c(hp), "")?, kb.b.build_int_unsigned_rem(r, kb.c(hp), "")?);
        let row = kb.mul(t, kb.c(wp))?;
        let yi = kb.b.build_int_sub(yp, kb.c(pt), "")?;
        kb.if_else(
            kb.in_bounds(yi, h)?,
            |kb| {
                fill(kb, row, pl)?;
                fill(kb, kb.add(row, kb.c(pl + w))?, wp - pl - w)?;
                let body = kb.add(row, kb.c(pl))?;
                kb.for_n(w / LANES, |kb, i| {
                    let x0 = kb.mul(i, kb.c(LANES))?;
                    let v = words(kb, img, c4i, yi, x0, LANES as u32)?;
                    store_words(kb, kb.add(body, x0)?, v)
                })?;
                kb.for_range(kb.c(w / LANES * LANES), kb.c(w), |kb, x0| {
                    let v = words(kb, img, c4i, yi, x0, 1)?;
                    store_words(kb, kb.add(body, x0)?, v)
                })
            },
            |kb| fill(kb, row, wp),
        )
    })
}

/// [`quant_pack`] of a matrix's rows: word `(k4, p)` holds row `p`'s values `4 k4..4 k4 + 4`
/// (contiguous in the input: one 4-lane load, quantized and narrowed to one 32-bit word).
fn quant_pack_rows<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &QuantPack) -> R<()> {
    let k = *n.in_dims(0).last().expect("rows have a last dim");
    let y = n.out_dims(0);
    let (k4, p) = (y[1], y[3]);
    let i32t = kb.cx.i32_type();
    let (ft, bt) = (kb.f32t.vec_type(4), kb.cx.i8_type().vec_type(4));
    par(kb, p, 8 * p * k4 * PACK, |kb, row| {
        kb.for_n(k4, |kb, w| {
            let ch0 = kb.mul(w, kb.c(PACK))?;
            let src = kb.add(kb.mul(row, kb.c(k))?, ch0)?;
            let v = if k.is_multiple_of(PACK) {
                kb.load_aligned(ft.into(), kb.gep(kb.f32t.into(), kb.param(0), src)?, 4)?.into_vector_value()
            } else {
                // The last word of a row may stop short: lanes past K read as 0.0, which
                // quantizes to the zero point.
                let mut v = ft.const_zero();
                for l in 0..PACK {
                    let inside = kb.in_bounds(kb.add(ch0, kb.c(l))?, k)?;
                    let at = kb.select_i(inside, kb.add(src, kb.c(l))?, src)?;
                    let x = kb.select_f(inside, kb.load_f32(kb.param(0), at)?, kb.cf(0.0))?;
                    v = kb.b.build_insert_element(v, x, i32t.const_int(l, false), "")?;
                }
                v
            };
            let v = quantize(kb, v, qparams(kb, op)?, op.qmax)?;
            let q = kb.b.build_int_truncate(v, bt, "")?;
            let word = kb.b.build_bit_cast(q, i32t, "")?;
            let dst = kb.add(kb.mul(w, kb.c(p))?, row)?;
            kb.store_aligned(kb.gep(i32t.into(), kb.param(1), dst)?, word, 4)
        })
    })
}

/// Whether `QConv` may take the `vpmaddubsw` path on this target for these weights.
fn pairs_cannot_saturate(n: &NodeInfo, w: &[u8]) -> bool {
    n.target.has_avx2() && w.iter().all(|&v| (-63..=63).contains(&(v as i8)))
}

/// The tile `(NF, NP)`: `NF` vectors of 8 channels by `NP` pixels of one row, at most 16
/// vector registers (accumulators, weights, one broadcast, the ones and a temporary).
/// The cost of a row of tiles over the channel blocks (the last block may be part
/// padding), one cycle per dot product of a vector plus two per tile step and a quarter
/// per load, over the useful work.
pub(crate) fn qtile(m: u64, ow: u64) -> (u64, u64) {
    let mut best = (f64::INFINITY, (1, 1));
    for nf in 1..=4u64 {
        for np in 1..=ow.min(12) {
            if nf * np + nf + 3 > 16 {
                continue;
            }
            let step = |cnt: u64| (nf * cnt) as f64 + 2.0 + (nf + cnt) as f64 * 0.25;
            let row = (ow / np) as f64 * step(np) + if !ow.is_multiple_of(np) { step(ow % np) } else { 0.0 };
            let cost = row * m.div_ceil(nf * LANES) as f64 / (m * ow) as f64;
            if cost < best.0 - 1e-9 {
                best = (cost, (nf, np));
            }
        }
    }
    best.1
}

/// Packs `[M, C, KH, KW]` i8 weights (as bytes) into `[ceil(M / cb)][KH][C4][KW][cb][4]`.
fn pack(w: &[u8], [m, c, kh, kw]: [u64; 4], cb: u64) -> Vec<u8> {
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

/// `QConv`: the constant operands (weights, mult, offset) are packed here; `input_max`
/// bounds the input's quantized values (its `quant_pack`'s `qmax`, else 255).
pub(crate) fn qconv<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    op: &QConv,
    consts: [&TensorData; 3],
    input_max: u64,
) -> R<()> {
    let (x, wd, y) = (n.in_dims(0), n.in_dims(1), n.out_dims(0));
    let (batch, c4, hp, wp) = (x[0], x[1], x[2], x[3]);
    let (m, c, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    // With `rows` the result is [P, M]: one output row of P pixels, channels contiguous.
    let (oh, ow) = if op.rows { (1, y[0]) } else { (y[2], y[3]) };
    let ([sy, sx], [dy, dx]) = op.steps();
    let w = consts[0].bytes();
    let (mult, offset) = match (consts[1].to_f32(), consts[2].to_f32()) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(n.unsupported("mult and offset must be f32 constants")),
    };
    // VNNI: `vpdpbusd` adds four u8 x i8 products per lane to the accumulator in one
    // instruction, without saturation (any i8 weights, any u8 input).
    let vnni = n.target.has_vnni();
    let fast = !vnni && pairs_cannot_saturate(n, w);
    // Two steps' pair sums fit 16 bits: 2 x 2 x 127 x 63 < 2^15.
    let paired = fast && input_max <= 127;
    // Channel words per step group: two when they pair up evenly, else the kernel
    // columns pair up.
    let words = if paired && c4 % 2 == 0 { 2 } else { 1 };
    let (nf, np) = qtile(m, ow);
    let cb = nf * LANES;
    let blocks = m.div_ceil(cb);
    tracing::debug!(node = n.name, nf, np, vnni, fast, paired, "int8 convolution tile");
    let pw = const_bytes_global(kb, "wpack", &pack(w, [m, c, kh, kw], cb));
    let pad = |v: &[f32]| -> Vec<f32> {
        let mut p = v.to_vec();
        p.resize((blocks * cb) as usize, 0.0);
        p
    };
    let (pm, po) = (const_f32_global(kb, "mult", &pad(&mult)), const_f32_global(kb, "offset", &pad(&offset)));
    // Dynamic: each channel's weight sum, for the run's zero-point term.
    let psum = op.dynamic.then(|| {
        let per = (c * kh * kw) as usize;
        let sums: Vec<f32> =
            w.chunks(per.max(1)).map(|ch| ch.iter().map(|&v| v as i8 as i32).sum::<i32>() as f32).collect();
        const_f32_global(kb, "wsum", &pad(&sums))
    });
    let has_res = n.inputs.len() == 5 && !op.dynamic;
    let out_param = n.inputs.len();
    let (i8t, i16t, i32t) = (kb.cx.i8_type(), kb.cx.i16_type(), kb.cx.i32_type());
    let (bv, accv, fv) = (i8t.vec_type(32), i32t.vec_type(LANES as u32), kb.f32t.vec_type(LANES as u32));
    let ones = {
        let one = i16t.const_int(1, false);
        VectorType::const_vector(&[one; 16])
    };
    // Four-term dot products of the broadcast input word with a weight vector, per lane.
    let dot4 = |kb: &Kb<'_, 'ctx>, xw: VectorValue<'ctx>, wv: VectorValue<'ctx>| -> R<VectorValue<'ctx>> {
        if fast {
            let t = vcall(kb, "llvm.x86.avx2.pmadd.ub.sw", &[], &[xw, wv])?;
            return vcall(kb, "llvm.x86.avx2.pmadd.wd", &[], &[t, ones]);
        }
        let wide = i32t.vec_type(32);
        let a = kb.b.build_int_z_extend(xw, wide, "")?;
        let b = kb.b.build_int_s_extend(wv, wide, "")?;
        let p = kb.b.build_int_mul(a, b, "")?;
        let mut sum: Option<VectorValue<'ctx>> = None;
        for j in 0..PACK {
            let mask: Vec<_> = (0..LANES).map(|l| i32t.const_int(l * PACK + j, false)).collect();
            let part = kb.b.build_shuffle_vector(p, wide.get_undef(), VectorType::const_vector(&mask), "")?;
            sum = Some(match sum {
                None => part,
                Some(s) => kb.b.build_int_add(s, part, "")?,
            });
        }
        Ok(sum.expect("four parts"))
    };
    let taps = c4 * kh * kw;
    let tile = |kb: &Kb<'_, 'ctx>,
                img: IntValue<'ctx>,
                oy: IntValue<'ctx>,
                blk: IntValue<'ctx>,
                last: Option<IntValue<'ctx>>,
                ox0: IntValue<'ctx>,
                cnt: u64|
     -> R<()> {
        let px = kb.param(0);
        let accs: Vec<PointerValue<'ctx>> = (0..nf * cnt).map(|_| kb.alloca(accv.into())).collect::<R<_>>()?;
        for a in &accs {
            kb.b.build_store(*a, accv.const_zero())?;
        }
        let wblk = kb.mul(blk, kb.c(taps * cb * PACK))?;
        let kxo: Vec<IntValue<'ctx>> = (0..kw).map(|kx| kb.opaque(kb.c(kx * dx))).collect::<R<_>>()?;
        kb.for_n(kh, |kb, ky| {
            let iy = kb.add(kb.mul(oy, kb.c(sy))?, kb.mul(ky, kb.c(dy))?)?;
            let wky = kb.add(wblk, kb.mul(ky, kb.c(c4 * kw * cb * PACK))?)?;
            kb.for_n(c4 / words, |kb, cj| {
                // Per channel word of this step: the word index of pixel (iy, ox0 * sx),
                // and where its weights start.
                let mut rows = Vec::new();
                let mut taps0 = Vec::new();
                for wi in 0..words {
                    let ci = kb.add(kb.mul(cj, kb.c(words))?, kb.c(wi))?;
                    rows.push(kb.lin(&[(img, c4 * hp * wp), (ci, hp * wp), (iy, wp), (ox0, sx)], 0)?);
                    taps0.push(kb.add(wky, kb.mul(ci, kb.c(kw * cb * PACK))?)?);
                }
                let steps: Vec<(usize, u64)> =
                    (0..kw).flat_map(|kx| (0..words as usize).map(move |wi| (wi, kx))).collect();
                for chunk in steps.chunks(if paired { 2 } else { 1 }) {
                    let ws: Vec<Vec<VectorValue<'ctx>>> = chunk
                        .iter()
                        .map(|&(wi, kx)| {
                            (0..nf)
                                .map(|f| {
                                    let off = kb.c((kx * cb + f * LANES) * PACK);
                                    let p = kb.gep(i8t.into(), pw, kb.add(taps0[wi], off)?)?;
                                    Ok(kb.load_aligned(bv.into(), p, 32)?.into_vector_value())
                                })
                                .collect::<R<Vec<_>>>()
                        })
                        .collect::<R<_>>()?;
                    for p in 0..cnt {
                        let xs: Vec<VectorValue<'ctx>> = chunk
                            .iter()
                            .map(|&(wi, kx)| {
                                let idx = kb.add(kb.add(rows[wi], kxo[kx as usize])?, kb.c(p * sx))?;
                                let word = kb.b.build_load(i32t, kb.gep(i32t.into(), px, idx)?, "")?;
                                Ok(kb.b.build_bit_cast(kb.splat(word, LANES as u32)?, bv, "")?.into_vector_value())
                            })
                            .collect::<R<_>>()?;
                        for f in 0..nf {
                            let slot = accs[(f * cnt + p) as usize];
                            let cur = kb.b.build_load(accv, slot, "")?.into_vector_value();
                            if vnni {
                                let args = [cur, xs[0], ws[0][f as usize]];
                                kb.b.build_store(slot, vcall(kb, "llvm.x86.avx512.vpdpbusd.256", &[], &args)?)?;
                                continue;
                            }
                            let d = if chunk.len() == 2 {
                                // Two steps' pair sums added in 16 bits, then widened once.
                                let a = vcall(kb, "llvm.x86.avx2.pmadd.ub.sw", &[], &[xs[0], ws[0][f as usize]])?;
                                let b = vcall(kb, "llvm.x86.avx2.pmadd.ub.sw", &[], &[xs[1], ws[1][f as usize]])?;
                                let t = kb.b.build_int_add(a, b, "")?;
                                vcall(kb, "llvm.x86.avx2.pmadd.wd", &[], &[t, ones])?
                            } else {
                                dot4(kb, xs[0], ws[0][f as usize])?
                            };
                            kb.b.build_store(slot, kb.b.build_int_add(cur, d, "")?)?;
                        }
                    }
                }
                Ok(())
            })
        })?;
        // Epilogue: lane l of vector f is channel blk*cb + f*8 + l.
        let co0 = kb.mul(blk, kb.c(cb))?;
        let valid_last = m - (blocks - 1) * cb;
        for f in 0..nf {
            let lanes_here = if f * LANES >= valid_last { 0 } else { (valid_last - f * LANES).min(LANES) };
            let chan = kb.add(co0, kb.c(f * LANES))?;
            let body = |kb: &Kb<'_, 'ctx>, lanes: u64| -> R<()> {
                let (mut mv, mut ov) = (load_vec(kb, fv, pm, chan)?, load_vec(kb, fv, po, chan)?);
                if let Some(psum) = psum {
                    // mult = scale * wscale, offset = bias - mult * zero_point * sum(w).
                    let (scale, zp) = (kb.load_f32(kb.param(4), kb.c(0))?, kb.load_f32(kb.param(4), kb.c(1))?);
                    mv = kb.b.build_float_mul(mv, kb.splat(scale.into(), LANES as u32)?, "")?;
                    let zs =
                        kb.b.build_float_mul(load_vec(kb, fv, psum, chan)?, kb.splat(zp.into(), LANES as u32)?, "")?;
                    ov = kb.b.build_float_sub(ov, kb.b.build_float_mul(mv, zs, "")?, "")?;
                }
                for p in 0..cnt {
                    let acc = kb.b.build_load(accv, accs[(f * cnt + p) as usize], "")?.into_vector_value();
                    let accf = kb.b.build_signed_int_to_float(acc, fv, "")?;
                    let v = super::vfma(kb, accf, mv, ov)?;
                    let ox = kb.add(ox0, kb.c(p))?;
                    let (y0, plane) = if op.rows {
                        (kb.add(kb.mul(ox, kb.c(m))?, chan)?, 1)
                    } else {
                        (kb.lin(&[(img, m * oh * ow), (chan, oh * ow), (oy, ow), (ox, 1)], 0)?, oh * ow)
                    };
                    let epi = Epilogue { bias: None, residual: has_res.then_some(4), act: op.act };
                    store_lanes(kb, v, epi, out_param, y0, plane, lanes)?;
                }
                Ok(())
            };
            match last {
                Some(is_last) if lanes_here < LANES => {
                    kb.if_else(is_last, |kb| body(kb, lanes_here), |kb| body(kb, LANES))?
                }
                _ => body(kb, LANES)?,
            }
        }
        Ok(())
    };
    let flops = 2 * batch * m * c * kh * kw * oh * ow;
    let weights_outer = m * taps * PACK > 256 * 1024;
    par(kb, batch * oh * blocks, flops / 2, |kb, t| {
        let (img, oy, blk) = block_task(kb, t, oh, blocks, weights_outer)?;
        let last = (m % cb != 0).then(|| kb.icmp(IntPredicate::EQ, blk, kb.c(blocks - 1))).transpose()?;
        if ow / np > 0 {
            kb.for_n(ow / np, |kb, i| tile(kb, img, oy, blk, last, kb.mul(i, kb.c(np))?, np))?;
        }
        if !ow.is_multiple_of(np) {
            tile(kb, img, oy, blk, last, kb.c(ow / np * np), ow % np)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_sixteen_registers() {
        for m in [8, 20, 64, 128, 512] {
            for ow in [1, 3, 7, 14, 56, 112] {
                let (nf, np) = qtile(m, ow);
                assert!(nf * np + nf + 3 <= 16 && np <= ow, "m={m} ow={ow}: {nf}x{np}");
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
