//! Integer (int8) convolution, as placed by the quantization pass (`dlc compile
//! --quantize int8`): activations quantized per tensor to u8 and laid out for the
//! integer kernels, weights quantized per output channel to i8, i32 accumulation, and a
//! float epilogue.
use super::{ensure, fixed_dims, Activation, Infer, OpMeta};
use crate::{op, DType, Dim, IrError, Shape, TensorType};

/// Input channels that share one 32-bit word of a packed activation tensor.
pub const PACK: u64 = 4;

op! {
    /// Quantizes an f32 NCHW tensor to u8, `q = clamp(roundeven(x / scale) + zero_point,
    /// 0, qmax)` (ONNX QuantizeLinear when `qmax` is 255), and lays it out for [`QConv`]:
    /// `[N, ceil(C / 4), pad_t + H + pad_b, pad_l + W + pad_r, 4]`, four consecutive
    /// channels of one pixel in one 32-bit word. Padding pixels and the channels past `C`
    /// hold `zero_point` (the quantized 0.0). `pads` is `[top, left, bottom, right]`.
    /// A `qmax` below 255 narrows the range (7-bit activations let the integer kernels
    /// add two products in 16 bits before widening). With `rows`, the input is a matrix
    /// of rows `[..., K]` (a matrix product's left operand) and the result is
    /// `[1, ceil(K / 4), 1, P, 4]` for its `P` rows: each row is one pixel whose channels
    /// are the row's `K` values (`pads` must then be zero). With `dynamic`, `scale` and
    /// `zero_point` are not used: each run takes them from the input's own range
    /// ([`range_quantization`]) and returns them as a second result, f32 `[scale,
    /// zero_point]`.
    QuantPack = "quant_pack", operands 1..=1 {
        scale: f32, zero_point: i64, qmax: i64 = 255, pads: Vec<i64>, rows: bool = false, dynamic: bool = false,
    }
}

/// The quantization of values in `[lo, hi]` to `0..=qmax`: `(scale, zero_point)`. The
/// range is widened to include 0 (so padding and ReLU outputs are exact); a
/// non-negative range has zero point 0; an empty or non-finite range gives scale 1. The
/// one definition: the quantization pass (calibrated ranges) and dynamic `quant_pack`
/// (each run's range, in the interpreter and in generated code) follow it.
pub fn range_quantization(lo: f32, hi: f32, qmax: i64) -> (f32, i64) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if !(lo.is_finite() && hi.is_finite()) || hi - lo <= f32::MIN_POSITIVE {
        return (1.0, if lo < 0.0 { qmax } else { 0 });
    }
    let scale = (hi - lo) / qmax as f32;
    (scale, (-lo / scale).round_ties_even().clamp(0.0, qmax as f32) as i64)
}

impl QuantPack {
    /// `[top, left, bottom, right]` as unsigned extents.
    pub fn padding(&self) -> [u64; 4] {
        let p = |i: usize| self.pads.get(i).copied().unwrap_or(0).max(0) as u64;
        [p(0), p(1), p(2), p(3)]
    }
}

impl Infer for QuantPack {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        ensure(x.dtype == DType::F32, node, op, || format!("input must be f32, got {}", x.dtype))?;
        let d = fixed_dims(x, node, op)?;
        if self.rows {
            ensure(d.len() >= 2 && self.pads.iter().all(|&p| p == 0), node, op, || {
                format!("rows need a matrix input and no padding, got {} and pads {:?}", x.shape, self.pads)
            })?;
        } else {
            ensure(d.len() == 4, node, op, || format!("input must be NCHW, got {}", x.shape))?;
        }
        ensure(self.pads.len() == 4 && self.pads.iter().all(|&p| p >= 0), node, op, || {
            format!("pads must be 4 non-negative values, got {:?}", self.pads)
        })?;
        ensure(self.scale.is_finite() && self.scale > 0.0, node, op, || {
            format!("scale must be positive and finite, got {}", self.scale)
        })?;
        ensure((1..=255).contains(&self.qmax), node, op, || format!("qmax must be in 1..=255, got {}", self.qmax))?;
        ensure((0..=self.qmax).contains(&self.zero_point), node, op, || {
            format!("zero_point must be in 0..={}, got {}", self.qmax, self.zero_point)
        })?;
        let packed = if let Some((k, rows)) = d.split_last().filter(|_| self.rows) {
            TensorType::fixed(DType::U8, &[1, k.div_ceil(PACK), 1, rows.iter().product(), PACK])
        } else {
            let [t, l, b, r] = self.padding();
            TensorType::fixed(DType::U8, &[d[0], d[1].div_ceil(PACK), t + d[2] + b, l + d[3] + r, PACK])
        };
        if self.dynamic {
            return Ok(vec![packed, TensorType::fixed(DType::F32, &[2])]);
        }
        Ok(vec![packed])
    }
}

