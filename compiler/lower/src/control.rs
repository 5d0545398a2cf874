//! Control flow as schedule steps. A loop: its body's program (lowered like any graph,
//! planned in the loop's workspace) spliced into the outer program inside a `loop` step,
//! with copies that set the carried values up before it and hand them out after it. An
//! if: its branches' programs, planned in its workspace, spliced into one `if` step.
use crate::LowerError;
use dlc_ir::ops::Loop;
use dlc_kir::{BufKind, Buffer, Expr, Program, Step};
use dlc_passes::{IfLayout, LoopLayout};

/// The steps of loop `l` (node `name`) whose workspace starts at byte `ws` of the
/// arena: `outer` are the buffers of its operands, `results` of its results; `body` is
/// its body's program, whose buffers, kernels and steps join `p`.
#[allow(clippy::too_many_arguments)]
pub fn loop_steps(
    p: &mut Program,
    name: &str,
    l: &Loop,
    lay: &LoopLayout,
    ws: &Expr,
    outer: &[u32],
    results: &[u32],
    body: Program,
) -> Result<Vec<Step>, LowerError> {
    let err = |reason: String| LowerError { node: name.to_string(), op: "loop", reason };
    let g = &*l.body.0;
    let (n, first) = (l.carried as usize, usize::from(l.check));
    let bytes = |t: &dlc_ir::TensorType| crate::program::bytes(t);
    let arena = |p: &mut Program, what: String, off: &Expr, size: Expr| -> u32 {
        p.buffers.push(Buffer {
            name: format!("{name}/{what}"),
            kind: BufKind::Arena(ws + off),
            bytes: size,
            ty: None,
        });
        p.buffers.len() as u32 - 1
    };
    let ins: Vec<&dlc_ir::TensorType> = g.inputs().iter().map(|&id| &g.node(id).outputs[0]).collect();
    let outs: Vec<&dlc_ir::TensorType> = g.outputs().iter().map(|(_, v)| g.value_type(*v)).collect();
    let iter = arena(p, "iter".into(), &lay.iter, Expr::c(8));
    let cond = arena(p, "cond".into(), &lay.cond, Expr::c(1));
    let cond_out = arena(p, "cond_out".into(), &lay.cond_out, Expr::c(1));
    let state: Vec<u32> = (0..n).map(|k| arena(p, format!("state{k}"), &lay.state[k], bytes(ins[2 + k]))).collect();
    let next: Vec<u32> = (0..n).map(|k| arena(p, format!("next{k}"), &lay.next[k], bytes(outs[first + k]))).collect();
    let scans: Vec<u32> =
        (0..lay.scans.len()).map(|j| arena(p, format!("scan{j}"), &lay.scans[j], bytes(outs[first + n + j]))).collect();
    // The body's buffers, as buffers of `p`.
    let steps = splice(p, name, "loop", "l", body, |p, b| {
        Ok(match b.kind {
            BufKind::Input(0) => iter,
            BufKind::Input(1) => cond,
            BufKind::Input(i) if (i as usize) < 2 + n => state[i as usize - 2],
            // Outer values: body input i is the loop's operand i.
            BufKind::Input(i) => *outer.get(i as usize).ok_or_else(|| err(format!("internal: body input {i}")))?,
            BufKind::Output(0) if l.check => cond_out,
            BufKind::Output(j) if (j as usize) < first + n => next[j as usize - first],
            BufKind::Output(j) => {
                *scans.get(j as usize - first - n).ok_or_else(|| err(format!("internal: body output {j}")))?
            }
            BufKind::Const(_) => {
                p.buffers.push(Buffer { name: format!("{name}/{}", b.name), ..b });
                p.buffers.len() as u32 - 1
            }
            BufKind::Arena(off) => arena(p, b.name, &(&lay.body + &off), b.bytes),
        })
    })?;
    let count = l.count_expr().ok_or_else(|| err(format!("internal: count '{}'", l.count)))?;
    let mut out: Vec<Step> = (0..n).map(|k| Step::Copy { dst: state[k], src: outer[2 + k] }).collect();
    out.push(Step::Copy { dst: cond, src: outer[1] });
    let mut carried: Vec<(u32, u32)> = state.iter().copied().zip(next.iter().copied()).collect();
    if l.check {
        carried.push((cond, cond_out));
    }
    out.push(Step::Loop {
        count,
        index: Some(iter),
        cond: l.check.then_some(cond),
        carried,
        scans: scans.iter().enumerate().map(|(j, &s)| (results[n + j], s)).collect(),
        body: steps,
    });
    out.extend((0..n).map(|k| Step::Copy { dst: results[k], src: state[k] }));
    Ok(out)
}

