//! Values that enter the graph: model inputs and constants.
use super::Infer;
use crate::{op, IrError, TensorData, TensorType};

op! {
    /// A model input of the given type; its node name is the input's name.
    Input = "input", operands 0..=0 { ty: TensorType }
}

impl Infer for Input {
    fn infer(&self, _: &str, _: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        Ok(vec![self.ty.clone()])
    }
}

op! {
    /// A constant tensor (weights, biases, folded values), shared and immutable.
    Const = "const", operands 0..=0 { value: TensorData }
}

impl Infer for Const {
    fn infer(&self, _: &str, _: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        Ok(vec![self.value.ty().clone()])
    }
}
