//! Elementwise ops: binary arithmetic with numpy (multidirectional) broadcasting and
//! unary activations.
use super::{ensure, same_dtype, Infer};
use crate::{op, DType, Dim, IrError, Shape, TensorType};

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
            // Two run-time dims that differ as expressions (an upsampled feature map
            // `2 * floordiv(H - 1, 32) + 2` added to `floordiv(H - 1, 16) + 1`): equal
            // for the inputs the model accepts, which `implied::constraints` records and
            // a run checks first. The shorter expression names the result's dim.
            (Some(x @ Dim::Sym(_)), Some(y @ Dim::Sym(_))) => {
                let (sx, sy) = (x.to_string(), y.to_string());
                if (sy.len(), &sy) < (sx.len(), &sx) {
                    y.clone()
                } else {
                    x.clone()
                }
            }
            (Some(x), Some(y)) => return Err(format!("cannot broadcast {a} with {b} (dim {x} vs {y})")),
            (None, None) => unreachable!("i < rank"),
        };
        out.push(d);
    }
    Ok(Shape(out))
}

/// Dtype classes the elementwise rules accept.
#[derive(Clone, Copy)]
enum Class {
    /// Floating point only.
    Float,
    /// Any numeric type (not bool).
    Numeric,
    /// Signed numbers (floats and signed integers).
    Signed,
    /// Integers only.
    Int,
    /// Bool only.
    Bool,
    /// Anything.
    Any,
}

fn accepts(c: Class, d: DType) -> bool {
    use DType::*;
    if d.is_storage_only() && !matches!(c, Class::Any) {
        return false;
    }
    match c {
        Class::Float => d.is_float(),
        Class::Numeric => d != Bool,
        Class::Signed => d.is_float() || matches!(d, I8 | I16 | I32 | I64),
        Class::Int => matches!(d, I8 | I16 | I32 | I64 | U8 | U16 | U32 | U64),
        Class::Bool => d == Bool,
        Class::Any => true,
    }
}

fn check_class(c: Class, t: &TensorType, node: &str, op: &'static str) -> Result<(), IrError> {
    let what = match c {
        Class::Float => "a floating-point",
        Class::Numeric => "a numeric",
        Class::Signed => "a signed",
        Class::Int => "an integer",
        Class::Bool => "a bool",
        Class::Any => "any",
    };
    ensure(accepts(c, t.dtype), node, op, || format!("needs {what} operand, got {}", t.dtype))
}

/// Broadcasts all operand shapes together.
pub fn broadcast_all(inputs: &[TensorType], node: &str, op: &'static str) -> Result<Shape, IrError> {
    let mut shape = inputs[0].shape.clone();
    for t in &inputs[1..] {
        shape = broadcast_shapes(&shape, &t.shape).map_err(|m| IrError::shape(node, op, m))?;
    }
    Ok(shape)
}

/// Same-dtype operands of class `c`, broadcast; the result has dtype `out` or the operands'.
fn infer_map(
    c: Class,
    out: Option<DType>,
    node: &str,
    op: &'static str,
    inputs: &[TensorType],
) -> Result<Vec<TensorType>, IrError> {
    same_dtype(inputs, node, op)?;
    check_class(c, &inputs[0], node, op)?;
    let shape = broadcast_all(inputs, node, op)?;
    Ok(vec![TensorType { dtype: out.unwrap_or(inputs[0].dtype), shape }])
}

