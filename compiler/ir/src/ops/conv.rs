//! 2-D convolution and pooling over NCHW tensors.
use super::{ensure, fixed_dims, same_dtype, Activation, Infer, OpMeta};
use crate::{op, Dim, Expr, IrError, Shape, TensorType};

/// ONNX `auto_pad`: how padding is derived when not given explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    /// Use the explicit `pads`.
    NotSet,
    /// Pad so that `out = ceil(in / stride)`, extra padding at the end.
    SameUpper,
    /// Pad so that `out = ceil(in / stride)`, extra padding at the start.
    SameLower,
    /// No padding.
    Valid,
}

impl AutoPad {
    /// ONNX spelling.
    pub fn name(self) -> &'static str {
        match self {
            AutoPad::NotSet => "NOTSET",
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
            AutoPad::Valid => "VALID",
        }
    }

    /// Parses the ONNX spelling.
    pub fn from_name(s: &str) -> Option<AutoPad> {
        [AutoPad::NotSet, AutoPad::SameUpper, AutoPad::SameLower, AutoPad::Valid].into_iter().find(|a| a.name() == s)
    }
}

/// Resolved geometry of a sliding window over the two spatial dims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Input `[H, W]`.
    pub input: [u64; 2],
    /// Output `[OH, OW]`.
    pub output: [u64; 2],
    /// Kernel `[KH, KW]`.
    pub kernel: [u64; 2],
    /// Strides.
    pub strides: [u64; 2],
    /// Dilations.
    pub dilations: [u64; 2],
    /// Padding at the start `[top, left]`.
    pub pad_begin: [u64; 2],
    /// Padding at the end `[bottom, right]`.
    pub pad_end: [u64; 2],
}

/// A sliding window whose image extents may be run-time dims: the input and output
/// extents are expressions, the window itself (kernel, strides, dilations, padding) is
/// constant. Where both extents are known it is the [`PoolGeometry`]'s window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Input `[H, W]`.
    pub input: [Expr; 2],
    /// Output `[OH, OW]`.
    pub output: [Expr; 2],
    /// Kernel `[KH, KW]`.
    pub kernel: [u64; 2],
    /// Strides.
    pub strides: [u64; 2],
    /// Dilations.
    pub dilations: [u64; 2],
    /// Padding at the start `[top, left]`.
    pub pad_begin: [u64; 2],
    /// Padding at the end `[bottom, right]`.
    pub pad_end: [u64; 2],
}

impl From<&PoolGeometry> for Window {
    fn from(g: &PoolGeometry) -> Window {
        let e = |v: [u64; 2]| v.map(|x| Expr::c(x as i64));
        Window {
            input: e(g.input),
            output: e(g.output),
            kernel: g.kernel,
            strides: g.strides,
            dilations: g.dilations,
            pad_begin: g.pad_begin,
            pad_end: g.pad_end,
        }
    }
}

impl Window {
    /// Resolves the window over spatial dims `[H, W]`, either of which may be symbolic.
    /// A symbolic extent needs padding that does not depend on it: explicit pads, VALID,
    /// or SAME with stride 1; and no `ceil_mode` unless the stride is 1.
    pub fn resolve(input: [&Dim; 2], a: &WindowAttrs) -> Result<Window, String> {
        // Each axis depends only on its own extent: resolve the known ones as
        // PoolGeometry does (the same numbers), the symbolic ones by formula.
        // (The other axis at a size every window fits, so only axis `i` is probed.)
        let probe_at = |i: usize, n: u64| {
            let mut e = [1u64 << 20; 2];
            e[i] = n;
            PoolGeometry::resolve(e, a)
        };
        let probe = |n: u64| PoolGeometry::resolve([n, n], a);
        let fixed = [input[0].fixed(), input[1].fixed()];
        if let [Some(h), Some(w)] = fixed {
            return PoolGeometry::resolve([h, w], a).map(|g| Window::from(&g));
        }
        // The window's constants, from a probe at an extent every window fits.
        let big = probe(1 << 20)?;
        let mut g = Window::from(&big);
        for i in 0..2 {
            if let Some(n) = fixed[i] {
                let one = probe_at(i, n)?;
                g.input[i] = Expr::c(n as i64);
                g.output[i] = Expr::c(one.output[i] as i64);
                g.pad_begin[i] = one.pad_begin[i];
                g.pad_end[i] = one.pad_end[i];
                continue;
            }
            let n = input[i].expr();
            let (s, span) = (big.strides[i], (big.kernel[i] - 1) * big.dilations[i] + 1);
            let out = match a.auto_pad {
                AutoPad::NotSet | AutoPad::Valid => {
                    let pads = (big.pad_begin[i] + big.pad_end[i]) as i64;
                    // ceil_mode rounds the window count up; a window that would start in
                    // the end padding is dropped, which never happens when the end
                    // padding plus a stride fits in the window (ceil((n + pads - span) /
                    // s) * s < n + pads - span + s <= n + pad_begin).
                    let up = if a.ceil_mode && s > 1 {
                        if big.pad_end[i] + s > span {
                            return Err(format!(
                                "ceil_mode with stride {s}, a window of {span} and end padding {} over the run-time \
                                 extent {n} is not supported yet; pin the input shape with --input-shape",
                                big.pad_end[i]
                            ));
                        }
                        s as i64 - 1
                    } else {
                        0
                    };
                    (&n + &Expr::c(pads - span as i64 + up)).floor_div(&Expr::c(s as i64)) + Expr::c(1)
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    if s > 1 {
                        return Err(format!(
                            "auto_pad {} with stride {s} over the run-time extent {n} gives padding that depends \
                             on it, which is not supported yet; pin the input shape with --input-shape",
                            a.auto_pad.name()
                        ));
                    }
                    n.clone()
                }
            };
            g.input[i] = n;
            g.output[i] = out;
        }
        Ok(g)
    }

