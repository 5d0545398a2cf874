use crate::{Changed, Pass, PassCx, PassError};
use dlc_ir::{Graph, Op};

/// Removes `identity` nodes.
/// Contract: every use of an identity's result (model outputs included) reads its operand
/// instead; types are unchanged since identity preserves them. An identity that feeds a
/// model output straight from a model input is kept, so output and input stay distinct.
pub struct IdentityElim;

impl Pass for IdentityElim {
    fn name(&self) -> &'static str {
        "identity-elim"
    }

    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let mut changed = Changed::No;
        for id in g.node_ids() {
            if !matches!(g.node(id).op, Op::Identity(_)) {
                continue;
            }
            let src = g.operands(id)[0];
            let me = dlc_ir::Value { node: id, port: 0 };
            let feeds_output = g.outputs().iter().any(|(_, v)| *v == me);
            if feeds_output && matches!(g.node(src.node).op, Op::Input(_)) {
                continue;
            }
            g.replace_uses(me, src);
            g.remove_node(id);
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}
