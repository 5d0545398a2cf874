//! Packed GEMM for MatMul and Gemm whose B operand is a constant: B is packed at
//! compile time into panels of `NR` columns (`[K, NR]` each, zero-padded), and a
//! register-blocked micro-kernel computes `MR x NR` tiles of C with LLVM vector types
//! and FMA (`NR = 2 W` for a vector width `W` of 16 floats with AVX-512, 8 with AVX2, 4
//! with NEON; `MR = 8` with 32 vector registers, 6 with 16). Rows of A are read in
//! place and broadcast. The epilogue (alpha, C or bias, activation) runs on each
//! finished tile while it is in cache.
use super::elementwise::{activation, broadcast_strides};
use super::NodeInfo;
use crate::kernel::{Kb, R};
use crate::{CodegenError, TargetSpec};
use dlc_ir::ops::{Activation, Gemm};
use dlc_ir::{DType, TensorData};
use inkwell::module::Linkage;
use inkwell::types::VectorType;
use inkwell::values::{IntValue, PointerValue, VectorValue};

/// Vector width in f32 lanes for the target.
pub(crate) fn vector_width(t: &TargetSpec) -> u32 {
    if t.triple.starts_with("aarch64") || t.triple.starts_with("arm64") {
        return 4;
    }
    if t.features.split(',').any(|f| f == "+avx512f")
        || (t.features.is_empty() && crate::target::AVX512_CPUS.contains(&t.cpu.as_str()))
    {
        16
    } else {
        8
    }
}

/// How a product is laid out: `y[M, N] = op(A)[M, K] x op(B)[K, N]` (A row-major).
pub(crate) struct Shape {
    pub m: u64,
    pub k: u64,
    pub n: u64,
    /// B is stored `[N, K]`.
    pub trans_b: bool,
}

/// The epilogue of one output element.
pub(crate) enum Epilogue<'a> {
    /// MatMul: optional bias `[N]` operand index, then `act`.
    MatMul { bias: Option<usize>, act: Activation },
    /// Gemm: `act(alpha * acc + beta * C)`, C broadcast to `[M, N]` (operand 2).
    Gemm { op: &'a Gemm, c_dims: Option<Vec<u64>> },
}

/// A private, cache-line aligned constant array of floats for the kernel being built
/// (compile-time packed weights), named after the kernel and `what`.
pub(crate) fn const_f32_global<'ctx>(kb: &Kb<'_, 'ctx>, what: &str, data: &[f32]) -> PointerValue<'ctx> {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    const_bytes_global(kb, what, &bytes)
}

/// [`const_f32_global`] for raw bytes.
pub(crate) fn const_bytes_global<'ctx>(kb: &Kb<'_, 'ctx>, what: &str, bytes: &[u8]) -> PointerValue<'ctx> {
    let init = kb.cx.const_string(bytes, false);
    let g = kb.m.add_global(init.get_type(), None, &format!("{}.{what}", kb.f.get_name().to_string_lossy()));
    g.set_initializer(&init);
    g.set_constant(true);
    g.set_linkage(Linkage::Private);
    g.set_alignment(64);
    g.as_pointer_value()
}