    /// The smallest value of symbolic input extent `i` for which the window fits (the
    /// output has at least one element), when the extent is a plain symbol.
    pub fn min_input(&self, i: usize) -> Option<(String, u64)> {
        let name = self.input[i].as_symbol()?;
        let span = (self.kernel[i] - 1) * self.dilations[i] + 1;
        let need = span.saturating_sub(self.pad_begin[i] + self.pad_end[i]).max(1);
        Some((name.to_string(), need))
    }

    /// The outputs along axis `i` whose every tap lies in the image, `[left, right)`,
    /// for an image of `input` and an output of `output` positions (this window's, or
    /// values a kernel computed from them): `left` the first output past the leading
    /// padding, `right` the first whose last tap is past the image, both within
    /// `[0, output]` and `left <= right`.
    pub fn interior(&self, i: usize, input: &Expr, output: &Expr) -> (Expr, Expr) {
        let s = self.strides[i] as i64;
        let reach = ((self.kernel[i] - 1) * self.dilations[i]) as i64 - self.pad_begin[i] as i64;
        let left = Expr::c(self.pad_begin[i].div_ceil(self.strides[i]) as i64).min_with(output);
        let right = (input + &Expr::c(s - 1 - reach)).floor_div(&Expr::c(s)).min_with(output).max_with(&left);
        (left, right)
    }

    /// The fixed geometry, when both extents are known.
    pub fn fixed(&self) -> Option<PoolGeometry> {
        let k = |e: &Expr| e.as_const().and_then(|v| u64::try_from(v).ok());
        Some(PoolGeometry {
            input: [k(&self.input[0])?, k(&self.input[1])?],
            output: [k(&self.output[0])?, k(&self.output[1])?],
            kernel: self.kernel,
            strides: self.strides,
            dilations: self.dilations,
            pad_begin: self.pad_begin,
            pad_end: self.pad_end,
        })
    }
}

/// Attributes shared by convolution and pooling, before resolution.
pub struct WindowAttrs<'a> {
    /// Kernel extents.
    pub kernel: &'a [i64],
    /// Strides (empty: all 1).
    pub strides: &'a [i64],
    /// ONNX pads `[t, l, b, r]` (empty: all 0).
    pub pads: &'a [i64],
    /// Dilations (empty: all 1).
    pub dilations: &'a [i64],
    /// Padding mode.
    pub auto_pad: AutoPad,
    /// Round the output size up.
    pub ceil_mode: bool,
}

