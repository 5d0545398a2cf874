//! dlc dtypes in kir: how each is stored, the type its arithmetic happens in, and the
//! conversions between them (the rules of [`dlc_ir::ops::Cast`]).
//!
//! f16 is kir's `f16`; bf16 is the top half of an f32 held in an `i16` (rounded to
//! nearest even on store, NaN kept quiet); the 4- and 2-bit integers are held sign- or
//! zero-extended in a byte and wrap on store. The 8- and 4-bit floats compute in f32:
//! a code decodes through a 256-entry table built by [`dlc_ir::minifloat`] (a kir
//! table named `dlc.decode.<dtype>`, one per module) and encodes with the integer
//! algorithm of [`dlc_ir::minifloat::MiniFloat::encode`], written here in kir.
use dlc_ir::minifloat::{e8m0_decode, Overflow};
use dlc_ir::DType;
use dlc_kir::{BinOp, CastOp, CmpOp, Elem, Inst, KernelBuilder, Lit, Ty, ValId};

/// The kir element a dtype is stored as.
pub fn storage(d: DType) -> Elem {
    match d {
        DType::F32 => Elem::F32,
        DType::F64 => Elem::F64,
        DType::F16 => Elem::F16,
        DType::BF16 | DType::I16 | DType::U16 => Elem::I16,
        DType::I32 | DType::U32 => Elem::I32,
        DType::I64 | DType::U64 => Elem::I64,
        DType::I8
        | DType::U8
        | DType::Bool
        | DType::F8E4M3FN
        | DType::F8E4M3FNUZ
        | DType::F8E5M2
        | DType::F8E5M2FNUZ
        | DType::F4E2M1
        | DType::F8E8M0
        | DType::I4
        | DType::U4
        | DType::I2
        | DType::U2 => Elem::I8,
    }
}

/// The dtype arithmetic happens in: f16 and bf16 compute in f32, the 4- and 2-bit
/// integers in 8 bits.
pub fn compute(d: DType) -> DType {
    match d {
        DType::F16 | DType::BF16 => DType::F32,
        DType::I4 | DType::I2 => DType::I8,
        DType::U4 | DType::U2 => DType::U8,
        d if d.is_float() && d.is_storage_only() => DType::F32,
        d => d,
    }
}

/// The 64-bit accumulator of reductions over `d`: f64 for floats, 64-bit integers
/// (signed or not as `d`) otherwise.
pub fn accumulator(d: DType) -> DType {
    if d.is_float() {
        DType::F64
    } else if d.is_signed_int() {
        DType::I64
    } else {
        DType::U64
    }
}

fn int(b: &mut KernelBuilder, e: Elem, v: i64) -> ValId {
    b.let_(Inst::Const { ty: Ty::scalar(e), lit: Lit::Int(v) })
}

/// A loaded value of storage dtype `d` as a value of [`compute`]`(d)`.
pub fn widen(b: &mut KernelBuilder, v: ValId, d: DType) -> ValId {
    match d {
        DType::F16 => b.let_(Inst::Cast(CastOp::FpExt, v, Ty::scalar(Elem::F32))),
        DType::BF16 => {
            let w = b.let_(Inst::Cast(CastOp::Zext, v, Ty::scalar(Elem::I32)));
            let s = int(b, Elem::I32, 16);
            let hi = b.bin(BinOp::Shl, w, s);
            b.let_(Inst::Cast(CastOp::Bitcast, hi, Ty::scalar(Elem::F32)))
        }
        d if d.is_float() && d.is_storage_only() => decode(b, v, d),
        _ => v,
    }
}

/// The f32 value of the byte `code` of 8- or 4-bit float format `d`.
fn decode(b: &mut KernelBuilder, code: ValId, d: DType) -> ValId {
    let t = b.table(&format!("dlc.decode.{}", d.name()), Elem::F32, || {
        (0..=255u8)
            .map(|c| {
                let v = match d.minifloat() {
                    Some(f) => f.decode(c),
                    None => e8m0_decode(c),
                };
                Lit::Float(v as f64)
            })
            .collect()
    });
    b.let_(Inst::Lookup { table: t, index: code })
}

