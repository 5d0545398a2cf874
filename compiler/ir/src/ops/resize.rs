//! Resize (ONNX Resize 10-19 and Upsample), one axis at a time: ONNX's interpolation is
//! separable, so an N-D resize is a chain of 1-D ones (the order of the ONNX reference:
//! axis 0 first).
//!
//! Each axis is two nodes. [`ResizeTaps`] computes, for every output position `o`, the
//! `K` input indices it reads (`idx: i64[O, K]`, clamped into the input) and their
//! weights (`w: f32[O, K + 1]`; the last column multiplies the extrapolation value of
//! `tf_crop_and_resize`); it reads only its operand's extent along the axis, so with
//! known dims the importer evaluates it once (dlc-interp) and the tables are
//! constants, and with run-time dims its kernel computes them while the model runs.
//! [`Resize`] applies them: `y[.., o, ..] = sum_k w[o, k] * x[.., idx[o, k], ..] +
//! w[o, K] * extrapolation`; nearest (`K = 1`, no extrapolation) is a copy, for any dtype.
use super::{ensure, normalize_axis, Infer, OpMeta};
use crate::{op, DType, Dim, Expr, IrError, Shape, TensorType};

/// How [`ResizeTaps`] interpolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// The nearest input position (rounded by a [`NearestMode`]).
    Nearest,
    /// Linear between the two neighbours.
    Linear,
    /// Keys' cubic convolution over four neighbours (`cubic_a`).
    Cubic,
}

/// How an output position maps to an input coordinate (ONNX
/// `coordinate_transformation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeCoord {
    /// `(o + 0.5) / scale - 0.5`.
    HalfPixel,
    /// `half_pixel` shifted so the centres of input and output coincide (opset 19).
    HalfPixelSymmetric,
    /// `half_pixel`, but `-0.5` when the output has one element.
    PytorchHalfPixel,
    /// `o * (in - 1) / (out - 1)`.
    AlignCorners,
    /// `o / scale`.
    Asymmetric,
    /// `(o + 0.5) / scale` (opsets 11-12, nearest only).
    TfHalfPixelForNn,
    /// The `roi` window of the input, mapped to the output's corners; outside it the
    /// extrapolation value.
    TfCropAndResize,
}

/// How `nearest` rounds a fractional coordinate (ONNX `nearest_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestMode {
    /// Halves go down.
    RoundPreferFloor,
    /// Halves go up.
    RoundPreferCeil,
    /// Down.
    Floor,
    /// Up.
    Ceil,
    /// Opset 10's and Upsample's rule (ONNX Runtime's): up when downsampling, else down.
    Simple,
}

op! {
    /// The taps of a 1-D resize along `axis`: `idx: i64[O, K]` and `w: f32[O, K + 1]`
    /// (see the module doc), from the operand's extent `in` along the axis (its data is
    /// not read). `size` is the output extent `O` (a dim expression); `scale` the scale
    /// the model gave, or 0 when it gave sizes: the scale is then `O / in`, computed in
    /// float64 as ONNX does, or `num / den` when `scale_of` is `"num;den"` (two dim
    /// expressions: `keep_aspect_ratio_policy` scales every axis by one axis's ratio);
    /// `roi_start`/`roi_end` the axis's window for `tf_crop_and_resize`. An optional
    /// second operand `f32[3]` gives `[scale, roi_start, roi_end]` at run time instead
    /// (a scale of 0 there: from `size`, as above): scales or roi the model computes.
    ResizeTaps = "resize_taps", operands 1..=2 {
        axis: i64,
        size: String,
        scale: f32,
        scale_of: String,
        mode: ResizeMode,
        coord: ResizeCoord,
        nearest: NearestMode,
        cubic_a: f32 = -0.75,
        exclude_outside: bool,
        antialias: bool,
        roi_start: f32,
        roi_end: f32 = 1.0,
    }
}

