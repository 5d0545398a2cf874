//! Turns a convolution over column images into one over row images.
//!
//! A 1-D convolution exported as a 2-D one may lay its sequence along the height, with
//! a width of 1 (jax2tf and TensorFlow's `Conv1D` as `[N, C, L, 1]` with a `[K, 1]`
//! kernel: Google's Magika). dlc's convolution kernels tile along a row of output
//! pixels (`dlc_lower::convblk`: one broadcast input value feeds a block of filter
//! vectors, the accumulators span the row's pixels), so rows of one pixel leave them
//! one filter load per multiply-add. With a width of 1, `[N, C, H, 1]` and `[N, C, 1, H]`
//! are the same bytes: the pass reshapes the input (a view), transposes the kernel
//! `[M, C, K, 1] -> [M, C, 1, K]` (the same bytes too) and the window's attributes, and
//! reshapes the result back. The fused epilogue (bias, residual, activation) moves with
//! the convolution; a residual operand is reshaped like the input.
//!
//! Contract: applies to a Conv whose input is 4-D with a width of 1 and a known height
//! above 1, whose weights are a constant with a kernel width of 1, and whose window
//! adds no columns (no left or right padding); the result is the same values in the
//! same layout, only the kernel that computes them changes.
use crate::{Changed, Pass, PassCx, PassError};
use dlc_ir::ops::{AutoPad, Conv, Reshape};
use dlc_ir::{Dim, Graph, NodeId, Op, TensorData, TensorType, Value};

/// See the module doc.
pub struct ConvOrient;

impl Pass for ConvOrient {
    fn name(&self) -> &'static str {
        "conv-orient"
    }

    fn run(&self, g: &mut Graph, _: &mut PassCx) -> Result<Changed, PassError> {
        let mut changed = Changed::No;
        for id in g.node_ids() {
            if rewrite(g, id).map_err(|source| PassError::Invalid { pass: "conv-orient", source: Box::new(source) })? {
                changed = Changed::Yes;
            }
        }
        Ok(changed)
    }
}

/// The Conv `id` as a row convolution between two reshapes, where the module doc's
/// contract holds; whether it did.
fn rewrite(g: &mut Graph, id: NodeId) -> Result<bool, dlc_ir::IrError> {
    let Op::Conv(op) = &g.node(id).op else { return Ok(false) };
    let op = op.clone();
    let name = g.node(id).name.clone();
    let operands = g.operands(id).to_vec();
    let (x, w) = (g.value_type(operands[0]).clone(), g.value_type(operands[1]).clone());
    let Op::Const(wc) = &g.node(operands[1].node).op else { return Ok(false) };
    let weights = wc.value.clone();
    let xs = &x.shape.0;
    let Some(wd) = w.shape.as_fixed() else { return Ok(false) };
    if xs.len() != 4 || wd.len() != 4 || xs[3] != Dim::Fixed(1) || wd[3] != 1 {
        return Ok(false);
    }
    if !matches!(xs[2], Dim::Fixed(h) if h > 1) {
        return Ok(false);
    }
    let Ok(geo) = op.geometry(&name, &x, &w) else { return Ok(false) };
    if geo.pad_begin[1] != 0 || geo.pad_end[1] != 0 || geo.output[1] != 1 {
        return Ok(false);
    }
    let rows = Reshape { shape: vec![0, 0, 1, -1], allowzero: false };
    let xr = g.add_node(format!("{name}/rows"), rows.clone(), &[operands[0]])?[0];
    let wt = TensorType::fixed(weights.ty().dtype, &[wd[0], wd[1], 1, wd[2]]);
    let wr = TensorData::new(wt, weights.bytes().into()).expect("the same bytes");
    let wr = g.add_const(format!("{name}/rows_weight"), wr);
    let mut args: Vec<Value> = vec![xr, wr];
    if let Some(b) = operands.get(2) {
        args.push(*b);
    }
    if let Some(r) = operands.get(3) {
        args.push(g.add_node(format!("{name}/rows_residual"), rows, &[*r])?[0]);
    }
    let turned = Conv {
        kernel_shape: vec![1, geo.kernel[0] as i64],
        strides: vec![1, geo.strides[0] as i64],
        pads: vec![0, geo.pad_begin[0] as i64, 0, geo.pad_end[0] as i64],
        dilations: vec![1, geo.dilations[0] as i64],
        group: op.group,
        auto_pad: AutoPad::NotSet,
        act: op.act,
    };
    let y = g.add_node(format!("{name}/row_conv"), turned, &args)?[0];
    let back = g.add_node(format!("{name}/columns"), Reshape { shape: vec![0, 0, -1, 1], allowzero: false }, &[y])?[0];
    let old = Value { node: id, port: 0 };
    // The result keeps its type (a symbolic batch passes through `0`).
    if g.value_type(back) != g.value_type(old) {
        g.remove_node(back.node);
        g.remove_node(y.node);
        return Ok(false);
    }
    g.replace_uses(old, back);
    g.remove_node(id);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dlc_ir::ops::{Activation, Input};
    use dlc_ir::DType;

    fn conv(pads: Vec<i64>, h: u64) -> (Graph, Value) {
        let mut g = Graph::new("t");
        let x = TensorType {
            dtype: DType::F32,
            shape: dlc_ir::Shape(vec![Dim::sym("N"), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(1)]),
        };
        let x = g.add_node("x", Input { ty: x }, &[]).unwrap()[0];
        let w: Vec<f32> = (0..4 * 3 * 5).map(|i| i as f32).collect();
        let w = g.add_const("w", TensorData::from_f32(&[4, 3, 5, 1], &w).unwrap());
        let op = Conv {
            kernel_shape: vec![],
            strides: vec![2, 1],
            pads,
            dilations: vec![1, 1],
            group: 1,
            auto_pad: AutoPad::NotSet,
            act: Activation::Relu,
        };
        let y = g.add_node("c", op, &[x, w]).unwrap()[0];
        g.add_output("y", y);
        (g, y)
    }

    #[test]
    fn a_column_convolution_becomes_a_row_one_between_views() {
        let (mut g, y) = conv(vec![2, 0, 1, 0], 16);
        let before = g.value_type(y).clone();
        assert_eq!(ConvOrient.run(&mut g, &mut PassCx::default()).unwrap(), Changed::Yes);
        dlc_ir::verify(&g).unwrap();
        let out = g.outputs()[0].1;
        assert_eq!(g.value_type(out), &before, "the result keeps its type");
        let conv = g.node_ids().into_iter().find_map(|i| match &g.node(i).op {
            Op::Conv(c) => Some((c.clone(), g.value_type(g.operands(i)[1]).clone())),
            _ => None,
        });
        let (c, wt) = conv.expect("a conv remains");
        assert_eq!((c.kernel_shape, c.strides, c.pads), (vec![1, 5], vec![1, 2], vec![0, 2, 0, 1]));
        assert_eq!(wt.shape.as_fixed(), Some(vec![4, 3, 1, 5]));
        assert_eq!(c.act, Activation::Relu);
    }

    #[test]
    fn padded_columns_and_row_images_are_left_alone() {
        for (pads, h) in [(vec![0, 1, 0, 1], 16), (vec![2, 0, 2, 0], 1)] {
            let (mut g, _) = conv(pads, h);
            assert_eq!(ConvOrient.run(&mut g, &mut PassCx::default()).unwrap(), Changed::No);
        }
    }
}
