//! One kernel per node. `lower_node` matches on `Op` exhaustively: a new op does not
//! compile until it has a lowering here (or is listed as a source that has none).
use crate::kernel::{Kb, R};
use crate::{CodegenError, TargetSpec};
use dlc_ir::{DType, Graph, NodeId, Op, TensorType};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::FunctionValue;

mod convblk;
pub(crate) mod elementwise;
mod gemm;
pub(crate) use gemm::vfma;
pub(crate) mod movement;
mod quant;
pub(crate) mod reduce;

/// What a lowering sees: the node, its operand and result types (all fixed).
pub(crate) struct NodeInfo<'g> {
    pub name: &'g str,
    pub op: &'g Op,
    pub inputs: Vec<TensorType>,
    pub outputs: &'g [TensorType],
    pub target: &'g TargetSpec,
    /// The operands' values where they are constants.
    pub consts: Vec<Option<&'g dlc_ir::TensorData>>,
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
        }
    }

    /// Fixed dims of operand `i`.
    pub fn in_dims(&self, i: usize) -> Vec<u64> {
        self.inputs[i].shape.as_fixed().expect("checked fixed")
    }

    /// Fixed dims of result `i`.
    pub fn out_dims(&self, i: usize) -> Vec<u64> {
        self.outputs[i].shape.as_fixed().expect("checked fixed")
    }

    /// Fails unless every operand and result is f32 (arithmetic kernels are f32-only for now).
    pub fn require_f32(&self) -> R<()> {
        for t in self.inputs.iter().chain(self.outputs) {
            if t.dtype != DType::F32 {
                return Err(self.unsupported(format!("dtype {} is not supported yet (f32 only)", t.dtype)));
            }
        }
        Ok(())
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
    let node = g.node(id);
    // Families already ported to kir: lowered by dlc-lower, translated by `crate::kir`.
    if let Some(k) = info.kir() {
        return crate::kir::emit(kb, &k?);
    }
    match &node.op {
        // Lowered through kir above (dlc-lower): data movement, norms, reductions,
        // pools and the elementwise family.
        Op::MaxPool(_)
        | Op::Conv(_)
        | Op::MatMul(_)
        | Op::Gemm(_)
        | Op::Attention(_)
        | Op::ConvTranspose(_)
        | Op::GridSample(_)
        | Op::Einsum(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool(_)
        | Op::Transpose(_)
        | Op::Slice(_)
        | Op::Trilu(_)
        | Op::GatherElements(_)
        | Op::Pad(_)
        | Op::Reshape(_)
        | Op::Flatten(_)
        | Op::Identity(_)
        | Op::Concat(_)
        | Op::Gather(_)
        | Op::ScatterElements(_)
        | Op::ScatterND(_)
        | Op::BatchNormalization(_)
        | Op::Softmax(_)
        | Op::LayerNormalization(_)
        | Op::Add(_)
        | Op::Sub(_)
        | Op::Mul(_)
        | Op::Div(_)
        | Op::Max(_)
        | Op::Min(_)
        | Op::Mod(_)
        | Op::Pow(_)
        | Op::PRelu(_)
        | Op::Equal(_)
        | Op::Greater(_)
        | Op::GreaterOrEqual(_)
        | Op::Less(_)
        | Op::LessOrEqual(_)
        | Op::And(_)
        | Op::Or(_)
        | Op::Xor(_)
        | Op::Not(_)
        | Op::BitwiseAnd(_)
        | Op::BitwiseOr(_)
        | Op::BitwiseXor(_)
        | Op::BitwiseNot(_)
        | Op::BitShift(_)
        | Op::Where(_)
        | Op::Cast(_)
        | Op::Abs(_)
        | Op::Neg(_)
        | Op::Sign(_)
        | Op::Relu(_)
        | Op::Sigmoid(_)
        | Op::Tanh(_)
        | Op::Exp(_)
        | Op::Log(_)
        | Op::Sqrt(_)
        | Op::Reciprocal(_)
        | Op::Sin(_)
        | Op::Cos(_)
        | Op::Tan(_)
        | Op::Asin(_)
        | Op::Acos(_)
        | Op::Atan(_)
        | Op::Sinh(_)
        | Op::Cosh(_)
        | Op::Asinh(_)
        | Op::Acosh(_)
        | Op::Atanh(_)
        | Op::Erf(_)
        | Op::Floor(_)
        | Op::Ceil(_)
        | Op::Round(_)
        | Op::Softplus(_)
        | Op::Softsign(_)
        | Op::Mish(_)
        | Op::HardSwish(_)
        | Op::HardSigmoid(_)
        | Op::LeakyRelu(_)
        | Op::Elu(_)
        | Op::Selu(_)
        | Op::Celu(_)
        | Op::ThresholdedRelu(_)
        | Op::Gelu(_)
        | Op::IsNaN(_)
        | Op::IsInf(_)
        | Op::Clip(_)
        | Op::Swish(_)
        | Op::Shrink(_)
        | Op::Expand(_)
        | Op::Fused(_)
        | Op::ReduceSum(_)
        | Op::ReduceMean(_)
        | Op::ReduceMax(_)
        | Op::ReduceMin(_)
        | Op::ReduceProd(_)
        | Op::ReduceL1(_)
        | Op::ReduceL2(_)
        | Op::ReduceLogSum(_)
        | Op::ReduceLogSumExp(_)
        | Op::ReduceSumSquare(_)
        | Op::ArgMax(_)
        | Op::ArgMin(_)
        | Op::NllLoss(_)
        | Op::CumSum(_) => return Err(info.unsupported("internal: lowered through kir")),
        Op::QuantPack(op) => quant::quant_pack(kb, info, op)?,
        Op::QConv(op) => {
            let c = |i: usize| {
                qconv_const(g, id, i).ok_or_else(|| info.unsupported("weights, mult and offset must be constants"))
            };
            let input_max = match &g.node(g.operands(id)[0].node).op {
                Op::QuantPack(p) => p.qmax as u64,
                _ => 255,
            };
            quant::qconv(kb, info, op, [c(1)?, c(2)?, c(3)?], input_max)?
        }
        // Sources have no kernel (the caller skips them).
        Op::Input(_) | Op::Const(_) => {
            return Err(info.unsupported(format!("internal: no kernel for {} here", node.op.mnemonic())))
        }
    }
    Ok(())
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