impl ResizeTaps {
    /// The output extent `O` (`None` when `size` does not parse).
    pub fn size_expr(&self) -> Option<Expr> {
        dlc_sym::parse(self.size.trim()).ok()
    }

    /// `scale_of` as `(num, den)` expressions (`None` when empty or malformed).
    pub fn scale_ratio(&self) -> Option<(Expr, Expr)> {
        let (n, d) = self.scale_of.split_once(';')?;
        Some((dlc_sym::parse(n.trim()).ok()?, dlc_sym::parse(d.trim()).ok()?))
    }

    /// The scale this op resizes by, where it is known: the given `scale`, else `num /
    /// den` of `scale_of`, else `out / in` (1 for an empty input), in float64 as ONNX
    /// computes it. The one definition the shape rule, dlc-interp and the importer use
    /// (the kernel computes the same at run time).
    pub fn scale_at(&self, in_len: Option<u64>, out_len: Option<u64>) -> Option<f64> {
        if self.scale != 0.0 {
            return Some(self.scale as f64);
        }
        let (n, d) = match self.scale_ratio() {
            Some((n, d)) => (n.as_const()?, d.as_const()?),
            None => (out_len? as i64, in_len? as i64),
        };
        Some(if d > 0 { n as f64 / d as f64 } else { 1.0 })
    }

    /// The taps per output position: 1 (nearest), 2 (linear), 4 (cubic), or, with
    /// `antialias` when downsampling, the stretched kernel's width (ONNX's footprint).
    /// `None` when that width depends on a scale only known at run time (sizes over
    /// run-time dims): `in_len` and `out_len` are the extents where known.
    pub fn taps(&self, in_len: Option<u64>, out_len: Option<u64>) -> Option<u64> {
        let half = match self.mode {
            ResizeMode::Nearest => return Some(1),
            ResizeMode::Linear => 1.0,
            ResizeMode::Cubic => 2.0,
        };
        if !self.antialias {
            return Some(2 * half as u64);
        }
        let scale = self.scale_at(in_len, out_len)?;
        let s = scale.min(1.0);
        if s.is_nan() || s <= 0.0 || !s.is_finite() {
            return Some(2 * half as u64);
        }
        // ONNX: start = floor(-half / s) + 1, footprint = 2 - 2 * start.
        let start = (-half / s).floor() + 1.0;
        let n = 2.0 - 2.0 * start;
        (n.is_finite() && (1.0..=65536.0).contains(&n)).then_some(n as u64)
    }

    /// The tap count of the tables: [`Self::taps`], except with antialias and a scale
    /// known only at run time (given at run time, `run_time_scale`, or sizes over
    /// run-time dims), where it is a bound from the input's extent `in`: an output of at
    /// least one element needs `scale >= 0.5 / in` (sizes round), so the footprint
    /// `2 ceil(half / scale)` is at most `4 half in + 2`. The taps past the footprint of
    /// the actual scale get zero weight (the filter is 0 there), so the result is the
    /// same. `None` when `in` is unknown or the bound exceeds 65,536.
    pub fn width(&self, in_len: Option<u64>, out_len: Option<u64>, run_time_scale: bool) -> Option<u64> {
        let known = !run_time_scale && self.scale_at(in_len, out_len).is_some();
        if known || !self.antialias || self.mode == ResizeMode::Nearest {
            return self.taps(in_len, out_len);
        }
        let half = if self.mode == ResizeMode::Linear { 1 } else { 2 };
        let k = in_len?.checked_mul(4 * half)?.checked_add(4)?;
        (k <= 65536).then_some(k)
    }
}