macro_rules! map_ops {
    ($($(#[doc = $doc:literal])* $name:ident = $mn:literal, $n:literal, $class:ident, $out:expr, { $($f:ident : $t:ty $(= $d:expr)?),* };)*) => {$(
        op! { $(#[doc = $doc])* $name = $mn, operands $n..=$n { $($f: $t $(= $d)?),* } }
        impl Infer for $name {
            fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
                infer_map(Class::$class, $out, node, $mn, inputs)
            }
        }
    )*};
}

map_ops! {
    /// `a + b` with broadcasting.
    Add = "add", 2, Numeric, None, {};
    /// `a - b` with broadcasting.
    Sub = "sub", 2, Numeric, None, {};
    /// `a * b` with broadcasting.
    Mul = "mul", 2, Numeric, None, {};
    /// `a / b` with broadcasting; integer division truncates, and by zero gives 0.
    Div = "div", 2, Numeric, None, {};
    /// Elementwise maximum (NaN propagates).
    Max = "max", 2, Numeric, None, {};
    /// Elementwise minimum (NaN propagates).
    Min = "min", 2, Numeric, None, {};
    /// Remainder: with `fmod` the sign of the dividend (C `fmod`), else of the divisor.
    Mod = "mod", 2, Numeric, None, { fmod: bool };
    /// `x < 0 ? slope * x : x`, slope broadcast to x.
    PRelu = "prelu", 2, Signed, None, {};
    /// `a == b`.
    Equal = "equal", 2, Any, Some(DType::Bool), {};
    /// `a > b`.
    Greater = "greater", 2, Numeric, Some(DType::Bool), {};
    /// `a >= b`.
    GreaterOrEqual = "greater_equal", 2, Numeric, Some(DType::Bool), {};
    /// `a < b`.
    Less = "less", 2, Numeric, Some(DType::Bool), {};
    /// `a <= b`.
    LessOrEqual = "less_equal", 2, Numeric, Some(DType::Bool), {};
    /// Logical and.
    And = "and", 2, Bool, None, {};
    /// Logical or.
    Or = "or", 2, Bool, None, {};
    /// Logical xor.
    Xor = "xor", 2, Bool, None, {};
    /// Bitwise and.
    BitwiseAnd = "bitwise_and", 2, Int, None, {};
    /// Bitwise or.
    BitwiseOr = "bitwise_or", 2, Int, None, {};
    /// Bitwise xor.
    BitwiseXor = "bitwise_xor", 2, Int, None, {};
    /// Shift; right shifts of signed integers are arithmetic. Amounts outside
    /// `0..bit width` shift everything out (0, or -1 for a negative signed value shifted right).
    BitShift = "bitshift", 2, Int, None, { left: bool };
    /// Logical not.
    Not = "not", 1, Bool, None, {};
    /// Bitwise not.
    BitwiseNot = "bitwise_not", 1, Int, None, {};
    /// `|x|`.
    Abs = "abs", 1, Numeric, None, {};
    /// `-x`.
    Neg = "neg", 1, Signed, None, {};
    /// -1, 0 or 1 by the sign of x.
    Sign = "sign", 1, Numeric, None, {};
    /// `max(x, 0)`.
    Relu = "relu", 1, Signed, None, {};
    /// `1 / (1 + exp(-x))`.
    Sigmoid = "sigmoid", 1, Float, None, {};
    /// Hyperbolic tangent.
    Tanh = "tanh", 1, Float, None, {};
    /// `e^x`.
    Exp = "exp", 1, Float, None, {};
    /// Natural logarithm.
    Log = "log", 1, Float, None, {};
    /// Square root.
    Sqrt = "sqrt", 1, Float, None, {};
    /// `1 / x`.
    Reciprocal = "reciprocal", 1, Float, None, {};
    /// Sine.
    Sin = "sin", 1, Float, None, {};
    /// Cosine.
    Cos = "cos", 1, Float, None, {};
    /// Tangent.
    Tan = "tan", 1, Float, None, {};
    /// Arcsine.
    Asin = "asin", 1, Float, None, {};
    /// Arccosine.
    Acos = "acos", 1, Float, None, {};
    /// Arctangent.
    Atan = "atan", 1, Float, None, {};
    /// Hyperbolic sine.
    Sinh = "sinh", 1, Float, None, {};
    /// Hyperbolic cosine.
    Cosh = "cosh", 1, Float, None, {};
    /// Inverse hyperbolic sine.
    Asinh = "asinh", 1, Float, None, {};
    /// Inverse hyperbolic cosine.
    Acosh = "acosh", 1, Float, None, {};
    /// Inverse hyperbolic tangent.
    Atanh = "atanh", 1, Float, None, {};
    /// Gauss error function.
    Erf = "erf", 1, Float, None, {};
    /// Round down.
    Floor = "floor", 1, Float, None, {};
    /// Round up.
    Ceil = "ceil", 1, Float, None, {};
    /// Round half to even.
    Round = "round", 1, Float, None, {};
    /// `log(exp(x) + 1)`.
    Softplus = "softplus", 1, Float, None, {};
    /// `x / (1 + |x|)`.
    Softsign = "softsign", 1, Float, None, {};
    /// `x * tanh(softplus(x))`.
    Mish = "mish", 1, Float, None, {};
    /// `x * max(0, min(1, x / 6 + 1 / 2))`.
    HardSwish = "hardswish", 1, Float, None, {};
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid = "hardsigmoid", 1, Float, None, { alpha: f32 = 0.2, beta: f32 = 0.5 };
    /// `x < 0 ? alpha * x : x`.
    LeakyRelu = "leaky_relu", 1, Float, None, { alpha: f32 = 0.01 };
    /// `x < 0 ? alpha * (exp(x) - 1) : x`.
    Elu = "elu", 1, Float, None, { alpha: f32 = 1.0 };
    /// `gamma * (x <= 0 ? alpha * exp(x) - alpha : x)`.
    Selu = "selu", 1, Float, None, { alpha: f32 = 1.673_263_2, gamma: f32 = 1.050_701 };
    /// `max(0, x) + min(0, alpha * (exp(x / alpha) - 1))`.
    Celu = "celu", 1, Float, None, { alpha: f32 = 1.0 };
    /// `x > alpha ? x : 0`.
    ThresholdedRelu = "thresholded_relu", 1, Float, None, { alpha: f32 = 1.0 };
    /// `x * Phi(x)`, exactly with erf or with the tanh approximation.
    Gelu = "gelu", 1, Float, None, { tanh_approximation: bool };
    /// `x * sigmoid(alpha * x)`.
    Swish = "swish", 1, Float, None, { alpha: f32 = 1.0 };
    /// `x < -lambd ? x + bias : (x > lambd ? x - bias : 0)`.
    Shrink = "shrink", 1, Numeric, None, { lambd: f32 = 0.5, bias: f32 };
    /// Whether x is NaN.
    IsNaN = "isnan", 1, Float, Some(DType::Bool), {};
    /// Whether x is an infinity of a selected sign.
    IsInf = "isinf", 1, Float, Some(DType::Bool), { detect_negative: bool, detect_positive: bool };
    /// `min(max(x, min), max)`; ONNX's optional bounds become +-infinity.
    Clip = "clip", 1, Float, None, { min: f32 = f32::NEG_INFINITY, max: f32 = f32::INFINITY };
}

op! {
    /// `base ^ exponent`; the exponent may have another numeric dtype; the result has the
    /// base's dtype.
    Pow = "pow", operands 2..=2 {}
}

impl Infer for Pow {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        check_class(Class::Numeric, &inputs[0], node, "pow")?;
        check_class(Class::Numeric, &inputs[1], node, "pow")?;
        let shape = broadcast_all(inputs, node, "pow")?;
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape }])
    }
}

