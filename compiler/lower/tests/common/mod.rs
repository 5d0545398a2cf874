//! Test data shared by the kir interpreter checks.
use dlc_ir::{DType, TensorData, TensorType};
use std::sync::Arc;

/// Floats in [-2, 2) from a seed, for arithmetic ops.
pub fn floats(t: &TensorType, seed: u64) -> TensorData {
    let n = t.shape.numel().unwrap() as usize;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 4000) as f32 / 1000.0 - 2.0
        })
        .collect();
    TensorData::from_f32(&t.shape.as_fixed().unwrap(), &v).unwrap()
}

pub fn i64s(dims: &[u64], v: &[i64]) -> TensorData {
    let t = TensorType::fixed(DType::I64, dims);
    TensorData::new(t, Arc::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())).unwrap()
}
