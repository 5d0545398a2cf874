//! Inference folding: BatchNormalization folded into the weights of the convolution
//! that feeds it, Identity removed.
use super::{named, Rule};
use crate::egraph::lang::{add_op, const_of, derived_consts, ops_of, ty_of, used_only_by, EGraph};
use dlc_ir::ops::{Activation, Gemm};
use dlc_ir::{Op, TensorData};
use egg::Id;

/// The rules of this family.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "bn-into-conv",
            doc: "batchnorm(conv(x, W, b), s, t, mean, var) -> conv(x, W * k, (b - mean) * k + t), k = s / sqrt(var + eps)",
            looks_at: |op| matches!(op, Op::BatchNormalization(_)),
            derive: bn_into_conv,
        },
        Rule {
            name: "bn-into-gemm",
            doc: "batchnorm(gemm(a, B, c)) over [N, C] with constant B, c -> gemm(a, B * k, (c - mean) * k + shift)",
            looks_at: |op| matches!(op, Op::BatchNormalization(_)),
            derive: bn_into_gemm,
        },
        Rule {
            name: "bn-to-affine",
            doc: "batchnorm(x, s, t, mean, var) over f32 [N, C, ...] with constant parameters -> x * k + (t - mean * k), k = s / sqrt(var + eps), k and the shift [C, 1, ...] constants (so the elementwise ops around it absorb it)",
            looks_at: |op| matches!(op, Op::BatchNormalization(_)),
            derive: bn_to_affine,
        },
        Rule {
            name: "scale-into-weights",
            doc: "conv(x, W, b) * s (s scalar or per output channel) -> conv(x, W * s, b * s); likewise matmul(a, W) * s with s scalar or per column",
            looks_at: |op| matches!(op, Op::Mul(_)),
            derive: scale_into_weights,
        },
        Rule {
            name: "identity",
            doc: "identity(x) -> x",
            looks_at: |op| matches!(op, Op::Identity(_)),
            derive: |eg, id| {
                ops_of(eg, id)
                    .into_iter()
                    .filter(|(op, _)| matches!(op, Op::Identity(_)))
                    .map(|(_, ch)| (ch[0], String::new()))
                    .collect()
            },
        },
    ]
}

fn f32s(eg: &EGraph, id: Id) -> Option<Vec<f32>> {
    const_of(eg, id).and_then(|t| t.to_f32())
}

fn bn_into_conv(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::BatchNormalization(bn) = op else { continue };
        let params: Option<Vec<Vec<f32>>> = ch[1..].iter().map(|c| f32s(eg, *c)).collect();
        let Some(params) = params else { continue };
        let (scale, shift, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        if !used_only_by(eg, ch[0], id, &ch[1..]) {
            continue;
        }
        for (inner, conv_ch) in ops_of(eg, ch[0]) {
            let Op::Conv(conv) = inner else { continue };
            if conv.act != Activation::None || conv_ch.len() > 3 {
                continue;
            }
            let operands: Vec<Id> = conv_ch[1..].iter().chain(&ch[1..]).copied().collect();
            let eps = bn.epsilon as f64;
            let folded = derived_consts(eg, "bn-into-conv", &operands, |eg| {
                let w = const_of(eg, conv_ch[1])?;
                let wv = w.to_f32()?;
                let m = scale.len();
                let bias = match conv_ch.get(2) {
                    Some(b) => f32s(eg, *b)?,
                    None => vec![0.0; m],
                };
                if m == 0
                    || wv.len() % m != 0
                    || [shift.len(), mean.len(), var.len(), bias.len()].iter().any(|&l| l != m)
                {
                    return None;
                }
                // In f64, rounded once to f32.
                let k: Vec<f64> = (0..m).map(|i| scale[i] as f64 / (var[i] as f64 + eps).sqrt()).collect();
                let per = wv.len() / m;
                let w2: Vec<f32> = wv.iter().enumerate().map(|(i, &x)| (x as f64 * k[i / per]) as f32).collect();
                let b2: Vec<f32> =
                    (0..m).map(|i| ((bias[i] as f64 - mean[i] as f64) * k[i] + shift[i] as f64) as f32).collect();
                let dims = w.ty().shape.as_fixed()?;
                Some(vec![TensorData::from_f32(&dims, &w2)?, TensorData::from_f32(&[m as u64], &b2)?])
            });
            let Some(folded) = folded else { continue };
            let (w2, b2) = (folded[0], folded[1]);
            if let Some(n) = add_op(eg, conv.clone().into(), vec![conv_ch[0], w2, b2]) {
                out.push((n, named(eg, ch[0], "")));
            }
        }
    }
    out
}

