//! Data movement: ops that copy or reinterpret elements without arithmetic.
use super::{ensure, fixed_dims, normalize_axis, same_dtype, Infer, OpMeta};
use crate::{op, DType, Dim, IrError, Shape, TensorType};

op! {
    /// Reinterprets the elements with a new shape. `shape` follows ONNX: `0` copies the
    /// input dim (unless `allowzero`), one `-1` is inferred.
    Reshape = "reshape", operands 1..=1 { shape: Vec<i64>, allowzero: bool }
}

impl Infer for Reshape {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        let mut dims: Vec<Option<Dim>> = Vec::with_capacity(self.shape.len());
        let mut infer_at = None;
        for (i, &s) in self.shape.iter().enumerate() {
            match s {
                -1 => {
                    ensure(infer_at.is_none(), node, op, || format!("shape {:?} has more than one -1", self.shape))?;
                    infer_at = Some(i);
                    dims.push(None);
                }
                0 if !self.allowzero => {
                    let d = x.shape.0.get(i).ok_or_else(|| {
                        IrError::shape(node, op, format!("shape {:?} copies dim {i} of {}", self.shape, x.shape))
                    })?;
                    dims.push(Some(d.clone()));
                }
                s if s >= 0 => dims.push(Some(Dim::Fixed(s as u64))),
                s => return Err(IrError::shape(node, op, format!("invalid extent {s} in shape {:?}", self.shape))),
            }
        }
        let total = x.shape.numel();
        if let Some(at) = infer_at {
            let known_dim = Dim::product(dims.iter().flatten());
            if let (Some(total), Some(known)) = (total, known_dim.fixed()) {
                ensure(known != 0 && total % known == 0, node, op, || {
                    format!("cannot reshape {} ({total} elements) to {:?}", x.shape, self.shape)
                })?;
                dims[at] = Some(Dim::Fixed(total / known));
            } else {
                // Symbolic: the quotient must simplify exactly.
                let known: Vec<Dim> = dims.iter().flatten().cloned().collect();
                let d = Dim::quotient(&x.shape.0, &known).ok_or_else(|| {
                    IrError::shape(node, op, format!("cannot infer -1 in {:?} from {}", self.shape, x.shape))
                })?;
                dims[at] = Some(d);
            }
        }
        let shape = Shape(dims.into_iter().map(|d| d.expect("every dim resolved")).collect());
        if let (Some(a), Some(b)) = (total, shape.numel()) {
            ensure(a == b, node, op, || {
                format!("cannot reshape {} ({a} elements) to {shape} ({b} elements)", x.shape)
            })?;
        } else {
            let (a, b) = (Dim::product(&x.shape.0), Dim::product(&shape.0));
            ensure(a == b, node, op, || {
                format!("cannot reshape {} ({a} elements) to {shape} ({b} elements)", x.shape)
            })?;
        }
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}

op! {
    /// Reshapes to 2-D: dims before `axis` multiply into the first, the rest into the second.
    Flatten = "flatten", operands 1..=1 { axis: i64 = 1 }
}

impl Infer for Flatten {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        let r = x.shape.rank() as i64;
        let axis = if self.axis < 0 { self.axis + r } else { self.axis };
        ensure((0..=r).contains(&axis), node, op, || format!("axis {} out of range for {}", self.axis, x.shape))?;
        let (a, b) = x.shape.0.split_at(axis as usize);
        Ok(vec![TensorType { dtype: x.dtype, shape: Shape(vec![Dim::product(a), Dim::product(b)]) }])
    }
}

op! {
    /// Permutes dims: output dim `i` is input dim `perm[i]` (empty: reverse).
    Transpose = "transpose", operands 1..=1 { perm: Vec<i64> }
}

impl Transpose {
    /// The permutation, with the empty default expanded.
    pub fn resolved_perm(&self, rank: usize) -> Vec<usize> {
        if self.perm.is_empty() {
            (0..rank).rev().collect()
        } else {
            self.perm.iter().map(|&p| p as usize).collect()
        }
    }
}

/// One permutation for `first` then `then` (both in [`Transpose`]'s sense, `out[i] =
/// in[p[i]]`): `out[i] = x[first[then[i]]]`.
pub fn compose_perms(first: &[usize], then: &[usize]) -> Vec<usize> {
    then.iter().map(|&i| first[i]).collect()
}

