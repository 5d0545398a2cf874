//! The op table. Every op is declared once, in the family file that holds it, with
//! [`op!`](crate::op): mnemonic, operand count, attributes and doc. Its shape and type
//! rule sits beside it as an implementation of [`Infer`]. [`op_table!`] below turns the
//! list of ops into the [`Op`] enum, so printers, frontends, passes and lowerings that
//! match on `Op` exhaustively are told by the compiler where a new op still needs work
//! (see docs/adding-an-op.md).

use crate::{IrError, TensorData, TensorType};
use std::fmt;

mod control;
mod conv;
mod elementwise;
mod epilogue;
mod fused;
mod linalg;
mod movement;
mod norm;
mod quant;
pub mod random;
mod reduce;
mod resize;
mod source;
mod text;

pub use control::{Body, If, Loop};
pub use conv::{
    AutoPad, AveragePool, Col2Im, Conv, ConvTranspose, GlobalAveragePool, GridSample, MaxPool, Patches, PoolGeometry,
    RoiAlign, SampleMode, SamplePadding, Window, WindowAttrs,
};
pub use elementwise::*;
pub use epilogue::Activation;
pub use fused::{Arg, Fused, FusedStep};
pub use linalg::{einsum_extents, parse_einsum, Attention, Einsum, Gemm, MatMul};
pub use movement::{
    compose_perms, inverse_perm, is_identity_perm, Bind, BitCast, Compress, Concat, Flatten, Gather, GatherElements,
    Identity, Iota, Nms, NonZero, Pad, PadMode, Reshape, ScatterElements, ScatterND, ScatterReduction, Slice, Strided,
    Transpose, Trilu, Unique, View,
};
pub use norm::{BatchNormalization, LayerNormalization, Softmax, SoftmaxMode};
pub use quant::{range_quantization, IntMatMul, QConv, QuantPack, PACK};
pub use random::{mix64, seed_key, uniform_bits, unit, Random, GOLDEN};
pub use reduce::*;
pub use resize::{scaled_dim, NearestMode, Resize, ResizeCoord, ResizeMode, ResizeTaps};
pub use source::{Const, Input};
pub use text::{
    case_table, map_case, re2_pattern, regex_dfa, split_ranges, string_bytes_check, string_table_shape, RegexDfa,
    StringCase, StringConcat, StringEqual, StringRegexMatch, StringSplit, StringSplitCount, CASE_TABLE_LEN,
    REGEX_MAX_STATES,
};

/// An attribute value, as printed in the canonical text form.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Bool(bool),
    Ints(Vec<i64>),
    Str(String),
    Type(TensorType),
    Tensor(TensorData),
}

impl From<i64> for Attr {
    fn from(v: i64) -> Self {
        Attr::Int(v)
    }
}
impl From<f64> for Attr {
    fn from(v: f64) -> Self {
        Attr::Float(v as f32)
    }
}
impl From<f32> for Attr {
    fn from(v: f32) -> Self {
        Attr::Float(v)
    }
}
impl From<bool> for Attr {
    fn from(v: bool) -> Self {
        Attr::Bool(v)
    }
}
impl From<Vec<i64>> for Attr {
    fn from(v: Vec<i64>) -> Self {
        Attr::Ints(v)
    }
}
impl From<String> for Attr {
    fn from(v: String) -> Self {
        Attr::Str(v)
    }
}
impl From<TensorType> for Attr {
    fn from(v: TensorType) -> Self {
        Attr::Type(v)
    }
}
impl From<TensorData> for Attr {
    fn from(v: TensorData) -> Self {
        Attr::Tensor(v)
    }
}
impl From<crate::DType> for Attr {
    fn from(v: crate::DType) -> Self {
        Attr::Str(v.name().to_string())
    }
}
/// Attribute enums print as their lowercase variant name (`"softmax"`, `"reflect"`).
macro_rules! lowercase_attr {
    ($($t:ty),*) => {$(
        impl From<$t> for Attr {
            fn from(v: $t) -> Self {
                Attr::Str(format!("{v:?}").to_lowercase())
            }
        }
    )*};
}

lowercase_attr!(
    SoftmaxMode,
    LossReduction,
    PadMode,
    ScatterReduction,
    SampleMode,
    SamplePadding,
    ResizeMode,
    ResizeCoord,
    NearestMode
);

