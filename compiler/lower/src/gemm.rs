//! The packed GEMM, f32: a MatMul or Gemm whose B is a 2-D constant. B is packed at
//! compile time into panels of `nr = 2w` columns (`w` the target's vector width), a
//! constant array of the kernel; each pool task takes one panel ([`crate::par`]) and
//! walks A's rows in blocks of `mr` (8 with 16- or 4-lane vectors, 6 with 8), keeping
//! `2 mr` vector accumulators in registers: per step of K, two vector loads of B, one
//! broadcast of A per row and `2 mr` FMAs. The tile is stored with whole vectors (the
//! last panel's valid lanes one by one), then the epilogue runs: in registers before
//! the store for a MatMul with a constant bias and an activation that has a vector form,
//! else over the stored tile.
//!
//! (The plain loop nests for a B given at run time are [`crate::linalg`].)
use crate::elementwise::activation;
use crate::shape::broadcast_strides_fixed;
use crate::{par, LowerError, Node, Target};
use dlc_ir::ops::{Activation, Gemm};
use dlc_ir::{DType, Op, TensorData, TensorType};
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, Lit, LoopKind, Stmt, Ty, ValId};

const F32: Ty = Ty { elem: Elem::F32, lanes: 1 };

fn c(v: u64) -> Expr {
    Expr::c(v as i64)
}

/// How a product is laid out: `y[M, N] = A[M, K] x op(B)[K, N]` (A row-major, its batch
/// rows folded into M).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Rows: a constant, or an expression of run-time dims (A's leading dims).
    pub m: Expr,
    /// The contracted extent.
    pub k: u64,
    /// Columns.
    pub n: u64,
    /// Whether B is stored `[N, K]` (Gemm's `transB`).
    pub trans_b: bool,
}

/// Whether B can be packed: an f32 2-D constant, with every operand f32.
pub fn packable(b: Option<&TensorData>, inputs: &[TensorType]) -> bool {
    b.is_some_and(|t| t.ty().dtype == DType::F32 && t.ty().shape.rank() == 2)
        && inputs.iter().all(|t| t.dtype == DType::F32)
}

/// The packed product's shape when node `n` (a MatMul or Gemm) takes the packed kernel:
/// its B (operand 1) a packable constant and A read row-major, with a known K. A's
/// rows may be run-time dims (then a Gemm's C must be fixed and the same for every
/// row, and a MatMul's bias is a vector).
pub fn plan(n: &Node) -> Option<Shape> {
    plan_any(n).filter(|s| s.k > 0 && s.n > 0)
}

/// [`plan`] before empty products (no columns or no terms, which the generic kernel
/// handles) are ruled out.
fn plan_any(n: &Node) -> Option<Shape> {
    let b = n.consts.get(1).copied().flatten();
    if !packable(b, n.inputs) {
        return None;
    }
    let a = &n.inputs[0].shape.0;
    let bd = b?.ty().shape.as_fixed()?;
    let fixed = n.inputs[0].shape.is_fixed();
    match n.op {
        Op::MatMul(_) if !a.is_empty() => {
            let k = a.last()?.fixed()?;
            let m = a[..a.len() - 1].iter().fold(Expr::c(1), |p, d| &p * &d.expr());
            let bias_ok = n.inputs.get(2).is_none_or(|t| t.shape.is_fixed());
            (bd[0] == k && bias_ok).then_some(Shape { m, k, n: bd[1], trans_b: false })
        }
        Op::Gemm(op) if !op.trans_a && a.len() == 2 => {
            let (k, nn) = if op.trans_b { (bd[1], bd[0]) } else { (bd[0], bd[1]) };
            let c_ok =
                fixed || n.inputs.get(2).is_none_or(|t| t.shape.rank() < 2 || t.shape.0[0] == dlc_ir::Dim::Fixed(1));
            (a[1].fixed() == Some(k) && c_ok).then_some(Shape { m: a[0].expr(), k, n: nn, trans_b: op.trans_b })
        }
        _ => None,
    }
}

/// The register tile for vectors of `w` lanes: `(nr, mr)`, columns per panel and rows
/// per block.
pub fn tile(w: u64) -> (u64, u64) {
    (2 * w, if w == 16 || w == 4 { 8 } else { 6 })
}

