//! Matrix products.
use super::{ensure, same_dtype, Activation, Infer, OpMeta};
use crate::ops::elementwise::broadcast_shapes;
use crate::{op, Dim, IrError, Shape, TensorType};

op! {
    /// numpy `matmul`: `[..., M, K] x [..., K, N] -> [..., M, N]`, batch dims broadcast;
    /// a 1-D operand is promoted to a matrix and the added dim removed from the result.
    /// Epilogue: an optional third operand `[N]` (a bias along the last dim) is added,
    /// then `act` applied.
    MatMul = "matmul", operands 2..=3 { act: Activation }
}

impl Infer for MatMul {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let (a, b) = (&inputs[0].shape, &inputs[1].shape);
        ensure(a.rank() >= 1 && b.rank() >= 1, node, op, || "operands must have rank >= 1".into())?;
        let mut a2 = a.0.clone();
        let mut b2 = b.0.clone();
        if a2.len() == 1 {
            a2.insert(0, Dim::Fixed(1));
        }
        if b2.len() == 1 {
            b2.push(Dim::Fixed(1));
        }
        let k_a = &a2[a2.len() - 1];
        let k_b = &b2[b2.len() - 2];
        ensure(k_a == k_b || k_a.fixed().is_none() || k_b.fixed().is_none(), node, op, || {
            format!("inner dims differ: {a} x {b}")
        })?;
        let batch = broadcast_shapes(&Shape(a2[..a2.len() - 2].to_vec()), &Shape(b2[..b2.len() - 2].to_vec()))
            .map_err(|m| IrError::shape(node, op, m))?;
        let mut out = batch.0;
        if a.rank() > 1 {
            out.push(a2[a2.len() - 2].clone());
        }
        if b.rank() > 1 {
            out.push(b2[b2.len() - 1].clone());
        }
        if let Some(bias) = inputs.get(2) {
            let n = out.last().cloned();
            ensure(
                !out.is_empty() && bias.shape.rank() == 1 && Some(&bias.shape.0[0]) == n.as_ref(),
                node,
                op,
                || format!("bias must be [N] for a result of shape {}, got {}", Shape(out.clone()), bias.shape),
            )?;
        }
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape: Shape(out) }])
    }
}

op! {
    /// `act(alpha * op(A) * op(B) + beta * C)` with 2-D `A`, `B`; `op` transposes when
    /// asked; `C` (optional) broadcasts to `[M, N]`; `act` is the epilogue activation.
    Gemm = "gemm", operands 2..=3 { alpha: f32 = 1.0, beta: f32 = 1.0, trans_a: bool, trans_b: bool, act: Activation }
}

impl Infer for Gemm {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let (a, b) = (&inputs[0].shape, &inputs[1].shape);
        ensure(a.rank() == 2 && b.rank() == 2, node, op, || format!("A and B must be 2-D, got {a} and {b}"))?;
        let (m, ka) = if self.trans_a { (&a.0[1], &a.0[0]) } else { (&a.0[0], &a.0[1]) };
        let (kb, n) = if self.trans_b { (&b.0[1], &b.0[0]) } else { (&b.0[0], &b.0[1]) };
        ensure(ka == kb || ka.fixed().is_none() || kb.fixed().is_none(), node, op, || {
            format!("inner dims differ: op(A) is {m}x{ka}, op(B) is {kb}x{n}")
        })?;
        let out = Shape(vec![m.clone(), n.clone()]);
        if let Some(c) = inputs.get(2) {
            let bc = broadcast_shapes(&c.shape, &out).map_err(|msg| IrError::shape(node, op, msg))?;
            ensure(bc == out, node, op, || format!("C of shape {} does not broadcast to {out}", c.shape))?;
        }
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape: out }])
    }
}

/// Parsed einsum subscripts: one list of index letters per operand and the output's.
/// An ellipsis becomes uppercase letters (right-aligned across operands).
pub fn parse_einsum(equation: &str, ranks: &[usize]) -> Result<(Vec<Vec<char>>, Vec<char>), String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(format!("equation '{equation}' has {} operands, the node has {}", terms.len(), ranks.len()));
    }
    let ell_letters: Vec<char> = ('A'..='Z').collect();
    let mut max_ell = 0;
    let mut ins = Vec::new();
    for (t, &r) in terms.iter().zip(ranks) {
        let letters: Vec<char> = t.replace("...", "").chars().collect();
        if letters.iter().any(|c| !c.is_ascii_lowercase()) {
            return Err(format!("equation '{equation}': subscripts must be lowercase letters"));
        }
        let mut v = Vec::new();
        if let Some(pos) = t.find("...") {
            let n = r.checked_sub(letters.len()).ok_or(format!("operand '{t}' has rank {r}"))?;
            max_ell = max_ell.max(n);
            let before: Vec<char> = t[..pos].chars().collect();
            let after: Vec<char> = t[pos + 3..].chars().collect();
            v.extend(before);
            v.extend(ell_letters[26 - n..].iter());
            v.extend(after);
        } else {
            if letters.len() != r {
                return Err(format!("operand '{t}' names {} dims, it has rank {r}", letters.len()));
            }
            v = letters;
        }
        ins.push(v);
    }
    let ell: Vec<char> = ell_letters[26 - max_ell..].to_vec();
    let out: Vec<char> = match rhs {
        Some(r) => {
            let mut v = Vec::new();
            if let Some(pos) = r.find("...") {
                v.extend(r[..pos].chars());
                v.extend(ell.iter());
                v.extend(r[pos + 3..].chars());
            } else {
                v.extend(r.chars());
            }
            v
        }
        None => {
            let mut counts = std::collections::BTreeMap::new();
            for c in ins.iter().flatten().filter(|c| c.is_ascii_lowercase()) {
                *counts.entry(*c).or_insert(0) += 1;
            }
            ell.iter().copied().chain(counts.into_iter().filter(|(_, n)| *n == 1).map(|(c, _)| c)).collect()
        }
    };
    for c in &out {
        if !ins.iter().flatten().any(|x| x == c) {
            return Err(format!("equation '{equation}': output index '{c}' appears in no operand"));
        }
    }
    Ok((ins, out))
}

