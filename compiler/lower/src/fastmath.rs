//! dlc's own math functions as kir, for f32 scalars or vectors: what CUDA kernels use
//! for the C library they lack, and what the vector kernels (GELU epilogues, attention's
//! exponentials) use on every target. A backend inlines them where it meets `dlc.exp`
//! or a C name it cannot call; the tests (`tests/fastmath.rs`) run these very kernels
//! in kir's interpreter and bound their error against f64.
//!
//! `exp`: Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2/2`, a degree-6
//! polynomial for `e^r` (Cephes `expf` coefficients), and `2^n` built in the exponent
//! bits. Inputs below -87.3 give 0 (results there would be subnormal; -inf gives 0),
//! above 88.0 give +inf (e^x overflows f32 only at 88.72: values in between come out as
//! +inf early); NaN stays NaN. Relative error within 2 ulp over [-87, 88].
//!
//! `log`: `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))` from the bits (subnormals scaled
//! by `2^23` first), `log(1 + f)` for `f = m - 1` by Cephes' `logf` polynomial, and
//! `e ln2` added in two parts. Negative inputs and NaN give NaN, 0 gives -inf, +inf
//! stays +inf. Within 1 ulp.
//!
//! `sin`, `cos`: Cephes `sinf`/`cosf`: `x = j pi/4 + r` (3-part Cody-Waite), the sine or
//! cosine polynomial on `r` by octant. Absolute error within 1e-7 for `|x| <= 8192`;
//! beyond that the reduction loses digits, as Cephes documents. `atan` and `asin`:
//! Cephes `atanf`/`asinf` (reduction by `tan(pi/8)`, `tan(3pi/8)`; `asin` by
//! `sqrt((1 - |x|)/2)` above 1/2), within 3 ulp.
//!
//! `erf`: a rational function `x P(x^2) / Q(x^2)` (degrees 6 and 4 in `x^2`, fitted for
//! dlc) on `x` clamped to `[-4, 4]`, odd, branch-free and without an exponential: within
//! 4 ulp for `|x| < 1` (tiny `x` included) and 8 ulp (4.2e-7 absolute) where erf nears
//! 1. Elementwise Erf on f32 and GELU use it.
//!
//! [`call`] composes the other C functions the CUDA kernels need from these: tan, acos,
//! tanh, the hyperbolic functions and their inverses, and `powf` (absolute errors of a
//! few 1e-7 where results are small).
use dlc_kir::{BinOp, CastOp, CmpOp, Elem, Inst, KernelBuilder, Lit, Ty, UnOp, ValId};

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
const LO: f32 = -87.3;
const HI: f32 = 88.0;
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
const FOPI: f32 = 1.273_239_5;
const DP: [f32; 3] = [0.785_156_25, 2.418_756_5e-4, 3.774_895e-8];
const SIN_P: [f32; 3] = [-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1];
const COS_P: [f32; 3] = [2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2];
const ATAN_P: [f32; 4] = [8.053_744_5e-2, -1.387_768_5e-1, 1.997_771_1e-1, -3.333_295e-1];
const TAN_3PI_8: f32 = 2.414_213_5;
const TAN_PI_8: f32 = 0.414_213_57;
const ASIN_P: [f32; 5] = [4.216_32e-2, 2.418_131e-2, 4.547_002_6e-2, 7.495_300_3e-2, 1.666_675_2e-1];
const TANH_P: [f32; 5] = [-5.704_988_7e-3, 2.063_909e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328e-1];
/// erf's rational form, `x P(x^2) / Q(x^2)` (highest power first): fitted for this module
/// (iteratively reweighted least squares towards the least maximum relative error on
/// `(0, 4]`; 6.5e-8 in f64). Its last coefficient is the fit's, 1 f32 ulp below 2/sqrt(pi).
#[allow(clippy::approx_constant)]
const ERF_NUM: [f32; 7] =
    [1.911_11e-8, -1.942_322_5e-6, 1.472_862_7e-4, 3.990_545_6e-3, 5.152_478_4e-2, 2.071_245_2e-1, 1.128_379_1];
const ERF_DEN: [f32; 5] = [1.021_107_7e-3, 1.495_801e-2, 1.179_704_4e-1, 5.168_906e-1, 1.0];

/// Arithmetic on f32 values of one shape (`lanes` lanes; 1 for scalars).
struct M<'b> {
    b: &'b mut KernelBuilder,
    lanes: u32,
}