impl PoolGeometry {
    /// Resolves the window over input spatial dims `[H, W]`.
    #[allow(clippy::needless_range_loop)] // walks several per-dim arrays in step
    pub fn resolve(input: [u64; 2], a: &WindowAttrs) -> Result<PoolGeometry, String> {
        let get = |v: &[i64], i: usize, default: i64, what: &str| -> Result<u64, String> {
            let x = if v.is_empty() {
                default
            } else {
                *v.get(i).ok_or(format!("{what} must have 2 values, got {v:?}"))?
            };
            u64::try_from(x).map_err(|_| format!("{what} must be non-negative, got {v:?}"))
        };
        if a.kernel.len() != 2 {
            return Err(format!("only 2-D windows are supported, kernel is {:?}", a.kernel));
        }
        if !a.pads.is_empty() && a.pads.len() != 4 {
            return Err(format!("pads must have 4 values, got {:?}", a.pads));
        }
        let mut g = PoolGeometry {
            input,
            output: [0; 2],
            kernel: [0; 2],
            strides: [0; 2],
            dilations: [0; 2],
            pad_begin: [0; 2],
            pad_end: [0; 2],
        };
        for i in 0..2 {
            g.kernel[i] = get(a.kernel, i, 1, "kernel_shape")?;
            g.strides[i] = get(a.strides, i, 1, "strides")?;
            g.dilations[i] = get(a.dilations, i, 1, "dilations")?;
            if g.kernel[i] == 0 || g.strides[i] == 0 || g.dilations[i] == 0 {
                return Err("kernel_shape, strides and dilations must be positive".into());
            }
            let span = (g.kernel[i] - 1) * g.dilations[i] + 1;
            let (s, n) = (g.strides[i], input[i]);
            match a.auto_pad {
                AutoPad::NotSet => {
                    g.pad_begin[i] = get(a.pads, i, 0, "pads")?;
                    g.pad_end[i] = get(a.pads, i + 2, 0, "pads")?;
                    let padded = n + g.pad_begin[i] + g.pad_end[i];
                    if padded < span {
                        return Err(format!("window of extent {span} does not fit padded input of extent {padded}"));
                    }
                    let num = padded - span;
                    let mut out = if a.ceil_mode { num.div_ceil(s) } else { num / s } + 1;
                    // A window may not start inside the end padding (PyTorch and ONNX Runtime).
                    if a.ceil_mode && (out - 1) * s >= n + g.pad_begin[i] {
                        out -= 1;
                    }
                    g.output[i] = out;
                }
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = n.div_ceil(s);
                    let total = ((out - 1) * s + span).saturating_sub(n);
                    let small = total / 2;
                    let (b, e) =
                        if a.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
                    g.pad_begin[i] = b;
                    g.pad_end[i] = e;
                    g.output[i] = out;
                }
                AutoPad::Valid => {
                    if n < span {
                        return Err(format!("window of extent {span} does not fit input of extent {n}"));
                    }
                    g.output[i] = (n - span) / s + 1;
                }
            }
        }
        Ok(g)
    }
}

/// Resolves the window of an NCHW operand whose spatial dims may be symbolic, naming
/// the node on failure.
fn window_sym(node: &str, op: &'static str, x: &TensorType, a: &WindowAttrs) -> Result<Window, IrError> {
    ensure(x.shape.rank() == 4, node, op, || format!("only 2-D (NCHW) inputs are supported, got {}", x.shape))?;
    Window::resolve([&x.shape.0[2], &x.shape.0[3]], a).map_err(|m| IrError::shape(node, op, m))
}

/// Resolves the window of an NCHW operand, naming the node on failure.
fn window(node: &str, op: &'static str, x: &TensorType, a: &WindowAttrs) -> Result<PoolGeometry, IrError> {
    ensure(x.shape.rank() == 4, node, op, || format!("only 2-D (NCHW) inputs are supported, got {}", x.shape))?;
    let hw = match (&x.shape.0[2], &x.shape.0[3]) {
        (Dim::Fixed(h), Dim::Fixed(w)) => [*h, *w],
        _ => return Err(IrError::shape(node, op, format!("spatial dims must be known, got {}", x.shape))),
    };
    PoolGeometry::resolve(hw, a).map_err(|m| IrError::shape(node, op, m))
}

op! {
    /// 2-D convolution (cross-correlation) `Y[n,m] = B[m] + sum X[n,c] * W[m,c]` with
    /// groups, strides, dilations and padding; `W` is `[M, C/group, KH, KW]`. Epilogue:
    /// an optional fourth operand `R` (the result's shape, needs the bias) is added,
    /// then `act` applied: `Y = act(conv + B + R)`.
    Conv = "conv", operands 2..=4 {
        kernel_shape: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>,
        group: i64 = 1, auto_pad: AutoPad, act: Activation,
    }
}

impl Conv {
    /// Resolved window for an input `x` and weight `w` (spatial dims known).
    pub fn geometry(&self, node: &str, x: &TensorType, w: &TensorType) -> Result<PoolGeometry, IrError> {
        let (op, kernel) = (Self::INFO.mnemonic, self.kernel(node, w)?);
        window(node, op, x, &self.attrs(&kernel))
    }

    /// Resolved window for an input `x` and weight `w` whose spatial dims may be
    /// symbolic ([`Window::resolve`]).
    pub fn window(&self, node: &str, x: &TensorType, w: &TensorType) -> Result<Window, IrError> {
        let (op, kernel) = (Self::INFO.mnemonic, self.kernel(node, w)?);
        window_sym(node, op, x, &self.attrs(&kernel))
    }

    fn attrs<'a>(&'a self, kernel: &'a [i64]) -> WindowAttrs<'a> {
        WindowAttrs {
            kernel,
            strides: &self.strides,
            pads: &self.pads,
            dilations: &self.dilations,
            auto_pad: self.auto_pad,
            ceil_mode: false,
        }
    }