/// Whether permutation `p` moves nothing.
pub fn is_identity_perm(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &x)| i == x)
}

/// The permutation that undoes `p`.
pub fn inverse_perm(p: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; p.len()];
    for (i, &x) in p.iter().enumerate() {
        inv[x] = i;
    }
    inv
}

impl Infer for Transpose {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let x = &inputs[0];
        let rank = x.shape.rank();
        let perm = self.resolved_perm(rank);
        let mut seen = vec![false; rank];
        let valid = perm.len() == rank
            && self.perm.iter().all(|&p| p >= 0)
            && perm.iter().all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
        ensure(valid, node, Self::INFO.mnemonic, || {
            format!("perm {:?} is not a permutation of rank {rank}", self.perm)
        })?;
        Ok(vec![TensorType { dtype: x.dtype, shape: Shape(perm.iter().map(|&p| x.shape.0[p].clone()).collect()) }])
    }
}

op! {
    /// Reinterprets its operand's bytes as elements of `to` (ONNX BitCast): the same
    /// shape and element size, the bits unchanged (little-endian).
    BitCast = "bitcast", operands 1..=1 { to: DType }
}

impl Infer for BitCast {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let x = &inputs[0];
        // Sub-byte types are stored extended to a byte: their bits are not the byte's.
        let bytes = |d: DType| (d.narrow_int_bits().is_none() && d != DType::F4E2M1).then_some(d.size());
        ensure(bytes(x.dtype).is_some() && bytes(x.dtype) == bytes(self.to), node, Self::INFO.mnemonic, || {
            format!("cannot reinterpret {} as {}: the bit widths differ or are below 8", x.dtype, self.to)
        })?;
        Ok(vec![TensorType { dtype: self.to, shape: x.shape.clone() }])
    }
}

op! {
    /// Returns its operand.
    Identity = "identity", operands 1..=1 {}
}

impl Infer for Identity {
    fn infer(&self, _: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        Ok(vec![inputs[0].clone()])
    }
}

op! {
    /// Joins operands along `axis`; all other dims must agree.
    Concat = "concat", operands 1..=4096 { axis: i64 }
}

impl Infer for Concat {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let first = &inputs[0];
        let rank = first.shape.rank();
        let axis = normalize_axis(self.axis, rank)
            .filter(|_| rank > 0)
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {}", self.axis, first.shape)))?;
        let mut shape = first.shape.clone();
        for t in inputs {
            ensure(t.shape.rank() == rank, node, op, || {
                format!("operand ranks differ: {} and {}", first.shape, t.shape)
            })?;
            for (i, (a, b)) in t.shape.0.iter().zip(&first.shape.0).enumerate() {
                // Run-time dims that differ as expressions must be equal when the model
                // runs (`crate::implied::constraints` records it; dlc-runtime checks
                // it); the result takes a fixed extent where one operand has it.
                let _ = b;
                let b = &shape.0[i];
                let fixed_pair = a.fixed().is_some() && b.fixed().is_some();
                ensure(i == axis || a == b || !fixed_pair, node, op, || {
                    format!("operands {} and {} differ outside axis {axis}", first.shape, t.shape)
                })?;
                if i != axis && a.fixed().is_some() {
                    shape.0[i] = a.clone();
                }
            }
        }
        shape.0[axis] = Dim::sum(inputs.iter().map(|t| &t.shape.0[axis]));
        Ok(vec![TensorType { dtype: first.dtype, shape }])
    }
}

op! {
    /// Takes slices of `data` along `axis` at `indices` (negative indices count from the
    /// end; kernels clamp out-of-range ones, and dlc-lower checks the values first, see
    /// [`crate::ops::index_operand`]): the result's shape is
    /// `data[..axis] + indices + data[axis+1..]`.
    Gather = "gather", operands 2..=2 { axis: i64 }
}

impl Infer for Gather {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (data, idx) = (&inputs[0], &inputs[1]);
        ensure(matches!(idx.dtype, crate::DType::I32 | crate::DType::I64), node, op, || {
            format!("indices must be i32 or i64, got {}", idx.dtype)
        })?;
        let a = normalize_axis(self.axis, data.shape.rank())
            .filter(|_| data.shape.rank() > 0)
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {}", self.axis, data.shape)))?;
        let mut dims = data.shape.0[..a].to_vec();
        dims.extend(idx.shape.0.iter().cloned());
        dims.extend(data.shape.0[a + 1..].iter().cloned());
        Ok(vec![TensorType { dtype: data.dtype, shape: Shape(dims) }])
    }
}

