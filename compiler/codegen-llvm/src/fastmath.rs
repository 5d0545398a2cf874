//! Fast vector math for kernels. Each function is written twice from one coefficient
//! table: in LLVM IR (what kernels run) and in Rust (`*_ref`, the same operations in the
//! same order in f32), and the tests bound the Rust twin's error against f64.
//!
//! `erf` and `gelu`: Abramowitz & Stegun 7.1.26 on top of `exp` (see [`erf`]).
//!
//! `exp`: Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2/2`, a degree-6
//! polynomial for `e^r` (Cephes `expf` coefficients), and `2^n` built in the exponent
//! bits. Inputs below -87.3 give 0 (results there would be subnormal; -inf gives 0),
//! above 88.0 give +inf (e^x overflows f32 only at 88.72: values in between come out
//! as +inf early); NaN stays NaN. Maximum relative error over [-87, 88]: 2 ulp
//! (measured by `exp_error_is_within_2_ulp`). Softmax, its one user, only feeds it
//! `x - max(x) <= 0`.
//!
//! `log`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))` from the bits (subnormals scaled
//! by `2^23` first), `log(1 + f)` for `f = m - 1` by Cephes' `logf` polynomial, and
//! `e ln2` added in two parts. Negative inputs and NaN give NaN, 0 gives -inf, +inf
//! stays +inf. Maximum error over every positive f32 sampled: within 1 ulp
//! (`log_error_is_within_1_ulp`). The CUDA kernels use it (GPUs have no C library).
//!
//! `sin`, `cos`: Cephes `sinf`/`cosf`: `x = j pi/4 + r` (3-part Cody-Waite), the sine or
//! cosine polynomial on `r` by octant. Accurate for `|x| <= 8192` (absolute error within
//! 1e-7, `sin_cos_error_is_within_1e_7`); beyond that the reduction loses digits, as
//! Cephes documents. `atan` and `asin`: Cephes `atanf`/`asinf` (reduction by
//! `tan(pi/8)`, `tan(3pi/8)`; `asin` by `sqrt((1 - |x|)/2)` above 1/2), within 3 ulp
//! (`atan_asin_error_is_within_3_ulp`). The CUDA kernels use them for Sin, Cos, Tan,
//! Atan, Asin, Acos.
use crate::kernel::{Kb, R};
use inkwell::types::VectorType;
use inkwell::values::VectorValue;
use inkwell::{FloatPredicate, IntPredicate};

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
const LO: f32 = -87.3;
const HI: f32 = 88.0;

/// The Rust twin of [`exp`], operation for operation.
pub fn exp_ref(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < LO {
        return 0.0;
    }
    if x > HI {
        return f32::INFINITY;
    }
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = P[0];
    for c in &P[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

// log: Cephes logf.
const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
const LOG_P: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];
const MIN_NORMAL: f32 = f32::MIN_POSITIVE;

/// The Rust twin of [`log`], operation for operation.
pub fn log_ref(x: f32) -> f32 {
    let den = x < MIN_NORMAL;
    let xs = if den { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits() as i32;
    let mut e = ((bits >> 23) & 0xff) - 126 - if den { 23 } else { 0 };
    let m = f32::from_bits(((bits & 0x007f_ffff) | 0x3f00_0000) as u32);
    let small = m < SQRT_HALF;
    e -= small as i32;
    let f = if small { m + m } else { m } - 1.0;
    let ef = e as f32;
    let z = f * f;
    let mut p = LOG_P[0];
    for c in &LOG_P[1..] {
        p = p.mul_add(f, *c);
    }
    let y = (p * f) * z;
    let y = ef.mul_add(LN2_LO, y);
    let y = z.mul_add(-0.5, y);
    let r = ef.mul_add(LN2_HI, f + y);
    if x.is_nan() || x < 0.0 {
        f32::NAN
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else {
        r
    }
}

/// Constant vectors shaped like the operand (`w` lanes).
struct Lanes<'k, 'a, 'ctx> {
    kb: &'k Kb<'a, 'ctx>,
    w: u32,
}

impl<'ctx> Lanes<'_, '_, 'ctx> {
    fn f32(&self, v: f32) -> VectorValue<'ctx> {
        VectorType::const_vector(&vec![self.kb.f32t.const_float(v as f64); self.w as usize])
    }
    fn i32(&self, v: i32) -> VectorValue<'ctx> {
        VectorType::const_vector(&vec![self.kb.cx.i32_type().const_int(v as u64, true); self.w as usize])
    }
    fn int_type(&self) -> VectorType<'ctx> {
        self.kb.cx.i32_type().vec_type(self.w)
    }
}

