//! Control flow. `If`: a condition known at compile time imports only the branch it
//! takes (the other is never compiled, and the model carries no branch); a run-time
//! condition imports each branch as a graph of its own (`dlc_ir::ops::If`), and only the
//! branch taken runs. Where that cannot be (branches whose outputs differ in type, or
//! that give sequences), both branches are imported into the graph (they are pure
//! functions of values in scope) and each output selected with `Where` — the results are
//! ONNX's, at the cost of computing both branches (the run-time indices of a branch's
//! index ops are guarded by the condition, so that only the branch taken can fail the
//! run on a bad index). `Scan` over a sequence of known
//! length is unrolled: its body imported once per step, with the states carried from step
//! to step and the scan outputs stacked.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::{Concat, Gather, Op, Transpose, View, Where};
use dlc_ir::{DType, TensorData, Value};
use onnx_protobuf::GraphProto;
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("If", if_);
    reg.insert("Scan", scan);
    reg.insert("Loop", loop_);
    reg.insert("CenterCropPad", center_crop_pad);
    reg.insert("CausalConvWithState", causal_conv_with_state);
}

/// CausalConvWithState (opset 27) as ONNX's function body: the past state (zeros when
/// absent) before the input, a depthwise Conv1d, SiLU computed in f32 when asked, and
/// the last `k - 1` positions as the present state.
fn causal_conv_with_state(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let channels = cx.ty(x).shape.0.get(1).and_then(|d| d.fixed()).ok_or("the input must be [B, C, L] with C known")?;
    let silu = match cx.string("activation", "none")?.as_str() {
        "none" => false,
        "silu" | "swish" => true,
        a => return Err(format!("activation '{a}' is not one of none, silu, swish")),
    };
    let has = |cx: &NodeCx, i: usize| cx.node.input.get(i).is_some_and(|n| !n.is_empty());
    let (bias, past) = (has(cx, 2), has(cx, 3));
    let with = |mut b: BodyNode<'static>, ints: Vec<(&'static str, Vec<i64>)>, int: Vec<(&'static str, i64)>| {
        b.ints = ints;
        b.int = int;
        b
    };
    let mut nodes = vec![
        with(body("Constant", &[], &["one"]), vec![("value_ints", vec![1])], vec![]),
        with(body("Shape", &["$1"], &["k"]), vec![], vec![("start", 2), ("end", 3)]),
        body("Sub", &["k", "one"], &["k1"]),
    ];
    if past {
        nodes.push(with(body("Concat", &["$3", "$0"], &["padded"]), vec![], vec![("axis", 2)]));
    } else {
        nodes.extend([
            with(body("Shape", &["$0"], &["batch"]), vec![], vec![("start", 0), ("end", 1)]),
            with(body("Shape", &["$0"], &["chan"]), vec![], vec![("start", 1), ("end", 2)]),
            with(body("Concat", &["batch", "chan", "k1"], &["zero_shape"]), vec![], vec![("axis", 0)]),
            body("ConstantOfShape", &["zero_shape"], &["zeros"]),
            body("CastLike", &["zeros", "$0"], &["zeros_t"]),
            with(body("Concat", &["zeros_t", "$0"], &["padded"]), vec![], vec![("axis", 2)]),
        ]);
    }
    let conv_in: &[&str] = if bias { &["padded", "$1", "$2"] } else { &["padded", "$1"] };
    nodes.push(with(body("Conv", conv_in, &["conv"]), vec![], vec![("group", channels as i64)]));
    if silu {
        nodes.extend([
            with(body("Cast", &["conv"], &["conv_f32"]), vec![], vec![("to", 1)]),
            body("Sigmoid", &["conv_f32"], &["sig"]),
            body("Mul", &["conv_f32", "sig"], &["silu"]),
            body("CastLike", &["silu", "conv"], &["y"]),
        ]);
    } else {
        nodes.push(body("Identity", &["conv"], &["y"]));
    }
    nodes.extend([
        with(body("Shape", &["padded"], &["len"]), vec![], vec![("start", 2), ("end", 3)]),
        body("Sub", &["len", "k1"], &["start"]),
        with(body("Constant", &[], &["axis2"]), vec![("value_ints", vec![2])], vec![]),
        body("Slice", &["padded", "start", "len", "axis2"], &["state"]),
    ]);
    expand(cx, nodes, &["y", "state"])
}

/// CenterCropPad (opset 18) as ONNX's function body: pad each listed axis up to the
/// target (half before, the rest after), then slice the centred window (the target
/// shape may be known only at run time: computed pads, run-time slice starts).
fn center_crop_pad(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let x = cx.input(0)?;
    let r = cx.ty(x).shape.rank() as i64;
    let axes = if cx.has("axes") { cx.ints("axes") } else { (0..r).collect() };
    let with = |mut b: BodyNode<'static>, ints: Vec<(&'static str, Vec<i64>)>, int: Vec<(&'static str, i64)>| {
        b.ints = ints;
        b.int = int;
        b
    };
    let nodes = vec![
        with(body("Constant", &[], &["axes"]), vec![("value_ints", axes.clone())], vec![]),
        with(body("Constant", &[], &["two"]), vec![], vec![("value_int", 2)]),
        body("Shape", &["$0"], &["x_shape_all"]),
        body("Gather", &["x_shape_all", "axes"], &["x_shape"]),
        body("Max", &["x_shape", "$1"], &["padded_shape"]),
        body("Sub", &["padded_shape", "x_shape"], &["pad_amount"]),
        body("Div", &["pad_amount", "two"], &["pad_left"]),
        body("Sub", &["pad_amount", "pad_left"], &["pad_right"]),
        with(body("Concat", &["pad_left", "pad_right"], &["pads"]), vec![], vec![("axis", 0)]),
        body("Pad", &["$0", "pads", "", "axes"], &["x_padded"]),
        body("Shape", &["x_padded"], &["padded_all"]),
        body("Gather", &["padded_all", "axes"], &["padded_axes"]),
        body("Sub", &["padded_axes", "$1"], &["diff"]),
        body("Div", &["diff", "two"], &["starts"]),
        body("Add", &["starts", "$1"], &["ends"]),
        body("Slice", &["x_padded", "starts", "ends", "axes"], &["y"]),
    ];
    expand(cx, nodes, &["y"])
}

pub(crate) fn branch<'n>(cx: &NodeCx<'n, '_>, name: &str) -> Result<&'n GraphProto, String> {
    let node: &'n onnx_protobuf::NodeProto = cx.node;
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| format!("attribute '{name}' (a graph) is required"))
}

/// Imports subgraph `g` into the current scope; its outputs' values, none of a rank only
/// the run decides (a Scan's or SequenceMap's outputs are stacked; see [`rank_of_uses`]).
pub(crate) fn import_branch(cx: &mut NodeCx, g: &GraphProto, what: &str) -> Result<Vec<Value>, String> {
    let outs = if_branch(cx, g, what)?;
    for (&v, o) in outs.iter().zip(&g.output) {
        of_one_rank(cx.imp, v, &format!("{what} output '{}'", o.name))?;
    }
    Ok(outs)
}

/// [`import_branch`] for an If's branch: its outputs may have a rank only the run decides
/// (the If's outputs are then such values too).
fn if_branch(cx: &mut NodeCx, g: &GraphProto, what: &str) -> Result<Vec<Value>, String> {
    use super::shapes::Out;
    import_subgraph(cx, g, what)?
        .into_iter()
        .zip(&g.output)
        .map(|(o, vi)| match o {
            Out::Value(v) => Ok(v),
            _ => Err(format!(
                "{what} output '{}' is not a tensor (dlc takes a sequence here only from If, Loop \
                 and SequenceMap)",
                vi.name
            )),
        })
        .collect()
}

/// Imports subgraph `g` (its initializers and nodes) into the current scope; its
/// outputs, tensors or sequences (a shape of run-time dims leaves as a tensor computed at
/// run time).
fn import_subgraph(cx: &mut NodeCx, g: &GraphProto, what: &str) -> Result<Vec<super::shapes::Out>, String> {
    for t in &g.initializer {
        let data =
            crate::tensor::tensor_from_proto(t, &cx.imp.base).map_err(|m| format!("{what}: initializer: {m}"))?;
        cx.imp.initializers.insert(t.name.clone(), data);
    }
    let prefix = format!("{}/{what}/", cx.name);
    cx.imp.import_nodes(&g.node, &prefix).map_err(|e| format!("in its {what}: {e}"))?;
    g.output.iter().map(|o| out_of(cx, &o.name, what)).collect()
}

/// An `If`'s condition (checked to be one bool), its branches (checked to give as many
/// outputs), and the branch taken when the condition is known when compiling.
#[allow(clippy::type_complexity)]
fn if_parts<'n>(cx: &mut NodeCx<'n, '_>) -> Result<(Value, &'n GraphProto, &'n GraphProto, Option<bool>), String> {
    let cond = cx.input(0)?;
    let ct = cx.ty(cond);
    if ct.dtype != DType::Bool || ct.shape.numel() != Some(1) {
        return Err(format!("the condition must hold one bool, got {ct}"));
    }
    let (then_g, else_g) = (branch(cx, "then_branch")?, branch(cx, "else_branch")?);
    if then_g.output.len() != else_g.output.len() {
        return Err(format!(
            "then_branch gives {} outputs and else_branch {}",
            then_g.output.len(),
            else_g.output.len()
        ));
    }
    let known = cx.const_input(0)?.map(|c| c.bytes().first().is_some_and(|&b| b != 0));
    Ok((cond, then_g, else_g, known))
}

fn if_(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (cond, then_g, else_g, known) = if_parts(cx)?;
    if let Some(taken) = known {
        // Folded: only the branch taken exists.
        let (g, what) = if taken { (then_g, "then_branch") } else { (else_g, "else_branch") };
        return if_branch(cx, g, what);
    }
    // A run-time condition: each branch a graph of its own, only the taken one run.
    let region = match region_if(cx, cond, then_g, else_g) {
        Ok(outs) => return Ok(outs),
        Err(e) => e,
    };
    tracing::debug!(node = %cx.name, "both branches computed ({region})");
    // Otherwise both branches computed, each output selected with `Where` (index errors
    // count only in the branch taken).
    let t = guarded(cx, cond, then_g, true);
    let el = guarded(cx, cond, else_g, false);
    let (e, only) = match (t, el) {
        (Ok(t), Ok(el)) => match merge(cx, cond, t, el) {
            Ok(outs) => return Ok(outs),
            Err(e) => (e, None),
        },
        (Ok(t), Err(e)) => (e, Some((t, true))),
        (Err(e), Ok(el)) => (e, Some((el, false))),
        (Err(e), Err(_)) => (e, None),
    };
    let e = match cx.imp.dim_conditions.get(&cx.node.input[0]).cloned() {
        Some((a, b)) => match assume_then(cx, cond, then_g, &a, &b) {
            Ok(outs) => return Ok(outs),
            Err(e2) => format!("{e} (taking then_branch as the assumption {a} == {b} did not help: {e2})"),
        },
        None => e,
    };
    // One branch alone, when only it compiles, checked to be the one taken (not when
    // both compile and only their results differ: that stays a compile-time error).
    let Some((outs, taken)) = only else { return Err(e) };
    let (what, other) = if taken { ("then", "else") } else { ("else", "then") };
    let outs = one_branch(cx, cond, outs, taken).map_err(|e2| format!("{e} (its {what}_branch alone: {e2})"))?;
    tracing::warn!(
        node = %cx.name,
        "only the {what}-branch compiles (the {other}-branch: {e}); a run that takes the {other}-branch fails"
    );
    Ok(outs)
}

