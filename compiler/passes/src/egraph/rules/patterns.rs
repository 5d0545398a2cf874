//! Normalisation and attention patterns: decomposed subgraphs recognised as one op.
use super::algebra::is_splat;
use super::{named, Rule};
use crate::egraph::lang::{add_op, const_of, derived_consts, ops_of, ty_of, used_only_by, EGraph};
use dlc_ir::ops::{resolve_axes, Attention, Gelu, LayerNormalization, SoftmaxMode};
use dlc_ir::{DType, Dim, Op, TensorData};
use egg::Id;

/// The rules of this family.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "gelu-erf",
            doc: "x * (erf(x / sqrt 2) + 1) * 0.5 (any operand order) -> gelu(x)",
            looks_at: |op| matches!(op, Op::Mul(_)),
            derive: gelu_erf,
        },
        Rule {
            name: "layernorm-decomposed",
            doc: "(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) over trailing axes -> layernorm(x, 1)",
            looks_at: |op| matches!(op, Op::Div(_)),
            derive: layernorm_decomposed,
        },
        Rule {
            name: "layernorm-affine",
            doc: "layernorm(x, 1) * gamma -> layernorm(x, gamma); layernorm(x, g) + beta -> layernorm(x, g, beta)",
            looks_at: |op| matches!(op, Op::Mul(_) | Op::Add(_)),
            derive: layernorm_affine,
        },
        Rule {
            name: "attention",
            doc: "heads(x) = transpose(reshape(x, [B,S,H,D])); merge(heads-layout softmax(heads(q) @ heads(k)^T * s + m) @ heads(v)) -> attention(q, k, v, m)",
            looks_at: |op| matches!(op, Op::Reshape(_)),
            derive: attention,
        },
        Rule {
            name: "attention-key-padding",
            doc: "attention(q, k, v, reshape((1 - cast(mask)) * c, [B,1,1,Sk])) -> attention(q, k, v, mask){key_padding, fill c}",
            looks_at: |op| matches!(op, Op::Attention(a) if !a.key_padding),
            derive: key_padding,
        },
    ]
}

/// The first e-node of class `id` that `f` accepts, mapped by `f`.
fn find<T>(eg: &EGraph, id: Id, f: impl Fn(&Op, &[Id]) -> Option<T>) -> Option<T> {
    ops_of(eg, id).iter().find_map(|(op, ch)| f(op, ch))
}

/// The scalar value of an f32 constant class.
fn scalar(eg: &EGraph, id: Id) -> Option<f32> {
    let v = const_of(eg, id)?.to_f32()?;
    (v.len() == 1).then(|| v[0])
}

/// Pairs of (a, b) operands of a commutative binary e-node in both orders.
fn both(ch: &[Id]) -> [(Id, Id); 2] {
    [(ch[0], ch[1]), (ch[1], ch[0])]
}

fn gelu_erf(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    // outer = mul(inner, 0.5) or mul(0.5, inner) with inner = mul(x, erf(x / sqrt2) + 1);
    // also mul(x, mul(..., 0.5)) orders are matched by trying each product's operands.
    let half_split = |eg: &EGraph, a: Id, b: Id| -> Option<Id> {
        let is_half = scalar(eg, b).is_some_and(|v| v == 0.5);
        is_half.then_some(a)
    };
    let erf_of = |eg: &EGraph, s: Id| -> Option<Id> {
        // s = add(erf(div(x, sqrt2)), 1) in either order; returns x.
        find(eg, s, |op, ch| {
            let Op::Add(_) = op else { return None };
            both(ch).into_iter().find_map(|(e, one)| {
                if !is_splat(eg, one, 1.0) && scalar(eg, one) != Some(1.0) {
                    return None;
                }
                find(eg, e, |op, ch| {
                    let Op::Erf(_) = op else { return None };
                    find(eg, ch[0], |op, ch| match op {
                        Op::Div(_)
                            if scalar(eg, ch[1]).is_some_and(|c| (c - std::f32::consts::SQRT_2).abs() < 1e-4) =>
                        {
                            Some(ch[0])
                        }
                        Op::Mul(_) => both(ch).into_iter().find_map(|(x, c)| {
                            scalar(eg, c)
                                .is_some_and(|c| (c - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-4)
                                .then_some(x)
                        }),
                        _ => None,
                    })
                })
            })
        })
    };
    let mut xs = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::Mul(_) = op else { continue };
        for (inner, half) in both(&ch) {
            let Some(inner) = half_split(eg, inner, half) else { continue };
            // inner = mul(x, s)
            if let Some(x) = find(eg, inner, |op, ch| {
                let Op::Mul(_) = op else { return None };
                both(ch).into_iter().find_map(|(x, s)| erf_of(eg, s).filter(|&x2| eg.find(x2) == eg.find(x)))
            }) {
                xs.push(x);
            }
        }
    }
    let mut out = Vec::new();
    for x in xs {
        if ty_of(eg, x) != ty_of(eg, id) {
            continue;
        }
        if let Some(n) = add_op(eg, Gelu { tanh_approximation: false }.into(), vec![x]) {
            out.push((n, named(eg, id, "")));
        }
    }
    out
}

