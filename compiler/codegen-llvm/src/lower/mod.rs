//! What the backends see of a graph node ([`NodeInfo`]): its types (checked fixed, with
//! an error that names the flag pinning them) and the node as dlc-lower takes it.
use crate::kernel::R;
use crate::{CodegenError, TargetSpec};
use dlc_ir::{Graph, NodeId, Op, TensorType};

pub(crate) mod elementwise;

/// What a lowering sees: the node, its operand and result types (all fixed).
pub(crate) struct NodeInfo<'g> {
    pub name: &'g str,
    pub op: &'g Op,
    pub inputs: Vec<TensorType>,
    pub outputs: &'g [TensorType],
    pub target: &'g TargetSpec,
    /// The operands' values where they are constants.
    pub consts: Vec<Option<&'g dlc_ir::TensorData>>,
    /// The operands' bounds ([`dlc_lower::operand_max`]).
    pub operand_max: Vec<Option<u64>>,
}

impl<'g> NodeInfo<'g> {
    /// Node `id` of `g`, whose operand and result shapes must all be fixed.
    pub fn of(g: &'g Graph, id: NodeId, target: &'g TargetSpec) -> R<NodeInfo<'g>> {
        let node = g.node(id);
        let info = NodeInfo {
            name: &node.name,
            op: &node.op,
            inputs: g.operands(id).iter().map(|v| g.value_type(*v).clone()).collect(),
            outputs: &node.outputs,
            target,
            consts: g
                .operands(id)
                .iter()
                .map(|v| match &g.node(v.node).op {
                    Op::Const(c) => Some(&c.value),
                    _ => None,
                })
                .collect(),
            operand_max: dlc_lower::operand_max(g, id),
        };
        for t in info.inputs.iter().chain(info.outputs) {
            if !t.shape.is_fixed() {
                return Err(
                    info.unsupported(format!("symbolic shape {t}; pin the input shapes with --input-shape NAME=DIMS"))
                );
            }
        }
        Ok(info)
    }

    pub fn unsupported(&self, reason: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported {
            node: self.name.to_string(),
            op: self.op.mnemonic(),
            reason: reason.into(),
            target: self.target.triple.clone(),
        }
    }

    /// The node as dlc-lower sees it.
    pub fn lower_node(&self) -> dlc_lower::Node<'_> {
        dlc_lower::Node {
            name: self.name,
            op: self.op,
            inputs: &self.inputs,
            outputs: self.outputs,
            consts: &self.consts,
            operand_max: &self.operand_max,
        }
    }
}

impl From<dlc_ir::IrError> for CodegenError {
    fn from(e: dlc_ir::IrError) -> Self {
        CodegenError::Llvm(format!("shape rule failed during lowering: {e}"))
    }
}
