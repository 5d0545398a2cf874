//! RoiAlign ([`dlc_ir::ops::RoiAlign`]): one serial pass over the regions; per region the
//! bin geometry in f32 (as ONNX's reference and ONNX Runtime compute it, in the same
//! order), then per channel and bin the bilinear samples of its grid, averaged or (max
//! mode) the largest weighted corner. A grid size computed from the region (sampling
//! ratio 0) is a run-time loop bound. `dlc_interp::nn::roi_align` is the reference.
use crate::{LowerError, Node};
use dlc_ir::ops::RoiAlign;
use dlc_kir::{Access, BinOp, CastOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };
const I64: Ty = Ty { elem: Elem::I64, lanes: 1 };

fn f(b: &mut KernelBuilder, v: f64) -> ValId {
    b.let_(Inst::Const { ty: F32, lit: Lit::Float(v) })
}

/// The kernel: X, rois, batch indices (read), the result (written).
pub fn roi_align(name: &str, n: &Node, op: &RoiAlign) -> Result<Kernel, LowerError> {
    let xd = Node::dims(&n.inputs[0]);
    let rois = Node::dims(&n.inputs[1])[0].clone();
    let (c_dim, h_dim, w_dim) = (xd[1].clone(), xd[2].clone(), xd[3].clone());
    let (oh, ow) = (op.output_height, op.output_width);
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Read, Access::Read, Access::Write]);
    b.for_(Expr::c(0), rois, LoopKind::Serial, |b, r| {
        let coord = |b: &mut KernelBuilder, k: i64| {
            let v = b.load(F32, 1, &r.scale(4) + &Expr::c(k), 4);
            let s = f(b, op.spatial_scale as f32 as f64);
            let v = b.bin(BinOp::FMul, v, s);
            let off = f(b, if op.half_pixel { 0.5 } else { 0.0 });
            b.bin(BinOp::FSub, v, off)
        };
        let (sw, sh, ew, eh) = (coord(b, 0), coord(b, 1), coord(b, 2), coord(b, 3));
        let mut rw = b.bin(BinOp::FSub, ew, sw);
        let mut rh = b.bin(BinOp::FSub, eh, sh);
        if !op.half_pixel {
            let one = f(b, 1.0);
            rw = b.bin(BinOp::FMax, rw, one);
            rh = b.bin(BinOp::FMax, rh, one);
        }
        let (ohf, owf) = (f(b, oh as f64), f(b, ow as f64));
        let bh = b.bin(BinOp::FDiv, rh, ohf);
        let bw = b.bin(BinOp::FDiv, rw, owf);
        let grid = |b: &mut KernelBuilder, side: ValId, bins: ValId| {
            if op.sampling_ratio > 0 {
                return b.i64(op.sampling_ratio);
            }
            let q = b.bin(BinOp::FDiv, side, bins);
            let c = b.let_(Inst::Call { func: "ceilf".into(), args: vec![q], ty: F32 });
            b.let_(Inst::Cast(CastOp::FpToSiSat, c, I64))
        };
        let gh = grid(b, rh, ohf);
        let gw = grid(b, rw, owf);
        let cells = b.bin(BinOp::Mul, gh, gw);
        let one_i = b.i64(1);
        let cells = b.bin(BinOp::SMax, cells, one_i);
        let count = b.let_(Inst::Cast(CastOp::SiToFp, cells, F32));
        let ghf = b.let_(Inst::Cast(CastOp::SiToFp, gh, F32));
        let gwf = b.let_(Inst::Cast(CastOp::SiToFp, gw, F32));
        let batch = b.load(I64, 2, r.clone(), 8);
        let (hf, wf) = (b.index(h_dim.clone()), b.index(w_dim.clone()));
        let hfl = b.let_(Inst::Cast(CastOp::SiToFp, hf, F32));
        let wfl = b.let_(Inst::Cast(CastOp::SiToFp, wf, F32));
        let (cd, hd, wd, r2) = (c_dim.clone(), h_dim.clone(), w_dim.clone(), r.clone());
        b.for_(Expr::c(0), cd.clone(), LoopKind::Serial, |b, c| {
            // The plane of X this region reads.
            let plane = &(&(&Expr::val(batch) * &cd) + &c) * &(&hd * &wd);
            b.for_(Expr::c(0), Expr::c(oh), LoopKind::Serial, |b, ph| {
                b.for_(Expr::c(0), Expr::c(ow), LoopKind::Serial, |b, pw| {
                    let zero = f(b, 0.0);
                    let acc = b.local(F32, zero);
                    let first = b.local(I64, one_i);
                    let phv = b.index(ph.clone());
                    let phf = b.let_(Inst::Cast(CastOp::SiToFp, phv, F32));
                    let pwv = b.index(pw.clone());
                    let pwf = b.let_(Inst::Cast(CastOp::SiToFp, pwv, F32));
                    let t = b.bin(BinOp::FMul, phf, bh);
                    let y0 = b.bin(BinOp::FAdd, sh, t);
                    let t = b.bin(BinOp::FMul, pwf, bw);
                    let x0 = b.bin(BinOp::FAdd, sw, t);
                    let plane = plane.clone();
                    // Sample `i` of a bin's side: start + (i + 0.5) * size / samples.
                    let sample = |b: &mut KernelBuilder, i: &Expr, start: ValId, size: ValId, n: ValId| {
                        let iv = b.index(i.clone());
                        let fi = b.let_(Inst::Cast(CastOp::SiToFp, iv, F32));
                        let half = f(b, 0.5);
                        let t = b.bin(BinOp::FAdd, fi, half);
                        let t = b.bin(BinOp::FMul, t, size);
                        let t = b.bin(BinOp::FDiv, t, n);
                        b.bin(BinOp::FAdd, start, t)
                    };
                    b.for_(Expr::c(0), Expr::val(gh), LoopKind::Serial, |b, iy| {
                        let yy = sample(b, &iy, y0, bh, ghf);
                        let plane = plane.clone();
                        b.for_(Expr::c(0), Expr::val(gw), LoopKind::Serial, |b, ix| {
                            let xx = sample(b, &ix, x0, bw, gwf);
                            // Outside [-1, H] x [-1, W]: every weight 0.
                            let m1 = f(b, -1.0);
                            let o1 = b.cmp(CmpOp::FOlt, yy, m1);
                            let o2 = b.cmp(CmpOp::FOgt, yy, hfl);
                            let o3 = b.cmp(CmpOp::FOlt, xx, m1);
                            let o4 = b.cmp(CmpOp::FOgt, xx, wfl);
                            let o = b.bin(BinOp::Or, o1, o2);
                            let o = b.bin(BinOp::Or, o, o3);
                            let outside = b.bin(BinOp::Or, o, o4);
                            // One axis: low and high index and the fraction.
                            let axis = |b: &mut KernelBuilder, v: ValId, ext: ValId| {
                                let z = f(b, 0.0);
                                let v = b.bin(BinOp::FMax, v, z);
                                let lo = b.let_(Inst::Cast(CastOp::FpToSiSat, v, I64));
                                let one = b.i64(1);
                                let last = b.bin(BinOp::Sub, ext, one);
                                let at_end = b.cmp(CmpOp::Sge, lo, last);
                                let lo = b.select(at_end, last, lo);
                                let hi = b.bin(BinOp::Add, lo, one);
                                let hi = b.select(at_end, last, hi);
                                let lof = b.let_(Inst::Cast(CastOp::SiToFp, lo, F32));
                                let v = b.select(at_end, lof, v);
                                let l = b.bin(BinOp::FSub, v, lof);
                                (lo, hi, l)
                            };
                            let (ylo, yhi, ly) = axis(b, yy, hf);
                            let (xlo, xhi, lx) = axis(b, xx, wf);
                            let one = f(b, 1.0);
                            let hy = b.bin(BinOp::FSub, one, ly);
                            let hx = b.bin(BinOp::FSub, one, lx);
                            let z = f(b, 0.0);
                            let mut terms = Vec::new();
                            for (yi, xi, wy, wx) in
                                [(ylo, xlo, hy, hx), (ylo, xhi, hy, lx), (yhi, xlo, ly, hx), (yhi, xhi, ly, lx)]
                            {
                                let w = b.bin(BinOp::FMul, wy, wx);
                                let w = b.select(outside, z, w);
                                // Outside: position 0, as the reference's.
                                let zi = b.i64(0);
                                let yi = b.select(outside, zi, yi);
                                let xi = b.select(outside, zi, xi);
                                let at = &(&plane + &(&Expr::val(yi) * &wd)) + &Expr::val(xi);
                                let v = b.load(F32, 0, at, 4);
                                terms.push(b.bin(BinOp::FMul, w, v));
                            }
                            let cur = b.let_(Inst::Get(acc));
                            let next = if op.max {
                                let m = b.bin(BinOp::FMax, terms[0], terms[1]);
                                let m = b.bin(BinOp::FMax, m, terms[2]);
                                let m = b.bin(BinOp::FMax, m, terms[3]);
                                let fst = b.let_(Inst::Get(first));
                                let zi = b.i64(0);
                                let is_first = b.cmp(CmpOp::Ne, fst, zi);
                                b.stmt(Stmt::Set(first, zi));
                                let best = b.bin(BinOp::FMax, cur, m);
                                b.select(is_first, m, best)
                            } else {
                                let s = b.bin(BinOp::FAdd, terms[0], terms[1]);
                                let s = b.bin(BinOp::FAdd, s, terms[2]);
                                let s = b.bin(BinOp::FAdd, s, terms[3]);
                                b.bin(BinOp::FAdd, cur, s)
                            };
                            b.stmt(Stmt::Set(acc, next));
                        });
                    });
                    let v = b.let_(Inst::Get(acc));
                    let v = if op.max { v } else { b.bin(BinOp::FDiv, v, count) };
                    let at = &(&(&(&r2 * &cd) + &c) * &Expr::c(oh * ow)) + &(&ph.scale(ow) + &pw);
                    b.store(3, at, v, 4);
                });
            });
        });
    });
    Ok(b.finish())
}