op! {
    /// A strided window of the operand: along `axes[i]`, elements
    /// `starts[i], starts[i] + steps[i], ...` stopping before `ends[i]` (ONNX Slice with
    /// constant parameters; negative values count from the end and are clamped as ONNX
    /// specifies).
    Slice = "slice", operands 1..=1 { starts: Vec<i64>, ends: Vec<i64>, axes: Vec<i64>, steps: Vec<i64> }
}

impl Slice {
    /// [`Slice::resolve`] over dims that may be run-time ones: an axis the slice does
    /// not touch keeps its dim (first index 0, step 1); a sliced axis must be known.
    pub fn resolve_dims(&self, dims: &[Dim]) -> Result<Vec<(i64, i64, Dim)>, String> {
        let r = dims.len();
        let mut sliced = vec![false; r];
        for (i, _) in self.starts.iter().enumerate() {
            let axis = if self.axes.is_empty() { i as i64 } else { self.axes.get(i).copied().unwrap_or(i as i64) };
            if let Some(a) = normalize_axis(axis, r).filter(|_| r > 0) {
                sliced[a] = true;
            }
        }
        for (a, d) in dims.iter().enumerate() {
            if sliced[a] && d.fixed().is_none() {
                return Err(format!("slicing the run-time dim {d} (axis {a}) is not supported yet"));
            }
        }
        // Untouched run-time dims stand in as 1 (their result is (0, 1, 1)), then come back.
        let known: Vec<u64> = dims.iter().map(|d| d.fixed().unwrap_or(1)).collect();
        let out = self.resolve(&known)?;
        Ok(out
            .into_iter()
            .zip(dims)
            .map(|((start, step, count), d)| match d {
                Dim::Fixed(_) => (start, step, Dim::Fixed(count)),
                Dim::Sym(_) => (start, step, d.clone()),
            })
            .collect())
    }

    /// Per dim of an operand with `dims`: (first index, step, count).
    pub fn resolve(&self, dims: &[u64]) -> Result<Vec<(i64, i64, u64)>, String> {
        let r = dims.len();
        let mut out: Vec<(i64, i64, u64)> = dims.iter().map(|&d| (0, 1, d)).collect();
        let n = self.starts.len();
        if self.ends.len() != n
            || (!self.axes.is_empty() && self.axes.len() != n)
            || (!self.steps.is_empty() && self.steps.len() != n)
        {
            return Err("starts, ends, axes and steps must have the same length".into());
        }
        let mut seen = vec![false; r];
        for i in 0..n {
            let axis = if self.axes.is_empty() { i as i64 } else { self.axes[i] };
            let a = normalize_axis(axis, r).filter(|_| r > 0).ok_or(format!("axis {axis} out of range"))?;
            if std::mem::replace(&mut seen[a], true) {
                return Err(format!("axis {axis} repeated"));
            }
            let step = if self.steps.is_empty() { 1 } else { self.steps[i] };
            if step == 0 {
                return Err("steps must be non-zero".into());
            }
            let d = dims[a] as i64;
            let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
            let (start, end) = (fix(self.starts[i]), fix(self.ends[i]));
            let (start, end) = if step > 0 {
                (start.clamp(0, d), end.clamp(0, d))
            } else {
                (start.clamp(0, d - 1), end.clamp(-1, d - 1))
            };
            let count = if step > 0 {
                if end > start {
                    (end - start + step - 1) / step
                } else {
                    0
                }
            } else if start > end {
                (start - end + (-step) - 1) / (-step)
            } else {
                0
            };
            out[a] = (start, step, count.max(0) as u64);
        }
        Ok(out)
    }
}

impl Infer for Slice {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let x = &inputs[0];
        let r = self.resolve_dims(&x.shape.0).map_err(|m| IrError::shape(node, Self::INFO.mnemonic, m))?;
        Ok(vec![TensorType { dtype: x.dtype, shape: Shape(r.into_iter().map(|t| t.2).collect()) }])
    }
}

op! {
    /// Keeps the upper (or lower) triangle of the last two dims: element (i, j) survives
    /// when `j - i >= k` (upper) or `j - i <= k` (lower); `k` is an optional i64 scalar
    /// operand (default 0).
    Trilu = "trilu", operands 1..=2 { upper: bool = true }
}

