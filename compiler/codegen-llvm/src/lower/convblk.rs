//! Direct convolution with vectors along output channels, for convolutions whose
//! weights are constants (every CNN layer after BatchNorm folding).
//!
//! The weights are packed at compile time into blocks of `CB = NF * W` output channels,
//! `[block][c][ky][kx][CB]` (zero-padded past the last channel), so one tap of one input
//! channel is `NF` contiguous vector loads. A tile is `NP` output pixels of one row by
//! one block: for each input channel and tap, each pixel's input value is broadcast once
//! and multiplied into the block's `NF` weight vectors, `NF x NP` accumulators in
//! registers. Unlike vectors along pixels, no lanes are wasted on rows that are not a
//! multiple of the vector width (the 28-, 14- and 7-pixel rows of late CNN stages), a
//! stride or dilation only changes which scalar is broadcast, and each broadcast feeds
//! `NF` FMAs. Tiles that reach into the left or right padding are unrolled with the
//! out-of-image taps left out at compile time; the others run in a loop. The output is
//! stored in NCHW, lane by lane, after the epilogue (bias, residual, activation) in
//! registers; the stores are a few per thousand FMAs.
use super::gemm::{const_f32_global, load_vec, par, pixel_epilogue, splat, vector_width, vfma};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use crate::TargetSpec;
use dlc_ir::ops::{Conv, PoolGeometry};
use dlc_ir::{DType, Graph, NodeId, Op, TensorData};
use inkwell::values::{IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

/// The constant weights of a convolution this kernel takes: one group, f32, 2-D; a plain
/// 1x1 only where the cost model prefers it to the pixel-vector GEMM of `conv1x1`
/// (small images, whose pixel count leaves much of that kernel's last panel empty).
pub(crate) fn applies<'g>(g: &'g Graph, id: NodeId, target: &TargetSpec) -> Option<&'g TensorData> {
    let Op::Conv(op) = &g.node(id).op else { return None };
    let ops = g.operands(id);
    let w = match &g.node(ops.get(1)?.node).op {
        Op::Const(c) => &c.value,
        _ => return None,
    };
    let types = ops.iter().map(|v| g.value_type(*v)).chain(&g.node(id).outputs);
    let f32_fixed = types.into_iter().all(|t| t.dtype == DType::F32 && t.shape.is_fixed());
    let wd = w.ty().shape.as_fixed()?;
    if op.group != 1 || wd.len() != 4 || !f32_fixed {
        return None;
    }
    if pointwise(op, &wd) {
        let y = g.node(id).outputs[0].shape.as_fixed()?;
        let (m, p, vw) = (wd[0], y[2] * y[3], vector_width(target) as u64);
        let blocked = tile_shape(vw, m, pointwise_rows(p).1, wd[1]).0;
        return (blocked < super::gemm::conv1x1_cost(vw, m, p, wd[1])).then_some(w);
    }
    Some(w)
}

/// A plain 1x1 convolution: 1x1 kernel, stride and dilation 1, no padding.
pub(crate) fn pointwise(op: &Conv, wd: &[u64]) -> bool {
    wd.get(2..) == Some(&[1, 1][..])
        && op.strides.iter().all(|&s| s == 1)
        && op.dilations.iter().all(|&d| d == 1)
        && op.pads.iter().all(|&p| p == 0)
        && matches!(op.auto_pad, dlc_ir::ops::AutoPad::NotSet | dlc_ir::ops::AutoPad::Valid)
}

/// A 1x1 convolution's `p` pixels seen as `rows x cols` (rows are where tasks split; the
/// pixels of a row are contiguous and need no padding checks): the fewest rows that
/// keep a row at most 256 pixels.
fn pointwise_rows(p: u64) -> (u64, u64) {
    let rows = (1..=p).find(|&d| p.is_multiple_of(d) && p / d <= 256).unwrap_or(p);
    (rows, p / rows)
}