/// An `If` on run-time condition `cond` as a `dlc_ir::ops::If`: each branch imported
/// into a graph of its own whose inputs are the outer values the branches read
/// (constants are copied in, shape values shared), run only when taken. Refused (the
/// caller computes both branches instead) where the branches give outputs of different
/// types, read or give a sequence, an optional or a value whose rank the run decides,
/// or compute an extent from tensor values that nothing bounds.
fn region_if(cx: &mut NodeCx, cond: Value, then_g: &GraphProto, else_g: &GraphProto) -> Result<Vec<Value>, String> {
    let mut free = Vec::new();
    free_names(then_g, &mut free);
    free_names(else_g, &mut free);
    let mut subs = vec![sub_importer(cx, "then_branch"), sub_importer(cx, "else_branch")];
    for f in &free {
        let imp = &cx.imp;
        if imp.sequences.contains_key(f)
            || imp.run_sequences.contains_key(f)
            || imp.run_optionals.contains_key(f)
            || imp.absent.contains(f)
            || imp.strings.contains_key(f)
        {
            return Err(format!("the branches read '{f}', a sequence, optional or string"));
        }
        if imp.shape_values.contains_key(f) {
            continue;
        }
        if let Ok(v) = cx.imp.lookup(f) {
            if cx.imp.rank_may_be.contains_key(&v) {
                return Err(format!("the branches read '{f}', whose rank the run decides"));
            }
        }
    }
    let mut operands = vec![cond];
    operands.extend(bind_free(cx, &mut subs, free, "the branches read")?);
    let mut bodies = Vec::with_capacity(2);
    for ((mut sub, g), what) in subs.into_iter().zip([then_g, else_g]).zip(["then_branch", "else_branch"]) {
        for t in &g.initializer {
            let data =
                crate::tensor::tensor_from_proto(t, &cx.imp.base).map_err(|m| format!("{what}: initializer: {m}"))?;
            sub.initializers.insert(t.name.clone(), data);
        }
        sub.import_nodes(&g.node, &format!("{}/{what}/", cx.name)).map_err(|e| format!("in its {what}: {e}"))?;
        for o in &g.output {
            if sub.sequences.contains_key(&o.name)
                || sub.run_sequences.contains_key(&o.name)
                || sub.run_optionals.contains_key(&o.name)
                || sub.absent.contains(&o.name)
            {
                return Err(format!("{what} output '{}' is a sequence or optional", o.name));
            }
            let v = body_output(&mut sub, &o.name).map_err(|m| format!("{what}: {m}"))?;
            if sub.strings.contains_key(&o.name) {
                return Err(format!("{what} output '{}' is a string tensor", o.name));
            }
            sub.graph.add_output(o.name.clone(), v);
        }
        let computed = dlc_ir::bind::computed_symbols(&sub.graph);
        if let Some(c) = computed.first() {
            return Err(format!("{what} computes the extent '{c}' from tensor values with no bound"));
        }
        dlc_ir::verify(&sub.graph).map_err(|e| format!("its {what}: {e}"))?;
        bodies.push(dlc_ir::ops::Body(std::sync::Arc::new(sub.graph)));
    }
    let els = bodies.pop().ok_or("internal: no else-branch")?;
    let then = bodies.pop().ok_or("internal: no then-branch")?;
    cx.add("", dlc_ir::ops::If { then, els }, &operands)
}

/// An importer for body `what` of region node `cx` (an If's branch, a Loop's body, a
/// recurrence's step): a graph of its own, named under the node, with the outer graph's
/// symbols and opset.
pub(crate) fn sub_importer<'m>(cx: &NodeCx<'_, 'm>, what: &str) -> crate::import::Importer<'m> {
    let mut sub = crate::import::Importer::new(&cx.imp.path, cx.imp.model);
    sub.graph = dlc_ir::Graph::new(format!("{}/{what}", cx.name));
    sub.symbols = cx.imp.symbols.clone();
    sub.opset_at_least = cx.imp.opset_at_least;
    sub.onnx_ops_only = cx.imp.onnx_ops_only;
    sub
}

/// The outer values that bodies `subs` of a region read (`free`, by name), made visible
/// in each: a shape value is shared, a constant copied in, what the importer knows of a
/// value (a condition on dims, the shape a float tensor holds) carried along, and any
/// other value declared as an input of every body. Returns the values declared, in
/// order: the region op's operands after its own. `reader` begins an error (`"its body reads"`).
fn bind_free(
    cx: &mut NodeCx,
    subs: &mut [crate::import::Importer],
    free: Vec<String>,
    reader: &str,
) -> Result<Vec<Value>, String> {
    let mut operands = Vec::new();
    for f in free {
        let imp = &cx.imp;
        for sub in subs.iter_mut() {
            if let Some(d) = imp.dim_conditions.get(&f) {
                sub.dim_conditions.insert(f.clone(), d.clone());
            }
            if let Some(t) = imp.shape_dtypes.get(&f) {
                sub.shape_dtypes.insert(f.clone(), *t);
            }
            if let Some(d) = imp.float_quotients.get(&f) {
                sub.float_quotients.insert(f.clone(), *d);
            }
        }
        if let Some(sv) = imp.shape_values.get(&f) {
            for sub in subs.iter_mut() {
                sub.shape_values.insert(f.clone(), sv.clone());
            }
            continue;
        }
        let v = cx.imp.lookup(&f).map_err(|m| format!("{reader} '{f}': {m}"))?;
        match cx.imp.known.get(&v) {
            Some(t) => {
                for sub in subs.iter_mut() {
                    sub.initializers.insert(f.clone(), t.clone());
                }
            }
            None => {
                let ty = cx.ty(v);
                for sub in subs.iter_mut() {
                    let b = sub.graph.add_input(f.clone(), ty.clone());
                    sub.values.insert(f.clone(), b);
                }
                operands.push(v);
            }
        }
    }
    Ok(operands)
}

/// Branch `g` of an `If` on run-time condition `cond` (`taken`: the then-branch),
/// imported with its index operands guarded by the condition.
fn guarded(cx: &mut NodeCx, cond: Value, g: &GraphProto, taken: bool) -> Result<Vec<Value>, String> {
    cx.imp.guards.push((cond, taken));
    let outs = if_branch(cx, g, if taken { "then_branch" } else { "else_branch" });
    cx.imp.guards.pop();
    outs
}

/// `x` through a Gather of positions `idx` along `axis` whose indices are out of range
/// unless `ok` holds: the run fails at node `tag` where `ok` is false (or, inside a
/// speculatively computed branch, where that branch is taken and `ok` is false).
fn checked(cx: &mut NodeCx, x: Value, axis: usize, ok: Value, idx: Value, tag: &str) -> Result<Value, String> {
    let out_of_range = cx.i64_const(&[], &[i64::MAX])?;
    let idx = cx.add1(&format!("{tag}_indices"), Where {}, &[ok, idx, out_of_range])?;
    cx.add1(tag, Gather { axis: axis as i64 }, &[x, idx])
}

/// The outputs `outs` of the one branch of an `If` that compiles (`taken`: the
/// then-branch), for when the other does not compile here (an op or a shape dlc
/// refuses, often one that would also fail in ONNX Runtime for these shapes): each is
/// read through a Gather of all its slices along axis 0 that fails unless the condition
/// selects this branch, so a run that takes the other branch fails at `…/<then|else>_branch
/// only (output i)` instead of giving a wrong answer.
fn one_branch(cx: &mut NodeCx, cond: Value, outs: Vec<Value>, taken: bool) -> Result<Vec<Value>, String> {
    let what = if taken { "then_branch" } else { "else_branch" };
    let ok = if taken { cond } else { cx.add1(&format!("{what}_taken"), dlc_ir::ops::Not {}, &[cond])? };
    let mut out = Vec::with_capacity(outs.len());
    for (i, v) in outs.into_iter().enumerate() {
        let tag = format!("{what} only (output {i})");
        let scalar = cx.ty(v).shape.rank() == 0;
        let x = match scalar {
            true => cx.add1(&format!("{tag}_1"), dlc_ir::ops::Reshape { shape: vec![1], allowzero: false }, &[v])?,
            false => v,
        };
        let d0 = cx.ty(x).shape.0[0].clone();
        if d0 == dlc_ir::Dim::Fixed(0) {
            return Err(format!("output {i} is empty: nothing to check the branch taken on"));
        }
        let all = dlc_ir::ops::Iota { len: d0.to_string(), start: 0, delta: 1, dtype: DType::I64 };
        let all = cx.add1(&format!("{tag}_positions"), all, &[])?;
        let mut y = checked(cx, x, 0, ok, all, &tag)?;
        if scalar {
            y = cx.add1(&format!("{tag}_scalar"), dlc_ir::ops::Reshape { shape: vec![], allowzero: false }, &[y])?;
        }
        if let Some(&r) = cx.imp.rank_may_be.get(&v) {
            cx.imp.rank_may_be.insert(y, r);
        }
        out.push(y);
    }
    Ok(out)
}

/// Branch outputs `t` (then) and `e` (else) selected with `Where` by `cond`.
fn merge(cx: &mut NodeCx, cond: Value, t: Vec<Value>, e: Vec<Value>) -> Result<Vec<Value>, String> {
    let mut outs = Vec::with_capacity(t.len());
    for (i, (a, b)) in t.into_iter().zip(e).enumerate() {
        let (ta, tb) = (cx.ty(a), cx.ty(b));
        let suffix = if i == 0 { String::new() } else { format!("out{i}") };
        // The lowest rank either branch's value may have.
        let rank_of = |cx: &NodeCx, v: Value| cx.imp.rank_may_be.get(&v).copied().unwrap_or(cx.ty(v).shape.rank());
        let lowest = rank_of(cx, a).min(rank_of(cx, b));
        let (mut a, mut b) = (a, b);
        if ta != tb {
            // One branch gives nothing along an axis (a detector's "no boxes"): the other
            // branch's value, cut to none of its slices when that branch is not taken.
            if let Some(v) = empty_or(cx, cond, a, b, &suffix)? {
                outs.push(v);
                continue;
            }
            // Types that differ only by leading dims of 1 (`f32[]` and `f32[1]`): the
            // value at the higher rank, its rank the run's (`Importer::rank_may_be`).
            let lead = |t: &dlc_ir::TensorType| {
                let k = t.shape.0.iter().take_while(|d| **d == dlc_ir::Dim::Fixed(1)).count();
                t.shape.0[k..].to_vec()
            };
            if ta.dtype != tb.dtype || lead(&ta) != lead(&tb) {
                return Err(format!("output {i} is {ta} in then_branch and {tb} in else_branch; dlc needs one type"));
            }
            let (low, high) = if ta.shape.rank() < tb.shape.rank() { (&mut a, &tb) } else { (&mut b, &ta) };
            let dims: Vec<String> = high.shape.0.iter().map(|d| d.expr().to_string()).collect();
            *low = cx.add1(&format!("{suffix}_lifted"), View { dims: dims.join(";") }, &[*low])?;
        }
        let v = cx.add1(&suffix, Where {}, &[cond, a, b])?;
        if lowest < cx.ty(v).shape.rank() {
            tracing::info!(node = %cx.name, "output {i} is {ta} or {tb}, as the run decides");
            cx.imp.rank_may_be.insert(v, lowest);
        }
        outs.push(v);
    }
    Ok(outs)
}

/// An `If` whose condition is `e == c`, a run-time dim expression `e` and a constant
/// `1 <= c <= 64`, and whose branches cannot be merged (PyTorch's export of
/// `x.squeeze(d)` on a dim only a run knows: `If(dim == 1, Squeeze, Identity)`, whose
/// branches differ in rank): dlc compiles the then-branch only, as an assumption checked
/// while the model runs. Each value the branch reads with `e` among its dims is read
/// through a Gather of positions `0..c` along that axis (so its type has `c` there),
/// whose indices are out of range unless the condition holds: a run where it does not
/// fails at that node (`…/then_branch assumes dim 2 of x is 1`), and a speculatively
/// computed outer branch never fails it (its indices are guarded like any other index
/// op's).
fn assume_then(
    cx: &mut NodeCx,
    cond: Value,
    g: &GraphProto,
    a: &dlc_ir::Expr,
    b: &dlc_ir::Expr,
) -> Result<Vec<Value>, String> {
    let (e, c) = match (a.as_const(), b.as_const()) {
        (None, Some(c)) => (a, c),
        (Some(c), None) => (b, c),
        _ => return Err("neither side is a constant".into()),
    };
    if !(1..=64).contains(&c) {
        return Err(format!("dlc assumes extents of 1 to 64 only, not {c}"));
    }
    let mut names = Vec::new();
    free_names(g, &mut names);
    let mut saved = Vec::new();
    for n in names {
        let Some(&v) = cx.imp.values.get(&n) else { continue };
        let axes: Vec<usize> =
            cx.ty(v).shape.0.iter().enumerate().filter(|(_, d)| d.expr() == *e).map(|(i, _)| i).collect();
        let mut x = v;
        for axis in axes {
            let tag = format!("then_branch assumes dim {axis} of {n} is {c}");
            let idx = cx.i64_const(&[c as u64], &(0..c).collect::<Vec<_>>())?;
            x = checked(cx, x, axis, cond, idx, &tag)?;
        }
        if x != v {
            saved.push((n.clone(), v));
            cx.imp.values.insert(n, x);
        }
    }
    if saved.is_empty() {
        return Err(format!("then_branch reads no value with the dim {e}"));
    }
    tracing::info!(node = %cx.name, "compiling only the then-branch, assuming {e} == {c} (checked when the model runs)");
    let outs = if_branch(cx, g, "then_branch");
    for (n, v) in saved {
        cx.imp.values.insert(n, v);
    }
    outs
}