/// Packs B into `ceil(N / nr)` panels of `[K, nr]` floats.
fn pack(b: &[f32], s: &Shape, nr: u64) -> Vec<f32> {
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

/// Emits the kernel. Parameters: A (`[.., M, K]`, batch rows folded into M), B (unused:
/// its packed copy is a global), optional bias/C, then Y.
pub(crate) fn packed<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    s: &Shape,
    b: &TensorData,
    epi: Epilogue,
    bias_const: Option<&TensorData>,
) -> R<()> {
    let w = vector_width(n.target) as u64;
    let (nr, mr) = (2 * w, if w == 16 || w == 4 { 8 } else { 6 });
    let bv = b.to_f32().ok_or_else(|| CodegenError::Llvm("packed B must be f32".into()))?;
    let packed = pack(&bv, s, nr);
    // The packed panels: a private constant, cache-line aligned.
    let pb = const_f32_global(kb, "bpack", &packed);
    let vt = kb.f32t.vec_type(w as u32);
    let fma = kb.intrinsic("llvm.fma", &[vt.into()])?;
    let panels = s.n.div_ceil(nr);
    // MatMul epilogues with a constant bias (zero-padded to whole panels) and an
    // activation that has a vector form run in registers before the store.
    let vec_epi = match &epi {
        Epilogue::MatMul { bias, act } if vector_act(*act) => match (bias, bias_const) {
            (None, _) => Some((None, *act)),
            (Some(_), Some(bc)) => {
                let mut padded = bc.to_f32().ok_or_else(|| CodegenError::Llvm("bias must be f32".into()))?;
                padded.resize((panels * nr) as usize, 0.0);
                Some((Some(const_f32_global(kb, "bias", &padded)), *act))
            }
            _ => None,
        },
        _ => None,
    };
    // One tile of `rows` rows (1..=mr) at row i0 and panel p.
    let tile = |kb: &Kb<'_, 'ctx>, i0: IntValue<'ctx>, p: IntValue<'ctx>, rows: u64| -> R<()> {
        let (pa, py) = (kb.param(0), kb.param(n.inputs.len()));
        let accs: Vec<PointerValue<'ctx>> = (0..rows * 2).map(|_| kb.alloca(vt.into())).collect::<R<_>>()?;
        for a in &accs {
            kb.b.build_store(*a, vt.const_zero())?;
        }
        let panel = kb.mul(p, kb.c(s.k * nr))?;
        kb.for_n(s.k, |kb, kk| {
            let bo = kb.add(panel, kb.mul(kk, kb.c(nr))?)?;
            let b0 = load_vec(kb, vt, pb, bo)?;
            let b1 = load_vec(kb, vt, pb, kb.add(bo, kb.c(w))?)?;
            for r in 0..rows {
                let ai = kb.add(kb.mul(kb.add(i0, kb.c(r))?, kb.c(s.k))?, kk)?;
                let a = splat(kb, vt, kb.load_f32(pa, ai)?)?;
                for (h, bh) in [b0, b1].into_iter().enumerate() {
                    let slot = accs[(r * 2) as usize + h];
                    let acc = kb.b.build_load(vt, slot, "")?;
                    let v = kb.b.build_call(fma, &[a.into(), bh.into(), acc.into()], "")?;
                    let v = v.try_as_basic_value().basic().ok_or_else(|| CodegenError::Llvm("fma".into()))?;
                    kb.b.build_store(slot, v)?;
                }
            }
            Ok(())
        })?;
        // Store the tile (whole panels with vector stores, the last one's valid lanes),
        // then apply the epilogue to its elements.
        let j0 = kb.mul(p, kb.c(nr))?;
        let last = kb.icmp(inkwell::IntPredicate::EQ, p, kb.c(panels - 1))?;
        let valid = s.n - (panels - 1) * nr;
        for r in 0..rows {
            let row = kb.mul(kb.add(i0, kb.c(r))?, kb.c(s.n))?;
            for h in 0..2u64 {
                let mut v = kb.b.build_load(vt, accs[(r * 2 + h) as usize], "")?.into_vector_value();
                let base = kb.add(row, kb.add(j0, kb.c(h * w))?)?;
                if let Some((bias, act)) = &vec_epi {
                    if let Some(pb) = bias {
                        v = kb.b.build_float_add(v, load_vec(kb, vt, *pb, kb.add(j0, kb.c(h * w))?)?, "")?;
                    }
                    v = vector_activation(kb, *act, v)?;
                }
                if valid == nr {
                    store_vec(kb, vt, py, base, v)?;
                } else {
                    let then = kb.cx.append_basic_block(kb.f, "full");
                    let other = kb.cx.append_basic_block(kb.f, "edge");
                    let done = kb.cx.append_basic_block(kb.f, "stored");
                    kb.b.build_conditional_branch(last, other, then)?;
                    kb.b.position_at_end(then);
                    store_vec(kb, vt, py, base, v)?;
                    kb.b.build_unconditional_branch(done)?;
                    kb.b.position_at_end(other);
                    store_lanes(kb, py, base, v, valid.saturating_sub(h * w).min(w))?;
                    kb.b.build_unconditional_branch(done)?;
                    kb.b.position_at_end(done);
                }
            }
        }
        if vec_epi.is_some() {
            return Ok(());
        }
        epilogue(kb, n, s, &epi, i0, rows, j0, kb.b.build_select(last, kb.c(valid), kb.c(nr), "")?.into_int_value())
    };
    par(kb, panels, 2 * s.m * s.n * s.k, |kb, p| row_blocks(kb, s.m, mr, |kb, i0, rows| tile(kb, i0, p, rows)))
}

pub(crate) fn load_vec<'ctx>(
    kb: &Kb<'_, 'ctx>,
    vt: VectorType<'ctx>,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
) -> R<VectorValue<'ctx>> {
    let p = kb.gep(kb.f32t.into(), base, idx)?;
    Ok(kb.load_aligned(vt.into(), p, 4)?.into_vector_value())
}

pub(crate) fn store_vec<'ctx>(
    kb: &Kb<'_, 'ctx>,
    vt: VectorType<'ctx>,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
    v: VectorValue<'ctx>,
) -> R<()> {
    let _ = vt;
    let p = kb.gep(kb.f32t.into(), base, idx)?;
    kb.store_aligned(p, v, 4)
}

pub(crate) fn splat<'ctx>(
    kb: &Kb<'_, 'ctx>,
    vt: VectorType<'ctx>,
    x: inkwell::values::FloatValue<'ctx>,
) -> R<VectorValue<'ctx>> {
    kb.splat(x.into(), vt.get_size())
}