    /// The kernel extents, checked against the weight's.
    fn kernel(&self, node: &str, w: &TensorType) -> Result<Vec<i64>, IrError> {
        let op = Self::INFO.mnemonic;
        let wd = fixed_dims(w, node, op)?;
        ensure(wd.len() == 4, node, op, || format!("weight must be 4-D, got {}", w.shape))?;
        let kernel: Vec<i64> =
            if self.kernel_shape.is_empty() { vec![wd[2] as i64, wd[3] as i64] } else { self.kernel_shape.clone() };
        ensure(kernel == [wd[2] as i64, wd[3] as i64], node, op, || {
            format!("kernel_shape {kernel:?} disagrees with weight {}", w.shape)
        })?;
        Ok(kernel)
    }
}

impl Infer for Conv {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let (x, w) = (&inputs[0], &inputs[1]);
        let g = self.window(node, x, w)?;
        let wd = fixed_dims(w, node, op)?;
        ensure(self.group >= 1, node, op, || format!("group must be >= 1, got {}", self.group))?;
        let group = self.group as u64;
        let c = x.shape.0[1].fixed().ok_or_else(|| IrError::shape(node, op, "channel dim must be known"))?;
        ensure(c % group == 0 && wd[0] % group == 0, node, op, || {
            format!("channels {c} and filters {} must divide by group {group}", wd[0])
        })?;
        ensure(wd[1] * group == c, node, op, || {
            format!("weight {} expects {} input channels, input {} has {c}", w.shape, wd[1] * group, x.shape)
        })?;
        if let Some(b) = inputs.get(2) {
            ensure(b.shape == Shape::fixed(&[wd[0]]), node, op, || {
                format!("bias must be [{}], got {}", wd[0], b.shape)
            })?;
        }
        let [oh, ow] = g.output.clone().map(|e| Dim::from_expr(e).unwrap_or(Dim::Fixed(0)));
        let shape = Shape(vec![x.shape.0[0].clone(), Dim::Fixed(wd[0]), oh, ow]);
        if let Some(r) = inputs.get(3) {
            ensure(r.shape == shape, node, op, || format!("residual must be {shape}, got {}", r.shape))?;
        }
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}

macro_rules! pool_attrs {
    ($self:ident, $ceil:expr) => {
        WindowAttrs {
            kernel: &$self.kernel_shape,
            strides: &$self.strides,
            pads: &$self.pads,
            dilations: &$self.dilations,
            auto_pad: $self.auto_pad,
            ceil_mode: $ceil,
        }
    };
}

fn pooled(x: &TensorType, g: &Window) -> TensorType {
    let mut shape = x.shape.clone();
    for i in 0..2 {
        shape.0[2 + i] = Dim::from_expr(g.output[i].clone()).unwrap_or(Dim::Fixed(0));
    }
    TensorType { dtype: x.dtype, shape }
}

op! {
    /// Max over each window; padding never wins.
    MaxPool = "maxpool", operands 1..=1 {
        kernel_shape: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>,
        auto_pad: AutoPad, ceil_mode: bool,
    }
}

impl MaxPool {
    /// Resolved window for input `x` (spatial dims known).
    pub fn geometry(&self, node: &str, x: &TensorType) -> Result<PoolGeometry, IrError> {
        window(node, Self::INFO.mnemonic, x, &pool_attrs!(self, self.ceil_mode))
    }

    /// Resolved window for input `x`, whose spatial dims may be symbolic.
    pub fn window(&self, node: &str, x: &TensorType) -> Result<Window, IrError> {
        window_sym(node, Self::INFO.mnemonic, x, &pool_attrs!(self, self.ceil_mode))
    }
}

impl Infer for MaxPool {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        Ok(vec![pooled(&inputs[0], &self.window(node, &inputs[0])?)])
    }
}

op! {
    /// Mean over each window; with `count_include_pad` the divisor counts padding.
    AveragePool = "avgpool", operands 1..=1 {
        kernel_shape: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>,
        auto_pad: AutoPad, ceil_mode: bool, count_include_pad: bool,
    }
}

impl AveragePool {
    /// Resolved window for input `x` (spatial dims known).
    pub fn geometry(&self, node: &str, x: &TensorType) -> Result<PoolGeometry, IrError> {
        window(node, Self::INFO.mnemonic, x, &pool_attrs!(self, self.ceil_mode))
    }

    /// Resolved window for input `x`, whose spatial dims may be symbolic.
    pub fn window(&self, node: &str, x: &TensorType) -> Result<Window, IrError> {
        window_sym(node, Self::INFO.mnemonic, x, &pool_attrs!(self, self.ceil_mode))
    }
}

