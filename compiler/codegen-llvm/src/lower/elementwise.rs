//! Elementwise kernels: broadcasting binary ops over coalesced loop nests, unary maps.
use super::NodeInfo;
use crate::kernel::{Kb, R};
use inkwell::values::FloatValue;

#[derive(Clone, Copy)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy)]
pub(crate) enum UnOp {
    Relu,
    Sigmoid,
    Tanh,
    Clip(f32, f32),
}

/// Element strides of an operand of dims `dims` broadcast to `out` (0 on stretched dims).
pub(crate) fn broadcast_strides(dims: &[u64], out: &[u64]) -> Vec<u64> {
    let r = out.len();
    let mut strides = vec![0; r];
    let mut s = 1;
    for k in (0..dims.len()).rev() {
        let d = r - dims.len() + k;
        strides[d] = if dims[k] == 1 && out[d] != 1 { 0 } else { s };
        s *= dims[k];
    }
    strides
}

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

pub(crate) fn binary(kb: &Kb, n: &NodeInfo, op: BinOp) -> R<()> {
    n.require_f32()?;
    let out = n.out_dims(0);
    let contiguous = broadcast_strides(&out, &out);
    let sa = broadcast_strides(&n.in_dims(0), &out);
    let sb = broadcast_strides(&n.in_dims(1), &out);
    let (dims, st) = coalesce(&out, &[sa, sb, contiguous]);
    let (a, b, y) = (kb.param(0), kb.param(1), kb.param(2));
    kb.nest(&dims, |kb, idx| {
        let off = |s: &[u64]| kb.lin(&idx.iter().copied().zip(s.iter().copied()).collect::<Vec<_>>(), 0);
        let x0 = kb.load_f32(a, off(&st[0])?)?;
        let x1 = kb.load_f32(b, off(&st[1])?)?;
        let r = match op {
            BinOp::Add => kb.fadd(x0, x1)?,
            BinOp::Sub => kb.fsub(x0, x1)?,
            BinOp::Mul => kb.fmul(x0, x1)?,
            BinOp::Div => kb.fdiv(x0, x1)?,
        };
        kb.store_f32(y, off(&st[2])?, r)
    })
}

/// Applies `op` to one value.
pub(crate) fn apply_unary<'ctx>(kb: &Kb<'_, 'ctx>, op: UnOp, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
    match op {
        UnOp::Relu => kb.fmax(x, kb.cf(0.0)),
        UnOp::Sigmoid => {
            let e = kb.libm("expf", kb.b.build_float_neg(x, "")?)?;
            kb.fdiv(kb.cf(1.0), kb.fadd(kb.cf(1.0), e)?)
        }
        UnOp::Tanh => kb.libm("tanhf", x),
        UnOp::Clip(lo, hi) => {
            let y = if lo > f32::NEG_INFINITY { kb.fmax(x, kb.cf(lo))? } else { x };
            if hi < f32::INFINITY {
                kb.fmin(y, kb.cf(hi))
            } else {
                Ok(y)
            }
        }
    }
}

pub(crate) fn unary(kb: &Kb, n: &NodeInfo, op: UnOp) -> R<()> {
    n.require_f32()?;
    let numel: u64 = n.out_dims(0).iter().product();
    let (x, y) = (kb.param(0), kb.param(1));
    kb.for_n(numel, |kb, i| {
        let v = apply_unary(kb, op, kb.load_f32(x, i)?)?;
        kb.store_f32(y, i, v)
    })
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
