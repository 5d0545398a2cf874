//! Reductions over a set of axes, and arg-reductions over one axis.
use super::{ensure, normalize_axis, Infer, OpMeta};
use crate::{op, DType, Dim, IrError, Shape, TensorType};

/// The output shape of reducing `axes` (already normalised) of `shape`.
pub fn reduced_shape(shape: &Shape, axes: &[usize], keepdims: bool) -> Shape {
    Shape(
        shape
            .0
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), keepdims) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::Fixed(1)),
                (true, false) => None,
            })
            .collect(),
    )
}

/// Normalises and checks `axes` against `rank`; empty means every axis.
pub fn resolve_axes(axes: &[i64], rank: usize) -> Option<Vec<usize>> {
    if axes.is_empty() {
        return Some((0..rank).collect());
    }
    let mut out: Vec<usize> =
        axes.iter().map(|&a| normalize_axis(a, rank).filter(|_| rank > 0)).collect::<Option<_>>()?;
    out.sort_unstable();
    out.dedup();
    (out.len() == axes.len()).then_some(out)
}

fn infer_reduce<T: OpMeta>(
    node: &str,
    axes: &[i64],
    keepdims: bool,
    float_only: bool,
    inputs: &[TensorType],
) -> Result<Vec<TensorType>, IrError> {
    let op = T::INFO.mnemonic;
    let x = &inputs[0];
    ensure(x.dtype != DType::Bool, node, op, || "bool operands are not supported".into())?;
    ensure(!float_only || x.dtype.is_float(), node, op, || format!("needs a floating-point operand, got {}", x.dtype))?;
    let ax = resolve_axes(axes, x.shape.rank())
        .ok_or_else(|| IrError::shape(node, op, format!("axes {axes:?} are invalid for {}", x.shape)))?;
    Ok(vec![TensorType { dtype: x.dtype, shape: reduced_shape(&x.shape, &ax, keepdims) }])
}

