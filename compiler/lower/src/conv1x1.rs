//! The 1x1 convolution as a register-blocked GEMM, f32: `Y[M, P] = W[M, C] X[C, P]` per
//! image over its `P = H W` pixels. Vector lanes run along pixels (contiguous in NCHW);
//! a tile is `MR` output channels by a panel of `2w` pixels, so each loaded pixel
//! vector feeds `MR` FMAs and each weight is broadcast once per tile and channel. The
//! last, partial panel of an image loads with masks. The epilogue (a bias per channel,
//! a residual, the activation) runs in registers before the store. Tasks are
//! (image, panel) pairs ([`crate::par`]).
//!
//! [`cost`] is this kernel's side of the cost model that chooses between it and the
//! channel-blocked convolution (dlc-codegen-llvm's `convblk`, whose tile cycles are
//! [`tile_cycles`]).
use crate::elementwise::activation;
use crate::gemm::{row_blocks, tile, vector_act, vector_activation, zero_accumulators};
use crate::{ival, par, LowerError, Node, Target};
use dlc_ir::ops::{Activation, AutoPad, Conv};
use dlc_ir::DType;
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

/// Cycles per step (one input channel and tap) of a register tile with `accs`
/// accumulators, `loads` loads and broadcasts, of which `l2_vectors` weight vectors come
/// from L2 (the block's weights do not stay in L1): two FMA pipes, two loads per cycle,
/// about 2.7 cycles per vector streamed from L2, and at least six cycles per step. The
/// constants are measurements on Zen 3 (tiles of 8 and 10 accumulators run at 0.7 and
/// 0.85 of the speed of 12, which the FMA latency alone would not predict; three weight
/// vectors per step from L2 are slower than two).
pub fn tile_cycles(accs: u64, loads: u64, l2_vectors: u64) -> f64 {
    (accs as f64 / 2.0).max(6.0).max(loads as f64 / 2.0).max(l2_vectors as f64 * 8.0 / 3.0)
}

/// The cost model's cycles per output element and input channel of [`conv1x1`] with
/// vectors of `w` lanes: `MR`-channel tiles over panels of `2w` pixels, the last panel
/// partly empty when the pixel count `p` is not a multiple; `m` output and `k` input
/// channels.
pub fn cost(w: u64, m: u64, p: u64, k: u64) -> f64 {
    let mr = tile(w).1;
    let t = |rows: u64| tile_cycles(2 * rows, 2 + rows, 0);
    let col = (m / mr) as f64 * t(mr) + if !m.is_multiple_of(mr) { t(m % mr) } else { 0.0 };
    // Plus the stores, whole vectors: a cycle per vector, spread over the k steps.
    p.div_ceil(2 * w) as f64 * col / (m * p) as f64 + 1.0 / (w * k) as f64
}

/// A plain 1x1 convolution: 1x1 kernel of weight dims `wd`, stride and dilation 1, no
/// padding.
pub fn pointwise(op: &Conv, wd: &[u64]) -> bool {
    wd.get(2..) == Some(&[1, 1][..])
        && op.strides.iter().all(|&s| s == 1)
        && op.dilations.iter().all(|&d| d == 1)
        && op.pads.iter().all(|&p| p == 0)
        && matches!(op.auto_pad, AutoPad::NotSet | AutoPad::Valid)
}

/// Whether [`conv1x1`] takes node `n`: a pointwise, ungrouped f32 Conv of known dims.
pub fn applies(n: &Node, op: &Conv) -> bool {
    n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32 && t.shape.is_fixed())
        && op.group == 1
        && n.fixed_in(1).is_ok_and(|wd| pointwise(op, &wd))
}

/// The operands of a convolution kernel with epilogues (X, W, an optional bias and
/// residual, then Y): whether it has a bias and a residual, Y's parameter index, and
/// the kernel's builder.
pub fn conv_builder(name: &str, n: &Node) -> (bool, bool, u32, KernelBuilder) {
    let n_in = n.inputs.len();
    let mut params = vec![Access::Read; n_in];
    params.push(Access::Write);
    (n_in >= 3, n_in == 4, n_in as u32, KernelBuilder::new(name, &params))
}

/// An `i1` vector with lane `l` set where `mask[l]` (a constant).
pub fn lane_mask(b: &mut KernelBuilder, mask: &[bool]) -> ValId {
    let mut m = b.let_(Inst::Const { ty: Ty::vec(Elem::I1, mask.len() as u32), lit: Lit::Int(0) });
    for (l, _) in mask.iter().enumerate().filter(|(_, on)| **on) {
        let one = b.let_(Inst::Const { ty: Ty::scalar(Elem::I1), lit: Lit::Int(1) });
        m = b.let_(Inst::Insert(m, one, l as u32));
    }
    m
}