/// Natural logarithm on a vector of f32 (see the module doc for the error bound).
pub(crate) fn log<'ctx>(kb: &Kb<'_, 'ctx>, x: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let vt = x.get_type();
    let lanes = Lanes { kb, w: vt.get_size() };
    let (c, ci, it) = (|v| lanes.f32(v), |v| lanes.i32(v), lanes.int_type());
    let den = b.build_float_compare(FloatPredicate::OLT, x, c(MIN_NORMAL), "")?;
    let xs = b.build_select(den, b.build_float_mul(x, c(8_388_608.0), "")?, x, "")?.into_vector_value();
    let bits = b.build_bit_cast(xs, it, "")?.into_vector_value();
    let e = b.build_and(b.build_right_shift(bits, ci(23), true, "")?, ci(0xff), "")?;
    let e = b.build_int_sub(e, ci(126), "")?;
    let e = b.build_int_sub(e, b.build_select(den, ci(23), ci(0), "")?.into_vector_value(), "")?;
    let mbits = b.build_or(b.build_and(bits, ci(0x007f_ffff), "")?, ci(0x3f00_0000), "")?;
    let m = b.build_bit_cast(mbits, vt, "")?.into_vector_value();
    let small = b.build_float_compare(FloatPredicate::OLT, m, c(SQRT_HALF), "")?;
    let e = b.build_int_sub(e, b.build_int_z_extend(small, it, "")?, "")?;
    let m2 = b.build_select(small, b.build_float_add(m, m, "")?, m, "")?.into_vector_value();
    let f = b.build_float_sub(m2, c(1.0), "")?;
    let ef = b.build_signed_int_to_float(e, vt, "")?;
    let z = b.build_float_mul(f, f, "")?;
    let mut p = c(LOG_P[0]);
    for k in &LOG_P[1..] {
        p = fma(kb, p, f, c(*k))?;
    }
    let y = b.build_float_mul(b.build_float_mul(p, f, "")?, z, "")?;
    let y = fma(kb, ef, c(LN2_LO), y)?;
    let y = fma(kb, z, c(-0.5), y)?;
    let r = fma(kb, ef, c(LN2_HI), b.build_float_add(f, y, "")?)?;
    // NaN or negative: NaN; zero: -inf; +inf: +inf.
    let bad = b.build_float_compare(FloatPredicate::ULT, x, c(0.0), "")?;
    let r = b.build_select(bad, c(f32::NAN), r, "")?.into_vector_value();
    let zero = b.build_float_compare(FloatPredicate::OEQ, x, c(0.0), "")?;
    let r = b.build_select(zero, c(f32::NEG_INFINITY), r, "")?.into_vector_value();
    let inf = b.build_float_compare(FloatPredicate::OEQ, x, c(f32::INFINITY), "")?;
    Ok(b.build_select(inf, x, r, "")?.into_vector_value())
}

// sin/cos: Cephes sinf.c/cosf.c.
const FOPI: f32 = 1.273_239_5;
const DP: [f32; 3] = [0.785_156_25, 2.418_756_5e-4, 3.774_895e-8];
const SIN_P: [f32; 3] = [-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1];
const COS_P: [f32; 3] = [2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2];

/// The octant reduction shared by sin and cos: `(r, j)` with `|x| = j pi/4 + r`, `j` even.
fn octant_ref(a: f32) -> (f32, i32) {
    let mut j = (FOPI * a) as i32;
    j = j.wrapping_add(j & 1);
    let y = j as f32;
    let r = ((a - y * DP[0]) - y * DP[1]) - y * DP[2];
    (r, j)
}

