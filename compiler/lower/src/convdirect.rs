//! Direct convolution with vectors along output pixels, f32: one group (or depthwise),
//! dilation 1, stride 1 or 2. A tile is `MR` output channels by `NR` consecutive pixels
//! of one output row; for each input channel and kernel row (skipped where it falls in
//! the padding), each kernel column loads the tile's input pixels once (stride 2: two
//! vectors, their even lanes kept) and every channel's weight is broadcast into an
//! FMA. Tile positions along the row are unrolled at compile time, so the tiles that
//! touch the left or right padding are known and use masked loads, the padding reading
//! as zeros. The epilogue (bias, residual, activation) runs in registers. A task is an
//! output row (a depthwise row split further into groups of 16 channels).
use crate::conv1x1::{lane_mask, pixel_epilogue, store_lanes};
use crate::gemm::{row_blocks, zero_accumulators};
use crate::{par, LowerError, Node, Target};
use dlc_ir::ops::{Conv, PoolGeometry};
use dlc_ir::DType;
use dlc_kir::{Access, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

fn lin(terms: &[(&Expr, u64)], k: u64) -> Expr {
    terms.iter().fold(c(k), |a, (i, s)| &a + &(*i * &c(*s)))
}

/// Whether [`conv_direct`] handles this Conv for vectors of `w` lanes: one group or
/// depthwise, dilation 1, equal strides of 1 or 2, f32, at most 16 pixel tiles per
/// output row, kernels at most 7 wide.
pub fn applies(g: &PoolGeometry, op: &Conv, n: &Node, t: &Target) -> bool {
    let w = t.f32_lanes.max(1) as u64;
    let (Ok(x), Ok(wd)) = (n.fixed_in(0), n.fixed_in(1)) else { return false };
    if x.len() != 4 || wd.len() != 4 {
        return false;
    }
    let c = x[1];
    let depthwise = op.group as u64 == c && wd[0] == c && wd[1] == 1;
    n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32)
        && (op.group == 1 || depthwise)
        && g.dilations == [1, 1]
        && g.strides[0] == g.strides[1]
        && (g.strides[1] == 1 || g.strides[1] == 2)
        && g.output[1].div_ceil(2 * w) <= 16
        && g.kernel[1] <= 7
}

