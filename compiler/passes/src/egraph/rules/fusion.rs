//! Elementwise-chain fusion: an elementwise op (or fused kernel) whose operand is
//! produced by another elementwise op (or fused kernel) used by nothing else absorbs it,
//! so any chain or tree of elementwise and broadcast ops becomes one fused kernel.
use super::{named, Rule};
use crate::egraph::lang::{add_op, ops_of, used_only_by, EGraph};
use dlc_ir::ops::{Arg, Fused, FusedStep};
use dlc_ir::{Op, OpKind};
use egg::Id;

/// Programs stay small: bounded steps and operands keep the e-graph bounded too.
const MAX_STEPS: usize = 24;
const MAX_OPERANDS: usize = 8;

/// The rules of this family.
pub fn rules() -> Vec<Rule> {
    vec![Rule {
        name: "elementwise-chain",
        doc: "f(..., g(ys), ...) with f, g elementwise (or fused) and g's value used only by f -> fused[g; f](..., ys, ...)",
        looks_at: |op| op.kind() == OpKind::Elementwise,
        derive: chain,
    }]
}

/// An elementwise node as a program over its operands.
fn program(op: &Op, n: usize) -> Vec<FusedStep> {
    match op {
        Op::Fused(f) => f.steps.clone(),
        op => vec![FusedStep { op: op.clone(), args: (0..n as u32).map(Arg::Operand).collect() }],
    }
}

/// Inlines `inner` (over `inner_ops`) as operand `at` of `outer` (over `outer_ops`).
fn inline(
    outer: &[FusedStep],
    outer_ops: &[Id],
    at: usize,
    inner: &[FusedStep],
    inner_ops: &[Id],
) -> (Vec<FusedStep>, Vec<Id>) {
    let mut operands: Vec<Id> = Vec::new();
    let slot = |id: Id, operands: &mut Vec<Id>| -> u32 {
        match operands.iter().position(|&o| o == id) {
            Some(p) => p as u32,
            None => {
                operands.push(id);
                operands.len() as u32 - 1
            }
        }
    };
    let mut steps = Vec::with_capacity(inner.len() + outer.len());
    for s in inner {
        let args = s
            .args
            .iter()
            .map(|a| match *a {
                Arg::Operand(i) => Arg::Operand(slot(inner_ops[i as usize], &mut operands)),
                step => step,
            })
            .collect();
        steps.push(FusedStep { op: s.op.clone(), args });
    }
    let shift = inner.len() as u32;
    let inner_result = Arg::Step(shift - 1);
    for s in outer {
        let args = s
            .args
            .iter()
            .map(|a| match *a {
                Arg::Operand(i) if i as usize == at => inner_result,
                Arg::Operand(i) => Arg::Operand(slot(outer_ops[i as usize], &mut operands)),
                Arg::Step(k) => Arg::Step(k + shift),
            })
            .collect();
        steps.push(FusedStep { op: s.op.clone(), args });
    }
    (steps, operands)
}

fn chain(eg: &mut EGraph, id: Id) -> Vec<(Id, String)> {
    let mut out = Vec::new();
    for (op, ch) in ops_of(eg, id) {
        if op.kind() != OpKind::Elementwise {
            continue;
        }
        let outer = program(&op, ch.len());
        for (at, &c) in ch.iter().enumerate() {
            let others: Vec<Id> = ch.iter().copied().filter(|&o| eg.find(o) != eg.find(c)).collect();
            if ch.iter().filter(|&&o| eg.find(o) == eg.find(c)).count() > 1 || !used_only_by(eg, c, id, &others) {
                continue;
            }
            for (inner_op, inner_ch) in ops_of(eg, c) {
                if inner_op.kind() != OpKind::Elementwise {
                    continue;
                }
                let inner = program(&inner_op, inner_ch.len());
                let (steps, operands) = inline(&outer, &ch, at, &inner, &inner_ch);
                if steps.len() > MAX_STEPS || operands.len() > MAX_OPERANDS {
                    continue;
                }
                if let Some(n) = add_op(eg, Fused { steps }.into(), operands) {
                    out.push((n, named(eg, id, "")));
                }
            }
        }
    }
    out
}
