//! Data movement for any dtype: elements move as integers of their width.
use crate::shape::{coalesce, contiguous_strides, linear};
use crate::{LowerError, Node};
use dlc_ir::ops::{Slice, Transpose};
use dlc_kir::{Access, Elem, Expr, Kernel, KernelBuilder, LoopKind, Ty};

/// The integer type elements of this byte width move as.
fn elem_of(n: &Node, bytes: usize) -> Result<Elem, LowerError> {
    Elem::int_of_bytes(bytes).ok_or_else(|| n.error(format!("elements of {bytes} bytes")))
}

/// One element per iteration of an `each` nest over `dims`: `y[dst] = x[src]`.
fn copy_nest(
    name: &str,
    elem: Elem,
    dims: &[Expr],
    src: impl Fn(&[Expr]) -> Expr,
    dst: impl Fn(&[Expr]) -> Expr,
) -> Kernel {
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let align = elem.bytes();
    b.nest(dims, LoopKind::Each, |b, idx| {
        let v = b.load(Ty::scalar(elem), 0, src(idx), align);
        b.store(1, dst(idx), v, align);
    });
    b.finish()
}

/// Transpose: a nest over the result's dims (coalesced with the permuted input strides),
/// reading input dim `perm[d]` while walking result dim `d`. Symbolic dims are allowed.
pub fn transpose(name: &str, n: &Node, op: &Transpose) -> Result<Kernel, LowerError> {
    let x = Node::dims(&n.inputs[0]);
    let out = Node::dims(&n.outputs[0]);
    let perm = op.resolved_perm(x.len());
    if perm.len() != x.len() || perm.iter().any(|&p| p >= x.len()) {
        return Err(n.error("permutation does not match the rank"));
    }
    let in_strides = contiguous_strides(&x);
    let src: Vec<Expr> = perm.iter().map(|&p| in_strides[p].clone()).collect();
    let dst = contiguous_strides(&out);
    let (dims, st) = coalesce(&out, &[src, dst]);
    let elem = elem_of(n, n.outputs[0].dtype.size())?;
    Ok(copy_nest(name, elem, &dims, |i| linear(i, &st[0], Expr::c(0)), |i| linear(i, &st[1], Expr::c(0))))
}

/// Slice with constant parameters: a nest over the result reading
/// `input[start + i * step]` per dim (steps may be negative). Needs fixed dims.
pub fn slice(name: &str, n: &Node, op: &Slice) -> Result<Kernel, LowerError> {
    let x = n.fixed_in(0)?;
    let r = op.resolve(&x).map_err(|m| n.error(m))?;
    let elem = elem_of(n, n.outputs[0].dtype.size())?;
    let out: Vec<Expr> = r.iter().map(|t| Expr::c(t.2 as i64)).collect();
    if r.iter().any(|t| t.2 == 0) {
        return Ok(KernelBuilder::new(name, &[Access::Read, Access::Write]).finish());
    }
    let xs = contiguous_strides(&x.iter().map(|&d| Expr::c(d as i64)).collect::<Vec<_>>());
    let base: i64 = r.iter().zip(&xs).map(|((s, _, _), st)| s * st.as_const().unwrap_or(0)).sum();
    let steps: Vec<Expr> = r.iter().zip(&xs).map(|((_, step, _), st)| st.scale(*step)).collect();
    let ys = contiguous_strides(&out);
    Ok(copy_nest(name, elem, &out, |i| linear(i, &steps, Expr::c(base)), |i| linear(i, &ys, Expr::c(0))))
}