impl Infer for Trilu {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let x = &inputs[0];
        ensure(x.shape.rank() >= 2, node, Self::INFO.mnemonic, || format!("needs rank >= 2, got {}", x.shape))?;
        if let Some(k) = inputs.get(1) {
            ensure(k.dtype == crate::DType::I64 && k.shape.numel() == Some(1), node, Self::INFO.mnemonic, || {
                format!("k must be an i64 scalar, got {k}")
            })?;
        }
        Ok(vec![x.clone()])
    }
}

op! {
    /// `out[...i...] = data[...indices[...i...]...]` along `axis` (ONNX GatherElements);
    /// indices are wrapped when negative and clamped into range (and checked first, see
    /// [`crate::ops::index_operand`]).
    GatherElements = "gather_elements", operands 2..=2 { axis: i64 }
}

impl Infer for GatherElements {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (data, idx) = (&inputs[0], &inputs[1]);
        ensure(matches!(idx.dtype, crate::DType::I32 | crate::DType::I64), node, op, || {
            format!("indices must be i32 or i64, got {}", idx.dtype)
        })?;
        ensure(data.shape.rank() == idx.shape.rank() && data.shape.rank() > 0, node, op, || {
            format!("data {} and indices {} must have the same rank", data.shape, idx.shape)
        })?;
        ensure(normalize_axis(self.axis, data.shape.rank()).is_some(), node, op, || {
            format!("axis {} out of range", self.axis)
        })?;
        Ok(vec![TensorType { dtype: data.dtype, shape: idx.shape.clone() }])
    }
}

/// How [`Pad`] fills positions outside the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge element.
    Edge,
    /// Wrap around.
    Wrap,
}

op! {
    /// Pads (or, with negative amounts, crops) every dim: `pads` is
    /// `[begin_0, ..., begin_n, end_0, ..., end_n]`. `exprs`, when not empty, gives them
    /// instead as `;`-separated dim expressions (pads known only at run time: computed
    /// dims, at least 0), and `pads` is empty.
    Pad = "pad", operands 1..=1 { pads: Vec<i64>, mode: PadMode, value: f64, exprs: String = String::new() }
}

impl Pad {
    /// Constant pads.
    pub fn new(pads: Vec<i64>, mode: PadMode, value: f64) -> Pad {
        Pad { pads, mode, value, exprs: String::new() }
    }

    /// The begin and end amounts as expressions (`None` when `exprs` does not parse).
    pub fn amounts(&self) -> Option<Vec<crate::Expr>> {
        if self.exprs.trim().is_empty() {
            return Some(self.pads.iter().map(|&p| crate::Expr::c(p)).collect());
        }
        self.exprs.split(';').map(|e| dlc_sym::parse(e.trim()).ok()).collect()
    }
}

