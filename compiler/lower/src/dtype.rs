//! dlc dtypes in kir: how each is stored, the type its arithmetic happens in, and the
//! conversions between them (the rules of [`dlc_ir::ops::Cast`]).
//!
//! f16 is kir's `f16`; bf16 is the top half of an f32 held in an `i16` (rounded to
//! nearest even on store, NaN kept quiet); the 4- and 2-bit integers are held sign- or
//! zero-extended in a byte and wrap on store. The 8- and 4-bit floats are not handled
//! here yet (their decode table and encoder come with the elementwise family): a
//! lowering that meets one returns an error.
use crate::{LowerError, Node};
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

fn unsupported(n: &Node, d: DType) -> LowerError {
    n.error(format!("dtype {d} is not supported by the kir lowering yet"))
}

fn int(b: &mut KernelBuilder, e: Elem, v: i64) -> ValId {
    b.let_(Inst::Const { ty: Ty::scalar(e), lit: Lit::Int(v) })
}

/// A loaded value of storage dtype `d` as a value of [`compute`]`(d)`.
pub fn widen(b: &mut KernelBuilder, n: &Node, v: ValId, d: DType) -> Result<ValId, LowerError> {
    Ok(match d {
        DType::F16 => b.let_(Inst::Cast(CastOp::FpExt, v, Ty::scalar(Elem::F32))),
        DType::BF16 => {
            let w = b.let_(Inst::Cast(CastOp::Zext, v, Ty::scalar(Elem::I32)));
            let s = int(b, Elem::I32, 16);
            let hi = b.bin(BinOp::Shl, w, s);
            b.let_(Inst::Cast(CastOp::Bitcast, hi, Ty::scalar(Elem::F32)))
        }
        d if d.is_float() && d.is_storage_only() => return Err(unsupported(n, d)),
        _ => v,
    })
}

/// A value of [`compute`]`(d)` as storage dtype `d` (round to nearest even).
pub fn narrow(b: &mut KernelBuilder, n: &Node, v: ValId, d: DType) -> Result<ValId, LowerError> {
    Ok(match d {
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
        d if d.is_float() && d.is_storage_only() => return Err(unsupported(n, d)),
        _ => v,
    })
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
pub fn load_as(
    b: &mut KernelBuilder,
    n: &Node,
    param: u32,
    at: dlc_kir::Expr,
    d: DType,
    to: DType,
) -> Result<ValId, LowerError> {
    let e = storage(d);
    let raw = b.load(Ty::scalar(e), param, at, e.bytes());
    let w = widen(b, n, raw, d)?;
    Ok(convert(b, w, compute(d), to))
}

/// Stores `v` of dtype `from` to element `at` of `param`, a tensor of dtype `d`.
pub fn store_as(
    b: &mut KernelBuilder,
    n: &Node,
    param: u32,
    at: dlc_kir::Expr,
    v: ValId,
    from: DType,
    d: DType,
) -> Result<(), LowerError> {
    let c = convert(b, v, from, compute(d));
    let y = narrow(b, n, c, d)?;
    b.store(param, at, y, storage(d).bytes());
    Ok(())
}
