//! The canonical text form: deterministic, one line per node, nodes numbered in
//! topological order with ties broken by creation order. Snapshots show this form.
use crate::{Graph, IrError, Op, Value};
use std::collections::HashMap;
use std::fmt::Write;

/// Prints `g` in canonical form.
pub fn print_graph(g: &Graph) -> Result<String, IrError> {
    let order = g.topo_order()?;
    let mut num: HashMap<crate::NodeId, usize> = HashMap::new();
    let mut out = String::new();
    let name_of = |num: &HashMap<crate::NodeId, usize>, v: Value| -> String {
        let n = num[&v.node];
        if g.node(v.node).outputs.len() > 1 {
            format!("%{n}.{}", v.port)
        } else {
            format!("%{n}")
        }
    };
    let ins: Vec<String> =
        g.inputs().iter().map(|&id| format!("{:?}: {}", g.node(id).name, g.node(id).outputs[0])).collect();
    writeln!(out, "graph {:?}({}) {{", g.name, ins.join(", ")).unwrap();
    for (i, &id) in order.iter().enumerate() {
        num.insert(id, i);
        let node = g.node(id);
        let operands: Vec<String> = g.operands(id).into_iter().map(|v| name_of(&num, v)).collect();
        let attrs: Vec<String> = match &node.op {
            Op::Input(_) => vec![],
            _ => node.op.attrs().into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        };
        let types: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
        write!(out, "  %{i} = {}", node.op.mnemonic()).unwrap();
        if !operands.is_empty() {
            write!(out, "({})", operands.join(", ")).unwrap();
        }
        if !attrs.is_empty() {
            write!(out, " {{{}}}", attrs.join(", ")).unwrap();
        }
        writeln!(out, " : {}  # {:?}", types.join(", "), node.name).unwrap();
        // A loop's body, an if's branches, indented under it.
        for b in node.op.bodies() {
            for line in print_graph(&b.0)?.lines() {
                writeln!(out, "    {line}").unwrap();
            }
        }
    }
    let outs: Vec<String> = g.outputs().iter().map(|(n, v)| format!("{n:?}={}", name_of(&num, *v))).collect();
    writeln!(out, "  return {}", outs.join(", ")).unwrap();
    out.push_str("}\n");
    Ok(out)
}
