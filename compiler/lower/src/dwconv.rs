//! Depthwise convolution over run-time image dims, f32: one input channel per output
//! channel, stride 1 or 2 along the row (any stride down the columns), dilation 1, the
//! shape of the depthwise layers of MobileNets and EfficientNets and of text models
//! (which keep the width). At stride 2 a vector of output pixels reads two vectors of
//! input and keeps their even lanes.
//!
//! A task is one channel plane of one image. Each output row is cut into tiles of `NV`
//! vectors of pixels (`NV` accumulators in registers, one FMA chain each); for each
//! kernel row inside the image and each kernel column, a tile loads `NV` input vectors and
//! multiplies them by the tap's weight, broadcast once. Tiles whose every tap lies in the
//! row run in a loop of run-time count without masks, then the whole vectors left before
//! the first pixel whose taps leave the row as tiles of two and one vectors; the tiles at
//! the row's ends (the left padding, and from there to the end) build their lane masks at
//! run time, once per tile (they depend on the columns only), so padding reads as zero
//! and no lane outside the row or past the last output pixel is touched; a row of more
//! than one vector and at most two is one masked tile of two vectors. At stride 2 the
//! unmasked tiles also stop where a vector's second load would read past the row. Bias, residual and activation are applied in
//! registers before the store. Fixed-shape depthwise layers keep their own kernel
//! ([`crate::convdirect`]); this one is what run-time dims get instead of the plain loop
//! nests.
use crate::conv1x1::{iota, lanes_in, pixel_epilogue};
use crate::gemm::zero_accumulators;
use crate::{hoist, par_expr, LowerError, Node, Target};
use dlc_ir::ops::{Conv, Window};
use dlc_ir::DType;
use dlc_kir::{BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

/// Vectors per tile: enough independent FMA chains to cover the FMA latency.
const NV: u64 = 4;

/// Whether [`dwconv`] takes this Conv: depthwise (group = channels = filters, one
/// input channel per filter), f32, known channels, 2-D, unit stride along the row,
/// dilation 1.
pub fn applies(n: &Node, op: &Conv, g: &Window) -> bool {
    let x = &n.inputs[0].shape;
    let Some(ch) = x.0.get(1).and_then(|d| d.fixed()) else { return false };
    let Ok(wd) = n.fixed_in(1) else { return false };
    x.rank() == 4
        && wd.len() == 4
        && op.group as u64 == ch
        && ch > 1
        && wd[0] == ch
        && wd[1] == 1
        && (g.strides[1] == 1 || g.strides[1] == 2)
        && g.dilations == [1, 1]
        && n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32)
}

