//! Elementwise kernels for every dtype: one loop nest over the (coalesced) broadcast
//! output shape; each operand is loaded through its own strides, converted to a scalar
//! of its LLVM type, combined by the op's scalar rule ([`scalar`]) and stored.
//!
//! Storage types: f32/f64 as `float`/`double`, integers as `iN` (signedness is the
//! dtype's, applied per instruction), bool as `i8` holding 0 or 1; f16 as `half` and
//! bf16 as `i16` bits, computed in f32; the storage-only types as `i8`, converted by
//! [`minifloat`].
use super::{minifloat, NodeInfo};
use crate::kernel::{Kb, R};
use crate::CodegenError;
use dlc_ir::ops::Activation;
use dlc_ir::{DType, Op};
use inkwell::types::{BasicTypeEnum, FloatType, IntType};
use inkwell::values::{BasicValueEnum, FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};

/// Element strides of an operand of dims `dims` broadcast to `out` (0 on stretched dims).
pub(crate) fn broadcast_strides(dims: &[u64], out: &[u64]) -> Vec<u64> {
    let r = out.len();
    let mut strides = vec![0; r];
    let mut s = 1;
    for k in (0..dims.len()).rev() {
        let d = r - dims.len() + k;
        strides[d] = if dims[k] == 1 && out[d] != 1 { 0 } else { s };
        s *= dims[k];
    }
    strides
}

/// Merges adjacent dims where every operand's strides stay linear, so common cases
/// (same shapes, per-channel bias) become short, contiguous loop nests.
pub(crate) fn coalesce(out: &[u64], strides: &[Vec<u64>]) -> (Vec<u64>, Vec<Vec<u64>>) {
    let mut dims: Vec<u64> = Vec::new();
    let mut st: Vec<Vec<u64>> = vec![Vec::new(); strides.len()];
    for d in 0..out.len() {
        if out[d] == 1 {
            continue;
        }
        let mergeable =
            !dims.is_empty() && strides.iter().zip(&st).all(|(s, cur)| cur.last().copied() == Some(s[d] * out[d]));
        if mergeable {
            *dims.last_mut().unwrap() *= out[d];
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                *cur.last_mut().unwrap() = s[d];
            }
        } else {
            dims.push(out[d]);
            for (s, cur) in strides.iter().zip(st.iter_mut()) {
                cur.push(s[d]);
            }
        }
    }
    (dims, st)
}

/// The LLVM storage type of a dtype (dlc-lower's storage rule, in LLVM types).
pub(crate) fn llvm_type<'ctx>(kb: &Kb<'_, 'ctx>, d: DType) -> Option<BasicTypeEnum<'ctx>> {
    Some(crate::kir::elem_type(kb, dlc_lower::dtype::storage(d)))
}

/// The dtype arithmetic happens in (dlc-lower's rule): f16, bf16 and the 8- and 4-bit
/// floats compute in f32, the 4- and 2-bit integers in 8 bits.
pub(crate) use dlc_lower::dtype::compute as compute_dtype;

/// A loaded value of storage dtype `d` as a value of `compute_dtype(d)`.
pub(crate) fn widen<'ctx>(kb: &Kb<'_, 'ctx>, v: BasicValueEnum<'ctx>, d: DType) -> R<BasicValueEnum<'ctx>> {
    let b = &kb.b;
    Ok(match d {
        DType::F16 => b.build_float_ext(v.into_float_value(), kb.f32t, "")?.into(),
        // bf16 is the top half of an f32.
        DType::BF16 => {
            let w = b.build_int_z_extend(v.into_int_value(), kb.cx.i32_type(), "")?;
            let w = b.build_left_shift(w, kb.cx.i32_type().const_int(16, false), "")?;
            b.build_bit_cast(w, kb.f32t, "")?
        }
        d if d.is_float() && d.is_storage_only() => minifloat::decode(kb, v.into_int_value(), d)?.into(),
        _ => v,
    })
}