fn sin_poly_ref(r: f32) -> f32 {
    let z = r * r;
    let p = SIN_P[0].mul_add(z, SIN_P[1]).mul_add(z, SIN_P[2]);
    (p * z).mul_add(r, r)
}

fn cos_poly_ref(r: f32) -> f32 {
    let z = r * r;
    let p = COS_P[0].mul_add(z, COS_P[1]).mul_add(z, COS_P[2]);
    (p * z).mul_add(z, z.mul_add(-0.5, 1.0))
}

/// The Rust twin of [`sin`] (`cos` when `cos`), operation for operation.
pub fn sincos_ref(x: f32, cos: bool) -> f32 {
    let (r, j) = octant_ref(x.abs());
    // Quadrant q = j/2 (mod 4), shifted by one for the cosine.
    let q = ((j >> 1) + cos as i32) & 3;
    let v = if q & 1 == 1 { cos_poly_ref(r) } else { sin_poly_ref(r) };
    let neg = (q >= 2) != (!cos && x < 0.0);
    let v = if neg { -v } else { v };
    if x.is_finite() {
        v
    } else {
        f32::NAN
    }
}

const ATAN_P: [f32; 4] = [8.053_744_5e-2, -1.387_768_5e-1, 1.997_771_1e-1, -3.333_295e-1];
const TAN_3PI_8: f32 = 2.414_213_5;
const TAN_PI_8: f32 = 0.414_213_57;
const ASIN_P: [f32; 5] = [4.216_32e-2, 2.418_131e-2, 4.547_002_6e-2, 7.495_300_3e-2, 1.666_675_2e-1];

/// The Rust twin of [`atan`].
pub fn atan_ref(x: f32) -> f32 {
    let a = x.abs();
    let big = a > TAN_3PI_8;
    let mid = a > TAN_PI_8;
    let (base, t) = if big {
        (std::f32::consts::FRAC_PI_2, -1.0 / a)
    } else if mid {
        (std::f32::consts::FRAC_PI_4, (a - 1.0) / (a + 1.0))
    } else {
        (0.0, a)
    };
    let z = t * t;
    let p = ATAN_P[0].mul_add(z, ATAN_P[1]).mul_add(z, ATAN_P[2]).mul_add(z, ATAN_P[3]);
    let y = base + (p * z).mul_add(t, t);
    if x.is_nan() {
        x
    } else {
        y.copysign(x)
    }
}

/// The Rust twin of [`asin`].
pub fn asin_ref(x: f32) -> f32 {
    let a = x.abs();
    let high = a > 0.5;
    let z = if high { 0.5 * (1.0 - a) } else { a * a };
    let t = if high { z.sqrt() } else { a };
    let mut p = ASIN_P[0];
    for c in &ASIN_P[1..] {
        p = p.mul_add(z, *c);
    }
    let y = (p * z).mul_add(t, t);
    let y = if high { std::f32::consts::FRAC_PI_2 - (y + y) } else { y };
    if a > 1.0 || x.is_nan() {
        f32::NAN
    } else {
        y.copysign(x)
    }
}