/// The byte code of f32 `x` in 8- or 4-bit float format `d` (see
/// [`dlc_ir::minifloat::MiniFloat::encode`]; `saturate` as [`dlc_ir::ops::Cast`]'s).
fn encode(b: &mut KernelBuilder, x: ValId, d: DType, saturate: bool) -> ValId {
    let c = |b: &mut KernelBuilder, v: u32| int(b, Elem::I32, v as i64);
    let i32 = Ty::scalar(Elem::I32);
    let bits = b.let_(Inst::Cast(CastOp::Bitcast, x, i32));
    let Some(f) = d.minifloat() else {
        // e8m0: |x| rounded up to a power of two.
        let k23 = c(b, 23);
        let sh = b.bin(BinOp::LShr, bits, k23);
        let ff = c(b, 0xFF);
        let exp = b.bin(BinOp::And, sh, ff);
        let fm = c(b, 0x7F_FFFF);
        let fr = b.bin(BinOp::And, bits, fm);
        let zero = c(b, 0);
        let frac = b.cmp(CmpOp::Ne, fr, zero);
        let special = b.cmp(CmpOp::Eq, exp, ff);
        let up = if saturate {
            let fe = c(b, 0xFE);
            let below = b.cmp(CmpOp::Ne, exp, fe);
            b.bin(BinOp::And, frac, below)
        } else {
            frac
        };
        let up = b.let_(Inst::Cast(CastOp::Zext, up, i32));
        let e = b.bin(BinOp::Add, exp, up);
        let out = b.select(special, ff, e);
        return b.let_(Inst::Cast(CastOp::Trunc, out, Ty::scalar(Elem::I8)));
    };
    let m = f.man_bits;
    let k31 = c(b, 31);
    let sign = b.bin(BinOp::LShr, bits, k31);
    let abs_mask = c(b, 0x7FFF_FFFF);
    let a = b.bin(BinOp::And, bits, abs_mask);
    let inf_bits = c(b, 0x7F80_0000);
    let is_nan = b.cmp(CmpOp::Ugt, a, inf_bits);
    let is_inf = b.cmp(CmpOp::Eq, a, inf_bits);
    // Below the smallest normal: count quanta, ties to even (exact scaling, one rounding).
    let k23 = c(b, 23);
    let biased_exp = b.bin(BinOp::LShr, a, k23);
    let min_normal = c(b, (128 - f.bias) as u32);
    let subnormal = b.cmp(CmpOp::Ult, biased_exp, min_normal);
    let mag = b.let_(Inst::Cast(CastOp::Bitcast, a, Ty::scalar(Elem::F32)));
    let fzero = b.let_(Inst::Const { ty: Ty::scalar(Elem::F32), lit: Lit::Float(0.0) });
    let mag = b.select(subnormal, mag, fzero);
    let scale = b.let_(Inst::Const { ty: Ty::scalar(Elem::F32), lit: Lit::Float(2f64.powi(f.bias - 1 + m as i32)) });
    let scaled = b.bin(BinOp::FMul, mag, scale);
    let q = b.let_(Inst::Call { func: "roundevenf".into(), args: vec![scaled], ty: Ty::scalar(Elem::F32) });
    // At most 2^(m + 1) and never NaN (`mag` is 0 outside the subnormal range).
    let q = b.let_(Inst::Cast(CastOp::FpToUi, q, i32));
    // Normal: round the f32 mantissa to m bits (ties to even), re-bias the exponent.
    let sh = c(b, 23 - m);
    let top = b.bin(BinOp::LShr, a, sh);
    let one = c(b, 1);
    let lsb = b.bin(BinOp::And, top, one);
    let half = c(b, (1 << (22 - m)) - 1);
    let bias = b.bin(BinOp::Add, half, lsb);
    let r = b.bin(BinOp::Add, a, bias);
    let re = b.bin(BinOp::LShr, r, k23);
    let rebias = c(b, (127 - f.bias) as u32);
    let e = b.bin(BinOp::Sub, re, rebias);
    let rm = b.bin(BinOp::LShr, r, sh);
    let man_mask = c(b, (1 << m) - 1);
    let man = b.bin(BinOp::And, rm, man_mask);
    let km = c(b, m);
    let es = b.bin(BinOp::Shl, e, km);
    let normal = b.bin(BinOp::Or, es, man);
    let code = b.select(subnormal, q, normal);
    let all = c(b, u32::MAX);
    let code = b.select(is_inf, all, code);
    let top_bit = c(b, f.bits() - 1);
    let sign_bit = b.bin(BinOp::Shl, sign, top_bit);
    let nan = match f.nan {
        Some(v) if f.neg_zero => {
            let n = c(b, v);
            b.bin(BinOp::Or, n, sign_bit)
        }
        Some(v) => c(b, v),
        None => c(b, 0),
    };
    let max = c(b, f.max_code);
    let overflow_code = match (saturate, f.overflow) {
        (true, _) | (_, Overflow::Saturate) => b.bin(BinOp::Or, max, sign_bit),
        (false, Overflow::Inf(inf)) => {
            let i = c(b, inf);
            b.bin(BinOp::Or, i, sign_bit)
        }
        (false, Overflow::Nan) => nan,
    };
    let signed = b.bin(BinOp::Or, code, sign_bit);
    let signed = if f.neg_zero {
        signed
    } else {
        let zero = c(b, 0);
        let is0 = b.cmp(CmpOp::Eq, code, zero);
        b.select(is0, zero, signed)
    };
    let over = b.cmp(CmpOp::Ugt, code, max);
    let out = b.select(over, overflow_code, signed);
    let out = b.select(is_nan, nan, out);
    b.let_(Inst::Cast(CastOp::Trunc, out, Ty::scalar(Elem::I8)))
}

