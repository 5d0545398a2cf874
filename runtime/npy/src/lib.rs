//! `.npy` files in and out, through the npyz crate.
use anyhow::{bail, Context, Result};
use dlc_runtime::Tensor;
use npyz::{DType, TypeChar, WriterBuilder};
use std::path::Path;

/// Reads an `.npy` file into a tensor (little-endian, C order).
pub fn read(path: &Path) -> Result<Tensor> {
    // Only regular files: a device or a pipe (`/dev/zero`) could be read forever.
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    if !meta.is_file() {
        bail!("'{}' is not a regular file; inputs are .npy files", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read '{}'", path.display()))?;
    read_bytes(&bytes, path)
}

/// Decodes the bytes of an `.npy` file; `path` names it in errors.
pub fn read_bytes(bytes: &[u8], path: &Path) -> Result<Tensor> {
    check_header(bytes).with_context(|| format!("'{}' is not a valid .npy file", path.display()))?;
    let npy = npyz::NpyFile::new(bytes).with_context(|| format!("'{}' is not a valid .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!("'{}': Fortran-order arrays are not supported; save with np.ascontiguousarray", path.display());
    }
    let shape = npy.shape().to_vec();
    let DType::Plain(ts) = npy.dtype() else {
        bail!("'{}': structured arrays are not supported", path.display());
    };
    let size = ts.size_field();
    let dtype = match (ts.type_char(), size) {
        (TypeChar::Float, 2) => "f16",
        (TypeChar::Float, 4) => "f32",
        (TypeChar::Float, 8) => "f64",
        (TypeChar::Int, 1) => "i8",
        (TypeChar::Int, 2) => "i16",
        (TypeChar::Int, 4) => "i32",
        (TypeChar::Int, 8) => "i64",
        (TypeChar::Uint, 1) => "u8",
        (TypeChar::Uint, 2) => "u16",
        (TypeChar::Uint, 4) => "u32",
        (TypeChar::Uint, 8) => "u64",
        (TypeChar::Bool, 1) => "bool",
        // numpy has no bf16; ml_dtypes' bfloat16 arrays are saved as 2-byte voids.
        (TypeChar::RawData, 2) => "bf16",
        // ml_dtypes' 8- and 4-bit types are saved as 1-byte voids: raw codes, one per byte.
        (TypeChar::RawData, 1) => "raw8",
        // numpy's fixed-width strings: a string tensor (docs/strings.md).
        (TypeChar::UnicodeStr | TypeChar::ByteStr, _) => return read_strings(bytes, path, &shape, &ts),
        _ => bail!("'{}': dtype {ts} is not supported", path.display()),
    };
    // The declared shape must fit in the file (checked arithmetic) before anything is
    // allocated for it: a header claiming 2^60 elements is an error, not an abort.
    let elem = if dtype == "raw8" || dtype == "bool" { 1 } else { dlc_artifact::dtype_size(dtype).unwrap_or(1) as u64 };
    let need = shape.iter().try_fold(elem, |a, &d| a.checked_mul(d));
    let Some(need) = need.filter(|&n| n <= bytes.len() as u64) else {
        bail!(
            "'{}': the header declares shape {shape:?}, more data than the file's {} bytes",
            path.display(),
            bytes.len()
        );
    };
    let ctx = || format!("reading data of '{}'", path.display());
    let data: Vec<u8> = match dtype {
        "f16" => npy.into_vec::<half::f16>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        // The data of a C-order .npy file is its last bytes.
        "bf16" => bytes[bytes.len() - need as usize..].to_vec(),
        "f32" => npy.into_vec::<f32>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "f64" => npy.into_vec::<f64>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "i8" => npy.into_vec::<i8>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "i16" => npy.into_vec::<i16>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "i32" => npy.into_vec::<i32>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "i64" => npy.into_vec::<i64>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "u8" => npy.into_vec::<u8>().with_context(ctx)?,
        "raw8" => bytes[bytes.len() - need as usize..].to_vec(),
        "u16" => npy.into_vec::<u16>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "u32" => npy.into_vec::<u32>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "u64" => npy.into_vec::<u64>().with_context(ctx)?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => npy.into_vec::<bool>().with_context(ctx)?.iter().map(|&v| v as u8).collect(),
    };
    Ok(Tensor { dtype: dtype.to_string(), shape, data })
}

/// A numpy string array (`<U8`: UTF-32 code points, `|S8`: bytes, each element
/// padded with NULs to the width, which numpy strips) as a string tensor.
fn read_strings(bytes: &[u8], path: &Path, shape: &[u64], ts: &npyz::TypeStr) -> Result<Tensor> {
    let wide = ts.type_char() == TypeChar::UnicodeStr;
    let width = ts.size_field() * if wide { 4 } else { 1 };
    let need = shape.iter().try_fold(width, |a, &d| a.checked_mul(d));
    let Some(need) = need.filter(|&n| n <= bytes.len() as u64) else {
        bail!(
            "'{}': the header declares shape {shape:?}, more data than the file's {} bytes",
            path.display(),
            bytes.len()
        );
    };
    if wide && ts.endianness() == npyz::Endianness::Big {
        bail!("'{}': big-endian strings are not supported", path.display());
    }
    let data = &bytes[bytes.len() - need as usize..];
    let (count, width) = (shape.iter().product::<u64>() as usize, width as usize);
    if width == 0 && count > 1 << 24 {
        bail!("'{}': {count} empty strings is more than dlc reads", path.display());
    }
    let mut elems = Vec::with_capacity(count);
    for i in 0..count {
        let e = &data[i * width..(i + 1) * width];
        let s = if wide {
            let mut s = String::new();
            let units: Vec<u32> = e.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect();
            let used = units.iter().rposition(|&u| u != 0).map_or(0, |p| p + 1);
            for &u in &units[..used] {
                let c = char::from_u32(u)
                    .with_context(|| format!("'{}': element {i} holds {u:#x}, not a character", path.display()))?;
                s.push(c);
            }
            s
        } else {
            let used = e.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            String::from_utf8(e[..used].to_vec())
                .with_context(|| format!("'{}': element {i} is not UTF-8", path.display()))?
        };
        elems.push(s);
    }
    Ok(Tensor::from_strings(shape, &elems))
}

/// Writes a string tensor as a numpy `<U` array (as wide as its longest element).
fn write_strings(path: &Path, t: &Tensor) -> Result<()> {
    let elems = t.to_strings().with_context(|| format!("writing '{}': a malformed string tensor", path.display()))?;
    let width = elems.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(1);
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<U{width}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for s in &elems {
        let mut n = 0;
        for c in s.chars() {
            out.extend_from_slice(&(c as u32).to_le_bytes());
            n += 1;
        }
        out.resize(out.len() + 4 * (width - n), 0);
    }
    std::fs::write(path, out).with_context(|| format!("creating '{}'", path.display()))
}

/// A cheap look at the header before npyz parses it: numpy writes a flat dict (`{'descr':
/// '<f4', 'fortran_order': False, 'shape': (2, 3), }`), nested at most two deep, and
/// npyz's parser takes exponential time on deeply nested junk (found by fuzzing).
fn check_header(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("no .npy magic");
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => bail!("unknown .npy version {v}"),
    };
    let header = bytes.get(start..start.saturating_add(len)).ok_or_else(|| anyhow::anyhow!("truncated header"))?;
    let (mut depth, mut deepest) = (0i32, 0i32);
    for &c in header {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    if deepest > 3 {
        bail!("the header nests {deepest} deep; numpy writes a flat dict");
    }
    // npyz multiplies the shape's dims (and a sub-array dtype's) unchecked, which panics
    // in a debug build and wraps in a release one when the product overflows (found by
    // fuzzing): every number outside quotes is a dim, and their product must fit in u64.
    let (mut quote, mut number, mut product) = (None, None::<u64>, 1u64);
    for &c in header.iter().chain(b" ") {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(c),
            (None, b'0'..=b'9') => {
                let digit = u64::from(c - b'0');
                number = number.unwrap_or(0).checked_mul(10).and_then(|n| n.checked_add(digit));
                if number.is_none() {
                    bail!("a dim in the header's shape does not fit in 64 bits");
                }
                continue;
            }
            _ => {}
        }
        if let Some(n) = number.take() {
            product = product
                .checked_mul(n)
                .ok_or_else(|| anyhow::anyhow!("the header's shape has more than 2^64 elements"))?;
        }
    }
    Ok(())
}

fn write_typed<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    values: impl Iterator<Item = T>,
) -> Result<()> {
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating '{}'", path.display()))?);
    let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut file).begin_nd()?;
    w.extend(values)?;
    w.finish()?;
    Ok(())
}

