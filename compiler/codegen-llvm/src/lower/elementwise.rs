//! What the kernels still written in inkwell (GEMM, convolutions, pools, attention,
//! int8) share with the elementwise family: broadcast strides, storage types, and the
//! scalar rules of dlc-lower (dtype conversions, epilogue activations) translated
//! inline from kir, so each rule is defined once ([`dlc_lower::elementwise`],
//! [`dlc_lower::dtype`]). Elementwise kernels themselves are lowered by dlc-lower.
use crate::kernel::{Kb, R};
use dlc_ir::ops::Activation;
use dlc_ir::DType;
use dlc_kir::Ty;
use inkwell::types::BasicTypeEnum;
use inkwell::values::{BasicValueEnum, FloatValue, IntValue};

/// Element strides of an operand of dims `dims` broadcast to `out` (0 on stretched dims).
pub(crate) use dlc_lower::shape::broadcast_strides_fixed as broadcast_strides;

/// Merges adjacent dims where every operand's strides stay linear, so common cases
/// (same shapes, per-channel bias) become short, contiguous loop nests.
pub(crate) fn coalesce(out: &[u64], strides: &[Vec<u64>]) -> (Vec<u64>, Vec<Vec<u64>>) {
    let mut dims: Vec<u64> = Vec::new();
    let mut st: Vec<Vec<u64>> = vec![Vec::new(); strides.len()];
    for d in 0..out.len() {
        if out[d] == 1 {
            continue;
        }
        let mergeable =
            !dims.is_empty() && strides.iter().zip(&st).all(|(s, cur)| cur.last().copied() == Some(s[d] * out[d]));
        if mergeable {
            *dims.last_mut().unwrap() *= out[d];
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                *cur.last_mut().unwrap() = s[d];
            }
        } else {
            dims.push(out[d]);
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                cur.push(s[d]);
            }
        }
    }
    (dims, st)
}

/// The LLVM storage type of a dtype (dlc-lower's storage rule, in LLVM types).
pub(crate) fn llvm_type<'ctx>(kb: &Kb<'_, 'ctx>, d: DType) -> Option<BasicTypeEnum<'ctx>> {
    Some(crate::kir::elem_type(kb, dlc_lower::dtype::storage(d)))
}

/// The dtype arithmetic happens in (dlc-lower's rule): f16, bf16 and the 8- and 4-bit
/// floats compute in f32, the 4- and 2-bit integers in 8 bits.
pub(crate) use dlc_lower::dtype::compute as compute_dtype;

/// The body of one element of a per-element kernel: its index over the iteration dims
/// in, loads, computation, store.
pub(crate) type ElementBody<'f, 'ctx> = &'f dyn Fn(&Kb<'_, 'ctx>, &[IntValue<'ctx>]) -> R<()>;

/// How a per-element kernel iterates: called with the iteration dims and the body (a
/// loop nest on the CPU, [`nest`]; one element per thread on a GPU).
pub(crate) type Drive<'f, 'ctx> = &'f dyn Fn(&Kb<'_, 'ctx>, &[u64], ElementBody<'_, 'ctx>) -> R<()>;

/// The CPU's [`Drive`]: a loop nest over the dims.
pub(crate) fn nest<'ctx>(kb: &Kb<'_, 'ctx>, dims: &[u64], body: ElementBody<'_, 'ctx>) -> R<()> {
    kb.nest(dims, |kb, idx| body(kb, idx))
}

/// A loaded value of storage dtype `d` as a value of `compute_dtype(d)`.
pub(crate) fn widen<'ctx>(kb: &Kb<'_, 'ctx>, v: BasicValueEnum<'ctx>, d: DType) -> R<BasicValueEnum<'ctx>> {
    let ty = Ty::scalar(dlc_lower::dtype::storage(d));
    crate::kir::inline(kb, &[(v, ty)], |b, a| dlc_lower::dtype::widen(b, a[0], d))
}

/// Converts `v` of compute dtype `from` to compute dtype `to` (see [`dlc_ir::ops::Cast`]).
pub(crate) fn convert<'ctx>(
    kb: &Kb<'_, 'ctx>,
    v: BasicValueEnum<'ctx>,
    from: DType,
    to: DType,
) -> R<BasicValueEnum<'ctx>> {
    let ty = Ty::scalar(dlc_lower::dtype::storage(from));
    crate::kir::inline(kb, &[(v, ty)], |b, a| dlc_lower::dtype::convert(b, a[0], from, to))
}

/// A Conv/Gemm/MatMul epilogue activation on an f32 value.
pub(crate) fn activation<'ctx>(kb: &Kb<'_, 'ctx>, act: Activation, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
    let ty = Ty::scalar(dlc_kir::Elem::F32);
    let y = crate::kir::inline(kb, &[(x.into(), ty)], |b, a| {
        dlc_lower::elementwise::activation(b, act, a[0]).unwrap_or(a[0])
    })?;
    Ok(y.into_float_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_coalescing() {
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(broadcast_strides(&[2, 3, 4], &[2, 3, 4]), vec![12, 4, 1]);
        // Same shapes collapse to one flat loop.
        let s = broadcast_strides(&[2, 3, 4], &[2, 3, 4]);
        assert_eq!(coalesce(&[2, 3, 4], &[s.clone(), s]), (vec![24], vec![vec![1], vec![1]]));
        // A per-channel bias [C,1,1] against [N,C,H,W]: channel and spatial stay separate.
        let out = [1, 8, 5, 5];
        let bias = broadcast_strides(&[8, 1, 1], &out);
        let full = broadcast_strides(&out, &out);
        assert_eq!(coalesce(&out, &[bias, full]), (vec![8, 25], vec![vec![1, 0], vec![25, 1]]));
    }
}