/// `transpose(reshape(x, [B,S,H,D]), perm)` with `perm` as given: returns (x, H).
fn heads(eg: &EGraph, id: Id, perm: [usize; 4]) -> Option<(Id, u64)> {
    find(eg, id, |op, ch| {
        let Op::Transpose(t) = op else { return None };
        if t.resolved_perm(4) != perm {
            return None;
        }
        find(eg, ch[0], |op, ch| {
            let Op::Reshape(_) = op else { return None };
            // Dims compared as expressions: B and S may be run-time dims.
            let split = &ty_of(eg, ch[0])?.shape.0;
            let four = &ty_of(eg, id)?.shape.0;
            let at = |k: usize| Some(&four[perm.iter().position(|&p| p == k)?]);
            let d4 = [at(0)?, at(1)?, at(2)?, at(3)?];
            let h = d4[2].fixed()?;
            (split.len() == 3 && split[0] == *d4[0] && split[1] == *d4[1] && split[2] == Dim::product([d4[2], d4[3]]))
                .then_some((ch[0], h))
        })
    })
}

fn attention(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let Some(out_ty) = ty_of(eg, id).cloned() else { return Vec::new() };
    if out_ty.dtype != DType::F32 || out_ty.shape.rank() != 3 {
        return Vec::new();
    }
    // reshape(transpose(matmul(probs, heads(v)), [0,2,1,3]), [B,S,H*Dv])
    let found = find(eg, id, |op, ch| {
        let Op::Reshape(_) = op else { return None };
        find(eg, ch[0], |op, ch| {
            let Op::Transpose(t) = op else { return None };
            if t.resolved_perm(4) != [0, 2, 1, 3] {
                return None;
            }
            find(eg, ch[0], |op, ch| {
                let Op::MatMul(m) = op else { return None };
                if ch.len() != 2 || m.act != dlc_ir::ops::Activation::None {
                    return None;
                }
                let (v, hv) = heads(eg, ch[1], [0, 2, 1, 3])?;
                let (scores, mask) = find(eg, ch[0], |op, ch| match op {
                    Op::Softmax(s) if s.mode == SoftmaxMode::Softmax && (s.axis == -1 || s.axis == 3) => Some(
                        find(eg, ch[0], |op, ch| match op {
                            Op::Add(_) => both(ch).into_iter().find_map(|(s, m)| {
                                let is_scores = ops_of(eg, s)
                                    .iter()
                                    .any(|(o, _)| matches!(o, Op::Div(_) | Op::Mul(_) | Op::MatMul(_)));
                                is_scores.then_some((s, Some(m)))
                            }),
                            _ => None,
                        })
                        .unwrap_or((ch[0], None)),
                    ),
                    _ => None,
                })?;
                // scores = matmul(heads(q), heads(k)^T) [* c | / c]
                let scaled = |qk: Id, scale: f32| -> Option<(Id, Id, f32)> {
                    find(eg, qk, |op, ch| {
                        let Op::MatMul(m) = op else { return None };
                        if ch.len() != 2 || m.act != dlc_ir::ops::Activation::None {
                            return None;
                        }
                        let (q, hq) = heads(eg, ch[0], [0, 2, 1, 3])?;
                        let (k, hk) = heads(eg, ch[1], [0, 2, 3, 1])?;
                        (hq == hk && hk == hv).then_some((q, k, scale))
                    })
                };
                let qks = scaled(scores, 1.0).or_else(|| {
                    find(eg, scores, |op, ch| match op {
                        Op::Div(_) => scaled(ch[0], 1.0 / scalar(eg, ch[1])?),
                        Op::Mul(_) => both(ch).into_iter().find_map(|(a, c)| scaled(a, scalar(eg, c)?)),
                        _ => None,
                    })
                })?;
                Some((qks.0, qks.1, v, hv, qks.2, mask))
            })
        })
    });
    let Some((q, k, v, h, scale, mask)) = found else { return Vec::new() };
    let op = Attention { heads: h as i64, scale, key_padding: false, padding_fill: 0.0 };
    let mut operands = vec![q, k, v];
    operands.extend(mask);
    match add_op(eg, op.into(), operands) {
        Some(n) => vec![(n, named(eg, id, ""))],
        None => Vec::new(),
    }
}

