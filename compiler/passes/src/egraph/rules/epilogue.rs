//! Epilogue fusion: an activation, a bias or a residual addition that follows a Conv,
//! Gemm or MatMul is applied by that kernel before it stores its result. Only where the
//! producer's value has no other use (fusing would otherwise compute it twice).
use super::{named, Rule};
use crate::egraph::lang::{add_op, const_of, derived_consts, ops_of, ty_of, used_only_by, EGraph};
use dlc_ir::ops::{Activation, MatMul};
use dlc_ir::{DType, Op, TensorData};
use egg::Id;

/// The rules of this family.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "act-into-producer",
            doc: "act(conv|gemm|matmul(...)) -> conv|gemm|matmul(...){act} for relu, clip, sigmoid, tanh, hardswish, gelu, swish",
            looks_at: |op| Activation::from_op(op).is_some(),
            derive: act_into_producer,
        },
        Rule {
            name: "silu-into-producer",
            doc: "p * sigmoid(p) -> p{swish} for p = conv|gemm|matmul(...) used only there (SiLU as exporters write it)",
            looks_at: |op| matches!(op, Op::Mul(_)),
            derive: silu_into_producer,
        },
        Rule {
            name: "bias-into-conv",
            doc: "conv(x, W[, b]) + c with a constant c per output channel ([M,1,1], [1,M,1,1] or scalar) -> conv(x, W, b + c)",
            looks_at: |op| matches!(op, Op::Add(_)),
            derive: bias_into_conv,
        },
        Rule {
            name: "residual-into-conv",
            doc: "conv(x, W, b) + r -> conv(x, W, b, r) when r has the result's type (b = 0 when absent)",
            looks_at: |op| matches!(op, Op::Add(_)),
            derive: residual_into_conv,
        },
        Rule {
            name: "residual-into-layernorm",
            doc: "layernorm(a + b) -> layernorm(a, ...){skip} with b added in the kernel (b of a's element count)",
            looks_at: |op| matches!(op, Op::LayerNormalization(l) if !l.skip && !l.stats),
            derive: residual_into_layernorm,
        },
        Rule {
            name: "bias-into-matmul",
            doc: "matmul(a, b) + c -> matmul(a, b, c) for a constant c of N elements along the last dim",
            looks_at: |op| matches!(op, Op::Add(_)),
            derive: bias_into_matmul,
        },
    ]
}

fn is_f32(eg: &EGraph, id: Id) -> bool {
    ty_of(eg, id).is_some_and(|t| t.dtype == DType::F32)
}

fn act_into_producer(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Some(act) = Activation::from_op(&op) else { continue };
        if ch.len() != 1 || !is_f32(eg, id) || !used_only_by(eg, ch[0], id, &[]) {
            continue;
        }
        for (inner, inner_ch) in ops_of(eg, ch[0]) {
            let Some(fused) = with_act(inner, act) else { continue };
            if let Some(n) = add_op(eg, fused, inner_ch) {
                out.push((n, named(eg, ch[0], "")));
            }
        }
    }
    out
}

/// The producer's op with epilogue activation `act`, when it is a Conv, Gemm or MatMul
/// that has none yet.
fn with_act(op: Op, act: Activation) -> Option<Op> {
    Some(match op {
        Op::Conv(mut c) if c.act == Activation::None => {
            c.act = act;
            c.into()
        }
        Op::Gemm(mut g) if g.act == Activation::None => {
            g.act = act;
            g.into()
        }
        Op::MatMul(m) if m.act == Activation::None => MatMul { act }.into(),
        _ => return None,
    })
}

fn silu_into_producer(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    if !is_f32(eg, id) {
        return out;
    }
    for (op, ch) in ops_of(eg, id) {
        let (Op::Mul(_), [a, b]) = (&op, ch.as_slice()) else { continue };
        let (a, b) = (eg.find(*a), eg.find(*b));
        // Which operand is the sigmoid of the other.
        let sig_of = |eg: &EGraph, s: Id, x: Id| {
            ops_of(eg, s).iter().any(|(o, c)| matches!(o, Op::Sigmoid(_)) && c.len() == 1 && eg.find(c[0]) == x)
        };
        let p = if sig_of(eg, b, a) {
            a
        } else if sig_of(eg, a, b) {
            b
        } else {
            continue;
        };
        if ty_of(eg, p) != ty_of(eg, id) || !used_only_by(eg, p, id, &[]) {
            continue;
        }
        for (inner, inner_ch) in ops_of(eg, p) {
            let Some(fused) = with_act(inner, Activation::Swish) else { continue };
            if let Some(n) = add_op(eg, fused, inner_ch) {
                out.push((n, named(eg, p, "")));
            }
        }
    }
    out
}