/// A value of `compute_dtype(d)` stored as dtype `d` (round to nearest even; see
/// [`dlc_ir::ops::Cast`] for `saturate`).
pub(crate) fn narrow<'ctx>(
    kb: &Kb<'_, 'ctx>,
    v: BasicValueEnum<'ctx>,
    d: DType,
    saturate: bool,
) -> R<BasicValueEnum<'ctx>> {
    let b = &kb.b;
    Ok(match d {
        DType::F16 => b.build_float_trunc(v.into_float_value(), kb.cx.f16_type(), "")?.into(),
        DType::BF16 => {
            let i32t = kb.cx.i32_type();
            let bits = b.build_bit_cast(v, i32t, "")?.into_int_value();
            let lsb = b.build_and(
                b.build_right_shift(bits, i32t.const_int(16, false), false, "")?,
                i32t.const_int(1, false),
                "",
            )?;
            let rounded = b.build_int_add(bits, b.build_int_add(lsb, i32t.const_int(0x7fff, false), "")?, "")?;
            let hi = b.build_right_shift(rounded, i32t.const_int(16, false), false, "")?;
            let f = v.into_float_value();
            let nan = b.build_float_compare(FloatPredicate::UNO, f, f, "")?;
            let hi = kb.select_i(nan, i32t.const_int(0x7fc0, false), hi)?;
            b.build_int_truncate(hi, kb.cx.i16_type(), "")?.into()
        }
        d if d.narrow_int_bits().is_some() => minifloat::wrap_narrow_int(kb, v.into_int_value(), d)?.into(),
        d if d.is_float() && d.is_storage_only() => minifloat::encode(kb, v.into_float_value(), d, saturate)?.into(),
        _ => v,
    })
}

/// The elementwise kernel of any elementwise op.
pub(crate) fn map(kb: &Kb, n: &NodeInfo) -> R<()> {
    map_with(kb, n, &nest)
}

/// The body of one element of a per-element kernel: its index over the iteration dims
/// in, loads, computation, store.
pub(crate) type ElementBody<'f, 'ctx> = &'f dyn Fn(&Kb<'_, 'ctx>, &[IntValue<'ctx>]) -> R<()>;

/// How a per-element kernel iterates: called with the iteration dims and the body (a
/// loop nest on the CPU, [`nest`]; one element per thread on a GPU).
pub(crate) type Drive<'f, 'ctx> = &'f dyn Fn(&Kb<'_, 'ctx>, &[u64], ElementBody<'_, 'ctx>) -> R<()>;

/// The CPU's [`Drive`]: a loop nest over the dims.
pub(crate) fn nest<'ctx>(kb: &Kb<'_, 'ctx>, dims: &[u64], body: ElementBody<'_, 'ctx>) -> R<()> {
    kb.nest(dims, |kb, idx| body(kb, idx))
}

/// The elementwise computation of node `n` over the result's dims (coalesced with the
/// operands' broadcasts), iterated by `drive`.
pub(crate) fn map_with<'ctx>(kb: &Kb<'_, 'ctx>, n: &NodeInfo, drive: Drive<'_, 'ctx>) -> R<()> {
    let out_dt = n.outputs[0].dtype;
    let mut types = Vec::new();
    for t in n.inputs.iter().chain(n.outputs) {
        types.push(
            llvm_type(kb, t.dtype).ok_or_else(|| n.unsupported(format!("dtype {} is not supported yet", t.dtype)))?,
        );
    }
    let out = n.out_dims(0);
    let mut strides: Vec<Vec<u64>> = (0..n.inputs.len()).map(|i| broadcast_strides(&n.in_dims(i), &out)).collect();
    strides.push(broadcast_strides(&out, &out));
    let (dims, st) = coalesce(&out, &strides);
    let k = n.inputs.len();
    let store_dts: Vec<DType> = n.inputs.iter().map(|t| t.dtype).collect();
    let in_dts: Vec<DType> = store_dts.iter().map(|&d| compute_dtype(d)).collect();
    let saturate = match n.op {
        Op::Cast(c) => c.saturate,
        Op::Fused(f) => match f.steps.last().map(|s| &s.op) {
            Some(Op::Cast(c)) => c.saturate,
            _ => true,
        },
        _ => true,
    };
    drive(kb, &dims, &|kb, idx| {
        let off = |s: &[u64]| kb.lin(&idx.iter().copied().zip(s.iter().copied()).collect::<Vec<_>>(), 0);
        let mut vals = Vec::with_capacity(k);
        for i in 0..k {
            let p = kb.gep(types[i], kb.param(i), off(&st[i])?)?;
            vals.push(widen(kb, kb.b.build_load(types[i], p, "")?, store_dts[i])?);
        }
        let r = match n.op {
            Op::Fused(f) => fused(kb, n, f, &vals, &in_dts)?,
            _ => scalar(kb, n, &vals, &in_dts, compute_dtype(out_dt))?,
        };
        let r = narrow(kb, r, out_dt, saturate)?;
        let p = kb.gep(types[k], kb.param(k), off(&st[k])?)?;
        kb.b.build_store(p, r)?;
        Ok(())
    })
}

