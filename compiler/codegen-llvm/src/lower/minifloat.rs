//! The storage-only types in kernels: 8- and 4-bit floats decode through a 256-entry f32
//! table built by [`dlc_ir::minifloat`] (one private constant per format and module) and
//! encode with the integer algorithm of [`dlc_ir::minifloat::MiniFloat::encode`], written here in LLVM IR;
//! 4- and 2-bit integers are held sign- or zero-extended in a byte and wrap on store.
use crate::kernel::{Kb, R};
use crate::CodegenError;
use dlc_ir::minifloat::{e8m0_decode, Overflow};
use dlc_ir::DType;
use inkwell::module::Linkage;
use inkwell::values::{FloatValue, IntValue};
use inkwell::IntPredicate;

/// The f32 value of the byte `code` of float format `d`.
pub(crate) fn decode<'ctx>(kb: &Kb<'_, 'ctx>, code: IntValue<'ctx>, d: DType) -> R<FloatValue<'ctx>> {
    let name = format!("dlc.decode.{}", d.name());
    let table = match kb.m.get_global(&name) {
        Some(g) => g,
        None => {
            let values: Vec<FloatValue> = (0..=255u8)
                .map(|c| {
                    let v = match d.minifloat() {
                        Some(f) => f.decode(c),
                        None => e8m0_decode(c),
                    };
                    kb.f32t.const_float(v as f64)
                })
                .collect();
            let init = kb.f32t.const_array(&values);
            let g = kb.m.add_global(init.get_type(), None, &name);
            g.set_initializer(&init);
            g.set_constant(true);
            g.set_linkage(Linkage::Private);
            g.set_unnamed_addr(true);
            g
        }
    };
    let idx = kb.b.build_int_z_extend(code, kb.i64t, "")?;
    let p = kb.gep(kb.f32t.into(), table.as_pointer_value(), idx)?;
    Ok(kb.b.build_load(kb.f32t, p, "")?.into_float_value())
}

/// The byte code of f32 `x` in float format `d` (see [`dlc_ir::minifloat::MiniFloat::encode`]).
pub(crate) fn encode<'ctx>(kb: &Kb<'_, 'ctx>, x: FloatValue<'ctx>, d: DType, saturate: bool) -> R<IntValue<'ctx>> {
    let Some(f) = d.minifloat() else {
        return e8m0_encode(kb, x, saturate);
    };
    let b = &kb.b;
    let i32t = kb.cx.i32_type();
    let c = |v: u64| i32t.const_int(v, false);
    let bits = b.build_bit_cast(x, i32t, "")?.into_int_value();
    let sign = b.build_right_shift(bits, c(31), false, "")?;
    let a = b.build_and(bits, c(0x7FFF_FFFF), "")?;
    let is_nan = kb.icmp(IntPredicate::UGT, a, c(0x7F80_0000))?;
    let is_inf = kb.icmp(IntPredicate::EQ, a, c(0x7F80_0000))?;
    let m = f.man_bits as u64;
    // Below the smallest normal: count quanta, ties to even (exact scaling, one rounding).
    let biased_exp = b.build_right_shift(a, c(23), false, "")?;
    let subnormal = kb.icmp(IntPredicate::ULT, biased_exp, c((128 - f.bias) as u64))?;
    let mag = b.build_bit_cast(a, kb.f32t, "")?.into_float_value();
    let mag = kb.select_f(subnormal, mag, kb.cf(0.0))?;
    let q = kb.libm("roundevenf", kb.fmul(mag, kb.cf(2f32.powi(f.bias - 1 + m as i32)))?)?;
    let q = b.build_float_to_unsigned_int(q, i32t, "")?;
    // Normal: round the f32 mantissa to m bits (ties to even), re-bias the exponent.
    let lsb = b.build_and(b.build_right_shift(a, c(23 - m), false, "")?, c(1), "")?;
    let r = b.build_int_add(a, b.build_int_add(c((1 << (22 - m)) - 1), lsb, "")?, "")?;
    let e = b.build_int_sub(b.build_right_shift(r, c(23), false, "")?, c((127 - f.bias) as u64), "")?;
    let man = b.build_and(b.build_right_shift(r, c(23 - m), false, "")?, c((1 << m) - 1), "")?;
    let normal = b.build_or(b.build_left_shift(e, c(m), "")?, man, "")?;
    let code = kb.select_i(subnormal, q, normal)?;
    let code = kb.select_i(is_inf, c(u32::MAX as u64), code)?;

    let sign_bit = b.build_left_shift(sign, c(f.bits() as u64 - 1), "")?;
    let nan = match f.nan {
        Some(n) if f.neg_zero => b.build_or(c(n as u64), sign_bit, "")?,
        Some(n) => c(n as u64),
        None => c(0),
    };
    let overflow_code = match (saturate, f.overflow) {
        (true, _) | (_, Overflow::Saturate) => b.build_or(c(f.max_code as u64), sign_bit, "")?,
        (false, Overflow::Inf(inf)) => b.build_or(c(inf as u64), sign_bit, "")?,
        (false, Overflow::Nan) => nan,
    };
    let signed = b.build_or(code, sign_bit, "")?;
    let signed = if f.neg_zero { signed } else { kb.select_i(kb.icmp(IntPredicate::EQ, code, c(0))?, c(0), signed)? };
    let out = kb.select_i(kb.icmp(IntPredicate::UGT, code, c(f.max_code as u64))?, overflow_code, signed)?;
    let out = kb.select_i(is_nan, nan, out)?;
    Ok(b.build_int_truncate(out, kb.cx.i8_type(), "")?)
}

/// float8 e8m0: `|x|` rounded up to a power of two (see [`dlc_ir::minifloat::e8m0_encode`]).
fn e8m0_encode<'ctx>(kb: &Kb<'_, 'ctx>, x: FloatValue<'ctx>, saturate: bool) -> R<IntValue<'ctx>> {
    let b = &kb.b;
    let i32t = kb.cx.i32_type();
    let c = |v: u64| i32t.const_int(v, false);
    let bits = b.build_bit_cast(x, i32t, "")?.into_int_value();
    let exp = b.build_and(b.build_right_shift(bits, c(23), false, "")?, c(0xFF), "")?;
    let frac = kb.icmp(IntPredicate::NE, b.build_and(bits, c(0x7F_FFFF), "")?, c(0))?;
    let special = kb.icmp(IntPredicate::EQ, exp, c(0xFF))?;
    let up = if saturate { b.build_and(frac, kb.icmp(IntPredicate::NE, exp, c(0xFE))?, "")? } else { frac };
    let e = b.build_int_add(exp, b.build_int_z_extend(up, i32t, "")?, "")?;
    let out = kb.select_i(special, c(0xFF), e)?;
    Ok(b.build_int_truncate(out, kb.cx.i8_type(), "")?)
}

/// Wraps an integer held in a byte to the 4- or 2-bit type `d` (sign- or zero-extended).
pub(crate) fn wrap_narrow_int<'ctx>(kb: &Kb<'_, 'ctx>, v: IntValue<'ctx>, d: DType) -> R<IntValue<'ctx>> {
    let bits = d.narrow_int_bits().ok_or_else(|| CodegenError::Llvm(format!("{d} is not a narrow integer")))?;
    let i8t = kb.cx.i8_type();
    let shift = i8t.const_int(8 - bits as u64, false);
    let up = kb.b.build_left_shift(v, shift, "")?;
    Ok(kb.b.build_right_shift(up, shift, d.is_signed_int(), "")?)
}
