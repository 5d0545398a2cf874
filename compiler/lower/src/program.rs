//! A whole graph as one kir program: buffers from the memory plan (the caller's inputs
//! and outputs, constants, arena slices), one kernel call per compute node in plan
//! order, and copies for outputs not computed in place.
//!
//! Every compute op has a kernel ([`crate::lower`]). A constant that every kernel reading
//! it packs into its own copy at compile time (and that is not an output) is an empty
//! constant buffer: its bytes live in the kernels' `data` arrays only. The LLVM
//! backend compiles a graph through this program, as it compiles a `.kir` file.
use crate::{lower, LowerError, Node, Target};
use dlc_ir::{Graph, Op, TensorType, Value};
use dlc_kir::{BufKind, Buffer, Expr, Program, Step, Symbol};
use dlc_passes::{Location, MemoryPlan};
use std::collections::HashMap;

/// The size of a tensor of type `t` in bytes.
pub(crate) fn bytes(t: &TensorType) -> Expr {
    Node::dims(t).iter().fold(Expr::c(t.dtype.size() as i64), |a, d| &a * d)
}

/// `f` of node `id` as a lowering sees it.
fn with_node<R>(g: &Graph, id: dlc_ir::NodeId, f: impl FnOnce(&Node) -> R) -> R {
    let node = g.node(id);
    let operands = g.operands(id);
    let inputs: Vec<TensorType> = operands.iter().map(|v| g.value_type(*v).clone()).collect();
    let consts: Vec<Option<&dlc_ir::TensorData>> = operands
        .iter()
        .map(|v| match &g.node(v.node).op {
            Op::Const(c) => Some(&c.value),
            _ => None,
        })
        .collect();
    let bounds = crate::operand_max(g, id);
    f(&Node {
        name: &node.name,
        op: &node.op,
        inputs: &inputs,
        outputs: &node.outputs,
        consts: &consts,
        operand_max: &bounds,
    })
}

/// Whether the kernel of `n` reads its operand `operand` only from a copy it packs at
/// compile time (the packed GEMM's B, the channel-blocked Conv's weights, QConv's
/// weights and their scales, int_matmul's weights and their zero points).
pub fn prepacks(n: &Node, operand: usize, t: &Target) -> bool {
    match n.op {
        Op::QConv(_) => (1..=3).contains(&operand) && (1..=3).all(|i| n.consts.get(i).is_some_and(|c| c.is_some())),
        Op::IntMatMul(_) => {
            (operand == 1 || operand == 3) && [1, 3].iter().all(|&i| n.consts.get(i).is_some_and(|c| c.is_some()))
        }
        Op::Conv(op) => operand == 1 && crate::convblk::applies(n, op, t).is_some(),
        _ => operand == 1 && crate::gemm::plan(n).is_some(),
    }
}

/// Whether constant node `id` is read only through copies its users' kernels pack.
fn only_packed(g: &Graph, id: dlc_ir::NodeId, t: &Target, family: Family) -> bool {
    let users = g.users(id);
    family == Family::Cpu
        && !users.is_empty()
        && !g.outputs().iter().any(|(_, v)| v.node == id)
        && users.iter().all(|&(u, operand, _)| with_node(g, u, |n| prepacks(n, operand as usize, t)))
}

/// The run-time dims of `g`: every symbol its inputs' dims mention, in order of first
/// appearance (the order of the `dims` array of the artifact's C ABI).
pub fn symbols(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for &id in g.inputs() {
        for d in &g.node(id).outputs[0].shape.0 {
            d.expr().symbols(&mut out);
        }
    }
    out
}

/// The operand of node `id` whose values a CPU program checks at run time before the
/// node's kernel ([`crate::check`]): indices that are not constant. CUDA programs have
/// no `bind` steps yet: their kernels clamp.
pub fn index_check(g: &Graph, id: dlc_ir::NodeId, family: Family) -> Option<usize> {
    if family != Family::Cpu {
        return None;
    }
    let (operand, ..) = with_node(g, id, crate::check::index_operand)?;
    let v = *g.operands(id).get(operand)?;
    (!matches!(g.node(v.node).op, Op::Const(_))).then_some(operand)
}

