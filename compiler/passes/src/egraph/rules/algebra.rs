//! Algebra: identities with constants, collapsed transposes and reshapes, MatMul+Add as
//! Gemm. Every rule keeps the value's type (the runner checks).
use super::{named, Rule};
use crate::egraph::lang::derived_consts;
use crate::egraph::lang::{add_op, const_of, ops_of, ty_of, EGraph};
use dlc_ir::ops::{Activation, Add, Gemm, Mul, Reshape, Transpose};
use dlc_ir::{DType, Op, OpKind, TensorData};
use egg::Id;

/// The rules of this family.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "mul-one",
            doc: "x * 1 -> x (either operand; only where the product has x's type)",
            looks_at: |op| matches!(op, Op::Mul(_)),
            derive: |eg, id| identity_operand(eg, id, |op| matches!(op, Op::Mul(_)), 1.0, true),
        },
        Rule {
            name: "div-one",
            doc: "x / 1 -> x",
            looks_at: |op| matches!(op, Op::Div(_)),
            derive: |eg, id| identity_operand(eg, id, |op| matches!(op, Op::Div(_)), 1.0, false),
        },
        Rule {
            name: "add-zero",
            doc: "x + 0 -> x (either operand; -0 + 0 gives -0 instead of +0)",
            looks_at: |op| matches!(op, Op::Add(_)),
            derive: |eg, id| identity_operand(eg, id, |op| matches!(op, Op::Add(_)), 0.0, true),
        },
        Rule {
            name: "sub-zero",
            doc: "x - 0 -> x",
            looks_at: |op| matches!(op, Op::Sub(_)),
            derive: |eg, id| identity_operand(eg, id, |op| matches!(op, Op::Sub(_)), 0.0, false),
        },
        Rule {
            name: "sub-const",
            doc: "x - c -> x + (-c) for a constant c (exact; one form for the other rules)",
            looks_at: |op| matches!(op, Op::Sub(_)),
            derive: sub_const,
        },
        Rule {
            name: "div-pow2",
            doc: "x / c -> x * (1/c) for a constant c whose elements are powers of two (exact)",
            looks_at: |op| matches!(op, Op::Div(_)),
            derive: div_pow2,
        },
        Rule {
            name: "transpose-unary",
            doc: "u(transpose(x)) <-> transpose(u(x)) for unary elementwise u, so transposes meet and cancel",
            looks_at: |op| {
                matches!(op, Op::Transpose(_)) || (op.kind() == OpKind::Elementwise && op.info().max_operands == 1)
            },
            derive: transpose_unary,
        },
        Rule {
            name: "transpose-transpose",
            doc: "transpose(p1, transpose(p2, x)) -> transpose(p2 . p1, x), or x when that is the identity",
            looks_at: |op| matches!(op, Op::Transpose(_)),
            derive: transpose_transpose,
        },
        Rule {
            name: "reshape-reshape",
            doc: "reshape(reshape(x)) -> reshape(x); a reshape to the operand's own shape -> x",
            looks_at: |op| matches!(op, Op::Reshape(_) | Op::Flatten(_)),
            derive: reshape_reshape,
        },
        Rule {
            name: "matmul-add-gemm",
            doc: "2-D matmul(a, b) + c -> gemm(a, b, c) when c broadcasts to the product",
            looks_at: |op| matches!(op, Op::Add(_)),
            derive: matmul_add_gemm,
        },
    ]
}

/// Whether class `id` is an f32 constant whose every element is `v`.
pub(crate) fn is_splat(eg: &EGraph, id: Id, v: f32) -> bool {
    const_of(eg, id)
        .is_some_and(|t| t.ty().dtype == DType::F32 && t.to_f32().is_some_and(|x| x.iter().all(|&e| e == v)))
}

fn identity_operand(eg: &mut EGraph, id: Id, is: fn(&Op) -> bool, v: f32, commutes: bool) -> Vec<(Id, String)> {
    let ty = ty_of(eg, id).cloned();
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !is(&op) || ch.len() != 2 {
            continue;
        }
        let sides: &[(usize, usize)] = if commutes { &[(0, 1), (1, 0)] } else { &[(0, 1)] };
        for &(keep, other) in sides {
            if is_splat(eg, ch[other], v) && ty_of(eg, ch[keep]) == ty.as_ref() {
                out.push((ch[keep], String::new()));
            }
        }
    }
    out
}

fn transpose_transpose(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let Op::Transpose(outer) = op else { continue };
        let Some(rank) = ty_of(eg, id).map(|t| t.shape.rank()) else { continue };
        for (inner_op, inner_ch) in ops_of(eg, ch[0]) {
            let Op::Transpose(inner) = inner_op else { continue };
            let (p1, p2) = (outer.resolved_perm(rank), inner.resolved_perm(rank));
            let q = dlc_ir::ops::compose_perms(&p2, &p1);
            if dlc_ir::ops::is_identity_perm(&q) {
                out.push((inner_ch[0], String::new()));
            } else {
                let t = Transpose { perm: q.iter().map(|&p| p as i64).collect() };
                if let Some(n) = add_op(eg, t.into(), vec![inner_ch[0]]) {
                    out.push((n, named(eg, id, "")));
                }
            }
        }
    }
    out
}

