//! Random numbers (ONNX RandomUniform(Like), RandomNormal(Like), and Bernoulli through
//! them): a counter-based generator, so element `i` of a result depends only on the
//! seed and `i` (any order, any thread, the same on every target). docs/random.md
//! describes it; [`uniform_bits`] is its one definition in Rust.
use super::{ensure, Infer, OpMeta};
use crate::{op, DType, Dim, IrError, Shape, TensorType};

op! {
    /// Random values of `dtype` (a float type): uniform in `[a, b)` (`normal` false) or
    /// normal with mean `a` and standard deviation `b`. The shape is `dims`
    /// (`;`-separated dim expressions) with no operand, or the operand's (whose values
    /// are not read). `key` is the generator's 64-bit key (from the seed: [`seed_key`]).
    Random = "random", operands 0..=1 { normal: bool, a: f64, b: f64, key: i64, dtype: crate::DType, dims: String }
}

impl Infer for Random {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        ensure(matches!(self.dtype, DType::F32 | DType::F64 | DType::F16), node, op, || {
            format!("random values of {} are not supported (f32, f64, f16)", self.dtype)
        })?;
        let shape = match inputs.first() {
            Some(t) => t.shape.clone(),
            None => Shape(
                self.dims
                    .split(';')
                    .filter(|d| !d.trim().is_empty())
                    .map(|d| dlc_sym::parse(d.trim()).ok().and_then(Dim::from_expr))
                    .collect::<Option<Vec<Dim>>>()
                    .ok_or_else(|| IrError::shape(node, op, format!("dims '{}' are not dims", self.dims)))?,
            ),
        };
        Ok(vec![TensorType { dtype: self.dtype, shape }])
    }
}

/// SplitMix64's finaliser: a bijection of 64-bit words that mixes every bit.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The odd constant the counter steps by (2^64 / golden ratio).
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The key of ONNX's float `seed` (its f32 bits, mixed); without one, of a name (the
/// node's: FNV-1a of its bytes, mixed), so a model without seeds gives the same values on
/// every run (docs/random.md).
pub fn seed_key(seed: Option<f32>, name: &str) -> i64 {
    let raw = match seed {
        Some(s) => u64::from(s.to_bits()) | (1 << 32),
        None => name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)),
    };
    mix64(raw) as i64
}

/// Stream `s`'s 64 random bits for element `i` under `key`: `mix64(key + (2i + s + 1)
/// * GOLDEN)` (a uniform uses stream 0; a normal streams 0 and 1).
pub fn uniform_bits(key: i64, i: u64, s: u64) -> u64 {
    mix64((key as u64).wrapping_add((2 * i + s + 1).wrapping_mul(GOLDEN)))
}

/// A uniform in `[0, 1)` from 64 random bits: the top 24 bits for f32 and f16, the top
/// 53 for f64, times 2^-24 or 2^-53 (exact).
pub fn unit(bits: u64, dtype: DType) -> f64 {
    match dtype {
        DType::F64 => (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64),
        _ => (bits >> 40) as f64 * (1.0 / (1u64 << 24) as f64),
    }
}

/// Element `i` of a [`Random`] in f64 (the kernel computes it in the dtype's precision,
/// f32 for f16): uniform `a + (b - a) * u0`; normal by Box-Muller,
/// `a + b * sqrt(-2 ln(1 - u0)) * cos(2 pi u1)`.
pub fn value(op: &Random, i: u64) -> f64 {
    let u0 = unit(uniform_bits(op.key, i, 0), op.dtype);
    if !op.normal {
        return op.a + (op.b - op.a) * u0;
    }
    let u1 = unit(uniform_bits(op.key, i, 1), op.dtype);
    op.a + op.b * (-2.0 * (1.0 - u0).ln()).sqrt() * (std::f64::consts::TAU * u1).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_values_are_fixed_and_distributed() {
        // Fixed values: a change to the generator changes what models compute.
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161D_100B_05E5);
        let op =
            |normal, dtype| Random { normal, a: 0.0, b: 1.0, key: seed_key(Some(7.0), ""), dtype, dims: String::new() };
        let n = 100_000u64;
        for dtype in [DType::F32, DType::F64] {
            let u = op(false, dtype);
            let xs: Vec<f64> = (0..n).map(|i| value(&u, i)).collect();
            assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
            let mean = xs.iter().sum::<f64>() / n as f64;
            assert!((mean - 0.5).abs() < 0.005, "{mean}");
            let g = op(true, dtype);
            let ys: Vec<f64> = (0..n).map(|i| value(&g, i)).collect();
            let m = ys.iter().sum::<f64>() / n as f64;
            let var = ys.iter().map(|y| (y - m) * (y - m)).sum::<f64>() / n as f64;
            assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{m} {var}");
        }
        assert_ne!(seed_key(Some(1.0), ""), seed_key(Some(2.0), ""));
        assert_ne!(seed_key(None, "a"), seed_key(None, "b"));
    }
}