/// The labels of the `bind` steps [`program`] schedules for `g` under `plan`, in order
/// (the manifest's bind sites: a failing step's status names its index here): Bind
/// nodes and run-time index checks, each labelled with its node's name.
pub fn bind_sites(g: &Graph, plan: &MemoryPlan, family: Family) -> Vec<String> {
    let mut sites = Vec::new();
    // A body's sites under its node's name (the importer's names of body nodes begin
    // with it already).
    let under = |node: &str, s: String| match s.starts_with(&format!("{node}/")) {
        true => s,
        false => format!("{node}/{s}"),
    };
    for &id in &plan.order {
        let node = g.node(id);
        let here = match &node.op {
            Op::Bind(_) => true,
            Op::Input(_) | Op::Const(_) => false,
            // A loop's: its body's, in its body's order, named by the loop; an if's: its
            // then-branch's, then its else-branch's (the order of the schedule's steps).
            Op::Loop(l) => {
                if let Some((_, layout)) = plan.loops.get(&id) {
                    let inner = bind_sites(&l.body.0, &layout.plan, family);
                    sites.extend(inner.into_iter().map(|s| under(&node.name, s)));
                }
                false
            }
            Op::If(op) => {
                if let Some((_, layout)) = plan.ifs.get(&id) {
                    for (b, bp) in [(&op.then, &layout.then_plan), (&op.els, &layout.els_plan)] {
                        let inner = bind_sites(&b.0, bp, family);
                        sites.extend(inner.into_iter().map(|s| under(&node.name, s)));
                    }
                }
                false
            }
            _ => !plan.views.contains(&id) && index_check(g, id, family).is_some(),
        };
        if here {
            sites.push(node.name.clone());
        }
    }
    sites
}

/// Which kernels a program's calls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The CPU kernels ([`crate::lower`]): pool tasks, vectors, packed weights.
    Cpu,
    /// The CUDA kernels ([`crate::cuda::lower`]): block kernels, one element per thread,
    /// or a CPU loop nest on one thread. Every constant is a buffer (device memory).
    Cuda,
}

/// The kir program of `g` under `plan`, its kernels lowered for target `t` from
/// `family`. A node with run-time dims gets its one-sample kernel run over its batch
/// ([`crate::batch`]); each call is labelled with its node's name. Kernels that differ
/// only in the weights they packed share one code ([`dlc_kir::transform::share_kernel_code`]).
pub fn program(g: &Graph, plan: &MemoryPlan, t: &Target, family: Family) -> Result<Program, LowerError> {
    let mut p = lower_program(g, plan, t, family)?;
    let shared = dlc_kir::transform::share_kernel_code(&mut p);
    tracing::debug!(kernels = p.kernels.len(), shared, "kernels taking their weights as parameters");
    Ok(p)
}