fn reshape_reshape(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let Some(ty) = ty_of(eg, id).cloned() else { return Vec::new() };
    let Some(dims) = ty.shape.as_fixed() else { return Vec::new() };
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !matches!(op, Op::Reshape(_) | Op::Flatten(_)) {
            continue;
        }
        if ty_of(eg, ch[0]) == Some(&ty) {
            out.push((ch[0], String::new()));
            continue;
        }
        for (inner, inner_ch) in ops_of(eg, ch[0]) {
            if matches!(inner, Op::Reshape(_) | Op::Flatten(_)) {
                let r = Reshape { shape: dims.iter().map(|&d| d as i64).collect(), allowzero: true };
                if let Some(n) = add_op(eg, r.into(), vec![inner_ch[0]]) {
                    out.push((n, named(eg, id, "")));
                }
            }
        }
    }
    out
}

fn matmul_add_gemm(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !matches!(op, Op::Add(_)) {
            continue;
        }
        for (mm, c) in [(ch[0], ch[1]), (ch[1], ch[0])] {
            for (inner, ab) in ops_of(eg, mm) {
                let Op::MatMul(m) = inner else { continue };
                let two_d = ab.iter().all(|x| ty_of(eg, *x).is_some_and(|t| t.shape.rank() == 2));
                if m.act != Activation::None || ab.len() != 2 || !two_d {
                    continue;
                }
                let g = Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b: false, act: Activation::None };
                if let Some(n) = add_op(eg, g.into(), vec![ab[0], ab[1], c]) {
                    out.push((n, named(eg, mm, "")));
                }
            }
        }
    }
    out
}

/// An f32 constant with every element mapped by `f` (same shape), derived once per rule.
fn mapped_const(eg: &mut EGraph, rule: &'static str, c: Id, f: fn(f32) -> f32) -> Option<Id> {
    let ids = derived_consts(eg, rule, &[c], |eg| {
        let t = const_of(eg, c)?;
        let v: Vec<f32> = t.to_f32()?.into_iter().map(f).collect();
        Some(vec![TensorData::from_f32(&t.ty().shape.as_fixed()?, &v)?])
    })?;
    Some(ids[0])
}

fn sub_const(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if !matches!(op, Op::Sub(_)) || const_of(eg, ch[1]).and_then(|t| t.to_f32()).is_none() {
            continue;
        }
        let Some(neg) = mapped_const(eg, "sub-const", ch[1], |v| -v) else { continue };
        if let Some(n) = add_op(eg, Add {}.into(), vec![ch[0], neg]) {
            out.push((n, named(eg, id, "")));
        }
    }
    out
}

fn div_pow2(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        let pow2 = |v: f32| v != 0.0 && v.is_finite() && (v.abs().log2().fract() == 0.0) && (1.0 / v).is_normal();
        let ok = matches!(op, Op::Div(_))
            && const_of(eg, ch[1]).and_then(|t| t.to_f32()).is_some_and(|v| v.iter().all(|&x| pow2(x)));
        if !ok {
            continue;
        }
        let Some(inv) = mapped_const(eg, "div-pow2", ch[1], |v| 1.0 / v) else { continue };
        if let Some(n) = add_op(eg, Mul {}.into(), vec![ch[0], inv]) {
            out.push((n, named(eg, id, "")));
        }
    }
    out
}

fn transpose_unary(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if let Op::Transpose(t) = &op {
            // transpose(u(x)) -> u(transpose(x))
            for (u, uch) in ops_of(eg, ch[0]) {
                if u.kind() != OpKind::Elementwise || uch.len() != 1 || matches!(u, Op::Expand(_)) {
                    continue;
                }
                let Some(tx) = add_op(eg, t.clone().into(), vec![uch[0]]) else { continue };
                if let Some(n) = add_op(eg, u, vec![tx]) {
                    out.push((n, named(eg, id, "")));
                }
            }
        } else if op.kind() == OpKind::Elementwise && ch.len() == 1 && !matches!(op, Op::Expand(_)) {
            // u(transpose(x)) -> transpose(u(x))
            for (t, tch) in ops_of(eg, ch[0]) {
                let Op::Transpose(t) = t else { continue };
                let Some(ux) = add_op(eg, op.clone(), vec![tch[0]]) else { continue };
                if let Some(n) = add_op(eg, t.into(), vec![ux]) {
                    out.push((n, named(eg, id, "")));
                }
            }
        }
    }
    out
}