/// Activations with a vector form.
fn vector_act(a: Activation) -> bool {
    matches!(a, Activation::None | Activation::Relu | Activation::Clip { .. } | Activation::Gelu)
}

fn vector_activation<'ctx>(kb: &Kb<'_, 'ctx>, a: Activation, v: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let vt = v.get_type();
    let c = |x: f32| splat(kb, vt, kb.cf(x));
    let clamp = |v: VectorValue<'ctx>, lo: f32, hi: f32| -> R<VectorValue<'ctx>> {
        let mut v = v;
        if lo > f32::NEG_INFINITY {
            let below = b.build_float_compare(inkwell::FloatPredicate::OLT, v, c(lo)?, "")?;
            v = b.build_select(below, c(lo)?, v, "")?.into_vector_value();
        }
        if hi < f32::INFINITY {
            let above = b.build_float_compare(inkwell::FloatPredicate::OGT, v, c(hi)?, "")?;
            v = b.build_select(above, c(hi)?, v, "")?.into_vector_value();
        }
        Ok(v)
    };
    match a {
        Activation::None => Ok(v),
        Activation::Relu => clamp(v, 0.0, f32::INFINITY),
        Activation::Clip { min, max } => clamp(v, min, max),
        Activation::Gelu => {
            let lanes = vt.get_size();
            let ty = dlc_kir::Ty::vec(dlc_kir::Elem::F32, lanes);
            let g = crate::kir::inline(kb, &[(v.into(), ty)], |b, a| dlc_lower::fastmath::gelu(b, a[0], lanes))?;
            Ok(g.into_vector_value())
        }
        other => Err(CodegenError::Llvm(format!("no vector form for {other:?}"))),
    }
}

/// The epilogue over a stored tile: rows `i0..i0+rows`, columns `j0..j0+cols`.
#[allow(clippy::too_many_arguments)]
fn epilogue<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    s: &Shape,
    epi: &Epilogue,
    i0: IntValue<'ctx>,
    rows: u64,
    j0: IntValue<'ctx>,
    cols: IntValue<'ctx>,
) -> R<()> {
    let py = kb.param(n.inputs.len());
    match epi {
        Epilogue::MatMul { bias: None, act: Activation::None } => return Ok(()),
        Epilogue::Gemm { op, c_dims: None } if op.alpha == 1.0 && op.act == Activation::None => return Ok(()),
        _ => {}
    }
    kb.for_n(rows, |kb, r| {
        let i = kb.add(i0, r)?;
        kb.for_range(kb.c(0), cols, |kb, jj| {
            let j = kb.add(j0, jj)?;
            let yi = kb.add(kb.mul(i, kb.c(s.n))?, j)?;
            let mut y = kb.load_f32(py, yi)?;
            let act = match epi {
                Epilogue::MatMul { bias, act } => {
                    if let Some(bi) = bias {
                        y = kb.fadd(y, kb.load_f32(kb.param(*bi), j)?)?;
                    }
                    *act
                }
                Epilogue::Gemm { op, c_dims } => {
                    if op.alpha != 1.0 {
                        y = kb.fmul(y, kb.cf(op.alpha))?;
                    }
                    if let Some(cd) = c_dims {
                        let cs = broadcast_strides(cd, &[s.m, s.n]);
                        let c = kb.load_f32(kb.param(2), kb.lin(&[(i, cs[0]), (j, cs[1])], 0)?)?;
                        let c = if op.beta == 1.0 { c } else { kb.fmul(kb.cf(op.beta), c)? };
                        y = kb.fadd(y, c)?;
                    }
                    op.act
                }
            };
            kb.store_f32(py, yi, activation(kb, act, y)?)
        })
    })
}

/// Whether a node's B operand can be packed: f32 constant, 2-D.
pub(crate) fn packable(b: Option<&TensorData>, inputs: &[dlc_ir::TensorType]) -> bool {
    b.is_some_and(|t| t.ty().dtype == DType::F32 && t.ty().shape.rank() == 2)
        && inputs.iter().all(|t| t.dtype == DType::F32)
}

/// `lanes` floats (at most the vector's width) from `base[idx..]`; the other lanes are 0.
fn load_lanes<'ctx>(
    kb: &Kb<'_, 'ctx>,
    vt: VectorType<'ctx>,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
    lanes: u64,
) -> R<VectorValue<'ctx>> {
    let w = vt.get_size() as u64;
    if lanes >= w {
        return load_vec(kb, vt, base, idx);
    }
    masked_load(kb, vt, base, idx, &(0..w).map(|l| l < lanes).collect::<Vec<_>>())
}