/// Writes a tensor as `.npy`.
pub fn write(path: &Path, t: &Tensor) -> Result<()> {
    let d = &t.data;
    macro_rules! le {
        ($ty:ty, $n:literal) => {
            write_typed(path, &t.shape, d.chunks_exact($n).map(|c| <$ty>::from_le_bytes(c.try_into().unwrap())))
        };
    }
    match t.dtype.as_str() {
        "f16" => le!(half::f16, 2),
        // Raw bf16 bit patterns (numpy has no bf16 type).
        "bf16" => le!(u16, 2),
        "f32" => le!(f32, 4),
        "f64" => le!(f64, 8),
        "i8" => le!(i8, 1),
        "i16" => le!(i16, 2),
        "i32" => le!(i32, 4),
        "i64" => le!(i64, 8),
        "u8" => le!(u8, 1),
        "u16" => le!(u16, 2),
        "u32" => le!(u32, 4),
        "u64" => le!(u64, 8),
        "bool" => write_typed(path, &t.shape, d.iter().map(|&b| b != 0)),
        // 8- and 4-bit floats as their raw codes; 4- and 2-bit integers as their values.
        "f8e4m3fn" | "f8e4m3fnuz" | "f8e5m2" | "f8e5m2fnuz" | "f4e2m1" | "f8e8m0" | "u4" | "u2" => le!(u8, 1),
        "i4" | "i2" => le!(i8, 1),
        dlc_runtime::STRING => write_strings(path, t),
        other => bail!("cannot write dtype {other} as .npy"),
    }
}