/// When branch values `a` (then) and `b` (else) differ in one axis only, where one of
/// them is empty: the other's value cut to its first `k` slices along that axis, `k` its
/// extent when its branch is taken and 0 otherwise (a run-time count).
fn empty_or(cx: &mut NodeCx, cond: Value, a: Value, b: Value, what: &str) -> Result<Option<Value>, String> {
    let (ta, tb) = (cx.ty(a), cx.ty(b));
    if ta.dtype != tb.dtype || ta.shape.rank() != tb.shape.rank() {
        return Ok(None);
    }
    let differ: Vec<usize> = (0..ta.shape.rank()).filter(|&i| ta.shape.0[i] != tb.shape.0[i]).collect();
    let [axis] = differ[..] else { return Ok(None) };
    let zero = dlc_ir::Dim::Fixed(0);
    let (full, then_full) = match (&ta.shape.0[axis], &tb.shape.0[axis]) {
        (_, d) if *d == zero => (a, true),
        (d, _) if *d == zero => (b, false),
        _ => return Ok(None),
    };
    let extent = cx.ty(full).shape.0[axis].expr();
    let n = super::shapes::ShapeVal { elems: vec![extent], scalar: false };
    let n = super::shapes::shape_tensor(cx, &n, &format!("{what}_extent"))?;
    let none = cx.i64_const(&[1], &[0])?;
    let (yes, no) = if then_full { (n, none) } else { (none, n) };
    let count = cx.add1(&format!("{what}_count"), Where {}, &[cond, yes, no])?;
    super::bind::first_slices(cx, what, full, count, axis).map(Some)
}

/// Element `i` of `v` along `axis` (the axis removed).
fn pick(cx: &mut NodeCx, v: Value, axis: usize, i: u64, what: &str) -> Result<Value, String> {
    let idx = cx.add_const(TensorData::from_i64(&[], &[i as i64]).ok_or("internal: an index")?);
    cx.add1(what, Gather { axis: axis as i64 }, &[v, idx])
}

/// `vs` (one type) stacked along a new axis `axis`.
fn stack(cx: &mut NodeCx, vs: &[Value], axis: usize, what: &str) -> Result<Value, String> {
    let mut parts = Vec::with_capacity(vs.len());
    for &v in vs {
        let mut dims: Vec<String> = cx.ty(v).shape.0.iter().map(|d| d.to_string()).collect();
        if axis > dims.len() {
            return Err(format!("scan output axis {axis} out of range"));
        }
        dims.insert(axis, "1".into());
        parts.push(cx.add1(what, View { dims: dims.join(";") }, &[v])?);
    }
    cx.add1(what, Concat { axis: axis as i64 }, &parts)
}

/// Runs the Scan body for one sequence: `states` and `scans` (each with the scan axis),
/// steps in the given directions; the final states and the scan outputs stacked.
#[allow(clippy::too_many_arguments)]
fn scan_sequence(
    cx: &mut NodeCx,
    body: &GraphProto,
    mut states: Vec<Value>,
    scans: &[Value],
    in_axes: &[usize],
    in_reverse: &[bool],
    out_axes: &[i64],
    out_reverse: &[bool],
    tag: &str,
) -> Result<Vec<Value>, String> {
    let n = states.len();
    let steps = match scans.first() {
        Some(&s) => {
            cx.ty(s).shape.0[in_axes[0]].fixed().ok_or("the scanned length must be known (the body is unrolled)")?
        }
        None => return Err("Scan needs a scan input".into()),
    };
    for (j, &s) in scans.iter().enumerate() {
        if cx.ty(s).shape.0.get(in_axes[j]).and_then(|d| d.fixed()) != Some(steps) {
            return Err(format!("scan input {j} is not {steps} long along its axis"));
        }
    }
    if body.input.len() != n + scans.len() {
        return Err(format!("the body takes {} inputs, the Scan gives {}", body.input.len(), n + scans.len()));
    }
    if steps > 4096 {
        return Err(format!("a Scan of {steps} steps is too long to unroll"));
    }
    let k = body.output.len().checked_sub(n).ok_or("the body gives fewer outputs than states")?;
    let mut outs: Vec<Vec<Value>> = vec![Vec::new(); k];
    for t in 0..steps {
        let mut bound = states.clone();
        for (j, &s) in scans.iter().enumerate() {
            let at = if in_reverse[j] { steps - 1 - t } else { t };
            bound.push(pick(cx, s, in_axes[j], at, &format!("{tag}step{t}_in{j}"))?);
        }
        for (vi, v) in body.input.iter().zip(bound) {
            cx.imp.unbind(&vi.name);
            cx.imp.values.insert(vi.name.clone(), v);
        }
        let res = import_branch(cx, body, &format!("{tag}step{t}"))?;
        states = res[..n].to_vec();
        for (j, &v) in res[n..].iter().enumerate() {
            outs[j].push(v);
        }
    }
    let mut results = states;
    for (j, mut vs) in outs.into_iter().enumerate() {
        if out_reverse.get(j).copied().unwrap_or(false) {
            vs.reverse();
        }
        let rank = cx.ty(vs[0]).shape.rank() as i64 + 1;
        let a = out_axes.get(j).copied().unwrap_or(0);
        let a = dlc_ir::ops::normalize_axis(a, rank as usize).ok_or(format!("scan output axis {a} out of range"))?;
        results.push(stack(cx, &vs, a, &format!("{tag}out{j}"))?);
    }
    Ok(results)
}

/// Scan (opsets 8-21) over sequences of known length, unrolled.
fn scan(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let body = branch(cx, "body")?;
    let m = cx.int("num_scan_inputs", 0);
    let legacy = cx.opset < 9;
    // Opset 8: a first `sequence_lens` input (full lengths only) and a batch axis 0.
    let first = usize::from(legacy);
    if legacy && cx.opt_input(0)?.is_some() {
        return Err("Scan-8 sequence_lens is not supported yet (full-length sequences only)".into());
    }
    let given = cx.num_inputs().saturating_sub(first);
    let m = usize::try_from(m).ok().filter(|&m| m >= 1 && m <= given).ok_or("num_scan_inputs is out of range")?;
    let n = given - m;
    let mut ins = Vec::with_capacity(given);
    for i in first..first + given {
        ins.push(cx.input(i)?);
    }
    let (states, scans) = ins.split_at(n);
    let ints = |cx: &NodeCx, name: &str, len: usize| -> Vec<i64> {
        let v = cx.ints(name);
        if v.is_empty() {
            vec![0; len]
        } else {
            v
        }
    };
    if legacy {
        let dirs = ints(cx, "directions", m);
        let b = cx.ty(scans[0]).shape.0[0].fixed().ok_or("Scan-8's batch must be known")?;
        let mut per: Vec<Vec<Value>> = Vec::new();
        for bi in 0..b {
            let st: Vec<Value> =
                states.iter().map(|&s| pick(cx, s, 0, bi, &format!("batch{bi}_state"))).collect::<Result<_, _>>()?;
            let sc: Vec<Value> =
                scans.iter().map(|&s| pick(cx, s, 0, bi, &format!("batch{bi}_scan"))).collect::<Result<_, _>>()?;
            let rev: Vec<bool> = dirs.iter().map(|&d| d != 0).collect();
            let r = scan_sequence(cx, body, st, &sc, &vec![0; m], &rev, &[], &[], &format!("batch{bi}/"))?;
            per.push(r);
        }
        let count = per.first().map_or(0, Vec::len);
        return (0..count).map(|j| stack(cx, &per.iter().map(|r| r[j]).collect::<Vec<_>>(), 0, "batch")).collect();
    }
    let in_axes: Vec<usize> = ints(cx, "scan_input_axes", m)
        .iter()
        .zip(scans)
        .map(|(&a, &s)| {
            let r = cx.ty(s).shape.rank();
            dlc_ir::ops::normalize_axis(a, r).ok_or(format!("scan_input_axes {a} out of range"))
        })
        .collect::<Result<_, _>>()?;
    let in_rev: Vec<bool> = ints(cx, "scan_input_directions", m).iter().map(|&d| d != 0).collect();
    let k = body.output.len().saturating_sub(n);
    let out_axes = ints(cx, "scan_output_axes", k);
    let out_rev: Vec<bool> = ints(cx, "scan_output_directions", k).iter().map(|&d| d != 0).collect();
    // A length only the run knows, or too long to unroll: a loop of the model.
    let steps = scans.first().and_then(|&s| cx.ty(s).shape.0.get(in_axes[0]).and_then(|d| d.fixed()));
    if steps.is_none_or(|t| t > MAX_UNROLLED_SCAN) {
        return scan_loop(cx, body, scans, &in_axes, &in_rev, &out_axes, &out_rev);
    }
    scan_sequence(cx, body, states.to_vec(), scans, &in_axes, &in_rev, &out_axes, &out_rev, "")
}

/// The most steps of a Scan that is unrolled at import (a longer one, or one whose
/// length only the run knows, runs as a loop of the model).
const MAX_UNROLLED_SCAN: u64 = 4096;