/// `w` lanes `0, 1, ... w-1` as i32.
pub fn iota(b: &mut KernelBuilder, w: u32) -> ValId {
    let mut v = b.let_(Inst::Const { ty: Ty::vec(Elem::I32, w), lit: Lit::Int(0) });
    for l in 1..w {
        let k = b.let_(Inst::Const { ty: Ty::scalar(Elem::I32), lit: Lit::Int(l as i64) });
        v = b.let_(Inst::Insert(v, k, l));
    }
    v
}

/// An i32 splat of the i64 value `e`.
fn splat_i32(b: &mut KernelBuilder, e: &Expr, w: u32) -> ValId {
    let v = ival(b, e);
    let t = b.let_(Inst::Cast(dlc_kir::CastOp::Trunc, v, Ty::scalar(Elem::I32)));
    b.let_(Inst::Splat(t, w))
}

/// The lanes `l` with `lo <= at + l < hi` (i32 compares on run-time values).
pub fn lanes_in(b: &mut KernelBuilder, lanes: ValId, at: &Expr, lo: &Expr, hi: &Expr, w: u32) -> ValId {
    let base = splat_i32(b, at, w);
    let pos = b.bin(BinOp::Add, lanes, base);
    let (lv, hv) = (splat_i32(b, lo, w), splat_i32(b, hi, w));
    let ge = b.cmp(CmpOp::Sge, pos, lv);
    let lt = b.cmp(CmpOp::Slt, pos, hv);
    b.bin(BinOp::And, ge, lt)
}

/// `w` floats of memory `param` from element `at`, of which the first `lanes` exist
/// (a masked load: the others read 0 and touch no memory).
pub fn load_lanes(b: &mut KernelBuilder, param: u32, at: Expr, w: u32, lanes: u64) -> ValId {
    let vt = Ty::vec(Elem::F32, w);
    if lanes >= w as u64 {
        return b.load(vt, param, at, 4);
    }
    let mask = lane_mask(b, &(0..w as u64).map(|l| l < lanes).collect::<Vec<_>>());
    b.let_(Inst::Load { ty: vt, param, index: at, align: 4, mask: Some(mask) })
}

/// Stores the first `lanes` of the `w`-lane vector `v` at element `at` of `param` (a
/// vector store when all of them, else lane by lane).
pub fn store_lanes(b: &mut KernelBuilder, param: u32, at: Expr, v: ValId, w: u32, lanes: u64) {
    if lanes >= w as u64 {
        return b.store(param, at, v, 4);
    }
    for l in 0..lanes {
        let x = b.let_(Inst::Extract(v, l as u32));
        b.store(param, &at + &c(l), x, 4);
    }
}

/// A convolution's epilogue on one vector of output pixels of one channel: `+ bias`
/// (a splat), `+ residual[at..]` (its first `lanes`), then `act` (its vector form when
/// it has one, else lane by lane).
pub fn pixel_epilogue(
    b: &mut KernelBuilder,
    act: Activation,
    mut v: ValId,
    w: u32,
    bias: Option<ValId>,
    residual: Option<(u32, Expr, u64)>,
) -> ValId {
    if let Some(bv) = bias {
        v = b.bin(BinOp::FAdd, v, bv);
    }
    if let Some((pr, at, lanes)) = residual {
        let r = load_lanes(b, pr, at, w, lanes);
        v = b.bin(BinOp::FAdd, v, r);
    }
    if vector_act(act) {
        return vector_activation(b, act, v, w).expect("vector_act checked");
    }
    let mut out = v;
    for l in 0..w {
        let x = b.let_(Inst::Extract(v, l));
        let y = activation(b, act, x).unwrap_or(x);
        out = b.let_(Inst::Insert(out, y, l));
    }
    out
}