/// The depthwise convolution kernel of node `n` (see [`applies`]) with window `g` for
/// target `t`. Parameters: X, W, the optional bias and residual, then Y.
pub fn dwconv(name: &str, n: &Node, op: &Conv, g: &Window, t: &Target) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let wd = n.fixed_in(1)?;
    let [batch, ch, h, wi] = <[Expr; 4]>::try_from(x).map_err(|_| n.error("only 2-D convolutions are supported"))?;
    let ch = ch.as_const().ok_or_else(|| n.error("the channel dim must be known"))? as u64;
    let (kh, kw) = (wd[2], wd[3]);
    let [oh, ow] = g.output.clone();
    let (sy, sx, pt, pl) = (g.strides[0], g.strides[1], g.pad_begin[0], g.pad_begin[1]);
    let w = t.f32_lanes.max(1);
    let vt = Ty::vec(Elem::F32, w);
    let tile_px = NV * w as u64;
    // Stride 2 along the row: the `2w` input elements of a vector's pixels, two loads,
    // their even lanes kept.
    let even: Vec<u32> = (0..w).map(|k| 2 * k).collect();

    let (has_bias, has_res, py, mut b) = crate::conv1x1::conv_builder(name, n);
    let per = (&oh * &ow).scale((2 * kh * kw) as i64);
    par_expr(&mut b, &(&batch * &c(ch)), &per, |b, plane| {
        let [h, wi, oh, ow] = [&h, &wi, &oh, &ow].map(|e| hoist(b, e));
        // The first pixel whose taps leave the row; at stride 2 also the first whose
        // vector's second load (2w elements from its first tap) would read one element
        // past the row (the odd element after the last tap, which the shuffle drops).
        let mut right = g.interior(1, &wi, &ow).1;
        if sx == 2 {
            let reach = kw as i64 - 1 - pl as i64;
            right = right.min_with(&(&wi - &Expr::c(reach)).floor_div(&c(2)));
        }
        let right = hoist(b, &right);
        let chan = plane.modulo(&c(ch));
        let x_plane = &plane * &(&h * &wi);
        let y_plane = &plane * &(&oh * &ow);
        let lanes = iota(b, w);
        let bias = has_bias.then(|| {
            let v = b.load(F32, 2, chan.clone(), 4);
            b.let_(Inst::Splat(v, w))
        });
        b.for_(c(0), oh.clone(), LoopKind::Serial, |b, oy| {
            // The kernel rows inside the image: 0 <= oy*sy + ky - pt < h.
            let top = b.index(&c(pt) - &(&oy * &c(sy)));
            let zero = b.i64(0);
            let pos = b.cmp(CmpOp::Sgt, top, zero);
            let ky_lo = b.select(pos, top, zero);
            let bottom = b.index(&(&h + &c(pt)) - &(&oy * &c(sy)));
            let khv = b.i64(kh as i64);
            let over = b.cmp(CmpOp::Sgt, bottom, khv);
            let ky_hi = b.select(over, khv, bottom);
            // One tile at pixel ox0; `masked`: lanes checked against the row and the
            // output's end at run time.
            let tile = |b: &mut KernelBuilder, ox0: Expr, masked: bool, nv: u64| {
                let accs = zero_accumulators(b, vt, nv);
                // A masked tile's load masks, per kernel column and vector (two per vector
                // at stride 2), computed once: they depend on the columns only.
                let col_of = |kx: u64, v: u64| &(&(&(&ox0 + &c(v * w as u64)) * &c(sx)) + &c(kx)) - &c(pl);
                let masks: Vec<Vec<ValId>> = if masked {
                    (0..kw)
                        .flat_map(|kx| (0..nv).map(move |v| (kx, v)))
                        .map(|(kx, v)| {
                            let col = col_of(kx, v);
                            if sx == 2 {
                                vec![
                                    lanes_in(b, lanes, &col, &c(0), &wi, w),
                                    lanes_in(b, lanes, &(&col + &c(w as u64)), &c(0), &wi, w),
                                ]
                            } else {
                                let m = lanes_in(b, lanes, &col, &c(0), &wi, w);
                                let o = lanes_in(b, lanes, &(&ox0 + &c(v * w as u64)), &c(0), &ow, w);
                                vec![b.bin(BinOp::And, m, o)]
                            }
                        })
                        .collect()
                } else {
                    vec![]
                };
                b.for_(Expr::val(ky_lo), Expr::val(ky_hi), LoopKind::Serial, |b, ky| {
                    let iy = &(&(&oy * &c(sy)) + &ky) - &c(pt);
                    let row = &x_plane + &(&iy * &wi);
                    for kx in 0..kw {
                        let wat = &(&(&chan * &c(kh * kw)) + &(&ky * &c(kw))) + &c(kx);
                        let wv = b.load(F32, 1, wat, 4);
                        let ws = b.let_(Inst::Splat(wv, w));
                        for v in 0..nv {
                            // Input column of lane 0: (ox0 + v*w) * sx + kx - pl.
                            let col = col_of(kx, v);
                            let mk = masks.get((kx * nv + v) as usize);
                            let xv = if sx == 2 {
                                // Lanes outside the row read as zero (the output's end
                                // is masked at the store; reads stay inside the row).
                                let half = |b: &mut KernelBuilder, at: Expr, k: usize| {
                                    if let Some(mk) = mk {
                                        let m = mk[k];
                                        b.let_(Inst::Load {
                                            ty: vt,
                                            param: 0,
                                            index: &row + &at,
                                            align: 4,
                                            mask: Some(m),
                                        })
                                    } else {
                                        b.load(vt, 0, &row + &at, 4)
                                    }
                                };
                                let lo = half(b, col.clone(), 0);
                                let hi = half(b, &col + &c(w as u64), 1);
                                b.let_(Inst::Shuffle(lo, hi, even.clone()))
                            } else if let Some(mk) = mk {
                                b.let_(Inst::Load { ty: vt, param: 0, index: &row + &col, align: 4, mask: Some(mk[0]) })
                            } else {
                                b.load(vt, 0, &row + &col, 4)
                            };
                            let cur = b.let_(Inst::Get(accs[v as usize]));
                            let next = b.let_(Inst::Fma(ws, xv, cur));
                            b.stmt(Stmt::Set(accs[v as usize], next));
                        }
                    }
                });
                for v in 0..nv {
                    let px = &ox0 + &c(v * w as u64);
                    let yat = &(&y_plane + &(&oy * &ow)) + &px;
                    let mut acc = b.let_(Inst::Get(accs[v as usize]));
                    let m = masked.then(|| lanes_in(b, lanes, &px, &c(0), &ow, w));
                    if let Some(bv) = bias {
                        acc = b.bin(BinOp::FAdd, acc, bv);
                    }
                    if has_res {
                        let r = b.let_(Inst::Load { ty: vt, param: 3, index: yat.clone(), align: 4, mask: m });
                        acc = b.bin(BinOp::FAdd, acc, r);
                    }
                    let y = pixel_epilogue(b, op.act, acc, w, None, None);
                    b.stmt(Stmt::Store { param: py, index: yat, value: y, align: 4, mask: m });
                }
            };
            // Tiles from 0: masked, of one vector each, while a tile reaches into the left
            // padding; then unmasked tiles of `NV` vectors while the last tap stays in the
            // row, and the fewer whole vectors left before that point as tiles of 2 and 1
            // vectors (a 28-pixel row: one masked vector, one unmasked tile of two, one
            // masked vector); then masked one-vector tiles to the end (a short row, as the
            // late layers' 7 or 14 pixels, computes no vector wholly past its end).
            // A row of more than one vector and at most two (the 14-pixel rows of late
            // layers at 8 lanes): one masked tile of two vectors, two FMA chains instead
            // of two one-vector tiles one after the other.
            let short = {
                let owv = crate::ival(b, &ow);
                let (one, two) = (b.i64(w as i64), b.i64(2 * w as i64));
                let above = b.cmp(CmpOp::Sgt, owv, one);
                let within = b.cmp(CmpOp::Sle, owv, two);
                b.bin(BinOp::And, above, within)
            };
            b.if_(
                short,
                |b| tile(b, c(0), true, 2),
                |b| {
                    let head = pl.div_ceil(w as u64);
                    let head_end = c(head * w as u64).min_with(&ow);
                    b.for_(c(0), c(head), LoopKind::Serial, |b, i| {
                        let ox0 = &i * &c(w as u64);
                        let inside = crate::in_bounds_expr(b, ox0.clone(), &ow);
                        b.if_(inside, |b| tile(b, ox0, true, 1), |_| {});
                    });
                    // Interior tiles: from head_end, while every pixel's taps lie in the row (its
                    // pixels below the window's `right`).
                    let count = hoist(b, &(&right - &head_end).floor_div(&c(tile_px)).max_with(&c(0)));
                    b.for_(c(0), count.clone(), LoopKind::Serial, |b, i| {
                        tile(b, &head_end + &(&i * &c(tile_px)), false, NV)
                    });
                    let mut rest = &head_end + &(&count * &c(tile_px));
                    let whole = hoist(b, &(&right - &rest).floor_div(&c(w as u64)).max_with(&c(0)));
                    for nv in (0..).map(|k| (NV / 2) >> k).take_while(|&v| v > 0) {
                        let set = crate::ival(b, &whole.floor_div(&c(nv)).modulo(&c(2)));
                        let one = b.i64(1);
                        let is = b.cmp(CmpOp::Eq, set, one);
                        let at = rest.clone();
                        b.if_(is, |b| tile(b, at, false, nv), |_| {});
                        rest = &rest + &(&whole.floor_div(&c(nv)).modulo(&c(2)) * &c(nv * w as u64));
                    }
                    let rest = hoist(b, &rest);
                    let rest_vectors = (&(&ow - &rest) + &c(w as u64 - 1)).floor_div(&c(w as u64)).max_with(&c(0));
                    b.for_(c(0), rest_vectors, LoopKind::Serial, |b, i| tile(b, &rest + &(&i * &c(w as u64)), true, 1));
                },
            );
        });
    });
    Ok(b.finish())
}