/// Gives `t` the model's dtype `want` when the file holds the same bytes under another
/// name: bf16 as u16, the 8- and 4-bit floats as raw codes (u8 or 1-byte void), the 4-
/// and 2-bit integers as i8/u8 values (checked to be in range).
pub fn adapt(mut t: Tensor, want: &str, name: &str) -> Result<Tensor> {
    if t.dtype == want {
        return Ok(t);
    }
    let codes = matches!(t.dtype.as_str(), "u8" | "raw8");
    let ok = match want {
        "bf16" => t.dtype == "u16",
        "f8e4m3fn" | "f8e4m3fnuz" | "f8e5m2" | "f8e5m2fnuz" | "f8e8m0" => codes,
        "f4e2m1" => codes && t.data.iter().all(|&b| b < 16),
        "i4" | "i2" => {
            let bits = if want == "i4" { 4 } else { 2 };
            let lim = 1i8 << (bits - 1);
            if t.dtype == "raw8" {
                // ml_dtypes' int4/int2 bytes: the two's-complement code in the low bits.
                if t.data.iter().any(|&b| b >> bits != 0) {
                    bail!("input '{name}': bytes are not {want} codes");
                }
                t.data.iter_mut().for_each(|b| *b = (((*b << (8 - bits)) as i8) >> (8 - bits)) as u8);
                true
            } else if t.dtype == "i8" {
                if !t.data.iter().all(|&b| (-lim..lim).contains(&(b as i8))) {
                    bail!("input '{name}': {want} values must lie in [{}, {}]", -lim, lim - 1);
                }
                true
            } else {
                false
            }
        }
        "u4" | "u2" => {
            let lim = if want == "u4" { 16 } else { 4 };
            if codes && !t.data.iter().all(|&b| b < lim) {
                bail!("input '{name}': {want} values must lie in [0, {}]", lim - 1);
            }
            codes
        }
        _ => false,
    };
    if ok {
        t.dtype = want.to_string();
    }
    Ok(t)
}