impl Infer for AveragePool {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        Ok(vec![pooled(&inputs[0], &self.window(node, &inputs[0])?)])
    }
}

op! {
    /// Mean over all spatial positions: `[N, C, ...] -> [N, C, 1, ...]`.
    GlobalAveragePool = "global_avgpool", operands 1..=1 {}
}

impl Infer for GlobalAveragePool {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let x = &inputs[0];
        ensure(x.shape.rank() >= 3, node, Self::INFO.mnemonic, || format!("needs rank >= 3, got {}", x.shape))?;
        let mut shape = x.shape.clone();
        for d in &mut shape.0[2..] {
            *d = Dim::Fixed(1);
        }
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}

op! {
    /// 2-D transposed convolution (the gradient of Conv): `W` is `[C, M/group, KH, KW]`;
    /// `output_shape`, when given, fixes the output size and the padding follows from it.
    ConvTranspose = "conv_transpose", operands 2..=3 {
        kernel_shape: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, group: i64 = 1,
        output_padding: Vec<i64>, output_shape: Vec<i64>, auto_pad: AutoPad,
    }
}

impl ConvTranspose {
    /// Resolved geometry: `input` is the image `[H, W]`, `output` the result's `[OH, OW]`.
    pub fn geometry(&self, node: &str, x: &TensorType, w: &TensorType) -> Result<PoolGeometry, IrError> {
        let op = Self::INFO.mnemonic;
        let xd = fixed_dims(x, node, op)?;
        let wd = fixed_dims(w, node, op)?;
        ensure(xd.len() == 4 && wd.len() == 4, node, op, || {
            format!("only 2-D inputs are supported, got {} and {}", x.shape, w.shape)
        })?;
        let get = |v: &[i64], i: usize, d: i64| -> i64 {
            if v.is_empty() {
                d
            } else {
                v.get(i).copied().unwrap_or(d)
            }
        };
        let mut g = PoolGeometry {
            input: [xd[2], xd[3]],
            output: [0; 2],
            kernel: [wd[2], wd[3]],
            strides: [0; 2],
            dilations: [0; 2],
            pad_begin: [0; 2],
            pad_end: [0; 2],
        };
        for i in 0..2 {
            let s = get(&self.strides, i, 1);
            let d = get(&self.dilations, i, 1);
            let k = get(&self.kernel_shape, i, wd[2 + i] as i64);
            ensure(s > 0 && d > 0 && k as u64 == wd[2 + i], node, op, || {
                "invalid strides, dilations or kernel_shape".into()
            })?;
            let op_pad = get(&self.output_padding, i, 0);
            let full = s * (xd[2 + i] as i64 - 1) + op_pad + (k - 1) * d + 1;
            let (pb, pe, out) =
                if !self.output_shape.is_empty() || matches!(self.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
                    let out = if self.output_shape.is_empty() {
                        xd[2 + i] as i64 * s
                    } else {
                        *self
                            .output_shape
                            .get(self.output_shape.len().saturating_sub(2) + i)
                            .ok_or_else(|| IrError::shape(node, op, "output_shape needs 2 values"))?
                    };
                    let total = (full - out).max(0);
                    if self.auto_pad == AutoPad::SameUpper {
                        (total / 2, total - total / 2, out)
                    } else {
                        (total - total / 2, total / 2, out)
                    }
                } else {
                    let (pb, pe) = (get(&self.pads, i, 0), get(&self.pads, i + 2, 0));
                    (pb, pe, full - pb - pe)
                };
            ensure(out > 0 && pb >= 0 && pe >= 0, node, op, || format!("output size {out} is not positive"))?;
            g.strides[i] = s as u64;
            g.dilations[i] = d as u64;
            g.pad_begin[i] = pb as u64;
            g.pad_end[i] = pe as u64;
            g.output[i] = out as u64;
        }
        Ok(g)
    }
}