/// `sin x` (`cos x` when `cos`) on a vector of f32 (see the module doc).
pub(crate) fn sincos<'ctx>(kb: &Kb<'_, 'ctx>, x: VectorValue<'ctx>, cos: bool) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let vt = x.get_type();
    let lanes = Lanes { kb, w: vt.get_size() };
    let (c, ci, it) = (|v| lanes.f32(v), |v| lanes.i32(v), lanes.int_type());
    let a = kb.call_intrinsic("llvm.fabs", &[vt.into()], &[x.into()])?.into_vector_value();
    let j = b.build_float_to_signed_int(b.build_float_mul(c(FOPI), a, "")?, it, "")?;
    let j = b.build_int_add(j, b.build_and(j, ci(1), "")?, "")?;
    let y = b.build_signed_int_to_float(j, vt, "")?;
    let mut r = a;
    for d in DP {
        r = b.build_float_sub(r, b.build_float_mul(y, c(d), "")?, "")?;
    }
    let z = b.build_float_mul(r, r, "")?;
    let ps = fma(kb, fma(kb, c(SIN_P[0]), z, c(SIN_P[1]))?, z, c(SIN_P[2]))?;
    let s = fma(kb, b.build_float_mul(ps, z, "")?, r, r)?;
    let pc = fma(kb, fma(kb, c(COS_P[0]), z, c(COS_P[1]))?, z, c(COS_P[2]))?;
    let co = fma(kb, b.build_float_mul(pc, z, "")?, z, fma(kb, z, c(-0.5), c(1.0))?)?;
    let q = b.build_and(b.build_int_add(b.build_right_shift(j, ci(1), true, "")?, ci(cos as i32), "")?, ci(3), "")?;
    let odd = b.build_int_compare(IntPredicate::EQ, b.build_and(q, ci(1), "")?, ci(1), "")?;
    let v = b.build_select(odd, co, s, "")?.into_vector_value();
    let upper = b.build_int_compare(IntPredicate::SGE, q, ci(2), "")?;
    let neg =
        if cos { upper } else { b.build_xor(upper, b.build_float_compare(FloatPredicate::OLT, x, c(0.0), "")?, "")? };
    let v = b.build_select(neg, b.build_float_neg(v, "")?, v, "")?.into_vector_value();
    let finite = b.build_float_compare(FloatPredicate::OLT, a, c(f32::INFINITY), "")?;
    Ok(b.build_select(finite, v, c(f32::NAN), "")?.into_vector_value())
}

/// `atan x` on a vector of f32 (see the module doc).
pub(crate) fn atan<'ctx>(kb: &Kb<'_, 'ctx>, x: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let vt = x.get_type();
    let w = vt.get_size() as usize;
    let c = |v: f32| VectorType::const_vector(&vec![kb.f32t.const_float(v as f64); w]);
    let a = kb.call_intrinsic("llvm.fabs", &[vt.into()], &[x.into()])?.into_vector_value();
    let big = b.build_float_compare(FloatPredicate::OGT, a, c(TAN_3PI_8), "")?;
    let mid = b.build_float_compare(FloatPredicate::OGT, a, c(TAN_PI_8), "")?;
    let sel = |cond, t: VectorValue<'ctx>, f: VectorValue<'ctx>| -> R<VectorValue<'ctx>> {
        Ok(b.build_select(cond, t, f, "")?.into_vector_value())
    };
    let base = sel(big, c(std::f32::consts::FRAC_PI_2), sel(mid, c(std::f32::consts::FRAC_PI_4), c(0.0))?)?;
    let t_big = b.build_float_div(c(-1.0), a, "")?;
    let t_mid = b.build_float_div(b.build_float_sub(a, c(1.0), "")?, b.build_float_add(a, c(1.0), "")?, "")?;
    let t = sel(big, t_big, sel(mid, t_mid, a)?)?;
    let z = b.build_float_mul(t, t, "")?;
    let mut p = c(ATAN_P[0]);
    for k in &ATAN_P[1..] {
        p = fma(kb, p, z, c(*k))?;
    }
    let y = b.build_float_add(base, fma(kb, b.build_float_mul(p, z, "")?, t, t)?, "")?;
    let y = kb.call_intrinsic("llvm.copysign", &[vt.into()], &[y.into(), x.into()])?.into_vector_value();
    let nan = b.build_float_compare(FloatPredicate::UNO, x, x, "")?;
    sel(nan, x, y)
}

