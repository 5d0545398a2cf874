//! Vector helpers of the int8 kernels (`quant.rs`), the one family still lowered
//! through inkwell: constant globals for packed weights, vector loads, the convolution
//! epilogue (dlc-lower's, translated inline), FMA and the pool-task policy. The f32
//! GEMM and convolutions are dlc-lower's (`gemm.rs`, `conv1x1.rs`, `convdirect.rs`,
//! `convblk.rs`).
use crate::kernel::{Kb, R};
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

/// A convolution's epilogue on one vector of output pixels or channels: `+ bias`, then
/// `act`: dlc-lower's [`dlc_lower::conv1x1::pixel_epilogue`], translated inline.
pub(crate) fn pixel_epilogue<'ctx>(
    kb: &Kb<'_, 'ctx>,
    act: Activation,
    v: VectorValue<'ctx>,
    bias: Option<VectorValue<'ctx>>,
) -> R<VectorValue<'ctx>> {
    let lanes = v.get_type().get_size();
    let ty = dlc_kir::Ty::vec(dlc_kir::Elem::F32, lanes);
    let mut args = vec![(v.into(), ty)];
    args.extend(bias.map(|b| (b.into(), ty)));
    let r = crate::kir::inline(kb, &args, |b, x| {
        dlc_lower::conv1x1::pixel_epilogue(b, act, x[0], lanes, x.get(1).copied(), None)
    })?;
    Ok(r.into_vector_value())
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