fn residual_into_conv(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !matches!(op, Op::Add(_)) || ch.len() != 2 || !is_f32(eg, id) {
            continue;
        }
        for (conv_id, r) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            if ty_of(eg, r) != ty_of(eg, id)
                || ty_of(eg, conv_id) != ty_of(eg, id)
                || !used_only_by(eg, conv_id, id, &[r])
            {
                continue;
            }
            for (inner, conv_ch) in ops_of(eg, conv_id) {
                let Op::Conv(c) = inner else { continue };
                if c.act != Activation::None || conv_ch.len() == 4 {
                    continue;
                }
                let bias = match conv_ch.get(2) {
                    Some(&b) => b,
                    None => {
                        let m = ty_of(eg, conv_id).and_then(|t| t.shape.0.get(1)?.fixed()).unwrap_or(0);
                        let zero = derived_consts(eg, "residual-into-conv", &conv_ch, |_| {
                            Some(vec![TensorData::from_f32(&[m], &vec![0.0; m as usize])?])
                        });
                        let Some(zero) = zero else { continue };
                        zero[0]
                    }
                };
                if let Some(n) = add_op(eg, c.into(), vec![conv_ch[0], conv_ch[1], bias, r]) {
                    out.push((n, named(eg, conv_id, "")));
                }
            }
        }
    }
    out
}

fn bias_into_matmul(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !matches!(op, Op::Add(_)) || ch.len() != 2 || !is_f32(eg, id) {
            continue;
        }
        for (mm, c) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            let Some(bias) = const_of(eg, c).and_then(|t| t.to_f32()) else { continue };
            let Some(n_dim) = ty_of(eg, id).and_then(|t| t.shape.0.last()?.fixed()) else { continue };
            let c_dims = ty_of(eg, c).map(|t| t.shape.rank()).unwrap_or(0);
            let out_rank = ty_of(eg, id).map(|t| t.shape.rank()).unwrap_or(0);
            if bias.len() as u64 != n_dim
                || c_dims > out_rank
                || ty_of(eg, mm) != ty_of(eg, id)
                || !used_only_by(eg, mm, id, &[c])
            {
                continue;
            }
            for (inner, ab) in ops_of(eg, mm) {
                let Op::MatMul(m) = inner else { continue };
                if m.act != Activation::None || ab.len() != 2 {
                    continue;
                }
                let b = derived_consts(eg, "bias-into-matmul", &[c], |_| {
                    Some(vec![TensorData::from_f32(&[n_dim], &bias)?])
                });
                let Some(b) = b else { continue };
                let b = b[0];
                if let Some(n) = add_op(eg, MatMul { act: Activation::None }.into(), vec![ab[0], ab[1], b]) {
                    out.push((n, named(eg, mm, "")));
                }
            }
        }
    }
    out
}

fn residual_into_layernorm(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::LayerNormalization(mut ln) = op else { continue };
        if ln.skip || ln.stats || !is_f32(eg, id) || !used_only_by(eg, ch[0], id, &ch[1..]) {
            continue;
        }
        let x_ty = ty_of(eg, ch[0]).cloned();
        for (add, add_ch) in ops_of(eg, ch[0]) {
            if !matches!(add, Op::Add(_)) {
                continue;
            }
            for (a, b) in [(add_ch[0], add_ch[1]), (add_ch[1], add_ch[0])] {
                if ty_of(eg, a) != x_ty.as_ref() {
                    continue;
                }
                ln.skip = true;
                let mut operands = vec![a];
                operands.extend(&ch[1..]);
                operands.push(b);
                if let Some(n) = add_op(eg, ln.clone().into(), operands) {
                    out.push((n, named(eg, id, "")));
                    break;
                }
            }
        }
    }
    out
}

fn bias_into_conv(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !matches!(op, Op::Add(_)) || ch.len() != 2 || !is_f32(eg, id) {
            continue;
        }
        for (conv_id, c) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            let Some(cv) = const_of(eg, c).and_then(|t| t.to_f32()) else { continue };
            let cdims = const_of(eg, c).and_then(|t| t.ty().shape.as_fixed()).unwrap_or_default();
            let Some(m) = ty_of(eg, conv_id).and_then(|t| t.shape.0.get(1)?.fixed()) else { continue };
            // One value per output channel, laid out along dim 1 of the result.
            let per_channel =
                cv.len() == 1 || (cv.len() as u64 == m && cdims.len() >= 3 && cdims[cdims.len() - 3] == m);
            if !per_channel || ty_of(eg, conv_id) != ty_of(eg, id) || !used_only_by(eg, conv_id, id, &[c]) {
                continue;
            }
            for (inner, cch) in ops_of(eg, conv_id) {
                let Op::Conv(conv) = inner else { continue };
                if conv.act != Activation::None || cch.len() == 4 {
                    continue;
                }
                let old = cch.get(2).copied();
                let key: Vec<Id> = old.into_iter().chain([c]).collect();
                let bias = derived_consts(eg, "bias-into-conv", &key, |eg| {
                    let b0 = match old {
                        Some(b) => const_of(eg, b)?.to_f32()?,
                        None => vec![0.0; m as usize],
                    };
                    let b: Vec<f32> = (0..m as usize).map(|i| b0[i] + cv[if cv.len() == 1 { 0 } else { i }]).collect();
                    Some(vec![TensorData::from_f32(&[m], &b)?])
                });
                let Some(bias) = bias else { continue };
                if let Some(n) = add_op(eg, conv.into(), vec![cch[0], cch[1], bias[0]]) {
                    out.push((n, named(eg, conv_id, "")));
                }
            }
        }
    }
    out
}
