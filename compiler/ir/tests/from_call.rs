//! Building ops by mnemonic from keyword attributes (what the DSL calls).
use dlc_ir::ops::{Attr, AutoPad, Conv, Gemm, LayerNormalization, Op, OP_TABLE};
use dlc_ir::DType;

fn call(name: &str, attrs: &[(&str, Attr)]) -> Result<Option<Op>, String> {
    Op::from_call(name, attrs.iter().map(|(n, a)| (n.to_string(), a.clone())).collect())
}

#[test]
fn attributes_given_and_defaults() {
    let op = call("conv", &[("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1, 1, 1, 1]))]).unwrap();
    let Some(Op::Conv(c)) = op else { panic!("{op:?}") };
    assert_eq!(
        c,
        Conv {
            kernel_shape: vec![],
            strides: vec![2, 2],
            pads: vec![1, 1, 1, 1],
            dilations: vec![],
            group: 1,
            auto_pad: AutoPad::NotSet,
            act: dlc_ir::ops::Activation::None,
        }
    );
    let Some(Op::Gemm(g)) = call("gemm", &[("trans_b", Attr::Bool(true))]).unwrap() else { panic!() };
    assert_eq!((g.alpha, g.beta, g.trans_b), (1.0, 1.0, true));
    let Some(Op::LayerNormalization(l)) = call("layernorm", &[]).unwrap() else { panic!() };
    assert_eq!(l, LayerNormalization { axis: -1, epsilon: 1e-5, rms: false, stats: false, skip: false });
    let Some(Op::Cast(c)) = call("cast", &[("to", Attr::Str("f16".into()))]).unwrap() else { panic!() };
    assert_eq!((c.to, c.saturate), (DType::F16, true));
    let Some(Op::Clip(c)) = call("clip", &[("max", Attr::Int(6))]).unwrap() else { panic!() };
    assert_eq!((c.min, c.max), (f32::NEG_INFINITY, 6.0));
    assert!(matches!(call("relu", &[]).unwrap(), Some(Op::Relu(_))));
    let _ = Gemm::from_attrs;
}

#[test]
fn errors_name_the_op_and_attribute() {
    assert_eq!(call("no_such_op", &[]).unwrap(), None);
    let e = call("conv", &[("stride", Attr::Int(2))]).unwrap_err();
    assert_eq!(
        e,
        "conv has no attribute 'stride'; did you mean 'strides'? \
         (its attributes: kernel_shape, strides, pads, dilations, group, auto_pad, act)"
    );
    let e = call("relu", &[("alpha", Attr::Float(0.1))]).unwrap_err();
    assert_eq!(e, "relu has no attribute 'alpha' (it takes none)");
    let e = call("cast", &[]).unwrap_err();
    assert_eq!(e, "cast needs attribute 'to' (a dtype name like \"f16\")");
    let e = call("conv", &[("group", Attr::Str("two".into()))]).unwrap_err();
    assert_eq!(e, "attribute 'group' of conv must be an integer, got \"two\"");
    let e = call("softmax", &[("mode", Attr::Str("argmax".into()))]).unwrap_err();
    assert!(e.starts_with("attribute 'mode' of softmax must be one of \"Softmax\""), "{e}");
}

#[test]
fn every_op_without_required_attributes_builds_from_its_mnemonic() {
    // Ops whose attributes all have defaults build from no attributes at all; the rest
    // say which attribute they need.
    for info in OP_TABLE {
        match call(info.mnemonic, &[]) {
            Ok(Some(op)) => assert_eq!(op.mnemonic(), info.mnemonic),
            Ok(None) => panic!("{} not found by its own mnemonic", info.mnemonic),
            Err(e) => assert!(e.contains(info.mnemonic) && e.contains("needs attribute"), "{e}"),
        }
    }
}