fn key_padding(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::Attention(a) = op else { continue };
        if a.key_padding || ch.len() != 4 {
            continue;
        }
        // mask = reshape(mul(sub(1, cast(m)), c)) with m [B, Sk]
        let found = find(eg, ch[3], |op, rch| {
            let Op::Reshape(_) = op else { return None };
            find(eg, rch[0], |op, mch| {
                let Op::Mul(_) = op else { return None };
                both(mch).into_iter().find_map(|(s, c)| {
                    let fill = scalar(eg, c)?;
                    find(eg, s, |op, sch| {
                        let Op::Sub(_) = op else { return None };
                        (scalar(eg, sch[0]) == Some(1.0)).then_some(())?;
                        find(eg, sch[1], |op, cch| match op {
                            Op::Cast(c) if c.to == DType::F32 => Some((cch[0], fill)),
                            _ => None,
                        })
                    })
                })
            })
        });
        let Some((m, fill)) = found else { continue };
        let op = Attention { key_padding: true, padding_fill: fill, ..a };
        if let Some(n) = add_op(eg, op.into(), vec![ch[0], ch[1], ch[2], m]) {
            out.push((n, named(eg, id, "")));
        }
    }
    out
}

/// `reduce_mean(x, trailing axes from a, keepdims)`: returns (x, a).
fn trailing_mean(eg: &EGraph, id: Id) -> Option<(Id, usize)> {
    find(eg, id, |op, ch| {
        let Op::ReduceMean(r) = op else { return None };
        let rank = ty_of(eg, ch[0])?.shape.rank();
        let axes = resolve_axes(&r.axes, rank)?;
        let a = *axes.first()?;
        (r.keepdims && axes == (a..rank).collect::<Vec<_>>()).then_some((ch[0], a))
    })
}

fn layernorm_decomposed(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let found = find(eg, id, |op, ch| {
        let Op::Div(_) = op else { return None };
        let d = ch[0];
        // d = x - mean(x)
        let (x, a) = find(eg, d, |op, sch| {
            let Op::Sub(_) = op else { return None };
            let (x, a) = trailing_mean(eg, sch[1])?;
            (eg.find(x) == eg.find(sch[0])).then_some((x, a))
        })?;
        // sqrt(mean(d^2) + eps)
        let eps = find(eg, ch[1], |op, sch| {
            let Op::Sqrt(_) = op else { return None };
            find(eg, sch[0], |op, ach| {
                let Op::Add(_) = op else { return None };
                both(ach).into_iter().find_map(|(var, e)| {
                    let eps = scalar(eg, e)?;
                    let (p, a2) = trailing_mean(eg, var)?;
                    let squares = ops_of(eg, p).iter().any(|(op, pch)| match op {
                        Op::Pow(_) => eg.find(pch[0]) == eg.find(d) && scalar(eg, pch[1]) == Some(2.0),
                        Op::Mul(_) => eg.find(pch[0]) == eg.find(d) && eg.find(pch[1]) == eg.find(d),
                        _ => false,
                    });
                    (squares && a2 == a).then_some(eps)
                })
            })
        })?;
        Some((x, a, eps))
    });
    let Some((x, a, eps)) = found else { return Vec::new() };
    let Some(xt) = ty_of(eg, x).cloned() else { return Vec::new() };
    let Some(dims) = xt.shape.as_fixed() else { return Vec::new() };
    if xt.dtype != DType::F32 {
        return Vec::new();
    }
    let norm = dims[a..].to_vec();
    let ones = derived_consts(eg, "layernorm-decomposed", &[x], |_| {
        Some(vec![TensorData::from_f32(&norm, &vec![1.0; norm.iter().product::<u64>() as usize])?])
    });
    let Some(ones) = ones else { return Vec::new() };
    let ln = LayerNormalization { axis: a as i64, epsilon: eps, rms: false, stats: false, skip: false };
    match add_op(eg, ln.into(), vec![x, ones[0]]) {
        Some(n) => vec![(n, named(eg, id, ""))],
        None => Vec::new(),
    }
}

fn layernorm_affine(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let is_mul = matches!(op, Op::Mul(_));
        if !is_mul && !matches!(op, Op::Add(_)) {
            continue;
        }
        for (ln_id, p) in both(&ch) {
            if const_of(eg, p).is_none() || ty_of(eg, ln_id) != ty_of(eg, id) || !used_only_by(eg, ln_id, id, &[p]) {
                continue;
            }
            for (lop, lch) in ops_of(eg, ln_id) {
                let Op::LayerNormalization(ln) = lop else { continue };
                if ln.skip || ln.stats || ln.rms {
                    continue;
                }
                let operands = match (is_mul, lch.len()) {
                    // The scale must be all ones to be replaced.
                    (true, 2) if super::algebra::is_splat(eg, lch[1], 1.0) => vec![lch[0], p],
                    (false, 2) => vec![lch[0], lch[1], p],
                    _ => continue,
                };
                if let Some(n) = add_op(eg, ln.clone().into(), operands) {
                    out.push((n, named(eg, id, "")));
                }
            }
        }
    }
    out
}