impl ConvTranspose {
    /// Resolved geometry where the image dims may be run-time: known ones as
    /// [`ConvTranspose::geometry`] gives them; a run-time extent `H` needs padding that
    /// does not depend on it (explicit pads, or SAME, whose output is `H * s`), not an
    /// `output_shape`. Output `s * H + (output_padding + (k - 1) * d + 1 - s) - pads`.
    pub fn window(&self, node: &str, x: &TensorType, w: &TensorType) -> Result<Window, IrError> {
        let op = Self::INFO.mnemonic;
        ensure(x.shape.rank() == 4, node, op, || format!("only 2-D inputs are supported, got {}", x.shape))?;
        if x.shape.0[2..].iter().all(|d| d.fixed().is_some()) {
            let mut fixed = x.clone();
            for d in &mut fixed.shape.0[..2] {
                if d.fixed().is_none() {
                    *d = Dim::Fixed(1);
                }
            }
            return self.geometry(node, &fixed, w).map(|g| Window::from(&g));
        }
        ensure(self.output_shape.is_empty(), node, op, || {
            format!("output_shape with run-time image dims {} is not supported yet", x.shape)
        })?;
        let wd = fixed_dims(w, node, op)?;
        ensure(wd.len() == 4, node, op, || format!("weight must be 4-D, got {}", w.shape))?;
        let get = |v: &[i64], i: usize, d: i64| if v.is_empty() { d } else { v.get(i).copied().unwrap_or(d) };
        let zero = Expr::c(0);
        let mut win = Window {
            input: [x.shape.0[2].expr(), x.shape.0[3].expr()],
            output: [zero.clone(), zero],
            kernel: [wd[2], wd[3]],
            strides: [0; 2],
            dilations: [0; 2],
            pad_begin: [0; 2],
            pad_end: [0; 2],
        };
        for i in 0..2 {
            let (s, d) = (get(&self.strides, i, 1), get(&self.dilations, i, 1));
            let k = get(&self.kernel_shape, i, wd[2 + i] as i64);
            ensure(s > 0 && d > 0 && k as u64 == wd[2 + i], node, op, || {
                "invalid strides, dilations or kernel_shape".into()
            })?;
            let extra = get(&self.output_padding, i, 0) + (k - 1) * d + 1 - s;
            let (pb, pe) = if matches!(self.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
                let total = extra.max(0);
                if self.auto_pad == AutoPad::SameUpper {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            } else {
                (get(&self.pads, i, 0), get(&self.pads, i + 2, 0))
            };
            ensure(pb >= 0 && pe >= 0, node, op, || "pads must not be negative".into())?;
            win.output[i] = &win.input[i].scale(s) + &Expr::c(extra - pb - pe);
            win.strides[i] = s as u64;
            win.dilations[i] = d as u64;
            win.pad_begin[i] = pb as u64;
            win.pad_end[i] = pe as u64;
        }
        Ok(win)
    }
}

impl Infer for ConvTranspose {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let (x, w) = (&inputs[0], &inputs[1]);
        let g = self.window(node, x, w)?;
        let wd = fixed_dims(w, node, op)?;
        let c = x.shape.0[1].fixed().ok_or_else(|| IrError::shape(node, op, "channel dim must be known"))?;
        ensure(self.group >= 1 && c == wd[0] && c % self.group as u64 == 0, node, op, || {
            format!("weight {} does not fit input {} with group {}", w.shape, x.shape, self.group)
        })?;
        let m = wd[1] * self.group as u64;
        if let Some(b) = inputs.get(2) {
            ensure(b.shape == Shape::fixed(&[m]), node, op, || format!("bias must be [{m}], got {}", b.shape))?;
        }
        let out = |e: &Expr| {
            Dim::from_expr(e.clone()).ok_or_else(|| IrError::shape(node, op, format!("output size {e} is not a dim")))
        };
        let shape = Shape(vec![x.shape.0[0].clone(), Dim::Fixed(m), out(&g.output[0])?, out(&g.output[1])?]);
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}

/// How [`GridSample`] interpolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleMode {
    /// Nearest pixel (rounding half to even).
    Nearest,
    /// Bilinear.
    Linear,
    /// Bicubic (Keys, a = -0.75).
    Cubic,
}

/// How [`GridSample`] treats positions outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplePadding {
    /// Zero.
    Zeros,
    /// The nearest border pixel.
    Border,
    /// Mirrored at the borders.
    Reflection,
}

op! {
    /// Samples `X [N, C, d1..dr]` at the normalised positions of `grid [N, o1..or, r]`
    /// (x, the last dim, first; each in [-1, 1]) as ONNX GridSample: `[N, OH, OW, 2]`
    /// for images, `[N, OD, OH, OW, 3]` for volumes.
    GridSample = "grid_sample", operands 2..=2 { mode: SampleMode, padding: SamplePadding, align_corners: bool }
}

impl Infer for GridSample {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, g) = (&inputs[0], &inputs[1]);
        // The batch N may be a run-time dim (the kernel runs per sample); the rest is known.
        let (xd, gd) = (&x.shape.0, &g.shape.0);
        let r = xd.len().saturating_sub(2);
        let known = |d: &[Dim]| d.iter().all(|d| d.fixed().is_some());
        ensure(
            r >= 1
                && gd.len() == r + 2
                && gd[r + 1] == Dim::Fixed(r as u64)
                && gd[0] == xd[0]
                && known(&xd[1..])
                && known(&gd[1..]),
            node,
            op,
            || {
                format!(
                    "X {} and grid {} must be [N, C, d1..dr] and [N, o1..or, r] (r spatial dims, the same N; \
                     only N may be a run-time dim)",
                    x.shape, g.shape
                )
            },
        )?;
        let mut out = xd[..2].to_vec();
        out.extend_from_slice(&gd[1..=r]);
        Ok(vec![TensorType { dtype: x.dtype, shape: Shape(out) }])
    }
}

