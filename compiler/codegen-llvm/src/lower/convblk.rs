//! What the int8 convolution (`quant.rs`, still an inkwell kernel) shares with the
//! channel-blocked convolution, which is dlc-lower's `convblk.rs` now: the task order
//! over (image, row, channel block) and the lane-by-lane NCHW store with its epilogue.
use super::gemm::pixel_epilogue;
use crate::kernel::{Kb, R};
use inkwell::values::{IntValue, VectorValue};

/// Task `t` of `images x oh x blocks` as `(image, output row, channel block)`: rows
/// inner when `weights_outer` (each block's weights stay in cache), else blocks inner.
pub(crate) fn block_task<'ctx>(
    kb: &Kb<'_, 'ctx>,
    t: IntValue<'ctx>,
    oh: u64,
    blocks: u64,
    weights_outer: bool,
) -> R<(IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>)> {
    let img = kb.b.build_int_unsigned_div(t, kb.c(oh * blocks), "")?;
    let t = kb.b.build_int_unsigned_rem(t, kb.c(oh * blocks), "")?;
    Ok(if weights_outer {
        (img, kb.b.build_int_unsigned_rem(t, kb.c(oh), "")?, kb.b.build_int_unsigned_div(t, kb.c(oh), "")?)
    } else {
        (img, kb.b.build_int_unsigned_div(t, kb.c(blocks), "")?, kb.b.build_int_unsigned_rem(t, kb.c(blocks), "")?)
    })
}

/// What happens to a pixel's vector of output channels before it is stored: the
/// residual operand's lanes (if any) are added, then the bias and activation.
pub(crate) struct Epilogue<'ctx> {
    pub bias: Option<VectorValue<'ctx>>,
    pub residual: Option<usize>,
    pub act: dlc_ir::ops::Activation,
}

/// Applies `epi` to `v` (one pixel, lanes along output channels) and stores its first
/// `lanes` lanes to result `out` in NCHW, lane `l` at `y0 + l * plane`.
pub(crate) fn store_lanes<'ctx>(
    kb: &Kb<'_, 'ctx>,
    mut v: VectorValue<'ctx>,
    epi: Epilogue<'ctx>,
    out: usize,
    y0: IntValue<'ctx>,
    plane: u64,
    lanes: u64,
) -> R<()> {
    let i32t = kb.cx.i32_type();
    if let Some(res) = epi.residual {
        let mut r = v.get_type().const_zero();
        for l in 0..lanes {
            let x = kb.load_f32(kb.param(res), kb.add(y0, kb.c(l * plane))?)?;
            r = kb.b.build_insert_element(r, x, i32t.const_int(l, false), "")?;
        }
        v = kb.b.build_float_add(v, r, "")?;
    }
    let v = pixel_epilogue(kb, epi.act, v, epi.bias)?;
    for l in 0..lanes {
        let x = kb.b.build_extract_element(v, i32t.const_int(l, false), "")?.into_float_value();
        kb.store_f32(kb.param(out), kb.add(y0, kb.c(l * plane))?, x)?;
    }
    Ok(())
}