/// A Scan (opset 9 on) as a Loop of the model (`loop_outs`): its trip count the scanned
/// axis's length, its body the Scan's with, before its nodes, a Gather of each scan
/// input's slice at the iteration number (or, scanned in reverse, at `length - 1 -` it)
/// and the condition passed through; then each scan output (stacked along axis 0 by the
/// loop) reversed where asked and its axis moved to `scan_output_axes`.
fn scan_loop(
    cx: &mut NodeCx,
    body: &GraphProto,
    scans: &[Value],
    in_axes: &[usize],
    in_rev: &[bool],
    out_axes: &[i64],
    out_rev: &[bool],
) -> Result<Vec<Value>, String> {
    use onnx_protobuf::{AttributeProto, NodeProto, ValueInfoProto};
    let (m, n) = (scans.len(), cx.num_inputs() - scans.len());
    if body.input.len() != n + m {
        return Err(format!("the body takes {} inputs, the Scan gives {}", body.input.len(), n + m));
    }
    let k = body.output.len().checked_sub(n).ok_or("the body gives fewer outputs than states")?;
    let scan_names: Vec<String> = cx.node.input[n..n + m].to_vec();
    // Every scan input is as long as the first along its axis.
    let len_of = |cx: &NodeCx, j: usize| cx.ty(scans[j]).shape.0[in_axes[j]].clone();
    for j in 1..m {
        let (a, b) = (len_of(cx, 0), len_of(cx, j));
        if a.expr() != b.expr() {
            return Err(format!("scan input {j} is {b} long along its axis, scan input 0 {a}"));
        }
    }
    let base = format!("{}::", cx.name);
    let named = |s: &str| format!("{base}{s}");
    let node = |op: &str, ins: Vec<String>, outs: Vec<String>, attrs: Vec<AttributeProto>| {
        let mut p = NodeProto::new();
        p.op_type = op.to_string();
        p.name = outs.first().cloned().unwrap_or_default();
        p.input = ins;
        p.output = outs;
        p.attribute = attrs;
        p
    };
    let vi = |name: &str| {
        let mut v = ValueInfoProto::new();
        v.name = name.to_string();
        v
    };
    use crate::export::{attr, A};
    let i64_const = |name: &str, dims: Vec<i64>, val: i64| {
        let mut t = onnx_protobuf::TensorProto::new();
        t.data_type = onnx_protobuf::tensor_proto::DataType::INT64 as i32;
        t.dims = dims;
        t.int64_data = vec![val];
        let mut a = AttributeProto::new();
        a.name = "value".into();
        a.t = protobuf::MessageField::some(t);
        a.type_ = onnx_protobuf::attribute_proto::AttributeType::TENSOR.into();
        node("Constant", vec![], vec![name.to_string()], vec![a])
    };
    // The trip count: the scanned axis's length (a shape value at import).
    let (len, len1) = (named("length"), named("length_minus_one"));
    let ax = in_axes[0] as i64;
    let mut outer = vec![
        node(
            "Shape",
            vec![scan_names[0].clone()],
            vec![named("length_1")],
            vec![attr("start", A::I(ax)), attr("end", A::I(ax + 1))],
        ),
        node("Squeeze", vec![named("length_1")], vec![len.clone()], vec![]),
    ];
    if in_rev.iter().any(|&r| r) {
        outer.push(i64_const(&named("one"), vec![], 1));
        outer.push(node("Sub", vec![len.clone(), named("one")], vec![len1.clone()], vec![]));
    }
    // The loop's body.
    let (iter, cond, cond_out) = (named("iteration"), named("condition"), named("condition_out"));
    let mut g = body.clone();
    let mut pre = vec![node("Identity", vec![cond.clone()], vec![cond_out.clone()], vec![])];
    for j in 0..m {
        let idx = match in_rev[j] {
            false => iter.clone(),
            true => {
                let r = named(&format!("reversed_index{j}"));
                pre.push(node("Sub", vec![len1.clone(), iter.clone()], vec![r.clone()], vec![]));
                r
            }
        };
        let slice = body.input[n + j].name.clone();
        pre.push(node(
            "Gather",
            vec![scan_names[j].clone(), idx],
            vec![slice],
            vec![attr("axis", A::I(in_axes[j] as i64))],
        ));
    }
    pre.append(&mut g.node);
    g.node = pre;
    let mut inputs = vec![vi(&iter), vi(&cond)];
    inputs.extend(body.input[..n].iter().cloned());
    g.input = inputs;
    let mut outputs = vec![vi(&cond_out)];
    outputs.extend(body.output.iter().cloned());
    g.output = outputs;
    let mut battr = AttributeProto::new();
    battr.name = "body".into();
    battr.g = protobuf::MessageField::some(g);
    battr.type_ = onnx_protobuf::attribute_proto::AttributeType::GRAPH.into();
    let finals: Vec<String> = (0..n).map(|i| named(&format!("state{i}"))).collect();
    let stacked: Vec<String> = (0..k).map(|j| named(&format!("stacked{j}"))).collect();
    let mut loop_in = vec![len.clone(), String::new()];
    loop_in.extend(cx.node.input[..n].iter().cloned());
    let loop_out: Vec<String> = finals.iter().chain(&stacked).cloned().collect();
    outer.push(node("Loop", loop_in, loop_out, vec![battr]));
    // Scan outputs to reverse: gathered along axis 0 at `length - 1 - i` for each `i`.
    let mut scan_outs = Vec::with_capacity(k);
    let positions = named("positions");
    if out_rev.iter().take(k).any(|&r| r) {
        if !in_rev.iter().any(|&r| r) {
            outer.push(i64_const(&named("one"), vec![], 1));
            outer.push(node("Sub", vec![len.clone(), named("one")], vec![len1.clone()], vec![]));
        }
        outer.push(i64_const(&named("zero"), vec![], 0));
        outer.push(node("Range", vec![named("zero"), len.clone(), named("one")], vec![named("ascending")], vec![]));
        outer.push(node("Sub", vec![len1.clone(), named("ascending")], vec![positions.clone()], vec![]));
    }
    for (j, st) in stacked.iter().enumerate() {
        if !out_rev.get(j).copied().unwrap_or(false) {
            scan_outs.push(st.clone());
            continue;
        }
        let r = named(&format!("reversed{j}"));
        outer.push(node("Gather", vec![st.clone(), positions.clone()], vec![r.clone()], vec![attr("axis", A::I(0))]));
        scan_outs.push(r);
    }
    import_at(cx, &outer, Some(13))?;
    let mut results = finals.iter().map(|o| cx.imp.lookup(o)).collect::<Result<Vec<_>, _>>()?;
    // Each scan output's axis moved from 0 to `scan_output_axes`.
    for (j, name) in scan_outs.iter().enumerate() {
        let v = cx.imp.lookup(name)?;
        let r = cx.ty(v).shape.rank();
        let a = out_axes.get(j).copied().unwrap_or(0);
        let a = dlc_ir::ops::normalize_axis(a, r).ok_or(format!("scan output axis {a} out of range"))?;
        if a == 0 {
            results.push(v);
            continue;
        }
        let perm: Vec<i64> = (0..r as i64)
            .map(|i| {
                if i < a as i64 {
                    i + 1
                } else if i == a as i64 {
                    0
                } else {
                    i
                }
            })
            .collect();
        results.push(cx.add1(&format!("out{j}"), dlc_ir::ops::Transpose { perm }, &[v])?);
    }
    Ok(results)
}

/// A node of a function body that [`expand`] imports: `op` (default domain) reading
/// `inputs` and writing `outputs` (names local to the expansion, or the node's own
/// operand names), with integer-list attributes `ints` and integer ones `int`.
pub(crate) struct BodyNode<'a> {
    pub op: &'a str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub ints: Vec<(&'a str, Vec<i64>)>,
    pub int: Vec<(&'a str, i64)>,
    /// Other attributes, as they are.
    pub attrs: Vec<onnx_protobuf::AttributeProto>,
}

impl BodyNode<'_> {
    /// With attribute `a` too.
    pub fn with(mut self, a: onnx_protobuf::AttributeProto) -> Self {
        self.attrs.push(a);
        self
    }
}

/// Imports an op as its ONNX function body (the nodes ONNX's schema defines it by),
/// so that it computes exactly what the `_expanded` cases do: `body`'s local names are
/// prefixed with the node's name; returns the values of `outputs`.
pub(crate) fn expand(cx: &mut NodeCx, body: Vec<BodyNode>, outputs: &[&str]) -> Result<Vec<Value>, String> {
    expand_at(cx, body, outputs, None)
}

/// [`expand`] with the body's default-domain nodes imported at opset `at_least` or the
/// model's, the newer (ops ONNX added after the model's opset).
pub(crate) fn expand_at(
    cx: &mut NodeCx,
    body: Vec<BodyNode>,
    outputs: &[&str],
    at_least: Option<i64>,
) -> Result<Vec<Value>, String> {
    use onnx_protobuf::NodeProto;
    let base = format!("{}::", cx.name);
    let operands: Vec<String> = cx.node.input.clone();
    let local = |n: &str| -> String {
        // `$i` names the node's operand i.
        match n.strip_prefix('$').and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => operands.get(i).cloned().unwrap_or_default(),
            None if n.is_empty() => String::new(),
            None => format!("{base}{n}"),
        }
    };
    let nodes: Vec<NodeProto> = body
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let mut n = NodeProto::new();
            n.op_type = b.op.to_string();
            n.name = format!("{base}{}_{i}", b.op);
            n.input = b.inputs.iter().map(|s| local(s)).collect();
            n.output = b.outputs.iter().map(|s| local(s)).collect();
            use crate::export::{attr, A};
            n.attribute.extend(b.ints.into_iter().map(|(name, v)| attr(name, A::Is(v))));
            n.attribute.extend(b.int.into_iter().map(|(name, v)| attr(name, A::I(v))));
            n.attribute.extend(b.attrs);
            n
        })
        .collect();
    import_at(cx, &nodes, at_least)?;
    outputs.iter().map(|o| cx.imp.lookup(&local(o))).collect()
}

/// Imports `nodes` that stand for node `cx` (named under it in messages), with the
/// default domain's opset at least `at_least` where given.
pub(crate) fn import_at(
    cx: &mut NodeCx,
    nodes: &[onnx_protobuf::NodeProto],
    at_least: Option<i64>,
) -> Result<(), String> {
    let prefix = format!("{}/", cx.name);
    let now = at_least.or(cx.imp.opset_at_least);
    let before = std::mem::replace(&mut cx.imp.opset_at_least, now);
    let done = cx.imp.import_nodes(nodes, &prefix).map_err(|e| e.to_string());
    cx.imp.opset_at_least = before;
    done
}

/// A [`BodyNode`] with no attributes.
pub(crate) fn body<'a>(op: &'a str, inputs: &[&str], outputs: &[&str]) -> BodyNode<'a> {
    BodyNode {
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        ints: Vec::new(),
        int: Vec::new(),
        attrs: Vec::new(),
    }
}

/// The names `g` reads that it does not define (its inputs, initializers and node
/// outputs), nested subgraphs' included, in order of first use: what a loop body reads
/// from the scope around it.
fn free_names(g: &GraphProto, out: &mut Vec<String>) {
    let mut defined: std::collections::HashSet<&str> =
        g.input.iter().map(|i| i.name.as_str()).chain(g.initializer.iter().map(|t| t.name.as_str())).collect();
    let need = |n: &str, defined: &std::collections::HashSet<&str>, out: &mut Vec<String>| {
        if !n.is_empty() && !defined.contains(n) && !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    };
    for node in &g.node {
        for i in &node.input {
            need(i, &defined, out);
        }
        for a in &node.attribute {
            for sg in a.g.iter().chain(&a.graphs) {
                let mut inner = Vec::new();
                free_names(sg, &mut inner);
                for n in inner {
                    need(&n, &defined, out);
                }
            }
        }
        defined.extend(node.output.iter().map(String::as_str));
    }
    for o in &g.output {
        need(&o.name, &defined, out);
    }
}

/// Whether a Loop body's condition output is its condition input (through Identity
/// nodes) or the constant true: the loop then runs exactly its trip count (when its
/// initial condition holds).
fn condition_passes_through(cx: &NodeCx, body: &GraphProto) -> bool {
    let (Some(out), Some(cond_in)) = (body.output.first(), body.input.get(1)) else { return false };
    let mut name = out.name.as_str();
    for _ in 0..=body.node.len() {
        if name == cond_in.name {
            return true;
        }
        match body.node.iter().find(|n| n.output.iter().any(|o| o == name)) {
            Some(n) if n.op_type == "Identity" && n.domain.is_empty() && !n.input.is_empty() => name = &n.input[0],
            Some(n) if n.op_type == "Constant" && n.domain.is_empty() => {
                let value = n.attribute.iter().find(|a| a.name == "value").and_then(|a| a.t.as_ref());
                return value
                    .and_then(|t| crate::tensor::tensor_from_proto(t, &cx.imp.base).ok())
                    .is_some_and(|t| t.ty().dtype == DType::Bool && t.bytes() == [1]);
            }
            _ => return false,
        }
    }
    false
}

/// A body whose carried value comes out with dims only a run knows (`x[i:i+1]` with
/// run-time bounds) where the value going in has fixed ones: the output is given the
/// fixed shape by a Bind whose rule checks the element count when the model runs; a scan
/// output with the same run-time dims gets the same. (`first`: the index of the first
/// carried output.)
fn fix_run_time_extents(g: &mut dlc_ir::Graph, init: &[Value], cx: &NodeCx, first: usize) -> Result<(), String> {
    use dlc_ir::ops::Bind;
    let data = dlc_ir::bind::data_symbols(g);
    let run_time = |t: &dlc_ir::TensorType| {
        let mut v = Vec::new();
        for d in &t.shape.0 {
            d.expr().symbols(&mut v);
        }
        v.iter().any(|s| data.contains(s))
    };
    let mut targets: Vec<(dlc_ir::TensorType, Vec<u64>)> = Vec::new();
    let outs: Vec<(String, Value)> = g.outputs().to_vec();
    for (i, (name, v)) in outs.iter().enumerate().skip(first) {
        let got = g.value_type(*v).clone();
        let want = match init.get(i - first) {
            Some(&x) => {
                let want = cx.ty(x);
                let fixed = want.shape.as_fixed().filter(|d| d.len() == got.shape.rank());
                match fixed {
                    Some(d) if got != want && got.dtype == want.dtype && run_time(&got) => {
                        targets.push((got.clone(), d.clone()));
                        d
                    }
                    _ => continue,
                }
            }
            None if run_time(&got) => match targets.iter().find(|(t, _)| *t == got) {
                Some((_, d)) => d.clone(),
                None => {
                    return Err(format!(
                        "scan output '{name}' is {got}, with extents only a run knows; not supported yet"
                    ))
                }
            },
            None => continue,
        };
        let shape = g.add_const(
            format!("{name}_fixed_shape"),
            TensorData::from_i64(&[want.len() as u64], &want.iter().map(|&d| d as i64).collect::<Vec<_>>())
                .ok_or("internal: shape")?,
        );
        let syms = want.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let op = Bind { rule: dlc_ir::bind::BindRule::Reshape { allowzero: true }.text(), syms };
        let fixed = g.add_node(format!("{name}_fixed"), op, &[*v, shape]).map_err(|e| e.to_string())?[0];
        g.set_output(i, fixed);
    }
    Ok(())
}