/// [`program`] before kernels share code (control flow's bodies are lowered by it too).
fn lower_program(g: &Graph, plan: &MemoryPlan, t: &Target, family: Family) -> Result<Program, LowerError> {
    let mut p = Program { name: g.name.clone(), arena_bytes: plan.arena_expr(), ..Program::default() };
    let mins = dlc_ir::implied::symbol_minimums(g);
    p.symbols = symbols(g)
        .into_iter()
        .map(|name| {
            let min = mins.get(&name).map_or(0, |m| m.0 as i64);
            Symbol { name, min, data: None, computed: false }
        })
        .collect();
    let err = |e: dlc_ir::IrError| LowerError { node: g.name.clone(), op: "program", reason: e.to_string() };
    p.constraints = dlc_ir::implied::constraints(g).map_err(err)?.into_iter().map(|c| (c.lhs, c.rhs)).collect();
    // Dims computed from tensor values, bound by the schedule's `bind` steps.
    let maxima = dlc_ir::bind::symbol_maxima(g).map_err(|e| LowerError {
        node: g.name.clone(),
        op: "program",
        reason: e.to_string(),
    })?;
    let computed = dlc_ir::bind::computed_symbols(g);
    if !computed.is_empty() && family != Family::Cpu {
        return Err(LowerError {
            node: g.name.clone(),
            op: "program",
            reason: format!(
                "dims computed from tensor values with no bound ({}) are supported on the CPU only",
                computed.join(", ")
            ),
        });
    }
    for name in dlc_ir::bind::data_symbols(g) {
        if computed.contains(&name) {
            p.symbols.push(Symbol { name, min: 0, data: None, computed: true });
            continue;
        }
        let max = maxima.get(&name).cloned().unwrap_or_else(|| Expr::c(i64::MAX));
        p.symbols.push(Symbol { name, min: 0, data: Some(max), computed: false });
    }
    // The schedule steps each node's lowering adds (for the prologue).
    let mut steps_of: HashMap<dlc_ir::NodeId, std::ops::Range<usize>> = HashMap::new();
    let mut bufs: HashMap<((u8, u64), Expr), u32> = HashMap::new();
    let mut buffer = |p: &mut Program, v: Value, name: &str| -> u32 {
        let ty = g.value_type(v);
        let loc = plan.loc(v);
        let packed = matches!(loc, Location::Const(id) if only_packed(g, id, t, family));
        let size = if packed { Expr::c(0) } else { bytes(ty) };
        let key = match loc {
            Location::Input(i) => (0, i as u64),
            Location::Output(i) => (1, i as u64),
            Location::Const(id) => (2, id.index() as u64),
            Location::Arena(off) => (3, off),
            Location::Scaled { region, offset } => (4 + region as u8, offset),
        };
        *bufs.entry((key, size.clone())).or_insert_with(|| {
            let kind = match loc {
                Location::Input(i) => BufKind::Input(i as u32),
                Location::Output(i) => BufKind::Output(i as u32),
                Location::Const(id) => match &g.node(id).op {
                    Op::Const(c) if !packed => BufKind::Const(std::sync::Arc::from(c.value.bytes())),
                    _ => BufKind::Const(std::sync::Arc::from(Vec::new())),
                },
                Location::Arena(_) | Location::Scaled { .. } => {
                    BufKind::Arena(plan.offset_expr(loc).expect("an arena location"))
                }
            };
            // The caller's tensors carry the names and types the model declares (a view
            // of an input, such as a Reshape of it, lives in the input's buffer too).
            let (name, ty) = match loc {
                Location::Input(i) => {
                    let id = g.inputs()[i];
                    (g.node(id).name.clone(), Some(g.node(id).outputs[0].to_string()))
                }
                Location::Output(i) => (g.outputs()[i].0.clone(), Some(g.value_type(g.outputs()[i].1).to_string())),
                Location::Const(_) | Location::Arena(_) | Location::Scaled { .. } => (name.to_string(), None),
            };
            p.buffers.push(Buffer { name, kind, bytes: size, ty });
            p.buffers.len() as u32 - 1
        })
    };
    let mut open: Option<(dlc_ir::NodeId, usize)> = None;
    for &id in &plan.order {
        if let Some((prev, first)) = open.replace((id, p.schedule.len())) {
            steps_of.insert(prev, first..p.schedule.len());
        }
        let node = g.node(id);
        if let Op::Bind(b) = &node.op {
            // Its result is a view of its operand; its rule's kernel binds the symbols.
            let kname = format!("k{}_bind", p.kernels.len());
            let k =
                with_node(g, id, |n| lower(&kname, n, t).unwrap_or_else(|| Err(n.error("internal: no bind kernel"))))?;
            let shape = g.operands(id)[1];
            let args = vec![buffer(&mut p, shape, &g.node(shape.node).name.clone())];
            p.kernels.push(k);
            // A number entry binds nothing (its rule checked the value).
            let syms = b
                .entries()
                .map(|s| if dlc_ir::ops::Bind::fixed_entry(s).is_some() { "_".into() } else { s.to_string() })
                .collect();
            p.schedule.push(Step::Bind {
                kernel: p.kernels.len() as u32 - 1,
                args,
                syms,
                label: Some(node.name.clone()),
            });
            if !plan.views.contains(&id) {
                // Not a view (its result is an output): its operand's bytes are copied.
                let x = g.operands(id)[0];
                let src = buffer(&mut p, x, &g.node(x.node).name.clone());
                let dst = buffer(&mut p, Value { node: id, port: 0 }, &node.name);
                p.schedule.push(Step::Copy { dst, src });
            }
            continue;
        }
        if matches!(node.op, Op::Input(_) | Op::Const(_)) || plan.views.contains(&id) {
            continue;
        }
        if matches!(node.op, Op::Loop(_) | Op::If(_)) {
            // Control flow: its bodies' programs, planned in its workspace, as steps.
            let op = node.op.mnemonic();
            let err = |reason: String| LowerError { node: node.name.clone(), op, reason };
            if family != Family::Cpu {
                return Err(err(match op {
                    "loop" => "loops run on the CPU only for now (compile for a CPU target)".into(),
                    _ => "internal: CUDA programs take both branches (dlc_passes::speculate_ifs)".into(),
                }));
            }
            let ws_loc = match &node.op {
                Op::Loop(_) => plan.loops.get(&id).map(|w| w.0),
                _ => plan.ifs.get(&id).map(|w| w.0),
            };
            let ws_loc = ws_loc.ok_or_else(|| err("internal: the plan has no workspace".into()))?;
            let ws =
                plan.offset_expr(ws_loc).ok_or_else(|| err("internal: the workspace is not in the arena".into()))?;
            let mut outer = Vec::new();
            for v in g.operands(id) {
                let name = g.node(v.node).name.clone();
                outer.push(buffer(&mut p, v, &name));
            }
            let results: Vec<u32> = (0..node.outputs.len() as u32)
                .map(|port| buffer(&mut p, Value { node: id, port }, &node.name))
                .collect();
            let steps = match (&node.op, plan.loops.get(&id), plan.ifs.get(&id)) {
                (Op::Loop(l), Some((_, lay)), _) => {
                    let body = lower_program(&l.body.0, &lay.plan, t, family)?;
                    crate::control::loop_steps(&mut p, &node.name, l, lay, &ws, &outer, &results, body)?
                }
                (Op::If(i), _, Some((_, lay))) => {
                    let then = lower_program(&i.then.0, &lay.then_plan, t, family)?;
                    let els = lower_program(&i.els.0, &lay.els_plan, t, family)?;
                    crate::control::if_steps(&mut p, &node.name, lay, &ws, &outer, &results, then, els)?
                }
                _ => return Err(err("internal: the plan has no workspace".into())),
            };
            p.schedule.extend(steps);
            continue;
        }
        let operands = g.operands(id);
        with_node(g, id, crate::check::check_const)?;
        if let Some(operand) = index_check(g, id, family) {
            // The indices' values, checked before the kernel that clamps them.
            let kname = format!("k{}_check", p.kernels.len());
            let k = with_node(g, id, |n| {
                crate::check::kernel(&kname, n).unwrap_or_else(|| Err(n.error("internal: no index check")))
            })?;
            let v = operands[operand];
            let args = vec![buffer(&mut p, v, &g.node(v.node).name.clone())];
            p.kernels.push(k);
            p.schedule.push(Step::Bind {
                kernel: p.kernels.len() as u32 - 1,
                args,
                syms: Vec::new(),
                label: Some(node.name.clone()),
            });
        }
        let kname = format!("k{}_{}", p.kernels.len(), node.op.mnemonic());
        let k = with_node(g, id, |n| {
            if family == Family::Cuda {
                return crate::cuda::lower(&kname, n, t)
                    .unwrap_or_else(|| Err(n.error("internal: no CUDA kernel for a compute node")));
            }
            // Fixed shapes, or a packed GEMM, which tiles run-time rows itself (whole
            // register blocks, then the remainder's tile chosen at run time).
            if n.inputs.iter().chain(n.outputs).all(|x| x.shape.is_fixed()) || crate::gemm::plan(n).is_some() {
                lower(&kname, n, t).ok_or_else(|| n.error("internal: no kernel for this op"))?
            } else {
                // The one-sample kernel over a run-time batch keeps every tile constant;
                // where that does not apply, a lowering whose extents are expressions
                // (data movement, elementwise, reductions, ...) takes the symbols as
                // they are; the batch rule's reason names the node otherwise.
                crate::batch::lower_batched(&kname, n, t).or_else(|e| match lower(&kname, n, t) {
                    Some(Ok(k)) => Ok(k),
                    _ => Err(e),
                })
            }
        })?;
        let mut args = Vec::new();
        for v in &operands {
            let name = g.node(v.node).name.clone();
            args.push(buffer(&mut p, *v, &name));
        }
        for port in 0..node.outputs.len() as u32 {
            args.push(buffer(&mut p, Value { node: id, port }, &node.name));
        }
        p.kernels.push(k);
        let label = Some(node.name.clone());
        p.schedule.push(Step::Call { kernel: p.kernels.len() as u32 - 1, args, label });
    }
    if let Some((prev, first)) = open {
        steps_of.insert(prev, first..p.schedule.len());
    }
    if !computed.is_empty() {
        p.prologue = prologue(g, plan, &computed, &steps_of)?;
    }
    // Outputs not computed in place: model inputs, constants, or a value listed twice.
    for (i, (name, v)) in g.outputs().iter().enumerate() {
        if plan.loc(*v) != Location::Output(i) {
            let src = buffer(&mut p, *v, name);
            p.buffers.push(Buffer {
                name: name.clone(),
                kind: BufKind::Output(i as u32),
                bytes: bytes(g.value_type(*v)),
                ty: Some(g.value_type(*v).to_string()),
            });
            p.schedule.push(Step::Copy { dst: p.buffers.len() as u32 - 1, src });
        }
    }
    dlc_kir::verify::program(&p).map_err(|e| LowerError {
        node: g.name.clone(),
        op: "program",
        reason: format!("internal: lowered program does not verify: {e}"),
    })?;
    Ok(p)
}

