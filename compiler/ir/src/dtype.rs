use crate::minifloat::MiniFloat;
use std::fmt;

/// Element types of tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    Bool,
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    F4E2M1,
    F8E8M0,
    I4,
    U4,
    I2,
    U2,
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 23] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::F4E2M1,
        DType::F8E8M0,
        DType::I4,
        DType::U4,
        DType::I2,
        DType::U2,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            // Storage-only types take one byte per element (not packed).
            DType::F8E4M3FN
            | DType::F8E4M3FNUZ
            | DType::F8E5M2
            | DType::F8E5M2FNUZ
            | DType::F4E2M1
            | DType::F8E8M0
            | DType::I4
            | DType::U4
            | DType::I2
            | DType::U2 => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// Short lowercase name, as printed in the IR and the manifest (`f32`, `i64`, `bool`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::U64 => "u64",
            DType::Bool => "bool",
            DType::F8E4M3FN => "f8e4m3fn",
            DType::F8E4M3FNUZ => "f8e4m3fnuz",
            DType::F8E5M2 => "f8e5m2",
            DType::F8E5M2FNUZ => "f8e5m2fnuz",
            DType::F4E2M1 => "f4e2m1",
            DType::F8E8M0 => "f8e8m0",
            DType::I4 => "i4",
            DType::U4 => "u4",
            DType::I2 => "i2",
            DType::U2 => "u2",
        }
    }

    /// Parses a name produced by [`DType::name`].
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Whether this is a signed integer type.
    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::I4 | DType::I2)
    }

    /// Whether this is a floating-point type (the 8- and 4-bit formats included).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16 | DType::F8E8M0) || self.minifloat().is_some()
    }

    /// Whether this is a storage-only type: the 8- and 4-bit floats and the 4- and
    /// 2-bit integers, one element per byte (integers sign- or zero-extended). No
    /// arithmetic runs on them; `cast` converts them, and data movement copies them.
    pub fn is_storage_only(self) -> bool {
        self.minifloat().is_some() || self.narrow_int_bits().is_some() || self == DType::F8E8M0
    }

    /// The format of an 8- or 4-bit float with sign, exponent and mantissa (e8m0 has
    /// its own rules: [`crate::minifloat::e8m0_encode`]).
    pub fn minifloat(self) -> Option<MiniFloat> {
        Some(match self {
            DType::F8E4M3FN => MiniFloat::E4M3FN,
            DType::F8E4M3FNUZ => MiniFloat::E4M3FNUZ,
            DType::F8E5M2 => MiniFloat::E5M2,
            DType::F8E5M2FNUZ => MiniFloat::E5M2FNUZ,
            DType::F4E2M1 => MiniFloat::E2M1,
            _ => return None,
        })
    }

    /// The width of a 4- or 2-bit integer type.
    pub fn narrow_int_bits(self) -> Option<u32> {
        match self {
            DType::I4 | DType::U4 => Some(4),
            DType::I2 | DType::U2 => Some(2),
            _ => None,
        }
    }

    /// The smallest and largest value of an integer type up to 32 bits (bool is
    /// `0..=1`); `None` for floats and the 64-bit integers, whose range is `i64`'s own
    /// (saturating there is what Rust's `as` and LLVM's `fptosi.sat` do).
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            DType::Bool => (0, 1),
            DType::I8 => (i8::MIN as i64, i8::MAX as i64),
            DType::U8 => (0, u8::MAX as i64),
            DType::I16 => (i16::MIN as i64, i16::MAX as i64),
            DType::U16 => (0, u16::MAX as i64),
            DType::I32 => (i32::MIN as i64, i32::MAX as i64),
            DType::U32 => (0, u32::MAX as i64),
            DType::I4 => (-8, 7),
            DType::U4 => (0, 15),
            DType::I2 => (-2, 1),
            DType::U2 => (0, 3),
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
