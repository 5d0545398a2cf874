//! The 8- and 4-bit floating-point storage formats of ONNX (float8 e4m3fn, e4m3fnuz,
//! e5m2, e5m2fnuz, float4 e2m1, and the exponent-only float8 e8m0), one byte per element.
//!
//! This module is the single definition of their numerics: decoding a code to f32 and
//! encoding an f32 with round-to-nearest-even (e8m0: rounding up) and optional
//! saturation. The interpreter calls these functions; the kernels (dlc-lower's
//! `dtype.rs`) decode through a kir table built by [`MiniFloat::decode`] and encode
//! with the same integer algorithm as [`MiniFloat::encode`], written in kir.
//!
//! The behaviours at the edges follow ONNX's reference (which uses ml_dtypes):
//! - e4m3fn: no infinities; NaN is `S.1111.111`; out-of-range values and infinities
//!   become NaN unless saturating (then the largest finite value, 448, with the sign).
//! - e5m2: IEEE-like, infinities `S.11111.00`; NaN encodes as `0x7E`/`0xFE`.
//! - e4m3fnuz, e5m2fnuz: no infinities and no negative zero; the only NaN is `0x80`.
//! - e2m1: no infinities or NaN; always saturates (NaN becomes +0).
//! - e8m0: unsigned powers of two 2^(code-127); `0xFF` is NaN; the sign is ignored and a
//!   value that is not a power of two rounds up (ONNX's default `round_mode`).

/// A minifloat format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MiniFloat {
    /// Exponent bits.
    pub exp_bits: u32,
    /// Mantissa bits.
    pub man_bits: u32,
    /// Exponent bias.
    pub bias: i32,
    /// The largest finite code, without the sign bit.
    pub max_code: u32,
    /// What an overflow or infinity encodes as when not saturating (without the sign).
    pub overflow: Overflow,
    /// The NaN code (sign bit included when the format has one; `None`: no NaN).
    pub nan: Option<u32>,
    /// Whether -0 exists (false: the `fnuz` formats, where `0x80` is NaN).
    pub neg_zero: bool,
}

/// What out-of-range values become when a conversion does not saturate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The signed infinity code.
    Inf(u32),
    /// NaN with the value's sign (e4m3fn) or the format's one NaN (fnuz).
    Nan,
    /// The largest finite value (formats without NaN or infinities).
    Saturate,
}

impl MiniFloat {
    /// float8 e4m3fn.
    pub const E4M3FN: MiniFloat = MiniFloat {
        exp_bits: 4,
        man_bits: 3,
        bias: 7,
        max_code: 0x7E,
        overflow: Overflow::Nan,
        nan: Some(0x7F),
        neg_zero: true,
    };
    /// float8 e4m3fnuz.
    pub const E4M3FNUZ: MiniFloat = MiniFloat {
        exp_bits: 4,
        man_bits: 3,
        bias: 8,
        max_code: 0x7F,
        overflow: Overflow::Nan,
        nan: Some(0x80),
        neg_zero: false,
    };
    /// float8 e5m2.
    pub const E5M2: MiniFloat = MiniFloat {
        exp_bits: 5,
        man_bits: 2,
        bias: 15,
        max_code: 0x7B,
        overflow: Overflow::Inf(0x7C),
        nan: Some(0x7E),
        neg_zero: true,
    };
    /// float8 e5m2fnuz.
    pub const E5M2FNUZ: MiniFloat = MiniFloat {
        exp_bits: 5,
        man_bits: 2,
        bias: 16,
        max_code: 0x7F,
        overflow: Overflow::Nan,
        nan: Some(0x80),
        neg_zero: false,
    };
    /// float4 e2m1.
    pub const E2M1: MiniFloat = MiniFloat {
        exp_bits: 2,
        man_bits: 1,
        bias: 1,
        max_code: 0x7,
        overflow: Overflow::Saturate,
        nan: None,
        neg_zero: true,
    };

    /// Total bits: sign, exponent, mantissa.
    pub fn bits(self) -> u32 {
        1 + self.exp_bits + self.man_bits
    }