op! {
    /// Integer 2-D convolution of a [`QuantPack`]ed input `Xq` with i8 weights
    /// `Wq [M, C, KH, KW]` (padding is already in `Xq`), accumulated exactly in i32, then
    /// `Y[n,m] = act(acc * mult[m] + offset[m] + R)` in f32 with the optional residual
    /// `R` (the result's shape). `mult` is the input scale times the channel's weight
    /// scale, `offset` the bias less `mult * zero_point * sum(Wq[m])`, so the input's zero
    /// point costs nothing per tap. Operands: `Xq, Wq, mult [M], offset [M], R?`. With
    /// `rows` (a matrix product: `Xq` from a `rows` pack, a 1x1 kernel) the result is
    /// `[P, M]`, row `p` from pixel `p`, instead of NCHW. With `dynamic` (the input from a
    /// dynamic `quant_pack`), the fifth operand is that pack's `[scale, zero_point]`
    /// (there is no residual), `mult` holds the weight scales and `offset` the bias: the
    /// run's `mult` and `offset` are `scale * mult[m]` and `offset[m] - scale *
    /// zero_point * sum(Wq[m])`.
    QConv = "qconv", operands 4..=5 {
        strides: Vec<i64>, dilations: Vec<i64>, act: Activation, rows: bool = false, dynamic: bool = false,
    }
}

impl QConv {
    /// `(strides, dilations)` as `[y, x]` pairs (absent values are 1).
    pub fn steps(&self) -> ([u64; 2], [u64; 2]) {
        let get = |v: &[i64], i: usize| v.get(i).copied().unwrap_or(1).max(1) as u64;
        ([get(&self.strides, 0), get(&self.strides, 1)], [get(&self.dilations, 0), get(&self.dilations, 1)])
    }
}