struct F<'k, 'a, 'ctx> {
    kb: &'k Kb<'a, 'ctx>,
    ty: FloatType<'ctx>,
    f64: bool,
}

impl<'ctx> F<'_, '_, 'ctx> {
    fn c(&self, v: f64) -> FloatValue<'ctx> {
        self.ty.const_float(v)
    }
    /// A C math library function: `name` for double, `name` + `f` for float.
    fn call(&self, name: &str, args: &[FloatValue<'ctx>]) -> R<FloatValue<'ctx>> {
        let full = if self.f64 { name.to_string() } else { format!("{name}f") };
        self.kb.call_math(&full, self.ty, args)
    }
    fn cmp(&self, p: FloatPredicate, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(self.kb.b.build_float_compare(p, a, b, "")?)
    }
    fn sel(&self, c: IntValue<'ctx>, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        self.kb.select_f(c, a, b)
    }
    fn add(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.kb.b.build_float_add(a, b, "")?)
    }
    fn sub(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.kb.b.build_float_sub(a, b, "")?)
    }
    fn mul(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.kb.b.build_float_mul(a, b, "")?)
    }
    fn div(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        Ok(self.kb.b.build_float_div(a, b, "")?)
    }
    /// `a < b ? b : a`, keeping a NaN in `a`.
    fn max(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        self.sel(self.cmp(FloatPredicate::OLT, a, b)?, b, a)
    }
    /// `a > b ? b : a`, keeping a NaN in `a`.
    fn min(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        self.sel(self.cmp(FloatPredicate::OGT, a, b)?, b, a)
    }
    /// NaN-propagating max/min (numpy `maximum`/`minimum`).
    fn max_nan(&self, a: FloatValue<'ctx>, b: FloatValue<'ctx>, is_max: bool) -> R<FloatValue<'ctx>> {
        let m = if is_max { self.max(a, b)? } else { self.min(a, b)? };
        let b_nan = self.cmp(FloatPredicate::UNO, b, b)?;
        self.sel(b_nan, b, m)
    }
    fn bool(&self, c: IntValue<'ctx>) -> R<BasicValueEnum<'ctx>> {
        Ok(self.kb.b.build_int_z_extend(c, self.kb.cx.i8_type(), "")?.into())
    }
}