/// The tile shape `(NF, NP)` for a layer: `NF` filter vectors (`NF * W` output channels)
/// by `NP` pixels, chosen by a small cost model over the shapes whose `NF * NP`
/// accumulators, `NF` weight vectors and one broadcast fit the vector registers (16 with
/// AVX2, 32 with AVX-512 and NEON). Each tile costs [`tile_cycles`] per input channel
/// and tap; the cost of a row's tiles (the last one may be narrower) over its channel
/// blocks (the last one may be partly padding), divided by the useful work, plus the
/// lane-by-lane stores, picks the shape. Returns the cost (cycles per output element and input channel) and the shape.
pub(crate) fn tile_shape(w: u64, m: u64, ow: u64, taps: u64) -> (f64, (u64, u64)) {
    let regs = if w == 8 { 16 } else { 32 };
    let mut best = (f64::INFINITY, (1, 1));
    for nf in 1..=4u64 {
        for np in 1..=ow.min(12) {
            if nf * np + nf + 1 > regs {
                continue;
            }
            let from_l2 = if nf * w * 4 * taps > 16 * 1024 { nf } else { 0 };
            let tile = |cnt: u64| tile_cycles(nf * cnt, nf + cnt, from_l2);
            let row = (ow / np) as f64 * tile(np) + if !ow.is_multiple_of(np) { tile(ow % np) } else { 0.0 };
            let blocks = m.div_ceil(nf * w) as f64;
            // Plus the stores: lane by lane (the lanes run along channels, NCHW wants
            // pixels contiguous), about a cycle per element, spread over the taps.
            let cost = row * blocks / (m * ow) as f64 + 1.0 / taps as f64;
            // Ties go to fewer pixels per tile (measured: the wider tiles of a tie
            // spill more often around the border tiles).
            let (bc, (_, bp)) = best;
            if cost < bc - 1e-9 || (cost < bc + 1e-9 && np < bp) {
                best = (cost, (nf, np));
            }
        }
    }
    best
}

/// Cycles per step (one input channel and tap) of a register tile with `accs`
/// accumulators, `loads` loads and broadcasts, of which `l2_vectors` weight vectors come
/// from L2 (the block's weights do not stay in L1): two FMA pipes, two loads per cycle,
/// about 2.7 cycles per vector streamed from L2, and at least six cycles per step. The
/// constants are measurements on Zen 3 (tiles of 8 and 10 accumulators run at 0.7 and
/// 0.85 of the speed of 12, which the FMA latency alone would not predict; three weight
/// vectors per step from L2 are slower than two).
pub(crate) fn tile_cycles(accs: u64, loads: u64, l2_vectors: u64) -> f64 {
    (accs as f64 / 2.0).max(6.0).max(loads as f64 / 2.0).max(l2_vectors as f64 * 8.0 / 3.0)
}

/// Packs `[M, C, KH, KW]` weights into `[ceil(M / cb)][KH][C][KW][cb]` (the order the
/// kernel reads them: kernel rows, then input channels).
fn pack(w: &[f32], [m, c, kh, kw]: [u64; 4], cb: u64) -> Vec<f32> {
    let blocks = m.div_ceil(cb);
    let mut out = vec![0.0; (blocks * kh * c * kw * cb) as usize];
    for co in 0..m {
        let (b, lane) = (co / cb, co % cb);
        for (ci, ky, kx) in taps_of(c, kh, kw) {
            let src = ((co * c + ci) * kh + ky) * kw + kx;
            let dst = ((((b * kh + ky) * c + ci) * kw + kx) * cb) + lane;
            out[dst as usize] = w[src as usize];
        }
    }
    out
}

fn taps_of(c: u64, kh: u64, kw: u64) -> impl Iterator<Item = (u64, u64, u64)> {
    (0..c).flat_map(move |ci| (0..kh).flat_map(move |ky| (0..kw).map(move |kx| (ci, ky, kx))))
}

/// What one task (an output row and a channel block) works on.
#[derive(Clone, Copy)]
struct Task<'ctx> {
    img: IntValue<'ctx>,
    oy: IntValue<'ctx>,
    blk: IntValue<'ctx>,
    /// Whether this is the last, partly filled channel block (when there is one).
    last: Option<IntValue<'ctx>>,
    /// The kernel rows inside the image for this output row.
    kys: (IntValue<'ctx>, IntValue<'ctx>),
}