impl Infer for QConv {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, w) = (&inputs[0], &inputs[1]);
        ensure(x.dtype == DType::U8 && w.dtype == DType::I8, node, op, || {
            format!("needs a u8 packed input and i8 weights, got {} and {}", x.dtype, w.dtype)
        })?;
        let xd = fixed_dims(x, node, op)?;
        let wd = fixed_dims(w, node, op)?;
        ensure(xd.len() == 5 && xd[4] == PACK, node, op, || {
            format!("input must be packed [N,C/4,H,W,4], got {}", x.shape)
        })?;
        ensure(wd.len() == 4, node, op, || format!("weight must be [M,C,KH,KW], got {}", w.shape))?;
        ensure(wd[1].div_ceil(PACK) == xd[1], node, op, || {
            format!("weight {} needs {} channel words, input has {}", w.shape, wd[1].div_ceil(PACK), xd[1])
        })?;
        ensure(
            self.strides.iter().chain(&self.dilations).all(|&s| s >= 1)
                && self.strides.len() <= 2
                && self.dilations.len() <= 2,
            node,
            op,
            || format!("strides {:?} and dilations {:?} must be positive pairs", self.strides, self.dilations),
        )?;
        for (i, what) in [(2, "mult"), (3, "offset")] {
            let t = &inputs[i];
            ensure(t.dtype == DType::F32 && t.shape == Shape::fixed(&[wd[0]]), node, op, || {
                format!("{what} must be f32[{}], got {t}", wd[0])
            })?;
        }
        let (s, d) = self.steps();
        let mut out = [0u64; 2];
        for i in 0..2 {
            let span = (wd[2 + i] - 1) * d[i] + 1;
            ensure(xd[2 + i] >= span && wd[2 + i] >= 1, node, op, || {
                format!("window of extent {span} does not fit padded input {}", x.shape)
            })?;
            out[i] = (xd[2 + i] - span) / s[i] + 1;
        }
        let shape = if self.rows {
            ensure(xd[0] == 1 && xd[2] == 1 && wd[2..] == [1, 1] && s == [1, 1], node, op, || {
                format!("rows need a [1,C/4,1,P,4] input, a 1x1 kernel and stride 1, got {} and {}", x.shape, w.shape)
            })?;
            Shape::fixed(&[out[1], wd[0]])
        } else {
            Shape(vec![Dim::Fixed(xd[0]), Dim::Fixed(wd[0]), Dim::Fixed(out[0]), Dim::Fixed(out[1])])
        };
        match inputs.get(4) {
            Some(q) if self.dynamic => {
                ensure(q.dtype == DType::F32 && q.shape == Shape::fixed(&[2]), node, op, || {
                    format!("a dynamic qconv's fifth operand is its input's f32[2] scale and zero point, got {q}")
                })?
            }
            None if self.dynamic => {
                return Err(IrError::shape(node, op, "a dynamic qconv needs its input's scale and zero point"))
            }
            Some(r) => ensure(r.dtype == DType::F32 && r.shape == shape, node, op, || {
                format!("residual must be f32{shape}, got {r}")
            })?,
            None => {}
        }
        Ok(vec![TensorType { dtype: DType::F32, shape }])
    }
}

op! {
    /// ONNX MatMulInteger with a u8 left operand: `Y[..., m, n] = sum_k (A[..., m, k] -
    /// a_zp) * (B[k, n] - b_zp[n])`, exact in i32 (wrapping, as ONNX Runtime's kernels).
    /// Operands: `A` u8 `[..., M, K]` (its leading dims may be run-time ones; `K` known),
    /// `B` u8 or i8 `[K, N]`, `a_zp` one u8, `b_zp` of `B`'s type, one or `[N]`. The
    /// int8 kernel packs `B` and `b_zp`, so they must be constants there.
    IntMatMul = "int_matmul", operands 4..=4 {}
}

impl Infer for IntMatMul {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (a, b, azp, bzp) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
        ensure(a.dtype == DType::U8 && matches!(b.dtype, DType::U8 | DType::I8), node, op, || {
            format!("needs a u8 left operand and u8 or i8 weights, got {} and {}", a.dtype, b.dtype)
        })?;
        let bd = fixed_dims(b, node, op)?;
        let k = a.shape.0.last().and_then(|d| d.fixed());
        ensure(bd.len() == 2 && k == Some(bd[0]), node, op, || {
            format!("needs [..., M, K] by [K, N] with a known K, got {} and {}", a.shape, b.shape)
        })?;
        ensure(azp.dtype == DType::U8 && azp.shape.numel() == Some(1), node, op, || {
            format!("a_zp must be one u8, got {azp}")
        })?;
        let per_column = bzp.shape == Shape::fixed(&[bd[1]]);
        ensure(bzp.dtype == b.dtype && (bzp.shape.numel() == Some(1) || per_column), node, op, || {
            format!("b_zp must be one {} or [{}], got {bzp}", b.dtype, bd[1])
        })?;
        ensure(a.shape.rank() >= 2, node, op, || format!("A must be a matrix or a stack of them, got {}", a.shape))?;
        let mut dims = a.shape.0.clone();
        dims.pop();
        dims.push(Dim::Fixed(bd[1]));
        Ok(vec![TensorType { dtype: DType::I32, shape: Shape(dims) }])
    }
}