/// `n` vector locals of type `vt`, each starting at zero: a register tile's
/// accumulators.
pub fn zero_accumulators(b: &mut KernelBuilder, vt: Ty, n: u64) -> Vec<u32> {
    (0..n)
        .map(|_| {
            let z = b.let_(Inst::Const { ty: vt, lit: Lit::Float(0.0) });
            b.local(vt, z)
        })
        .collect()
}

/// [`row_blocks`] over `m` rows that may be a run-time count: the whole blocks in a loop
/// whose trip count is read at run time, then the tile of the `m % mr` leftover rows
/// that the run-time remainder picks (one compiled tile per remainder `1..mr`), so every
/// tile keeps its constant register block.
pub fn row_blocks_expr(b: &mut KernelBuilder, m: &Expr, mr: u64, tile: &dyn Fn(&mut KernelBuilder, Expr, u64)) {
    if let Some(m) = m.as_const() {
        return row_blocks(b, m as u64, mr, tile);
    }
    let blocks = m.floor_div(&c(mr));
    b.for_(c(0), blocks.clone(), LoopKind::Serial, |b, t| tile(b, &t * &c(mr), mr));
    let full = &blocks * &c(mr);
    let rem = b.index(m.modulo(&c(mr)));
    for r in 1..mr {
        let rv = b.i64(r as i64);
        let here = b.cmp(CmpOp::Eq, rem, rv);
        b.if_(here, |b| tile(b, full.clone(), r), |_| {});
    }
}

/// Runs `tile(b, first_row, rows)` over `m` rows in blocks of `mr`: a loop over the
/// whole blocks, then one tile of the `m % mr` leftover rows (not one tile per leftover
/// row, which would leave the FMA units waiting on one or two accumulator chains).
pub fn row_blocks(b: &mut KernelBuilder, m: u64, mr: u64, tile: &dyn Fn(&mut KernelBuilder, Expr, u64)) {
    let full = m / mr * mr;
    if full > 0 {
        b.for_(c(0), c(m / mr), LoopKind::Serial, |b, t| tile(b, &t * &c(mr), mr));
    }
    if full < m {
        tile(b, c(full), m - full);
    }
}