impl Infer for Pad {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        let r = x.shape.rank();
        if !self.exprs.trim().is_empty() {
            // Computed amounts: every dim grows by its begin and end.
            let a = self.amounts().ok_or_else(|| IrError::shape(node, op, format!("'{}' are not pads", self.exprs)))?;
            ensure(a.len() == 2 * r && self.pads.is_empty(), node, op, || {
                format!("pads '{}' must have {} values", self.exprs, 2 * r)
            })?;
            let out = (0..r)
                .map(|i| {
                    Dim::from_expr(&(&x.shape.0[i].expr() + &a[i]) + &a[i + r])
                        .ok_or_else(|| IrError::shape(node, op, format!("dim {i} padded is not a dim")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(vec![TensorType { dtype: x.dtype, shape: Shape(out) }]);
        }
        ensure(self.pads.len() == 2 * r, node, op, || format!("pads {:?} must have {} values", self.pads, 2 * r))?;
        if !x.shape.is_fixed() {
            // Run-time dims: each grows by its (constant) pads; a run-time dim cannot be
            // cropped (its extent might go below zero).
            let mut out = Vec::with_capacity(r);
            for (i, d) in x.shape.0.iter().enumerate() {
                let (a, b) = (self.pads[i], self.pads[i + r]);
                let dim = match d.fixed() {
                    Some(v) => {
                        let n = v as i64 + a + b;
                        ensure(n >= 0, node, op, || {
                            format!("pads {:?} crop dim {i} of {} below zero", self.pads, x.shape)
                        })?;
                        Dim::Fixed(n as u64)
                    }
                    None => {
                        ensure(a >= 0 && b >= 0, node, op, || {
                            format!("negative pads {:?} on run-time dim {d} are not supported yet", self.pads)
                        })?;
                        Dim::from_expr(&d.expr() + &crate::Expr::c(a + b))
                            .ok_or_else(|| IrError::shape(node, op, format!("dim {d} padded is not a dim")))?
                    }
                };
                out.push(dim);
            }
            return Ok(vec![TensorType { dtype: x.dtype, shape: Shape(out) }]);
        }
        let d = fixed_dims(x, node, op)?;
        let mut out = Vec::with_capacity(r);
        for (i, &di) in d.iter().enumerate() {
            let n = di as i64 + self.pads[i] + self.pads[i + r];
            ensure(n >= 0, node, op, || format!("pads {:?} crop dim {i} of {} below zero", self.pads, x.shape))?;
            ensure(n == 0 || di > 0 || self.mode == PadMode::Constant, node, op, || {
                format!("mode {:?} cannot pad an empty dim", self.mode)
            })?;
            out.push(n as u64);
        }
        Ok(vec![TensorType::fixed(x.dtype, &out)])
    }
}

/// How scattered updates combine with the existing element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScatterReduction {
    /// Replace (later updates win).
    None,
    /// Add.
    Add,
    /// Multiply.
    Mul,
    /// Keep the maximum.
    Max,
    /// Keep the minimum.
    Min,
}

fn check_indices(t: &TensorType, node: &str, op: &'static str) -> Result<(), IrError> {
    ensure(matches!(t.dtype, crate::DType::I32 | crate::DType::I64), node, op, || {
        format!("indices must be i32 or i64, got {}", t.dtype)
    })
}

op! {
    /// A copy of `data` where, for every position of `indices`, the element at that
    /// position with the axis coordinate replaced by the index receives the update
    /// (ONNX ScatterElements). Out-of-range indices are clamped (and checked first, see
    /// [`crate::ops::index_operand`]).
    ScatterElements = "scatter_elements", operands 3..=3 { axis: i64, reduction: ScatterReduction }
}

impl Infer for ScatterElements {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (data, idx, upd) = (&inputs[0], &inputs[1], &inputs[2]);
        check_indices(idx, node, op)?;
        ensure(
            idx.shape == upd.shape && idx.shape.rank() == data.shape.rank() && upd.dtype == data.dtype,
            node,
            op,
            || format!("indices {} and updates {} must match, with the rank of data {}", idx.shape, upd, data.shape),
        )?;
        ensure(normalize_axis(self.axis, data.shape.rank()).is_some(), node, op, || {
            format!("axis {} out of range", self.axis)
        })?;
        Ok(vec![data.clone()])
    }
}

op! {
    /// A copy of `data` where each index tuple in the last dim of `indices` selects an
    /// element or slice that receives the matching slice of `updates` (ONNX ScatterND).
    /// Out-of-range indices are clamped (and checked first, see
    /// [`crate::ops::index_operand`]).
    ScatterND = "scatter_nd", operands 3..=3 { reduction: ScatterReduction }
}

impl Infer for ScatterND {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (data, idx, upd) = (&inputs[0], &inputs[1], &inputs[2]);
        check_indices(idx, node, op)?;
        // Run-time dims anywhere but the tuple length (Swin's shifted-window mask: slices
        // of a mask of the padded image's size).
        let (id, dd) = (&idx.shape.0, &data.shape.0);
        let k = id
            .last()
            .ok_or_else(|| IrError::shape(node, op, "indices must have rank >= 1"))?
            .fixed()
            .ok_or_else(|| IrError::shape(node, op, format!("the index tuples' length must be known, got {idx}")))?
            as usize;
        ensure(k <= dd.len(), node, op, || format!("index tuples of length {k} exceed the rank of {}", data.shape))?;
        let mut want: Vec<Dim> = id[..id.len() - 1].to_vec();
        want.extend(dd[k..].iter().cloned());
        // Equal extents, or (run-time ones that differ as expressions) equal when the
        // model runs (`crate::implied::constraints`).
        let agree = upd.shape.rank() == want.len()
            && upd.shape.0.iter().zip(&want).all(|(u, w)| u == w || u.fixed().is_none() || w.fixed().is_none());
        ensure(agree && upd.dtype == data.dtype, node, op, || {
            format!("updates must be {}{}, got {upd}", data.dtype, Shape(want.clone()))
        })?;
        Ok(vec![data.clone()])
    }
}

