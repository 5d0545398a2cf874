//! ONNX `TensorProto` to [`TensorData`]: raw_data, typed fields and external data files.
use dlc_ir::{DType, TensorData, TensorType};
use onnx_protobuf::tensor_proto::DataLocation;
use onnx_protobuf::TensorProto;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Maps an ONNX element type code to a dtype.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::BF16,
        17 => DType::F8E4M3FN,
        18 => DType::F8E4M3FNUZ,
        19 => DType::F8E5M2,
        20 => DType::F8E5M2FNUZ,
        21 => DType::U4,
        22 => DType::I4,
        23 => DType::F4E2M1,
        24 => DType::F8E8M0,
        25 => DType::U2,
        26 => DType::I2,
        _ => return None,
    })
}

/// Human name of an ONNX element type code, for errors.
pub fn onnx_type_name(code: i32) -> String {
    match code {
        8 => "string".into(),
        14 => "complex64".into(),
        15 => "complex128".into(),
        c => dtype_from_onnx(c).map(|d| d.name().to_string()).unwrap_or_else(|| format!("type code {c}")),
    }
}

/// Converts an initializer or Constant value; `base` is the model's directory, against
/// which external data locations resolve.
pub fn tensor_from_proto(t: &TensorProto, base: &Path) -> Result<TensorData, String> {
    let dtype = dtype_from_onnx(t.data_type)
        .ok_or_else(|| format!("tensor '{}' has unsupported element type {}", t.name, onnx_type_name(t.data_type)))?;
    let dims: Vec<u64> = t
        .dims
        .iter()
        .map(|&d| u64::try_from(d).map_err(|_| format!("tensor '{}' has negative dim {d}", t.name)))
        .collect::<Result<_, _>>()?;
    let ty = TensorType::fixed(dtype, &dims);
    let numel = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let want = numel
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .ok_or_else(|| format!("tensor '{}' of shape {dims:?} is too large", t.name))?;
    let numel = want / dtype.size() as u64;
    // 4- and 2-bit types are packed in the file (low bits first) and one per byte in dlc.
    let bits = packed_bits(dtype);
    let stored = match bits {
        Some(b) => numel
            .checked_mul(b as u64)
            .ok_or_else(|| format!("tensor '{}' of shape {dims:?} is too large", t.name))?
            .div_ceil(8),
        None => want,
    };
    let bytes: Vec<u8> = if t.data_location.enum_value() == Ok(DataLocation::EXTERNAL) {
        read_external(t, base, stored)?
    } else if !t.raw_data.is_empty() || numel == 0 {
        t.raw_data.clone()
    } else {
        typed_bytes(t, dtype)
    };
    if bytes.len() as u64 != stored {
        return Err(format!("tensor '{}' of type {ty} needs {stored} bytes of data, has {}", t.name, bytes.len()));
    }
    let bytes = match bits {
        Some(b) => unpack(&bytes, b, numel as usize, dtype.is_signed_int()),
        None => bytes,
    };
    TensorData::new(ty, bytes.into()).ok_or_else(|| format!("tensor '{}' is malformed", t.name))
}

/// Encodes the typed repeated fields of a TensorProto as little-endian bytes.
fn typed_bytes(t: &TensorProto, dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::U64 => t.uint64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::U32 => t.uint64_data.iter().flat_map(|&v| (v as u32).to_le_bytes()).collect(),
        DType::I32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        // 16-bit types (f16 and bf16 as raw bits) are stored widened in int32_data.
        DType::I16 | DType::U16 | DType::F16 | DType::BF16 => {
            t.int32_data.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect()
        }
        // One byte per int32: 8-bit types, and the packed bytes of 4- and 2-bit types.
        DType::I8
        | DType::U8
        | DType::Bool
        | DType::F8E4M3FN
        | DType::F8E4M3FNUZ
        | DType::F8E5M2
        | DType::F8E5M2FNUZ
        | DType::F8E8M0
        | DType::F4E2M1
        | DType::I4
        | DType::U4
        | DType::I2
        | DType::U2 => t.int32_data.iter().map(|&v| v as u8).collect(),
    }
}

/// Bits per element of the types ONNX packs several to a byte.
fn packed_bits(d: DType) -> Option<u32> {
    match d {
        DType::F4E2M1 => Some(4),
        d => d.narrow_int_bits(),
    }
}

/// Unpacks `n` elements of `bits` bits (lowest bits first), sign-extending when `signed`.
pub fn unpack(packed: &[u8], bits: u32, n: usize, signed: bool) -> Vec<u8> {
    let per_byte = (8 / bits) as usize;
    let mask = (1u8 << bits) - 1;
    (0..n)
        .map(|i| {
            let v = (packed[i / per_byte] >> ((i % per_byte) as u32 * bits)) & mask;
            if signed {
                (((v << (8 - bits)) as i8) >> (8 - bits)) as u8
            } else {
                v
            }
        })
        .collect()
}

fn read_external(t: &TensorProto, base: &Path, want: u64) -> Result<Vec<u8>, String> {
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let location =
        get("location").ok_or_else(|| format!("tensor '{}' has external data without a location", t.name))?;
    let parse = |k: &str| -> Result<Option<u64>, String> {
        get(k)
            .map(|v| v.parse::<u64>().map_err(|_| format!("tensor '{}': bad external data {k} '{v}'", t.name)))
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?.unwrap_or(want);
    if length != want {
        return Err(format!("tensor '{}': external data length {length} but the tensor needs {want} bytes", t.name));
    }
    let path = dlc_ir::paths::confined(base, location)
        .map_err(|e| format!("tensor '{}': external data location '{location}': {e}", t.name))?;
    let mut f = std::fs::File::open(&path)
        .map_err(|e| format!("tensor '{}': cannot open external data '{}': {e}", t.name, path.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "tensor '{}': external data '{}' has {size} bytes, needs offset {offset} + length {length}",
            t.name,
            path.display(),
        ));
    }
    let mut buf = vec![0u8; length as usize];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| format!("tensor '{}': reading '{}': {e}", t.name, path.display()))?;
    Ok(buf)
}

#[cfg(test)]
mod fuzz_found {
    /// Found by the onnx_import fuzz target: a packed 4-bit tensor whose element count
    /// times 4 bits overflows u64 (it panicked in a debug build).
    #[test]
    fn packed_tensors_too_large_for_their_bits_are_errors() {
        let mut t = onnx_protobuf::TensorProto::new();
        t.name = "w".into();
        t.data_type = 22; // int4
        t.dims = vec![1 << 62, 3];
        let e = super::tensor_from_proto(&t, std::path::Path::new(".")).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }
}