macro_rules! reductions {
    ($($(#[doc = $doc:literal])* $name:ident = $mn:literal, $float:literal;)*) => {$(
        op! { $(#[doc = $doc])* $name = $mn, operands 1..=1 { axes: Vec<i64>, keepdims: bool = true } }
        impl Infer for $name {
            fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
                infer_reduce::<$name>(node, &self.axes, self.keepdims, $float, inputs)
            }
        }
    )*};
}

reductions! {
    /// Sum over `axes` (empty: all); accumulates in f64 or i64.
    ReduceSum = "reduce_sum", false;
    /// Mean over `axes`.
    ReduceMean = "reduce_mean", false;
    /// Maximum over `axes` (-inf, or the dtype's minimum, when empty).
    ReduceMax = "reduce_max", false;
    /// Minimum over `axes`.
    ReduceMin = "reduce_min", false;
    /// Product over `axes`.
    ReduceProd = "reduce_prod", false;
    /// Sum of absolute values.
    ReduceL1 = "reduce_l1", false;
    /// Square root of the sum of squares.
    ReduceL2 = "reduce_l2", false;
    /// Log of the sum.
    ReduceLogSum = "reduce_log_sum", true;
    /// Log of the sum of exponentials.
    ReduceLogSumExp = "reduce_log_sum_exp", true;
    /// Sum of squares.
    ReduceSumSquare = "reduce_sum_square", false;
}

macro_rules! arg_reductions {
    ($($(#[doc = $doc:literal])* $name:ident = $mn:literal;)*) => {$(
        op! { $(#[doc = $doc])* $name = $mn, operands 1..=1 { axis: i64, keepdims: bool = true, select_last_index: bool } }
        impl Infer for $name {
            fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
                let x = &inputs[0];
                let a = normalize_axis(self.axis, x.shape.rank()).filter(|_| x.shape.rank() > 0).ok_or_else(|| {
                    IrError::shape(node, $mn, format!("axis {} out of range for {}", self.axis, x.shape))
                })?;
                ensure(x.dtype != DType::Bool, node, $mn, || "bool operands are not supported".into())?;
                Ok(vec![TensorType { dtype: DType::I64, shape: reduced_shape(&x.shape, &[a], self.keepdims) }])
            }
        }
    )*};
}

arg_reductions! {
    /// Index of the maximum along `axis` (the first, or the last with `select_last_index`).
    ArgMax = "argmax";
    /// Index of the minimum along `axis`.
    ArgMin = "argmin";
}

op! {
    /// The `k` largest (or, without `largest`, smallest) elements along `axis`, sorted
    /// best first (ties: the lower index first), and their indices (`i64`), ONNX TopK.
    /// `k` is a constant (`"5"`) or a symbol a [`crate::ops::Bind`] (rule `extent`) bound
    /// at run time, at most the axis's extent.
    TopK = "topk", operands 1..=1 { axis: i64, largest: bool, k: String }
}

impl TopK {
    /// `k` as a dim.
    pub fn k_dim(&self) -> Option<Dim> {
        match self.k.parse::<u64>() {
            Ok(n) => Some(Dim::Fixed(n)),
            Err(_) => dlc_sym::is_symbol_name(&self.k).then(|| Dim::sym(&self.k)),
        }
    }
}

impl Infer for TopK {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        let a = normalize_axis(self.axis, x.shape.rank())
            .filter(|_| x.shape.rank() > 0)
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {}", self.axis, x.shape)))?;
        let k = self
            .k_dim()
            .ok_or_else(|| IrError::shape(node, op, format!("k '{}' is not a count or a symbol", self.k)))?;
        if let (Dim::Fixed(k), Dim::Fixed(d)) = (&k, &x.shape.0[a]) {
            ensure(k <= d, node, op, || format!("k = {k} is more than the axis's extent {d}"))?;
        }
        let mut shape = x.shape.clone();
        shape.0[a] = k;
        Ok(vec![TensorType { dtype: x.dtype, shape: shape.clone() }, TensorType { dtype: DType::I64, shape }])
    }
}

/// How a loss is reduced over its elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReduction {
    /// One loss per target element.
    None,
    /// The sum of the losses.
    Sum,
    /// The weighted mean (sum of losses over the sum of the weights of counted targets).
    Mean,
}

op! {
    /// Negative log-likelihood: `loss[n, d...] = -input[n, target[n, d...], d...] * weight[target]`,
    /// 0 where the target equals `ignore_index` (when `has_ignore_index`). Operands:
    /// input `[N, C, d...]`, target `[N, d...]` (integers), optional weight `[C]`.
    NllLoss = "nll_loss", operands 2..=3 { reduction: LossReduction, ignore_index: i64, has_ignore_index: bool }
}

impl Infer for NllLoss {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, t) = (&inputs[0], &inputs[1]);
        ensure(x.dtype.is_float(), node, op, || format!("input must be floating point, got {}", x.dtype))?;
        ensure(matches!(t.dtype, DType::I32 | DType::I64), node, op, || {
            format!("target must be i32 or i64, got {}", t.dtype)
        })?;
        ensure(x.shape.rank() >= 2 && t.shape.rank() + 1 == x.shape.rank(), node, op, || {
            format!("input {} and target {} do not fit [N, C, d...] and [N, d...]", x.shape, t.shape)
        })?;
        let mut want = vec![x.shape.0[0].clone()];
        want.extend(x.shape.0[2..].iter().cloned());
        ensure(t.shape.0 == want, node, op, || format!("target {} must be {}", t.shape, Shape(want.clone())))?;
        if let Some(w) = inputs.get(2) {
            ensure(w.shape.rank() == 1 && w.shape.0[0] == x.shape.0[1] && w.dtype == x.dtype, node, op, || {
                format!("weight must be {}[{}], got {w}", x.dtype, x.shape.0[1])
            })?;
        }
        let shape = if self.reduction == LossReduction::None { t.shape.clone() } else { Shape(vec![]) };
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}

op! {
    /// Running sum (or product) along the axis given by the scalar second operand, which
    /// may be a run-time value: `exclusive` leaves out the current element, `reverse`
    /// scans from the end (ONNX CumSum, CumProd).
    CumSum = "cumsum", operands 2..=2 { exclusive: bool, reverse: bool, product: bool }
}

impl Infer for CumSum {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, axis) = (&inputs[0], &inputs[1]);
        ensure(x.dtype != DType::Bool && x.shape.rank() > 0, node, op, || {
            format!("needs a numeric tensor of rank >= 1, got {x}")
        })?;
        ensure(matches!(axis.dtype, DType::I32 | DType::I64) && axis.shape.numel() == Some(1), node, op, || {
            format!("axis must be an i32 or i64 scalar, got {axis}")
        })?;
        Ok(vec![x.clone()])
    }
}