impl M<'_> {
    fn ty(&self) -> Ty {
        Ty::vec(Elem::F32, self.lanes)
    }
    fn ity(&self) -> Ty {
        Ty::vec(Elem::I32, self.lanes)
    }
    fn c(&mut self, v: f32) -> ValId {
        let ty = self.ty();
        self.b.let_(Inst::Const { ty, lit: Lit::Float(v as f64) })
    }
    fn ci(&mut self, v: i64) -> ValId {
        let ty = self.ity();
        self.b.let_(Inst::Const { ty, lit: Lit::Int(v) })
    }
    fn bin(&mut self, op: BinOp, x: ValId, y: ValId) -> ValId {
        self.b.bin(op, x, y)
    }
    fn add(&mut self, x: ValId, y: ValId) -> ValId {
        self.bin(BinOp::FAdd, x, y)
    }
    fn sub(&mut self, x: ValId, y: ValId) -> ValId {
        self.bin(BinOp::FSub, x, y)
    }
    fn mul(&mut self, x: ValId, y: ValId) -> ValId {
        self.bin(BinOp::FMul, x, y)
    }
    fn div(&mut self, x: ValId, y: ValId) -> ValId {
        self.bin(BinOp::FDiv, x, y)
    }
    fn fma(&mut self, a: ValId, b: ValId, c: ValId) -> ValId {
        self.b.let_(Inst::Fma(a, b, c))
    }
    fn un(&mut self, op: UnOp, x: ValId) -> ValId {
        self.b.let_(Inst::Un(op, x))
    }
    fn cmp(&mut self, op: CmpOp, x: ValId, y: ValId) -> ValId {
        self.b.cmp(op, x, y)
    }
    fn sel(&mut self, c: ValId, x: ValId, y: ValId) -> ValId {
        self.b.select(c, x, y)
    }
    fn cast(&mut self, op: CastOp, x: ValId, to: Elem) -> ValId {
        let ty = Ty::vec(to, self.lanes);
        self.b.let_(Inst::Cast(op, x, ty))
    }
    /// `p[0]`, then `p = fma(p, x, k)` for the rest (Horner).
    fn horner(&mut self, coeffs: &[f32], x: ValId) -> ValId {
        let mut p = self.c(coeffs[0]);
        for k in &coeffs[1..] {
            let kc = self.c(*k);
            p = self.fma(p, x, kc);
        }
        p
    }
}

/// `e^x` (see the module doc for the error bound).
pub fn exp(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    let mut m = M { b, lanes };
    let l2e = m.c(LOG2E);
    let xl = m.mul(x, l2e);
    let n = m.un(UnOp::RoundEven, xl);
    let neg_n = m.un(UnOp::FNeg, n);
    let hi = m.c(LN2_HI);
    let r = m.fma(neg_n, hi, x);
    let lo = m.c(LN2_LO);
    let r = m.fma(neg_n, lo, r);
    let p = m.horner(&P, r);
    let r2 = m.mul(r, r);
    let pr = m.fma(p, r2, r);
    let one = m.c(1.0);
    let y = m.add(pr, one);
    // 2^n: (n + 127) << 23 as float bits (n is in [-126, 128] where the result is kept).
    let zero = m.c(0.0);
    let n0 = m.add(n, zero);
    let ni = m.cast(CastOp::FpToSi, n0, Elem::I32);
    let k127 = m.ci(127);
    let ni = m.bin(BinOp::Add, ni, k127);
    let k23 = m.ci(23);
    let ni = m.bin(BinOp::Shl, ni, k23);
    let scale = m.cast(CastOp::Bitcast, ni, Elem::F32);
    let e = m.mul(y, scale);
    let lo_c = m.c(LO);
    let below = m.cmp(CmpOp::FOlt, x, lo_c);
    let hi_c = m.c(HI);
    let above = m.cmp(CmpOp::FOgt, x, hi_c);
    let zero = m.c(0.0);
    let e = m.sel(below, zero, e);
    let inf = m.c(f32::INFINITY);
    let e = m.sel(above, inf, e);
    let nan = m.cmp(CmpOp::FUno, x, x);
    m.sel(nan, x, e)
}

