//! Control flow. `If`: a condition known at compile time imports only the branch it
//! takes (the other is never compiled, and the model carries no branch); a run-time
//! condition imports both branches into the graph (they are pure functions of values in
//! scope) and selects each output with `Where` — the results are ONNX's, at the cost of
//! computing both branches. Branches must give outputs of one type (ONNX allows them to
//! differ in shape; dlc refuses that with the two types).
use super::{BuildFn, NodeCx};
use dlc_ir::ops::Where;
use dlc_ir::{DType, Value};
use onnx_protobuf::GraphProto;
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("If", if_);
}

fn branch<'n>(cx: &NodeCx<'n, '_>, name: &str) -> Result<&'n GraphProto, String> {
    let node: &'n onnx_protobuf::NodeProto = cx.node;
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| format!("attribute '{name}' (a graph) is required"))
}

/// Imports subgraph `g` into the current scope; its outputs' values.
fn import_branch(cx: &mut NodeCx, g: &GraphProto, what: &str) -> Result<Vec<Value>, String> {
    for t in &g.initializer {
        let data =
            crate::tensor::tensor_from_proto(t, &cx.imp.base).map_err(|m| format!("{what}: initializer: {m}"))?;
        cx.imp.initializers.insert(t.name.clone(), data);
    }
    let prefix = format!("{}/{what}/", cx.name);
    cx.imp.import_nodes(&g.node, &prefix).map_err(|e| format!("in its {what}: {e}"))?;
    g.output
        .iter()
        .map(|o| {
            if cx.imp.shape_values.contains_key(&o.name) {
                return Err(format!("{what} output '{}' is a shape of run-time dims, not supported yet", o.name));
            }
            cx.imp.lookup(&o.name).map_err(|m| format!("{what} output '{}': {m}", o.name))
        })
        .collect()
}

fn if_(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
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
    if let Some(c) = cx.const_input(0)? {
        // Folded: only the branch taken exists.
        let taken = c.bytes().first().is_some_and(|&b| b != 0);
        let (g, what) = if taken { (then_g, "then_branch") } else { (else_g, "else_branch") };
        return import_branch(cx, g, what);
    }
    let t = import_branch(cx, then_g, "then_branch")?;
    let e = import_branch(cx, else_g, "else_branch")?;
    let mut outs = Vec::with_capacity(t.len());
    for (i, (a, b)) in t.into_iter().zip(e).enumerate() {
        let (ta, tb) = (cx.ty(a), cx.ty(b));
        if ta != tb {
            return Err(format!("output {i} is {ta} in then_branch and {tb} in else_branch; dlc needs one type"));
        }
        let suffix = if i == 0 { String::new() } else { format!("out{i}") };
        outs.push(cx.add1(&suffix, Where {}, &[cond, a, b])?);
    }
    Ok(outs)
}
