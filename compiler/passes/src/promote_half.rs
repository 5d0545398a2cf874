use crate::{Changed, Pass, PassCx, PassError};
use dlc_ir::ops::Cast;
use dlc_ir::{DType, Graph, OpKind, Value};

/// Computes f16 and bf16 contractions, windows and normalisations in f32.
/// Contract: every such node with a 16-bit float operand or result reads its operands
/// through `cast` to f32 and produces f32, and a `cast` back to the original dtype feeds
/// its former users (model outputs included); other ops are untouched (elementwise ops,
/// reductions and data movement handle 16-bit floats themselves).
pub struct PromoteHalf;

fn is_half(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

impl Pass for PromoteHalf {
    fn name(&self) -> &'static str {
        "promote-half"
    }

    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let invalid = |source| PassError::Invalid { pass: "promote-half", source: Box::new(source) };
        let mut changed = Changed::No;
        for id in g.topo_order().map_err(invalid)? {
            let node = g.node(id);
            if !matches!(node.op.kind(), OpKind::Contraction | OpKind::Window | OpKind::Normalization) {
                continue;
            }
            let operands = g.operands(id);
            let half_in = operands.iter().any(|v| is_half(g.value_type(*v).dtype));
            let half_out = node.outputs.iter().any(|t| is_half(t.dtype));
            if !half_in && !half_out {
                continue;
            }
            let name = node.name.clone();
            for (port, v) in operands.iter().enumerate() {
                if is_half(g.value_type(*v).dtype) {
                    let c =
                        g.add_node(format!("{name}/to_f32_{port}"), Cast::new(DType::F32), &[*v]).map_err(invalid)?[0];
                    g.set_operand(id, port as u32, c);
                }
            }
            let original: Vec<DType> = g.node(id).outputs.iter().map(|t| t.dtype).collect();
            for t in &mut g.node_mut(id).outputs {
                if is_half(t.dtype) {
                    t.dtype = DType::F32;
                }
            }
            for (port, dt) in original.into_iter().enumerate() {
                if is_half(dt) {
                    let v = Value { node: id, port: port as u32 };
                    let back = g.add_node(format!("{name}/from_f32_{port}"), Cast::new(dt), &[v]).map_err(invalid)?[0];
                    g.replace_uses_except(v, back, back.node);
                }
            }
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::{Activation, MatMul};
    use dlc_ir::TensorType;

    #[test]
    fn matmul_in_f16_runs_in_f32_between_casts() {
        let mut g = Graph::new("half");
        let a = g.add_input("a", TensorType::fixed(DType::F16, &[2, 3]));
        let b = g.add_input("b", TensorType::fixed(DType::F16, &[3, 4]));
        let y = g.add_node("mm", MatMul { act: Activation::None }, &[a, b]).unwrap()[0];
        g.add_output("y", y);
        assert_eq!(PromoteHalf.run(&mut g, &mut PassCx::default()).unwrap(), Changed::Yes);
        dlc_ir::verify(&g).unwrap();
        insta::assert_snapshot!(dlc_ir::print_graph(&g).unwrap());
    }
}
