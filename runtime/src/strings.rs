//! String tensors (docs/strings.md). A compiled model takes and returns a string tensor
//! as two buffers, its element table (`i64[..., 2]`: each element's start and end byte)
//! and its UTF-8 bytes (`u8[n]`, at least one byte); the manifest marks them
//! ([`dlc_artifact::STRING_TABLE`], [`dlc_artifact::STRING_BYTES`]). [`Model::run`]
//! takes and returns [`Tensor`]s of dtype [`STRING`] and converts; the lower-level
//! [`Model::prepare`] / [`Model::run_prepared`] take the two buffers as they are.
//!
//! [`Model::run`]: crate::Model::run
//! [`Model::prepare`]: crate::Model::prepare
//! [`Model::run_prepared`]: crate::Model::run_prepared
use crate::{RuntimeError, Tensor};
use dlc_artifact::{Manifest, STRING_BYTES, STRING_TABLE};

/// The dtype name of a string tensor in a [`Tensor`].
pub const STRING: &str = "string";

impl Tensor {
    /// A string tensor of shape `shape` (elements in row-major order). Its `data` holds
    /// each element as its byte length (`u64`, little-endian) and its UTF-8 bytes.
    pub fn from_strings<S: AsRef<str>>(shape: &[u64], elems: &[S]) -> Tensor {
        let mut data = Vec::new();
        for e in elems {
            let b = e.as_ref().as_bytes();
            data.extend_from_slice(&(b.len() as u64).to_le_bytes());
            data.extend_from_slice(b);
        }
        Tensor { dtype: STRING.into(), shape: shape.to_vec(), data }
    }

    /// The elements of a string tensor as byte strings (`None` unless the dtype is
    /// [`STRING`] and the data holds exactly the shape's number of elements).
    pub fn string_bytes(&self) -> Option<Vec<&[u8]>> {
        if self.dtype != STRING {
            return None;
        }
        let n = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))?;
        let mut out = Vec::with_capacity(n.min(self.data.len() / 8));
        let mut rest = self.data.as_slice();
        while !rest.is_empty() {
            let (len, tail) = rest.split_first_chunk::<8>()?;
            let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
            if len > tail.len() {
                return None;
            }
            out.push(&tail[..len]);
            rest = &tail[len..];
        }
        (out.len() == n).then_some(out)
    }

    /// The elements of a string tensor (`None` as for [`Tensor::string_bytes`], or when
    /// one is not UTF-8).
    pub fn to_strings(&self) -> Option<Vec<String>> {
        self.string_bytes()?.into_iter().map(|b| String::from_utf8(b.to_vec()).ok()).collect()
    }
}

/// The table and bytes buffers of string tensor input `name`.
fn encode(name: &str, t: &Tensor) -> Result<(Tensor, Tensor), RuntimeError> {
    let elems = t.string_bytes().ok_or_else(|| {
        RuntimeError::BadShapeValue(format!(
            "input '{name}': the data of a string tensor of shape {:?} must hold {} elements, each a u64 length \
             and its bytes",
            t.shape,
            t.shape.iter().product::<u64>()
        ))
    })?;
    let mut table = Vec::with_capacity(16 * elems.len());
    let mut bytes = Vec::new();
    for e in &elems {
        if std::str::from_utf8(e).is_err() {
            return Err(RuntimeError::BadShapeValue(format!("input '{name}': an element is not UTF-8")));
        }
        table.extend_from_slice(&(bytes.len() as i64).to_le_bytes());
        bytes.extend_from_slice(e);
        table.extend_from_slice(&(bytes.len() as i64).to_le_bytes());
    }
    if bytes.is_empty() {
        bytes.push(0); // no extent is 0 in dlc: one unused byte
    }
    let mut shape = t.shape.clone();
    shape.push(2);
    let n = bytes.len() as u64;
    Ok((Tensor { dtype: "i64".into(), shape, data: table }, Tensor { dtype: "u8".into(), shape: vec![n], data: bytes }))
}