/// `tanh x` (Cephes `tanhf`): for `|x| < 0.625` the odd polynomial
/// `x + x^3 P(x^2)`, else `sign(x) (1 - 2 / (e^(2|x|) + 1))` (which reaches 1 where
/// `e^(2|x|)` overflows); both are computed and one selected, so a loop of it vectorises.
/// Relative error within 3 ulp (`tests/fastmath.rs`); NaN stays NaN.
pub fn tanh(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    let a = b.let_(Inst::Un(UnOp::FAbs, x));
    let a2 = {
        let mut m = M { b, lanes };
        m.add(a, a)
    };
    let e = exp(b, a2, lanes);
    let mut m = M { b, lanes };
    let one = m.c(1.0);
    let ep1 = m.add(e, one);
    let two = m.c(2.0);
    let q = m.div(two, ep1);
    let big = m.sub(one, q);
    let big = m.bin(BinOp::CopySign, big, x);
    let z = m.mul(x, x);
    let p = m.horner(&TANH_P, z);
    let xz = m.mul(x, z);
    let small = m.fma(p, xz, x);
    // (-0 + p (-0) is +0: the sign is x's.)
    let small = m.bin(BinOp::CopySign, small, x);
    let bound = m.c(0.625);
    let lt = m.cmp(CmpOp::FOlt, a, bound);
    m.sel(lt, small, big)
}

/// Natural logarithm (see the module doc).
pub fn log(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    let mut m = M { b, lanes };
    let mn = m.c(f32::MIN_POSITIVE);
    let den = m.cmp(CmpOp::FOlt, x, mn);
    let scale = m.c(8_388_608.0);
    let xsc = m.mul(x, scale);
    let xs = m.sel(den, xsc, x);
    let bits = m.cast(CastOp::Bitcast, xs, Elem::I32);
    let k23 = m.ci(23);
    let sh = m.bin(BinOp::AShr, bits, k23);
    let ff = m.ci(0xff);
    let e = m.bin(BinOp::And, sh, ff);
    let k126 = m.ci(126);
    let e = m.bin(BinOp::Sub, e, k126);
    let (d23, d0) = (m.ci(23), m.ci(0));
    let dsub = m.sel(den, d23, d0);
    let e = m.bin(BinOp::Sub, e, dsub);
    let mant = m.ci(0x007f_ffff);
    let mb = m.bin(BinOp::And, bits, mant);
    let half_exp = m.ci(0x3f00_0000);
    let mbits = m.bin(BinOp::Or, mb, half_exp);
    let mm = m.cast(CastOp::Bitcast, mbits, Elem::F32);
    let sh = m.c(SQRT_HALF);
    let small = m.cmp(CmpOp::FOlt, mm, sh);
    let sz = m.cast(CastOp::Zext, small, Elem::I32);
    let e = m.bin(BinOp::Sub, e, sz);
    let mm2 = m.add(mm, mm);
    let m2 = m.sel(small, mm2, mm);
    let one = m.c(1.0);
    let f = m.sub(m2, one);
    let ef = m.cast(CastOp::SiToFp, e, Elem::F32);
    let z = m.mul(f, f);
    let p = m.horner(&LOG_P, f);
    let pf = m.mul(p, f);
    let y = m.mul(pf, z);
    let lo = m.c(LN2_LO);
    let y = m.fma(ef, lo, y);
    let mh = m.c(-0.5);
    let y = m.fma(z, mh, y);
    let fy = m.add(f, y);
    let hi = m.c(LN2_HI);
    let r = m.fma(ef, hi, fy);
    // NaN or negative: NaN; zero: -inf; +inf: +inf.
    let zero = m.c(0.0);
    let bad = m.cmp(CmpOp::FUlt, x, zero);
    let nan = m.c(f32::NAN);
    let r = m.sel(bad, nan, r);
    let zero = m.c(0.0);
    let is0 = m.cmp(CmpOp::FOeq, x, zero);
    let ninf = m.c(f32::NEG_INFINITY);
    let r = m.sel(is0, ninf, r);
    let inf = m.c(f32::INFINITY);
    let is_inf = m.cmp(CmpOp::FOeq, x, inf);
    m.sel(is_inf, x, r)
}