/// A normalization whose input no kernel absorbs (a convolution's output went through a
/// Cast and a Mul first, as in ONNX Runtime's dynamically quantized models) as a
/// per-channel multiply and add, which elementwise fusion folds into its neighbours;
/// ONNX Runtime's own kernel computes this form (its factor and shift in f32).
fn bn_to_affine(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::BatchNormalization(bn) = op else { continue };
        let Some(x) = ty_of(eg, ch[0]).cloned() else { continue };
        let params: Option<Vec<Vec<f32>>> = ch[1..].iter().map(|c| f32s(eg, *c)).collect();
        let Some(p) = params else { continue };
        let m = p[0].len();
        let rank = x.shape.rank();
        if x.dtype != dlc_ir::DType::F32
            || rank < 2
            || x.shape.0[1].fixed() != Some(m as u64)
            || p.iter().any(|v| v.len() != m)
        {
            continue;
        }
        let eps = bn.epsilon;
        let consts = derived_consts(eg, "bn-to-affine", &ch[1..], |_| {
            // In f32, step by step, as ONNX Runtime's kernel derives its per-channel factor
            // and shift: a dynamically quantized model downstream turns an ulp into codes.
            let k: Vec<f32> = (0..m).map(|i| 1.0 / (p[3][i] + eps).sqrt() * p[0][i]).collect();
            let t: Vec<f32> = (0..m).map(|i| p[1][i] - p[2][i] * k[i]).collect();
            let dims: Vec<u64> = std::iter::once(m as u64).chain(std::iter::repeat_n(1, rank - 2)).collect();
            Some(vec![TensorData::from_f32(&dims, &k)?, TensorData::from_f32(&dims, &t)?])
        });
        let Some(c) = consts else { continue };
        let Some(scaled) = add_op(eg, dlc_ir::ops::Mul {}.into(), vec![ch[0], c[0]]) else { continue };
        if let Some(n) = add_op(eg, dlc_ir::ops::Add {}.into(), vec![scaled, c[1]]) {
            out.push((n, String::new()));
        }
    }
    out
}

/// Per-output-channel factors `k` and shifts `t` applied to a kernel with `m` outputs:
/// `y' = y * k + t`. Returns the scaled weights and bias as new constants.
#[allow(clippy::too_many_arguments)]
fn scaled_weights(
    eg: &mut EGraph,
    rule: &'static str,
    key: &[Id],
    w: Id,
    b: Option<Id>,
    k: Vec<f64>,
    t: Vec<f64>,
    channel_of: impl Fn(usize, &[u64]) -> usize,
) -> Option<(Id, Id)> {
    let ids = derived_consts(eg, rule, key, |eg| {
        let wt = const_of(eg, w)?;
        let dims = wt.ty().shape.as_fixed()?;
        let wv = wt.to_f32()?;
        let m = k.len();
        let bias = match b {
            Some(b) => f32s(eg, b)?,
            None => vec![0.0; m],
        };
        if bias.len() != m || t.len() != m {
            return None;
        }
        let w2: Vec<f32> = wv.iter().enumerate().map(|(i, &x)| (x as f64 * k[channel_of(i, &dims)]) as f32).collect();
        let b2: Vec<f32> = (0..m).map(|i| (bias[i] as f64 * k[i] + t[i]) as f32).collect();
        Some(vec![TensorData::from_f32(&dims, &w2)?, TensorData::from_f32(&[m as u64], &b2)?])
    })?;
    Some((ids[0], ids[1]))
}