/// A value of [`compute`]`(d)` as storage dtype `d` (round to nearest even; an 8-bit
/// float saturates).
pub fn narrow(b: &mut KernelBuilder, v: ValId, d: DType) -> ValId {
    narrow_sat(b, v, d, true)
}

/// [`narrow`] with [`dlc_ir::ops::Cast`]'s `saturate` for the 8- and 4-bit floats.
pub fn narrow_sat(b: &mut KernelBuilder, v: ValId, d: DType, saturate: bool) -> ValId {
    match d {
        DType::F16 => b.let_(Inst::Cast(CastOp::FpTrunc, v, Ty::scalar(Elem::F16))),
        DType::BF16 => {
            let bits = b.let_(Inst::Cast(CastOp::Bitcast, v, Ty::scalar(Elem::I32)));
            let (sixteen, one, half) = (int(b, Elem::I32, 16), int(b, Elem::I32, 1), int(b, Elem::I32, 0x7fff));
            let top = b.bin(BinOp::LShr, bits, sixteen);
            let lsb = b.bin(BinOp::And, top, one);
            let bias = b.bin(BinOp::Add, lsb, half);
            let rounded = b.bin(BinOp::Add, bits, bias);
            let hi = b.bin(BinOp::LShr, rounded, sixteen);
            let nan = b.cmp(CmpOp::FUno, v, v);
            let qnan = int(b, Elem::I32, 0x7fc0);
            let hi = b.select(nan, qnan, hi);
            b.let_(Inst::Cast(CastOp::Trunc, hi, Ty::scalar(Elem::I16)))
        }
        d if d.narrow_int_bits().is_some() => {
            let shift = int(b, Elem::I8, 8 - d.narrow_int_bits().unwrap_or(8) as i64);
            let up = b.bin(BinOp::Shl, v, shift);
            b.bin(if d.is_signed_int() { BinOp::AShr } else { BinOp::LShr }, up, shift)
        }
        d if d.is_float() && d.is_storage_only() => encode(b, v, d, saturate),
        _ => v,
    }
}

/// Converts `v` of compute dtype `from` to compute dtype `to` (see
/// [`dlc_ir::ops::Cast`]): floats to integers saturate, NaN giving 0; integers wrap or
/// extend by the source's signedness; to bool is `x != 0` as a byte.
pub fn convert(b: &mut KernelBuilder, v: ValId, from: DType, to: DType) -> ValId {
    if from == to {
        return v;
    }
    let te = storage(to);
    let fe = storage(from);
    match (from.is_float(), to.is_float(), to == DType::Bool) {
        (true, true, _) => {
            let op = if fe.bits() < te.bits() { CastOp::FpExt } else { CastOp::FpTrunc };
            b.let_(Inst::Cast(op, v, Ty::scalar(te)))
        }
        (true, false, true) => {
            let zero = b.let_(Inst::Const { ty: Ty::scalar(fe), lit: Lit::Float(0.0) });
            let c = b.cmp(CmpOp::FUne, v, zero);
            b.let_(Inst::Cast(CastOp::Zext, c, Ty::scalar(Elem::I8)))
        }
        (true, false, false) => {
            let op = if to.is_signed_int() { CastOp::FpToSiSat } else { CastOp::FpToUiSat };
            b.let_(Inst::Cast(op, v, Ty::scalar(te)))
        }
        (false, true, _) => {
            let op = if from.is_signed_int() { CastOp::SiToFp } else { CastOp::UiToFp };
            b.let_(Inst::Cast(op, v, Ty::scalar(te)))
        }
        (false, false, true) => {
            let zero = int(b, fe, 0);
            let c = b.cmp(CmpOp::Ne, v, zero);
            b.let_(Inst::Cast(CastOp::Zext, c, Ty::scalar(Elem::I8)))
        }
        (false, false, false) => match fe.bits().cmp(&te.bits()) {
            std::cmp::Ordering::Equal => v,
            std::cmp::Ordering::Greater => b.let_(Inst::Cast(CastOp::Trunc, v, Ty::scalar(te))),
            std::cmp::Ordering::Less => {
                let op = if from.is_signed_int() { CastOp::Sext } else { CastOp::Zext };
                b.let_(Inst::Cast(op, v, Ty::scalar(te)))
            }
        },
    }
}

/// Loads element `at` of `param`, a tensor of dtype `d`, as a value of dtype `to`.
pub fn load_as(b: &mut KernelBuilder, param: u32, at: dlc_kir::Expr, d: DType, to: DType) -> ValId {
    let e = storage(d);
    let raw = b.load(Ty::scalar(e), param, at, e.bytes());
    let w = widen(b, raw, d);
    convert(b, w, compute(d), to)
}

/// Stores `v` of dtype `from` to element `at` of `param`, a tensor of dtype `d`.
pub fn store_as(b: &mut KernelBuilder, param: u32, at: dlc_kir::Expr, v: ValId, from: DType, d: DType) {
    let c = convert(b, v, from, compute(d));
    let y = narrow(b, c, d);
    b.store(param, at, y, storage(d).bytes());
}