/// `sin x`, or `cos x` when `cos` (see the module doc).
pub fn sincos(b: &mut KernelBuilder, x: ValId, lanes: u32, cos: bool) -> ValId {
    let mut m = M { b, lanes };
    let a = m.un(UnOp::FAbs, x);
    let fopi = m.c(FOPI);
    let fa = m.mul(fopi, a);
    let j = m.cast(CastOp::FpToSi, fa, Elem::I32);
    let one = m.ci(1);
    let odd = m.bin(BinOp::And, j, one);
    let j = m.bin(BinOp::Add, j, odd);
    let y = m.cast(CastOp::SiToFp, j, Elem::F32);
    let mut r = a;
    for d in DP {
        let dc = m.c(d);
        let yd = m.mul(y, dc);
        r = m.sub(r, yd);
    }
    let z = m.mul(r, r);
    let (s0, s1) = (m.c(SIN_P[0]), m.c(SIN_P[1]));
    let ps = m.fma(s0, z, s1);
    let s2 = m.c(SIN_P[2]);
    let ps = m.fma(ps, z, s2);
    let psz = m.mul(ps, z);
    let s = m.fma(psz, r, r);
    let (c0, c1) = (m.c(COS_P[0]), m.c(COS_P[1]));
    let pc = m.fma(c0, z, c1);
    let c2 = m.c(COS_P[2]);
    let pc = m.fma(pc, z, c2);
    let pcz = m.mul(pc, z);
    let (mh, one_f) = (m.c(-0.5), m.c(1.0));
    let base = m.fma(z, mh, one_f);
    let co = m.fma(pcz, z, base);
    let one = m.ci(1);
    let jh = m.bin(BinOp::AShr, j, one);
    let cv = m.ci(cos as i64);
    let q = m.bin(BinOp::Add, jh, cv);
    let three = m.ci(3);
    let q = m.bin(BinOp::And, q, three);
    let one = m.ci(1);
    let q1 = m.bin(BinOp::And, q, one);
    let one = m.ci(1);
    let is_odd = m.cmp(CmpOp::Eq, q1, one);
    let v = m.sel(is_odd, co, s);
    let two = m.ci(2);
    let upper = m.cmp(CmpOp::Sge, q, two);
    let neg = if cos {
        upper
    } else {
        let zero = m.c(0.0);
        let xneg = m.cmp(CmpOp::FOlt, x, zero);
        m.bin(BinOp::Xor, upper, xneg)
    };
    let nv = m.un(UnOp::FNeg, v);
    let v = m.sel(neg, nv, v);
    let inf = m.c(f32::INFINITY);
    let finite = m.cmp(CmpOp::FOlt, a, inf);
    let nan = m.c(f32::NAN);
    m.sel(finite, v, nan)
}

/// `atan x` (see the module doc).
pub fn atan(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    let mut m = M { b, lanes };
    let a = m.un(UnOp::FAbs, x);
    let t3 = m.c(TAN_3PI_8);
    let big = m.cmp(CmpOp::FOgt, a, t3);
    let t1 = m.c(TAN_PI_8);
    let mid = m.cmp(CmpOp::FOgt, a, t1);
    let (p2, p4, zero) = (m.c(std::f32::consts::FRAC_PI_2), m.c(std::f32::consts::FRAC_PI_4), m.c(0.0));
    let inner = m.sel(mid, p4, zero);
    let base = m.sel(big, p2, inner);
    let m1 = m.c(-1.0);
    let t_big = m.div(m1, a);
    let one = m.c(1.0);
    let am1 = m.sub(a, one);
    let one = m.c(1.0);
    let ap1 = m.add(a, one);
    let t_mid = m.div(am1, ap1);
    let tm = m.sel(mid, t_mid, a);
    let t = m.sel(big, t_big, tm);
    let z = m.mul(t, t);
    let p = m.horner(&ATAN_P, z);
    let pz = m.mul(p, z);
    let f = m.fma(pz, t, t);
    let y = m.add(base, f);
    let y = m.bin(BinOp::CopySign, y, x);
    let nan = m.cmp(CmpOp::FUno, x, x);
    m.sel(nan, x, y)
}

/// `asin x` (see the module doc).
pub fn asin(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    let mut m = M { b, lanes };
    let a = m.un(UnOp::FAbs, x);
    let half = m.c(0.5);
    let high = m.cmp(CmpOp::FOgt, a, half);
    let (half, one) = (m.c(0.5), m.c(1.0));
    let oma = m.sub(one, a);
    let zh = m.mul(half, oma);
    let zl = m.mul(a, a);
    let z = m.sel(high, zh, zl);
    let root = m.un(UnOp::Sqrt, z);
    let t = m.sel(high, root, a);
    let p = m.horner(&ASIN_P, z);
    let pz = m.mul(p, z);
    let y = m.fma(pz, t, t);
    let p2 = m.c(std::f32::consts::FRAC_PI_2);
    let yy = m.add(y, y);
    let yh = m.sub(p2, yy);
    let y = m.sel(high, yh, y);
    let y = m.bin(BinOp::CopySign, y, x);
    let one = m.c(1.0);
    let bad = m.cmp(CmpOp::FUgt, a, one);
    let nan = m.c(f32::NAN);
    m.sel(bad, nan, y)
}