/// `floor(d * scale)`, the ONNX output extent for a scale, as a dim: exact for run-time
/// dims too (an f32 scale is `m / 2^e`, so it is `floordiv(d * m, 2^e)`). `None` for a
/// negative, non-finite or absurdly fine scale.
pub fn scaled_dim(d: &Dim, scale: f32) -> Option<Dim> {
    if !scale.is_finite() || scale < 0.0 {
        return None;
    }
    if let Some(v) = d.fixed() {
        let r = (v as f64 * scale as f64).floor();
        return (0.0..9.0e15).contains(&r).then_some(Dim::Fixed(r as u64));
    }
    // The exact dyadic form m / 2^e of the scale.
    let (mut m, mut e) = (scale as f64, 0u32);
    while m.fract() != 0.0 {
        m *= 2.0;
        e += 1;
        if e > 40 {
            return None;
        }
    }
    if m > (1u64 << 40) as f64 {
        return None;
    }
    let num = d.expr().scale(m as i64);
    Dim::from_expr(num.floor_div(&Expr::c(1i64 << e)))
}

impl Infer for ResizeTaps {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        let a = normalize_axis(self.axis, x.shape.rank())
            .filter(|_| x.shape.rank() > 0)
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {}", self.axis, x.shape)))?;
        let size =
            self.size_expr().ok_or_else(|| IrError::shape(node, op, format!("size '{}' is not a dim", self.size)))?;
        let out = Dim::from_expr(size.clone())
            .ok_or_else(|| IrError::shape(node, op, format!("size {size} is not a dim")))?;
        ensure(self.scale_of.is_empty() || self.scale_ratio().is_some(), node, op, || {
            format!("scale_of '{}' is not two dims 'num;den'", self.scale_of)
        })?;
        ensure(self.scale >= 0.0 && self.scale.is_finite(), node, op, || {
            format!("scale {} must be finite and not negative", self.scale)
        })?;
        ensure(self.mode == ResizeMode::Nearest || self.coord != ResizeCoord::TfHalfPixelForNn, node, op, || {
            "tf_half_pixel_for_nn applies to nearest mode only".into()
        })?;
        if let Some(p) = inputs.get(1) {
            ensure(p.dtype == DType::F32 && p.shape.as_fixed().as_deref() == Some(&[3][..]), node, op, || {
                format!("the run-time parameters must be f32[3] (scale, roi start, roi end), got {p}")
            })?;
        }
        let k = self.width(x.shape.0[a].fixed(), out.fixed(), inputs.len() == 2).ok_or_else(|| {
            IrError::shape(
                node,
                op,
                format!(
                    "antialias with sizes over run-time dims ({} to {}) has a kernel width only known at run time \
                     (with a scale given at run time, the input's extent bounds it and must be known)",
                    x.shape.0[a], out
                ),
            )
        })?;
        Ok(vec![
            TensorType { dtype: DType::I64, shape: Shape(vec![out.clone(), Dim::Fixed(k)]) },
            TensorType { dtype: DType::F32, shape: Shape(vec![out, Dim::Fixed(k + 1)]) },
        ])
    }
}

op! {
    /// Applies the taps of a [`ResizeTaps`] along `axis`: operands `x`, `idx: i64[O, K]`,
    /// `w: f32[O, K + 1]`; the result is `x` with extent `O` along the axis (see the
    /// module doc). Indices must lie in `x` (ResizeTaps clamps them).
    Resize = "resize", operands 3..=3 { axis: i64, extrapolation: f32 }
}

impl Infer for Resize {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, idx, w) = (&inputs[0], &inputs[1], &inputs[2]);
        let a = normalize_axis(self.axis, x.shape.rank())
            .filter(|_| x.shape.rank() > 0)
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {}", self.axis, x.shape)))?;
        let ok = idx.dtype == DType::I64
            && w.dtype == DType::F32
            && idx.shape.rank() == 2
            && w.shape.rank() == 2
            && idx.shape.0[0] == w.shape.0[0]
            && matches!((idx.shape.0[1].fixed(), w.shape.0[1].fixed()), (Some(k), Some(k1)) if k >= 1 && k1 == k + 1);
        ensure(ok, node, op, || format!("taps must be i64[O,K] and f32[O,K+1], got {idx} and {w}"))?;
        let mut shape = x.shape.clone();
        shape.0[a] = idx.shape.0[0].clone();
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}