fn float_unary<'ctx>(f: &F<'_, '_, 'ctx>, op: &Op, x: FloatValue<'ctx>) -> R<Option<BasicValueEnum<'ctx>>> {
    use FloatPredicate::*;
    let kb = f.kb;
    let zero = f.c(0.0);
    let one = f.c(1.0);
    let softplus = |x| -> R<FloatValue<'ctx>> { f.call("log", &[f.add(f.call("exp", &[x])?, one)?]) };
    let v: FloatValue = match op {
        Op::Abs(_) => f.call("fabs", &[x])?,
        Op::Neg(_) => kb.b.build_float_neg(x, "")?,
        Op::Sign(_) => {
            let pos = f.sel(f.cmp(OGT, x, zero)?, one, x)?;
            f.sel(f.cmp(OLT, x, zero)?, f.c(-1.0), pos)?
        }
        Op::Relu(_) => f.max(x, zero)?,
        Op::Sigmoid(_) => f.div(one, f.add(one, f.call("exp", &[kb.b.build_float_neg(x, "")?])?)?)?,
        Op::Tanh(_) => f.call("tanh", &[x])?,
        Op::Exp(_) => f.call("exp", &[x])?,
        Op::Log(_) => f.call("log", &[x])?,
        Op::Sqrt(_) => f.call("sqrt", &[x])?,
        Op::Reciprocal(_) => f.div(one, x)?,
        Op::Sin(_) => f.call("sin", &[x])?,
        Op::Cos(_) => f.call("cos", &[x])?,
        Op::Tan(_) => f.call("tan", &[x])?,
        Op::Asin(_) => f.call("asin", &[x])?,
        Op::Acos(_) => f.call("acos", &[x])?,
        Op::Atan(_) => f.call("atan", &[x])?,
        Op::Sinh(_) => f.call("sinh", &[x])?,
        Op::Cosh(_) => f.call("cosh", &[x])?,
        Op::Asinh(_) => f.call("asinh", &[x])?,
        Op::Acosh(_) => f.call("acosh", &[x])?,
        Op::Atanh(_) => f.call("atanh", &[x])?,
        Op::Erf(_) => f.call("erf", &[x])?,
        Op::Floor(_) => f.call("floor", &[x])?,
        Op::Ceil(_) => f.call("ceil", &[x])?,
        Op::Round(_) => f.call("roundeven", &[x])?,
        Op::Softplus(_) => softplus(x)?,
        Op::Softsign(_) => f.div(x, f.add(one, f.call("fabs", &[x])?)?)?,
        Op::Mish(_) => f.mul(x, f.call("tanh", &[softplus(x)?])?)?,
        Op::HardSwish(_) => {
            let h = f.add(f.mul(x, f.c(1.0 / 6.0))?, f.c(0.5))?;
            f.mul(x, f.max(zero, f.min(one, h)?)?)?
        }
        Op::HardSigmoid(o) => {
            let h = f.add(f.mul(x, f.c(o.alpha as f64))?, f.c(o.beta as f64))?;
            f.max(zero, f.min(one, h)?)?
        }
        Op::LeakyRelu(o) => f.sel(f.cmp(OLT, x, zero)?, f.mul(x, f.c(o.alpha as f64))?, x)?,
        Op::Elu(o) => {
            let e = f.mul(f.c(o.alpha as f64), f.sub(f.call("exp", &[x])?, one)?)?;
            f.sel(f.cmp(OLT, x, zero)?, e, x)?
        }
        Op::Selu(o) => {
            let a = f.c(o.alpha as f64);
            let neg = f.sub(f.mul(a, f.call("exp", &[x])?)?, a)?;
            f.mul(f.c(o.gamma as f64), f.sel(f.cmp(OLE, x, zero)?, neg, x)?)?
        }
        Op::Celu(o) => {
            let a = f.c(o.alpha as f64);
            let e = f.mul(a, f.sub(f.call("exp", &[f.div(x, a)?])?, one)?)?;
            f.add(f.max(zero, x)?, f.min(zero, e)?)?
        }
        Op::ThresholdedRelu(o) => f.sel(f.cmp(OGT, x, f.c(o.alpha as f64))?, x, zero)?,
        Op::Gelu(o) => {
            let half_x = f.mul(f.c(0.5), x)?;
            let inner = if o.tanh_approximation {
                let x3 = f.mul(f.mul(x, x)?, x)?;
                let t = f.mul(f.c((2.0 / std::f64::consts::PI).sqrt()), f.add(x, f.mul(f.c(0.044715), x3)?)?)?;
                f.call("tanh", &[t])?
            } else {
                f.call("erf", &[f.mul(x, f.c(std::f64::consts::FRAC_1_SQRT_2))?])?
            };
            f.mul(half_x, f.add(one, inner)?)?
        }
        Op::Clip(o) => {
            let y = if o.min > f32::NEG_INFINITY { f.max(x, f.c(o.min as f64))? } else { x };
            if o.max < f32::INFINITY {
                f.min(y, f.c(o.max as f64))?
            } else {
                y
            }
        }
        Op::Swish(o) => {
            let t = kb.b.build_float_neg(f.mul(x, f.c(o.alpha as f64))?, "")?;
            f.div(x, f.add(one, f.call("exp", &[t])?)?)?
        }
        Op::Shrink(o) => {
            let (l, bias) = (f.c(o.lambd as f64), f.c(o.bias as f64));
            let hi = f.sel(f.cmp(OGT, x, l)?, f.sub(x, bias)?, zero)?;
            f.sel(f.cmp(OLT, x, kb.b.build_float_neg(l, "")?)?, f.add(x, bias)?, hi)?
        }
        Op::IsNaN(_) => return Ok(Some(f.bool(f.cmp(UNO, x, x)?)?)),
        Op::IsInf(o) => {
            let pos = f.cmp(OEQ, x, f.c(f64::INFINITY))?;
            let neg = f.cmp(OEQ, x, f.c(f64::NEG_INFINITY))?;
            let no = kb.cx.bool_type().const_zero();
            let p = if o.detect_positive { pos } else { no };
            let q = if o.detect_negative { neg } else { no };
            return Ok(Some(f.bool(kb.b.build_or(p, q, "")?)?));
        }
        _ => return Ok(None),
    };
    Ok(Some(v.into()))
}

