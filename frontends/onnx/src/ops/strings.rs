//! String tensors (docs/strings.md). The importer keeps a string tensor as two IR values,
//! its element table (`i64[..., 2]`: each element's start and end byte) and its UTF-8
//! bytes (`u8[n]`), beside the IR values (like sequences: [`StrVal`], never one IR
//! value). A model input of type string becomes two inputs, `NAME` (the table) and
//! `NAME.bytes`; an output likewise. Ops that only pick elements act on the table and
//! share the bytes; StringNormalizer maps the bytes' case and compresses the table;
//! Equal compares bytes ([`dlc_ir::ops::StringEqual`]).
use super::shapes::Out;
use super::NodeCx;
use dlc_ir::ops::{Cast, Concat, Equal, ReduceMax, Reshape, StringCase, StringEqual};
use dlc_ir::{DType, Dim, TensorData, TensorType, Value};

/// A string tensor: its element table and its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StrVal {
    /// `i64[..., 2]`: start and end byte of each element.
    pub table: Value,
    /// `u8[n]`: the UTF-8 bytes the table points into.
    pub bytes: Value,
}

/// The ops that take or make string tensors here (besides Identity and Equal of strings).
pub(crate) const OPS: &[&str] = &["StringNormalizer", "StringConcat", "StringSplit", "RegexFullMatch"];

/// Registers the string ops (the importer dispatches them to [`build`]; the registry
/// entries say they are supported).
pub(crate) fn register(reg: &mut std::collections::HashMap<&'static str, super::BuildFn>) {
    for op in OPS {
        reg.insert(op, |cx| Err(format!("internal: {} reached the tensor path", cx.node.op_type)));
    }
}

/// Whether the node is a string op or reads a string tensor.
pub(crate) fn applies(cx: &NodeCx) -> bool {
    cx.node.domain.is_empty()
        && (OPS.contains(&cx.node.op_type.as_str())
            || cx.node.input.iter().any(|n| cx.imp.strings.contains_key(n))
            || (cx.node.op_type == "Constant" && constant_strings(cx).is_some()))
}

/// A Constant node's string value (`value` a string tensor, or `value_strings`).
fn constant_strings(cx: &NodeCx) -> Option<(Vec<u64>, Vec<Vec<u8>>)> {
    for a in &cx.node.attribute {
        match a.name.as_str() {
            "value_string" => return Some((vec![], vec![a.s.clone()])),
            "value_strings" => return Some((vec![a.strings.len() as u64], a.strings.clone())),
            "value" => {
                if let Some(t) = a.t.as_ref().filter(|t| t.data_type == 8) {
                    return Some((t.dims.iter().map(|&d| d.max(0) as u64).collect(), t.string_data.clone()));
                }
            }
            _ => {}
        }
    }
    None
}

/// A string constant of element shape `dims` (the elements in row-major order).
pub(crate) fn constant(
    graph: &mut dlc_ir::Graph,
    known: &mut std::collections::HashMap<Value, TensorData>,
    name: &str,
    dims: &[u64],
    elems: &[Vec<u8>],
) -> Result<StrVal, String> {
    let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if n != Some(elems.len() as u64) {
        return Err(format!("string constant '{name}' has {} elements for shape {dims:?}", elems.len()));
    }
    let mut table = Vec::with_capacity(2 * elems.len());
    let mut bytes = Vec::new();
    for e in elems {
        std::str::from_utf8(e).map_err(|_| format!("string constant '{name}' has an element that is not UTF-8"))?;
        table.push(bytes.len() as i64);
        bytes.extend_from_slice(e);
        table.push(bytes.len() as i64);
    }
    // At least one byte: an empty tensor has no extent 0 in dlc.
    if bytes.is_empty() {
        bytes.push(0);
    }
    let mut tdims = dims.to_vec();
    tdims.push(2);
    let t = TensorData::from_i64(&tdims, &table).ok_or("internal: a string table")?;
    let b = TensorData::new(TensorType::fixed(DType::U8, &[bytes.len() as u64]), bytes.into())
        .ok_or("internal: string bytes")?;
    let mut add = |suffix: &str, t: TensorData| {
        let v = graph.add_const(format!("{name}{suffix}"), t.clone());
        known.insert(v, t);
        v
    };
    Ok(StrVal { table: add("", t), bytes: add(".bytes", b) })
}

/// Operand `i` as a string tensor.
fn string_input(cx: &NodeCx, i: usize) -> Result<StrVal, String> {
    let name = cx.node.input.get(i).filter(|n| !n.is_empty()).ok_or_else(|| format!("input {i} is required"))?;
    cx.imp.strings.get(name).copied().ok_or_else(|| format!("input {i} ('{name}') is not a string tensor"))
}

/// The element shape of a string tensor (its table's shape without the last dim).
fn element_shape(cx: &NodeCx, s: StrVal) -> Vec<Dim> {
    let mut d = cx.ty(s.table).shape.0;
    d.pop();
    d
}