op! {
    /// ONNX RoiAlign (opsets 10-22): for each region `r` (`rois[r]` = x1, y1, x2, y2 in
    /// input coordinates times `spatial_scale`, on image `batch[r]`), an `oh x ow` grid of
    /// bins, each the average (or, as ONNX Runtime and the reference compute it, the
    /// largest weighted corner) of bilinear samples: `sampling_ratio` per bin side, or
    /// `ceil(region side / bins)` when 0. `half_pixel` shifts coordinates by -0.5 (opset
    /// 16's default); without it regions are at least 1x1. Operands X `[N,C,H,W]`, rois
    /// `[R,4]` of X's dtype, batch indices `[R]` (i64, within `[0, N)`).
    RoiAlign = "roi_align", operands 3..=3 {
        max: bool, half_pixel: bool, output_height: i64, output_width: i64, sampling_ratio: i64, spatial_scale: f64
    }
}

impl Infer for RoiAlign {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, rois, idx) = (&inputs[0], &inputs[1], &inputs[2]);
        ensure(x.shape.rank() == 4 && x.dtype == crate::DType::F32, node, op, || {
            format!("X must be f32 [N,C,H,W], got {x}")
        })?;
        ensure(rois.dtype == x.dtype && rois.shape.rank() == 2 && rois.shape.0[1] == Dim::Fixed(4), node, op, || {
            format!("rois must be {}[R,4], got {rois}", x.dtype)
        })?;
        ensure(
            idx.dtype == crate::DType::I64 && idx.shape.rank() == 1 && idx.shape.0[0] == rois.shape.0[0],
            node,
            op,
            || format!("batch_indices must be i64[{}], got {idx}", rois.shape.0[0]),
        )?;
        ensure(self.output_height > 0 && self.output_width > 0, node, op, || {
            format!("output size {}x{} must be positive", self.output_height, self.output_width)
        })?;
        let shape = Shape(vec![
            rois.shape.0[0].clone(),
            x.shape.0[1].clone(),
            Dim::Fixed(self.output_height as u64),
            Dim::Fixed(self.output_width as u64),
        ]);
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}

op! {
    /// ONNX Col2Im with its shapes given at run time: the blocks of `x` `[N, C * prod(block),
    /// L]` summed into images `[N, C, image...]`. `image` and `block` are `;`-separated dim
    /// expressions (computed dims the importer binds from the operands' values, which it
    /// checks); `dilations` and `strides` one per spatial dim, `pads` begins then ends.
    /// Block `(k...)` of column `l` (its position `(b...)` in the grid of blocks, row-major)
    /// lands at `b * stride - pad_begin + k * dilation`.
    Col2Im = "col2im", operands 1..=1 {
        image: String, block: String, dilations: Vec<i64>, pads: Vec<i64>, strides: Vec<i64>
    }
}

impl Col2Im {
    /// `image` and `block` as expressions (`None` when one does not parse or their
    /// counts differ).
    pub fn extents(&self) -> Option<(Vec<Expr>, Vec<Expr>)> {
        let parse = |s: &str| -> Option<Vec<Expr>> { s.split(';').map(|e| dlc_sym::parse(e.trim()).ok()).collect() };
        let (i, b) = (parse(&self.image)?, parse(&self.block)?);
        (i.len() == b.len() && !i.is_empty()).then_some((i, b))
    }

    /// The number of blocks along each spatial dim: `(image + pads - dilation * (block - 1)
    /// - 1) / stride + 1`.
    pub fn grid(&self, image: &[Expr], block: &[Expr]) -> Vec<Expr> {
        let r = image.len();
        (0..r)
            .map(|d| {
                let span = &(&(&image[d] + &Expr::c(self.pads[d] + self.pads[d + r]))
                    - &(&(&block[d] - &Expr::c(1)) * &Expr::c(self.dilations[d])))
                    - &Expr::c(1);
                &span.floor_div(&Expr::c(self.strides[d])) + &Expr::c(1)
            })
            .collect()
    }
}