/// Stores the first `lanes` of `v` at `base[idx..]`.
fn store_lanes<'ctx>(
    kb: &Kb<'_, 'ctx>,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
    v: VectorValue<'ctx>,
    lanes: u64,
) -> R<()> {
    if lanes >= v.get_type().get_size() as u64 {
        return store_vec(kb, v.get_type(), base, idx, v);
    }
    for l in 0..lanes {
        let x = kb.b.build_extract_element(v, kb.cx.i32_type().const_int(l, false), "")?;
        kb.store_f32(base, kb.add(idx, kb.c(l))?, x.into_float_value())?;
    }
    Ok(())
}

/// A convolution's epilogue on one vector of output pixels of one channel: `+ bias`,
/// `+ residual[idx..]` (its first `lanes`), then `act` (in vector form when it has one,
/// else lane by lane).
pub(crate) fn pixel_epilogue<'ctx>(
    kb: &Kb<'_, 'ctx>,
    act: Activation,
    mut v: VectorValue<'ctx>,
    bias: Option<VectorValue<'ctx>>,
    residual: Option<(PointerValue<'ctx>, IntValue<'ctx>, u64)>,
) -> R<VectorValue<'ctx>> {
    if let Some(bv) = bias {
        v = kb.b.build_float_add(v, bv, "")?;
    }
    if let Some((pr, idx, lanes)) = residual {
        v = kb.b.build_float_add(v, load_lanes(kb, v.get_type(), pr, idx, lanes)?, "")?;
    }
    if vector_act(act) {
        return vector_activation(kb, act, v);
    }
    let mut out = v;
    for l in 0..v.get_type().get_size() as u64 {
        let i = kb.cx.i32_type().const_int(l, false);
        let x = kb.b.build_extract_element(v, i, "")?.into_float_value();
        out = kb.b.build_insert_element(out, activation(kb, act, x)?, i, "")?;
    }
    Ok(out)
}

/// `llvm.masked.load` of the lanes set in `mask` from `base[idx..]` (others 0); lanes
/// outside the mask are never read, so `idx` may point before or past the buffer.
pub(crate) fn masked_load<'ctx>(
    kb: &Kb<'_, 'ctx>,
    vt: VectorType<'ctx>,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
    mask: &[bool],
) -> R<VectorValue<'ctx>> {
    let i1 = kb.cx.bool_type();
    let m: Vec<_> = mask.iter().map(|&b| i1.const_int(b as u64, false)).collect();
    let m = VectorType::const_vector(&m);
    let p = kb.gep(kb.f32t.into(), base, idx)?;
    let ptr = kb.cx.ptr_type(inkwell::AddressSpace::default());
    let f = kb.intrinsic("llvm.masked.load", &[vt.into(), ptr.into()])?;
    // LLVM releases differ on whether the alignment is an argument.
    let args: Vec<inkwell::values::BasicMetadataValueEnum> = if f.count_params() == 4 {
        vec![p.into(), kb.cx.i32_type().const_int(4, false).into(), m.into(), vt.const_zero().into()]
    } else {
        vec![p.into(), m.into(), vt.const_zero().into()]
    };
    let v = kb.b.build_call(f, &args, "")?;
    Ok(v.try_as_basic_value().basic().ok_or_else(|| CodegenError::Llvm("masked.load".into()))?.into_vector_value())
}

/// `a * b + c` on vectors (llvm.fma).
pub(crate) fn vfma<'ctx>(
    kb: &Kb<'_, 'ctx>,
    a: VectorValue<'ctx>,
    b: VectorValue<'ctx>,
    c: VectorValue<'ctx>,
) -> R<VectorValue<'ctx>> {
    Ok(kb.call_intrinsic("llvm.fma", &[a.get_type().into()], &[a.into(), b.into(), c.into()])?.into_vector_value())
}

/// The sum of a vector's lanes by halving (a fixed tree order).
pub(crate) fn hsum<'ctx>(kb: &Kb<'_, 'ctx>, v: VectorValue<'ctx>) -> R<inkwell::values::FloatValue<'ctx>> {
    let i32t = kb.cx.i32_type();
    let mut v = v;
    let mut n = v.get_type().get_size();
    while n > 1 {
        let half = n / 2;
        let lo: Vec<_> = (0..half).map(|i| i32t.const_int(i as u64, false)).collect();
        let hi: Vec<_> = (half..n).map(|i| i32t.const_int(i as u64, false)).collect();
        let a = kb.b.build_shuffle_vector(v, v, inkwell::types::VectorType::const_vector(&lo), "")?;
        let b = kb.b.build_shuffle_vector(v, v, inkwell::types::VectorType::const_vector(&hi), "")?;
        v = kb.b.build_float_add(a, b, "")?;
        n = half;
    }
    Ok(kb.b.build_extract_element(v, i32t.const_zero(), "")?.into_float_value())
}