/// B packed into `ceil(N / nr)` panels of `[K, nr]` floats (zero past column N).
pub fn pack(b: &[f32], s: &Shape, nr: u64) -> Vec<f32> {
    let panels = s.n.div_ceil(nr);
    let mut out = vec![0f32; (panels * s.k * nr) as usize];
    for p in 0..panels {
        for kk in 0..s.k {
            for j in 0..nr {
                let col = p * nr + j;
                if col < s.n {
                    let src = if s.trans_b { col * s.k + kk } else { kk * s.n + col };
                    out[((p * s.k + kk) * nr + j) as usize] = b[src as usize];
                }
            }
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Activations with a vector form (in registers before the store).
pub fn vector_act(a: Activation) -> bool {
    matches!(
        a,
        Activation::None
            | Activation::Relu
            | Activation::Clip { .. }
            | Activation::Gelu
            | Activation::Sigmoid
            | Activation::Swish
            | Activation::HardSwish
    )
}

/// `act` on a vector of `lanes` f32s, for the activations of [`vector_act`]: clamps as
/// compare-and-select (a NaN stays NaN), GELU with dlc's fast erf, sigmoid and SiLU with
/// its fast exp, HardSwish with a clamp.
pub fn vector_activation(b: &mut KernelBuilder, act: Activation, v: ValId, lanes: u32) -> Option<ValId> {
    let vt = Ty::vec(Elem::F32, lanes);
    let clamp = |b: &mut KernelBuilder, mut v: ValId, lo: f32, hi: f32| {
        if lo > f32::NEG_INFINITY {
            let l = b.let_(Inst::Const { ty: vt, lit: Lit::Float(lo as f64) });
            let below = b.cmp(CmpOp::FOlt, v, l);
            v = b.select(below, l, v);
        }
        if hi < f32::INFINITY {
            let h = b.let_(Inst::Const { ty: vt, lit: Lit::Float(hi as f64) });
            let above = b.cmp(CmpOp::FOgt, v, h);
            v = b.select(above, h, v);
        }
        v
    };
    Some(match act {
        Activation::None => v,
        Activation::Relu => clamp(b, v, 0.0, f32::INFINITY),
        Activation::Clip { min, max } => clamp(b, v, min, max),
        Activation::Gelu => crate::fastmath::gelu(b, v, lanes),
        // `x * clamp(x / 6 + 1/2, 0, 1)`, the elementwise kernel's formula.
        Activation::HardSwish => {
            let sixth = b.let_(Inst::Const { ty: vt, lit: Lit::Float(1.0 / 6.0) });
            let m = b.bin(BinOp::FMul, v, sixth);
            let half = b.let_(Inst::Const { ty: vt, lit: Lit::Float(0.5) });
            let h = b.bin(BinOp::FAdd, m, half);
            let h = clamp(b, h, 0.0, 1.0);
            b.bin(BinOp::FMul, v, h)
        }
        // `1 / (1 + e^-x)` and `x / (1 + e^-x)` with dlc's fast exp (the elementwise
        // kernels' formulas, so a fused epilogue gives what the unfused ops give).
        Activation::Sigmoid | Activation::Swish => {
            let nx = b.let_(Inst::Un(dlc_kir::UnOp::FNeg, v));
            let e = crate::fastmath::exp(b, nx, lanes);
            let one = b.let_(Inst::Const { ty: vt, lit: Lit::Float(1.0) });
            let d = b.bin(BinOp::FAdd, one, e);
            let num = if act == Activation::Swish { v } else { one };
            b.bin(BinOp::FDiv, num, d)
        }
        _ => return None,
    })
}

/// The packed-GEMM kernel of node `n` (a MatMul or Gemm that [`plan`] accepts) for
/// target `t`. Parameters: A, B (unread: the kernel carries its packed copy), the
/// optional bias or C, then Y.
pub fn packed(name: &str, n: &Node, s: &Shape, t: &Target) -> Result<Kernel, LowerError> {
    let b_data = n.consts.get(1).copied().flatten().ok_or_else(|| n.error("internal: packed B is not a constant"))?;
    let bv = b_data.to_f32().ok_or_else(|| n.error("packed B must be f32"))?;
    let w = t.f32_lanes.max(1) as u64;
    let (nr, mr) = tile(w);
    let vt = Ty::vec(Elem::F32, w as u32);
    let mut params = vec![Access::Read; n.inputs.len()];
    params.push(Access::Write);
    let mut b = KernelBuilder::new(name, &params);
    let pb = b.data("bpack", Elem::F32, f32_bytes(&pack(&bv, s, nr)));
    let panels = s.n.div_ceil(nr);
    let has_third = n.inputs.len() == 3;
    // The epilogue: MatMul's bias and activation, or Gemm's alpha, beta, C and act.
    let (act, gemm): (Activation, Option<&Gemm>) = match n.op {
        Op::MatMul(op) => (op.act, None),
        Op::Gemm(op) => (op.act, Some(op)),
        _ => return Err(n.error("internal: the packed GEMM takes MatMul and Gemm only")),
    };
    // A MatMul with a constant bias (zero-padded to whole panels), or none, and an
    // activation with a vector form runs its epilogue in registers.
    let bias_const = if has_third { n.consts.get(2).copied().flatten() } else { None };
    let vec_epi: Option<Option<u32>> = match (gemm, has_third, bias_const) {
        (None, false, _) if vector_act(act) => Some(None),
        (None, true, Some(bc)) if vector_act(act) => {
            let mut padded = bc.to_f32().ok_or_else(|| n.error("bias must be f32"))?;
            padded.resize((panels * nr) as usize, 0.0);
            Some(Some(b.data("bias", Elem::F32, f32_bytes(&padded))))
        }
        _ => None,
    };
    let scalar_epi = match gemm {
        _ if vec_epi.is_some() => false,
        None => has_third || act != Activation::None,
        Some(op) => has_third || op.alpha != 1.0 || op.act != Activation::None,
    };
    // Run-time rows count as 8 blocks for the cost; a C that varies by row has fixed
    // rows (`plan` checks), so any row count other than 1 gives C's strides then.
    let m_est = s.m.as_const().map_or(8 * mr, |m| m as u64);
    let c_strides = match (gemm, has_third) {
        (Some(_), true) => {
            Some(broadcast_strides_fixed(&n.fixed_in(2)?, &[s.m.as_const().map_or(2, |m| m as u64), s.n]))
        }
        _ => None,
    };
    let py = n.inputs.len() as u32;
    let valid = s.n - (panels - 1) * nr;
    // One tile of `rows` rows (1..=mr) at row i0 and panel p.
    let tile = |b: &mut KernelBuilder, i0: Expr, p: Expr, rows: u64| {
        let accs = zero_accumulators(b, vt, rows * 2);
        let panel = &p * &c(s.k * nr);
        b.for_(c(0), c(s.k), LoopKind::Serial, |b, kk| {
            let bo = &panel + &(&kk * &c(nr));
            let b0 = b.load(vt, pb, bo.clone(), 4);
            let b1 = b.load(vt, pb, &bo + &c(w), 4);
            for r in 0..rows {
                let ai = &(&(&i0 + &c(r)) * &c(s.k)) + &kk;
                let av = b.load(F32, 0, ai, 4);
                let a = b.let_(Inst::Splat(av, w as u32));
                for (h, bh) in [b0, b1].into_iter().enumerate() {
                    let slot = accs[(r * 2) as usize + h];
                    let acc = b.let_(Inst::Get(slot));
                    let v = b.let_(Inst::Fma(a, bh, acc));
                    b.stmt(Stmt::Set(slot, v));
                }
            }
        });
        // Store the tile (whole panels with vector stores, the last one's valid lanes),
        // then apply the epilogue to its elements.
        let j0 = &p * &c(nr);
        let pv = b.index(p.clone());
        let lastp = b.i64(panels as i64 - 1);
        let last = b.cmp(CmpOp::Eq, pv, lastp);
        for r in 0..rows {
            let row = &(&i0 + &c(r)) * &c(s.n);
            for h in 0..2u64 {
                let mut v = b.let_(Inst::Get(accs[(r * 2 + h) as usize]));
                let base = &row + &(&j0 + &c(h * w));
                if let Some(bias) = vec_epi {
                    if let Some(pbias) = bias {
                        let bvec = b.load(vt, pbias, &j0 + &c(h * w), 4);
                        v = b.bin(BinOp::FAdd, v, bvec);
                    }
                    v = vector_activation(b, act, v, w as u32).expect("vector_act checked");
                }
                if valid == nr {
                    b.store(py, base, v, 4);
                } else {
                    let lanes = valid.saturating_sub(h * w).min(w);
                    b.if_(
                        last,
                        |b| {
                            if lanes >= w {
                                b.store(py, base.clone(), v, 4);
                            } else {
                                for l in 0..lanes {
                                    let x = b.let_(Inst::Extract(v, l as u32));
                                    b.store(py, &base + &c(l), x, 4);
                                }
                            }
                        },
                        |b| b.store(py, base.clone(), v, 4),
                    );
                }
            }
        }
        if !scalar_epi {
            return;
        }
        let vn = b.i64(valid as i64);
        let vnr = b.i64(nr as i64);
        let cols = b.select(last, vn, vnr);
        b.for_(c(0), c(rows), LoopKind::Serial, |b, r| {
            let i = &i0 + &r;
            b.for_(c(0), Expr::val(cols), LoopKind::Serial, |b, jj| {
                let j = &j0 + &jj;
                let yi = &(&i * &c(s.n)) + &j;
                let mut y = b.load(F32, py, yi.clone(), 4);
                match gemm {
                    None => {
                        if has_third {
                            let bias = b.load(F32, 2, j.clone(), 4);
                            y = b.bin(BinOp::FAdd, y, bias);
                        }
                    }
                    Some(op) => {
                        if op.alpha != 1.0 {
                            let alpha = b.let_(Inst::Const { ty: F32, lit: Lit::Float(op.alpha as f64) });
                            y = b.bin(BinOp::FMul, y, alpha);
                        }
                        if let Some(cs) = &c_strides {
                            let mut cv = b.load(F32, 2, &(&i * &c(cs[0])) + &(&j * &c(cs[1])), 4);
                            if op.beta != 1.0 {
                                let beta = b.let_(Inst::Const { ty: F32, lit: Lit::Float(op.beta as f64) });
                                cv = b.bin(BinOp::FMul, beta, cv);
                            }
                            y = b.bin(BinOp::FAdd, y, cv);
                        }
                    }
                }
                let y = activation(b, act, y).unwrap_or(y);
                b.store(py, yi, y, 4);
            });
        });
    };
    par(&mut b, panels, 2 * m_est * s.n * s.k, |b, p| {
        row_blocks_expr(b, &s.m, mr, &|b, i0, rows| tile(b, i0, p.clone(), rows))
    });
    Ok(b.finish())
}