impl Infer for Col2Im {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        ensure(x.shape.rank() == 3 && x.dtype == crate::DType::F32, node, op, || {
            format!("the input must be f32 [N, C*prod(block), L], got {x}")
        })?;
        let (image, block) = self
            .extents()
            .ok_or_else(|| IrError::shape(node, op, format!("bad image '{}' or block '{}'", self.image, self.block)))?;
        let r = image.len();
        ensure(
            self.dilations.len() == r
                && self.strides.len() == r
                && self.pads.len() == 2 * r
                && self.dilations.iter().chain(&self.strides).all(|&v| v > 0)
                && self.pads.iter().all(|&v| v >= 0),
            node,
            op,
            || {
                format!(
                    "dilations {:?}, strides {:?} and pads {:?} do not fit {r} dims",
                    self.dilations, self.strides, self.pads
                )
            },
        )?;
        let prod = block.iter().fold(Expr::c(1), |a, b| &a * b);
        let c = x.shape.0[1].expr().floor_div(&prod);
        let mut shape = vec![x.shape.0[0].clone()];
        for e in std::iter::once(c).chain(image) {
            shape.push(Dim::from_expr(e.clone()).ok_or_else(|| IrError::shape(node, op, format!("{e} is not a dim")))?);
        }
        Ok(vec![TensorType { dtype: x.dtype, shape: Shape(shape) }])
    }
}

op! {
    /// The windows of a 2-D convolution over a u8 NCHW tensor `X`, one row each (im2col):
    /// row `(n, oy, ox)` holds the window's taps in the weights' order `(c, ky, kx)`, and
    /// a tap in the padding holds the second operand, a u8 scalar (the codes' zero
    /// point, so padding is 0 once centred). The result is u8 `[N * OH * OW, C * KH *
    /// KW]`: its product with the weights as `[C * KH * KW, M]` (`int_matmul`) is the
    /// convolution, pixels by channels. `kernel_shape` is required (there are no weights
    /// to take it from); the spatial dims may be run-time ones. With `channels_last`
    /// the input is NHWC and each row's taps are in the order `(ky, kx, c)` (each tap's
    /// channels one contiguous run of the input). `row_pad` more bytes of the padding
    /// value end each row (so its length is a multiple of 4, as `int_matmul` reads it;
    /// they add nothing to the product, being the zero point).
    Patches = "patches", operands 2..=2 {
        kernel_shape: Vec<i64>, strides: Vec<i64>, pads: Vec<i64>, dilations: Vec<i64>, auto_pad: AutoPad,
        channels_last: bool, row_pad: i64,
    }
}

impl Patches {
    /// Resolved window for input `x`, whose spatial dims may be symbolic.
    pub fn window(&self, node: &str, x: &TensorType) -> Result<Window, IrError> {
        let a = WindowAttrs {
            kernel: &self.kernel_shape,
            strides: &self.strides,
            pads: &self.pads,
            dilations: &self.dilations,
            auto_pad: self.auto_pad,
            ceil_mode: false,
        };
        if !self.channels_last || x.shape.rank() != 4 {
            return window_sym(node, Self::INFO.mnemonic, x, &a);
        }
        let d = &x.shape.0;
        let nchw =
            TensorType { dtype: x.dtype, shape: Shape(vec![d[0].clone(), d[3].clone(), d[1].clone(), d[2].clone()]) };
        window_sym(node, Self::INFO.mnemonic, &nchw, &a)
    }

    /// The channel dim of input `x` (NCHW or, with `channels_last`, NHWC).
    pub fn channels(&self, x: &TensorType) -> Option<u64> {
        x.shape.0.get(if self.channels_last { 3 } else { 1 })?.fixed()
    }
}

impl Infer for Patches {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, pad) = (&inputs[0], &inputs[1]);
        ensure(
            x.dtype == crate::DType::U8 && pad.dtype == crate::DType::U8 && pad.shape.numel() == Some(1),
            node,
            op,
            || format!("needs a u8 input and one u8 padding value, got {x} and {pad}"),
        )?;
        ensure(self.kernel_shape.len() == 2 && self.kernel_shape.iter().all(|&k| k >= 1), node, op, || {
            format!("kernel_shape must be two positive extents, got {:?}", self.kernel_shape)
        })?;
        let g = self.window(node, x)?;
        let c = self.channels(x).ok_or_else(|| IrError::shape(node, op, "channel dim must be known"))?;
        ensure((0..4).contains(&self.row_pad), node, op, || format!("row_pad must be 0 to 3, got {}", self.row_pad))?;
        let rows = &(&x.shape.0[0].expr() * &g.output[0]) * &g.output[1];
        let rows = Dim::from_expr(rows).ok_or_else(|| IrError::shape(node, op, "the window count is not a dim"))?;
        Ok(vec![TensorType {
            dtype: crate::DType::U8,
            shape: Shape(vec![rows, Dim::Fixed(c * g.kernel[0] * g.kernel[1] + self.row_pad as u64)]),
        }])
    }
}