/// `erf x` (see the module doc for the error bound): `x P(x^2) / Q(x^2)` on `x` clamped to
/// `[-4, 4]`, where erf is 1 to f32 precision.
pub fn erf(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    let mut m = M { b, lanes };
    let (hi, lo) = (m.c(4.0), m.c(-4.0));
    // FMin/FMax drop a NaN operand: the NaN is put back at the end.
    let xc = m.bin(BinOp::FMin, x, hi);
    let xc = m.bin(BinOp::FMax, xc, lo);
    let t = m.mul(xc, xc);
    let p = m.horner(&ERF_NUM, t);
    let q = m.horner(&ERF_DEN, t);
    let xp = m.mul(xc, p);
    let y = m.div(xp, q);
    let nan = m.cmp(CmpOp::FUno, x, x);
    m.sel(nan, x, y)
}

/// GELU (erf form) `x/2 (1 + erf(x / sqrt 2))`, through [`erf`].
pub fn gelu(b: &mut KernelBuilder, x: ValId, lanes: u32) -> ValId {
    let xr = {
        let mut m = M { b: &mut *b, lanes };
        let r = m.c(std::f32::consts::FRAC_1_SQRT_2);
        m.mul(x, r)
    };
    let e = erf(b, xr, lanes);
    let mut m = M { b, lanes };
    let half = m.c(0.5);
    let hx = m.mul(half, x);
    let one = m.c(1.0);
    let s = m.add(one, e);
    m.mul(hx, s)
}

/// The hyperbolic functions from `exp` and `log`: `sinh` by its Taylor series below 1/2,
/// `asinh` and `acosh` as `log(2|x|)` above 1e18 (where `x^2` would overflow).
fn hyperbolic(b: &mut KernelBuilder, name: &str, x: ValId) -> Option<ValId> {
    let a = b.let_(Inst::Un(UnOp::FAbs, x));
    let c =
        |b: &mut KernelBuilder, v: f32| b.let_(Inst::Const { ty: Ty::scalar(Elem::F32), lit: Lit::Float(v as f64) });
    Some(match name {
        "sinh" | "cosh" => {
            let e = exp(b, a, 1);
            let one = c(b, 1.0);
            let inv = b.bin(BinOp::FDiv, one, e);
            let half = c(b, 0.5);
            if name == "cosh" {
                let s = b.bin(BinOp::FAdd, e, inv);
                return Some(b.bin(BinOp::FMul, half, s));
            }
            let d = b.bin(BinOp::FSub, e, inv);
            let big = b.bin(BinOp::FMul, half, d);
            // x + x^3/6 + x^5/120 + x^7/5040 (error below 6e-9 for |x| < 1/2).
            let z = b.bin(BinOp::FMul, a, a);
            let mut p = c(b, 1.0 / 5040.0);
            for k in [1.0 / 120.0, 1.0 / 6.0, 1.0] {
                let pz = b.bin(BinOp::FMul, p, z);
                let kc = c(b, k);
                p = b.bin(BinOp::FAdd, pz, kc);
            }
            let small = b.bin(BinOp::FMul, p, a);
            let lt = b.cmp(CmpOp::FOlt, a, half);
            let r = b.select(lt, small, big);
            b.bin(BinOp::CopySign, r, x)
        }
        "asinh" | "acosh" => {
            let z = b.bin(BinOp::FMul, a, a);
            let one = c(b, 1.0);
            let d = b.bin(if name == "asinh" { BinOp::FAdd } else { BinOp::FSub }, z, one);
            let root = b.let_(Inst::Un(UnOp::Sqrt, d));
            let s = b.bin(BinOp::FAdd, a, root);
            let r = log(b, s, 1);
            let two = c(b, 2.0);
            let a2 = b.bin(BinOp::FMul, a, two);
            let far = log(b, a2, 1);
            let huge = c(b, 1e18);
            let lt = b.cmp(CmpOp::FOlt, huge, a);
            let r = b.select(lt, far, r);
            if name == "asinh" {
                return Some(b.bin(BinOp::CopySign, r, x));
            }
            // acosh: NaN below 1 (and for NaN, through the comparison).
            let one = c(b, 1.0);
            let ok = b.cmp(CmpOp::FOge, x, one);
            let nan = c(b, f32::NAN);
            b.select(ok, r, nan)
        }
        "atanh" => {
            // atanh x = log((1 + x) / (1 - x)) / 2
            let one = c(b, 1.0);
            let num = b.bin(BinOp::FAdd, one, x);
            let one = c(b, 1.0);
            let den = b.bin(BinOp::FSub, one, x);
            let q = b.bin(BinOp::FDiv, num, den);
            let l = log(b, q, 1);
            let half = c(b, 0.5);
            b.bin(BinOp::FMul, half, l)
        }
        _ => return None,
    })
}

