//! One kernel per node. `lower_node` matches on `Op` exhaustively: a new op does not
//! compile until it has a lowering here (or is listed as a source that has none).
use crate::kernel::{Kb, R};
use crate::{CodegenError, TargetSpec};
use dlc_ir::{Graph, NodeId, Op, TensorType};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::FunctionValue;

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

    /// The node's kir kernel from dlc-lower, when its family is ported (see
    /// [`dlc_lower::lower`]); `None` sends it to the inkwell lowerings below.
    pub fn kir(&self) -> Option<R<dlc_kir::Kernel>> {
        dlc_lower::lower(self.name, &self.lower_node(), &self.target.lowering())
            .map(|r| r.map_err(|e| self.unsupported(e.reason)))
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

/// Emits the kernel of node `id` and returns it. Parameters: operands, then results.
pub(crate) fn lower_node<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    g: &Graph,
    id: NodeId,
    target: &TargetSpec,
    index: usize,
) -> R<FunctionValue<'ctx>> {
    let node = g.node(id);
    let info = NodeInfo::of(g, id, target)?;
    let nparams = info.inputs.len() + info.outputs.len();
    let kb = Kb::new(cx, m, &format!("k{index}_{}", node.op.mnemonic()), nparams);
    emit_body(&kb, g, id, &info)?;
    kb.finish()
}

/// Emits the computation of node `id` (described by `info`) into `kb`, whose parameters
/// are the operands, then the results.
pub(crate) fn emit_body(kb: &Kb<'_, '_>, g: &Graph, id: NodeId, info: &NodeInfo) -> R<()> {
    // Every op's kernel is dlc-lower's (whose `lower` matches `Op` exhaustively),
    // translated by `crate::kir`; only sources have none (the caller skips them).
    match info.kir() {
        Some(k) => crate::kir::emit(kb, &k?),
        None => Err(info.unsupported(format!("internal: no kernel for {} here", g.node(id).op.mnemonic()))),
    }
}

/// Whether node `id` reads its operand `operand` only from a copy its kernel packs at
/// compile time (so the weight needs no global of its own).
pub(crate) fn prepacks(g: &Graph, id: NodeId, operand: usize, target: &TargetSpec) -> bool {
    if let Op::QConv(_) = g.node(id).op {
        return (1..=3).contains(&operand) && (1..=3).all(|i| qconv_const(g, id, i).is_some());
    }
    let packed = || {
        NodeInfo::of(g, id, target).is_ok_and(|n| {
            let node = n.lower_node();
            match n.op {
                Op::Conv(op) => dlc_lower::convblk::applies(&node, op, &target.lowering()).is_some(),
                _ => dlc_lower::gemm::plan(&node).is_some(),
            }
        })
    };
    operand == 1 && packed()
}

/// Operand `i` of a QConv when it is a constant (the kernel packs it).
fn qconv_const(g: &Graph, id: NodeId, i: usize) -> Option<&dlc_ir::TensorData> {
    match &g.node(g.operands(id).get(i)?.node).op {
        Op::Const(c) => Some(&c.value),
        _ => None,
    }
}

impl From<dlc_ir::IrError> for CodegenError {
    fn from(e: dlc_ir::IrError) -> Self {
        CodegenError::Llvm(format!("shape rule failed during lowering: {e}"))
    }
}
