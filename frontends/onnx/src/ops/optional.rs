//! Optionals, known at import: an optional that holds an element is that element (a
//! tensor, a sequence or a string tensor, under its own name); an empty one is only a
//! name (`Importer::absent`). `Optional`, `OptionalHasElement` (a constant) and
//! `OptionalGetElement` work on that; an element read from an empty optional is refused
//! at compile time. A model input of optional type is a tensor (or sequence) the caller
//! always gives, or, compiled with `--absent NAME`, an empty optional that the artifact
//! does not take: presence is fixed when compiling, as a sequence's length is (the C
//! ABI takes a buffer per input). An If on a run-time condition with an empty optional in
//! one branch gives an optional whose presence only the run knows (`Out::Maybe`, its flag
//! in `Importer::run_optionals`): OptionalHasElement is the flag, Identity keeps it, a
//! model output adds the flag as output `NAME.present`; other ops are refused.
use super::shapes::Out;
use super::NodeCx;
use dlc_ir::{DType, TensorData, TensorType};

/// The ops this module evaluates.
pub(crate) const OPS: &[&str] = &["Optional", "OptionalHasElement", "OptionalGetElement"];

/// Registers the optional ops (the importer dispatches them to [`build`]).
pub(crate) fn register(reg: &mut std::collections::HashMap<&'static str, super::BuildFn>) {
    for op in OPS {
        reg.insert(op, |cx| Err(format!("internal: {} reached the tensor path", cx.node.op_type)));
    }
}

/// Whether the node is an optional op, or reads an empty optional (a Loop carrying one is
/// `control::unrolled_loop`'s).
pub(crate) fn applies(cx: &NodeCx) -> bool {
    cx.node.domain.is_empty()
        && (OPS.contains(&cx.node.op_type.as_str())
            || cx.node.input.iter().any(|n| {
                (cx.imp.absent.contains(n) && cx.node.op_type != "Loop") || cx.imp.run_optionals.contains_key(n)
            }))
}

/// Operand 0 as what it holds (the name's tensor, sequence or string tensor).
fn element(cx: &mut NodeCx, name: &str) -> Result<Out, String> {
    if let Some(s) = cx.imp.sequences.get(name) {
        return Ok(Out::Seq(s.clone()));
    }
    if let Some(s) = cx.imp.run_sequences.get(name) {
        return Ok(Out::RunSeq(s.clone()));
    }
    if let Some(s) = cx.imp.strings.get(name) {
        return Ok(Out::Str(*s));
    }
    cx.imp.lookup(name).map(Out::Value)
}

pub(crate) fn build(cx: &mut NodeCx) -> Result<Vec<Out>, String> {
    let input = cx.node.input.first().filter(|n| !n.is_empty()).cloned();
    // An optional whose presence only the run knows (an If on a run-time condition gave
    // it): its flag answers OptionalHasElement; Identity keeps it.
    if let Some(n) = cx.node.input.iter().find(|n| cx.imp.run_optionals.contains_key(*n)).cloned() {
        let flag = cx.imp.run_optionals[&n];
        return match cx.node.op_type.as_str() {
            "OptionalHasElement" => Ok(vec![Out::Value(flag)]),
            "Identity" => Ok(vec![Out::Maybe(Box::new(element(cx, &n)?), flag)]),
            op => Err(format!(
                "{op} of '{n}', an optional whose presence only the run knows (an If on a run-time condition gave \
                 it), is not supported yet: OptionalHasElement, Identity and a model output take it"
            )),
        };
    }
    let empty = input.as_ref().is_none_or(|n| cx.imp.absent.contains(n));
    match cx.node.op_type.as_str() {
        "Optional" => match input {
            Some(n) => Ok(vec![element(cx, &n)?]),
            None => Ok(vec![Out::Absent]),
        },
        "OptionalHasElement" => {
            let t = TensorData::new(TensorType::fixed(DType::Bool, &[]), vec![u8::from(!empty)].into())
                .ok_or("internal: a bool constant")?;
            Ok(vec![Out::Value(cx.add_const(t))])
        }
        "OptionalGetElement" => match input {
            Some(n) if !empty => Ok(vec![element(cx, &n)?]),
            _ => Err("the optional is empty: it has no element to get".into()),
        },
        "Identity" if empty => Ok(vec![Out::Absent]),
        op => Err(format!(
            "{op} reads an empty optional ('{}'), which has no element",
            cx.node.input.iter().find(|n| cx.imp.absent.contains(*n)).cloned().unwrap_or_default()
        )),
    }
}