/// Loop (opsets 1-21): the body is a graph of its own (`dlc_ir::ops::Loop`), run by a
/// `loop` step of the lowered program. A body whose condition output passes its input
/// through (what exporters write for `for` loops) runs exactly the trip count (0 when
/// the initial condition is false): its scan outputs are `[count, ...]`, the count a
/// computed dim when only a run knows it. A body that computes its condition is checked
/// before each iteration; its scan outputs get a slot per iteration the trip count allows
/// and are cut to the iterations run, which a carried counter the importer adds gives.
///
/// A loop that cannot run as one (a carried value whose type changes in a way
/// `appended_pieces` does not take) is unrolled where [`unrollable`] allows it.
fn loop_(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    // The importer is copied (to start the unrolling clean) only where it may unroll.
    let body = branch(cx, "body")?;
    let before = unrollable(cx, body).then(|| cx.imp.clone());
    let outs = match (loop_outs(cx), before) {
        (Ok(outs), _) => outs,
        (Err(why), None) => return Err(why),
        (Err(why), Some(before)) => {
            *cx.imp = before;
            unroll(cx).map_err(|e| format!("{why}; nor can it be unrolled: {e}"))?
        }
    };
    outs.into_iter()
        .map(|o| match o {
            super::shapes::Out::Value(v) => Ok(v),
            _ => Err("internal: a Loop result that is not a tensor".to_string()),
        })
        .collect()
}

/// [`loop_`], whose carried values may also be sequences (of a length known when
/// compiling) that each iteration appends elements to (`seq = SequenceInsert(seq, x)`, a scripted PyTorch
/// loop that appends to a list): each comes out as a [`super::sequence::RunSeq`], from
/// two scan outputs the importer adds, the element padded to a box that bounds it and its
/// dims.
pub(crate) fn loop_outs(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    use super::shapes::{Out, ShapeVal};
    use dlc_ir::{Expr, Shape, TensorType};
    let body = branch(cx, "body")?;
    let n = cx.node.input.len().saturating_sub(2);
    if body.input.len() != 2 + n {
        return Err(format!(
            "the body takes {} inputs; with {n} carried values it must take {}",
            body.input.len(),
            2 + n
        ));
    }
    let k = body.output.len().checked_sub(1 + n).ok_or_else(|| {
        format!("the body gives {} outputs; with {n} carried values it must give at least {}", body.output.len(), 1 + n)
    })?;
    let given = |i: usize| cx.node.input.get(i).filter(|s| !s.is_empty()).cloned();
    if let Some(e) = cx.node.input.iter().skip(2).find(|n| cx.imp.absent.contains(*n)) {
        return Err(format!(
            "carried value '{e}' starts as an empty optional: dlc carries one only through a Loop it unrolls (a \
             constant trip count and a condition known at each iteration), its first iteration differing from the rest"
        ));
    }
    let check = !condition_passes_through(cx, body);
    // Carried sequences (docs/sequences.md): the body may append elements to each, or
    // pass it on; which, its import says (`carried_prefix`).
    let seqs: Vec<usize> = (0..n).filter(|&i| cx.imp.sequences.contains_key(&cx.node.input[2 + i])).collect();
    let is_seq = |i: usize| seqs.contains(&i);
    let cond = match given(1) {
        Some(_) => cx.input(1)?,
        None => cx.add_const(
            TensorData::new(TensorType::fixed(DType::Bool, &[]), std::sync::Arc::from(vec![1u8]))
                .ok_or("internal: condition")?,
        ),
    };
    let ct = cx.ty(cond);
    if ct.dtype != DType::Bool || ct.shape.numel() != Some(1) {
        return Err(format!("the condition must hold one bool, got {ct}"));
    }
    let cond_known = cx.imp.known.get(&cond).map(|t| t.bytes().first().is_some_and(|&b| b != 0));
    // The trip count: a constant, an expression of the input dims, or a tensor only a
    // run knows.
    let shape_val: Option<ShapeVal> = given(0).and_then(|m| cx.imp.shape_values.get(&m).cloned());
    let trip: Option<Value> = match (&shape_val, given(0)) {
        (Some(_), _) | (None, None) => None,
        (None, Some(_)) => Some(cx.input(0)?),
    };
    if let Some(m) = trip {
        let t = cx.ty(m);
        if !t.dtype.is_signed_int() || t.shape.numel() != Some(1) {
            return Err(format!("the trip count must be one integer, got {t}"));
        }
    }
    let trip_const = trip.and_then(|m| cx.imp.known.get(&m).and_then(|t| t.to_i64()).and_then(|v| v.first().copied()));
    let trip_expr: Option<Expr> = match (&shape_val, trip_const) {
        (Some(s), _) => Some(s.elems.first().cloned().ok_or("the trip count is empty")?),
        (None, Some(c)) => Some(Expr::c(c.max(0))),
        (None, None) => None,
    };
    if !check && given(0).is_none() {
        return Err("the Loop has no trip count and its condition never turns false: it would run forever".into());
    }
    // Scan outputs of a loop that may end early: sized by the trip count, cut to the
    // iterations run (counted by a carried value the importer adds) after the loop. (A
    // carried sequence may turn out only passed on, its count then unused.)
    // (So may a carried value the body appends to, `appended_pieces`.)
    let appends = (0..n).any(|i| {
        let (input, output) = (&body.input[2 + i].name, &body.output[1 + i].name);
        body.node
            .iter()
            .any(|x| x.op_type == "Concat" && x.output.first() == Some(output) && x.input.first() == Some(input))
    });
    let count_runs = check && (k + seqs.len() > 0 || appends);
    // With no bound on the iterations (no trip count, or exporters' `INT64_MAX`), a first
    // loop counts them before the run (the body without its scan outputs); the count, a
    // dim computed from values, sizes the scan outputs of the loop that runs.
    let count_first = count_runs
        && match (&trip_expr, given(0)) {
            (Some(e), _) => e.as_const().is_some_and(|c| c > MAX_SCAN_SLOTS),
            (None, m) => m.is_none(),
        };
    let zero = cx.i64_const(&[1], &[0])?;
    let (count_v, count) = match (trip_expr, cond_known, check) {
        // Known when the condition is (or is checked each iteration).
        (Some(_), Some(false), false) => (zero, Expr::c(0)),
        (Some(e), Some(true), false) | (Some(e), _, true) => (zero, e),
        (None, _, true) if given(0).is_none() => (zero, Expr::c(i64::MAX)),
        // Computed from the values when the model runs.
        (e, _, _) => {
            let m = match (trip, e) {
                (Some(m), _) => m,
                (None, Some(e)) => {
                    let s = ShapeVal { elems: vec![e], scalar: false };
                    super::shapes::shape_tensor(cx, &s, "trip_count")?
                }
                (None, None) => return Err("internal: no trip count".into()),
            };
            let m = if check || cond_known == Some(true) {
                m
            } else {
                let m64 = match cx.ty(m).dtype {
                    DType::I64 => m,
                    _ => cx.add1("trip_count_i64", dlc_ir::ops::Cast::new(DType::I64), &[m])?,
                };
                cx.add1("runs", Where {}, &[cond, m64, zero])?
            };
            let (view, e) = super::bind::computed_dims(cx, m, m, "trip_count")?;
            (view, e.into_iter().next().ok_or("internal: no count")?)
        }
    };
    let mut operands = vec![count_v, cond];
    for i in (0..n).filter(|&i| !is_seq(i)) {
        operands.push(cx.input(2 + i)?);
    }
    // The iterations run, carried after the model's carried values (0 before the loop,
    // the iteration number plus one after each iteration).
    let nc = operands.len() - 2 + usize::from(count_runs);
    if count_runs {
        let zero = cx.i64_const(&[], &[0])?;
        operands.push(zero);
    }
    // The body: a graph of its own, its inputs the iteration number, the condition, the
    // carried values and the outer values it reads (constants are copied in).
    let mut sub = sub_importer(cx, "body");
    let declare = |sub: &mut crate::import::Importer, name: &str, ty: TensorType| {
        let v = sub.graph.add_input(name.to_string(), ty);
        sub.values.insert(name.to_string(), v);
    };
    declare(&mut sub, &body.input[0].name, TensorType { dtype: DType::I64, shape: Shape(vec![]) });
    declare(&mut sub, &body.input[1].name, ct.clone());
    let mut at = 2;
    let mut prefixes = Vec::with_capacity(seqs.len());
    for i in 0..n {
        if is_seq(i) {
            // The elements it had when the iteration began stand as one value no node may
            // read (`Importer::carried_prefixes`).
            let p = sub.graph.add_const(
                format!("{}/carried{i}", cx.name),
                TensorData::new(TensorType::fixed(DType::F32, &[0]), std::sync::Arc::from(Vec::new()))
                    .ok_or("internal: a carried sequence's stand-in")?,
            );
            sub.carried_prefixes.insert(p);
            sub.sequences.insert(body.input[2 + i].name.clone(), vec![p]);
            prefixes.push(p);
            continue;
        }
        let ty = cx.ty(operands[at]);
        declare(&mut sub, &body.input[2 + i].name, ty);
        at += 1;
    }
    if count_runs {
        // The counter's value going in (the body computes the next from the iteration
        // number instead).
        sub.graph.add_input(format!("{}/runs", cx.name), TensorType { dtype: DType::I64, shape: Shape(vec![]) });
    }
    let mut free = Vec::new();
    free_names(body, &mut free);
    operands.extend(bind_free(cx, std::slice::from_mut(&mut sub), free, "its body reads")?);
    for t in &body.initializer {
        let data = crate::tensor::tensor_from_proto(t, &cx.imp.base).map_err(|m| format!("body: initializer: {m}"))?;
        sub.initializers.insert(t.name.clone(), data);
    }
    sub.import_nodes(&body.node, &format!("{}/body/", cx.name)).map_err(|e| format!("in its body: {e}"))?;
    for (i, o) in body.output.iter().enumerate().take(1 + n) {
        if (i == 0 && !check) || (i > 0 && is_seq(i - 1)) {
            continue;
        }
        let v = body_output(&mut sub, &o.name)?;
        sub.graph.add_output(o.name.clone(), v);
    }
    if count_runs {
        let iter = sub.values.get(&body.input[0].name).copied().ok_or("internal: no iteration number")?;
        let one = sub
            .graph
            .add_const(format!("{}/runs_one", cx.name), TensorData::from_i64(&[], &[1]).ok_or("internal: one")?);
        let next = sub
            .graph
            .add_node(format!("{}/runs_next", cx.name), dlc_ir::ops::Add {}, &[iter, one])
            .map_err(|e| e.to_string())?[0];
        sub.graph.add_output(format!("{}/runs_next", cx.name), next);
    }
    for o in &body.output[1 + n..] {
        let v = body_output(&mut sub, &o.name)?;
        sub.graph.add_output(o.name.clone(), v);
    }
    // Which carried sequences the body appends to (`grows`, with the elements it
    // appends) and which it passes on (`kept`).
    let (mut grows, mut kept) = (Vec::new(), Vec::new());
    for (j, &i) in seqs.iter().enumerate() {
        let what = format!("carried sequence '{}'", cx.node.input[2 + i]);
        let es = carried_prefix(&sub, body, i, prefixes[j]).map_err(|m| format!("{what}: {m}"))?;
        match es.is_empty() {
            true => kept.push(i),
            false => grows.push((i, es)),
        }
    }
    for p in prefixes {
        sub.graph.remove_node(p.node);
    }
    // Each appended element, padded to its box, and its dims: two more scan outputs.
    let mut ragged = Vec::with_capacity(grows.len());
    for (i, es) in &grows {
        let (i, name) = (*i, &body.output[1 + *i].name);
        let (padded, dims, same) = boxed_elements(&mut sub.graph, es, name)
            .map_err(|m| format!("carried sequence '{}': the elements its body appends {m}", cx.node.input[2 + i]))?;
        sub.graph.add_output(format!("{name}/boxed"), padded);
        sub.graph.add_output(format!("{name}/dims"), dims);
        ragged.push(same);
    }
    // Carried values the body grows by a Concat each iteration: passed through, their
    // pieces out as scan outputs after the others.
    let (appended, checks) = appended_pieces(&mut sub.graph, usize::from(check), n - seqs.len())?;
    for (j, dims) in checks.into_iter().enumerate() {
        let s = ShapeVal { elems: dims, scalar: false };
        operands.push(super::shapes::shape_tensor(cx, &s, &format!("appended_dims{j}"))?);
    }
    fix_run_time_extents(&mut sub.graph, &operands[2..2 + nc], cx, usize::from(check))?;
    dlc_ir::verify(&sub.graph).map_err(|e| format!("its body: {e}"))?;
    let (mut operands, mut count) = (operands, count);
    if count_first {
        let mut counting = sub.graph.clone();
        counting.truncate_outputs(usize::from(check) + nc);
        let op = dlc_ir::ops::Loop {
            body: dlc_ir::ops::Body(std::sync::Arc::new(counting)),
            count: count.to_string(),
            carried: nc as i64,
            check,
        };
        let runs = *cx.add("count", op, &operands)?.last().ok_or("internal: no iteration count")?;
        let (view, e) = super::bind::computed_dims(cx, runs, runs, "iterations")?;
        count = e.into_iter().next().ok_or("internal: no count")?;
        operands[0] = view;
    }
    let op = dlc_ir::ops::Loop {
        body: dlc_ir::ops::Body(std::sync::Arc::new(sub.graph)),
        count: count.to_string(),
        carried: nc as i64,
        check,
    };
    let mut res = cx.add("", op, &operands)?;
    let mut scans = res.split_off(nc);
    if count_runs {
        let runs = res.pop().ok_or("internal: no iteration count")?;
        let runs = cx.add1("runs_1", dlc_ir::ops::Reshape { shape: vec![1], allowzero: false }, &[runs])?;
        scans = scans
            .into_iter()
            .enumerate()
            .map(|(j, v)| super::bind::first_slices(cx, &format!("scan{j}"), v, runs, 0))
            .collect::<Result<_, _>>()?;
    }
    let pieces = scans.split_off(k + 2 * grows.len());
    let mut grown = scans.split_off(k).into_iter();
    // A carried value grown by appending: its first value (the loop passes it on) and
    // the pieces of every iteration, laid end to end along the Concat's axis.
    for (&(j, axis), piece) in appended.iter().zip(pieces) {
        let i = (0..n).filter(|&i| !is_seq(i)).nth(j).ok_or("internal: an appended value")?;
        let what = format!("carried value '{}'", cx.node.input[2 + i]);
        let init = operands[2 + j];
        let flat = laid_end_to_end(cx, piece, axis, &format!("appended{j}")).map_err(|m| format!("{what}: {m}"))?;
        let empty = cx.ty(init).shape.0.get(axis).is_some_and(|d| d.fixed() == Some(0));
        res[j] = match empty {
            true => flat,
            false => cx.add1(&format!("appended{j}_all"), Concat { axis: axis as i64 }, &[init, flat])?,
        };
    }
    let mut carried = res.into_iter();
    let mut outs = Vec::with_capacity(n + k);
    for i in 0..n {
        let init = cx.imp.sequences.get(&cx.node.input[2 + i]).cloned();
        outs.push(if kept.contains(&i) {
            Out::Seq(init.unwrap_or_default())
        } else if let Some(g) = grows.iter().position(|(j, _)| *j == i) {
            let (Some(data), Some(shapes)) = (grown.next(), grown.next()) else {
                return Err("internal: a grown sequence's scan outputs".into());
            };
            // [iterations, appended per iteration, ...] as one list of elements.
            let flat = |cx: &mut NodeCx, v: Value, what: &str| -> Result<Value, String> {
                let d: Vec<String> = cx.ty(v).shape.0.iter().map(|d| d.expr().to_string()).collect();
                let mut dims = vec![format!("({}) * ({})", d[0], d[1])];
                dims.extend(d[2..].iter().cloned());
                cx.add1(&format!("seq{i}_{what}"), View { dims: dims.join(";") }, &[v])
            };
            let (data, shapes) = (flat(cx, data, "elements")?, flat(cx, shapes, "dims")?);
            let s = super::sequence::RunSeq { data, shapes, ragged: ragged[g].clone(), lacking: 0 };
            // Its first elements (known when compiling) before those appended.
            let init = init.unwrap_or_default();
            let what = |m: String| format!("carried sequence '{}': {m}", cx.node.input[2 + i]);
            Out::RunSeq(match init.is_empty() {
                true => s,
                false => {
                    let first = super::sequence::stack_boxed(cx, &init, &format!("seq{i}_first")).map_err(what)?;
                    super::sequence::concat_seqs(cx, first, s, &format!("seq{i}")).map_err(what)?
                }
            })
        } else {
            Out::Value(carried.next().ok_or("internal: a carried value")?)
        });
    }
    outs.extend(scans.into_iter().map(Out::Value));
    Ok(outs)
}

