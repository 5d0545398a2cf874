//! A look at an ONNX file's protobuf wire format before rust-protobuf parses it.
//!
//! rust-protobuf (3.4, which onnx-protobuf pins) skips an unknown field of the
//! deprecated *group* wire type by recursing once per nested group, with no limit, so a
//! few hundred kilobytes of nested start-group tags overflow the stack (found by
//! fuzzing: `scripts/fuzz.sh onnx_import`). This scan walks the same messages the parser
//! will (following the onnx.proto fields that hold messages, iteratively, skipping
//! bytes fields such as `raw_data` without reading them) and refuses groups nested past
//! [`MAX_GROUP_DEPTH`]. ONNX defines no group fields, so real models have none.

/// The deepest nesting of protobuf groups accepted.
pub(crate) const MAX_GROUP_DEPTH: u32 = 32;

/// The onnx.proto messages whose fields the scan follows.
#[derive(Clone, Copy, Debug)]
enum Msg {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
    SparseTensor,
    ValueInfo,
    Type,
    TypeTensor,
    TypeSequence,
    TypeMap,
    TypeOptional,
    TensorShape,
    Training,
    Function,
    /// A message without message fields that can nest (entries, opset ids, segments,
    /// annotations, dimensions): only scanned for groups.
    Leaf,
}

/// The message type of field `f` of `m`, when it holds one.
fn child(m: Msg, f: u64) -> Option<Msg> {
    use Msg::*;
    Some(match (m, f) {
        (Model, 7) => Graph,
        (Model, 20) => Training,
        (Model, 25) => Function,
        (Model, 8 | 14) => Leaf,
        (Graph, 1) => Node,
        (Graph, 5) => Tensor,
        (Graph, 15) => SparseTensor,
        (Graph, 11..=13) => ValueInfo,
        (Graph, 14 | 16) => Leaf,
        (Node, 5) => Attribute,
        (Node, 9) => Leaf,
        (Attribute, 5 | 10) => Tensor,
        (Attribute, 6 | 11) => Graph,
        (Attribute, 22 | 23) => SparseTensor,
        (Attribute, 14 | 15) => Type,
        (Tensor, 3 | 13 | 16) => Leaf,
        (SparseTensor, 1 | 2) => Tensor,
        (ValueInfo, 2) => Type,
        (ValueInfo, 4) => Leaf,
        (Type, 1 | 8) => TypeTensor,
        (Type, 4) => TypeSequence,
        (Type, 5) => TypeMap,
        (Type, 9) => TypeOptional,
        (TypeTensor, 2) => TensorShape,
        (TypeSequence, 1) | (TypeOptional, 1) | (TypeMap, 2) => Type,
        (TensorShape, 1) => Leaf,
        (Training, 1 | 2) => Graph,
        (Training, 3 | 4) => Leaf,
        (Function, 11) => Attribute,
        (Function, 7) => Node,
        (Function, 9 | 12 | 14) => Leaf,
        _ => return None,
    })
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Refuses protobuf groups nested deeper than [`MAX_GROUP_DEPTH`] anywhere the parser
/// will look. Malformed bytes otherwise pass (the parser reports them).
pub(crate) fn check_groups(bytes: &[u8]) -> Result<(), String> {
    let mut todo = vec![(Msg::Model, 0usize, bytes.len())];
    while let Some((m, start, end)) = todo.pop() {
        let b = &bytes[start..end];
        let (mut pos, mut depth) = (0usize, 0u32);
        while pos < b.len() {
            let Some(tag) = varint(b, &mut pos) else { break };
            let ok = match tag & 7 {
                0 => varint(b, &mut pos).is_some(),
                1 => {
                    pos += 8;
                    true
                }
                5 => {
                    pos += 4;
                    true
                }
                2 => match varint(b, &mut pos).and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n <= b.len() - pos => {
                        if depth == 0 {
                            if let Some(c) = child(m, tag >> 3) {
                                todo.push((c, start + pos, start + pos + n));
                            }
                        }
                        pos += n;
                        true
                    }
                    _ => false,
                },
                3 => {
                    depth += 1;
                    if depth > MAX_GROUP_DEPTH {
                        return Err(format!(
                            "protobuf groups nested more than {MAX_GROUP_DEPTH} deep at byte {} (ONNX has no groups)",
                            start + pos
                        ));
                    }
                    true
                }
                4 => {
                    depth = depth.saturating_sub(1);
                    true
                }
                _ => false,
            };
            if !ok {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_groups_are_refused_anywhere_the_parser_looks() {
        // Field 99 as a start group, nested 100,000 deep, at the top level.
        let deep: Vec<u8> = std::iter::repeat_n([0x9b, 0x06], 100_000).flatten().collect();
        assert!(check_groups(&deep).unwrap_err().contains("nested more than 32 deep"));
        // The same inside the graph (field 7, length-delimited) of a model.
        let mut inner = deep[..200].to_vec();
        inner.extend([0x9c, 0x06]);
        let mut model = vec![0x3a];
        let mut n = inner.len();
        while n >= 0x80 {
            model.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        model.push(n as u8);
        model.extend(&inner);
        assert!(check_groups(&model).is_err());
        // A few groups, and bytes fields that merely look like groups, pass.
        assert!(check_groups(&deep[..20]).is_ok());
        let raw = [0x4a, 0x04, 0x9b, 0x06, 0x9b, 0x06]; // field 9 bytes holding group tags
        assert!(check_groups(&raw).is_ok());
    }
}
