//! The named target operations kir knows: each one's signature (checked by the
//! verifier) and its meaning (run by the interpreter), so a kernel that uses one is
//! tested like any other. A translator maps the name one to one onto the target's
//! instruction (the LLVM backend calls `llvm.NAME`); a lowering uses one only where its
//! target has it (`dlc_lower::Target`), and the portable arithmetic elsewhere.
use crate::ir::{Elem, Ty};

/// A known intrinsic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intrinsic {
    /// Its name (`x86.avx512.vpdpbusd.256`).
    pub name: &'static str,
    /// Argument types.
    pub args: &'static [Ty],
    /// Result type.
    pub result: Ty,
    /// What it computes, for the docs and error messages.
    pub meaning: &'static str,
}

const I8X32: Ty = Ty { elem: Elem::I8, lanes: 32 };
const I16X16: Ty = Ty { elem: Elem::I16, lanes: 16 };
const I32X8: Ty = Ty { elem: Elem::I32, lanes: 8 };
const I8X64: Ty = Ty { elem: Elem::I8, lanes: 64 };
const I32X16: Ty = Ty { elem: Elem::I32, lanes: 16 };

/// Every intrinsic kir knows.
pub const ALL: &[Intrinsic] = &[
    Intrinsic {
        name: "x86.avx512.vpdpbusd.256",
        args: &[I32X8, I8X32, I8X32],
        result: I32X8,
        meaning: "VNNI vpdpbusd: lane l of the accumulator (arg 0) plus the four products of \
                  unsigned bytes 4l..4l+4 of arg 1 with the signed bytes of arg 2, wrapping",
    },
    Intrinsic {
        name: "x86.avx512.vpdpbusd.512",
        args: &[I32X16, I8X64, I8X64],
        result: I32X16,
        meaning: "vpdpbusd on 512-bit vectors: as the 256-bit form, for 16 lanes",
    },
    Intrinsic {
        name: "x86.avx2.pmadd.ub.sw",
        args: &[I8X32, I8X32],
        result: I16X16,
        meaning: "AVX2 vpmaddubsw: lane l is the two products of unsigned bytes 2l, 2l+1 of \
                  arg 0 with the signed bytes of arg 1, added with signed 16-bit saturation",
    },
    Intrinsic {
        name: "x86.avx2.pmadd.wd",
        args: &[I16X16, I16X16],
        result: I32X8,
        meaning: "AVX2 vpmaddwd: lane l is the two products of signed 16-bit lanes 2l, 2l+1 \
                  of the arguments, added (wrapping)",
    },
];

/// The intrinsic named `name`, if kir knows it.
pub fn find(name: &str) -> Option<&'static Intrinsic> {
    ALL.iter().find(|i| i.name == name)
}

fn s(bits: u32, x: u64) -> i64 {
    let sh = 64 - bits;
    ((x << sh) as i64) >> sh
}

/// The result of intrinsic `name` on arguments given lane by lane as their bits (each
/// masked to its element width); the result likewise. `None` for an unknown name or
/// arguments of the wrong shape (the verifier rejects both first).
pub fn eval(name: &str, args: &[Vec<u64>]) -> Option<Vec<u64>> {
    let i = find(name)?;
    if args.len() != i.args.len() || args.iter().zip(i.args).any(|(a, t)| a.len() != t.lanes as usize) {
        return None;
    }
    let mask = |bits: u32, v: i64| (v as u64) & ((1u64 << bits) - 1);
    let u8_ = |v: &[u64], k: usize| (v[k] & 0xff) as i64;
    let s8 = |v: &[u64], k: usize| s(8, v[k]);
    Some(match name {
        "x86.avx512.vpdpbusd.256" | "x86.avx512.vpdpbusd.512" => (0..args[0].len())
            .map(|l| {
                let dot: i64 = (0..4).map(|j| u8_(&args[1], 4 * l + j) * s8(&args[2], 4 * l + j)).sum();
                mask(32, s(32, args[0][l]).wrapping_add(dot))
            })
            .collect(),
        "x86.avx2.pmadd.ub.sw" => (0..16)
            .map(|l| {
                let v: i64 = (0..2).map(|j| u8_(&args[0], 2 * l + j) * s8(&args[1], 2 * l + j)).sum();
                mask(16, v.clamp(i16::MIN as i64, i16::MAX as i64))
            })
            .collect(),
        "x86.avx2.pmadd.wd" => (0..8)
            .map(|l| {
                let v: i64 = (0..2).map(|j| s(16, args[0][2 * l + j]) * s(16, args[1][2 * l + j])).sum();
                mask(32, s(32, mask(32, v)))
            })
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpdpbusd_reads_unsigned_times_signed_bytes() {
        let acc = vec![5u64; 8];
        let a: Vec<u64> = (0..32).map(|k| if k < 4 { 255 } else { 1 }).collect();
        let b: Vec<u64> = (0..32).map(|k| if k < 4 { 0x80 } else { 2 }).collect(); // -128, then 2
        let r = eval("x86.avx512.vpdpbusd.256", &[acc, a, b]).unwrap();
        assert_eq!(s(32, r[0]), 5 + 4 * 255 * -128);
        assert_eq!(s(32, r[1]), 5 + 4 * 2);
    }

    #[test]
    fn pmaddubsw_saturates_and_pmaddwd_widens() {
        let a = vec![255u64; 32];
        let b = vec![127u64; 32];
        let r = eval("x86.avx2.pmadd.ub.sw", &[a, b]).unwrap();
        assert!(r.iter().all(|&v| v == i16::MAX as u64)); // 2 x 255 x 127 > 32767
        let ones = vec![1u64; 16];
        let w = eval("x86.avx2.pmadd.wd", &[r, ones]).unwrap();
        assert!(w.iter().all(|&v| s(32, v) == 2 * 32767));
        let neg = vec![mask16(-3); 16];
        let w = eval("x86.avx2.pmadd.wd", &[neg.clone(), neg]).unwrap();
        assert!(w.iter().all(|&v| v == 18));
    }

    fn mask16(v: i64) -> u64 {
        (v as u64) & 0xffff
    }

    #[test]
    fn wrong_shapes_and_names_have_no_meaning() {
        assert!(eval("x86.avx2.pmadd.wd", &[vec![0; 16]]).is_none());
        assert!(eval("x86.nope", &[]).is_none());
    }
}