/// Carried values a Loop's body grows by appending (`acc = Concat(acc, piece, axis)`, a
/// scripted PyTorch loop's `torch.cat((acc, piece))`): each changes its type every
/// iteration, so it cannot be carried as it is. Where the carried input feeds only that
/// Concat and the Concat only the body's output, the body passes the value on unchanged and
/// gives its pieces (the Concat's other operands, joined) as one more scan output; the
/// caller lays the stacked pieces end to end after the first value
/// ([`laid_end_to_end`]), which is the value the loop would have grown. A piece
/// whose dims the body computes from values of the iteration (torchvision's mask paste:
/// `max(0, min(y0 + k + (H - y1), H))` rows, `H` as numbers) is given the dims the carried
/// value has (`H`) by a Bind of rule `dims`, which checks them each iteration against
/// their values in a body input added for it. `first`: the index of the first carried
/// output; `m`: the number of tensor carried values. Gives `(carried index, axis)` of
/// each, in the order of the scan outputs added, and the dims each added body input
/// must hold (the caller passes them in, in order).
#[allow(clippy::type_complexity)]
fn appended_pieces(
    g: &mut dlc_ir::Graph,
    first: usize,
    m: usize,
) -> Result<(Vec<(usize, usize)>, Vec<Vec<dlc_ir::Expr>>), String> {
    use dlc_ir::{Dim, Shape, TensorType};
    let inputs = g.inputs().to_vec();
    let data = dlc_ir::bind::data_symbols(g);
    let mentions_data = |d: &Dim| {
        let mut v = Vec::new();
        d.expr().symbols(&mut v);
        v.iter().any(|s| data.contains(s))
    };
    let (mut found, mut checks) = (Vec::new(), Vec::new());
    for j in 0..m {
        let (name, out) = g.outputs()[first + j].clone();
        let Some(&input) = inputs.get(2 + j) else { break };
        let carried_in = Value { node: input, port: 0 };
        let axis = match &g.node(out.node).op {
            Op::Concat(c) => c.axis,
            _ => continue,
        };
        let operands = g.operands(out.node);
        let in_ty = g.value_type(carried_in).clone();
        let only_use = |g: &dlc_ir::Graph, id| g.users(id).len() == 1;
        let output_uses = g.outputs().iter().filter(|(_, v)| *v == out).count();
        if operands.first() != Some(&carried_in) || operands.len() < 2 || *g.value_type(out) == in_ty {
            continue;
        }
        if operands[1..].contains(&carried_in)
            || !only_use(g, input)
            || !g.users(out.node).is_empty()
            || output_uses != 1
        {
            let reader =
                g.users(input).into_iter().chain(g.users(out.node)).map(|(u, _, _)| u).find(|&u| u != out.node);
            let by = reader.map_or_else(|| "another body output".to_string(), |u| format!("'{}'", g.node(u).name));
            return Err(format!(
                "carried value '{name}' grows by a Concat every iteration, and {by} reads it too: dlc carries such a \
                 value as the pieces appended (a scan output) only when the Concat is all the body does with it"
            ));
        }
        let rank = in_ty.shape.rank() as i64;
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis) {
            continue;
        }
        let mut piece = match &operands[1..] {
            [p] => *p,
            ps => g
                .add_node(format!("{name}/piece"), Concat { axis }, ps)
                .map_err(|e| format!("carried value '{name}': its pieces: {e}"))?[0],
        };
        let got = g.value_type(piece).shape.0.clone();
        if mentions_data(&got[axis as usize]) {
            // Ragged along the axis: each iteration's piece needs a slot of its own size.
            continue;
        }
        let mut want = in_ty.shape.0.clone();
        want[axis as usize] = got[axis as usize].clone();
        if got != want {
            let t = TensorType { dtype: DType::I64, shape: Shape(vec![Dim::Fixed(want.len() as u64)]) };
            let dims = g.add_input(format!("{name}/dims"), t);
            let entries: Vec<String> = want.iter().map(dlc_ir::ops::Bind::entry_of).collect();
            let op = dlc_ir::ops::Bind { rule: dlc_ir::bind::BindRule::Dims.text(), syms: entries.join(" ") };
            let fixed = g.add_node(format!("{name}/piece_dims"), op, &[piece, dims]);
            piece = fixed.map_err(|e| format!("carried value '{name}': its pieces' dims: {e}"))?[0];
            checks.push(want.iter().map(Dim::expr).collect());
        }
        g.set_output(first + j, carried_in);
        g.remove_node(out.node);
        g.add_output(format!("{name}/appended"), piece);
        found.push((j, axis as usize));
    }
    Ok((found, checks))
}

/// A Loop's scan output of pieces `[iterations, p0, ..., pr]` laid end to end along
/// `axis`: `[p0, ..., iterations * p_axis, ..., pr]`, iteration order kept.
fn laid_end_to_end(cx: &mut NodeCx, v: Value, axis: usize, what: &str) -> Result<Value, String> {
    let rank = cx.ty(v).shape.rank();
    if axis + 1 >= rank {
        return Err(format!("internal: axis {axis} of pieces of rank {}", rank - 1));
    }
    let v = match axis {
        0 => v,
        _ => {
            let mut perm: Vec<i64> = (1..=axis as i64).collect();
            perm.push(0);
            perm.extend(axis as i64 + 1..rank as i64);
            cx.add1(&format!("{what}_moved"), Transpose { perm }, &[v])?
        }
    };
    let d: Vec<String> = cx.ty(v).shape.0.iter().map(|d| d.expr().to_string()).collect();
    let mut dims: Vec<String> = d[..axis].to_vec();
    dims.push(format!("({}) * ({})", d[axis], d[axis + 1]));
    dims.extend(d[axis + 2..].iter().cloned());
    cx.add1(what, View { dims: dims.join(";") }, &[v])
}

/// Body output `name` after the body's nodes were imported: a value, or a shape known
/// when compiling made a constant.
fn body_output(sub: &mut crate::import::Importer, name: &str) -> Result<Value, String> {
    use dlc_ir::Expr;
    match sub.shape_values.get(name) {
        Some(s) => match s.elems.iter().map(Expr::as_const).collect::<Option<Vec<i64>>>() {
            Some(vals) => {
                let dims: Vec<u64> = if s.scalar { vec![] } else { vec![vals.len() as u64] };
                Ok(sub.graph.add_const(name.to_string(), TensorData::from_i64(&dims, &vals).ok_or("internal: shape")?))
            }
            None => Err(format!("body output '{name}' is a shape of run-time dims, not supported yet")),
        },
        None => {
            let v = sub.lookup(name).map_err(|m| format!("body output '{name}': {m}"))?;
            of_one_rank(sub, v, &format!("body output '{name}'"))
        }
    }
}