fn float_binary<'ctx>(
    f: &F<'_, '_, 'ctx>,
    op: &Op,
    a: FloatValue<'ctx>,
    b: FloatValue<'ctx>,
) -> R<Option<BasicValueEnum<'ctx>>> {
    use FloatPredicate::*;
    let v: FloatValue = match op {
        Op::Add(_) => f.add(a, b)?,
        Op::Sub(_) => f.sub(a, b)?,
        Op::Mul(_) => f.mul(a, b)?,
        Op::Div(_) => f.div(a, b)?,
        Op::Max(_) => f.max_nan(a, b, true)?,
        Op::Min(_) => f.max_nan(a, b, false)?,
        Op::Pow(_) => f.call("pow", &[a, b])?,
        Op::PRelu(_) => f.sel(f.cmp(OLT, a, f.c(0.0))?, f.mul(a, b)?, a)?,
        Op::Mod(o) => {
            let r = f.call("fmod", &[a, b])?;
            if o.fmod {
                r
            } else {
                // Sign of the divisor: add b when r is non-zero and its sign differs from b's.
                let nz = f.cmp(ONE, r, f.c(0.0))?;
                let differ = f.kb.b.build_xor(f.cmp(OLT, r, f.c(0.0))?, f.cmp(OLT, b, f.c(0.0))?, "")?;
                f.sel(f.kb.b.build_and(nz, differ, "")?, f.add(r, b)?, r)?
            }
        }
        Op::Equal(_) => return Ok(Some(f.bool(f.cmp(OEQ, a, b)?)?)),
        Op::Greater(_) => return Ok(Some(f.bool(f.cmp(OGT, a, b)?)?)),
        Op::GreaterOrEqual(_) => return Ok(Some(f.bool(f.cmp(OGE, a, b)?)?)),
        Op::Less(_) => return Ok(Some(f.bool(f.cmp(OLT, a, b)?)?)),
        Op::LessOrEqual(_) => return Ok(Some(f.bool(f.cmp(OLE, a, b)?)?)),
        _ => return Ok(None),
    };
    Ok(Some(v.into()))
}