op! {
    /// Binds dims computed at run time from the values of its second operand (an `i64`
    /// vector: a Reshape target, reduction or Squeeze/Unsqueeze axes) by `rule` (a
    /// [`crate::bind::BindRule`] name) to the symbols `syms` (space-separated), and
    /// reinterprets its first operand's elements (row-major, unchanged) with those
    /// symbols as dims. A run whose values break the rule fails with the rule's reason.
    /// For a rule that reshapes, an entry of `syms` may be a number instead: that dim is
    /// the number (the values must give it; the rule's kernel checks them), so a tensor
    /// with run-time dims can be given a fixed shape checked when the model runs; or
    /// `=EXPR`, an expression (no spaces) of dims bound before it, such as the model's
    /// input dims (`=height`), with rule `dims` (the dims it must have, checked).
    Bind = "bind", operands 2..=2 { rule: String, syms: String }
}

impl Bind {
    /// Its entries, in order (the result's dims): symbol names, or numbers or
    /// expressions (see above).
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.syms.split_whitespace()
    }

    /// The symbols it binds, in order (its entries but the numbers and expressions).
    pub fn symbols(&self) -> impl Iterator<Item = &str> {
        self.entries().filter(|s| Self::fixed_entry(s).is_none())
    }

    /// The dim an entry that binds no symbol gives (a number, or `=EXPR`); `None` for
    /// a symbol name (or an expression that does not parse, which `infer` refuses).
    pub fn fixed_entry(s: &str) -> Option<Dim> {
        match s.strip_prefix('=') {
            Some(e) => dlc_sym::parse(e).ok().and_then(Dim::from_expr),
            None => s.parse::<u64>().ok().map(Dim::Fixed),
        }
    }

    /// The entry that says a dim is `d` without binding a symbol (a number, or `=EXPR`).
    pub fn entry_of(d: &Dim) -> String {
        match d.fixed() {
            Some(n) => n.to_string(),
            None => format!("={}", d.expr().to_string().replace(' ', "")),
        }
    }

    /// Its rule (`None` for an unknown name, which `infer` refuses).
    pub fn bind_rule(&self) -> Option<crate::bind::BindRule> {
        crate::bind::BindRule::parse(&self.rule)
    }
}

impl Infer for Bind {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let rule = self.bind_rule().ok_or_else(|| IrError::shape(node, op, format!("unknown rule '{}'", self.rule)))?;
        let t = &inputs[1];
        let m = match (t.dtype, t.shape.0.as_slice()) {
            (crate::DType::I64, [Dim::Fixed(m)]) => *m as usize,
            _ => {
                return Err(IrError::shape(
                    node,
                    op,
                    format!("the shape operand must be a fixed-length i64 vector, got {t}"),
                ))
            }
        };
        let syms: Vec<&str> = self.entries().collect();
        let n = inputs[0].shape.rank();
        ensure(rule.count(n, m) == Some(syms.len()), node, op, || {
            format!(
                "rule {} binds {:?} dims for rank {n} and {m} values, {} symbols given",
                self.rule,
                rule.count(n, m),
                syms.len()
            )
        })?;
        let fixed = |s: &str| Bind::fixed_entry(s).filter(|_| rule.reshapes());
        for s in &syms {
            ensure(dlc_sym::is_symbol_name(s) || fixed(s).is_some(), node, op, || {
                format!("'{s}' is not a symbol name")
            })?;
        }
        if !rule.reshapes() {
            return Ok(vec![inputs[0].clone()]);
        }
        let dims = syms.iter().map(|s| fixed(s).unwrap_or_else(|| Dim::sym(*s))).collect();
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape: Shape(dims) }])
    }
}

op! {
    /// The indices of the operand's nonzero elements (NaN counts as nonzero), row-major
    /// order, as `i64[rank, count]`; `count` is a symbol a [`Bind`] (rule `count`) bound
    /// to how many there are.
    NonZero = "nonzero", operands 1..=1 { count: String }
}

