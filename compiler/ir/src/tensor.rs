use crate::{DType, TensorType};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// A constant tensor: weights, biases, folded constants.
///
/// The bytes are little-endian, row-major and shared: cloning is cheap and never copies.
#[derive(Clone, PartialEq)]
pub struct TensorData {
    ty: TensorType,
    bytes: Arc<[u8]>,
}

impl TensorData {
    /// Wraps `bytes`; returns `None` when the type has symbolic dims or the length is wrong.
    pub fn new(ty: TensorType, bytes: Arc<[u8]>) -> Option<TensorData> {
        let want = ty.size_bytes()?;
        (want == bytes.len() as u64).then_some(TensorData { ty, bytes })
    }

    /// A tensor of f32 values.
    pub fn from_f32(dims: &[u64], values: &[f32]) -> Option<TensorData> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorData::new(TensorType::fixed(DType::F32, dims), bytes.into())
    }

    /// A tensor of i64 values.
    pub fn from_i64(dims: &[u64], values: &[i64]) -> Option<TensorData> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        TensorData::new(TensorType::fixed(DType::I64, dims), bytes.into())
    }

    /// The type (always of known extents).
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.ty.dtype.size()
    }

    /// The values as f32 when the dtype is f32.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.ty.dtype == DType::F32)
            .then(|| self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect())
    }

    /// The values as i64 when the dtype is an integer type (widened).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        Some(match self.ty.dtype {
            DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            DType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            DType::I16 => b.chunks_exact(2).map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64).collect(),
            DType::I8 => b.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&v| v as i64).collect(),
            _ => return None,
        })
    }

    /// The values as f64 when the dtype is f32, f64 or an integer type (widened).
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        let b = &self.bytes;
        Some(match self.ty.dtype {
            DType::F32 => b.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))).collect(),
            DType::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            _ => self.to_i64()?.into_iter().map(|v| v as f64).collect(),
        })
    }

    /// SHA-256 of dtype, shape and bytes, as lowercase hex.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.ty.to_string().as_bytes());
        h.update(&self.bytes);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TensorData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TensorData({}, {} bytes)", self.ty, self.bytes.len())
    }
}