/// `for i in 0..n { body(kb, i) }`, on the kernel's thread pool when the kernel does
/// at least 0.5 MFLOP (below that, handing out tasks costs more than it saves). Pool
/// tasks are runs of consecutive indices worth at least [`dlc_lower::TASK_WORK`] each (the
/// shared task counter costs about 0.1 us per task when two cores take turns on it).
pub(crate) fn par<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: u64,
    flops: u64,
    body: impl FnOnce(&Kb<'_, 'ctx>, IntValue<'ctx>) -> R<()>,
) -> R<()> {
    if n < 2 || flops < dlc_lower::PAR_MIN_WORK {
        return kb.for_n(n, |kb, i| body(kb, i));
    }
    let tasks = (flops / dlc_lower::TASK_WORK).clamp(2, n);
    if tasks == n {
        return kb.parallel_for(n, body);
    }
    let per = n.div_ceil(tasks);
    kb.parallel_for(n.div_ceil(per), |kb, t| {
        let lo = kb.mul(t, kb.c(per))?;
        let hi = kb.add(lo, kb.c(per))?;
        let hi = kb.select_i(kb.icmp(inkwell::IntPredicate::SGT, hi, kb.c(n))?, kb.c(n), hi)?;
        kb.for_range(lo, hi, |kb, i| body(kb, i))
    })
}

/// Runs `tile(kb, first_row, rows)` over `m` rows in blocks of `mr`: a loop over the whole
/// blocks, then one tile of the `m % mr` leftover rows (not one tile per leftover row,
/// which would leave the FMA units waiting on one or two accumulator chains).
pub(crate) fn row_blocks<'ctx>(
    kb: &Kb<'_, 'ctx>,
    m: u64,
    mr: u64,
    tile: impl Fn(&Kb<'_, 'ctx>, IntValue<'ctx>, u64) -> R<()>,
) -> R<()> {
    let full = m / mr * mr;
    if full > 0 {
        kb.for_n(m / mr, |kb, t| tile(kb, kb.mul(t, kb.c(mr))?, mr))?;
    }
    if full < m {
        tile(kb, kb.c(full), m - full)?;
    }
    Ok(())
}

/// Whether a convolution is a plain 1x1 (stride 1, no padding, one group): then it is a
/// GEMM per image, `Y[M, P] = W[M, C] X[C, P]` over the `P = H W` pixels.
pub(crate) fn is_pointwise(op: &dlc_ir::ops::Conv, n: &NodeInfo) -> bool {
    n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32)
        && op.group == 1
        && super::convblk::pointwise(op, &n.in_dims(1))
}

/// The cost model's cycles per output element and input channel of [`conv1x1`] (see
/// `convblk::tile_cycles`): `MR`-channel tiles over panels of `2 W` pixels, the last
/// panel partly empty when the pixel count is not a multiple; `k` input channels.
pub(crate) fn conv1x1_cost(w: u64, m: u64, p: u64, k: u64) -> f64 {
    let mr = if w == 8 { 6 } else { 8 };
    let tile = |rows: u64| super::convblk::tile_cycles(2 * rows, 2 + rows, 0);
    let col = (m / mr) as f64 * tile(mr) + if !m.is_multiple_of(mr) { tile(m % mr) } else { 0.0 };
    // Plus the stores, whole vectors: a cycle per vector, spread over the k steps.
    p.div_ceil(2 * w) as f64 * col / (m * p) as f64 + 1.0 / (w * k) as f64
}