/// The schedule steps that compute the computed dims `computed` of `g`: the Bind
/// nodes that bind them and every node they read from (through views), which must
/// not themselves have computed dims (the prologue lays the arena out with them 0)
/// nor be model outputs (the caller has not allocated those yet).
fn prologue(
    g: &Graph,
    plan: &MemoryPlan,
    computed: &[String],
    steps_of: &HashMap<dlc_ir::NodeId, std::ops::Range<usize>>,
) -> Result<Vec<u32>, LowerError> {
    let mentions = |t: &TensorType| {
        let mut v = Vec::new();
        for d in &t.shape.0 {
            d.expr().symbols(&mut v);
        }
        v.iter().any(|s| computed.contains(s))
    };
    // (node, whether only its shape operand is needed: a Values bind, for its symbols;
    // a node whose result is read needs every operand, a Bind's viewed one included).
    let mut stack: Vec<(dlc_ir::NodeId, bool)> = plan
        .order
        .iter()
        .copied()
        .filter(|&id| matches!(&g.node(id).op, Op::Bind(b) if b.symbols().any(|s| computed.iter().any(|c| c == s))))
        .map(|id| (id, true))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut steps = Vec::new();
    while let Some((id, shape_only)) = stack.pop() {
        if !seen.insert((id, shape_only)) {
            continue;
        }
        let node = g.node(id);
        let err = |reason: String| LowerError { node: node.name.clone(), op: node.op.mnemonic(), reason };
        let is_bind = matches!(node.op, Op::Bind(_));
        if !is_bind && node.outputs.iter().any(mentions) {
            return Err(err("a dim computed at run time from values that themselves have dims computed at run time \
                 is not supported yet"
                .into()));
        }
        for port in 0..node.outputs.len() as u32 {
            if matches!(plan.loc(Value { node: id, port }), Location::Output(_)) && !is_bind {
                return Err(err("a dim computed at run time from a model output is not supported yet".into()));
            }
        }
        match steps_of.get(&id) {
            // A Bind's own step (not the copy of a Bind that is a model output).
            Some(r) if is_bind => steps.push(r.start as u32),
            Some(r) => steps.extend(r.clone().map(|i| i as u32)),
            None => {}
        }
        let operands = g.operands(id);
        let read = if shape_only { &operands[1..] } else { &operands[..] };
        stack.extend(read.iter().map(|v| (v.node, false)));
    }
    steps.sort_unstable();
    steps.dedup();
    Ok(steps)
}
