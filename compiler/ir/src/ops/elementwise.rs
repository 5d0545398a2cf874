//! Elementwise ops: binary arithmetic with numpy (multidirectional) broadcasting and
//! unary activations.
use super::{ensure, same_dtype, Infer, OpMeta};
use crate::{op, Dim, IrError, Shape, TensorType};

/// Broadcasts two shapes numpy-style (right-aligned; a dim of 1 stretches).
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.rank() >= rank { Some(&a.0[i + a.rank() - rank]) } else { None };
        let db = if i + b.rank() >= rank { Some(&b.0[i + b.rank() - rank]) } else { None };
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(Dim::Fixed(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Fixed(1))) => x.clone(),
            (Some(Dim::Sym(_)), Some(y @ Dim::Fixed(_))) | (Some(y @ Dim::Fixed(_)), Some(Dim::Sym(_))) => y.clone(),
            (Some(x), Some(y)) => return Err(format!("cannot broadcast {a} with {b} (dim {x} vs {y})")),
            (None, None) => unreachable!("i < rank"),
        };
        out.push(d);
    }
    Ok(Shape(out))
}

fn infer_binary<T: OpMeta>(node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
    let op = T::INFO.mnemonic;
    same_dtype(inputs, node, op)?;
    let shape = broadcast_shapes(&inputs[0].shape, &inputs[1].shape).map_err(|m| IrError::shape(node, op, m))?;
    Ok(vec![TensorType { dtype: inputs[0].dtype, shape }])
}

fn infer_unary_float<T: OpMeta>(node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
    ensure(inputs[0].dtype.is_float(), node, T::INFO.mnemonic, || {
        format!("needs a floating-point operand, got {}", inputs[0].dtype)
    })?;
    Ok(vec![inputs[0].clone()])
}

macro_rules! binary {
    ($($(#[doc = $doc:literal])* $name:ident = $mn:literal;)*) => {$(
        op! { $(#[doc = $doc])* $name = $mn, operands 2..=2 {} }
        impl Infer for $name {
            fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
                infer_binary::<$name>(node, inputs)
            }
        }
    )*};
}

macro_rules! unary {
    ($($(#[doc = $doc:literal])* $name:ident = $mn:literal;)*) => {$(
        op! { $(#[doc = $doc])* $name = $mn, operands 1..=1 {} }
        impl Infer for $name {
            fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
                infer_unary_float::<$name>(node, inputs)
            }
        }
    )*};
}

binary! {
    /// `a + b` with broadcasting.
    Add = "add";
    /// `a - b` with broadcasting.
    Sub = "sub";
    /// `a * b` with broadcasting.
    Mul = "mul";
    /// `a / b` with broadcasting.
    Div = "div";
}

unary! {
    /// `max(x, 0)`.
    Relu = "relu";
    /// `1 / (1 + exp(-x))`.
    Sigmoid = "sigmoid";
    /// Hyperbolic tangent.
    Tanh = "tanh";
}

op! {
    /// `min(max(x, min), max)`; ONNX's optional bounds become +-infinity.
    Clip = "clip", operands 1..=1 { min: f32, max: f32 }
}

impl Infer for Clip {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        infer_unary_float::<Clip>(node, inputs)
    }
}
