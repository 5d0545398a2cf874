//! Vector helpers of the inkwell kernels still to be ported to kir (the channel-blocked
//! convolution, `convblk.rs`, and int8, `quant.rs`): constant globals for packed
//! weights, vector loads and broadcasts, masked loads, the convolution pixel epilogue
//! (its vector activations are dlc-lower's, inlined), FMA and the pool-task policy.
//! The packed GEMM, the 1x1 and the direct convolutions are dlc-lower's (`gemm.rs`,
//! `conv1x1.rs`, `convdirect.rs`).
use super::elementwise::activation;
use crate::kernel::{Kb, R};
use crate::CodegenError;
use dlc_ir::ops::Activation;
use inkwell::module::Linkage;
use inkwell::types::VectorType;
use inkwell::values::{IntValue, PointerValue, VectorValue};

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

pub(crate) fn load_vec<'ctx>(
    kb: &Kb<'_, 'ctx>,
    vt: VectorType<'ctx>,
    base: PointerValue<'ctx>,
    idx: IntValue<'ctx>,
) -> R<VectorValue<'ctx>> {
    let p = kb.gep(kb.f32t.into(), base, idx)?;
    Ok(kb.load_aligned(vt.into(), p, 4)?.into_vector_value())
}

/// Activations with a vector form.
fn vector_act(a: Activation) -> bool {
    dlc_lower::gemm::vector_act(a)
}

/// `a` on a vector, from dlc-lower's vector form ([`dlc_lower::gemm::vector_activation`]).
fn vector_activation<'ctx>(kb: &Kb<'_, 'ctx>, a: Activation, v: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let lanes = v.get_type().get_size();
    let ty = dlc_kir::Ty::vec(dlc_kir::Elem::F32, lanes);
    let r = crate::kir::inline(kb, &[(v.into(), ty)], |b, x| {
        dlc_lower::gemm::vector_activation(b, a, x[0], lanes).unwrap_or(x[0])
    })?;
    Ok(r.into_vector_value())
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
