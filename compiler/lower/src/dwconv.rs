//! Depthwise convolution over run-time image dims, f32: one input channel per output
//! channel, stride 1 or 2 along the row (any stride down the columns), dilation 1, the
//! shape of the depthwise layers of MobileNets and EfficientNets and of text models
//! (which keep the width). At stride 2 a vector of output pixels reads two vectors of
//! input and keeps their even lanes.
//!
//! A task is up to four channel planes of one image. Rows of at most two vectors (the
//! late layers' 7 and 14 pixels) run the task's planes side by side, one FMA chain per
//! plane and vector, lane masks built once per task. Longer rows run plane by plane,
//! laid out in columns of tiles, the same for every row: masked one-vector columns
//! while a tile reaches into the left padding, unmasked columns of `NV` vectors (`NV`
//! accumulators, one FMA chain each) while every tap lies in the row, the whole vectors
//! left before the first pixel whose taps leave the row as columns of two and one
//! vectors, then masked one-vector columns to the end. A column runs down the plane:
//! its lane masks (built at run time, so padding reads as zero and no lane outside the
//! row or past the last output pixel is touched) depend on the columns only and are
//! built once per plane, and it takes its rows in blocks (four rows of one vector, two
//! of two or four: one FMA chain per row and vector, where a lone vector's chain through
//! every tap is latency-bound), the kernel rows outside the image read as nothing by
//! row masks unless the block's taps are all inside. For each kernel row and column a
//! tile loads its input vectors and multiplies them by the tap's weight, broadcast
//! once. At stride 2 the unmasked tiles also stop where a vector's second load would
//! read past the row. Bias, residual and activation are applied in registers before the
//! store. Fixed-shape depthwise layers keep their own kernel ([`crate::convdirect`]);
//! this one is what run-time dims get instead of the plain loop nests.
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

