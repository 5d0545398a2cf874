//! How the translator iterates a per-element kernel (a nest of `each` loops): a
//! [`Drive`] gets the element space and the body of one element, and runs it as a loop
//! nest on the CPU ([`nest`]) or one element per thread on a GPU (`gpu`).
use crate::kernel::{Kb, R};
use inkwell::values::IntValue;

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