fn int_op<'ctx>(
    kb: &Kb<'_, 'ctx>,
    op: &Op,
    v: &[IntValue<'ctx>],
    signed: bool,
    ty: IntType<'ctx>,
) -> R<Option<BasicValueEnum<'ctx>>> {
    use IntPredicate::*;
    let b = &kb.b;
    let zero = ty.const_zero();
    let one = ty.const_int(1, false);
    let (lt, gt, le, ge) = if signed { (SLT, SGT, SLE, SGE) } else { (ULT, UGT, ULE, UGE) };
    let bool8 =
        |c: IntValue<'ctx>| -> R<BasicValueEnum<'ctx>> { Ok(b.build_int_z_extend(c, kb.cx.i8_type(), "")?.into()) };
    let sel = |c, x: IntValue<'ctx>, y: IntValue<'ctx>| kb.select_i(c, x, y);
    let cmp = |p, x, y| kb.icmp(p, x, y);
    // Division and remainder never trap: by 0 gives 0, and MIN / -1 wraps.
    let safe_divisor = |x: IntValue<'ctx>| -> R<(IntValue<'ctx>, IntValue<'ctx>, IntValue<'ctx>)> {
        let is0 = cmp(EQ, x, zero)?;
        let is_m1 = if signed { cmp(EQ, x, ty.const_all_ones())? } else { kb.cx.bool_type().const_zero() };
        let d = sel(b.build_or(is0, is_m1, "")?, one, x)?;
        Ok((d, is0, is_m1))
    };
    let r: IntValue = match (op, v) {
        (Op::Add(_), [x, y]) => b.build_int_add(*x, *y, "")?,
        (Op::Sub(_), [x, y]) => b.build_int_sub(*x, *y, "")?,
        (Op::Mul(_), [x, y]) => b.build_int_mul(*x, *y, "")?,
        (Op::Div(_), [x, y]) => {
            let (d, is0, is_m1) = safe_divisor(*y)?;
            let q = if signed { b.build_int_signed_div(*x, d, "")? } else { b.build_int_unsigned_div(*x, d, "")? };
            let q = sel(is_m1, b.build_int_sub(zero, *x, "")?, q)?;
            sel(is0, zero, q)?
        }
        (Op::Mod(o), [x, y]) => {
            let (d, is0, is_m1) = safe_divisor(*y)?;
            let r = if signed { b.build_int_signed_rem(*x, d, "")? } else { b.build_int_unsigned_rem(*x, d, "")? };
            let r = sel(b.build_or(is0, is_m1, "")?, zero, r)?;
            if signed && !o.fmod {
                let nz = cmp(NE, r, zero)?;
                let differ = b.build_xor(cmp(SLT, r, zero)?, cmp(SLT, *y, zero)?, "")?;
                sel(b.build_and(nz, differ, "")?, b.build_int_add(r, *y, "")?, r)?
            } else {
                r
            }
        }
        (Op::Max(_), [x, y]) => sel(cmp(lt, *x, *y)?, *y, *x)?,
        (Op::Min(_), [x, y]) => sel(cmp(gt, *x, *y)?, *y, *x)?,
        (Op::PRelu(_), [x, y]) => sel(cmp(SLT, *x, zero)?, b.build_int_mul(*x, *y, "")?, *x)?,
        (Op::Equal(_), [x, y]) => return Ok(Some(bool8(cmp(EQ, *x, *y)?)?)),
        (Op::Greater(_), [x, y]) => return Ok(Some(bool8(cmp(gt, *x, *y)?)?)),
        (Op::GreaterOrEqual(_), [x, y]) => return Ok(Some(bool8(cmp(ge, *x, *y)?)?)),
        (Op::Less(_), [x, y]) => return Ok(Some(bool8(cmp(lt, *x, *y)?)?)),
        (Op::LessOrEqual(_), [x, y]) => return Ok(Some(bool8(cmp(le, *x, *y)?)?)),
        (Op::And(_) | Op::BitwiseAnd(_), [x, y]) => b.build_and(*x, *y, "")?,
        (Op::Or(_) | Op::BitwiseOr(_), [x, y]) => b.build_or(*x, *y, "")?,
        (Op::Xor(_) | Op::BitwiseXor(_), [x, y]) => b.build_xor(*x, *y, "")?,
        (Op::BitShift(o), [x, y]) => {
            let bits = ty.const_int(ty.get_bit_width() as u64, false);
            let too_far = cmp(UGE, *y, bits)?;
            let amount = sel(too_far, zero, *y)?;
            let s =
                if o.left { b.build_left_shift(*x, amount, "")? } else { b.build_right_shift(*x, amount, signed, "")? };
            let out = if signed && !o.left { sel(cmp(SLT, *x, zero)?, ty.const_all_ones(), zero)? } else { zero };
            sel(too_far, out, s)?
        }
        (Op::Not(_), [x]) => b.build_xor(*x, one, "")?,
        (Op::BitwiseNot(_), [x]) => b.build_not(*x, "")?,
        (Op::Abs(_), [x]) if signed => sel(cmp(SLT, *x, zero)?, b.build_int_sub(zero, *x, "")?, *x)?,
        (Op::Abs(_), [x]) => *x,
        (Op::Neg(_), [x]) => b.build_int_sub(zero, *x, "")?,
        (Op::Sign(_), [x]) => {
            let pos = sel(cmp(gt, *x, zero)?, one, zero)?;
            if signed {
                sel(cmp(SLT, *x, zero)?, ty.const_all_ones(), pos)?
            } else {
                pos
            }
        }
        (Op::Relu(_), [x]) => sel(cmp(SLT, *x, zero)?, zero, *x)?,
        _ => return Ok(None),
    };
    Ok(Some(r.into()))
}

