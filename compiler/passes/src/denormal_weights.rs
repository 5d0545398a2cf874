//! Flushes subnormal f32 weights of contractions to zero.
//!
//! Trained weights can hold many subnormal values (below 2^-126, about 1.2e-38): PP-OCRv6's
//! text detector ships two 384 x 768 convolutions whose weights are 63% and 24%
//! subnormal. An x86 core multiplies a subnormal operand through a microcode assist,
//! tens to hundreds of cycles instead of one, and those two layers took 70% of the
//! model's time. A weight that small contributes below 2^-126 times an activation to a
//! sum of normal terms: flushing it to zero (keeping its sign) changes no result that
//! f32 represents, except a sum made only of such products. OpenVINO's CPU plugin does
//! the same with denormal weights.
//!
//! Contract: a constant f32 tensor all of whose uses are the weight operand of a Conv,
//! ConvTranspose, MatMul or Gemm (operand 1) gets its subnormal values replaced by
//! zeros of the same sign; every other constant is left as it is (a subnormal divisor
//! or a value compared against stays exact).
use crate::{Changed, Pass, PassCx, PassError};
use dlc_ir::ops::Const;
use dlc_ir::{DType, Graph, Op, TensorData};

/// See the module doc.
pub struct DenormalWeights;

impl Pass for DenormalWeights {
    fn name(&self) -> &'static str {
        "denormal-weights"
    }

    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let mut changed = Changed::No;
        for id in g.node_ids() {
            let Op::Const(c) = &g.node(id).op else { continue };
            if c.value.ty().dtype != DType::F32 {
                continue;
            }
            let users = g.users(id);
            let weight_only = !users.is_empty()
                && users.iter().all(|&(u, operand, _)| {
                    operand == 1
                        && matches!(g.node(u).op, Op::Conv(_) | Op::ConvTranspose(_) | Op::MatMul(_) | Op::Gemm(_))
                });
            if !weight_only || g.outputs().iter().any(|(_, v)| v.node == id) {
                continue;
            }
            let bytes = c.value.bytes();
            let subnormal = |w: &[u8]| {
                let bits = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                bits & 0x7f80_0000 == 0 && bits & 0x007f_ffff != 0
            };
            if !bytes.chunks_exact(4).any(subnormal) {
                continue;
            }
            let flushed: Vec<u8> = bytes
                .chunks_exact(4)
                .flat_map(|w| {
                    let bits = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                    let bits = if subnormal(w) { bits & 0x8000_0000 } else { bits };
                    bits.to_le_bytes()
                })
                .collect();
            let value = TensorData::new(c.value.ty().clone(), flushed.into()).expect("the same size");
            g.node_mut(id).op = Const { value }.into();
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::{Activation, Div, Input, MatMul};
    use dlc_ir::TensorType;

    fn values(g: &Graph, name: &str) -> Vec<f32> {
        let id = g.node_ids().into_iter().find(|&i| g.node(i).name == name).unwrap();
        let Op::Const(c) = &g.node(id).op else { panic!("not a const") };
        c.value.to_f32().unwrap()
    }

    #[test]
    fn subnormal_weights_become_signed_zeros_and_other_constants_stay() {
        let mut g = Graph::new("t");
        let x = g.add_node("x", Input { ty: TensorType::fixed(DType::F32, &[2, 3]) }, &[]).unwrap()[0];
        let tiny = f32::from_bits(5);
        let w = g.add_const("w", TensorData::from_f32(&[3, 2], &[1.0, tiny, -tiny, 0.5, 2.0, -3.0]).unwrap());
        let y = g.add_node("mm", MatMul { act: Activation::None }, &[x, w]).unwrap()[0];
        let d = g.add_const("d", TensorData::from_f32(&[2], &[tiny, 1.0]).unwrap());
        let z = g.add_node("div", Div {}, &[y, d]).unwrap()[0];
        g.add_output("z", z);
        assert_eq!(DenormalWeights.run(&mut g, &mut PassCx::default()).unwrap(), Changed::Yes);
        let w = values(&g, "w");
        assert_eq!(w, [1.0, 0.0, -0.0, 0.5, 2.0, -3.0]);
        assert!(w[2].is_sign_negative());
        assert_eq!(values(&g, "d")[0].to_bits(), 5, "a divisor keeps its value");
        assert_eq!(DenormalWeights.run(&mut g, &mut PassCx::default()).unwrap(), Changed::No);
    }
}