pub(crate) fn conv<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &Conv, g: &PoolGeometry, weights: &TensorData) -> R<()> {
    let (x, wd) = (n.in_dims(0), n.in_dims(1));
    let (batch, c, h, wi) = (x[0], x[1], x[2], x[3]);
    let (m, kh, kw) = (wd[0], wd[2], wd[3]);
    let [mut oh, mut ow] = g.output;
    // A 1x1 convolution: any split of the pixels into rows will do (no padding, stride 1).
    let (h, wi) = if pointwise(op, &wd) {
        (oh, ow) = pointwise_rows(oh * ow);
        (oh, ow)
    } else {
        (h, wi)
    };
    let (sy, sx) = (g.strides[0], g.strides[1]);
    let (dy, dx) = (g.dilations[0], g.dilations[1]);
    let (pt, pl) = (g.pad_begin[0], g.pad_begin[1]);
    let w = vector_width(n.target) as u64;
    let (_, (nf, np)) = tile_shape(w, m, ow, c * kh * kw);
    let cb = nf * w;
    tracing::debug!(node = n.name, nf, np, lanes = w, "channel-blocked convolution tile");
    let blocks = m.div_ceil(cb);
    let taps = c * kh * kw;
    let wv = weights.to_f32().ok_or_else(|| n.unsupported("convolution weights must be f32"))?;
    let pw = const_f32_global(kb, "wpack", &pack(&wv, [m, c, kh, kw], cb));
    let vt = kb.f32t.vec_type(w as u32);
    let (has_bias, has_res, n_in) = (n.inputs.len() >= 3, n.inputs.len() == 4, n.inputs.len());
    // Whether input column `(ox) * sx + kx * dx - pl` lies inside the row.
    let col = |ox: u64, kx: u64| (ox * sx + kx * dx) as i64 - pl as i64;
    let inside = |ox: u64, kx: u64| (0..wi as i64).contains(&col(ox, kx));
    // Pixel tiles along the row; a tile is interior when every tap of every pixel is.
    let tiles: Vec<(u64, u64)> = (0..ow.div_ceil(np)).map(|t| (t * np, np.min(ow - t * np))).collect();
    let interior = |&(ox0, cnt): &(u64, u64)| cnt == np && (0..cnt).all(|p| (0..kw).all(|kx| inside(ox0 + p, kx)));
    let first = tiles.iter().position(interior).unwrap_or(tiles.len());
    let end = first + tiles[first..].iter().take_while(|t| interior(t)).count();

    // One tile: pixels ox0.. (`cnt` of them; `ox0c` is ox0 when it is a compile-time
    // constant, which border tiles are) of the task's row and channel block.
    let tile = |kb: &Kb<'_, 'ctx>, task: &Task<'ctx>, ox0: IntValue<'ctx>, ox0c: Option<u64>, cnt: u64| -> R<()> {
        let Task { img, oy, blk, last, kys: (ky_lo, ky_hi) } = *task;
        let px = kb.param(0);
        let accs: Vec<PointerValue<'ctx>> = (0..nf * cnt).map(|_| kb.alloca(vt.into())).collect::<R<_>>()?;
        for a in &accs {
            kb.b.build_store(*a, vt.const_zero())?;
        }
        let wblk = kb.mul(blk, kb.c(taps * cb))?;
        // Input offset of pixel p at kernel column 0, relative to the row start.
        let xcol = kb.mul(ox0, kb.c(sx))?;
        let img_base = kb.mul(img, kb.c(c * h * wi))?;
        let kxo: Vec<IntValue<'ctx>> = (0..kw).map(|kx| kb.opaque(kb.c(kx * dx))).collect::<R<_>>()?;
        // Kernel rows outer (only those inside the image: a loop with bounds, not a
        // branch per row), input channels inner, so the innermost loop has no control
        // flow and streams the packed weights.
        kb.for_range(ky_lo, ky_hi, |kb, ky| {
            let iy = kb.sub(kb.add(kb.mul(oy, kb.c(sy))?, kb.mul(ky, kb.c(dy))?)?, kb.c(pt))?;
            let row0 = kb.add(kb.add(img_base, kb.mul(iy, kb.c(wi))?)?, xcol)?;
            let wky = kb.add(wblk, kb.mul(ky, kb.c(c * kw * cb))?)?;
            kb.for_n(c, |kb, ci| {
                let row = kb.add(row0, kb.mul(ci, kb.c(h * wi))?)?;
                let tap0 = kb.add(wky, kb.mul(ci, kb.c(kw * cb))?)?;
                for kx in 0..kw {
                    let ws: Vec<VectorValue<'ctx>> = (0..nf)
                        .map(|f| load_vec(kb, vt, pw, kb.add(tap0, kb.c(kx * cb + f * w))?))
                        .collect::<R<_>>()?;
                    for p in 0..cnt {
                        if let Some(o) = ox0c {
                            if !inside(o + p, kx) {
                                continue;
                            }
                        }
                        // row + p*sx + kx*dx - pl (>= 0 for taps inside the image),
                        // the kx*dx part opaque (see `Kb::opaque`): otherwise LLVM merges
                        // the loads that several (p, kx) pairs share and keeps them all
                        // live across the kernel columns, spilling accumulators.
                        let off = (p * sx) as i64 - pl as i64;
                        let idx = kb.b.build_int_add(
                            kb.add(row, kxo[kx as usize])?,
                            kb.i64t.const_int(off as u64, true),
                            "",
                        )?;
                        let xb = splat(kb, vt, kb.load_f32(px, idx)?)?;
                        for f in 0..nf {
                            let slot = accs[(f * cnt + p) as usize];
                            let cur = kb.b.build_load(vt, slot, "")?.into_vector_value();
                            kb.b.build_store(slot, vfma(kb, xb, ws[f as usize], cur)?)?;
                        }
                    }
                }
                Ok(())
            })
        })?;
        // Epilogue and stores: lane l of filter vector f is channel blk*cb + f*w + l.
        let i32t = kb.cx.i32_type();
        let co0 = kb.mul(blk, kb.c(cb))?;
        let valid_last = m - (blocks - 1) * cb;
        for f in 0..nf {
            // Lanes past the last channel exist only in the last block.
            let lanes_here = if f * w >= valid_last { 0 } else { (valid_last - f * w).min(w) };
            let chan = kb.add(co0, kb.c(f * w))?;
            let body = |kb: &Kb<'_, 'ctx>, lanes: u64| -> R<()> {
                let bias = if has_bias {
                    let mut v = vt.const_zero();
                    for l in 0..lanes {
                        let b = kb.load_f32(kb.param(2), kb.add(chan, kb.c(l))?)?;
                        v = kb.b.build_insert_element(v, b, i32t.const_int(l, false), "")?;
                    }
                    Some(v)
                } else {
                    None
                };
                for p in 0..cnt {
                    let v = kb.b.build_load(vt, accs[(f * cnt + p) as usize], "")?.into_vector_value();
                    let ox = kb.add(ox0, kb.c(p))?;
                    // y[img][chan + l][oy][ox]
                    let y0 = kb.lin(&[(img, m * oh * ow), (chan, oh * ow), (oy, ow), (ox, 1)], 0)?;
                    let res = has_res.then_some(3);
                    store_lanes(kb, v, Epilogue { bias, residual: res, act: op.act }, n_in, y0, oh * ow, lanes)?;
                }
                Ok(())
            };
            match last {
                Some(is_last) if lanes_here < w => kb.if_else(is_last, |kb| body(kb, lanes_here), |kb| body(kb, w))?,
                _ => body(kb, w)?,
            }
        }
        Ok(())
    };

    let flops = 2 * batch * m * taps * oh * ow;
    // Loop order: when the layer's weights are larger than about half an L2 cache, each
    // channel block visits every output row before the next block, so the block's
    // weights stay in cache (the input, read once per block, is then the smaller of the
    // two); otherwise rows outer.
    let weights_outer = m * taps * 4 > 256 * 1024;
    par(kb, batch * oh * blocks, flops, |kb, t| {
        let (img, oy, blk) = block_task(kb, t, oh, blocks, weights_outer)?;
        // The kernel rows that fall inside the image for this output row:
        // 0 <= oy*sy + ky*dy - pt < h.
        let kys = {
            let sgt = |a, b| kb.icmp(IntPredicate::SGT, a, b);
            let a = kb.sub(kb.c(pt), kb.mul(oy, kb.c(sy))?)?;
            let up = |v: IntValue<'ctx>| -> R<IntValue<'ctx>> {
                Ok(kb.b.build_int_signed_div(kb.add(v, kb.c(dy - 1))?, kb.c(dy), "")?)
            };
            let lo = kb.select_i(sgt(a, kb.c(0))?, up(a)?, kb.c(0))?;
            let b = kb.sub(kb.c(h + pt), kb.mul(oy, kb.c(sy))?)?;
            let hi = kb.select_i(sgt(b, kb.c(0))?, up(b)?, kb.c(0))?;
            (lo, kb.select_i(sgt(hi, kb.c(kh))?, kb.c(kh), hi)?)
        };
        let last = (m % cb != 0).then(|| kb.icmp(IntPredicate::EQ, blk, kb.c(blocks - 1))).transpose()?;
        let task = Task { img, oy, blk, last, kys };
        for &(ox0, cnt) in &tiles[..first] {
            tile(kb, &task, kb.c(ox0), Some(ox0), cnt)?;
        }
        if end > first {
            kb.for_range(kb.c(first as u64), kb.c(end as u64), |kb, t| {
                tile(kb, &task, kb.mul(t, kb.c(np))?, None, np)
            })?;
        }
        for &(ox0, cnt) in &tiles[end..] {
            tile(kb, &task, kb.c(ox0), Some(ox0), cnt)?;
        }
        Ok(())
    })
}

