//! ONNX's checker where ONNX Runtime refuses a model that dlc would otherwise import
//! with a guess: a default-domain node is checked against its op's schema at the
//! model's opset (`schema.rs`, generated from the onnx package's own schemas): the op
//! must exist at that opset, every attribute must be one the op has, with the type
//! ONNX gives it (an attribute with no type is refused), and required attributes must be
//! present. Ops of other domains (`com.microsoft`) have no schema here; their builders
//! check what they read.
use crate::schema::{MAX_OPSET, OPS};
use onnx_protobuf::attribute_proto::AttributeType as PbType;
use onnx_protobuf::NodeProto;

/// The type ONNX gives an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub(crate) enum AttrType {
    Float,
    Int,
    String,
    Tensor,
    Graph,
    Floats,
    Ints,
    Strings,
    Tensors,
    Graphs,
    SparseTensor,
    SparseTensors,
    TypeProto,
    TypeProtos,
}

/// One attribute of an op version.
#[derive(Debug)]
pub(crate) struct Attr {
    pub name: &'static str,
    pub ty: AttrType,
    pub required: bool,
}

/// One version of an op: the opset it appeared in and its attributes.
#[derive(Debug)]
pub(crate) struct OpVersion {
    pub since: i64,
    pub deprecated: bool,
    pub attrs: &'static [Attr],
}

/// The oldest op versions dlc implements: an op version from before opset 6 that a later
/// version replaced (Relu-1 with its `consumed_inputs`, BatchNormalization-1...) is
/// refused, as ONNX Runtime refuses it; ops that never changed (Not-1) import at any
/// opset.
pub(crate) const MIN_VERSION: i64 = 6;

fn pb_type(t: PbType) -> Option<AttrType> {
    Some(match t {
        PbType::UNDEFINED => return None,
        PbType::FLOAT => AttrType::Float,
        PbType::INT => AttrType::Int,
        PbType::STRING => AttrType::String,
        PbType::TENSOR => AttrType::Tensor,
        PbType::GRAPH => AttrType::Graph,
        PbType::FLOATS => AttrType::Floats,
        PbType::INTS => AttrType::Ints,
        PbType::STRINGS => AttrType::Strings,
        PbType::TENSORS => AttrType::Tensors,
        PbType::GRAPHS => AttrType::Graphs,
        PbType::SPARSE_TENSOR => AttrType::SparseTensor,
        PbType::SPARSE_TENSORS => AttrType::SparseTensors,
        PbType::TYPE_PROTO => AttrType::TypeProto,
        PbType::TYPE_PROTOS => AttrType::TypeProtos,
    })
}

fn type_name(t: AttrType) -> &'static str {
    match t {
        AttrType::Float => "FLOAT",
        AttrType::Int => "INT",
        AttrType::String => "STRING",
        AttrType::Tensor => "TENSOR",
        AttrType::Graph => "GRAPH",
        AttrType::Floats => "FLOATS",
        AttrType::Ints => "INTS",
        AttrType::Strings => "STRINGS",
        AttrType::Tensors => "TENSORS",
        AttrType::Graphs => "GRAPHS",
        AttrType::SparseTensor => "SPARSE_TENSOR",
        AttrType::SparseTensors => "SPARSE_TENSORS",
        AttrType::TypeProto => "TYPE_PROTO",
        AttrType::TypeProtos => "TYPE_PROTOS",
    }
}

/// Checks the model's default-domain opset: declared (when a node uses the domain) and
/// within what dlc and onnx know.
pub(crate) fn check_opset(opset: Option<i64>, used: bool) -> Result<(), String> {
    match opset {
        None if used => Err("the model imports no opset for the default domain (ai.onnx), which its nodes use".into()),
        None => Ok(()),
        Some(v) if v > MAX_OPSET => {
            Err(format!("default-domain opset {v} is newer than any ONNX defines (the newest is {MAX_OPSET})"))
        }
        Some(v) if v < 1 => Err(format!("default-domain opset {v} is not a valid opset version")),
        Some(_) => Ok(()),
    }
}