    /// The sign bit's mask.
    pub fn sign_bit(self) -> u32 {
        1 << (self.bits() - 1)
    }

    /// The code of the NaN with the sign of `sign` (0 or 1), when the format has NaN.
    fn nan_code(self, sign: u32) -> u32 {
        match self.nan {
            Some(n) if self.neg_zero => n | (sign * self.sign_bit()),
            Some(n) => n,
            None => 0,
        }
    }

    /// The value of `code` (only its low `bits()` bits count).
    pub fn decode(self, code: u8) -> f32 {
        let code = code as u32 & ((1 << self.bits()) - 1);
        if Some(code) == self.nan || (self.neg_zero && self.nan.is_some_and(|n| code & !self.sign_bit() == n)) {
            return f32::NAN;
        }
        let neg = code & self.sign_bit() != 0;
        let mag = code & (self.sign_bit() - 1);
        let v = match self.overflow {
            Overflow::Inf(inf) if mag == inf => f32::INFINITY,
            Overflow::Inf(inf) if mag > inf => return f32::NAN,
            _ => self.finite(mag),
        };
        if neg {
            -v
        } else {
            v
        }
    }

    fn finite(self, mag: u32) -> f32 {
        let e = (mag >> self.man_bits) as i32;
        let m = (mag & ((1 << self.man_bits) - 1)) as f64;
        let scale = (1u64 << self.man_bits) as f64;
        let v =
            if e == 0 { m / scale * 2f64.powi(1 - self.bias) } else { (1.0 + m / scale) * 2f64.powi(e - self.bias) };
        v as f32
    }

    /// Encodes `x`, rounding to nearest even; out-of-range values and infinities become
    /// the largest finite value when `saturate`, else as [`MiniFloat::overflow`] says.
    pub fn encode(self, x: f32, saturate: bool) -> u8 {
        let bits = x.to_bits();
        let sign = bits >> 31;
        let a = bits & 0x7FFF_FFFF;
        let sign_bit = sign * self.sign_bit();
        if a > 0x7F80_0000 {
            return self.nan_code(sign) as u8;
        }
        let m = self.man_bits;
        let code = if a == 0x7F80_0000 {
            u32::MAX
        } else if ((a >> 23) as i32 - 127) < 1 - self.bias {
            // Below the smallest normal: count quanta of 2^(1-bias-m), ties to even.
            // Scaling by a power of two is exact, so this is one rounding.
            let q = f32::from_bits(a) * 2f32.powi(self.bias - 1 + m as i32);
            q.round_ties_even() as u32
        } else {
            // Round the f32 mantissa to `m` bits (ties to even), then re-bias.
            let r = a + ((1 << (22 - m)) - 1) + ((a >> (23 - m)) & 1);
            let e = (r >> 23) as i32 - 127 + self.bias;
            ((e as u32) << m) | ((r >> (23 - m)) & ((1 << m) - 1))
        };
        let code = if code > self.max_code {
            match (saturate, self.overflow) {
                (true, _) | (_, Overflow::Saturate) => self.max_code | sign_bit,
                (false, Overflow::Inf(inf)) => inf | sign_bit,
                (false, Overflow::Nan) => self.nan_code(sign),
            }
        } else if code == 0 && !self.neg_zero {
            0
        } else {
            code | sign_bit
        };
        code as u8
    }
}

/// float8 e8m0: the value of `code` (2^(code-127); `0xFF` is NaN).
pub fn e8m0_decode(code: u8) -> f32 {
    if code == 0xFF {
        f32::NAN
    } else {
        // Exact: 2^-127 is an f32 subnormal.
        2f64.powi(code as i32 - 127) as f32
    }
}