/// Converts `v` of dtype `from` to dtype `to` (see [`dlc_ir::ops::Cast`]).
pub(crate) fn convert<'ctx>(
    kb: &Kb<'_, 'ctx>,
    v: BasicValueEnum<'ctx>,
    from: DType,
    to: DType,
) -> R<BasicValueEnum<'ctx>> {
    let b = &kb.b;
    let to_ty = llvm_type(kb, to).ok_or_else(|| CodegenError::Llvm(format!("no storage type for {to}")))?;
    if from == to {
        return Ok(v);
    }
    Ok(match (from.is_float(), to.is_float(), to == DType::Bool) {
        (true, true, _) => {
            let (x, t) = (v.into_float_value(), to_ty.into_float_type());
            if from.size() < to.size() {
                b.build_float_ext(x, t, "")?.into()
            } else {
                b.build_float_trunc(x, t, "")?.into()
            }
        }
        (true, false, true) => {
            let c = b.build_float_compare(
                FloatPredicate::UNE,
                v.into_float_value(),
                v.get_type().into_float_type().const_zero(),
                "",
            )?;
            b.build_int_z_extend(c, kb.cx.i8_type(), "")?.into()
        }
        (true, false, false) => {
            // Saturating conversion: no poison for out-of-range values, NaN gives 0.
            let name = if to.is_signed_int() { "llvm.fptosi.sat" } else { "llvm.fptoui.sat" };
            kb.call_intrinsic(name, &[to_ty, v.get_type()], &[v.into()])?
        }
        (false, true, _) => {
            let (x, t) = (v.into_int_value(), to_ty.into_float_type());
            if from.is_signed_int() {
                b.build_signed_int_to_float(x, t, "")?.into()
            } else {
                b.build_unsigned_int_to_float(x, t, "")?.into()
            }
        }
        (false, false, true) => {
            let x = v.into_int_value();
            let c = b.build_int_compare(IntPredicate::NE, x, x.get_type().const_zero(), "")?;
            b.build_int_z_extend(c, kb.cx.i8_type(), "")?.into()
        }
        (false, false, false) => {
            let (x, t) = (v.into_int_value(), to_ty.into_int_type());
            let (fw, tw) = (x.get_type().get_bit_width(), t.get_bit_width());
            if fw == tw {
                x.into()
            } else if fw > tw {
                b.build_int_truncate(x, t, "")?.into()
            } else if from.is_signed_int() {
                b.build_int_s_extend(x, t, "")?.into()
            } else {
                b.build_int_z_extend(x, t, "")?.into()
            }
        }
    })
}

/// A fused program on loaded operand values: each step's scalar rule in turn;
/// intermediate results are rounded to their dtype's storage precision (f16, bf16,
/// 8-bit floats) exactly as separate kernels would store them.
fn fused<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    f: &dlc_ir::ops::Fused,
    vals: &[BasicValueEnum<'ctx>],
    in_dts: &[DType],
) -> R<BasicValueEnum<'ctx>> {
    use dlc_ir::ops::Arg;
    let types = f.step_types(n.name, &n.inputs)?;
    let mut results: Vec<(BasicValueEnum<'ctx>, DType)> = Vec::with_capacity(f.steps.len());
    for (j, step) in f.steps.iter().enumerate() {
        let mut args = Vec::with_capacity(step.args.len());
        let mut dts = Vec::with_capacity(step.args.len());
        let mut arg_types = Vec::with_capacity(step.args.len());
        for a in &step.args {
            let (v, d, t) = match *a {
                Arg::Operand(i) => (vals[i as usize], in_dts[i as usize], n.inputs[i as usize].clone()),
                Arg::Step(k) => (results[k as usize].0, results[k as usize].1, types[k as usize].clone()),
            };
            args.push(v);
            dts.push(d);
            arg_types.push(t);
        }
        let info = NodeInfo {
            name: n.name,
            op: &step.op,
            inputs: arg_types,
            outputs: std::slice::from_ref(&types[j]),
            target: n.target,
        };
        let dt = types[j].dtype;
        let mut r = scalar(kb, &info, &args, &dts, compute_dtype(dt))?;
        if j + 1 < f.steps.len() && compute_dtype(dt) != dt {
            let sat = if let Op::Cast(c) = &step.op { c.saturate } else { true };
            r = widen(kb, narrow(kb, r, dt, sat)?, dt)?;
        }
        results.push((r, compute_dtype(dt)));
    }
    Ok(results.pop().expect("a fused node has steps").0)
}