/// The elements the body (imported as `sub`) appends in one iteration to its carried
/// sequence `i`, whose elements going in stand as `prefix` (none: it passes the sequence
/// on). The body's output for it must be that sequence with elements appended, and
/// nothing else may read it: no node the prefix, no other output the sequence (the
/// sequence ops other than appending refuse it while importing: `Importer::carried_prefixes`).
fn carried_prefix(
    sub: &crate::import::Importer,
    body: &GraphProto,
    i: usize,
    prefix: Value,
) -> Result<Vec<Value>, String> {
    let why = "dlc runs a Loop over a sequence whose iterations are not known when compiling when its body only \
               appends to the sequence (SequenceInsert without a position) or passes it on";
    if let Some((node, _, _)) = sub.graph.users(prefix.node).first() {
        return Err(format!("{why}; '{}' reads its elements", sub.graph.node(*node).name));
    }
    let out = &body.output[1 + i].name;
    let es = sub.sequences.get(out).ok_or_else(|| format!("{why}; its body gives '{out}', not a sequence of it"))?;
    if es.first() != Some(&prefix) || es[1..].contains(&prefix) {
        return Err(format!("{why}; its body gives '{out}', not the sequence with elements appended"));
    }
    for o in &body.output {
        if o.name == *out {
            continue;
        }
        let other =
            sub.sequences.get(&o.name).is_some_and(|s| s.contains(&prefix)) || sub.values.get(&o.name) == Some(&prefix);
        if other {
            return Err(format!("{why}; body output '{}' gives it too", o.name));
        }
    }
    Ok(es[1..].to_vec())
}

/// The elements `es` a Loop's body appends to a sequence in one iteration, in the body's
/// graph `g`: each padded with zeros to one box that bounds them all in every iteration
/// (their dims, a bound of those that come from values of the iteration) and stacked,
/// `[L, box...]`, and their dims, `[L, rank]`; for each dim, whether an element may be
/// smaller than the box there.
fn boxed_elements(g: &mut dlc_ir::Graph, es: &[Value], name: &str) -> Result<(Value, Value, Vec<bool>), String> {
    use dlc_ir::{Dim, Expr};
    let maxima = dlc_ir::bind::symbol_maxima(g).map_err(|e| e.to_string())?;
    let data = dlc_ir::bind::data_symbols(g);
    let first = g.value_type(*es.first().ok_or("internal: no element")?).clone();
    let r = first.shape.rank();
    let mut boxed: Option<Vec<Expr>> = None;
    for &e in es {
        let t = g.value_type(e).clone();
        if t.dtype != first.dtype || t.shape.rank() != r {
            return Err(format!("are {first} and {t}; dlc needs one element type and rank"));
        }
        let mut b_e = Vec::with_capacity(r);
        for d in &t.shape.0 {
            let b = dlc_ir::bind::bounded(&d.expr(), &maxima);
            let mut syms = Vec::new();
            if let Some(b) = &b {
                b.symbols(&mut syms);
            }
            match b {
                Some(b) if !syms.iter().any(|s| data.contains(s)) => b_e.push(b),
                _ => {
                    return Err(format!("is {t}, whose dim {d} dlc cannot bound (it comes from values with no bound)"))
                }
            }
        }
        boxed = Some(match boxed {
            None => b_e,
            Some(b) => b.iter().zip(&b_e).map(|(x, y)| x.max_with(y)).collect(),
        });
    }
    let boxed = boxed.ok_or("internal: no element")?;
    let mut ragged = vec![false; r];
    let (mut rows, mut dims) = (Vec::with_capacity(es.len()), Vec::with_capacity(es.len()));
    for (k, &e) in es.iter().enumerate() {
        let t = g.value_type(e).clone();
        let own: Vec<Expr> = t.shape.0.iter().map(Dim::expr).collect();
        for j in 0..r {
            ragged[j] |= own[j] != boxed[j];
        }
        let padded = if own == boxed {
            e
        } else {
            let op = super::sequence::pad_to_box(&own, &boxed, 0);
            let p = g.add_node(format!("{name}/padded{k}"), op, &[e]).map_err(|e| e.to_string())?[0];
            if g.value_type(p).shape.0.iter().map(Dim::expr).collect::<Vec<_>>() != boxed {
                return Err(format!("is {t}, padded to {}: not the box it needs", g.value_type(p)));
            }
            p
        };
        let view = std::iter::once("1".to_string()).chain(boxed.iter().map(|b| b.to_string())).collect::<Vec<_>>();
        let view = dlc_ir::ops::View { dims: view.join(";") };
        rows.push(g.add_node(format!("{name}/row{k}"), view, &[padded]).map_err(|e| e.to_string())?[0]);
        // Its dims: constants, or counted at run time (a reduction over `d` ones).
        let mut parts = Vec::with_capacity(r);
        for (j, d) in t.shape.0.iter().enumerate() {
            parts.push(match d.fixed() {
                Some(c) => g.add_const(
                    format!("{name}/dims{k}_{j}"),
                    TensorData::from_i64(&[1, 1], &[c as i64]).ok_or("internal")?,
                ),
                None => {
                    let ones = dlc_ir::ops::Iota { len: d.expr().to_string(), start: 1, delta: 0, dtype: DType::I64 };
                    let ones = g.add_node(format!("{name}/dims{k}_{j}_ones"), ones, &[]).map_err(|e| e.to_string())?[0];
                    let sum = dlc_ir::ops::ReduceSum { axes: vec![0], keepdims: true };
                    let v = g.add_node(format!("{name}/dims{k}_{j}_sum"), sum, &[ones]).map_err(|e| e.to_string())?[0];
                    let shape = dlc_ir::ops::Reshape { shape: vec![1, 1], allowzero: false };
                    g.add_node(format!("{name}/dims{k}_{j}"), shape, &[v]).map_err(|e| e.to_string())?[0]
                }
            });
        }
        dims.push(match parts.len() {
            0 => g.add_const(format!("{name}/dims{k}"), TensorData::from_i64(&[1, 0], &[]).ok_or("internal")?),
            1 => parts[0],
            _ => g.add_node(format!("{name}/dims{k}"), Concat { axis: 1 }, &parts).map_err(|e| e.to_string())?[0],
        });
    }
    let join = |g: &mut dlc_ir::Graph, vs: Vec<Value>, what: &str| -> Result<Value, String> {
        match vs.len() {
            1 => Ok(vs[0]),
            _ => Ok(g.add_node(format!("{name}/{what}"), Concat { axis: 0 }, &vs).map_err(|e| e.to_string())?[0]),
        }
    };
    let (padded, dims) = (join(g, rows, "rows")?, join(g, dims, "dims")?);
    Ok((padded, dims, ragged))
}

/// The most slots a scan output of a Loop that may end early is given when its trip
/// count is a constant (exporters write `INT64_MAX` for "no bound").
const MAX_SCAN_SLOTS: i64 = 1 << 24;

/// A Loop whose trip count is a dim expression (`for i in range(x.shape[0])` as exporters
/// write it: Shape, Gather, the count) takes it as one ([`loop_`] sizes its scan outputs
/// by it); its other operands that are shape values become tensors computed while the
/// model runs. Returns whether `cx` is a Loop (which the shape evaluator never takes).
pub(crate) fn loop_reads_shape_values(cx: &mut NodeCx) -> Result<bool, String> {
    if cx.node.op_type != "Loop" || !cx.node.domain.is_empty() {
        return Ok(false);
    }
    let names: Vec<String> = cx.node.input.iter().skip(1).cloned().collect();
    for n in names {
        if let Some(s) = cx.imp.shape_values.get(&n).cloned() {
            let v = super::shapes::shape_tensor(cx, &s, &n)?;
            cx.imp.values.insert(n, v);
        }
    }
    Ok(true)
}

/// Whether Loop node `cx` carries a sequence, or an empty optional (the importer then
/// unrolls it if it can: [`unrolled_loop`]).
pub(crate) fn loop_carries_sequence(cx: &NodeCx) -> bool {
    cx.node.op_type == "Loop"
        && cx.node.domain.is_empty()
        && cx.node.input.iter().skip(2).any(|n| cx.imp.sequences.contains_key(n) || cx.imp.absent.contains(n))
}

/// A Loop that carries a sequence, unrolled at import (as Scan is): a sequence's length is
/// fixed when compiling, so the number of iterations must be too: the trip count a
/// constant (or a fixed dim) and the condition known at each iteration (a constant, or
/// passed through). Each iteration imports the body on the values the last one gave;
/// scan outputs are stacked.
pub(crate) fn unrolled_loop(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    let body = branch(cx, "body")?;
    if unrollable(cx, body) {
        return unroll(cx);
    }
    // As a loop of the model, when its body only appends to the sequences (tried on a
    // copy of the importer, kept when it fails: the unrolling then starts clean).
    let before = cx.imp.clone();
    match loop_outs(cx) {
        Ok(outs) => Ok(outs),
        Err(why) => {
            *cx.imp = before;
            unroll(cx).map_err(|e| format!("{e}; nor can it run as a loop of the model: {why}"))
        }
    }
}

fn unroll(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    use super::shapes::Out;
    let body = branch(cx, "body")?;
    let n = cx.node.input.len().saturating_sub(2);
    if body.input.len() != 2 + n || body.output.len() < 1 + n {
        return Err(format!(
            "the body takes {} inputs and gives {} outputs; with {n} carried values it must take {} and give at least {}",
            body.input.len(),
            body.output.len(),
            2 + n,
            1 + n
        ));
    }
    let k = body.output.len() - 1 - n;
    let given = |i: usize| cx.node.input.get(i).filter(|s| !s.is_empty()).cloned();
    let const_of = |cx: &mut NodeCx, name: &str| -> Option<TensorData> {
        if let Some(s) = cx.imp.shape_values.get(name) {
            let c: Option<Vec<i64>> = s.elems.iter().map(|e| e.as_const()).collect();
            let c = c?;
            return TensorData::from_i64(&[c.len() as u64], &c);
        }
        let v = cx.imp.lookup(name).ok()?;
        cx.imp.known.get(&v).cloned()
    };
    let why = "a Loop that carries a sequence is unrolled when compiling (the sequence's length is fixed then)";
    let trip = match given(0) {
        Some(m) => {
            let t = const_of(cx, &m).ok_or_else(|| format!("{why}: its trip count must be a constant"))?;
            Some(t.to_i64().and_then(|v| v.first().copied()).ok_or("the trip count must be one integer")?.max(0))
        }
        None => None,
    };
    let mut cond = match given(1) {
        Some(c) => {
            let t = const_of(cx, &c).ok_or_else(|| format!("{why}: its initial condition must be a constant"))?;
            t.bytes().first().is_some_and(|&b| b != 0)
        }
        None => true,
    };
    let passes = condition_passes_through(cx, body);
    let steps = match trip {
        Some(m) => m,
        None if passes => return Err(format!("{why}: it has no trip count and its condition never turns false")),
        None => 4097,
    };
    // The carried values: a sequence's elements, or a tensor.
    let mut carried: Vec<Out> = Vec::with_capacity(n);
    for i in 0..n {
        let name = cx.node.input[2 + i].clone();
        carried.push(match cx.imp.sequences.get(&name) {
            Some(s) => Out::Seq(s.clone()),
            None if cx.imp.absent.contains(&name) => Out::Absent,
            None => Out::Value(cx.input(2 + i)?),
        });
    }
    let mut scans: Vec<Vec<Value>> = vec![Vec::new(); k];
    let mut t = 0i64;
    while cond && t < steps {
        if t >= 4096 {
            return Err(format!("{why}: more than 4096 iterations"));
        }
        let iter = cx.i64_const(&[], &[t])?;
        let c = cx.add_const(
            TensorData::new(dlc_ir::TensorType::fixed(DType::Bool, &[]), std::sync::Arc::from(vec![1u8]))
                .ok_or("internal: condition")?,
        );
        let mut bound: Vec<Out> = vec![Out::Value(iter), Out::Value(c)];
        bound.append(&mut carried);
        for (vi, o) in body.input.iter().zip(bound) {
            cx.imp.unbind(&vi.name);
            match o {
                Out::Value(v) => {
                    cx.imp.values.insert(vi.name.clone(), v);
                }
                Out::Seq(s) => {
                    cx.imp.sequences.insert(vi.name.clone(), s);
                }
                Out::Absent => {
                    cx.imp.absent.insert(vi.name.clone());
                }
                _ => return Err("internal: a carried value is neither a tensor nor a sequence".into()),
            }
        }
        let what = format!("iteration{t}");
        let mut res = import_subgraph(cx, body, &what)?;
        for (o, vi) in res.iter().zip(&body.output) {
            if let Out::Value(v) = o {
                of_one_rank(cx.imp, *v, &format!("body output '{}'", vi.name))?;
            }
        }
        if !passes {
            let c = const_of(cx, &body.output[0].name)
                .ok_or_else(|| format!("{why}: the condition its body computes must be a constant"))?;
            cond = c.bytes().first().is_some_and(|&b| b != 0);
        }
        let scanned = res.split_off(1 + n);
        carried.extend(res.drain(1..));
        for (j, o) in scanned.into_iter().enumerate() {
            match o {
                Out::Value(v) => scans[j].push(v),
                _ => return Err(format!("scan output '{}' must be a tensor", body.output[1 + n + j].name)),
            }
        }
        t += 1;
    }
    let mut results = carried;
    for (j, vs) in scans.into_iter().enumerate() {
        if vs.is_empty() {
            return Err(format!("scan output {j} of a loop that runs no iteration has no shape dlc knows"));
        }
        results.push(Out::Value(stack(cx, &vs, 0, &format!("scan{j}"))?));
    }
    Ok(results)
}