impl Infer for NonZero {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let r = inputs[0].shape.rank();
        ensure(r > 0, node, op, || "needs an operand of rank 1 or more".into())?;
        ensure(dlc_sym::is_symbol_name(&self.count), node, op, || format!("'{}' is not a symbol name", self.count))?;
        Ok(vec![TensorType {
            dtype: crate::DType::I64,
            shape: Shape(vec![Dim::Fixed(r as u64), Dim::sym(&self.count)]),
        }])
    }
}

op! {
    /// ONNX NonMaxSuppression's selection, before its result is cut to size: operands
    /// boxes `f32[B, N, 4]`, scores `f32[B, C, N]`, max_output_boxes_per_class (`i64`,
    /// one element), iou_threshold and score_threshold (`f32`, one element each; `-inf`
    /// when the model gives none). Results: `i64[B * C * N, 3]` whose first `count` rows
    /// are the selected `(batch, class, box)` triples in ONNX's order, and `count`
    /// (`i64[1]`). A [`Bind`] (rule `count`) and a [`Strided`] window give ONNX's
    /// `[count, 3]` result.
    Nms = "nms", operands 5..=5 { center_point_box: bool }
}

impl Infer for Nms {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (bx, sc) = (&inputs[0], &inputs[1]);
        // The box count may be a run-time dim (boxes a TopK counted).
        let (bd, sd) = (&bx.shape.0, &sc.shape.0);
        let fits = bd.len() == 3 && bd[2] == Dim::Fixed(4) && sd.len() == 3 && sd[0] == bd[0] && sd[2] == bd[1];
        ensure(fits, node, op, || format!("boxes {bx} and scores {sc} do not match ([B, N, 4] and [B, C, N])"))?;
        let floats = [0, 1, 3, 4].iter().all(|&i| inputs[i].dtype == DType::F32) && inputs[2].dtype == DType::I64;
        ensure(floats, node, op, || "boxes, scores and thresholds must be f32, the box count i64".into())?;
        let one = [2, 3, 4].iter().all(|&i| inputs[i].shape.numel() == Some(1));
        ensure(one, node, op, || "max_output_boxes_per_class and the thresholds must hold one value each".into())?;
        let rows = Dim::product(sd.iter());
        Ok(vec![
            TensorType { dtype: DType::I64, shape: Shape(vec![rows, Dim::Fixed(3)]) },
            TensorType::fixed(DType::I64, &[1]),
        ])
    }
}

op! {
    /// ONNX Unique's work before its results are cut to size: the distinct slices of `x`
    /// along `axis` (compared element by element; ascending in lexicographic order when
    /// `sorted`, else in order of first occurrence). Results, for `n` slices: `x`'s shape
    /// whose first `count` slices are the distinct ones, `i64[n]` whose first `count`
    /// entries are their first indices, `i64[n]` inverse indices (each slice's place among
    /// the distinct ones), `i64[n]` whose first `count` entries are their counts, and
    /// `count` (`i64[1]`). Binds (rule `count`) and windows give ONNX's results.
    Unique = "unique", operands 1..=1 { axis: i64, sorted: bool }
}

impl Infer for Unique {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        let dims =
            x.shape.as_fixed().ok_or_else(|| IrError::shape(node, op, format!("needs a known shape, got {x}")))?;
        let a = normalize_axis(self.axis, dims.len())
            .filter(|_| !dims.is_empty())
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {x}", self.axis)))?;
        let n = dims[a];
        let v = TensorType::fixed(DType::I64, &[n]);
        Ok(vec![x.clone(), v.clone(), v.clone(), v, TensorType::fixed(DType::I64, &[1])])
    }
}

op! {
    /// ONNX Compress: the slices of `x` along `axis` whose entry of the boolean vector
    /// `condition` is true (entries past the axis's extent are ignored), in order;
    /// `count` is a symbol a [`Bind`] (rule `count`) bound to how many there are.
    Compress = "compress", operands 2..=2 { axis: i64, count: String }
}

impl Infer for Compress {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let (x, c) = (&inputs[0], &inputs[1]);
        let a = normalize_axis(self.axis, x.shape.rank())
            .filter(|_| x.shape.rank() > 0)
            .ok_or_else(|| IrError::shape(node, op, format!("axis {} out of range for {}", self.axis, x.shape)))?;
        ensure(c.dtype == crate::DType::Bool && c.shape.rank() == 1, node, op, || {
            format!("the condition must be a bool vector, got {c}")
        })?;
        ensure(dlc_sym::is_symbol_name(&self.count), node, op, || format!("'{}' is not a symbol name", self.count))?;
        let mut shape = x.shape.clone();
        shape.0[a] = Dim::sym(&self.count);
        Ok(vec![TensorType { dtype: x.dtype, shape }])
    }
}