/// A 1x1 convolution as a register-blocked GEMM: the vector lanes run along pixels
/// (contiguous in NCHW), `MR` output channels share each loaded pixel vector, weights
/// are broadcast. The last, partial panel of pixels uses masked loads. Epilogue (bias per
/// channel, residual, activation) in registers before the store.
pub(crate) fn conv1x1<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, op: &dlc_ir::ops::Conv) -> R<()> {
    let (x, wd) = (n.in_dims(0), n.in_dims(1));
    let (batch, c, p) = (x[0], x[1], x[2] * x[3]);
    let m = wd[0];
    let w = vector_width(n.target) as u64;
    let (nr, mr) = (2 * w, if w == 16 || w == 4 { 8 } else { 6 });
    let vt = kb.f32t.vec_type(w as u32);
    let (has_bias, has_res, n_in) = (n.inputs.len() >= 3, n.inputs.len() == 4, n.inputs.len());
    let full_panels = p / nr;
    let valid = p % nr;
    // Loads `w` floats at `base + idx`, of which the first `lanes` exist (the rest 0).
    // One tile: `rows` channels from m0, pixels j0.. with `width` valid (<= nr).
    let tile = |kb: &Kb<'_, 'ctx>,
                img: IntValue<'ctx>,
                m0: IntValue<'ctx>,
                j0: IntValue<'ctx>,
                rows: u64,
                width: u64|
     -> R<()> {
        let (px, pw) = (kb.param(0), kb.param(1));
        let pb = has_bias.then(|| kb.param(2));
        let pr = has_res.then(|| kb.param(3));
        let halves: Vec<u64> = (0..2).map(|h| width.saturating_sub(h * w).min(w)).collect();
        let accs: Vec<PointerValue<'ctx>> = (0..rows * 2).map(|_| kb.alloca(vt.into())).collect::<R<_>>()?;
        for a in &accs {
            kb.b.build_store(*a, vt.const_zero())?;
        }
        let xo = kb.mul(img, kb.c(c * p))?;
        kb.for_n(c, |kb, k| {
            let xrow = kb.add(kb.add(xo, kb.mul(k, kb.c(p))?)?, j0)?;
            let bs: Vec<VectorValue<'ctx>> = (0..2u64)
                .map(|h| {
                    if halves[h as usize] == 0 {
                        Ok(vt.const_zero())
                    } else {
                        load_lanes(kb, vt, px, kb.add(xrow, kb.c(h * w))?, halves[h as usize])
                    }
                })
                .collect::<R<_>>()?;
            for r in 0..rows {
                let wv = kb.load_f32(pw, kb.add(kb.mul(kb.add(m0, kb.c(r))?, kb.c(c))?, k)?)?;
                let a = splat(kb, vt, wv)?;
                for h in 0..2usize {
                    if halves[h] == 0 {
                        continue;
                    }
                    let slot = accs[r as usize * 2 + h];
                    let cur = kb.b.build_load(vt, slot, "")?.into_vector_value();
                    kb.b.build_store(slot, vfma(kb, a, bs[h], cur)?)?;
                }
            }
            Ok(())
        })?;
        let yo = kb.mul(img, kb.c(m * p))?;
        for r in 0..rows {
            let ch = kb.add(m0, kb.c(r))?;
            let yrow = kb.add(kb.add(yo, kb.mul(ch, kb.c(p))?)?, j0)?;
            let bias = match pb {
                Some(pb) => Some(splat(kb, vt, kb.load_f32(pb, ch)?)?),
                None => None,
            };
            for h in 0..2usize {
                if halves[h] == 0 {
                    continue;
                }
                let idx = kb.add(yrow, kb.c(h as u64 * w))?;
                let v = kb.b.build_load(vt, accs[r as usize * 2 + h], "")?.into_vector_value();
                let v = pixel_epilogue(kb, op.act, v, bias, pr.map(|pr| (pr, idx, halves[h])))?;
                store_lanes(kb, kb.param(n_in), idx, v, halves[h])?;
            }
        }
        Ok(())
    };
    let rows_loop = |kb: &Kb<'_, 'ctx>, img: IntValue<'ctx>, j0: IntValue<'ctx>, width: u64| -> R<()> {
        row_blocks(kb, m, mr, |kb, m0, rows| tile(kb, img, m0, j0, rows, width))
    };
    // Parallel over (image, pixel panel); the partial panel is one more task per image.
    let per_img = full_panels + (valid > 0) as u64;
    par(kb, batch * per_img, 2 * batch * m * c * p, |kb, t| {
        let img = kb.b.build_int_unsigned_div(t, kb.c(per_img), "")?;
        let pnl = kb.b.build_int_unsigned_rem(t, kb.c(per_img), "")?;
        if valid == 0 {
            return rows_loop(kb, img, kb.mul(pnl, kb.c(nr))?, nr);
        }
        let is_edge = kb.icmp(inkwell::IntPredicate::EQ, pnl, kb.c(full_panels))?;
        kb.if_else(
            is_edge,
            |kb| rows_loop(kb, img, kb.c(full_panels * nr), valid),
            |kb| rows_loop(kb, img, kb.mul(pnl, kb.c(nr))?, nr),
        )
    })
}

/// Whether the direct vector convolution handles this Conv: one group, dilation 1,
/// stride 1 or 2, f32, at most 16 pixel tiles per output row.
pub(crate) fn direct_ok(g: &dlc_ir::ops::PoolGeometry, op: &dlc_ir::ops::Conv, n: &NodeInfo) -> bool {
    let w = vector_width(n.target) as u64;
    let (c, wd) = (n.in_dims(0)[1], n.in_dims(1));
    let depthwise = op.group as u64 == c && wd[0] == c && wd[1] == 1;
    n.inputs.iter().chain(n.outputs).all(|t| t.dtype == DType::F32)
        && (op.group == 1 || depthwise)
        && g.dilations == [1, 1]
        && g.strides[0] == g.strides[1]
        && (g.strides[1] == 1 || g.strides[1] == 2)
        && g.output[1].div_ceil(2 * w) <= 16
        && g.kernel[1] <= 7
}