/// Task `t` of `images x oh x blocks` as `(image, output row, channel block)`: rows
/// inner when `weights_outer` (each block's weights stay in cache), else blocks inner.
pub(crate) fn block_task<'ctx>(
    kb: &Kb<'_, 'ctx>,
    t: IntValue<'ctx>,
    oh: u64,
    blocks: u64,
    weights_outer: bool,
) -> R<(IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>)> {
    let img = kb.b.build_int_unsigned_div(t, kb.c(oh * blocks), "")?;
    let t = kb.b.build_int_unsigned_rem(t, kb.c(oh * blocks), "")?;
    Ok(if weights_outer {
        (img, kb.b.build_int_unsigned_rem(t, kb.c(oh), "")?, kb.b.build_int_unsigned_div(t, kb.c(oh), "")?)
    } else {
        (img, kb.b.build_int_unsigned_div(t, kb.c(blocks), "")?, kb.b.build_int_unsigned_rem(t, kb.c(blocks), "")?)
    })
}

/// What happens to a pixel's vector of output channels before it is stored: the
/// residual operand's lanes (if any) are added, then the bias and activation.
pub(crate) struct Epilogue<'ctx> {
    pub bias: Option<VectorValue<'ctx>>,
    pub residual: Option<usize>,
    pub act: dlc_ir::ops::Activation,
}