impl From<AutoPad> for Attr {
    fn from(v: AutoPad) -> Self {
        Attr::Str(v.name().to_string())
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            // `{:?}` prints the shortest text that round-trips, always with a dot or exponent.
            Attr::Float(v) => write!(f, "{v:?}"),
            Attr::Bool(v) => write!(f, "{v}"),
            Attr::Ints(v) => {
                f.write_str("[")?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
            Attr::Str(s) => write!(f, "{s:?}"),
            Attr::Type(t) => write!(f, "{t}"),
            Attr::Tensor(t) => write!(f, "{} sha256:{}", t.ty(), &t.sha256()[..16]),
        }
    }
}

/// Reads a field of an op from an [`Attr`]: the inverse of `Attr::from`, used to build
/// ops by name from keyword attributes (the DSL). `absent` is the value of an attribute
/// that is not given (`None`: required) unless the op declares its own default.
pub trait FromAttr: Sized {
    /// The field's value, or `None` when `a` has the wrong kind.
    fn from_attr(a: &Attr) -> Option<Self>;
    /// The value when the attribute is not given (`None`: it must be given).
    fn absent() -> Option<Self> {
        None
    }
    /// What an attribute of this field looks like, for error messages.
    const EXPECTED: &'static str;
}

impl FromAttr for i64 {
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Int(v) => Some(*v),
            _ => None,
        }
    }
    fn absent() -> Option<Self> {
        Some(0)
    }
    const EXPECTED: &'static str = "an integer";
}
impl FromAttr for usize {
    fn from_attr(a: &Attr) -> Option<Self> {
        i64::from_attr(a).and_then(|v| usize::try_from(v).ok())
    }
    const EXPECTED: &'static str = "a non-negative integer";
}
impl FromAttr for f32 {
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Float(v) => Some(*v),
            Attr::Int(v) => Some(*v as f32),
            _ => None,
        }
    }
    fn absent() -> Option<Self> {
        Some(0.0)
    }
    const EXPECTED: &'static str = "a number";
}
impl FromAttr for f64 {
    fn from_attr(a: &Attr) -> Option<Self> {
        f32::from_attr(a).map(f64::from)
    }
    fn absent() -> Option<Self> {
        Some(0.0)
    }
    const EXPECTED: &'static str = "a number";
}
impl FromAttr for bool {
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Bool(v) => Some(*v),
            _ => None,
        }
    }
    fn absent() -> Option<Self> {
        Some(false)
    }
    const EXPECTED: &'static str = "true or false";
}
impl FromAttr for Vec<i64> {
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Ints(v) => Some(v.clone()),
            Attr::Int(v) => Some(vec![*v]),
            _ => None,
        }
    }
    fn absent() -> Option<Self> {
        Some(Vec::new())
    }
    const EXPECTED: &'static str = "a list of integers like [1, 2]";
}
impl FromAttr for String {
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Str(v) => Some(v.clone()),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "a string";
}
impl FromAttr for crate::DType {
    fn from_attr(a: &Attr) -> Option<Self> {
        String::from_attr(a).and_then(|s| crate::DType::from_name(&s))
    }
    const EXPECTED: &'static str = "a dtype name like \"f16\"";
}
impl FromAttr for TensorType {
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Type(t) => Some(t.clone()),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "a tensor type";
}
impl FromAttr for TensorData {
    fn from_attr(a: &Attr) -> Option<Self> {
        match a {
            Attr::Tensor(t) => Some(t.clone()),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "a tensor";
}
impl FromAttr for AutoPad {
    fn from_attr(a: &Attr) -> Option<Self> {
        String::from_attr(a).and_then(|s| AutoPad::from_name(&s.to_uppercase()))
    }
    fn absent() -> Option<Self> {
        Some(AutoPad::NotSet)
    }
    const EXPECTED: &'static str = "\"notset\", \"same_upper\", \"same_lower\" or \"valid\"";
}
impl FromAttr for Activation {
    /// Only `"none"`: epilogue activations are the optimiser's to fuse.
    fn from_attr(a: &Attr) -> Option<Self> {
        (String::from_attr(a)? == "none").then_some(Activation::None)
    }
    fn absent() -> Option<Self> {
        Some(Activation::None)
    }
    const EXPECTED: &'static str = "\"none\" (activations are fused by the optimiser)";
}
impl FromAttr for Vec<FusedStep> {
    fn from_attr(_: &Attr) -> Option<Self> {
        None
    }
    const EXPECTED: &'static str = "nothing: fused kernels are made by the optimiser";
}

/// Enums whose attribute is the lowercase variant name; the first variant is the default.
macro_rules! enum_attr {
    ($($t:ident { $($v:ident),* $(,)? })*) => {$(
        impl FromAttr for $t {
            fn from_attr(a: &Attr) -> Option<Self> {
                let s = String::from_attr(a)?;
                [$($t::$v),*].into_iter().find(|v| format!("{v:?}").to_lowercase() == s)
            }
            fn absent() -> Option<Self> {
                [$($t::$v),*].into_iter().next()
            }
            const EXPECTED: &'static str = concat!("one of" $(, " \"", stringify!($v), "\"")*, " (lowercase)");
        }
    )*};
}

enum_attr! {
    SoftmaxMode { Softmax, LogSoftmax, Hardmax }
    LossReduction { Mean, None, Sum }
    PadMode { Constant, Reflect, Edge, Wrap }
    ScatterReduction { None, Add, Mul, Max, Min }
    SampleMode { Linear, Nearest, Cubic }
    SamplePadding { Zeros, Border, Reflection }
    ResizeMode { Nearest, Linear, Cubic }
    ResizeCoord { HalfPixel, HalfPixelSymmetric, PytorchHalfPixel, AlignCorners, Asymmetric, TfHalfPixelForNn, TfCropAndResize }
    NearestMode { RoundPreferFloor, RoundPreferCeil, Floor, Ceil, Simple }
}

/// Keyword attributes of one call, consumed field by field by `from_attrs`; what is
/// left over was not an attribute of the op.
#[derive(Debug, Clone, Default)]
pub struct AttrArgs {
    /// `(name, value)` pairs not yet taken.
    pub rest: Vec<(String, Attr)>,
}

impl AttrArgs {
    /// Takes attribute `name`: its value, else `default`, else an error saying it is
    /// required.
    pub fn take<T: FromAttr>(&mut self, op: &str, name: &str, default: Option<T>) -> Result<T, String> {
        match self.rest.iter().position(|(n, _)| n == name) {
            Some(i) => {
                let (_, a) = self.rest.remove(i);
                T::from_attr(&a).ok_or_else(|| format!("attribute '{name}' of {op} must be {}, got {a}", T::EXPECTED))
            }
            None => {
                default.or_else(T::absent).ok_or_else(|| format!("{op} needs attribute '{name}' ({})", T::EXPECTED))
            }
        }
    }
}

/// Static facts about an op kind.
#[derive(Debug, Clone, Copy)]
pub struct OpInfo {
    /// Lowercase mnemonic used by the printer and the DSL.
    pub mnemonic: &'static str,
    /// Fewest operands.
    pub min_operands: usize,
    /// Most operands.
    pub max_operands: usize,
    /// What the op computes.
    pub doc: &'static str,
}

/// Implemented by every op struct through [`op!`](crate::op).
pub trait OpMeta {
    /// Static facts.
    const INFO: OpInfo;
    /// Attributes in declaration order.
    fn attrs(&self) -> Vec<(&'static str, Attr)>;
}

/// The shape and type rule of an op: operand types in, output types out.
pub trait Infer {
    /// Computes output types; `node` names the node in errors.
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError>;
}

/// The per-element ops, as a pattern: every op whose [`Op::kind`] is
/// [`OpKind::Elementwise`] except `Cast` (its dtype pair decides its meaning), `Expand`
/// (a broadcast with no arithmetic) and `Fused` (a program of them). Each `match` on
/// [`Op`] that treats them alike writes `dlc_ir::pointwise!()` instead of spelling out
/// the list, and still names every other op, so a new op fails to compile until each
/// dispatch handles it; a new per-element op is added here, once.
#[macro_export]
macro_rules! pointwise {
    () => {
        $crate::Op::Add(_)
            | $crate::Op::Sub(_)
            | $crate::Op::Mul(_)
            | $crate::Op::Div(_)
            | $crate::Op::Max(_)
            | $crate::Op::Min(_)
            | $crate::Op::Mod(_)
            | $crate::Op::Pow(_)
            | $crate::Op::PRelu(_)
            | $crate::Op::Equal(_)
            | $crate::Op::Greater(_)
            | $crate::Op::GreaterOrEqual(_)
            | $crate::Op::Less(_)
            | $crate::Op::LessOrEqual(_)
            | $crate::Op::And(_)
            | $crate::Op::Or(_)
            | $crate::Op::Xor(_)
            | $crate::Op::Not(_)
            | $crate::Op::BitwiseAnd(_)
            | $crate::Op::BitwiseOr(_)
            | $crate::Op::BitwiseXor(_)
            | $crate::Op::BitwiseNot(_)
            | $crate::Op::BitShift(_)
            | $crate::Op::Where(_)
            | $crate::Op::Abs(_)
            | $crate::Op::Neg(_)
            | $crate::Op::Sign(_)
            | $crate::Op::Relu(_)
            | $crate::Op::Sigmoid(_)
            | $crate::Op::Tanh(_)
            | $crate::Op::Exp(_)
            | $crate::Op::Log(_)
            | $crate::Op::Sqrt(_)
            | $crate::Op::Reciprocal(_)
            | $crate::Op::Sin(_)
            | $crate::Op::Cos(_)
            | $crate::Op::Tan(_)
            | $crate::Op::Asin(_)
            | $crate::Op::Acos(_)
            | $crate::Op::Atan(_)
            | $crate::Op::Sinh(_)
            | $crate::Op::Cosh(_)
            | $crate::Op::Asinh(_)
            | $crate::Op::Acosh(_)
            | $crate::Op::Atanh(_)
            | $crate::Op::Erf(_)
            | $crate::Op::Floor(_)
            | $crate::Op::Ceil(_)
            | $crate::Op::Round(_)
            | $crate::Op::Softplus(_)
            | $crate::Op::Softsign(_)
            | $crate::Op::Mish(_)
            | $crate::Op::HardSwish(_)
            | $crate::Op::HardSigmoid(_)
            | $crate::Op::LeakyRelu(_)
            | $crate::Op::Elu(_)
            | $crate::Op::Selu(_)
            | $crate::Op::Celu(_)
            | $crate::Op::ThresholdedRelu(_)
            | $crate::Op::Gelu(_)
            | $crate::Op::IsNaN(_)
            | $crate::Op::IsInf(_)
            | $crate::Op::Clip(_)
            | $crate::Op::Swish(_)
            | $crate::Op::Shrink(_)
    };
}

/// Declares one op: a struct with public attribute fields plus its [`OpMeta`].
#[macro_export]
macro_rules! op {
    (@default $t:ty) => { None::<$t> };
    (@default $t:ty, $d:expr) => { Some::<$t>($d) };
    ($(#[doc = $doc:literal])* $name:ident = $mn:literal, operands $lo:literal ..= $hi:literal { $($f:ident : $t:ty $(= $d:expr)?),* $(,)? }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $(#[allow(missing_docs)] pub $f: $t),* }
        impl $name {
            /// The op from keyword attributes (each field's declared default, else its
            /// type's, when absent); leftover attributes stay in `args`.
            #[allow(unused_variables)]
            pub fn from_attrs(args: &mut $crate::ops::AttrArgs) -> Result<Self, String> {
                Ok($name { $($f: args.take::<$t>($mn, stringify!($f), $crate::op!(@default $t $(, $d)?))?),* })
            }
        }
        impl $crate::ops::OpMeta for $name {
            const INFO: $crate::ops::OpInfo = $crate::ops::OpInfo {
                mnemonic: $mn,
                min_operands: $lo,
                max_operands: $hi,
                doc: concat!($($doc, "\n"),*),
            };
            fn attrs(&self) -> Vec<(&'static str, $crate::ops::Attr)> {
                vec![$((stringify!($f), $crate::ops::Attr::from(self.$f.clone()))),*]
            }
        }
    };
}

macro_rules! op_table {
    ($($variant:ident),* $(,)?) => {
        /// Every op dlc knows. Match on it exhaustively: no `_ =>` arms in lowerings.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(missing_docs)]
        pub enum Op { $($variant($variant)),* }

        /// Static facts of every op, in declaration order.
        pub const OP_TABLE: &[OpInfo] = &[$(<$variant as OpMeta>::INFO),*];

        impl Op {
            /// Static facts about this op.
            pub fn info(&self) -> OpInfo {
                match self { $(Op::$variant(_) => <$variant as OpMeta>::INFO),* }
            }
            /// Attributes in declaration order.
            pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
                match self { $(Op::$variant(o) => o.attrs()),* }
            }
            /// Output types for the given operand types; checks the operand count first.
            pub fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
                let info = self.info();
                if inputs.len() < info.min_operands || inputs.len() > info.max_operands {
                    return Err(IrError::Arity {
                        node: node.to_string(),
                        op: info.mnemonic,
                        min: info.min_operands,
                        max: info.max_operands,
                        got: inputs.len(),
                    });
                }
                match self { $(Op::$variant(o) => o.infer(node, inputs)),* }
            }
        }
        $(impl From<$variant> for Op { fn from(o: $variant) -> Op { Op::$variant(o) } })*

        impl Op {
            /// The op whose mnemonic is `name`, from keyword attributes (see
            /// [`FromAttr`]): `Ok(None)` for an unknown name; an error for an attribute
            /// the op does not have, one of the wrong kind, or a missing required one.
            pub fn from_call(name: &str, attrs: Vec<(String, Attr)>) -> Result<Option<Op>, String> {
                let mut args = AttrArgs { rest: attrs };
                $(
                    if name == <$variant as OpMeta>::INFO.mnemonic {
                        let op = $variant::from_attrs(&mut args)?;
                        if let Some((extra, _)) = args.rest.first() {
                            let known: Vec<&str> = Op::$variant(op.clone()).attrs().iter().map(|(n, _)| *n).collect();
                            return Err(if known.is_empty() {
                                format!("{name} has no attribute '{extra}' (it takes none)")
                            } else if let Some(close) = known.iter().find(|k| k.starts_with(extra.as_str()) || extra.starts_with(**k)) {
                                format!("{name} has no attribute '{extra}'; did you mean '{close}'? (its attributes: {})", known.join(", "))
                            } else {
                                format!("{name} has no attribute '{extra}' (its attributes: {})", known.join(", "))
                            });
                        }
                        return Ok(Some(op.into()));
                    }
                )*
                Ok(None)
            }
        }
    };
}

op_table! {
    Input, Const,
    Add, Sub, Mul, Div, Max, Min, Mod, Pow, PRelu,
    Equal, Greater, GreaterOrEqual, Less, LessOrEqual, And, Or, Xor, Not,
    BitwiseAnd, BitwiseOr, BitwiseXor, BitwiseNot, BitShift, Where, Cast,
    Abs, Neg, Sign, Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Reciprocal,
    Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh, Atanh, Erf, Floor, Ceil, Round,
    Softplus, Softsign, Mish, HardSwish, HardSigmoid, LeakyRelu, Elu, Selu, Celu, ThresholdedRelu, Gelu,
    IsNaN, IsInf, Clip, Swish, Shrink, Expand, Fused,
    MatMul, Gemm, Einsum, Attention, IntMatMul,
    Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool, GridSample, ResizeTaps, Resize, QConv, QuantPack, Patches,
    BatchNormalization, LayerNormalization, Softmax,
    ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
    ReduceLogSumExp, ReduceSumSquare, ArgMax, ArgMin, TopK, NllLoss, CumSum,
    Reshape, Flatten, Transpose, Identity, BitCast, Concat, Gather, GatherElements, Slice, Trilu, Pad, ScatterElements, ScatterND,
    Bind, Strided, NonZero, Nms, Unique, Compress, Iota, View, Loop, If,
    StringEqual, StringCase, StringConcat, StringSplitCount, StringSplit, StringRegexMatch, Random, RoiAlign, Col2Im,
}

impl Op {
    /// The op's mnemonic.
    pub fn mnemonic(&self) -> &'static str {
        self.info().mnemonic
    }

    /// The graphs of its own a control-flow op holds (a loop's body, an if's branches).
    pub fn bodies(&self) -> Vec<&Body> {
        match self {
            Op::Loop(l) => vec![&l.body],
            Op::If(i) => vec![&i.then, &i.els],
            _ => Vec::new(),
        }
    }

    /// [`Op::bodies`], to change.
    pub fn bodies_mut(&mut self) -> Vec<&mut Body> {
        match self {
            Op::Loop(l) => vec![&mut l.body],
            Op::If(i) => vec![&mut i.then, &mut i.els],
            _ => Vec::new(),
        }
    }
}

/// Fails with a shape error unless `cond` holds.
pub(crate) fn ensure(cond: bool, node: &str, op: &'static str, msg: impl FnOnce() -> String) -> Result<(), IrError> {
    if cond {
        Ok(())
    } else {
        Err(IrError::shape(node, op, msg()))
    }
}

/// Fixed extents of `t` or a shape error naming the op.
pub(crate) fn fixed_dims(t: &TensorType, node: &str, op: &'static str) -> Result<Vec<u64>, IrError> {
    t.shape.as_fixed().ok_or_else(|| IrError::shape(node, op, format!("needs known dims, operand has {t}")))
}

/// Requires every operand to have the dtype of the first.
pub(crate) fn same_dtype(inputs: &[TensorType], node: &str, op: &'static str) -> Result<(), IrError> {
    for t in &inputs[1..] {
        ensure(t.dtype == inputs[0].dtype, node, op, || {
            format!("operand dtypes differ: {} and {}", inputs[0].dtype, t.dtype)
        })?;
    }
    Ok(())
}

/// The index operand of an op that addresses its data by index values (Gather,
/// GatherElements, ScatterElements, ScatterND): which operand holds the indices, the
/// length of each index tuple (1, or ScatterND's last indices dim), and the extent each
/// tuple component indexes (`-d <= i < d`). `None` for other ops, or when the tuple
/// length is not a fixed number. Kernels clamp indices so that memory stays in bounds;
/// dlc-lower checks the values against these extents (at compile time for constants,
/// with a `bind` step before the kernel otherwise) so that a bad index is an error, as
/// in ONNX Runtime, not a silently clamped answer.
pub fn index_operand(op: &Op, inputs: &[TensorType]) -> Option<(usize, usize, Vec<crate::Dim>)> {
    let data = &inputs.first()?.shape.0;
    let along = |axis: i64| Some((1, 1, vec![data.get(normalize_axis(axis, data.len())?)?.clone()]));
    match op {
        Op::Gather(g) => along(g.axis),
        Op::GatherElements(g) => along(g.axis),
        Op::ScatterElements(s) => along(s.axis),
        Op::ScatterND(_) => {
            let k = inputs.get(1)?.shape.0.last()?.fixed()? as usize;
            Some((1, k, data.get(..k)?.to_vec()))
        }
        _ => None,
    }
}

/// Normalises a possibly negative axis against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r.max(1)).contains(&a).then_some(a as usize)
}

