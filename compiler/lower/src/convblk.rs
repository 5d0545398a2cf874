//! Direct convolution with vectors along output channels, f32, for convolutions whose
//! weights are constants (every CNN layer after BatchNorm folding).
//!
//! The weights are packed at compile time into blocks of `CB = NF * W` output channels,
//! `[block][ky][c][kx][CB]` (zero-padded past the last channel), a constant array of
//! the kernel, so one tap of one input channel is `NF` contiguous vector loads. A tile
//! is `NP` output pixels of one row by one block: for each input channel and tap, each
//! pixel's input value is broadcast once and multiplied into the block's `NF` weight
//! vectors, `NF x NP` accumulators in registers. Unlike vectors along pixels, no lanes
//! are wasted on rows that are not a multiple of the vector width (the 28-, 14- and
//! 7-pixel rows of late CNN stages), a stride or dilation only changes which scalar is
//! broadcast, and each broadcast feeds `NF` FMAs. Tiles that reach into the left or
//! right padding are unrolled with the out-of-image taps left out at compile time; the
//! others run in a loop. The output is stored in NCHW, lane by lane, after the epilogue
//! (bias, residual, activation) in registers; the stores are a few per thousand FMAs.
//!
//! Grouped convolutions (RegNet's and ResNeXt's groups of 8 to 64 filters) take it group
//! by group: blocks never span two groups (the vector width is one that divides a
//! group's filters, [`lanes`]), a block's input channels are its group's, and the
//! weights are packed group after group.
//!
//! [`tile_shape`] is the cost model that picks `(NF, NP)`, and with [`crate::conv1x1::cost`]
//! whether a 1x1 convolution takes this kernel or the pixel-vector GEMM ([`applies`]).
use crate::conv1x1::{pixel_epilogue, pointwise, tile_cycles};
use crate::gemm::zero_accumulators;
use crate::{ival, par, par_expr, LowerError, Node, Target};
use dlc_ir::ops::{Conv, Window};
use dlc_ir::{DType, TensorData};
use dlc_kir::{BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

/// Independent accumulator chains a one-pixel tile keeps in flight: two FMA units times
/// four cycles of latency (Zen 3 and Zen 4 alike).
const SINGLE_CHAINS: u64 = 8;

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

/// Tiles for the `rem` (< `np` <= 16) pixels at `at`: one tile of each binary digit of
/// `rem`, largest first (`tile(b, offset, count)`), a few compiled tiles instead of one
/// per remainder.
fn binary_tiles(
    b: &mut KernelBuilder,
    np: u64,
    rem: &Expr,
    at: &Expr,
    tile: &mut dyn FnMut(&mut KernelBuilder, Expr, u64),
) {
    for r in [8u64, 4, 2, 1].into_iter().filter(|&r| r < np) {
        let set = ival(b, &rem.floor_div(&c(r)).modulo(&c(2)));
        let one = b.i64(1);
        let is = b.cmp(CmpOp::Eq, set, one);
        let off = at + &(&rem.floor_div(&c(2 * r)) * &c(2 * r));
        b.if_(is, |b| tile(b, off, r), |_| {});
    }
}

/// Input value `xv` broadcast to `lanes` and multiplied into the `ws.len()` filter vectors, added
/// to pixel `p`'s accumulators of a tile of `cnt` pixels (`accs[f * cnt + p]`).
fn fma_broadcast(b: &mut KernelBuilder, lanes: u32, xv: ValId, ws: &[ValId], accs: &[u32], cnt: u64, p: u64) {
    let xb = b.let_(Inst::Splat(xv, lanes));
    for (f, &wf) in ws.iter().enumerate() {
        let slot = accs[f * cnt as usize + p as usize];
        let cur = b.let_(Inst::Get(slot));
        let next = b.let_(Inst::Fma(xb, wf, cur));
        b.stmt(Stmt::Set(slot, next));
    }
}

/// The vector width (f32 lanes) and vector register count this kernel uses for a
/// convolution of `groups` groups of `mg` filters on target `t`: the target's vectors for
/// one group; for several, the widest of the target's, 8 or 4 lanes that divides `mg`
/// (a block never spans two groups, and a group of 8 filters on AVX-512 takes 256-bit
/// vectors rather than half-empty 512-bit ones). `None` for a grouped convolution on a
/// target without vectors or whose groups no width of at least 4 divides (depthwise
/// ones are [`crate::dwconv`]'s).
pub fn lanes(t: &Target, groups: u64, mg: u64) -> Option<(u64, u64)> {
    let native = t.f32_lanes.max(1) as u64;
    let regs = registers(native);
    if groups <= 1 {
        return Some((native, regs));
    }
    let w = [native, 8, 4].into_iter().find(|&w| w <= native && w >= 4 && mg.is_multiple_of(w))?;
    Some((w, regs))
}

/// The constant weights of a convolution this kernel takes for target `t`: f32, 2-D,
/// dims known or run-time image dims, one group or groups of filters a vector width
/// divides ([`lanes`]); a plain 1x1 only where the cost model prefers it to the
/// pixel-vector GEMM of [`crate::conv1x1`] (small images, whose pixel count leaves much
/// of that kernel's last panel empty).
pub fn applies<'g>(n: &Node<'g>, op: &Conv, t: &Target) -> Option<&'g TensorData> {
    let w = n.consts.get(1).copied().flatten()?;
    let f32_fixed = n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32 && t.shape.is_fixed());
    let wd = w.ty().shape.as_fixed()?;
    let groups = op.group.max(1) as u64;
    if wd.len() != 4 || !wd[0].is_multiple_of(groups) {
        return None;
    }
    lanes(t, groups, wd[0] / groups)?;
    if groups > 1 {
        // Grouped: this kernel whatever the size (the 1x1 GEMM and the direct kernel
        // take one group only).
        let x = &n.inputs[0].shape;
        let f32 = n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32);
        let known_channels = x.0.get(1).and_then(|d| d.fixed()) == Some(wd[1] * groups);
        return (f32 && known_channels && x.rank() == 4).then_some(w);
    }
    if !f32_fixed {
        // Run-time image dims: this kernel with run-time tile counts (the channels stay
        // known). A run-time batch alone is not this kernel's: dlc-lower's batch rule
        // runs the one-sample kernel, which decides for itself.
        let x = &n.inputs[0].shape;
        let f32 = n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32);
        let image_known = x.0.iter().skip(2).all(|d| d.fixed().is_some());
        let known_channels = x.0.get(1).and_then(|d| d.fixed()).is_some();
        if !(f32 && !image_known && known_channels && x.rank() == 4) {
            return None;
        }
        // A 1x1 where the pixel-vector GEMM is cheaper at the layer's nominal pixel
        // count ([`nominal_pixels`]) is not this kernel's.
        if pointwise(op, &wd) {
            let vw = t.f32_lanes.max(1) as u64;
            let p = nominal_pixels(&n.outputs[0]);
            let blocked = tile_shape(vw, wd[0], pointwise_rows(p).1, wd[1]).0;
            return (blocked < crate::conv1x1::cost(vw, wd[0], p, wd[1])).then_some(w);
        }
        return Some(w);
    }
    if pointwise(op, &wd) {
        let y = n.outputs[0].shape.as_fixed()?;
        let (m, p, vw) = (wd[0], y[2] * y[3], t.f32_lanes.max(1) as u64);
        let blocked = tile_shape(vw, m, pointwise_rows(p).1, wd[1]).0;
        return (blocked < crate::conv1x1::cost(vw, m, p, wd[1])).then_some(w);
    }
    Some(w)
}