/// The file name for output `name`: characters outside `[A-Za-z0-9._-]` become `_`.
pub fn file_name(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    format!("{s}.npy")
}

#[cfg(test)]
mod tests {
    use super::adapt;
    use dlc_runtime::Tensor;

    fn t(dtype: &str, data: &[u8]) -> Tensor {
        Tensor { dtype: dtype.into(), shape: vec![data.len() as u64], data: data.to_vec() }
    }

    #[test]
    fn narrow_types_are_taken_from_their_numpy_stand_ins() {
        // ml_dtypes int4 bytes hold the two's-complement nibble: 0xF is -1.
        assert_eq!(adapt(t("raw8", &[0xF, 7]), "i4", "x").unwrap().data, vec![0xFF, 7]);
        assert_eq!(adapt(t("i8", &[0xF8]), "i4", "x").unwrap().dtype, "i4");
        let e = adapt(t("i8", &[9]), "i4", "x").unwrap_err().to_string();
        assert!(e.contains("input 'x': i4 values must lie in [-8, 7]"), "{e}");
        assert!(adapt(t("u8", &[16]), "u4", "x").is_err());
        assert_eq!(adapt(t("u8", &[0x7E]), "f8e4m3fn", "x").unwrap().dtype, "f8e4m3fn");
        // Anything else is left for the runtime's dtype check to report.
        assert_eq!(adapt(t("f32", &[0; 4]), "f8e4m3fn", "x").unwrap().dtype, "f32");
    }

    #[test]
    fn string_arrays_are_read_and_written() {
        // numpy's `np.save(f, np.array(["ab", "", "été"]))`: UTF-32, padded with NULs.
        let dir = std::env::temp_dir().join(format!("dlc-npy-strings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Tensor::from_strings(&[3], &["ab", "", "été"]);
        let path = dir.join("s.npy");
        super::write(&path, &t).unwrap();
        let back = super::read(&path).unwrap();
        assert_eq!(back.to_strings().unwrap(), vec!["ab", "", "été"]);
        assert_eq!(back.shape, vec![3]);
        // Byte strings (`|S2`, and `<a2` as the fuzzer wrote it): UTF-8, NULs stripped.
        for descr in ["|S2", "<a2"] {
            let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}");
            while (h.len() + 11) % 64 != 0 {
                h.push(' ');
            }
            h.push('\n');
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend_from_slice(b"x\0yz");
            let t = super::read_bytes(&bytes, std::path::Path::new("b.npy")).unwrap();
            assert_eq!(t.to_strings().unwrap(), vec!["x", "yz"], "{descr}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn output_names_are_sanitised() {
        assert_eq!(super::file_name("logits"), "logits.npy");
        assert_eq!(super::file_name("out/0:1 x"), "out_0_1_x.npy");
        assert_eq!(super::file_name("a.b-c_d"), "a.b-c_d.npy");
    }
}

#[cfg(test)]
mod fuzz_found {
    use std::path::Path;

    /// Found by the npy fuzz target: a header whose shape's element count overflows u64
    /// (14984508623109546893 x 3) with leading zeros in the number.
    #[test]
    fn overflowing_shapes_are_errors() {
        let mut bytes = b"\x93NUMPY\x01\x00v\x00{'descr': '<f2', 'fortran_order': False, 'shape': (0000000000000000014984508623109546893, 3), }".to_vec();
        bytes.resize(128, b' ');
        bytes[127] = b'\n';
        bytes[8] = 118;
        let err = super::read_bytes(&bytes, Path::new("x.npy")).unwrap_err();
        assert!(format!("{err:#}").contains("x.npy"), "{err:#}");
    }
}
