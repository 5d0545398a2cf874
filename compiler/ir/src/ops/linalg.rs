//! Matrix products.
use super::{ensure, same_dtype, Infer, OpMeta};
use crate::ops::elementwise::broadcast_shapes;
use crate::{op, Dim, IrError, Shape, TensorType};

op! {
    /// numpy `matmul`: `[..., M, K] x [..., K, N] -> [..., M, N]`, batch dims broadcast;
    /// a 1-D operand is promoted to a matrix and the added dim removed from the result.
    MatMul = "matmul", operands 2..=2 {}
}

impl Infer for MatMul {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let (a, b) = (&inputs[0].shape, &inputs[1].shape);
        ensure(a.rank() >= 1 && b.rank() >= 1, node, op, || "operands must have rank >= 1".into())?;
        let mut a2 = a.0.clone();
        let mut b2 = b.0.clone();
        if a2.len() == 1 {
            a2.insert(0, Dim::Fixed(1));
        }
        if b2.len() == 1 {
            b2.push(Dim::Fixed(1));
        }
        let k_a = &a2[a2.len() - 1];
        let k_b = &b2[b2.len() - 2];
        ensure(k_a == k_b || k_a.fixed().is_none() || k_b.fixed().is_none(), node, op, || {
            format!("inner dims differ: {a} x {b}")
        })?;
        let batch = broadcast_shapes(&Shape(a2[..a2.len() - 2].to_vec()), &Shape(b2[..b2.len() - 2].to_vec()))
            .map_err(|m| IrError::shape(node, op, m))?;
        let mut out = batch.0;
        if a.rank() > 1 {
            out.push(a2[a2.len() - 2].clone());
        }
        if b.rank() > 1 {
            out.push(b2[b2.len() - 1].clone());
        }
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape: Shape(out) }])
    }
}

op! {
    /// `alpha * op(A) * op(B) + beta * C` with 2-D `A`, `B`; `op` transposes when asked;
    /// `C` (optional) broadcasts to `[M, N]`.
    Gemm = "gemm", operands 2..=3 { alpha: f32, beta: f32, trans_a: bool, trans_b: bool }
}

impl Infer for Gemm {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let (a, b) = (&inputs[0].shape, &inputs[1].shape);
        ensure(a.rank() == 2 && b.rank() == 2, node, op, || format!("A and B must be 2-D, got {a} and {b}"))?;
        let (m, ka) = if self.trans_a { (&a.0[1], &a.0[0]) } else { (&a.0[0], &a.0[1]) };
        let (kb, n) = if self.trans_b { (&b.0[1], &b.0[0]) } else { (&b.0[0], &b.0[1]) };
        ensure(ka == kb || ka.fixed().is_none() || kb.fixed().is_none(), node, op, || {
            format!("inner dims differ: op(A) is {m}x{ka}, op(B) is {kb}x{n}")
        })?;
        let out = Shape(vec![m.clone(), n.clone()]);
        if let Some(c) = inputs.get(2) {
            let bc = broadcast_shapes(&c.shape, &out).map_err(|msg| IrError::shape(node, op, msg))?;
            ensure(bc == out, node, op, || format!("C of shape {} does not broadcast to {out}", c.shape))?;
        }
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape: out }])
    }
}