fn bn_into_gemm(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::BatchNormalization(bn) = op else { continue };
        let params: Option<Vec<Vec<f32>>> = ch[1..].iter().map(|c| f32s(eg, *c)).collect();
        let Some(p) = params else { continue };
        if !used_only_by(eg, ch[0], id, &ch[1..]) {
            continue;
        }
        for (inner, gch) in ops_of(eg, ch[0]) {
            let Op::Gemm(g) = inner else { continue };
            let bias_ok =
                gch.get(2).is_none_or(|c| const_of(eg, *c).is_some_and(|t| t.numel() == p[0].len()) && g.beta == 1.0);
            let n_ok = ty_of(eg, ch[0]).and_then(|t| t.shape.0.get(1)?.fixed()) == Some(p[0].len() as u64);
            if g.act != Activation::None || !n_ok || !bias_ok || const_of(eg, gch[1]).is_none() {
                continue;
            }
            let m = p[0].len();
            let k: Vec<f64> = (0..m).map(|i| p[0][i] as f64 / (p[3][i] as f64 + bn.epsilon as f64).sqrt()).collect();
            let t: Vec<f64> = (0..m).map(|i| p[1][i] as f64 - p[2][i] as f64 * k[i]).collect();
            let trans_b = g.trans_b;
            let key: Vec<Id> = gch[1..].iter().chain(&ch[1..]).copied().collect();
            // Output column j scales B's column j: B is [K, N] (or [N, K] transposed).
            let folded = scaled_weights(eg, "bn-into-gemm", &key, gch[1], gch.get(2).copied(), k, t, |i, d| {
                if trans_b {
                    i / d[1] as usize
                } else {
                    i % d[1] as usize
                }
            });
            let Some((w2, b2)) = folded else { continue };
            let g2 = Gemm { beta: 1.0, ..g };
            if let Some(n) = add_op(eg, g2.into(), vec![gch[0], w2, b2]) {
                out.push((n, named(eg, ch[0], "")));
            }
        }
    }
    out
}

fn scale_into_weights(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !matches!(op, Op::Mul(_)) {
            continue;
        }
        for (y, s) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            let Some(sv) = f32s(eg, s) else { continue };
            let Some(st) = const_of(eg, s).map(|t| t.ty().shape.clone()) else { continue };
            if ty_of(eg, y) != ty_of(eg, id) || !used_only_by(eg, y, id, &[s]) {
                continue;
            }
            for (inner, ich) in ops_of(eg, y) {
                let (m, per_channel) = match &inner {
                    Op::Conv(c) if c.act == Activation::None && ich.len() <= 3 => {
                        let m = ty_of(eg, y).and_then(|t| t.shape.0.get(1)?.fixed()).unwrap_or(0) as usize;
                        // Scalar, or [M, 1, 1] / [1, M, 1, 1]: one factor per output channel.
                        let dims = st.as_fixed().unwrap_or_default();
                        let ok = sv.len() == 1
                            || (sv.len() == m
                                && dims.iter().filter(|&&d| d != 1).count() == 1
                                && dims.len() >= 3
                                && dims[dims.len() - 3] as usize == m);
                        (m, ok)
                    }
                    Op::MatMul(mm) if mm.act == Activation::None && ich.len() <= 3 => {
                        let n = ty_of(eg, y).and_then(|t| t.shape.0.last()?.fixed()).unwrap_or(0) as usize;
                        let rank2 = ty_of(eg, ich[1]).is_some_and(|t| t.shape.rank() == 2);
                        let dims = st.as_fixed().unwrap_or_default();
                        let ok = rank2 && (sv.len() == 1 || (sv.len() == n && dims.last() == Some(&(n as u64))));
                        (n, ok)
                    }
                    _ => continue,
                };
                if !per_channel || m == 0 || const_of(eg, ich[1]).is_none() {
                    continue;
                }
                let k: Vec<f64> = (0..m).map(|i| sv[if sv.len() == 1 { 0 } else { i }] as f64).collect();
                let key: Vec<Id> = ich[1..].iter().copied().chain([s]).collect();
                let is_conv = matches!(inner, Op::Conv(_));
                let folded = scaled_weights(
                    eg,
                    "scale-into-weights",
                    &key,
                    ich[1],
                    ich.get(2).copied(),
                    k,
                    vec![0.0; m],
                    |i, d| {
                        if is_conv {
                            i / (d[1..].iter().product::<u64>() as usize)
                        } else {
                            i % d[1] as usize
                        }
                    },
                );
                let Some((w2, b2)) = folded else { continue };
                if let Some(n) = add_op(eg, inner.clone(), vec![ich[0], w2, b2]) {
                    out.push((n, named(eg, y, "")));
                }
            }
        }
    }
    out
}