pub(crate) fn build(cx: &mut NodeCx) -> Result<Vec<Out>, String> {
    let op = cx.node.op_type.clone();
    let strings = |cx: &NodeCx| cx.node.input.iter().filter(|n| cx.imp.strings.contains_key(*n)).count();
    match op.as_str() {
        "Constant" => {
            let (dims, elems) = constant_strings(cx).ok_or("internal: not a string constant")?;
            let name = cx.name.clone();
            let s = constant(&mut cx.imp.graph, &mut cx.imp.known, &name, &dims, &elems)?;
            Ok(vec![Out::Str(s)])
        }
        "Identity" => Ok(vec![Out::Str(string_input(cx, 0)?)]),
        "Equal" if strings(cx) == 2 => {
            let (a, b) = (string_input(cx, 0)?, string_input(cx, 1)?);
            Ok(vec![Out::Value(cx.add1("", StringEqual {}, &[a.table, a.bytes, b.table, b.bytes])?)])
        }
        "StringNormalizer" => normalizer(cx),
        "StringSplit" => split(cx),
        "RegexFullMatch" => {
            let x = string_input(cx, 0)?;
            let pattern = cx.string("pattern", "")?;
            if !cx.has("pattern") {
                return Err("the pattern attribute is required".into());
            }
            // Built here once so that a pattern the DFA cannot take fails the import.
            dlc_ir::ops::regex_dfa(&pattern)?;
            let op = dlc_ir::ops::StringRegexMatch { pattern };
            Ok(vec![Out::Value(cx.add1("", op, &[x.table, x.bytes])?)])
        }
        "TfIdfVectorizer" => Ok(super::tfidf::build(cx)?.into_iter().map(Out::Value).collect()),
        "StringConcat" => {
            let (a, b) = (string_input(cx, 0)?, string_input(cx, 1)?);
            let outs = cx.add("", dlc_ir::ops::StringConcat {}, &[a.table, a.bytes, b.table, b.bytes])?;
            Ok(vec![Out::Str(StrVal { table: outs[0], bytes: outs[1] })])
        }
        _ => Err(format!(
            "{op} of a string tensor is not supported yet (dlc takes string tensors in Identity, Equal, \
             StringNormalizer, StringConcat, StringSplit, RegexFullMatch and TfIdfVectorizer; see docs/strings.md)"
        )),
    }
}

/// The case change of the bytes ([`dlc_ir::ops::StringCase`]).
fn case_map(cx: &mut NodeCx, bytes: Value, upper: bool, ascii: bool, tag: &str) -> Result<Value, String> {
    cx.add1(tag, StringCase { upper, ascii }, &[bytes])
}

/// The same case change of constant bytes (the stopwords).
fn case_map_bytes(s: &[u8], upper: bool, ascii: bool) -> Vec<u8> {
    dlc_ir::ops::map_case(s, &dlc_ir::ops::case_table(upper, ascii))
}

/// StringNormalizer: removes the elements equal to a stopword (compared with both
/// lowercased unless `is_case_sensitive`), then changes the case of what is left; a
/// `[C]` or `[1, C]` input. When every element is removed the result is one empty
/// string (`[1]` or `[1, 1]`), as ONNX says.
fn normalizer(cx: &mut NodeCx) -> Result<Vec<Out>, String> {
    let x = string_input(cx, 0)?;
    let dims = element_shape(cx, x);
    let two_d = match dims.as_slice() {
        [_] => false,
        [Dim::Fixed(1), _] => true,
        _ => return Err(format!("the input must be [C] or [1, C], got {}", dlc_ir::Shape(dims.clone()))),
    };
    let c = dims.last().and_then(Dim::fixed).ok_or_else(|| {
        format!("the number of strings ({}) must be known at compile time for now", dims[dims.len() - 1])
    })?;
    let case = match cx.string("case_change_action", "NONE")?.as_str() {
        "NONE" => None,
        "LOWER" => Some(false),
        "UPPER" => Some(true),
        a => return Err(format!("case_change_action '{a}' is not one of NONE, LOWER, UPPER")),
    };
    let sensitive = cx.int("is_case_sensitive", 0) != 0;
    // The "C" locale changes ASCII letters only (as ONNX Runtime's does); others (the
    // default en_US.UTF-8) every letter of one or two bytes.
    let locale = cx.string("locale", "en_US.UTF-8")?;
    let ascii = matches!(locale.as_str(), "C" | "POSIX");
    let stopwords: Vec<Vec<u8>> =
        cx.node.attribute.iter().find(|a| a.name == "stopwords").map(|a| a.strings.clone()).unwrap_or_default();
    let bytes = match case {
        Some(up) => case_map(cx, x.bytes, up, ascii, if up { "upper" } else { "lower" })?,
        None => x.bytes,
    };
    if stopwords.is_empty() {
        return Ok(vec![Out::Str(StrVal { table: x.table, bytes })]);
    }
    // Compared as given, or both lowercased.
    let (probe, stops) = if sensitive {
        (x.bytes, stopwords)
    } else {
        let probe = match case {
            Some(false) => bytes,
            _ => case_map(cx, x.bytes, false, ascii, "fold")?,
        };
        (probe, stopwords.iter().map(|s| case_map_bytes(s, false, ascii)).collect())
    };
    let name = format!("{}/stopwords", cx.name);
    let k = stops.len() as u64;
    let stop = constant(&mut cx.imp.graph, &mut cx.imp.known, &name, &[k], &stops)?;
    let flat = cx.add1("flat", Reshape { shape: vec![c as i64, 2], allowzero: false }, &[x.table])?;
    let col = cx.add1("column", Reshape { shape: vec![c as i64, 1, 2], allowzero: false }, &[x.table])?;
    let eq = cx.add1("is_stopword", StringEqual {}, &[col, probe, stop.table, stop.bytes])?;
    let eq = cx.add1("is_stopword_i32", Cast { to: DType::I32, saturate: true }, &[eq])?;
    let any = cx.add1("any_stopword", ReduceMax { axes: vec![1], keepdims: false }, &[eq])?;
    let zero = cx.add_const(TensorData::from_i64(&[], &[0]).ok_or("internal: zero")?);
    let zero = cx.add1("zero_i32", Cast { to: DType::I32, saturate: true }, &[zero])?;
    let keep = cx.add1("keep", Equal {}, &[any, zero])?;
    // The empty string kept exactly when nothing else is.
    let kept = cx.add1("keep_i32", Cast { to: DType::I32, saturate: true }, &[keep])?;
    let any_kept = cx.add1("any_kept", ReduceMax { axes: vec![0], keepdims: true }, &[kept])?;
    let none = cx.add1("none_kept", Equal {}, &[any_kept, zero])?;
    let keep = cx.add1("keep_or_empty", Concat { axis: 0 }, &[keep, none])?;
    let empty = cx.i64_const(&[1, 2], &[0, 0])?;
    let table = cx.add1("with_empty", Concat { axis: 0 }, &[flat, empty])?;
    let table = super::bind::compress_values(cx, table, keep, 0)?;
    let table =
        if two_d { cx.add1("rows", Reshape { shape: vec![1, -1, 2], allowzero: false }, &[table])? } else { table };
    Ok(vec![Out::Str(StrVal { table, bytes })])
}