/// FMA chains of a block of short rows (rows of one vector: this many rows; of two: half).
const SHORT_CHAINS: u64 = 4;

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
    // Planes per task: a task takes `cb` channels of one image, so that rows of at most
    // two vectors (the late layers' 7 and 14 pixels) run them side by side.
    let cb = [4u64, 2, 1].into_iter().find(|k| ch.is_multiple_of(*k)).unwrap_or(1);
    par_expr(&mut b, &(&batch * &c(ch / cb)), &per.scale(cb as i64), |b, task| {
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
        let lanes = iota(b, w);
        let none = b.cmp(CmpOp::Slt, lanes, lanes);
        let all = b.cmp(CmpOp::Sge, lanes, lanes);
        // Input column of lane 0 of vector `v` of the tile at output pixel `ox0`, tap `kx`.
        let col_at = |ox0: &Expr, kx: u64, v: u64| &(&(&(ox0 + &c(v * w as u64)) * &c(sx)) + &c(kx)) - &c(pl);
        // A masked tile's lane masks, which depend on the columns only: per kernel column
        // and vector (two per vector at stride 2), the lanes whose input column lies in
        // the row and, at stride 1, whose pixel is an output's; and per vector, the
        // lanes that are output pixels.
        let masks = |b: &mut KernelBuilder, ox0: &Expr, nv: u64| -> (Vec<Vec<ValId>>, Vec<ValId>) {
            let mut colmask: Vec<Vec<ValId>> = Vec::new();
            for kx in 0..kw {
                for v in 0..nv {
                    let col = col_at(ox0, kx, v);
                    colmask.push(if sx == 2 {
                        vec![
                            lanes_in(b, lanes, &col, &c(0), &wi, w),
                            lanes_in(b, lanes, &(&col + &c(w as u64)), &c(0), &wi, w),
                        ]
                    } else {
                        let m = lanes_in(b, lanes, &col, &c(0), &wi, w);
                        let o = lanes_in(b, lanes, &(ox0 + &c(v * w as u64)), &c(0), &ow, w);
                        vec![b.bin(BinOp::And, m, o)]
                    });
                }
            }
            let outmask = (0..nv).map(|v| lanes_in(b, lanes, &(ox0 + &c(v * w as u64)), &c(0), &ow, w)).collect();
            (colmask, outmask)
        };
        // The kernel rows of output row `oy` inside the image: 0 <= oy*sy + ky - pt < h.
        let ky_range = |b: &mut KernelBuilder, oy: &Expr| -> (ValId, ValId) {
            let top = b.index(&c(pt) - &(oy * &c(sy)));
            let zero = b.i64(0);
            let pos = b.cmp(CmpOp::Sgt, top, zero);
            let ky_lo = b.select(pos, top, zero);
            let bottom = b.index(&(&h + &c(pt)) - &(oy * &c(sy)));
            let khv = b.i64(kh as i64);
            let over = b.cmp(CmpOp::Sgt, bottom, khv);
            (ky_lo, b.select(over, khv, bottom))
        };
        // Rows of `nv` vectors (at most two): the task's `cb` planes side by side, one FMA
        // chain per plane and vector, every row's kernel rows inside the image only.
        let short_rows = |b: &mut KernelBuilder, nv: u64| {
            let (colmask, outmask) = masks(b, &c(0), nv);
            let planes: Vec<(Expr, Option<ValId>)> = (0..cb)
                .map(|k| {
                    let plane = &(&task * &c(cb)) + &c(k);
                    let bias = has_bias.then(|| {
                        let v = b.load(F32, 2, plane.modulo(&c(ch)), 4);
                        b.let_(Inst::Splat(v, w))
                    });
                    (plane, bias)
                })
                .collect();
            b.for_(c(0), oh.clone(), LoopKind::Serial, |b, oy| {
                let (ky_lo, ky_hi) = ky_range(b, &oy);
                let accs = zero_accumulators(b, vt, cb * nv);
                b.for_(Expr::val(ky_lo), Expr::val(ky_hi), LoopKind::Serial, |b, ky| {
                    let iy = &(&(&oy * &c(sy)) + &ky) - &c(pt);
                    for kx in 0..kw {
                        for (k, (plane, _)) in planes.iter().enumerate() {
                            let wat = &(&(&plane.modulo(&c(ch)) * &c(kh * kw)) + &(&ky * &c(kw))) + &c(kx);
                            let wv = b.load(F32, 1, wat, 4);
                            let ws = b.let_(Inst::Splat(wv, w));
                            let row = &(plane * &(&h * &wi)) + &(&iy * &wi);
                            for v in 0..nv {
                                let at = &row + &col_at(&c(0), kx, v);
                                let cm = &colmask[(kx * nv + v) as usize];
                                let load = |b: &mut KernelBuilder, index: Expr, m: ValId| {
                                    b.let_(Inst::Load { ty: vt, param: 0, index, align: 4, mask: Some(m) })
                                };
                                let xv = if sx == 2 {
                                    let lo = load(b, at.clone(), cm[0]);
                                    let hi = load(b, &at + &c(w as u64), cm[1]);
                                    b.let_(Inst::Shuffle(lo, hi, even.clone()))
                                } else {
                                    load(b, at, cm[0])
                                };
                                let acc = accs[k * nv as usize + v as usize];
                                let cur = b.let_(Inst::Get(acc));
                                let next = b.let_(Inst::Fma(ws, xv, cur));
                                b.stmt(Stmt::Set(acc, next));
                            }
                        }
                    }
                });
                for (k, (plane, bias)) in planes.iter().enumerate() {
                    for v in 0..nv {
                        let yat = &(&(plane * &(&oh * &ow)) + &(&oy * &ow)) + &c(v * w as u64);
                        let m = Some(outmask[v as usize]);
                        let mut acc = b.let_(Inst::Get(accs[k * nv as usize + v as usize]));
                        if let Some(bv) = bias {
                            acc = b.bin(BinOp::FAdd, acc, *bv);
                        }
                        if has_res {
                            let rv = b.let_(Inst::Load { ty: vt, param: 3, index: yat.clone(), align: 4, mask: m });
                            acc = b.bin(BinOp::FAdd, acc, rv);
                        }
                        let y = pixel_epilogue(b, op.act, acc, w, None, None);
                        b.stmt(Stmt::Store { param: py, index: yat, value: y, align: 4, mask: m });
                    }
                }
            });
        };
        let owv = crate::ival(b, &ow);
        let two = b.i64(2 * w as i64);
        let short = b.cmp(CmpOp::Sle, owv, two);
        b.if_(
            short,
            |b| {
                let one = b.i64(w as i64);
                let wide = b.cmp(CmpOp::Sgt, owv, one);
                b.if_(wide, |b| short_rows(b, 2), |b| short_rows(b, 1))
            },
            |b| {
                b.for_(c(0), c(cb), LoopKind::Serial, |b, cc| {
                    let plane = &(&task * &c(cb)) + &cc;
                    let chan = plane.modulo(&c(ch));
                    let x_plane = &plane * &(&h * &wi);
                    let y_plane = &plane * &(&oh * &ow);
                    let bias = has_bias.then(|| {
                        let v = b.load(F32, 2, chan.clone(), 4);
                        b.let_(Inst::Splat(v, w))
                    });
                    // The output pixels `ox0 .. ox0 + nv*w` of every row, in blocks of `rows` rows
                    // (`rows` FMA chains per vector: a tile of one vector alone is one chain through
                    // every tap, latency-bound). Its lane masks (`masked`: lanes checked against
                    // the row and the output's end) depend on the columns only, so they are
                    // computed once per plane, not once per row. A block of one row runs its kernel
                    // rows inside the image only; a block of several runs every kernel row, rows
                    // outside the image reading nothing (their masks off) unless the whole block's
                    // taps are inside, and rows past the output's end storing nothing.
                    let column = |b: &mut KernelBuilder, ox0: Expr, masked: bool, nv: u64, rows: u64| {
                        let col_of = |kx: u64, v: u64| col_at(&ox0, kx, v);
                        let (colmask, outmask) = if masked { masks(b, &ox0, nv) } else { (Vec::new(), Vec::new()) };
                        // `rows` rows from `oy0` (the input row of each at kernel row `ky` from
                        // `at(r, ky)`, its validity from `ok(r, ky)`), kernel rows `ky` given by
                        // `kys`: FMAs into `accs`, row-major by vector.
                        type RowAt<'a> = dyn Fn(&mut KernelBuilder, u64, &Expr) -> (Expr, Option<ValId>) + 'a;
                        let taps = |b: &mut KernelBuilder, accs: &[u32], ky: &Expr, at: &RowAt<'_>| {
                            let rows_at: Vec<(Expr, Option<ValId>)> = (0..rows).map(|r| at(b, r, ky)).collect();
                            for kx in 0..kw {
                                let wat = &(&(&chan * &c(kh * kw)) + &(ky * &c(kw))) + &c(kx);
                                let wv = b.load(F32, 1, wat, 4);
                                let ws = b.let_(Inst::Splat(wv, w));
                                for (r, (row, ok)) in rows_at.iter().enumerate() {
                                    for v in 0..nv {
                                        let col = col_of(kx, v);
                                        let mask = |b: &mut KernelBuilder, k: usize| -> Option<ValId> {
                                            let cm = colmask.get((kx * nv + v) as usize).map(|m| m[k]);
                                            match (cm, ok) {
                                                (cm, Some(valid)) => Some(b.select(*valid, cm.unwrap_or(all), none)),
                                                (cm, None) => cm,
                                            }
                                        };
                                        let load = |b: &mut KernelBuilder, index: Expr, mask: Option<ValId>| {
                                            b.let_(Inst::Load { ty: vt, param: 0, index, align: 4, mask })
                                        };
                                        let xv = if sx == 2 {
                                            // Lanes outside the row read as zero (the output's end
                                            // is masked at the store; reads stay inside the row).
                                            let (m0, m1) = (mask(b, 0), mask(b, 1));
                                            let lo = load(b, row + &col, m0);
                                            let hi = load(b, &(row + &col) + &c(w as u64), m1);
                                            b.let_(Inst::Shuffle(lo, hi, even.clone()))
                                        } else {
                                            let m0 = mask(b, 0);
                                            load(b, row + &col, m0)
                                        };
                                        let acc = accs[r * nv as usize + v as usize];
                                        let cur = b.let_(Inst::Get(acc));
                                        let next = b.let_(Inst::Fma(ws, xv, cur));
                                        b.stmt(Stmt::Set(acc, next));
                                    }
                                }
                            }
                        };
                        // Bias, residual, activation, store of row `r` of the block (at output row
                        // `row`; `live`: whether it is one).
                        let store = |b: &mut KernelBuilder, accs: &[u32], r: u64, row: &Expr, live: Option<ValId>| {
                            for v in 0..nv {
                                let px = &ox0 + &c(v * w as u64);
                                let yat = &(&y_plane + &(row * &ow)) + &px;
                                let m = match (outmask.get(v as usize), live) {
                                    (o, Some(live)) => Some(b.select(live, o.copied().unwrap_or(all), none)),
                                    (o, None) => o.copied(),
                                };
                                let mut acc = b.let_(Inst::Get(accs[(r * nv + v) as usize]));
                                if let Some(bv) = bias {
                                    acc = b.bin(BinOp::FAdd, acc, bv);
                                }
                                if has_res {
                                    let rv =
                                        b.let_(Inst::Load { ty: vt, param: 3, index: yat.clone(), align: 4, mask: m });
                                    acc = b.bin(BinOp::FAdd, acc, rv);
                                }
                                let y = pixel_epilogue(b, op.act, acc, w, None, None);
                                b.stmt(Stmt::Store { param: py, index: yat, value: y, align: 4, mask: m });
                            }
                        };
                        if rows == 1 {
                            b.for_(c(0), oh.clone(), LoopKind::Serial, |b, oy| {
                                let (ky_lo, ky_hi) = ky_range(b, &oy);
                                let accs = zero_accumulators(b, vt, nv);
                                b.for_(Expr::val(ky_lo), Expr::val(ky_hi), LoopKind::Serial, |b, ky| {
                                    let at = |_: &mut KernelBuilder, _: u64, ky: &Expr| {
                                        let iy = &(&(&oy * &c(sy)) + ky) - &c(pt);
                                        (&x_plane + &(&iy * &wi), None)
                                    };
                                    taps(b, &accs, &ky, &at);
                                });
                                store(b, &accs, 0, &oy, None);
                            });
                            return;
                        }
                        let blocks = hoist(b, &(&oh + &c(rows - 1)).floor_div(&c(rows)));
                        b.for_(c(0), blocks, LoopKind::Serial, |b, blk| {
                            let oy0 = &blk * &c(rows);
                            // Every row of the block an output row with all its taps in the image.
                            let first = b.index(&(&oy0 * &c(sy)) - &c(pt));
                            let zero = b.i64(0);
                            let top_in = b.cmp(CmpOp::Sge, first, zero);
                            let last = b.index(&(&(&(&oy0 + &c(rows - 1)) * &c(sy)) + &c(kh - 1)) - &c(pt));
                            let hv = crate::ival(b, &h);
                            let bottom_in = b.cmp(CmpOp::Slt, last, hv);
                            let last_row = b.index(&oy0 + &c(rows - 1));
                            let ohv = crate::ival(b, &oh);
                            let rows_in = b.cmp(CmpOp::Slt, last_row, ohv);
                            let inside = b.bin(BinOp::And, top_in, bottom_in);
                            let inside = b.bin(BinOp::And, inside, rows_in);
                            let block = |b: &mut KernelBuilder, checked: bool| {
                                let accs = zero_accumulators(b, vt, rows * nv);
                                for ky in 0..kh {
                                    // Each row's input row; checked, whether it is in the image (a row
                                    // outside reads nothing: its masks off, its address the first row's).
                                    let at = |b: &mut KernelBuilder, r: u64, ky: &Expr| {
                                        let iy = &(&(&(&oy0 + &c(r)) * &c(sy)) + ky) - &c(pt);
                                        if !checked {
                                            return (&x_plane + &(&iy * &wi), None);
                                        }
                                        let iyv = b.index(iy);
                                        let zero = b.i64(0);
                                        let ge = b.cmp(CmpOp::Sge, iyv, zero);
                                        let hv = crate::ival(b, &h);
                                        let lt = b.cmp(CmpOp::Slt, iyv, hv);
                                        let valid = b.bin(BinOp::And, ge, lt);
                                        let safe = b.select(valid, iyv, zero);
                                        (&x_plane + &(&Expr::val(safe) * &wi), Some(valid))
                                    };
                                    taps(b, &accs, &c(ky), &at);
                                }
                                for r in 0..rows {
                                    // A row past the output's end stores nothing (checked blocks).
                                    if checked {
                                        let oy = b.index(&oy0 + &c(r));
                                        let ohv = crate::ival(b, &oh);
                                        let live = b.cmp(CmpOp::Slt, oy, ohv);
                                        let zero = b.i64(0);
                                        let row = Expr::val(b.select(live, oy, zero));
                                        store(b, &accs, r, &row, Some(live));
                                    } else {
                                        store(b, &accs, r, &(&oy0 + &c(r)), None);
                                    }
                                }
                            };
                            b.if_(inside, |b| block(b, false), |b| block(b, true));
                        });
                    };
                    // From pixel 0: masked one-vector columns while a tile reaches into the left
                    // padding; then unmasked columns of `NV` vectors while the last tap stays in the
                    // row, and the fewer whole vectors left before that point as columns of 2 and 1
                    // vectors (a 28-pixel row: one masked vector, one unmasked tile of two, one
                    // masked vector); then masked one-vector columns to the end (no vector wholly
                    // past it).
                    let head = pl.div_ceil(w as u64);
                    let head_end = c(head * w as u64).min_with(&ow);
                    for i in 0..head {
                        // A row shorter than the left border's vectors computes the ones it has.
                        let ox0 = c(i * w as u64);
                        let inside = crate::in_bounds_expr(b, ox0.clone(), &ow);
                        b.if_(inside, |b| column(b, ox0, true, 1, SHORT_CHAINS), |_| {});
                    }
                    // Interior columns: from head_end, while every pixel's taps lie in the row
                    // (its pixels below the window's `right`).
                    let count = hoist(b, &(&right - &head_end).floor_div(&c(tile_px)).max_with(&c(0)));
                    b.for_(c(0), count.clone(), LoopKind::Serial, |b, i| {
                        column(b, &head_end + &(&i * &c(tile_px)), false, NV, SHORT_CHAINS / NV * 2)
                    });
                    let mut rest = &head_end + &(&count * &c(tile_px));
                    let whole = hoist(b, &(&right - &rest).floor_div(&c(w as u64)).max_with(&c(0)));
                    for nv in (0..).map(|k| (NV / 2) >> k).take_while(|&v| v > 0) {
                        let set = crate::ival(b, &whole.floor_div(&c(nv)).modulo(&c(2)));
                        let one = b.i64(1);
                        let is = b.cmp(CmpOp::Eq, set, one);
                        let at = rest.clone();
                        b.if_(is, |b| column(b, at, false, nv, SHORT_CHAINS / nv), |_| {});
                        rest = &rest + &(&whole.floor_div(&c(nv)).modulo(&c(2)) * &c(nv * w as u64));
                    }
                    let rest = hoist(b, &rest);
                    let rest_vectors = (&(&ow - &rest) + &c(w as u64 - 1)).floor_div(&c(w as u64)).max_with(&c(0));
                    b.for_(c(0), rest_vectors, LoopKind::Serial, |b, i| {
                        column(b, &rest + &(&i * &c(w as u64)), true, 1, SHORT_CHAINS)
                    });
                });
            },
        );
    });
    Ok(b.finish())
}