/// `steps` with buffer `b` read as `map[b]` and kernel `k` as `k + koff`.
fn remap(steps: Vec<Step>, map: &[u32], koff: u32) -> Vec<Step> {
    let m = |b: u32| map[b as usize];
    let pairs = |v: Vec<(u32, u32)>| v.into_iter().map(|(a, b)| (m(a), m(b))).collect();
    steps
        .into_iter()
        .map(|s| match s {
            Step::Call { kernel, args, label } => {
                Step::Call { kernel: kernel + koff, args: args.into_iter().map(m).collect(), label }
            }
            Step::Copy { dst, src } => Step::Copy { dst: m(dst), src: m(src) },
            Step::If { cond, then, els } => {
                Step::If { cond: m(cond), then: remap(then, map, koff), els: remap(els, map, koff) }
            }
            Step::Bind { kernel, args, syms, label } => {
                Step::Bind { kernel: kernel + koff, args: args.into_iter().map(m).collect(), syms, label }
            }
            Step::Loop { count, index, cond, carried, scans, body } => Step::Loop {
                count,
                index: index.map(m),
                cond: cond.map(m),
                carried: pairs(carried),
                scans: pairs(scans),
                body: remap(body, map, koff),
            },
        })
        .collect()
}

/// The steps of if `op` (node `name`) whose workspace starts at byte `ws` of the arena:
/// `outer` are the buffers of its operands (the condition first), `results` of its
/// results; `then` and `els` are its branches' programs, whose buffers, kernels and
/// steps join `p` inside one `if` step. A branch reads the if's operands and writes its
/// results in place; its arena is the workspace (the else-branch's at `lay.els`).
#[allow(clippy::too_many_arguments)]
pub fn if_steps(
    p: &mut Program,
    name: &str,
    lay: &IfLayout,
    ws: &Expr,
    outer: &[u32],
    results: &[u32],
    then: Program,
    els: Program,
) -> Result<Vec<Step>, LowerError> {
    let err = |reason: String| LowerError { node: name.to_string(), op: "if", reason };
    let branch = |p: &mut Program, prog: Program, tag: &str, at: &Expr| {
        splice(p, name, "if", tag, prog, |p, b| {
            Ok(match b.kind {
                BufKind::Input(i) => {
                    *outer.get(i as usize + 1).ok_or_else(|| err(format!("internal: branch input {i}")))?
                }
                BufKind::Output(j) => *results.get(j as usize).ok_or_else(|| err(format!("internal: output {j}")))?,
                BufKind::Const(_) => {
                    p.buffers.push(Buffer { name: format!("{name}/{}", b.name), ..b });
                    p.buffers.len() as u32 - 1
                }
                BufKind::Arena(off) => {
                    p.buffers.push(Buffer {
                        name: format!("{name}/{tag}/{}", b.name),
                        kind: BufKind::Arena(&(ws + at) + &off),
                        bytes: b.bytes,
                        ty: None,
                    });
                    p.buffers.len() as u32 - 1
                }
            })
        })
    };
    let then = branch(p, then, "t", &Expr::c(0))?;
    let els = branch(p, els, "e", &lay.els)?;
    let cond = *outer.first().ok_or_else(|| err("internal: no condition".into()))?;
    Ok(vec![Step::If { cond, then, els }])
}

/// Joins `body`, the program of a loop's body or an if's branch (node `name`, op `op`),
/// to `p`: each of its buffers becomes the buffer of `p` that `buffer` gives, its
/// kernels are renamed with `tag` and their number (kernel names are unique in a
/// program), its symbols must be `p`'s, its constraints become `p`'s; its schedule,
/// reading `p`'s buffers and kernels, is returned.
fn splice(
    p: &mut Program,
    name: &str,
    op: &'static str,
    tag: &str,
    body: Program,
    mut buffer: impl FnMut(&mut Program, Buffer) -> Result<u32, LowerError>,
) -> Result<Vec<Step>, LowerError> {
    let err = |reason: String| LowerError { node: name.to_string(), op, reason };
    let mut map = Vec::with_capacity(body.buffers.len());
    for b in body.buffers {
        map.push(buffer(p, b)?);
    }
    for s in body.symbols {
        if s.computed {
            return Err(err(format!(
                "the {op}'s body computes the extent '{}' from tensor values with no bound; inside a {op} that is not \
                 supported yet",
                s.name
            )));
        }
        // The outer program lists the body's data symbols too (`data_symbols`).
        if !p.symbols.iter().any(|o| o.name == s.name) {
            return Err(err(format!("internal: the body's dim '{}' is not the outer program's", s.name)));
        }
    }
    p.constraints.extend(body.constraints);
    let koff = p.kernels.len() as u32;
    p.kernels.extend(body.kernels.into_iter().map(|mut k| {
        k.name = format!("{tag}{koff}_{}", k.name);
        k
    }));
    Ok(remap(body.schedule, &map, koff))
}