/// `inputs` with each string tensor replaced by its table and bytes buffers, for a model
/// whose manifest marks them; other inputs (and already-encoded ones) are kept.
pub(crate) fn encode_inputs(
    manifest: &Manifest,
    inputs: &[(&str, &Tensor)],
) -> Result<Vec<(String, Tensor)>, RuntimeError> {
    let mut out = Vec::with_capacity(inputs.len() + 1);
    for (name, t) in inputs {
        let is_table = manifest.inputs.iter().any(|s| s.name == *name && s.encoding == STRING_TABLE);
        if is_table && t.dtype == STRING {
            let (table, bytes) = encode(name, t)?;
            out.push((name.to_string(), table));
            out.push((dlc_ir_bytes_name(name), bytes));
        } else if t.dtype == STRING {
            return Err(RuntimeError::InputDtype {
                name: name.to_string(),
                expected: manifest.inputs.iter().find(|s| s.name == *name).map_or("?".into(), |s| s.dtype.clone()),
                got: STRING.into(),
            });
        } else {
            out.push((name.to_string(), (*t).clone()));
        }
    }
    Ok(out)
}

/// The name of the bytes buffer of string tensor `name` (as the compiler names it).
fn dlc_ir_bytes_name(name: &str) -> String {
    format!("{name}.bytes")
}

/// The outputs with each string tensor's table and bytes folded into one [`STRING`]
/// tensor (its ranges checked against its bytes).
pub(crate) fn decode_outputs(manifest: &Manifest, outs: Vec<Tensor>) -> Result<Vec<Tensor>, RuntimeError> {
    let specs = &manifest.outputs;
    let mut res = Vec::with_capacity(outs.len());
    let mut it = outs.into_iter().enumerate().peekable();
    while let Some((i, t)) = it.next() {
        let bytes_next = specs.get(i + 1).is_some_and(|s| s.encoding == STRING_BYTES);
        if specs[i].encoding != STRING_TABLE || !bytes_next {
            res.push(t);
            continue;
        }
        let (_, b) = it.next().expect("the bytes follow the table");
        let name = &specs[i].name;
        let entries: Vec<i64> = t.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8"))).collect();
        let mut elems: Vec<&[u8]> = Vec::with_capacity(entries.len() / 2);
        for (k, p) in entries.chunks_exact(2).enumerate() {
            let ok = 0 <= p[0] && p[0] <= p[1] && p[1] as u64 <= b.data.len() as u64;
            if !ok {
                return Err(RuntimeError::BadShapeValue(format!(
                    "output '{name}': element {k} spans bytes {}..{} of {}",
                    p[0],
                    p[1],
                    b.data.len()
                )));
            }
            elems.push(&b.data[p[0] as usize..p[1] as usize]);
        }
        let mut shape = t.shape.clone();
        shape.pop();
        let mut data = Vec::new();
        for e in &elems {
            data.extend_from_slice(&(e.len() as u64).to_le_bytes());
            data.extend_from_slice(e);
        }
        res.push(Tensor { dtype: STRING.into(), shape, data });
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_tensors_round_trip_and_reject_bad_data() {
        let t = Tensor::from_strings(&[3], &["a", "", "été"]);
        assert_eq!(t.to_strings().unwrap(), vec!["a", "", "été"]);
        let (table, bytes) = encode("x", &t).unwrap();
        assert_eq!(table.shape, vec![3, 2]);
        let ends: Vec<i64> = table.data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(ends, vec![0, 1, 1, 1, 1, 6]);
        assert_eq!(bytes.data, "aété".as_bytes());
        // The wrong element count, a length past the end.
        assert!(Tensor { shape: vec![2], ..t.clone() }.string_bytes().is_none());
        let mut cut = t.clone();
        cut.data.pop();
        assert!(cut.string_bytes().is_none());
        // Empty strings only: one unused byte.
        let (_, b) = encode("x", &Tensor::from_strings(&[2], &["", ""])).unwrap();
        assert_eq!(b.data.len(), 1);
    }
}