/// Checks a default-domain node against its op's schema at `opset` (see the module
/// docs). Ops the schema table does not know pass (the unsupported-op report names them).
pub(crate) fn check_node(node: &NodeProto, opset: i64) -> Result<(), String> {
    if !matches!(node.domain.as_str(), "" | "ai.onnx") {
        return Ok(());
    }
    let Ok(i) = OPS.binary_search_by(|(name, _)| (*name).cmp(node.op_type.as_str())) else {
        return Ok(());
    };
    let (op, versions) = OPS[i];
    let Some(v) = versions.iter().rev().find(|v| v.since <= opset) else {
        return Err(format!("{op} does not exist at opset {opset} (ONNX added it in opset {})", versions[0].since));
    };
    if v.since < MIN_VERSION && versions.iter().any(|w| w.since > v.since && w.since <= MIN_VERSION) {
        return Err(format!(
            "{op}-{} (opset {opset}) is an old version dlc does not implement; convert the model to opset \
             {MIN_VERSION} or newer with onnx.version_converter",
            v.since
        ));
    }
    if v.deprecated {
        return Err(format!("{op} is deprecated at opset {opset} (since opset {})", v.since));
    }
    let mut seen: Vec<&str> = Vec::new();
    for a in &node.attribute {
        if seen.contains(&a.name.as_str()) {
            return Err(format!("attribute '{}' is given twice", a.name));
        }
        seen.push(&a.name);
        let Some(spec) = v.attrs.iter().find(|s| s.name == a.name) else {
            let known: Vec<&str> = v.attrs.iter().map(|s| s.name).collect();
            return Err(format!(
                "unknown attribute '{}' ({op} at opset {opset} has {})",
                a.name,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        };
        let got = match a.type_.enum_value() {
            Ok(t) => pb_type(t),
            Err(_) => None,
        };
        match got {
            None => {
                return Err(format!("attribute '{}' has no type (ONNX defines it as {})", a.name, type_name(spec.ty)))
            }
            Some(t) if t != spec.ty => {
                return Err(format!(
                    "attribute '{}' is {}, ONNX defines it as {}",
                    a.name,
                    type_name(t),
                    type_name(spec.ty)
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = v.attrs.iter().find(|s| s.required && !seen.contains(&s.name)) {
        return Err(format!("required attribute '{}' is missing", missing.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(OPS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(OPS.iter().all(|(_, v)| v.windows(2).all(|w| w[0].since < w[1].since)));
    }

    fn node(op: &str, attrs: Vec<onnx_protobuf::AttributeProto>) -> NodeProto {
        NodeProto { op_type: op.into(), attribute: attrs, ..Default::default() }
    }

    fn attr(name: &str, t: PbType) -> onnx_protobuf::AttributeProto {
        onnx_protobuf::AttributeProto { name: name.into(), type_: t.into(), ..Default::default() }
    }

    #[test]
    fn nodes_are_checked_against_their_schema() {
        assert!(check_node(&node("Softmax", vec![attr("axis", PbType::INT)]), 13).is_ok());
        let e = check_node(&node("Softmax", vec![attr("axis", PbType::FLOAT)]), 13).unwrap_err();
        assert_eq!(e, "attribute 'axis' is FLOAT, ONNX defines it as INT");
        let e = check_node(&node("Softmax", vec![attr("axis", PbType::UNDEFINED)]), 13).unwrap_err();
        assert!(e.contains("has no type"), "{e}");
        let e = check_node(&node("Relu", vec![attr("bogus", PbType::INT)]), 14).unwrap_err();
        assert_eq!(e, "unknown attribute 'bogus' (Relu at opset 14 has none)");
        let e = check_node(&node("Gelu", vec![]), 17).unwrap_err();
        assert!(e.contains("does not exist at opset 17"), "{e}");
        let e = check_node(&node("Cast", vec![]), 13).unwrap_err();
        assert_eq!(e, "required attribute 'to' is missing");
        assert!(check_node(&node("NotAnOnnxOp", vec![attr("x", PbType::INT)]), 13).is_ok());
        assert!(check_opset(Some(99), true).unwrap_err().contains("newer"));
        assert!(check_opset(Some(0), true).unwrap_err().contains("not a valid"));
        let e = check_node(&node("Relu", vec![]), 1).unwrap_err();
        assert!(e.starts_with("Relu-1 (opset 1) is an old version"), "{e}");
        assert!(check_node(&node("Not", vec![]), 1).is_ok());
        assert!(check_opset(None, true).is_err() && check_opset(None, false).is_ok());
    }
}
