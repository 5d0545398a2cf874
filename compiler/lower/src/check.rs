//! Index checks: the values of Gather's, GatherElements', ScatterElements' and
//! ScatterND's indices against the extents they address ([`dlc_ir::ops::index_operand`]).
//!
//! The data-movement kernels clamp every index, so memory stays in bounds whatever the
//! values; ONNX Runtime, though, fails a run whose index is out of range, and a clamped
//! answer would be silently wrong. Constant indices are checked here at compile time
//! ([`check_const`]); indices computed at run time get a kernel ([`kernel`]) that the
//! program runs in a `bind` step before the node's kernel: it binds no symbols, and a
//! nonzero result fails the run with [`Reason::IndexRange`], which dlc-runtime reports
//! with the node's name. (The ONNX importer guards the indices of a speculatively
//! computed `If` branch by its condition, so the branch not taken cannot fail a run.)
use crate::{LowerError, Node};
use dlc_ir::bind::Reason;
use dlc_ir::{DType, Dim};
use dlc_kir::{Access, BinOp, CmpOp, Elem, Expr, Inst, Kernel, KernelBuilder, LoopKind, Stmt, Ty};

/// Where node `n`'s indices are: `(operand, tuple length, extents)`.
pub fn index_operand(n: &Node) -> Option<(usize, usize, Vec<Dim>)> {
    dlc_ir::ops::index_operand(n.op, n.inputs)
}

/// Checks constant indices at compile time: an error naming the node and the first
/// index out of range. Indices against a run-time extent are left to the run.
pub fn check_const(n: &Node) -> Result<(), LowerError> {
    let Some((operand, k, extents)) = index_operand(n) else { return Ok(()) };
    let Some(Some(c)) = n.consts.get(operand) else { return Ok(()) };
    let Some(values) = c.to_i64() else { return Ok(()) };
    if k == 0 {
        return Ok(());
    }
    for (j, &v) in values.iter().enumerate() {
        let Some(d) = extents[j % k].fixed() else { continue };
        let d = d as i64;
        if v < -d || v >= d {
            return Err(n.error(format!(
                "constant index {v} (element {j} of operand {operand}) is out of range for an axis of extent {d}"
            )));
        }
    }
    Ok(())
}

/// The run-time check of node `n`'s indices: parameters the indices (read) and the
/// bind step's result (one i64, written): 0, or [`Reason::IndexRange`]'s code when some
/// index `i` of tuple component `q` lies outside `-d_q <= i < d_q`. `None` when `n` has
/// no indices.
pub fn kernel(name: &str, n: &Node) -> Option<Result<Kernel, LowerError>> {
    let (operand, k, extents) = index_operand(n)?;
    Some(build(name, n, operand, k, &extents))
}

fn build(name: &str, n: &Node, operand: usize, k: usize, extents: &[Dim]) -> Result<Kernel, LowerError> {
    let it = &n.inputs[operand];
    if !matches!(it.dtype, DType::I32 | DType::I64) {
        return Err(n.error(format!("indices must be int32 or int64, got {}", it.dtype)));
    }
    let dims = Node::dims(it);
    let tuples = match k {
        1 => dims.iter().fold(Expr::c(1), |a, d| &a * d),
        _ => dims[..dims.len().saturating_sub(1)].iter().fold(Expr::c(1), |a, d| &a * d),
    };
    let mut b = KernelBuilder::new(name, &[Access::Read, Access::Write]);
    let (zero, one) = (b.i64(0), b.i64(1));
    let bad = b.local(Ty::scalar(Elem::I64), zero);
    if k > 0 {
        b.nest(&[tuples], LoopKind::Serial, |b, t| {
            for (q, extent) in extents.iter().enumerate().take(k) {
                let at = &(&t[0] * &Expr::c(k as i64)) + &Expr::c(q as i64);
                let raw = crate::movement::load_raw_index(b, 0, it.dtype, at);
                let d = crate::ival(b, &extent.expr());
                let lo = b.bin(BinOp::Sub, zero, d);
                let below = b.cmp(CmpOp::Slt, raw, lo);
                let above = b.cmp(CmpOp::Sge, raw, d);
                let out = b.select(below, below, above);
                let flag = b.select(out, one, zero);
                let acc = b.let_(Inst::Get(bad));
                let acc = b.bin(BinOp::Or, acc, flag);
                b.stmt(Stmt::Set(bad, acc));
            }
        });
    }
    let acc = b.let_(Inst::Get(bad));
    let failed = b.cmp(CmpOp::Ne, acc, zero);
    let code = b.i64(Reason::IndexRange.code());
    let r = b.select(failed, code, zero);
    b.store(1, Expr::c(0), r, 8);
    Ok(b.finish())
}