/// StringSplit: the pieces of every element are counted first (`string_split_count`);
/// their maximum is a computed dim (the artifact's prologue finds it before the run, so
/// the result is sized by it), and `string_split` writes each element's pieces, then
/// empty strings, as ranges into the operand's bytes. The counts are the second result.
fn split(cx: &mut NodeCx) -> Result<Vec<Out>, String> {
    let x = string_input(cx, 0)?;
    let delimiter = cx.string("delimiter", "")?;
    let maxsplit = if cx.has("maxsplit") { cx.int("maxsplit", -1).max(-1) } else { -1 };
    let count = |most| dlc_ir::ops::StringSplitCount { delimiter: delimiter.clone(), maxsplit, most };
    let counts = cx.add1("counts", count(false), &[x.table, x.bytes])?;
    // Its own node (the counts may be a model output, which the prologue cannot read).
    let most = cx.add1("most", count(true), &[x.table, x.bytes])?;
    let (view, k) = super::bind::computed_dims(cx, x.table, most, "pieces")?;
    let op = dlc_ir::ops::StringSplit { delimiter, maxsplit, pieces: k[0].to_string() };
    let table = cx.add1("", op, &[view, x.bytes])?;
    Ok(vec![Out::Str(StrVal { table, bytes: x.bytes }), Out::Value(counts)])
}

/// Each element of string tensor `x` against every string of `keys`: the first match's
/// index (i64, element-shaped) and whether one matched (bool).
pub(crate) fn match_strings(cx: &mut NodeCx, x: StrVal, keys: &[Vec<u8>]) -> Result<(Value, Value), String> {
    let rank = cx.ty(x.table).shape.rank() - 1;
    let mut shape = vec![0i64; rank];
    shape.extend([1, 2]);
    let col = cx.add1("elements", Reshape { shape, allowzero: false }, &[x.table])?;
    let kn = format!("{}/keys", cx.name);
    let kc = constant(&mut cx.imp.graph, &mut cx.imp.known, &kn, &[keys.len() as u64], keys)?;
    let eq = cx.add1("matches", StringEqual {}, &[col, x.bytes, kc.table, kc.bytes])?;
    first_match(cx, eq)
}

/// For `eq` (bool `[..., K]`: each element against K keys), the first true key's index
/// (i64 `[...]`) and whether any is true (bool `[...]`).
pub(crate) fn first_match(cx: &mut NodeCx, eq: Value) -> Result<(Value, Value), String> {
    use dlc_ir::ops::{ArgMax, Greater};
    let hit = cx.add1("matches_i32", Cast::new(DType::I32), &[eq])?;
    let first = ArgMax { axis: -1, keepdims: false, select_last_index: false };
    let at = cx.add1("first_match", first, &[hit])?;
    let any = cx.add1("any_match", ReduceMax { axes: vec![-1], keepdims: false }, &[hit])?;
    let zero = cx.add_const(TensorData::new(TensorType::fixed(DType::I32, &[1]), vec![0u8; 4].into()).ok_or("zero")?);
    let found = cx.add1("found", Greater {}, &[any, zero])?;
    Ok((at, found))
}