op! {
    /// Reads a strided window of its operand: along axis `i`, `counts[i]` elements from
    /// index `starts[i]` in steps of `steps[i]` (each list `;`-separated dim
    /// expressions, typically symbols a [`Bind`] computed from run-time Slice or Split
    /// operands). The indices must lie in the operand (the Bind's rule checks it).
    Strided = "strided", operands 1..=1 { counts: String, starts: String, steps: String }
}

impl Strided {
    /// Its three lists as expressions (`None` when one does not parse).
    pub fn exprs(&self) -> Option<[Vec<crate::Expr>; 3]> {
        let list = |s: &str| -> Option<Vec<crate::Expr>> {
            s.split(';').filter(|x| !x.trim().is_empty()).map(|x| dlc_sym::parse(x.trim()).ok()).collect()
        };
        Some([list(&self.counts)?, list(&self.starts)?, list(&self.steps)?])
    }
}

impl Infer for Strided {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let [counts, starts, steps] =
            self.exprs().ok_or_else(|| IrError::shape(node, op, "counts, starts and steps must be expressions"))?;
        let n = inputs[0].shape.rank();
        ensure(counts.len() == n && starts.len() == n && steps.len() == n, node, op, || {
            format!("needs {n} counts, starts and steps for {}", inputs[0])
        })?;
        let dims = counts
            .into_iter()
            .map(|e| {
                Dim::from_expr(e.clone()).ok_or_else(|| IrError::shape(node, op, format!("count {e} is not a dim")))
            })
            .collect::<Result<_, _>>()?;
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape: Shape(dims) }])
    }
}

op! {
    /// `start + i * delta` for `i < len` (a dim expression), as `dtype`: ONNX Range over a
    /// run-time extent (`torch.arange(x.shape[1])`). No operands.
    Iota = "iota", operands 0..=0 { len: String, start: i64, delta: i64 = 1, dtype: crate::DType }
}

impl Iota {
    /// The length as an expression (`None` when it does not parse).
    pub fn len_expr(&self) -> Option<crate::Expr> {
        dlc_sym::parse(self.len.trim()).ok()
    }
}

impl Infer for Iota {
    fn infer(&self, node: &str, _: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let len = self
            .len_expr()
            .and_then(Dim::from_expr)
            .ok_or_else(|| IrError::shape(node, op, format!("length '{}' is not a dim", self.len)))?;
        ensure(!self.dtype.is_storage_only() && self.dtype != crate::DType::Bool, node, op, || {
            format!("cannot count in {}", self.dtype)
        })?;
        Ok(vec![TensorType { dtype: self.dtype, shape: Shape(vec![len]) }])
    }
}

op! {
    /// A reshape to `dims`, `;`-separated dim expressions (what a Reshape target computed
    /// from run-time dims becomes when ONNX's 0/-1 form cannot say it, as a channel
    /// shuffle's `[N, 2, C/2, H, W]`). The element counts must agree as expressions.
    View = "view", operands 1..=1 { dims: String }
}

impl View {
    /// The target dims (`None` when `dims` does not parse).
    pub fn target(&self) -> Option<Vec<Dim>> {
        self.dims.split(';').map(|e| dlc_sym::parse(e.trim()).ok().and_then(Dim::from_expr)).collect()
    }
}

impl Infer for View {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let x = &inputs[0];
        let dims = self.target().ok_or_else(|| IrError::shape(node, op, format!("'{}' are not dims", self.dims)))?;
        // Counts that differ as expressions but not as numbers must be equal when the
        // model runs (Swin's `[B, Hp / 7, 7, Wp / 7, 7, C]` of a padding `Hp` that is a
        // multiple of 7 by construction): `crate::implied::constraints` records it and
        // dlc-runtime checks it before the run.
        let (to, from) = (Dim::product(&dims), Dim::product(&x.shape.0));
        ensure(to == from || to.fixed().is_none() || from.fixed().is_none(), node, op, || {
            format!("{} does not hold the elements of {}", Shape(dims.clone()), x.shape)
        })?;
        Ok(vec![TensorType { dtype: x.dtype, shape: Shape(dims) }])
    }
}