/// `asin x` on a vector of f32 (see the module doc).
pub(crate) fn asin<'ctx>(kb: &Kb<'_, 'ctx>, x: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let vt = x.get_type();
    let w = vt.get_size() as usize;
    let c = |v: f32| VectorType::const_vector(&vec![kb.f32t.const_float(v as f64); w]);
    let sel = |cond, t: VectorValue<'ctx>, f: VectorValue<'ctx>| -> R<VectorValue<'ctx>> {
        Ok(b.build_select(cond, t, f, "")?.into_vector_value())
    };
    let a = kb.call_intrinsic("llvm.fabs", &[vt.into()], &[x.into()])?.into_vector_value();
    let high = b.build_float_compare(FloatPredicate::OGT, a, c(0.5), "")?;
    let z = sel(high, b.build_float_mul(c(0.5), b.build_float_sub(c(1.0), a, "")?, "")?, b.build_float_mul(a, a, "")?)?;
    let root = kb.call_intrinsic("llvm.sqrt", &[vt.into()], &[z.into()])?.into_vector_value();
    let t = sel(high, root, a)?;
    let mut p = c(ASIN_P[0]);
    for k in &ASIN_P[1..] {
        p = fma(kb, p, z, c(*k))?;
    }
    let y = fma(kb, b.build_float_mul(p, z, "")?, t, t)?;
    let y = sel(high, b.build_float_sub(c(std::f32::consts::FRAC_PI_2), b.build_float_add(y, y, "")?, "")?, y)?;
    let y = kb.call_intrinsic("llvm.copysign", &[vt.into()], &[y.into(), x.into()])?.into_vector_value();
    let bad = b.build_float_compare(FloatPredicate::UGT, a, c(1.0), "")?;
    sel(bad, c(f32::NAN), y)
}

fn fma<'ctx>(
    kb: &Kb<'_, 'ctx>,
    a: VectorValue<'ctx>,
    b: VectorValue<'ctx>,
    c: VectorValue<'ctx>,
) -> R<VectorValue<'ctx>> {
    crate::lower::vfma(kb, a, b, c)
}

/// `e^x` on a vector of f32 (see the module doc for the error bound).
pub(crate) fn exp<'ctx>(kb: &Kb<'_, 'ctx>, x: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let vt = x.get_type();
    let w = vt.get_size();
    let c = |v: f32| -> VectorValue<'ctx> {
        let s = kb.f32t.const_float(v as f64);
        VectorType::const_vector(&vec![s; w as usize])
    };
    let call1 = |name: &str, a: VectorValue<'ctx>| -> R<VectorValue<'ctx>> {
        Ok(kb.call_intrinsic(name, &[vt.into()], &[a.into()])?.into_vector_value())
    };
    let n = call1("llvm.roundeven", b.build_float_mul(x, c(LOG2E), "")?)?;
    let neg_n = b.build_float_neg(n, "")?;
    let r = fma(kb, neg_n, c(LN2_HI), x)?;
    let r = fma(kb, neg_n, c(LN2_LO), r)?;
    let mut p = c(P[0]);
    for k in &P[1..] {
        p = fma(kb, p, r, c(*k))?;
    }
    let r2 = b.build_float_mul(r, r, "")?;
    let y = b.build_float_add(fma(kb, p, r2, r)?, c(1.0), "")?;
    // 2^n: (n + 127) << 23 as float bits (n is in [-126, 128] after the clamps below).
    let it = kb.cx.i32_type().vec_type(w);
    let ni = b.build_float_to_signed_int(b.build_float_add(n, c(0.0), "")?, it, "")?;
    let ni =
        b.build_int_add(ni, VectorType::const_vector(&vec![kb.cx.i32_type().const_int(127, false); w as usize]), "")?;
    let ni =
        b.build_left_shift(ni, VectorType::const_vector(&vec![kb.cx.i32_type().const_int(23, false); w as usize]), "")?;
    let scale = b.build_bit_cast(ni, vt, "")?.into_vector_value();
    let e = b.build_float_mul(y, scale, "")?;
    let lo = b.build_float_compare(FloatPredicate::OLT, x, c(LO), "")?;
    let hi = b.build_float_compare(FloatPredicate::OGT, x, c(HI), "")?;
    let e = b.build_select(lo, c(0.0), e, "")?.into_vector_value();
    let e = b.build_select(hi, c(f32::INFINITY), e, "")?.into_vector_value();
    let nan = b.build_float_compare(FloatPredicate::UNO, x, x, "")?;
    Ok(b.build_select(nan, x, e, "")?.into_vector_value())
}

// erf: Abramowitz & Stegun 7.1.26, `erf(x) = 1 - t (a1 + t (a2 + ... a5)) e^(-x^2)`
// with `t = 1 / (1 + p |x|)`, odd in x.
const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [1.061_405_4, -1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6];

