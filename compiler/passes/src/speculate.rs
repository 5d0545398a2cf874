//! `speculate_ifs`: every `if` replaced by both of its branches, inlined, and a `where`
//! per result that selects the taken branch's value. For backends without control flow
//! in their schedules (the CUDA one): both branches run, as ONNX allows (branches are
//! pure). Their run-time index ops clamp there, so the branch not taken cannot fail a
//! run. The CPU backend runs `if` as it is (only the branch taken).
use dlc_ir::ops::{If, Where};
use dlc_ir::{Graph, IrError, Op, Value};
use std::collections::HashMap;

/// Replaces every `if` of `g`, and of the bodies of its loops, by its two branches and a
/// `where` per result. Returns how many it replaced.
pub fn speculate_ifs(g: &mut Graph) -> Result<usize, IrError> {
    let mut n = 0;
    for id in g.node_ids() {
        for b in g.node_mut(id).op.bodies_mut() {
            n += speculate_ifs(std::sync::Arc::make_mut(&mut b.0))?;
        }
    }
    for id in g.topo_order()? {
        let Op::If(op) = &g.node(id).op else { continue };
        let op: If = op.clone();
        let name = g.node(id).name.clone();
        let operands = g.operands(id);
        let (cond, outer) =
            operands.split_first().ok_or_else(|| IrError::Invalid(format!("if '{name}' has no operands")))?;
        let t = inline(g, &op.then.0, outer)?;
        let e = inline(g, &op.els.0, outer)?;
        for (port, (a, b)) in t.into_iter().zip(e).enumerate() {
            let sel = g.add_node(format!("{name}/select{port}"), Where {}, &[*cond, a, b])?[0];
            g.replace_uses(Value { node: id, port: port as u32 }, sel);
        }
        g.remove_node(id);
        n += 1;
    }
    Ok(n)
}

/// Adds the nodes of `body` to `g`, its inputs read as `outer`; its outputs' values in `g`.
fn inline(g: &mut Graph, body: &Graph, outer: &[Value]) -> Result<Vec<Value>, IrError> {
    let mut map: HashMap<Value, Value> = HashMap::new();
    for (&id, &v) in body.inputs().iter().zip(outer) {
        map.insert(Value { node: id, port: 0 }, v);
    }
    for id in body.topo_order()? {
        let node = body.node(id);
        // Constants' names are the model's; the importer prefixed the others.
        let name = match node.name.starts_with(&body.name) {
            true => node.name.clone(),
            false => format!("{}/{}", body.name, node.name),
        };
        let outs = match &node.op {
            Op::Input(_) => continue,
            Op::Const(c) => vec![g.add_const(name, c.value.clone())],
            op => {
                let ins: Vec<Value> = body.operands(id).iter().map(|v| map[v]).collect();
                g.add_node(name, op.clone(), &ins)?
            }
        };
        for (port, v) in outs.into_iter().enumerate() {
            map.insert(Value { node: id, port: port as u32 }, v);
        }
    }
    Ok(body.outputs().iter().map(|(_, v)| map[v]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::{Body, Exp, Neg};
    use dlc_ir::{DType, TensorData, TensorType};
    use std::sync::Arc;

    fn branch(name: &str, neg: bool) -> Body {
        let mut b = Graph::new(name);
        let x = b.add_input("x", TensorType::fixed(DType::F32, &[2]));
        let y = match neg {
            true => b.add_node(format!("{name}/neg"), Neg {}, &[x]).unwrap()[0],
            false => b.add_node(format!("{name}/exp"), Exp {}, &[x]).unwrap()[0],
        };
        b.add_output("y", y);
        Body(Arc::new(b))
    }

    #[test]
    fn both_branches_run_and_where_selects() {
        let mut g = Graph::new("g");
        let c = g.add_input("c", TensorType::fixed(DType::Bool, &[]));
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
        let op = If { then: branch("if/then_branch", true), els: branch("if/else_branch", false) };
        let y = g.add_node("if", op, &[c, x]).unwrap()[0];
        g.add_output("y", y);
        assert_eq!(speculate_ifs(&mut g).unwrap(), 1);
        dlc_ir::verify(&g).unwrap();
        assert!(g.node_ids().iter().all(|&id| !matches!(g.node(id).op, Op::If(_))));
        for (taken, want) in [(true, [-1.0f32, 2.0]), (false, [1.0f32.exp(), (-2.0f32).exp()])] {
            let cv = TensorData::new(TensorType::fixed(DType::Bool, &[]), Arc::from(vec![u8::from(taken)])).unwrap();
            let xv = TensorData::from_f32(&[2], &[1.0, -2.0]).unwrap();
            let got = dlc_interp::run_graph(&g, &[cv, xv]).unwrap();
            assert_eq!(got[0].to_f32().unwrap(), want, "taken={taken}");
        }
    }
}