/// Applies `epi` to `v` (one pixel, lanes along output channels) and stores its first
/// `lanes` lanes to result `out` in NCHW, lane `l` at `y0 + l * plane`.
pub(crate) fn store_lanes<'ctx>(
    kb: &Kb<'_, 'ctx>,
    mut v: VectorValue<'ctx>,
    epi: Epilogue<'ctx>,
    out: usize,
    y0: IntValue<'ctx>,
    plane: u64,
    lanes: u64,
) -> R<()> {
    let i32t = kb.cx.i32_type();
    if let Some(res) = epi.residual {
        let mut r = v.get_type().const_zero();
        for l in 0..lanes {
            let x = kb.load_f32(kb.param(res), kb.add(y0, kb.c(l * plane))?)?;
            r = kb.b.build_insert_element(r, x, i32t.const_int(l, false), "")?;
        }
        v = kb.b.build_float_add(v, r, "")?;
    }
    let v = pixel_epilogue(kb, epi.act, v, epi.bias, None)?;
    for l in 0..lanes {
        let x = kb.b.build_extract_element(v, i32t.const_int(l, false), "")?.into_float_value();
        kb.store_f32(kb.param(out), kb.add(y0, kb.c(l * plane))?, x)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_shapes_fit_the_registers_and_keep_the_fma_units_busy() {
        for (w, regs) in [(4, 32), (8, 16), (16, 32)] {
            for m in [3, 20, 64, 128, 256, 512] {
                for ow in [1, 2, 3, 7, 14, 28, 56, 112] {
                    let (_, (nf, np)) = tile_shape(w, m, ow, 576);
                    assert!(nf * np + nf < regs, "w={w} m={m} ow={ow}: {nf}x{np}");
                    assert!(np <= ow);
                    // Wide enough rows and enough channels give at least 8 accumulators.
                    if ow >= 7 && m >= 2 * w {
                        assert!(nf * np >= 8, "w={w} m={m} ow={ow}: {nf}x{np}");
                    }
                }
            }
        }
        // The shapes measured fastest on Zen 3 (AVX2) for ResNet-18's stages.
        assert_eq!(tile_shape(8, 64, 56, 576).1, (2, 6));
        assert_eq!(tile_shape(8, 256, 14, 2304).1, (2, 5));
        assert_eq!(tile_shape(8, 512, 7, 4608).1, (3, 4));
    }

    #[test]
    fn packing_puts_each_weight_at_its_block_lane() {
        let [m, c, kh, kw] = [5u64, 2, 2, 3];
        let w: Vec<f32> = (0..m * c * kh * kw).map(|i| i as f32).collect();
        let cb = 4;
        let p = pack(&w, [m, c, kh, kw], cb);
        assert_eq!(p.len() as u64, 2 * kh * c * kw * cb);
        for co in 0..m {
            for (ci, ky, kx) in taps_of(c, kh, kw) {
                let dst = (((co / cb * kh + ky) * c + ci) * kw + kx) * cb + co % cb;
                assert_eq!(p[dst as usize], w[(((co * c + ci) * kh + ky) * kw + kx) as usize]);
            }
        }
        // The padding lanes of the last block are zero.
        assert!((0..kh * c * kw).all(|t| (1..cb).all(|l| p[((kh * c * kw + t) * cb + l) as usize] == 0.0)));
    }
}