/// The 1x1 convolution kernel of node `n` (see [`applies`]) for target `t`. Parameters:
/// X, W, the optional bias and residual, then Y.
pub fn conv1x1(name: &str, n: &Node, op: &Conv, t: &Target) -> Result<Kernel, LowerError> {
    let (x, wd) = (n.fixed_in(0)?, n.fixed_in(1)?);
    if x.len() != 4 || wd.len() != 4 {
        return Err(n.error("only 2-D convolutions are supported"));
    }
    let (batch, ch, p) = (x[0], x[1], x[2] * x[3]);
    let m = wd[0];
    let w = t.f32_lanes.max(1) as u64;
    let (nr, mr) = tile(w);
    let vt = Ty::vec(Elem::F32, w as u32);
    let n_in = n.inputs.len();
    let (has_bias, has_res) = (n_in >= 3, n_in == 4);
    let py = n_in as u32;
    let full_panels = p / nr;
    let valid = p % nr;
    let mut params = vec![Access::Read; n_in];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    // One tile: `rows` channels from m0, pixels j0.. with `width` valid (<= nr).
    let tile = |b: &mut KernelBuilder, img: &Expr, m0: Expr, j0: &Expr, rows: u64, width: u64| {
        let halves: Vec<u64> = (0..2).map(|h| width.saturating_sub(h * w).min(w)).collect();
        let accs = zero_accumulators(b, vt, rows * 2);
        let xo = img * &c(ch * p);
        b.for_(c(0), c(ch), LoopKind::Serial, |b, k| {
            let xrow = &(&xo + &(&k * &c(p))) + j0;
            let bs: Vec<Option<ValId>> = (0..2u64)
                .map(|h| {
                    let lanes = halves[h as usize];
                    (lanes > 0).then(|| load_lanes(b, 0, &xrow + &c(h * w), w as u32, lanes))
                })
                .collect();
            for r in 0..rows {
                let wv = b.load(F32, 1, &(&(&m0 + &c(r)) * &c(ch)) + &k, 4);
                let a = b.let_(Inst::Splat(wv, w as u32));
                for (h, bh) in bs.iter().enumerate() {
                    let Some(bh) = bh else { continue };
                    let slot = accs[r as usize * 2 + h];
                    let cur = b.let_(Inst::Get(slot));
                    let next = b.let_(Inst::Fma(a, *bh, cur));
                    b.stmt(Stmt::Set(slot, next));
                }
            }
        });
        let yo = img * &c(m * p);
        for r in 0..rows {
            let chn = &m0 + &c(r);
            let yrow = &(&yo + &(&chn * &c(p))) + j0;
            let bias = has_bias.then(|| {
                let bv = b.load(F32, 2, chn.clone(), 4);
                b.let_(Inst::Splat(bv, w as u32))
            });
            for (h, &lanes) in halves.iter().enumerate() {
                if lanes == 0 {
                    continue;
                }
                let at = &yrow + &c(h as u64 * w);
                let v = b.let_(Inst::Get(accs[r as usize * 2 + h]));
                let res = has_res.then(|| (3, at.clone(), lanes));
                let v = pixel_epilogue(b, op.act, v, w as u32, bias, res);
                store_lanes(b, py, at, v, w as u32, lanes);
            }
        }
    };
    let rows_loop = |b: &mut KernelBuilder, img: &Expr, j0: Expr, width: u64| {
        row_blocks(b, m, mr, &|b, m0, rows| tile(b, img, m0, &j0, rows, width))
    };
    // Parallel over (image, pixel panel); the partial panel is one more task per image.
    let per_img = full_panels + (valid > 0) as u64;
    par(&mut b, batch * per_img, 2 * batch * m * ch * p, |b, task| {
        let img = task.floor_div(&c(per_img));
        let pnl = task.modulo(&c(per_img));
        if valid == 0 {
            return rows_loop(b, &img, &pnl * &c(nr), nr);
        }
        let pv = b.index(pnl.clone());
        let fp = b.i64(full_panels as i64);
        let is_edge = b.cmp(CmpOp::Eq, pv, fp);
        b.if_(is_edge, |b| rows_loop(b, &img, c(full_panels * nr), valid), |b| rows_loop(b, &img, &pnl * &c(nr), nr));
    });
    Ok(b.finish())
}