/// Extents of every index letter, checking that repeated letters agree (1 broadcasts).
pub fn einsum_extents(ins: &[Vec<char>], dims: &[Vec<u64>]) -> Result<std::collections::BTreeMap<char, u64>, String> {
    let mut ext = std::collections::BTreeMap::new();
    for (letters, d) in ins.iter().zip(dims) {
        for (c, &n) in letters.iter().zip(d) {
            let e = ext.entry(*c).or_insert(n);
            if *e == 1 {
                *e = n;
            } else if n != 1 && *e != n {
                return Err(format!("index '{c}' has extents {e} and {n}"));
            }
        }
    }
    Ok(ext)
}

op! {
    /// Einstein summation over the operands (ONNX Einsum, ellipsis included).
    Einsum = "einsum", operands 1..=16 { equation: String }
}

impl Infer for Einsum {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(inputs, node, op)?;
        let dims: Vec<Vec<u64>> = inputs.iter().map(|t| super::fixed_dims(t, node, op)).collect::<Result<_, _>>()?;
        let ranks: Vec<usize> = dims.iter().map(Vec::len).collect();
        let (ins, out) = parse_einsum(&self.equation, &ranks).map_err(|m| IrError::shape(node, op, m))?;
        let ext = einsum_extents(&ins, &dims).map_err(|m| IrError::shape(node, op, m))?;
        let shape: Vec<u64> = out.iter().map(|c| ext[c]).collect();
        Ok(vec![TensorType { dtype: inputs[0].dtype, shape: Shape::fixed(&shape) }])
    }
}

op! {
    /// Multi-head scaled dot-product attention on activations whose last dim packs the
    /// heads: q `[B, Sq, H*D]`, k `[B, Sk, H*D]`, v `[B, Sk, H*Dv]`, result
    /// `[B, Sq, H*Dv]`: `out[b, i, h, :] = sum_j softmax_j(s[b, h, i, j]) v[b, j, h, :]`
    /// with `s = scale * q[b, i, h, :] . k[b, j, h, :] + m`. The optional fourth operand
    /// gives `m`: a float mask broadcast to `[B, H, Sq, Sk]` (added as is), or, with
    /// `key_padding`, a `[B, Sk]` mask of any numeric dtype, `m = (1 - mask[b, j]) *
    /// padding_fill` (the form of BERT's extended attention mask).
    Attention = "attention", operands 3..=4 { heads: i64 = 1, scale: f32 = 1.0, key_padding: bool, padding_fill: f32 }
}

impl Infer for Attention {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        same_dtype(&inputs[..3], node, op)?;
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let dims: Vec<&[Dim]> = inputs[..3].iter().map(|t| t.shape.0.as_slice()).collect();
        ensure(dims.iter().all(|d| d.len() == 3), node, op, || "q, k and v must be 3-D".into())?;
        // Batch and sequence dims may be run-time dims; the head dims are known.
        let last: Vec<u64> = dims
            .iter()
            .map(|d| d[2].fixed())
            .collect::<Option<_>>()
            .ok_or_else(|| IrError::shape(node, op, "the last dims of q, k and v must be known"))?;
        let h = self.heads.max(0) as u64;
        ensure(h > 0 && last.iter().all(|d| d % h == 0), node, op, || {
            format!("heads {} must divide the last dims of {}, {}, {}", self.heads, q.shape, k.shape, v.shape)
        })?;
        ensure(dims[0][0] == dims[1][0] && dims[1][0] == dims[2][0], node, op, || "batch dims differ".into())?;
        ensure(last[0] == last[1] && dims[1][1] == dims[2][1], node, op, || {
            format!("q {} and k {} must share the head dim, k and v {} the key length", q.shape, k.shape, v.shape)
        })?;
        let (b, sq, sk) = (dims[0][0].clone(), dims[0][1].clone(), dims[1][1].clone());
        if let Some(m) = inputs.get(3) {
            if self.key_padding {
                let want = Shape(vec![b.clone(), sk.clone()]);
                ensure(m.shape == want, node, op, || format!("key padding mask must be {want}, got {}", m.shape))?;
            } else {
                let full = Shape(vec![b.clone(), Dim::Fixed(h), sq.clone(), sk.clone()]);
                let bc = broadcast_shapes(&m.shape, &full).map_err(|e| IrError::shape(node, op, e))?;
                ensure(bc == full && m.dtype == q.dtype, node, op, || {
                    format!("mask {} does not broadcast to {full}", m.shape)
                })?;
            }
        }
        Ok(vec![TensorType { dtype: q.dtype, shape: Shape(vec![b, sq, Dim::Fixed(last[2])]) }])
    }
}