/// The direct convolution kernel of node `n` (see [`applies`]) with geometry `g` for
/// target `t`. Parameters: X, W, the optional bias and residual, then Y.
pub fn conv_direct(name: &str, n: &Node, op: &Conv, g: &PoolGeometry, t: &Target) -> Result<Kernel, LowerError> {
    let (x, wd) = (n.fixed_in(0)?, n.fixed_in(1)?);
    let (batch, ch, h, wi) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    // Depthwise (one input channel per output channel): one channel per tile, its own input.
    let depthwise = op.group > 1;
    let [oh, ow] = g.output;
    let s = g.strides[1];
    if s != 1 && s != 2 {
        return Err(n.error(format!("direct convolution with stride {s}")));
    }
    let (pt, pl) = (g.pad_begin[0], g.pad_begin[1]);
    // Tile width: two full vectors on wide rows; on narrow rows (the 14- and 7-pixel
    // rows of late CNN layers) one vector, of half width if that wastes fewer lanes, with
    // more channels per tile to keep the FMA units busy.
    let vw = t.f32_lanes.max(1) as u64;
    let regs32 = vw == 16 || vw == 4;
    let waste = |lanes: u64| ow.div_ceil(lanes) * lanes - ow;
    let (w, nh) = if depthwise && ow > vw {
        // Depthwise: one channel per tile, so the accumulators are pixel vectors only
        // (enough of them to cover the FMA latency): a row split into equal tiles of up
        // to 8 vectors.
        let tiles = ow.div_ceil(vw * 8);
        (vw, ow.div_ceil(tiles).div_ceil(vw))
    } else if ow >= 2 * vw || waste(2 * vw) <= waste(vw) {
        (vw, 2u64)
    } else if vw >= 8 && waste(vw / 2) < waste(vw) {
        (vw / 2, 1)
    } else {
        (vw, 1)
    };
    let nr = w * nh;
    let mr = match (nh, regs32) {
        _ if depthwise => 1,
        (2, true) => 8,
        (2, false) => 6,
        (_, true) => 16,
        (_, false) => 12,
    };
    let vt = Ty::vec(Elem::F32, w as u32);
    let n_in = n.inputs.len();
    let (has_bias, has_res) = (n_in >= 3, n_in == 4);
    let py = n_in as u32;
    // Stride 2 keeps the even lanes of two loaded vectors, in the order one in-lane
    // shuffle gives (x86 `vshufps`: in each 128-bit block two from the first vector,
    // then two from the second); the accumulators keep that order and `unperm` restores
    // the pixel order once per output vector, instead of a cross-lane shuffle per tap.
    let even: Vec<u32> = (0..w)
        .map(|j| if j % 4 < 2 { j / 4 * 4 + 2 * (j % 4) } else { w + j / 4 * 4 + 2 * (j % 4 - 2) })
        .map(|e| e as u32)
        .collect();
    let unperm: Vec<u32> = (0..w as u32).map(|k| even.iter().position(|&e| e / 2 == k).unwrap_or(0) as u32).collect();
    // The input vector for output pixels ox0.. (`lanes` of them), kernel column kx,
    // from the input row starting at element `row`: contiguous or strided, masked at
    // the borders.
    let input = |b: &mut KernelBuilder, row: &Expr, ox0: u64, kx: u64, lanes: u64| -> ValId {
        let first = (ox0 * s + kx) as i64 - pl as i64;
        let last = ((ox0 + lanes - 1) * s + kx) as i64 - pl as i64;
        let interior = first >= 0 && last < wi as i64 && lanes == w;
        let at = |off: i64| row + &Expr::c(first + off);
        if interior && s == 1 {
            return b.load(vt, 0, at(0), 4);
        }
        if interior && s == 2 && last + 1 < wi as i64 {
            let lo = b.load(vt, 0, at(0), 4);
            let hi = b.load(vt, 0, at(w as i64), 4);
            return b.let_(Inst::Shuffle(lo, hi, even.clone()));
        }
        if s == 1 {
            // A border tile: one masked load; lanes in the padding (or past the row's
            // valid pixels) are not read and come back 0.
            let mask: Vec<bool> =
                (0..w).map(|l| l < lanes && first + (l as i64) >= 0 && first + (l as i64) < wi as i64).collect();
            let mv = lane_mask(b, &mask);
            return b.let_(Inst::Load { ty: vt, param: 0, index: at(0), align: 4, mask: Some(mv) });
        }
        // Stride 2: two masked loads over the 2w-element span, then the even lanes
        // (lanes past `lanes` hold values that are never stored).
        let span =
            |off: u64| -> Vec<bool> { (0..w).map(|l| (0..wi as i64).contains(&(first + (off + l) as i64))).collect() };
        let m0 = lane_mask(b, &span(0));
        let lo = b.let_(Inst::Load { ty: vt, param: 0, index: at(0), align: 4, mask: Some(m0) });
        let m1 = lane_mask(b, &span(w));
        let hi = b.let_(Inst::Load { ty: vt, param: 0, index: at(w as i64), align: 4, mask: Some(m1) });
        b.let_(Inst::Shuffle(lo, hi, even.clone()))
    };
    let tile = |b: &mut KernelBuilder, img: &Expr, oy: &Expr, m0: Expr, rows: u64, ox0: u64| {
        let width = (ow - ox0).min(nr);
        let halves: Vec<u64> = (0..nh).map(|hh| width.saturating_sub(hh * w).min(w)).collect();
        let accs = zero_accumulators(b, vt, rows * nh);
        b.for_(c(0), c(cg), LoopKind::Serial, |b, ci| {
            let chan = if depthwise { m0.clone() } else { ci.clone() };
            let plane = &(&(img * &c(ch)) + &chan) * &c(h * wi);
            b.for_(c(0), c(kh), LoopKind::Serial, |b, ky| {
                // iy = oy*s + ky - pad_top, skipped outside the image.
                let iy = &(&(oy * &c(s)) + &ky) - &c(pt);
                let inside = crate::in_bounds(b, iy.clone(), h);
                b.if_(
                    inside,
                    |b| {
                        let row = &plane + &(&iy * &c(wi));
                        for kx in 0..kw {
                            let xs: Vec<Option<ValId>> = (0..nh)
                                .map(|hh| {
                                    let lanes = halves[hh as usize];
                                    (lanes > 0).then(|| input(b, &row, ox0 + hh * w, kx, lanes))
                                })
                                .collect();
                            for r in 0..rows {
                                let wat = lin(&[(&(&m0 + &c(r)), cg * kh * kw), (&ci, kh * kw), (&ky, kw)], kx);
                                let wv = b.load(F32, 1, wat, 4);
                                let a = b.let_(Inst::Splat(wv, w as u32));
                                for (hh, xv) in xs.iter().enumerate() {
                                    let Some(xv) = xv else { continue };
                                    let slot = accs[r as usize * nh as usize + hh];
                                    let cur = b.let_(Inst::Get(slot));
                                    let next = b.let_(Inst::Fma(a, *xv, cur));
                                    b.stmt(Stmt::Set(slot, next));
                                }
                            }
                        }
                    },
                    |_| {},
                );
            });
        });
        for r in 0..rows {
            let chn = &m0 + &c(r);
            let yrow = lin(&[(img, m * oh * ow), (&chn, oh * ow), (oy, ow)], ox0);
            let bias = has_bias.then(|| {
                let bv = b.load(F32, 2, chn.clone(), 4);
                b.let_(Inst::Splat(bv, w as u32))
            });
            for (hh, &lanes) in halves.iter().enumerate() {
                if lanes == 0 {
                    continue;
                }
                let at = &yrow + &c(hh as u64 * w);
                let mut v = b.let_(Inst::Get(accs[r as usize * nh as usize + hh]));
                if s == 2 {
                    v = b.let_(Inst::Shuffle(v, v, unperm.clone()));
                }
                let res = has_res.then(|| (3, at.clone(), lanes));
                let v = pixel_epilogue(b, op.act, v, w as u32, bias, res);
                store_lanes(b, py, at, v, w as u32, lanes);
            }
        }
    };
    let flops = 2 * batch * m * cg * kh * kw * oh * ow;
    // A task is an output row; a depthwise row is split further into groups of 16
    // channels (the 7- and 14-row layers of late stages would otherwise give two threads
    // 7 or 14 unequal tasks).
    let group = if depthwise { 16.min(m) } else { m };
    let groups = m.div_ceil(group);
    let mut params = vec![Access::Read; n_in];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    par(&mut b, batch * oh * groups, flops, |b, task| {
        // Channel groups outer: a run of consecutive tasks covers whole channel planes.
        let rows = batch * oh;
        let row = task.modulo(&c(rows));
        let g0 = &task.floor_div(&c(rows)) * &c(group);
        let img = row.floor_div(&c(oh));
        let oy = row.modulo(&c(oh));
        let channels = |b: &mut KernelBuilder, count: u64| {
            for tt in 0..ow.div_ceil(nr) {
                let ox0 = tt * nr;
                row_blocks(b, count, mr, &|b, m0, rows| tile(b, &img, &oy, &g0 + &m0, rows, ox0));
            }
        };
        if m.is_multiple_of(group) {
            return channels(b, group);
        }
        let gv = b.index(g0.clone());
        let lastg = b.i64(((groups - 1) * group) as i64);
        let last = b.cmp(CmpOp::Eq, gv, lastg);
        b.if_(last, |b| channels(b, m - (groups - 1) * group), |b| channels(b, group));
    });
    Ok(b.finish())
}