/// A Conv/Gemm/MatMul epilogue activation on an f32 value.
pub(crate) fn activation<'ctx>(kb: &Kb<'_, 'ctx>, act: Activation, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
    let Some(op) = act.as_op() else {
        return Ok(x);
    };
    let f = F { kb, ty: kb.f32t, f64: false };
    let y = float_unary(&f, &op, x)?.ok_or_else(|| CodegenError::Llvm(format!("no scalar rule for {act:?}")))?;
    Ok(y.into_float_value())
}

/// The scalar rule of an elementwise op on loaded operand values.
fn scalar<'ctx>(
    kb: &Kb<'_, 'ctx>,
    n: &NodeInfo,
    vals: &[BasicValueEnum<'ctx>],
    in_dts: &[DType],
    out_dt: DType,
) -> R<BasicValueEnum<'ctx>> {
    let op = n.op;
    match op {
        // Floats to 4- and 2-bit integers saturate as to every integer type: a saturating
        // conversion to 64 bits, clamped to the type's range, then narrowed.
        Op::Cast(c) if c.to.narrow_int_bits().is_some() && in_dts[0].is_float() => {
            let wide = convert(kb, vals[0], in_dts[0], DType::I64)?.into_int_value();
            let (lo, hi) = c.to.int_range().ok_or_else(|| n.unsupported("no integer range"))?;
            let (lo, hi) = (kb.c(lo as u64), kb.c(hi as u64));
            let v = kb.select_i(kb.icmp(IntPredicate::SLT, wide, lo)?, lo, wide)?;
            let v = kb.select_i(kb.icmp(IntPredicate::SGT, v, hi)?, hi, v)?;
            return convert(kb, v.into(), DType::I64, compute_dtype(c.to));
        }
        Op::Cast(c) => return convert(kb, vals[0], in_dts[0], compute_dtype(c.to)),
        Op::Expand(_) => return Ok(vals[0]),
        Op::Where(_) => {
            let c = kb.icmp(IntPredicate::NE, vals[0].into_int_value(), kb.cx.i8_type().const_zero())?;
            return Ok(kb.b.build_select(c, vals[1], vals[2], "")?);
        }
        Op::Pow(_) if !(in_dts[0].is_float() && in_dts[0] == in_dts[1]) => {
            // Mixed or integer operands: computed in double, converted to the base's dtype.
            let a = convert(kb, vals[0], in_dts[0], DType::F64)?.into_float_value();
            let e = convert(kb, vals[1], in_dts[1], DType::F64)?.into_float_value();
            let f = F { kb, ty: kb.cx.f64_type(), f64: true };
            let p = f.call("pow", &[a, e])?;
            return convert(kb, p.into(), DType::F64, out_dt);
        }
        _ => {}
    }
    let dt = in_dts[0];
    let res = if dt.is_float() {
        let f = F { kb, ty: vals[0].get_type().into_float_type(), f64: dt == DType::F64 };
        match vals {
            [x] => float_unary(&f, op, x.into_float_value())?,
            [a, b] => float_binary(&f, op, a.into_float_value(), b.into_float_value())?,
            _ => None,
        }
    } else {
        let ints: Vec<IntValue> = vals.iter().map(|v| v.into_int_value()).collect();
        int_op(kb, op, &ints, dt.is_signed_int(), ints[0].get_type())?
    };
    res.ok_or_else(|| n.unsupported(format!("not implemented for dtype {dt}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_coalescing() {
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(broadcast_strides(&[2, 3, 4], &[2, 3, 4]), vec![12, 4, 1]);
        // Same shapes collapse to one flat loop.
        let s = broadcast_strides(&[2, 3, 4], &[2, 3, 4]);
        assert_eq!(coalesce(&[2, 3, 4], &[s.clone(), s]), (vec![24], vec![vec![1], vec![1]]));
        // A per-channel bias [C,1,1] against [N,C,H,W]: channel and spatial stay separate.
        let out = [1, 8, 5, 5];
        let bias = broadcast_strides(&[8, 1, 1], &out);
        let full = broadcast_strides(&out, &out);
        assert_eq!(coalesce(&out, &[bias, full]), (vec![8, 25], vec![vec![1, 0], vec![25, 1]]));
    }
}
