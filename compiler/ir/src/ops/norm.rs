//! Normalisations.
use super::{ensure, normalize_axis, same_dtype, Infer, OpMeta};
use crate::{op, Dim, IrError, TensorType};

op! {
    /// Inference-mode batch normalisation over dim 1:
    /// `(x - mean) / sqrt(var + epsilon) * scale + bias`; operands x, scale, bias, mean, var.
    BatchNormalization = "batchnorm", operands 5..=5 { epsilon: f32 = 1e-5 }
}

impl Infer for BatchNormalization {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let x = &inputs[0];
        ensure(x.shape.rank() >= 2, node, op, || format!("input needs rank >= 2, got {}", x.shape))?;
        let c = &x.shape.0[1];
        for (t, what) in inputs[1..].iter().zip(["scale", "bias", "mean", "var"]) {
            let ok = t.shape.rank() == 1 && (t.shape.0[0] == *c || matches!(c, Dim::Sym(_)));
            ensure(ok, node, op, || format!("{what} must be [{c}], got {}", t.shape))?;
        }
        Ok(vec![x.clone()])
    }
}

/// What [`Softmax`] computes along its axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftmaxMode {
    /// `exp(x - max) / sum(exp(x - max))`.
    Softmax,
    /// `x - max - log(sum(exp(x - max)))`.
    LogSoftmax,
    /// 1 at the first maximum, 0 elsewhere.
    Hardmax,
}

op! {
    /// Softmax, LogSoftmax or Hardmax along one axis (ONNX opset 13 semantics; older
    /// opsets are rewritten by the frontend).
    Softmax = "softmax", operands 1..=1 { axis: i64 = -1, mode: SoftmaxMode }
}

impl Infer for Softmax {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let x = &inputs[0];
        let op = Self::INFO.mnemonic;
        ensure(x.dtype.is_float(), node, op, || format!("needs a floating-point operand, got {}", x.dtype))?;
        ensure(normalize_axis(self.axis, x.shape.rank()).is_some(), node, op, || {
            format!("axis {} out of range for {}", self.axis, x.shape)
        })?;
        Ok(vec![x.clone()])
    }
}

op! {
    /// Layer normalisation over the dims from `axis` on:
    /// `(x - mean) / sqrt(var + epsilon) * scale + bias`; with `rms`, RMS normalisation
    /// `x / sqrt(mean(x^2) + epsilon) * scale`. Operands x, scale, optional bias
    /// (broadcast to the normalised dims). With `stats`, two more f32 results hold the
    /// mean and the inverse standard deviation, shaped like x with the normalised dims 1.
    /// With `skip`, the last operand (x's element count, broadcasting to x) is added to x
    /// first, and the sum is normalised (a residual connection fused in).
    LayerNormalization = "layernorm", operands 2..=4 { axis: i64 = -1, epsilon: f32 = 1e-5, rms: bool, stats: bool, skip: bool }
}

impl Infer for LayerNormalization {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let x = &inputs[0];
        ensure(x.dtype.is_float(), node, op, || format!("needs a floating-point operand, got {}", x.dtype))?;
        let a = normalize_axis(self.axis, x.shape.rank())
            .filter(|_| x.shape.rank() > 0)
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {}", self.axis, x.shape)))?;
        let norm = crate::Shape(x.shape.0[a..].to_vec());
        let params = if self.skip {
            let r = &inputs[inputs.len() - 1];
            let b =
                super::elementwise::broadcast_shapes(&r.shape, &x.shape).map_err(|m| IrError::shape(node, op, m))?;
            // Element counts compared as expressions: with run-time dims `numel` is None on
            // both sides, which says nothing (a [1,S,128] skip is not x's [B,S,128]).
            let count = |s: &crate::Shape| Dim::product(&s.0).expr();
            ensure(inputs.len() >= 3 && b == x.shape && count(&r.shape) == count(&x.shape), node, op, || {
                format!("skip {} must hold the elements of x {}", r.shape, x.shape)
            })?;
            &inputs[1..inputs.len() - 1]
        } else {
            ensure(inputs.len() <= 3, node, op, || "at most scale and bias follow x".into())?;
            &inputs[1..]
        };
        for (t, what) in params.iter().zip(["scale", "bias"]) {
            let b = super::elementwise::broadcast_shapes(&t.shape, &norm).map_err(|m| IrError::shape(node, op, m))?;
            ensure(b == norm, node, op, || format!("{what} {} does not broadcast to {norm}", t.shape))?;
        }
        if !self.stats {
            return Ok(vec![x.clone()]);
        }
        let mut sd = x.shape.0[..a].to_vec();
        sd.extend(std::iter::repeat_n(Dim::Fixed(1), x.shape.rank() - a));
        let st = TensorType { dtype: crate::DType::F32, shape: crate::Shape(sd) };
        Ok(vec![x.clone(), st.clone(), st])
    }
}