/// The image dims every symbol of a run-time image takes in the cost models: 224, an
/// ImageNet-sized input.
pub const NOMINAL_DIM: i64 = 224;

/// The pixel count of output `y`'s image (dims 2 and on) when every symbol is
/// [`NOMINAL_DIM`]: a stride-32 layer of a CNN has 49 pixels, a stride-4 one 3,136, so
/// the cost models choose for each layer at its own scale rather than at one size for
/// all. At least 1.
pub fn nominal_pixels(y: &dlc_ir::TensorType) -> u64 {
    y.shape.0.iter().skip(2).map(|d| nominal_extent(&d.expr())).product::<u64>().max(1)
}

/// Extent `e` when every symbol is [`NOMINAL_DIM`] (at least 1).
pub fn nominal_extent(e: &Expr) -> u64 {
    struct Nominal;
    impl dlc_kir::expr::Env for Nominal {
        fn sym(&self, _: &str) -> Option<i64> {
            Some(NOMINAL_DIM)
        }
        fn var(&self, _: u32) -> Option<i64> {
            None
        }
        fn val(&self, _: u32) -> Option<i64> {
            None
        }
    }
    e.eval(&Nominal).unwrap_or(NOMINAL_DIM).max(1) as u64
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
/// lane-by-lane stores, picks the shape. Returns the cost (cycles per output element
/// and input channel) and the shape.
pub fn tile_shape(w: u64, m: u64, ow: u64, taps: u64) -> (f64, (u64, u64)) {
    tile_shape_in(w, registers(w), m, Row::Known(ow), taps)
}

/// A row of output pixels as the cost model sees it: a known width, laid out in whole
/// tiles and one narrower last tile; or a run-time width at its nominal value `ow`, laid
/// out as [`conv`] lays it out at run time: border tiles of whole tiles for the `left`
/// and `right` pixels whose taps reach the padding, whole interior tiles between (the
/// last one overlapping) or none, and, in a row whose border tiles would overlap (or
/// leave a gap no interior tile fits), the interior's tiles and the border pixels one at
/// a time (or, with more border tiles than [`conv`] compiles, the checked tiles, costed
/// as a known row's).
#[derive(Clone, Copy, Debug)]
enum Row {
    Known(u64),
    RunTime { ow: u64, left: u64, right: u64, sx: u64 },
}

impl Row {
    fn width(self) -> u64 {
        match self {
            Row::Known(ow) | Row::RunTime { ow, .. } => ow,
        }
    }

    /// `(whole tiles, width of a narrower last tile (0: none), pixels one at a time)`
    /// with tiles of `np` pixels.
    fn layout(self, np: u64) -> (u64, u64, u64) {
        match self {
            Row::Known(ow) => (ow / np, ow % np, 0),
            Row::RunTime { ow, left, right, sx } => {
                let Some((lead, trail)) = border_tiles(left, right, sx, np) else {
                    return (ow / np, ow % np, 0);
                };
                // With no padding, a row of at least one tile.
                let fits = if lead + trail == 0 { ow >= np } else { row_fits(ow as i64, lead, trail, np, left) };
                if fits {
                    return ((lead + trail) / np + (ow - lead - trail).div_ceil(np), 0, 0);
                }
                let interior = ow.saturating_sub(left + right);
                if interior >= np {
                    (interior.div_ceil(np), 0, ow - interior)
                } else {
                    (0, 0, ow)
                }
            }
        }
    }
}

/// A run-time row's border tiles in tiles of `np` pixels, as [`conv`] compiles them and
/// the cost model counts them: `(lead, trail)`, the pixels of whole tiles that cover the
/// `left` and `right` pixels whose taps reach the padding; `None` when they are more
/// tiles than the kernel compiles (left, then right once per residue of the stride
/// `sx`), and the row runs as checked tiles.
fn border_tiles(left: u64, right: u64, sx: u64, np: u64) -> Option<(u64, u64)> {
    let (lead, trail) = (left.div_ceil(np) * np, right.div_ceil(np) * np);
    ((lead + trail * sx) / np <= 4).then_some((lead, trail))
}

/// Whether a run-time row of `ow` pixels holds its border tiles `lead` and `trail`
/// (tiles of `np`; `left` pixels reach the left padding): they do not overlap, and what
/// lies between them is empty or takes a tile ending at its end that starts right of
/// the left padding. [`conv`] tests the same at run time.
fn row_fits(ow: i64, lead: u64, trail: u64, np: u64, left: u64) -> bool {
    let (lead, trail, np, left) = (lead as i64, trail as i64, np as i64, left as i64);
    ow >= lead + trail && (ow == lead + trail || ow - trail - np >= left)
}

/// The vector registers of a target whose native vectors hold `native` f32s: x86 has 16
/// up to AVX2 and 32 with AVX-512; NEON has 32.
fn registers(native: u64) -> u64 {
    if native == 8 {
        16
    } else {
        32
    }
}

/// [`tile_shape`] with `regs` vector registers, for a row laid out as `row` says.
fn tile_shape_in(w: u64, regs: u64, m: u64, row: Row, taps: u64) -> (f64, (u64, u64)) {
    let ow = row.width();
    let mut best = (f64::INFINITY, (1, 1));
    for nf in 1..=4u64 {
        for np in 1..=ow.min(12) {
            if nf * np + nf + 1 > regs {
                continue;
            }
            let from_l2 = if nf * w * 4 * taps > 16 * 1024 { nf } else { 0 };
            let tile = |cnt: u64| tile_cycles(nf * cnt, nf + cnt, from_l2);
            // A pixel one at a time: its channels go round several accumulator sets
            // (no latency floor), so its loads and weight stream bound it.
            let single = (nf as f64 / 2.0).max((nf + 1) as f64 / 2.0).max(from_l2 as f64 * 8.0 / 3.0);
            let (whole, part, singles) = row.layout(np);
            let cycles = whole as f64 * tile(np) + if part > 0 { tile(part) } else { 0.0 } + singles as f64 * single;
            let blocks = m.div_ceil(nf * w) as f64;
            // Plus the stores: lane by lane (the lanes run along channels, NCHW wants
            // pixels contiguous), about a cycle per element, spread over the taps.
            let cost = cycles * blocks / (m * ow) as f64 + 1.0 / taps as f64;
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

/// Packs grouped `[M, C, KH, KW]` weights (`C` input channels per group, `M / groups`
/// filters per group) group by group: each group's [`pack`], one after the other.
pub fn pack_groups(w: &[f32], [m, c, kh, kw]: [u64; 4], groups: u64, cb: u64) -> Vec<f32> {
    let mg = m / groups;
    let per = (mg * c * kh * kw) as usize;
    w.chunks(per).take(groups as usize).flat_map(|wg| pack(wg, [mg, c, kh, kw], cb)).collect()
}

/// Packs `[M, C, KH, KW]` weights into `[ceil(M / cb)][KH][C][KW][cb]` (the order the
/// kernel reads them: kernel rows, then input channels).
pub fn pack(w: &[f32], [m, c, kh, kw]: [u64; 4], cb: u64) -> Vec<f32> {
    let blocks = m.div_ceil(cb);
    let mut out = vec![0.0; (blocks * kh * c * kw * cb) as usize];
    for co in 0..m {
        let (b, lane) = (co / cb, co % cb);
        for ci in 0..c {
            for ky in 0..kh {
                for kx in 0..kw {
                    let src = ((co * c + ci) * kh + ky) * kw + kx;
                    let dst = ((((b * kh + ky) * c + ci) * kw + kx) * cb) + lane;
                    out[dst as usize] = w[src as usize];
                }
            }
        }
    }
    out
}

/// What one task (an output row and a channel block) works on.
struct Task {
    img: Expr,
    oy: Expr,
    blk: Expr,
    /// The block's first input channel (its group's) and first output channel.
    chan0: Expr,
    co0: Expr,
    /// Whether this is the last, partly filled channel block (when there is one).
    last: Option<ValId>,
    /// The kernel rows inside the image for this output row (i64 values).
    kys: (ValId, ValId),
    /// The image extents as this task computes indices with them.
    ext: Ext,
}

/// Image extents (input rows and columns, output columns, input and output plane
/// sizes): constants, or values a task computed once from the run-time dims.
struct Ext {
    h: Expr,
    wi: Expr,
    ow: Expr,
    hw: Expr,
    ohw: Expr,
}

/// Task `t` of `images x oh x blocks` as `(image, output row, channel block)`: rows
/// inner when `weights_outer` (each block's weights stay in cache), else blocks inner.
pub fn block_task(t: &Expr, oh: &Expr, blocks: u64, weights_outer: bool) -> (Expr, Expr, Expr) {
    let img = t.floor_div(&(oh * &c(blocks)));
    let r = t.modulo(&(oh * &c(blocks)));
    if weights_outer {
        (img, r.modulo(oh), r.floor_div(oh))
    } else {
        (img, r.floor_div(&c(blocks)), r.modulo(&c(blocks)))
    }
}

/// The channel-blocked convolution kernel of node `n` (whose weights [`applies`]
/// returned) with window `g` for target `t`. Parameters: X, W (unread: the kernel
/// carries its packed copy), the optional bias and residual, then Y.
///
/// Run-time image dims keep the tiles: a row runs as whole `NP`-pixel tiles in loops of
/// run-time count, laid out as a known row's would be (border tiles with their padding
/// taps left out at compile time, interior tiles unchecked, the last one ending at the
/// interior's end). A row whose border tiles would overlap runs its border pixels one at
/// a time, each kernel column checked, around the same interior tiles; a row whose
/// border tiles would be too many
/// (dilated windows over small maps) runs as checked tiles, each kernel column tested
/// once per tile (all inside, all outside, or each pixel checked).
pub fn conv(name: &str, n: &Node, op: &Conv, g: &Window, t: &Target) -> Result<Kernel, LowerError> {
    let weights = n
        .consts
        .get(1)
        .copied()
        .flatten()
        .ok_or_else(|| n.error("internal: blocked Conv weights are not a constant"))?;
    let (x, wd) = (Node::dims(&n.inputs[0]), n.fixed_in(1)?);
    if x.len() != 4 || wd.len() != 4 {
        return Err(n.error("only 2-D convolutions are supported"));
    }
    let ch = x[1].as_const().ok_or_else(|| n.error("the channel dim must be known"))? as u64;
    let (batch, h, wi) = (x[0].clone(), x[2].clone(), x[3].clone());
    let (m, cg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    let groups = op.group.max(1) as u64;
    let mg = m / groups;
    let [mut oh, mut ow] = g.output.clone();
    let fixed = g.fixed();
    // A 1x1 convolution: any split of the pixels into rows will do (no padding, stride
    // 1): rows of at most 256 pixels for known dims, one row of the whole image for
    // run-time ones (fewer tasks and border checks on the short rows of late layers).
    let (h, wi) = match &fixed {
        Some(gf) if pointwise(op, &wd) => {
            let (r, cols) = pointwise_rows(gf.output[0] * gf.output[1]);
            (oh, ow) = (c(r), c(cols));
            (oh.clone(), ow.clone())
        }
        None if pointwise(op, &wd) => {
            (oh, ow) = (c(1), &oh * &ow);
            (oh.clone(), ow.clone())
        }
        _ => (h, wi),
    };
    // The extents as numbers where they are known (where not, their value at a nominal
    // image, [`nominal_extent`]: the cost model's and the task policy's guess).
    let known = |e: &Expr| e.as_const().map(|v| v.max(0) as u64);
    let nominal = |e: &Expr| known(e).unwrap_or_else(|| nominal_extent(e));
    let (sy, sx) = (g.strides[0], g.strides[1]);
    let (dy, dx) = (g.dilations[0], g.dilations[1]);
    let (pt, pl) = (g.pad_begin[0], g.pad_begin[1]);
    let (w, regs) = lanes(t, groups, mg).ok_or_else(|| n.error("internal: no vector width for this grouped Conv"))?;
    let taps = cg * kh * kw;
    // At run-time dims the tiles are chosen for the row as it is laid out at run time
    // (border tiles, interior tiles, pixels one at a time: see below), at the nominal
    // image.
    let pinned = known(&ow).is_some() && fixed.is_some();
    let row = if pinned {
        Row::Known(nominal(&ow))
    } else {
        Row::RunTime { ow: nominal(&ow), left: pl.div_ceil(sx), right: g.pad_end[1].div_ceil(sx), sx }
    };
    let (_, (nf, np)) = tile_shape_in(w, regs, mg, row, taps);
    let cb = nf * w;
    tracing::debug!(node = n.name, nf, np, lanes = w, groups, "channel-blocked convolution tile");
    // Blocks per group (a block never spans two groups), and in all.
    let gblocks = mg.div_ceil(cb);
    let blocks = groups * gblocks;
    let wv = weights.to_f32().ok_or_else(|| n.error("convolution weights must be f32"))?;
    let vt = Ty::vec(Elem::F32, w as u32);
    let (has_bias, has_res, py, mut b) = crate::conv1x1::conv_builder(name, n);
    let packed: Vec<u8> = pack_groups(&wv, [m, cg, kh, kw], groups, cb).iter().flat_map(|v| v.to_le_bytes()).collect();
    let pw = b.data("wpack", Elem::F32, packed);
    // Whether input column `ox * sx + kx * dx - pl` lies inside the row (known dims).
    let col = |ox: u64, kx: u64| (ox * sx + kx * dx) as i64 - pl as i64;
    let wi_known = known(&wi).unwrap_or(0);
    let inside = |ox: u64, kx: u64| (0..wi_known as i64).contains(&col(ox, kx));

    // One tile: pixels ox0.. (`cnt` of them) of the task's row and channel block. With
    // `taps_in` (border tiles whose taps' columns are known when compiling,
    // `taps_in[p * kw + kx]`: whether pixel p's kernel column kx lies inside the row),
    // the taps outside are left out; with `checked`, each tap's input column is checked
    // at run time (a tap in the padding reads column 0 and contributes 0).
    let tile = |b: &mut KernelBuilder, task: &Task, ox0: Expr, taps_in: Option<&[bool]>, cnt: u64, checked: bool| {
        let Ext { wi, ow, hw, ohw, .. } = &task.ext;
        let accs = zero_accumulators(b, vt, nf * cnt);
        let wblk = &task.blk * &c(taps * cb);
        // Input offset of pixel p at kernel column 0, relative to the row start.
        let xcol = &ox0 * &c(sx);
        let img_base = &(&task.img * &(&c(ch) * hw)) + &(&task.chan0 * hw);
        // The kernel columns' offsets, opaque: otherwise LLVM merges the loads that
        // several (p, kx) pairs share and keeps them all live across the kernel
        // columns, spilling accumulators.
        let kxo: Vec<Expr> = (0..kw)
            .map(|kx| {
                let v = b.i64((kx * dx) as i64);
                Expr::val(b.let_(Inst::Opaque(v)))
            })
            .collect();
        // Kernel rows outer (only those inside the image: a loop with bounds, not a
        // branch per row), input channels inner, so the innermost loop has no control
        // flow and streams the packed weights.
        let (ky_lo, ky_hi) = task.kys;
        if checked && cnt == 1 {
            // One pixel at a border (run-time dims): a kernel column outside the row is
            // skipped whole, a branch per column outside the channel loop (a dilated
            // window over a small image, DeepLab's rates of 12-36 over a 28-pixel map,
            // has only its centre column inside), then the channels without checks.
            // The channels go round `sets` accumulator sets in turn, summed at the end:
            // one set's `nf` chains would wait on the FMA's latency (4 cycles) every
            // channel, and these pixels can be two of a late layer's 7.
            let sets = SINGLE_CHAINS.div_ceil(nf).min(cg).max(1);
            let extra = zero_accumulators(b, vt, nf * (sets - 1));
            let set = |s: u64| -> Vec<u32> {
                if s == 0 {
                    accs.clone()
                } else {
                    extra[((s - 1) * nf) as usize..(s * nf) as usize].to_vec()
                }
            };
            let rounds = cg / sets;
            b.for_(Expr::val(ky_lo), Expr::val(ky_hi), LoopKind::Serial, |b, ky| {
                let iy = &(&(&task.oy * &c(sy)) + &(&ky * &c(dy))) - &c(pt);
                let row0 = &(&img_base + &(&iy * wi)) + &xcol;
                let wky = &wblk + &(&ky * &c(cg * kw * cb));
                for kx in 0..kw {
                    let colv = b.index(&(&xcol + &c(kx * dx)) - &c(pl));
                    let inside = crate::in_bounds_expr(b, Expr::val(colv), wi);
                    let channel = |b: &mut KernelBuilder, ci: Expr, s: u64| {
                        let tap = &(&wky + &(&ci * &c(kw * cb))) + &c(kx * cb);
                        let ws: Vec<ValId> = (0..nf).map(|f| b.load(vt, pw, &tap + &c(f * w), 4)).collect();
                        let idx = &(&(&row0 + &(&ci * hw)) + &kxo[kx as usize]) - &c(pl);
                        let xv = b.load(F32, 0, idx, 4);
                        fma_broadcast(b, w as u32, xv, &ws, &set(s), 1, 0);
                    };
                    b.if_(
                        inside,
                        |b| {
                            b.for_(c(0), c(rounds), LoopKind::Serial, |b, r| {
                                for s in 0..sets {
                                    channel(b, &(&r * &c(sets)) + &c(s), s);
                                }
                            });
                            for ci in rounds * sets..cg {
                                channel(b, c(ci), 0);
                            }
                        },
                        |_| {},
                    );
                }
            });
            for (f, &slot) in accs.iter().enumerate() {
                let mut v = b.let_(Inst::Get(slot));
                for s in 1..sets {
                    let e = b.let_(Inst::Get(set(s)[f]));
                    v = b.bin(BinOp::FAdd, v, e);
                }
                b.stmt(Stmt::Set(slot, v));
            }
        } else if checked {
            // Several pixels at a border (run-time dims): for each kernel column, one test
            // of the tile's first and last pixel: all inside (the channels without
            // checks), all outside (skipped: a dilated window over a small image has
            // only its centre column inside for every pixel of a row, DeepLab's ASPP),
            // or mixed (each pixel's column checked).
            b.for_(Expr::val(ky_lo), Expr::val(ky_hi), LoopKind::Serial, |b, ky| {
                let iy = &(&(&task.oy * &c(sy)) + &(&ky * &c(dy))) - &c(pt);
                let row0 = &(&img_base + &(&iy * wi)) + &xcol;
                let wky = &wblk + &(&ky * &c(cg * kw * cb));
                for kx in 0..kw {
                    let first = &(&xcol + &c(kx * dx)) - &c(pl);
                    let last = &first + &c((cnt - 1) * sx);
                    let (fv, lv) = (b.index(first.clone()), b.index(last.clone()));
                    let (f_in, l_in) = (crate::in_bounds_expr(b, first, wi), crate::in_bounds_expr(b, last, wi));
                    let all_in = b.bin(BinOp::And, f_in, l_in);
                    let (zero, wiv) = (b.i64(0), ival(b, wi));
                    let (before, after) = (b.cmp(CmpOp::Slt, lv, zero), b.cmp(CmpOp::Sge, fv, wiv));
                    let outside = b.bin(BinOp::Or, before, after);
                    // The channels of this kernel column; `check`: each pixel's column.
                    let channels = |b: &mut KernelBuilder, check: bool| {
                        b.for_(c(0), c(cg), LoopKind::Serial, |b, ci| {
                            let row = &row0 + &(&ci * hw);
                            let tap = &(&wky + &(&ci * &c(kw * cb))) + &c(kx * cb);
                            let ws: Vec<ValId> = (0..nf).map(|f| b.load(vt, pw, &tap + &c(f * w), 4)).collect();
                            for p in 0..cnt {
                                let off = (p * sx) as i64 - pl as i64;
                                let idx = &(&row + &kxo[kx as usize]) + &Expr::c(off);
                                let xv = if check {
                                    // Column ox0*sx + kx*dx + p*sx - pl, inside [0, wi)?
                                    let colv = b.index(&(&xcol + &c(kx * dx)) + &Expr::c(off));
                                    let inside = crate::in_bounds_expr(b, Expr::val(colv), wi);
                                    let at = b.index(idx);
                                    let start = b.index(&row - &xcol);
                                    let at = b.select(inside, at, start);
                                    let v = b.load(F32, 0, Expr::val(at), 4);
                                    let zero = b.let_(Inst::Const { ty: F32, lit: Lit::Float(0.0) });
                                    b.select(inside, v, zero)
                                } else {
                                    b.load(F32, 0, idx, 4)
                                };
                                fma_broadcast(b, w as u32, xv, &ws, &accs, cnt, p);
                            }
                        });
                    };
                    b.if_(all_in, |b| channels(b, false), |b| b.if_(outside, |_| {}, |b| channels(b, true)));
                }
            });
        } else {
            b.for_(Expr::val(ky_lo), Expr::val(ky_hi), LoopKind::Serial, |b, ky| {
                let iy = &(&(&task.oy * &c(sy)) + &(&ky * &c(dy))) - &c(pt);
                let row0 = &(&img_base + &(&iy * wi)) + &xcol;
                let wky = &wblk + &(&ky * &c(cg * kw * cb));
                b.for_(c(0), c(cg), LoopKind::Serial, |b, ci| {
                    let row = &row0 + &(&ci * hw);
                    let tap0 = &wky + &(&ci * &c(kw * cb));
                    for kx in 0..kw {
                        let ws: Vec<ValId> = (0..nf).map(|f| b.load(vt, pw, &tap0 + &c(kx * cb + f * w), 4)).collect();
                        for p in 0..cnt {
                            if taps_in.is_some_and(|t| !t[(p * kw + kx) as usize]) {
                                continue;
                            }
                            // row + kx*dx + p*sx - pl (>= 0: the tile is interior, or
                            // this tap inside the image, known when compiling).
                            let off = (p * sx) as i64 - pl as i64;
                            let idx = &(&row + &kxo[kx as usize]) + &Expr::c(off);
                            let xv = b.load(F32, 0, idx, 4);
                            fma_broadcast(b, w as u32, xv, &ws, &accs, cnt, p);
                        }
                    }
                });
            });
        }
        // Epilogue and stores: lane l of filter vector f is channel blk*cb + f*w + l.
        let co0 = &task.co0;
        let valid_last = mg - (gblocks - 1) * cb;
        for f in 0..nf {
            // Lanes past the last channel exist only in the last block.
            let lanes_here = if f * w >= valid_last { 0 } else { (valid_last - f * w).min(w) };
            let chan = co0 + &c(f * w);
            let body = |b: &mut KernelBuilder, lanes: u64| {
                let bias = has_bias.then(|| {
                    let mut v = b.let_(Inst::Const { ty: vt, lit: Lit::Float(0.0) });
                    for l in 0..lanes {
                        let x = b.load(F32, 2, &chan + &c(l), 4);
                        v = b.let_(Inst::Insert(v, x, l as u32));
                    }
                    v
                });
                // y[img][chan + l][oy][ox0 + p]
                let y0 = &(&(&(&task.img * &(&c(m) * ohw)) + &(&chan * ohw)) + &(&task.oy * ow)) + &ox0;
                // Lanes outer, pixels inner, for the residual's loads and the stores: a
                // lane's pixels are contiguous, one address plus constant offsets,
                // where pixels outer kept an address per lane live (with a run-time
                // plane size they are 16 registers on AVX-512, and spilled: 35% of a
                // run-time stem's time in its stores, 10% pinned).
                let res: Vec<Option<ValId>> = if has_res {
                    let mut r: Vec<ValId> =
                        (0..cnt).map(|_| b.let_(Inst::Const { ty: vt, lit: Lit::Float(0.0) })).collect();
                    for l in 0..lanes {
                        let at = &y0 + &(&c(l) * ohw);
                        for (p, rp) in r.iter_mut().enumerate() {
                            let x = b.load(F32, 3, &at + &c(p as u64), 4);
                            *rp = b.let_(Inst::Insert(*rp, x, l as u32));
                        }
                    }
                    r.into_iter().map(Some).collect()
                } else {
                    vec![None; cnt as usize]
                };
                let outs: Vec<ValId> = (0..cnt)
                    .map(|p| {
                        let mut v = b.let_(Inst::Get(accs[(f * cnt + p) as usize]));
                        if let Some(r) = res[p as usize] {
                            v = b.bin(BinOp::FAdd, v, r);
                        }
                        pixel_epilogue(b, op.act, v, w as u32, bias, None)
                    })
                    .collect();
                for l in 0..lanes {
                    let at = &y0 + &(&c(l) * ohw);
                    for (p, &v) in outs.iter().enumerate() {
                        let x = b.let_(Inst::Extract(v, l as u32));
                        b.store(py, &at + &c(p as u64), x, 4);
                    }
                }
            };
            match task.last {
                Some(is_last) if lanes_here < w => b.if_(is_last, |b| body(b, lanes_here), |b| body(b, w)),
                _ => body(b, w),
            }
        }
    };

    // Loop order: when the layer's weights are larger than about half an L2 cache, each
    // channel block visits every output row before the next block, so the block's
    // weights stay in cache (the input, read once per block, is then the smaller of the
    // two); otherwise rows outer.
    let weights_outer = m * taps * 4 > 256 * 1024;
    let task_of = |b: &mut KernelBuilder, tk: Expr| -> Task {
        // The run-time extents, computed once per task (constants stay constants).
        let [h, wi, oh, ow] = [&h, &wi, &oh, &ow].map(|e| crate::hoist(b, e));
        let ext = Ext { hw: &h * &wi, ohw: &oh * &ow, h, wi, ow };
        let h = &ext.h;
        let (img, oy, blk) = block_task(&tk, &oh, blocks, weights_outer);
        // The kernel rows that fall inside the image for this output row:
        // 0 <= oy*sy + ky*dy - pt < h, as ceil((v) / dy) clamped to [0, kh].
        let bound = |b: &mut KernelBuilder, v: Expr| -> ValId {
            let vv = b.index(v.clone());
            let zero = b.i64(0);
            let pos = b.cmp(CmpOp::Sgt, vv, zero);
            let up = b.index(&v + &c(dy - 1));
            let dyv = b.i64(dy as i64);
            let q = b.bin(BinOp::SDiv, up, dyv);
            b.select(pos, q, zero)
        };
        let lo = bound(b, &c(pt) - &(&oy * &c(sy)));
        let hi0 = bound(b, &(h + &c(pt)) - &(&oy * &c(sy)));
        let khv = b.i64(kh as i64);
        let over = b.cmp(CmpOp::Sgt, hi0, khv);
        let hi = b.select(over, khv, hi0);
        let local = if groups == 1 { blk.clone() } else { blk.modulo(&c(gblocks)) };
        let last = (!mg.is_multiple_of(cb)).then(|| {
            let bv = b.index(local.clone());
            let lb = b.i64(gblocks as i64 - 1);
            b.cmp(CmpOp::Eq, bv, lb)
        });
        let (chan0, co0) = if groups == 1 {
            (c(0), &blk * &c(cb))
        } else {
            let grp = blk.floor_div(&c(gblocks));
            (&grp * &c(cg), &(&grp * &c(mg)) + &(&local * &c(cb)))
        };
        Task { img, oy, blk, chan0, co0, last, kys: (lo, hi), ext }
    };
    let tasks = &(&batch * &oh) * &c(blocks);
    let flops = 2 * nominal(&batch) * m * taps * nominal(&oh) * nominal(&ow);
    if let (true, Some(ow)) = (pinned, known(&ow)) {
        // Pixel tiles along the row; a tile is interior when every tap of every pixel is.
        let tiles: Vec<(u64, u64)> = (0..ow.div_ceil(np)).map(|t| (t * np, np.min(ow - t * np))).collect();
        let interior = |&(ox0, cnt): &(u64, u64)| cnt == np && (0..cnt).all(|p| (0..kw).all(|kx| inside(ox0 + p, kx)));
        let first = tiles.iter().position(interior).unwrap_or(tiles.len());
        let end = first + tiles[first..].iter().take_while(|t| interior(t)).count();
        let ntasks = known(&tasks).expect("known dims");
        let taps_in = |ox0: u64, cnt: u64| -> Vec<bool> {
            (0..cnt).flat_map(|p| (0..kw).map(move |kx| inside(ox0 + p, kx))).collect()
        };
        par(&mut b, ntasks, flops, |b, tk| {
            let task = task_of(b, tk);
            for &(ox0, cnt) in &tiles[..first] {
                tile(b, &task, c(ox0), Some(&taps_in(ox0, cnt)), cnt, false);
            }
            if end > first {
                b.for_(c(first as u64), c(end as u64), LoopKind::Serial, |b, tt| {
                    tile(b, &task, &tt * &c(np), None, np, false)
                });
            }
            for &(ox0, cnt) in &tiles[end..] {
                tile(b, &task, c(ox0), Some(&taps_in(ox0, cnt)), cnt, false);
            }
        });
    } else {
        // Run-time dims, laid out as a known row would be: whole tiles from the left,
        // the last tile of the row ending at its end. The pixels whose taps reach into
        // the left padding are a constant count, and which of their taps do is known
        // when compiling: `lead` pixels (whole tiles) with those taps left out. The
        // pixels whose taps reach into the right padding are the row's last few, and
        // which of their taps do depends only on the residue r of (wi + pl + pr - span)
        // modulo the stride (the last pixel's first column is wi + pr - span - r): the
        // row's last `trail` pixels (whole tiles) compiled once per residue with those
        // taps left out. Between them, whole tiles, all taps inside. A row shorter than
        // its border tiles (the 7-pixel rows of a CNN's last stage) runs its border
        // pixels one at a time around the same interior tiles (see `laid_out`).
        // Layers with more border tiles than that (dilated windows over small maps,
        // DeepLab's rates of 12-36 over a 28-pixel row) run as checked tiles, each
        // kernel column tested once per tile: all inside, all outside, or each pixel
        // checked.
        let pr = g.pad_end[1];
        let span = (kw - 1) * dx + 1;
        // Border tiles compiled (left, then right per residue); past a few the row
        // takes the checked tiles only.
        let borders = border_tiles(pl.div_ceil(sx), pr.div_ceil(sx), sx, np);
        let (lead, trail) = borders.unwrap_or((0, 0));
        let left_in =
            |ox0: u64| -> Vec<bool> { (0..np).flat_map(|p| (0..kw).map(move |kx| col(ox0 + p, kx) >= 0)).collect() };
        // Pixel ow - 1 - j's column kx is wi + pr - span - r - j*sx + kx*dx: inside the
        // row when that is below wi.
        let right_in = |r: u64, ox0: u64| -> Vec<bool> {
            (0..np)
                .flat_map(|p| {
                    let j = trail - 1 - (ox0 + p);
                    (0..kw).map(move |kx| kx * dx + pr < span + r + j * sx)
                })
                .collect()
        };
        par_expr(&mut b, &tasks, &ow.scale((taps * cb * 2) as i64), |b, tk| {
            let task = task_of(b, tk);
            let ow = task.ext.ow.clone();
            let wi = task.ext.wi.clone();
            // Pixels [from, to) as checked tiles.
            let checked = |b: &mut KernelBuilder, from: &Expr, to: &Expr| {
                let count = to - from;
                let tiles = crate::hoist(b, &count.floor_div(&c(np)));
                b.for_(c(0), tiles.clone(), LoopKind::Serial, |b, tt| {
                    tile(b, &task, from + &(&tt * &c(np)), None, np, true)
                });
                let rem_at = from + &(&tiles * &c(np));
                binary_tiles(b, np, &count.modulo(&c(np)), &rem_at, &mut |b, at, r| tile(b, &task, at, None, r, true));
            };
            // The laid-out row, three parts:
            // - border tiles, compiled with their padding taps left out, when the row
            //   holds them ([`row_fits`]; `fits`, an i1 value; `None`: a row with no
            //   padding);
            // - the interior, whole tiles in a loop, the last one ending at the
            //   interior's end (it computes some pixels again, to the same values: no
            //   parameter aliases another): [lead, ow - trail) when the row fits, else
            //   the pixels none of whose taps reach the padding, [min(lp, ow), rs);
            // - the other pixels one at a time, each kernel column checked: the borders
            //   of a row that does not fit (the 7-pixel rows of late stages), or
            //   the whole row when its interior is narrower than a tile.
            // One compiled tile per part (and border tile): a second, checked set of
            // tiles for short rows and a tile per binary digit of the remainder took
            // most of a CNN's `llc` time, in its loop strength reduction
            // (docs/performance.md, twenty-ninth session).
            let laid_out = |b: &mut KernelBuilder, fits: Option<ValId>| {
                // The first pixel whose taps all lie right of the left padding (clamped
                // to the row).
                let lp_end = crate::hoist(b, &c(pl.div_ceil(sx)).min_with(&ow));
                let (m0, m1) = match fits {
                    None => (c(0), ow.clone()),
                    Some(fits) => {
                        b.if_(
                            fits,
                            |b| {
                                for t in (0..lead).step_by(np as usize) {
                                    tile(b, &task, c(t), Some(&left_in(t)), np, false);
                                }
                            },
                            |_| {},
                        );
                        // The first pixel with a tap past the row's end (clamped).
                        let q = &(&wi + &c(pl + sx)) - &c(span);
                        let rs = crate::hoist(b, &q.floor_div(&c(sx)).max_with(&lp_end).min_with(&ow));
                        let sel = |b: &mut KernelBuilder, a: &Expr, e: &Expr| {
                            let (av, ev) = (ival(b, a), ival(b, e));
                            Expr::val(b.select(fits, av, ev))
                        };
                        (sel(b, &c(lead), &lp_end), sel(b, &(&ow - &c(trail)), &rs))
                    }
                };
                let inner = crate::hoist(b, &(&m1 - &m0));
                let (iv, npv) = (ival(b, &inner), b.i64(np as i64));
                // Interior tiles run when the interior holds one; in a row that fits,
                // whenever it is not empty (`fits` guarantees that a tile ending at its
                // end starts right of the left padding).
                let whole = b.cmp(CmpOp::Sge, iv, npv);
                let room = match fits {
                    None => whole,
                    Some(fits) => {
                        let zero = b.i64(0);
                        let some = b.cmp(CmpOp::Sgt, iv, zero);
                        b.select(fits, some, whole)
                    }
                };
                b.if_(
                    room,
                    |b| {
                        let tiles = crate::hoist(b, &(&inner + &c(np - 1)).floor_div(&c(np)));
                        let last = crate::hoist(b, &(&m1 - &c(np)));
                        b.for_(c(0), tiles, LoopKind::Serial, |b, tt| {
                            let at = ival(b, &(&m0 + &(&tt * &c(np))));
                            let lv = ival(b, &last);
                            let at = b.bin(BinOp::SMin, at, lv);
                            tile(b, &task, Expr::val(at), None, np, false)
                        });
                    },
                    |_| {},
                );
                // The pixels one at a time: [0, left) and [right, ow), as one loop.
                let (left, right) = {
                    let zero = b.i64(0);
                    let owv = ival(b, &ow);
                    match fits {
                        None => (zero, b.select(room, owv, zero)),
                        Some(fits) => {
                            // A row that fits has none; one that does not, its borders
                            // (or all of it, when its interior holds no tile).
                            let (lv, m1v) = (ival(b, &lp_end), ival(b, &m1));
                            let (l, r) = (b.select(room, lv, zero), b.select(room, m1v, zero));
                            (b.select(fits, zero, l), b.select(fits, owv, r))
                        }
                    }
                };
                let (left, right) = (Expr::val(left), Expr::val(right));
                let count = &left + &(&ow - &right);
                b.for_(c(0), count, LoopKind::Serial, |b, i| {
                    let (iv, lv) = (ival(b, &i), ival(b, &left));
                    let before = b.cmp(CmpOp::Slt, iv, lv);
                    let after = ival(b, &(&right + &(&i - &left)));
                    let px = b.select(before, iv, after);
                    tile(b, &task, Expr::val(px), None, 1, true)
                });
                let Some(fits) = fits.filter(|_| trail > 0) else { return };
                let tail = &ow - &c(trail);
                let right = |b: &mut KernelBuilder, r: u64| {
                    for t in (0..trail).step_by(np as usize) {
                        tile(b, &task, &tail + &c(t), Some(&right_in(r, t)), np, false);
                    }
                };
                let tiles = |b: &mut KernelBuilder| {
                    if sx == 1 {
                        right(b, 0);
                    } else {
                        let rv = ival(b, &(&(&wi + &c(pl + pr)) - &c(span)).modulo(&c(sx)));
                        for r in 0..sx {
                            let k = b.i64(r as i64);
                            let is = b.cmp(CmpOp::Eq, rv, k);
                            b.if_(is, |b| right(b, r), |_| {});
                        }
                    }
                };
                b.if_(fits, tiles, |_| {});
            };
            if borders.is_none() {
                checked(b, &c(0), &ow);
            } else if lead + trail == 0 {
                laid_out(b, None);
            } else {
                // [`row_fits`] at run time (14 pixels in tiles of 7: two border tiles,
                // as a known row; 14 in tiles of 6: an interior tile over pixels 2-7).
                let owv = ival(b, &ow);
                let need = b.i64((lead + trail) as i64);
                let apart = b.cmp(CmpOp::Sge, owv, need);
                let gap = ival(b, &(&ow - &c(lead + trail)));
                let zero = b.i64(0);
                let empty = b.cmp(CmpOp::Eq, gap, zero);
                let start = ival(b, &(&ow - &c(trail + np)));
                let lp = b.i64(pl.div_ceil(sx) as i64);
                let clear = b.cmp(CmpOp::Sge, start, lp);
                let between = b.bin(BinOp::Or, empty, clear);
                let fits = b.bin(BinOp::And, apart, between);
                laid_out(b, Some(fits));
            }
        });
    }
    Ok(b.finish())
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
    fn run_time_rows_are_costed_as_they_are_laid_out() {
        // 28 pixels, one reaching into each padding: tiles of 7 are a border tile on
        // each side and two interior tiles; tiles of 9 are as many, the last interior
        // one overlapping (36 pixels computed for 28).
        let row = |ow| Row::RunTime { ow, left: 1, right: 1, sx: 1 };
        assert_eq!(row(28).layout(7), (4, 0, 0));
        assert_eq!(row(28).layout(9), (4, 0, 0));
        // 14 pixels: tiles of 7 are the two border tiles, as in a known row; tiles of
        // 6 the border tiles and one interior tile over pixels 2-7. 7 pixels in tiles
        // of 5: border tiles would overlap, so the interior's 5 pixels as a tile and
        // the two border pixels one at a time; 5 pixels with tiles of 7: all one at a
        // time.
        assert_eq!(row(14).layout(7), (2, 0, 0));
        assert_eq!(row(14).layout(6), (3, 0, 0));
        assert_eq!(row(7).layout(5), (1, 0, 2));
        assert_eq!(row(5).layout(7), (0, 0, 5));
        // More border tiles than the kernel compiles: checked tiles, as a known row.
        assert_eq!(Row::RunTime { ow: 28, left: 12, right: 12, sx: 1 }.layout(4), (7, 0, 0));
        // Measured on Zen 4 (AVX-512): ResNet-50's 28-pixel layers at run-time dims
        // took 9-pixel tiles when the choice looked at the row's interior only (26
        // pixels), 1.3x the time of the pinned layer's 7-pixel tiles; costed as laid
        // out they take the pinned layer's tile.
        let pinned = tile_shape(16, 128, 28, 1152).1;
        assert_eq!(tile_shape_in(16, 32, 128, row(28), 1152).1, pinned);
    }

    #[test]
    fn run_time_layers_are_judged_at_their_own_scale() {
        use dlc_ir::{Dim, Shape, TensorType};
        // A stride-32 layer of a 224x224 input has 7x7 pixels, a stride-2 one 112x112; a
        // known dim stays what it is; a batch symbol does not count.
        let at =
            |d: i64| Dim::from_expr(&(&Expr::sym("H") - &Expr::c(1)).floor_div(&Expr::c(d)) + &Expr::c(1)).unwrap();
        let y =
            |h: Dim, w: Dim| TensorType { dtype: DType::F32, shape: Shape(vec![Dim::sym("N"), Dim::Fixed(8), h, w]) };
        assert_eq!(nominal_pixels(&y(at(32), at(32))), 49);
        assert_eq!(nominal_pixels(&y(at(2), at(2))), 112 * 112);
        assert_eq!(nominal_pixels(&y(Dim::Fixed(5), at(4))), 5 * 56);
        // The cost models then give a 7x7 1x1 layer of 440 channels the blocked kernel
        // (its pinned choice) and a 112x112 one the pixel-vector GEMM.
        let blocked = |p: u64| tile_shape(8, 440, pointwise_rows(p).1, 440).0 < crate::conv1x1::cost(8, 440, p, 440);
        assert!(blocked(49));
        assert!(!blocked(112 * 112));
    }

    #[test]
    fn packing_puts_each_weight_at_its_block_lane() {
        let [m, c, kh, kw] = [5u64, 2, 2, 3];
        let w: Vec<f32> = (0..m * c * kh * kw).map(|i| i as f32).collect();
        let cb = 4;
        let p = pack(&w, [m, c, kh, kw], cb);
        assert_eq!(p.len() as u64, 2 * kh * c * kw * cb);
        for co in 0..m {
            for ci in 0..c {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let dst = (((co / cb * kh + ky) * c + ci) * kw + kx) * cb + co % cb;
                        assert_eq!(p[dst as usize], w[(((co * c + ci) * kh + ky) * kw + kx) as usize]);
                    }
                }
            }
        }
        // The padding lanes of the last block are zero.
        assert!((0..kh * c * kw).all(|t| (1..cb).all(|l| p[((kh * c * kw + t) * cb + l) as usize] == 0.0)));
    }
}