/// `powf` as `e^(y log|x|)`, with C's rules for a negative base (an integer exponent
/// gives the sign of its parity, another exponent NaN) and `pow(x, 0) = pow(1, y) = 1`.
fn pow(b: &mut KernelBuilder, x: ValId, y: ValId) -> ValId {
    let c =
        |b: &mut KernelBuilder, v: f32| b.let_(Inst::Const { ty: Ty::scalar(Elem::F32), lit: Lit::Float(v as f64) });
    let ax = b.let_(Inst::Un(UnOp::FAbs, x));
    let l = log(b, ax, 1);
    let yl = b.bin(BinOp::FMul, y, l);
    let r = exp(b, yl, 1);
    let yi = b.let_(Inst::Un(UnOp::RoundEven, y));
    let integer = b.cmp(CmpOp::FOeq, yi, y);
    let two = c(b, 2.0);
    let rem = b.bin(BinOp::FRem, y, two);
    let zero = c(b, 0.0);
    let nz = b.cmp(CmpOp::FOne, rem, zero);
    let odd = b.bin(BinOp::And, integer, nz);
    let nr = b.let_(Inst::Un(UnOp::FNeg, r));
    let neg = b.select(odd, nr, r);
    let nan = c(b, f32::NAN);
    let neg = b.select(integer, neg, nan);
    let zero = c(b, 0.0);
    let xneg = b.cmp(CmpOp::FOlt, x, zero);
    let r = b.select(xneg, neg, r);
    let zero = c(b, 0.0);
    let y0 = b.cmp(CmpOp::FOeq, y, zero);
    let one = c(b, 1.0);
    let x1 = b.cmp(CmpOp::FOeq, x, one);
    let unit = b.bin(BinOp::Or, y0, x1);
    let one = c(b, 1.0);
    b.select(unit, one, r)
}

/// The portable f32 implementation of C math function `name` (`expf`, `tanhf`,
/// `powf`...) on scalar arguments, or `None` when dlc has none (the caller reports it).
/// Functions with an exact hardware or LLVM form (sqrt, fabs, floor...) are the
/// caller's.
pub fn call(b: &mut KernelBuilder, name: &str, args: &[ValId]) -> Option<ValId> {
    let c =
        |b: &mut KernelBuilder, v: f32| b.let_(Inst::Const { ty: Ty::scalar(Elem::F32), lit: Lit::Float(v as f64) });
    let base = name.strip_prefix("dlc.").unwrap_or(name);
    let base = base.strip_suffix('f').unwrap_or(base);
    if let ("pow", [x, y]) = (base, args) {
        return Some(pow(b, *x, *y));
    }
    let [x] = args else { return None };
    let x = *x;
    Some(match base {
        "exp" => exp(b, x, 1),
        "log" => log(b, x, 1),
        "erf" => erf(b, x, 1),
        "sin" => sincos(b, x, 1, false),
        "cos" => sincos(b, x, 1, true),
        "tan" => {
            let s = sincos(b, x, 1, false);
            let co = sincos(b, x, 1, true);
            b.bin(BinOp::FDiv, s, co)
        }
        "atan" => atan(b, x, 1),
        "asin" => asin(b, x, 1),
        // acos x = pi/2 - asin x: absolute error a few 1e-7.
        "acos" => {
            let p2 = c(b, std::f32::consts::FRAC_PI_2);
            let s = asin(b, x, 1);
            b.bin(BinOp::FSub, p2, s)
        }
        "tanh" => tanh(b, x, 1),
        other => return hyperbolic(b, other, x),
    })
}