op! {
    /// `cond ? x : y` with broadcasting of all three.
    Where = "where", operands 3..=3 {}
}

impl Infer for Where {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        check_class(Class::Bool, &inputs[0], node, "where")?;
        same_dtype(&inputs[1..], node, "where")?;
        let shape = broadcast_all(inputs, node, "where")?;
        Ok(vec![TensorType { dtype: inputs[1].dtype, shape }])
    }
}

op! {
    /// Converts every element to `to`. Floats to integers truncate toward zero and
    /// saturate to the integer type's range, NaN giving 0 (ONNX leaves out-of-range
    /// values undefined; this holds for the 4- and 2-bit integers too). Integers to
    /// integers wrap (keep the low bits), as ONNX says. To bool is `x != 0`. To the
    /// 8- and 4-bit floats: round to nearest even; out-of-range values and infinities
    /// become the largest finite value when `saturate`, else infinity or NaN as the
    /// format has them (see [`crate::minifloat`]).
    Cast = "cast", operands 1..=1 { to: DType, saturate: bool = true }
}

impl Cast {
    /// A saturating cast to `to`.
    pub fn new(to: DType) -> Cast {
        Cast { to, saturate: true }
    }
}

impl Infer for Cast {
    fn infer(&self, _: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        Ok(vec![TensorType { dtype: self.to, shape: inputs[0].shape.clone() }])
    }
}

op! {
    /// Broadcasts the operand to `shape` (numpy rules in both directions, as ONNX Expand);
    /// `dims`, when not empty, gives the target instead as `;`-separated dim expressions
    /// (a shape computed from run-time dims).
    Expand = "expand", operands 1..=1 { shape: Vec<i64>, dims: String }
}

impl Expand {
    /// Broadcast to fixed extents.
    pub fn to(shape: Vec<i64>) -> Expand {
        Expand { shape, dims: String::new() }
    }

    /// The target as dims (`None` when `dims` does not parse).
    pub fn target(&self) -> Option<Shape> {
        if self.dims.trim().is_empty() {
            return Some(Shape(self.shape.iter().map(|&d| Dim::Fixed(d.max(0) as u64)).collect()));
        }
        self.dims
            .split(';')
            .map(|e| dlc_sym::parse(e.trim()).ok().and_then(Dim::from_expr))
            .collect::<Option<Vec<_>>>()
            .map(Shape)
    }
}

impl Infer for Expand {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let target = self
            .target()
            .ok_or_else(|| IrError::shape(node, "expand", format!("dims '{}' are not dims", self.dims)))?;
        ensure(self.shape.iter().all(|&d| d >= 0), node, "expand", || format!("invalid shape {:?}", self.shape))?;
        let shape = broadcast_shapes(&inputs[0].shape, &target).map_err(|m| IrError::shape(node, "expand", m))?;
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape }])
    }
}