/// The Rust twin of [`erf`], operation for operation.
pub fn erf_ref(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / ERF_P.mul_add(a, 1.0);
    let mut q = ERF_A[0];
    for c in &ERF_A[1..] {
        q = q.mul_add(t, *c);
    }
    let y = 1.0 - t * q * exp_ref(-(a * a));
    if x.is_nan() {
        x
    } else {
        y.copysign(x)
    }
}

/// GELU `x/2 (1 + erf(x / sqrt 2))` through [`erf_ref`].
pub fn gelu_ref(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_ref(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf(x)` on a vector: maximum absolute error 7e-7 in f32 (`erf_error_is_within_7e_7`;
/// the formula's own bound is 1.5e-7, the rest is rounding in `1 - t q e^(-x^2)`). That
/// is a large relative error for tiny `x`, so kernels use it only inside GELU, where it
/// is added to 1.
pub(crate) fn erf<'ctx>(kb: &Kb<'_, 'ctx>, x: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let w = x.get_type().get_size();
    let c = |v: f32| VectorType::const_vector(&vec![kb.f32t.const_float(v as f64); w as usize]);
    let a = kb.call_intrinsic("llvm.fabs", &[x.get_type().into()], &[x.into()])?.into_vector_value();
    let t = b.build_float_div(c(1.0), fma(kb, c(ERF_P), a, c(1.0))?, "")?;
    let mut q = c(ERF_A[0]);
    for k in &ERF_A[1..] {
        q = fma(kb, q, t, c(*k))?;
    }
    let e = exp(kb, b.build_float_neg(b.build_float_mul(a, a, "")?, "")?)?;
    let y = b.build_float_sub(c(1.0), b.build_float_mul(b.build_float_mul(t, q, "")?, e, "")?, "")?;
    // copysign(y, x)
    let it = kb.cx.i32_type().vec_type(w);
    let sign_mask = VectorType::const_vector(&vec![kb.cx.i32_type().const_int(0x8000_0000, false); w as usize]);
    let xs = b.build_and(b.build_bit_cast(x, it, "")?.into_vector_value(), sign_mask, "")?;
    let ys = b.build_or(b.build_bit_cast(y, it, "")?.into_vector_value(), xs, "")?;
    let y = b.build_bit_cast(ys, x.get_type(), "")?.into_vector_value();
    let nan = b.build_float_compare(FloatPredicate::UNO, x, x, "")?;
    Ok(b.build_select(nan, x, y, "")?.into_vector_value())
}

/// GELU (erf form) on a vector, through [`erf`].
pub(crate) fn gelu<'ctx>(kb: &Kb<'_, 'ctx>, x: VectorValue<'ctx>) -> R<VectorValue<'ctx>> {
    let b = &kb.b;
    let w = x.get_type().get_size();
    let c = |v: f32| VectorType::const_vector(&vec![kb.f32t.const_float(v as f64); w as usize]);
    let e = erf(kb, b.build_float_mul(x, c(std::f32::consts::FRAC_1_SQRT_2), "")?)?;
    Ok(b.build_float_mul(b.build_float_mul(c(0.5), x, "")?, b.build_float_add(c(1.0), e, "")?, "")?)
}

#[cfg(test)]
mod tests {
    use super::{asin_ref, atan_ref, erf_ref, exp_ref, gelu_ref, log_ref, sincos_ref};

    #[test]
    fn erf_error_is_within_7e_7() {
        let mut worst: f64 = 0.0;
        for i in 0..=400_000 {
            let x = -6.0 + 12.0 * i as f32 / 400_000.0;
            worst = worst.max((erf_ref(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst <= 7e-7, "max abs error {worst}");
        assert!(erf_ref(0.0).abs() <= 2e-7);
        assert_eq!(erf_ref(10.0), 1.0);
        assert_eq!(erf_ref(-10.0), -1.0);
        assert!(erf_ref(f32::NAN).is_nan());
        // GELU inherits it: |error| <= |x| / 2 * 7e-7 + rounding.
        for x in [-5.0f32, -1.0, -0.1, 0.0, 0.3, 1.7, 4.0] {
            let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            assert!((gelu_ref(x) as f64 - want).abs() <= 1e-6, "gelu({x})");
        }
    }

    fn ulps(a: f32, b: f64) -> f64 {
        let want = b as f32;
        let ulp = (f32::from_bits(want.to_bits() + 1) - want) as f64;
        ((a as f64) - b).abs() / ulp
    }

    #[test]
    fn sin_cos_error_is_within_1e_7() {
        let mut worst: f64 = 0.0;
        for i in 0..=2_000_000 {
            let x = -8192.0 + 16384.0 * i as f32 / 2_000_000.0;
            worst = worst.max((sincos_ref(x, false) as f64 - (x as f64).sin()).abs());
            worst = worst.max((sincos_ref(x, true) as f64 - (x as f64).cos()).abs());
        }
        for i in 0..=200_000 {
            let x = -4.0 + 8.0 * i as f32 / 200_000.0;
            worst = worst.max((sincos_ref(x, false) as f64 - (x as f64).sin()).abs());
            worst = worst.max((sincos_ref(x, true) as f64 - (x as f64).cos()).abs());
        }
        assert!(worst <= 1e-7, "max abs error {worst}");
        assert_eq!(sincos_ref(0.0, false), 0.0);
        assert_eq!(sincos_ref(0.0, true), 1.0);
        assert!(sincos_ref(f32::INFINITY, false).is_nan() && sincos_ref(f32::NAN, true).is_nan());
    }

    #[test]
    fn atan_asin_error_is_within_3_ulp() {
        let mut worst: f64 = 0.0;
        let mut check = |got: f32, want: f64| {
            let w = want as f32;
            let ulp = (w.abs().next_up() - w.abs()) as f64;
            worst = worst.max((got as f64 - want).abs() / ulp.max(f64::MIN_POSITIVE));
        };
        for i in 0..=1_000_000 {
            let x = -1.0 + 2.0 * i as f32 / 1_000_000.0;
            check(asin_ref(x), (x as f64).asin());
            let y = -100.0 + 200.0 * i as f32 / 1_000_000.0;
            check(atan_ref(y), (y as f64).atan());
        }
        for e in -30..30 {
            let y = 2f32.powi(e) * 1.3;
            check(atan_ref(y), (y as f64).atan());
            check(atan_ref(-y), (-y as f64).atan());
        }
        assert!(worst <= 3.0, "max error {worst} ulp");
        assert!(asin_ref(1.5).is_nan() && atan_ref(f32::NAN).is_nan());
        assert_eq!(atan_ref(f32::INFINITY), std::f32::consts::FRAC_PI_2);
    }

    #[test]
    fn log_error_is_within_1_ulp() {
        let mut worst: f64 = 0.0;
        // Every 97th f32 bit pattern from the smallest subnormal to +inf.
        let mut bits = 1u32;
        while bits < 0x7f80_0000 {
            let x = f32::from_bits(bits);
            let want = (x as f64).ln();
            let got = log_ref(x) as f64;
            let ulp = ((want as f32).abs().next_up() as f64 - (want as f32).abs() as f64).max(f64::MIN_POSITIVE);
            worst = worst.max((got - want).abs() / ulp);
            bits += 97;
        }
        assert!(worst <= 1.0, "max error {worst} ulp");
        assert_eq!(log_ref(1.0), 0.0);
        assert_eq!(log_ref(0.0), f32::NEG_INFINITY);
        assert_eq!(log_ref(f32::INFINITY), f32::INFINITY);
        assert!(log_ref(-1.0).is_nan() && log_ref(f32::NAN).is_nan());
    }

    #[test]
    fn exp_error_is_within_2_ulp() {
        let mut worst: f64 = 0.0;
        let n = 2_000_000;
        for i in 0..=n {
            let x = -87.0 + 175.0 * i as f32 / n as f32;
            worst = worst.max(ulps(exp_ref(x), (x as f64).exp()));
        }
        assert!(worst <= 2.0, "max error {worst} ulp");
        assert_eq!(exp_ref(0.0), 1.0);
        assert_eq!(exp_ref(-100.0), 0.0);
        assert_eq!(exp_ref(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_ref(100.0), f32::INFINITY);
        assert!(exp_ref(88.0).is_finite());
        assert!(exp_ref(f32::NAN).is_nan());
    }
}
