//! Structural and type checks run after the frontend and after every pass in tests.
use crate::{Graph, IrError, TensorType};

/// Checks that the graph is acyclic, every operand position of every node is fed exactly
/// once by an existing output, operand counts fit the op, recorded output types equal
/// the op's type rule, and every model output names an existing value.
pub fn verify(g: &Graph) -> Result<(), IrError> {
    g.topo_order()?;
    for id in g.node_ids() {
        let node = g.node(id);
        let mut edges = g.operand_edges(id);
        edges.sort_by_key(|(p, _)| *p);
        for (i, (p, v)) in edges.iter().enumerate() {
            if *p as usize != i {
                return Err(IrError::Invalid(format!(
                    "node '{}' ({}): operand {i} is missing or fed twice",
                    node.name,
                    node.op.mnemonic()
                )));
            }
            if v.port as usize >= g.node(v.node).outputs.len() {
                return Err(IrError::Invalid(format!("node '{}' reads a missing output port {}", node.name, v.port)));
            }
        }
        let types: Vec<TensorType> = edges.iter().map(|(_, v)| g.value_type(*v).clone()).collect();
        for b in node.op.bodies() {
            verify(&b.0).map_err(|e| {
                IrError::Invalid(format!("in {} of {} '{}': {e}", b.0.name, node.op.mnemonic(), node.name))
            })?;
        }
        let inferred = node.op.infer(&node.name, &types)?;
        if inferred.len() != node.outputs.len() {
            return Err(IrError::Invalid(format!(
                "node '{}' records {} outputs, its op gives {}",
                node.name,
                node.outputs.len(),
                inferred.len()
            )));
        }
        for (port, (rec, inf)) in node.outputs.iter().zip(inferred).enumerate() {
            if *rec != inf {
                return Err(IrError::TypeMismatch {
                    node: node.name.clone(),
                    op: node.op.mnemonic(),
                    port,
                    recorded: rec.clone(),
                    inferred: inf,
                });
            }
        }
    }
    for (name, v) in g.outputs() {
        if !g.contains(v.node) || v.port as usize >= g.node(v.node).outputs.len() {
            return Err(IrError::Invalid(format!("model output '{name}' refers to a missing value")));
        }
    }
    Ok(())
}