/// Broad classes of ops, used by analyses and backends that treat a class uniformly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Model inputs and constants.
    Source,
    /// One output element from the same-position elements of broadcast operands.
    Elementwise,
    /// Matrix products.
    Contraction,
    /// Sliding windows: convolution and pooling.
    Window,
    /// Normalisations and softmax.
    Normalization,
    /// Reductions over axes.
    Reduction,
    /// Copies and reindexing without arithmetic.
    Movement,
    /// A region of its own: a loop's body graph.
    Control,
}

impl Op {
    /// The class of this op (an exhaustive table: a new op must be classified here).
    pub fn kind(&self) -> OpKind {
        use Op::*;
        match self {
            Input(_) | Const(_) => OpKind::Source,
            crate::pointwise!() | Cast(_) | Expand(_) | Fused(_) => OpKind::Elementwise,
            MatMul(_) | Gemm(_) | Einsum(_) | Attention(_) | IntMatMul(_) => OpKind::Contraction,
            Conv(_) | ConvTranspose(_) | MaxPool(_) | AveragePool(_) | GlobalAveragePool(_) | GridSample(_)
            | ResizeTaps(_) | Resize(_) | QConv(_) | RoiAlign(_) | Col2Im(_) => OpKind::Window,
            QuantPack(_) | Patches(_) => OpKind::Movement,
            BatchNormalization(_) | LayerNormalization(_) | Softmax(_) => OpKind::Normalization,
            ReduceSum(_) | ReduceMean(_) | ReduceMax(_) | ReduceMin(_) | ReduceProd(_) | ReduceL1(_) | ReduceL2(_)
            | ReduceLogSum(_) | ReduceLogSumExp(_) | ReduceSumSquare(_) | ArgMax(_) | ArgMin(_) | TopK(_)
            | NllLoss(_) | CumSum(_) => OpKind::Reduction,
            Reshape(_) | Flatten(_) | Transpose(_) | Identity(_) | BitCast(_) | Concat(_) | Gather(_)
            | GatherElements(_) | Slice(_) | Trilu(_) | Pad(_) | ScatterElements(_) | ScatterND(_) | Bind(_)
            | Strided(_) | NonZero(_) | Nms(_) | Unique(_) | Compress(_) | Iota(_) | View(_) => OpKind::Movement,
            Loop(_) | If(_) => OpKind::Control,
            // Compares bytes, no arithmetic; never fused into elementwise programs.
            StringEqual(_) | StringCase(_) | StringConcat(_) | StringSplitCount(_) | StringSplit(_)
            | StringRegexMatch(_) => OpKind::Movement,
            // A source of values with a kernel (an operand gives only the shape); not
            // arithmetic on operands, so never fused into elementwise programs.
            Random(_) => OpKind::Movement,
        }
    }
}
