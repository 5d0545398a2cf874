//! Epilogues: what a Conv, Gemm or MatMul kernel applies to each result element before
//! storing it, so the optimiser can fuse a following activation (and, for Conv, a
//! residual addition) into the producer instead of running another kernel over memory.
use super::elementwise::{Clip, Gelu, HardSwish, Relu, Sigmoid, Swish, Tanh};
use super::{Attr, Op};

/// An activation applied in a producer's epilogue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// Store the value as computed.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (ReLU6 is `Clip { min: 0, max: 6 }`).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x * clip(x / 6 + 1/2, 0, 1)`.
    HardSwish,
    /// `x / 2 * (1 + erf(x / sqrt 2))`.
    Gelu,
    /// `x * sigmoid(x)` (SiLU: YOLO's and EfficientNet's activation).
    Swish,
}

impl Activation {
    /// The elementwise op this activation computes (`None` for [`Activation::None`]).
    pub fn as_op(self) -> Option<Op> {
        Some(match self {
            Activation::None => return None,
            Activation::Relu => Relu {}.into(),
            Activation::Clip { min, max } => Clip { min, max }.into(),
            Activation::Sigmoid => Sigmoid {}.into(),
            Activation::Tanh => Tanh {}.into(),
            Activation::HardSwish => HardSwish {}.into(),
            Activation::Gelu => Gelu { tanh_approximation: false }.into(),
            Activation::Swish => Swish { alpha: 1.0 }.into(),
        })
    }

    /// The activation an elementwise op computes, when it is one an epilogue can apply.
    pub fn from_op(op: &Op) -> Option<Activation> {
        Some(match op {
            Op::Relu(_) => Activation::Relu,
            Op::Clip(c) => Activation::Clip { min: c.min, max: c.max },
            Op::Sigmoid(_) => Activation::Sigmoid,
            Op::Tanh(_) => Activation::Tanh,
            Op::HardSwish(_) => Activation::HardSwish,
            Op::Gelu(g) if !g.tanh_approximation => Activation::Gelu,
            Op::Swish(s) if s.alpha == 1.0 => Activation::Swish,
            _ => return None,
        })
    }
}

impl From<Activation> for Attr {
    fn from(v: Activation) -> Self {
        Attr::Str(match v {
            Activation::Clip { min, max } => format!("clip({min:?},{max:?})"),
            other => format!("{other:?}").to_lowercase(),
        })
    }
}
