//! `com.microsoft` contrib ops that ONNX Runtime's tools write into models (an
//! `ORT_ENABLE_EXTENDED` session saving its graph, the transformer optimizer), each
//! rewritten into dlc's ops with ONNX Runtime's documented semantics
//! (onnxruntime/docs/ContribOperators.md). Registered as `com.microsoft::OpType`.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::{Add, Clip, Gelu, HardSigmoid, LayerNormalization, LeakyRelu, Relu, Sigmoid, Swish, Tanh};
use dlc_ir::{Op, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    // x * sigmoid(alpha * x).
    reg.insert("com.microsoft::QuickGelu", |cx| {
        let x = cx.input(0)?;
        cx.add("", Swish { alpha: cx.float("alpha", 1.702) }, &[x])
    });
    // Gelu(A + B), exact (erf).
    reg.insert("com.microsoft::BiasGelu", |cx| gelu(cx, false));
    reg.insert("com.microsoft::Gelu", |cx| gelu(cx, false));
    // The tanh approximation of Gelu(X + bias).
    reg.insert("com.microsoft::FastGelu", |cx| gelu(cx, true));
    reg.insert("com.microsoft::FusedConv", fused_conv);
    reg.insert("com.microsoft::SkipLayerNormalization", skip_layernorm);
    reg.insert("com.microsoft::SkipSimplifiedLayerNormalization", skip_layernorm);
}

/// `x (+ bias)` then Gelu.
fn gelu(cx: &mut NodeCx, tanh_approximation: bool) -> Result<Vec<Value>, String> {
    let mut x = cx.input(0)?;
    if let Some(b) = cx.opt_input(1)? {
        x = cx.add1("bias", Add {}, &[x, b])?;
    }
    cx.add("", Gelu { tanh_approximation }, &[x])
}

/// FusedConv: Conv (its ONNX attributes), plus the optional fourth operand Z, then
/// `activation` with `activation_params`.
fn fused_conv(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if cx.num_inputs() > 4 {
        return Err("FusedConv takes at most X, W, B and Z".into());
    }
    let act = cx.string("activation", "")?;
    let params = cx.node.attribute.iter().find(|a| a.name == "activation_params").map(|a| a.floats.clone());
    let p = |i: usize, d: f32| params.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(d);
    let op: Option<Op> = match act.as_str() {
        "" | "Identity" => None,
        "Relu" => Some(Relu {}.into()),
        "Sigmoid" => Some(Sigmoid {}.into()),
        "Tanh" => Some(Tanh {}.into()),
        "LeakyRelu" => Some(LeakyRelu { alpha: p(0, 0.01) }.into()),
        "Clip" => Some(Clip { min: p(0, f32::MIN), max: p(1, f32::MAX) }.into()),
        "HardSigmoid" => Some(HardSigmoid { alpha: p(0, 0.2), beta: p(1, 0.5) }.into()),
        a => return Err(format!("FusedConv activation '{a}' is not supported")),
    };
    let z = if cx.num_inputs() == 4 { cx.opt_input(3)? } else { None };
    let mut y = super::nn::conv_of(cx, "conv")?;
    if let Some(z) = z {
        y = cx.add1("sum", Add {}, &[y, z])?;
    }
    match op {
        Some(op) => cx.add("", op, &[y]),
        None => cx.add("", dlc_ir::ops::Identity {}, &[y]),
    }
}

/// SkipLayerNormalization(input, skip, gamma, beta?, bias?): `s = input + skip (+ bias)`
/// normalised over the last axis; the optional fourth output is `s`. (The Simplified
/// form is RMS normalisation without beta.)
fn skip_layernorm(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let rms = cx.node.op_type == "SkipSimplifiedLayerNormalization";
    if cx.node.output.iter().skip(1).take(2).any(|o| !o.is_empty()) {
        return Err("the mean and inverse standard deviation outputs are not supported yet".into());
    }
    let (x, skip, gamma) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (beta, bias) = if rms { (None, cx.opt_input(3)?) } else { (cx.opt_input(3)?, cx.opt_input(4)?) };
    let mut s = cx.add1("sum", Add {}, &[x, skip])?;
    if let Some(b) = bias {
        s = cx.add1("bias", Add {}, &[s, b])?;
    }
    let mut operands = vec![s, gamma];
    operands.extend(beta);
    let epsilon = cx.float("epsilon", 1e-12);
    let y = cx.add1("", LayerNormalization { axis: -1, epsilon, rms, stats: false, skip: false }, &operands)?;
    Ok(vec![y, s, s, s])
}