/// [`conv1x1`] over run-time image dims: the same tiles, `P = H W` pixels known at run
/// time. Tasks are chunks of (image, panel) pairs; a panel with fewer than `2w` pixels
/// (the last of an image) loads, adds its residual and stores under lane masks built at
/// run time.
pub fn conv1x1_run_time(name: &str, n: &Node, op: &Conv, t: &Target) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let wd = n.fixed_in(1)?;
    if x.len() != 4 || wd.len() != 4 {
        return Err(n.error("only 2-D convolutions are supported"));
    }
    let ch = x[1].as_const().ok_or_else(|| n.error("the channel dim must be known"))? as u64;
    let (batch, p) = (x[0].clone(), &x[2] * &x[3]);
    let m = wd[0];
    let w = t.f32_lanes.max(1) as u64;
    let (nr, mr) = tile(w);
    let vt = Ty::vec(Elem::F32, w as u32);
    let (has_bias, has_res, py, mut b) = conv_builder(name, n);
    let panels = (&p + &c(nr - 1)).floor_div(&c(nr));
    // One tile: `rows` channels from m0, pixels j0.. of an image of `p` pixels, the two
    // halves under `masks` (i1 vectors) when given.
    let tile =
        |b: &mut KernelBuilder, img: &Expr, p: &Expr, m0: Expr, j0: &Expr, rows: u64, masks: Option<[ValId; 2]>| {
            let accs = zero_accumulators(b, vt, rows * 2);
            let xo = img * &(&c(ch) * p);
            b.for_(c(0), c(ch), LoopKind::Serial, |b, k| {
                let xrow = &(&xo + &(&k * p)) + j0;
                let bs: Vec<ValId> = (0..2u64)
                    .map(|h| {
                        let mask = masks.map(|m| m[h as usize]);
                        b.let_(Inst::Load { ty: vt, param: 0, index: &xrow + &c(h * w), align: 4, mask })
                    })
                    .collect();
                for r in 0..rows {
                    let wv = b.load(F32, 1, &(&(&m0 + &c(r)) * &c(ch)) + &k, 4);
                    let a = b.let_(Inst::Splat(wv, w as u32));
                    for (h, bh) in bs.iter().enumerate() {
                        let slot = accs[r as usize * 2 + h];
                        let cur = b.let_(Inst::Get(slot));
                        let next = b.let_(Inst::Fma(a, *bh, cur));
                        b.stmt(Stmt::Set(slot, next));
                    }
                }
            });
            let yo = img * &(&c(m) * p);
            for r in 0..rows {
                let chn = &m0 + &c(r);
                let yrow = &(&yo + &(&chn * p)) + j0;
                let bias = has_bias.then(|| {
                    let bv = b.load(F32, 2, chn.clone(), 4);
                    b.let_(Inst::Splat(bv, w as u32))
                });
                for h in 0..2u64 {
                    let at = &yrow + &c(h * w);
                    let mask = masks.map(|m| m[h as usize]);
                    let mut v = b.let_(Inst::Get(accs[(r * 2 + h) as usize]));
                    if has_res {
                        let rv = b.let_(Inst::Load { ty: vt, param: 3, index: at.clone(), align: 4, mask });
                        v = b.bin(BinOp::FAdd, v, rv);
                    }
                    let v = pixel_epilogue(b, op.act, v, w as u32, bias, None);
                    b.stmt(Stmt::Store { param: py, index: at, value: v, align: 4, mask });
                }
            }
        };
    // Chunks of panels as pool tasks, each about a task's worth of work.
    let per_panel = 2 * m * ch * nr;
    let chunk = (crate::TASK_WORK / per_panel.max(1)).max(1);
    let total = &batch * &panels;
    let tasks = (&total + &c(chunk - 1)).floor_div(&c(chunk));
    b.for_(c(0), tasks, LoopKind::Parallel, |b, tk| {
        let [p, panels, total] = [&p, &panels, &total].map(|e| crate::hoist(b, e));
        let lo = &tk * &c(chunk);
        let hi = (&lo + &c(chunk)).min_with(&total);
        b.for_(lo, hi, LoopKind::Serial, |b, task| {
            let img = task.floor_div(&panels);
            let j0 = &task.modulo(&panels) * &c(nr);
            let left = b.index(&p - &j0);
            let full = b.i64(nr as i64);
            let whole = b.cmp(CmpOp::Sge, left, full);
            let rows_loop = |b: &mut KernelBuilder, masks: Option<[ValId; 2]>| {
                crate::gemm::row_blocks(b, m, mr, &|b, m0, rows| tile(b, &img, &p, m0, &j0, rows, masks))
            };
            b.if_(
                whole,
                |b| rows_loop(b, None),
                |b| {
                    // Lane l of half h is pixel j0 + h*w + l: inside while below p.
                    let lanes = iota(b, w as u32);
                    let masks = [0u64, 1].map(|h| lanes_in(b, lanes, &(&j0 + &c(h * w)), &c(0), &p, w as u32));
                    rows_loop(b, Some(masks))
                },
            );
        });
    });
    Ok(b.finish())
}