/// Direct convolution with vectors along output pixels: a tile is `MR` output channels
/// by `NR` consecutive pixels of one output row; for each input channel and kernel row
/// (skipped where it falls in the padding), each kernel column loads the tile's input
/// pixels once (stride 2: two vectors, even lanes kept) and every channel's weight is
/// broadcast into an FMA. Tile positions along the row are unrolled at compile time, so
/// tiles that touch the left or right padding are known and use masked loads, the
/// padding reading as zeros. Epilogue (bias, residual, activation) in registers.
pub(crate) fn conv_direct<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    op: &dlc_ir::ops::Conv,
    g: &dlc_ir::ops::PoolGeometry,
) -> R<()> {
    let (x, wd) = (n.in_dims(0), n.in_dims(1));
    let (batch, c, h, wi) = (x[0], x[1], x[2], x[3]);
    let (m, cg, kh, kw) = (wd[0], wd[1], wd[2], wd[3]);
    // Depthwise (one input channel per output channel): one channel per tile, its own input.
    let depthwise = op.group > 1;
    let [oh, ow] = g.output;
    let s = g.strides[1];
    let (pt, pl) = (g.pad_begin[0], g.pad_begin[1]);
    // Tile width: two full vectors on wide rows; on narrow rows (the 14- and 7-pixel
    // rows of late CNN layers) one vector, of half width if that wastes fewer lanes, with
    // more channels per tile to keep the FMA units busy.
    let vw = vector_width(n.target) as u64;
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
    let vt = kb.f32t.vec_type(w as u32);
    let i32t = kb.cx.i32_type();
    let (has_bias, has_res, n_in) = (n.inputs.len() >= 3, n.inputs.len() == 4, n.inputs.len());
    // The input vector for output pixels ox0 + h*w .. (lanes of them), kernel column kx,
    // from the input row starting at `row`: contiguous or strided, masked at the borders.
    // Stride 2 keeps the even lanes of two loaded vectors, in the order one in-lane
    // shuffle gives (x86 `vshufps`: in each 128-bit block two from the first vector,
    // then two from the second); the accumulators keep that order and `unperm` restores
    // the pixel order once per output vector, instead of a cross-lane shuffle per tap.
    let even_idx: Vec<u64> =
        (0..w).map(|j| if j % 4 < 2 { j / 4 * 4 + 2 * (j % 4) } else { w + j / 4 * 4 + 2 * (j % 4 - 2) }).collect();
    let even: Vec<_> = even_idx.iter().map(|&e| i32t.const_int(e, false)).collect();
    let unperm: Vec<_> =
        (0..w).map(|k| i32t.const_int(even_idx.iter().position(|&e| e / 2 == k).unwrap_or(0) as u64, false)).collect();
    let input = |kb: &Kb<'_, 'ctx>, row: IntValue<'ctx>, ox0: u64, kx: u64, lanes: u64| -> R<VectorValue<'ctx>> {
        let px = kb.param(0);
        let first = (ox0 * s + kx) as i64 - pl as i64;
        let last = ((ox0 + lanes - 1) * s + kx) as i64 - pl as i64;
        let interior = first >= 0 && last < wi as i64 && lanes == w;
        if interior && s == 1 {
            return load_vec(kb, vt, px, kb.add(row, kb.c(first as u64))?);
        }
        if interior && s == 2 && last + 1 < wi as i64 {
            let a = load_vec(kb, vt, px, kb.add(row, kb.c(first as u64))?)?;
            let b = load_vec(kb, vt, px, kb.add(row, kb.c(first as u64 + w))?)?;
            return Ok(kb.b.build_shuffle_vector(a, b, VectorType::const_vector(&even), "")?);
        }
        if s == 1 {
            // A border tile: one masked load; lanes in the padding (or past the row's
            // valid pixels) are not read and come back 0.
            let mask: Vec<bool> =
                (0..w).map(|l| l < lanes && first + (l as i64) >= 0 && first + (l as i64) < wi as i64).collect();
            let base = kb.b.build_int_add(row, kb.i64t.const_int(first as u64, true), "")?;
            return masked_load(kb, vt, px, base, &mask);
        }
        if s == 2 {
            // Two masked loads over the 2w-element span, then the even lanes (lanes past
            // `lanes` hold values that are never stored).
            let span = |off: u64| -> Vec<bool> {
                (0..w).map(|l| (0..wi as i64).contains(&(first + (off + l) as i64))).collect()
            };
            let base = kb.b.build_int_add(row, kb.i64t.const_int(first as u64, true), "")?;
            let a = masked_load(kb, vt, px, base, &span(0))?;
            let b = masked_load(kb, vt, px, kb.add(base, kb.c(w))?, &span(w))?;
            return Ok(kb.b.build_shuffle_vector(a, b, VectorType::const_vector(&even), "")?);
        }
        Err(CodegenError::Llvm(format!("direct convolution with stride {s}")))
    };
    let tile = |kb: &Kb<'_, 'ctx>,
                img: IntValue<'ctx>,
                oy: IntValue<'ctx>,
                m0: IntValue<'ctx>,
                rows: u64,
                ox0: u64|
     -> R<()> {
        let pw = kb.param(1);
        let pb = has_bias.then(|| kb.param(2));
        let pr = has_res.then(|| kb.param(3));
        let py = kb.param(n_in);
        let width = (ow - ox0).min(nr);
        let halves: Vec<u64> = (0..nh).map(|hh| width.saturating_sub(hh * w).min(w)).collect();
        let accs: Vec<PointerValue<'ctx>> = (0..rows * nh).map(|_| kb.alloca(vt.into())).collect::<R<_>>()?;
        for a in &accs {
            kb.b.build_store(*a, vt.const_zero())?;
        }
        kb.for_n(cg, |kb, ci| {
            let chan = if depthwise { m0 } else { ci };
            let plane = kb.mul(kb.add(kb.mul(img, kb.c(c))?, chan)?, kb.c(h * wi))?;
            kb.for_n(kh, |kb, ky| {
                // iy = oy*s + ky - pad_top, skipped outside the image.
                let iy = kb.sub(kb.add(kb.mul(oy, kb.c(s))?, ky)?, kb.c(pt))?;
                let inside = kb.in_bounds(iy, h)?;
                kb.if_then(inside, |kb| {
                    let row = kb.add(plane, kb.mul(iy, kb.c(wi))?)?;
                    for kx in 0..kw {
                        let xs: Vec<VectorValue<'ctx>> = (0..nh)
                            .map(|hh| {
                                if halves[hh as usize] == 0 {
                                    Ok(vt.const_zero())
                                } else {
                                    input(kb, row, ox0 + hh * w, kx, halves[hh as usize])
                                }
                            })
                            .collect::<R<_>>()?;
                        for r in 0..rows {
                            let wi_ = kb.lin(&[(kb.add(m0, kb.c(r))?, cg * kh * kw), (ci, kh * kw), (ky, kw)], kx)?;
                            let a = splat(kb, vt, kb.load_f32(pw, wi_)?)?;
                            for hh in 0..nh as usize {
                                if halves[hh] == 0 {
                                    continue;
                                }
                                let slot = accs[r as usize * nh as usize + hh];
                                let cur = kb.b.build_load(vt, slot, "")?.into_vector_value();
                                kb.b.build_store(slot, vfma(kb, a, xs[hh], cur)?)?;
                            }
                        }
                    }
                    Ok(())
                })
            })
        })?;
        for r in 0..rows {
            let ch = kb.add(m0, kb.c(r))?;
            let yrow = kb.lin(&[(img, m * oh * ow), (ch, oh * ow), (oy, ow)], ox0)?;
            let bias = match pb {
                Some(pb) => Some(splat(kb, vt, kb.load_f32(pb, ch)?)?),
                None => None,
            };
            for hh in 0..nh as usize {
                let lanes = halves[hh];
                if lanes == 0 {
                    continue;
                }
                let idx = kb.add(yrow, kb.c(hh as u64 * w))?;
                let mut v = kb.b.build_load(vt, accs[r as usize * nh as usize + hh], "")?.into_vector_value();
                if s == 2 {
                    v = kb.b.build_shuffle_vector(v, v, VectorType::const_vector(&unperm), "")?;
                }
                let v = pixel_epilogue(kb, op.act, v, bias, pr.map(|pr| (pr, idx, lanes)))?;
                store_lanes(kb, py, idx, v, lanes)?;
            }
        }
        Ok(())
    };
    let flops = 2 * batch * m * cg * kh * kw * oh * ow;
    // A task is an output row; a depthwise row is split further into groups of 16
    // channels (the 7- and 14-row layers of late stages would otherwise give two threads
    // 7 or 14 unequal tasks).
    let group = if depthwise { 16.min(m) } else { m };
    let groups = m.div_ceil(group);
    par(kb, batch * oh * groups, flops, |kb, t| {
        // Channel groups outer: a run of consecutive tasks covers whole channel planes.
        let rows = batch * oh;
        let row = kb.b.build_int_unsigned_rem(t, kb.c(rows), "")?;
        let g0 = kb.mul(kb.b.build_int_unsigned_div(t, kb.c(rows), "")?, kb.c(group))?;
        let img = kb.b.build_int_unsigned_div(row, kb.c(oh), "")?;
        let oy = kb.b.build_int_unsigned_rem(row, kb.c(oh), "")?;
        let channels = |kb: &Kb<'_, 'ctx>, count: u64| -> R<()> {
            for t in 0..ow.div_ceil(nr) {
                let ox0 = t * nr;
                row_blocks(kb, count, mr, |kb, m0, rows| tile(kb, img, oy, kb.add(g0, m0)?, rows, ox0))?;
            }
            Ok(())
        };
        if m.is_multiple_of(group) {
            return channels(kb, group);
        }
        let last = kb.icmp(inkwell::IntPredicate::EQ, g0, kb.c((groups - 1) * group))?;
        kb.if_else(last, |kb| channels(kb, m - (groups - 1) * group), |kb| channels(kb, group))
    })
}
