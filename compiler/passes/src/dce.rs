use crate::{Changed, Pass, PassCx, PassError};
use dlc_ir::Graph;
use std::collections::HashSet;

/// Dead-code elimination.
/// Contract: removes every node no model output depends on; model inputs always stay.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let mut live = HashSet::new();
        let mut stack: Vec<_> = g.outputs().iter().map(|(_, v)| v.node).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(g.operands(n).into_iter().map(|v| v.node));
            }
        }
        let mut changed = Changed::No;
        for id in g.node_ids() {
            if !live.contains(&id) && g.remove_node(id).is_some() {
                changed = Changed::Yes;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::{Add, Relu};
    use dlc_ir::{DType, TensorType};

    #[test]
    fn removes_unused_nodes_and_keeps_inputs() {
        let mut g = Graph::new("t");
        let ty = TensorType::fixed(DType::F32, &[2, 3]);
        let x = g.add_input("x", ty.clone());
        let unused_in = g.add_input("unused", ty);
        let dead = g.add_node("dead", Relu {}, &[unused_in]).unwrap()[0];
        let _dead2 = g.add_node("dead2", Add {}, &[dead, x]).unwrap();
        let y = g.add_node("y", Relu {}, &[x]).unwrap()[0];
        g.add_output("y", y);
        assert_eq!(Dce.run(&mut g, &mut PassCx::default()).unwrap(), Changed::Yes);
        dlc_ir::verify(&g).unwrap();
        insta::assert_snapshot!(dlc_ir::print_graph(&g).unwrap());
    }
}