/// Whether [`unrolled_loop`] can unroll Loop `cx`: a constant trip count of at most 4096
/// iterations, a constant initial condition (or none), a body that passes it through.
fn unrollable(cx: &mut NodeCx, body: &GraphProto) -> bool {
    let is_const = |cx: &mut NodeCx, i: usize, most: i64| -> bool {
        let Some(name) = cx.node.input.get(i).filter(|s| !s.is_empty()).cloned() else { return true };
        if let Some(s) = cx.imp.shape_values.get(&name) {
            return s.elems.first().and_then(|e| e.as_const()).is_some_and(|c| c <= most);
        }
        let Ok(v) = cx.imp.lookup(&name) else { return false };
        cx.imp.known.get(&v).and_then(|t| t.to_i64()).and_then(|v| v.first().copied()).is_some_and(|c| c <= most)
    };
    is_const(cx, 0, 4096) && is_const(cx, 1, 1) && condition_passes_through(cx, body)
}

/// Subgraph output `name` after its nodes were imported (`what` names the subgraph): a
/// sequence, or a tensor (a shape of run-time dims computed as one).
fn out_of(cx: &mut NodeCx, name: &str, what: &str) -> Result<super::shapes::Out, String> {
    use super::shapes::Out;
    if cx.imp.absent.contains(name) {
        return Ok(Out::Absent);
    }
    if cx.imp.run_optionals.contains_key(name) {
        return Err(format!(
            "{what} output '{name}' is an optional whose presence only the run knows; an If or Loop that gives \
             one on is not supported yet"
        ));
    }
    if let Some(s) = cx.imp.sequences.get(name) {
        return Ok(Out::Seq(s.clone()));
    }
    if let Some(s) = cx.imp.run_sequences.get(name) {
        return Ok(Out::RunSeq(s.clone()));
    }
    if let Some(s) = cx.imp.shape_values.get(name).cloned() {
        return super::shapes::shape_tensor(cx, &s, &format!("{what}_{name}")).map(Out::Value);
    }
    cx.imp.lookup(name).map(Out::Value).map_err(|m| format!("{what} output '{name}': {m}"))
}

/// The If's condition as a bool scalar (the presence flag of an optional it gives).
fn flag_of(cx: &mut NodeCx, cond: Value, i: usize) -> Result<Value, String> {
    match cx.ty(cond).shape.rank() {
        0 => Ok(cond),
        _ => cx.add1(&format!("out{i}_present"), dlc_ir::ops::Reshape { shape: vec![], allowzero: false }, &[cond]),
    }
}

/// Whether If node `cx` gives a sequence (a branch output's declared type is one, or an
/// optional one): the importer then takes it to [`sequence_if`].
pub(crate) fn if_gives_sequence(cx: &NodeCx) -> bool {
    let is_seq = |vi| crate::import::sequence_element_type(vi).is_some();
    // An output an `Optional` node without an operand makes: an empty optional.
    let empty = |g: &GraphProto| {
        g.output.iter().any(|o| {
            g.node.iter().any(|n| {
                n.op_type == "Optional"
                    && n.domain.is_empty()
                    && n.input.iter().all(String::is_empty)
                    && n.output.contains(&o.name)
            })
        })
    };
    cx.node.op_type == "If"
        && cx.node.domain.is_empty()
        && ["then_branch", "else_branch"]
            .iter()
            .any(|b| branch(cx, b).is_ok_and(|g| g.output.iter().any(is_seq) || empty(g)))
}

/// An `If` that gives a sequence. A condition known when compiling imports the branch
/// taken; a run-time one imports both (guarded, as for tensors) and selects each output
/// with `Where`, a sequence element by element: both branches must give sequences of
/// one length and element types.
pub(crate) fn sequence_if(cx: &mut NodeCx) -> Result<Vec<super::shapes::Out>, String> {
    use super::shapes::Out;
    let (cond, then_g, else_g, known) = if_parts(cx)?;
    if let Some(taken) = known {
        let (g, what) = if taken { (then_g, "then_branch") } else { (else_g, "else_branch") };
        return import_subgraph(cx, g, what);
    }
    cx.imp.guards.push((cond, true));
    let t = import_subgraph(cx, then_g, "then_branch");
    cx.imp.guards.pop();
    cx.imp.guards.push((cond, false));
    let e = import_subgraph(cx, else_g, "else_branch");
    cx.imp.guards.pop();
    let (t, e) = (t?, e?);
    let mut res = Vec::with_capacity(t.len());
    for (i, (a, b)) in t.into_iter().zip(e).enumerate() {
        res.push(match (a, b) {
            (Out::Value(a), Out::Value(b)) => Out::Value(merge(cx, cond, vec![a], vec![b])?[0]),
            (Out::Seq(a), Out::Seq(b)) if a.len() == b.len() => {
                let s = merge(cx, cond, a, b)?;
                if s.iter().any(|v| cx.imp.rank_may_be.contains_key(v)) {
                    return Err(format!(
                        "output {i}: a sequence whose elements' rank the run decides (its branches' differ by \
                         leading dims of 1), which dlc does not keep"
                    ));
                }
                Out::Seq(s)
            }
            // Of other lengths, or of a length only the run knows in either branch: a
            // sequence whose length only the run knows.
            (a @ (Out::Seq(_) | Out::RunSeq(_)), b @ (Out::Seq(_) | Out::RunSeq(_))) => {
                let what = |m: String| format!("output {i} (a sequence whose length only the run knows): {m}");
                let run = |cx: &mut NodeCx, o: Out, tag: &str| -> Result<Option<super::sequence::RunSeq>, String> {
                    match o {
                        Out::RunSeq(s) => Ok(Some(s)),
                        Out::Seq(es) if es.is_empty() => Ok(None),
                        Out::Seq(es) => super::sequence::stack_boxed(cx, &es, &format!("out{i}_{tag}")).map(Some),
                        _ => Err("internal: not a sequence".into()),
                    }
                };
                let (a, b) = (run(cx, a, "then").map_err(what)?, run(cx, b, "else").map_err(what)?);
                Out::RunSeq(super::sequence::select_seqs(cx, cond, a, b, &format!("out{i}")).map_err(what)?)
            }
            // An empty optional in one branch: an optional whose presence only the run knows.
            (Out::Absent, Out::Absent) => Out::Absent,
            (Out::Absent, x @ (Out::Value(_) | Out::Seq(_) | Out::RunSeq(_))) => {
                let c = flag_of(cx, cond, i)?;
                let absent = cx.add1(&format!("out{i}_else_taken"), dlc_ir::ops::Not {}, &[c])?;
                Out::Maybe(Box::new(x), absent)
            }
            (x @ (Out::Value(_) | Out::Seq(_) | Out::RunSeq(_)), Out::Absent) => {
                Out::Maybe(Box::new(x), flag_of(cx, cond, i)?)
            }
            _ => {
                return Err(format!(
                    "output {i} is a sequence in one branch and not in the other (an empty optional, a tensor); \
                     with a condition known only at run time dlc needs one kind"
                ))
            }
        });
    }
    Ok(res)
}

/// `v` (`what`: a Loop's body output, a Scan's, a model output), unless its rank only the
/// run decides (`Importer::rank_may_be`): such a value is carried, stacked or returned
/// at one rank only.
pub(crate) fn of_one_rank(imp: &crate::import::Importer, v: Value, what: &str) -> Result<Value, String> {
    match imp.rank_may_be.get(&v) {
        Some(r) => Err(format!(
            "{what} is {} or of rank {r}, as an If on a run-time condition decides; dlc takes a value of one rank \
             here",
            imp.graph.value_type(v)
        )),
        None => Ok(v),
    }
}

/// The elementwise ops whose operands broadcast (numpy-style): a value with fewer leading
/// dims of 1 gives the same elements, the result's rank the largest operand's.
const BROADCASTING: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Mod",
    "Max",
    "Min",
    "Mean",
    "Sum",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Where",
    "PRelu",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
];

/// Elementwise ops of one operand (the result has the operand's shape).
const UNARY: &[&str] = &[
    "Identity",
    "Cast",
    "Neg",
    "Abs",
    "Sqrt",
    "Exp",
    "Log",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Floor",
    "Ceil",
    "Round",
    "Reciprocal",
    "Not",
    "Sign",
    "Sin",
    "Cos",
    "Erf",
    "IsNaN",
    "IsInf",
];

/// For node `cx`, when an operand is a value whose rank only the run decides
/// (`Importer::rank_may_be`: an If on a run-time condition gave `f32[]` or `f32[1]`):
/// whether the node may take it, and the lower rank its results may then have (`None`:
/// they have one rank). Elementwise ops take it (broadcasting makes the elements the same
/// either way; the result's rank is decided by the run only when no other operand has
/// the full rank), and CastLike as the type to cast to; If branches read it as they like
/// (their nodes are checked in turn). Every other use is refused: its result would differ
/// in shape between the two cases.
pub(crate) fn rank_of_uses(cx: &NodeCx) -> Result<Option<usize>, String> {
    let imp = &*cx.imp;
    if imp.rank_may_be.is_empty() {
        return Ok(None);
    }
    let lower_of = |name: &String| imp.values.get(name).and_then(|v| imp.rank_may_be.get(v)).copied();
    let op = cx.node.op_type.as_str();
    if op != "If" {
        let mut inner = Vec::new();
        for a in &cx.node.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                free_names(g, &mut inner);
            }
        }
        if let Some(n) = inner.iter().find(|n| lower_of(n).is_some()) {
            return Err(format!(
                "its subgraph reads '{n}', whose rank only the run decides (an If on a run-time condition gave it); \
                 dlc takes such a value in elementwise ops and If branches only"
            ));
        }
    }
    let marked: Vec<(usize, &String)> =
        cx.node.input.iter().enumerate().filter(|(_, n)| !n.is_empty() && lower_of(n).is_some()).collect();
    let Some(&(_, first)) = marked.first() else { return Ok(None) };
    let standard = cx.node.domain.is_empty() || cx.node.domain == "ai.onnx";
    if standard && op == "CastLike" && marked.iter().all(|(i, _)| *i == 1) {
        return Ok(None);
    }
    if standard && (BROADCASTING.contains(&op) || UNARY.contains(&op)) {
        // The result's rank: the largest operand's; at least the largest rank among the
        // operands when each marked one has its lower rank.
        let rank_of = |name: &String| -> Option<usize> {
            if let Some(v) = imp.values.get(name) {
                return Some(imp.graph.value_type(*v).shape.rank());
            }
            if let Some(t) = imp.initializers.get(name) {
                return Some(t.ty().shape.rank());
            }
            imp.shape_values.get(name).map(|s| usize::from(!s.scalar))
        };
        let (mut high, mut low) = (0, 0);
        for n in cx.node.input.iter().filter(|n| !n.is_empty()) {
            let r = rank_of(n).ok_or_else(|| format!("internal: the rank of operand '{n}'"))?;
            high = high.max(r);
            low = low.max(lower_of(n).unwrap_or(r));
        }
        return Ok((low < high).then_some(low));
    }
    let v = imp.values[first];
    Err(format!(
        "'{first}' is {} or of rank {}, as an If on a run-time condition decides; {op} of it would give results of \
         either shape (dlc takes such a value in elementwise ops and as CastLike's type)",
        imp.graph.value_type(v),
        imp.rank_may_be[&v]
    ))
}