/// float8 e8m0: encodes `|x|` rounding up to a power of two (ONNX `round_mode="up"`);
/// NaN and infinities give `0xFF`; with `saturate` the largest finite code is `0xFE`.
pub fn e8m0_encode(x: f32, saturate: bool) -> u8 {
    let bits = x.to_bits();
    let exp = (bits >> 23) & 0xFF;
    if exp == 0xFF {
        return 0xFF;
    }
    let up = (bits & 0x7F_FFFF != 0) as u32;
    let e = if saturate && exp == 0xFE { exp } else { exp + up };
    e.min(0xFF) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected codes are ml_dtypes' (ONNX's reference) conversions of the same f32
    /// values, recorded with numpy: `np.array(xs, np.float32).astype(T).view(np.uint8)`.
    #[test]
    fn encodes_like_the_onnx_reference() {
        let xs = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e6, -1e6, -0.0, -1e-7, 464.0, 470.0, -1e-3];
        let cases: [(MiniFloat, [u8; 10]); 4] = [
            (MiniFloat::E4M3FN, [127, 127, 255, 127, 255, 128, 128, 126, 127, 129]),
            (MiniFloat::E4M3FNUZ, [128, 128, 128, 128, 128, 0, 0, 128, 128, 129]),
            (MiniFloat::E5M2, [126, 124, 252, 124, 252, 128, 128, 95, 95, 148]),
            (MiniFloat::E5M2FNUZ, [128, 128, 128, 128, 128, 0, 0, 99, 99, 152]),
        ];
        for (f, want) in cases {
            let got: Vec<u8> = xs.iter().map(|&x| f.encode(x, false)).collect();
            assert_eq!(got, want, "{f:?}");
        }
        // float4 e2m1 always saturates.
        let xs = [0.24, 0.26, 0.75, -0.75, 0.25, 5.9, 6.1, 7.0, -0.1, 2.5, 5.0, 1e6, -8.0];
        let got: Vec<u8> = xs.iter().map(|&x| MiniFloat::E2M1.encode(x, false)).collect();
        assert_eq!(got, [0, 1, 2, 10, 0, 7, 7, 7, 8, 4, 6, 7, 15]);
    }

    #[test]
    fn saturation_clamps_to_the_largest_finite_value() {
        assert_eq!(MiniFloat::E4M3FN.decode(MiniFloat::E4M3FN.encode(1e6, true)), 448.0);
        assert_eq!(MiniFloat::E4M3FN.decode(MiniFloat::E4M3FN.encode(f32::NEG_INFINITY, true)), -448.0);
        assert_eq!(MiniFloat::E5M2.decode(MiniFloat::E5M2.encode(1e6, true)), 57344.0);
        assert_eq!(MiniFloat::E4M3FNUZ.decode(MiniFloat::E4M3FNUZ.encode(1e6, true)), 240.0);
        assert!(MiniFloat::E4M3FN.decode(MiniFloat::E4M3FN.encode(f32::NAN, true)).is_nan());
    }

    #[test]
    fn every_code_round_trips() {
        for f in [MiniFloat::E4M3FN, MiniFloat::E4M3FNUZ, MiniFloat::E5M2, MiniFloat::E5M2FNUZ, MiniFloat::E2M1] {
            for c in 0..(1u32 << f.bits()) {
                let v = f.decode(c as u8);
                if v.is_nan() || v.is_infinite() {
                    continue;
                }
                assert_eq!(f.encode(v, false) as u32, c, "{f:?} code {c:#x} = {v}");
            }
        }
        assert_eq!(MiniFloat::E4M3FN.decode(0x7E), 448.0);
        assert_eq!(MiniFloat::E4M3FN.decode(0x01), 2f32.powi(-9));
        assert_eq!(MiniFloat::E5M2.decode(0x7C), f32::INFINITY);
        assert_eq!(MiniFloat::E2M1.decode(0x7), 6.0);
    }

    #[test]
    fn e8m0_rounds_up_to_powers_of_two() {
        let xs = [0.5, 1.0, 1.5, 3.0, 0.0, -1.0, f32::INFINITY, f32::NAN];
        let got: Vec<u8> = xs.iter().map(|&x| e8m0_encode(x, true)).collect();
        // ml_dtypes float8_e8m0fnu codes of 0.5, 1, 2, 4 (and 0 for zero; onnx's
        // to_float8e8m0 maps zero to code 0 and ignores the sign).
        assert_eq!(got, [126, 127, 128, 129, 0, 127, 255, 255]);
        assert_eq!(e8m0_decode(127), 1.0);
        assert!(e8m0_decode(255).is_nan());
    }
}
