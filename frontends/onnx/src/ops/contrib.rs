//! `com.microsoft` contrib ops that ONNX Runtime's tools write into models (an
//! `ORT_ENABLE_EXTENDED` session saving its graph, the transformer optimizer), each
//! rewritten into dlc's ops with ONNX Runtime's documented semantics
//! (onnxruntime/docs/ContribOperators.md). Registered as `com.microsoft::OpType`.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::{
    Activation, Add, Cast, Clip, Expand, Gather, Gelu, HardSigmoid, Iota, LayerNormalization, LeakyRelu, Less, MatMul,
    ReduceSum, Relu, Sigmoid, Slice, Swish, Tanh, View,
};
use dlc_ir::{DType, Op, Value};
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
    reg.insert("com.microsoft::EmbedLayerNormalization", embed_layernorm);
    reg.insert("com.microsoft::Attention", attention);
}

fn i64s(cx: &mut NodeCx, v: Value, what: &str) -> Result<Value, String> {
    match cx.ty(v).dtype {
        DType::I64 => Ok(v),
        DType::I32 => cx.add1(what, Cast { to: DType::I64, saturate: true }, &[v]),
        d => Err(format!("{what} must be int32 or int64, got {d}")),
    }
}

/// `0, 1, .., n - 1` (i64) for the sequence extent `n` (a run-time dim or not).
fn positions(cx: &mut NodeCx, n: &dlc_ir::Dim) -> Result<Value, String> {
    cx.add1("positions", Iota { len: n.to_string(), start: 0, delta: 1, dtype: DType::I64 }, &[])
}

/// EmbedLayerNormalization(input_ids, segment_ids?, word, position, segment?, gamma,
/// beta, mask?, position_ids?): the three embeddings summed and layer-normalised;
/// outputs the result, `mask_index` (each row's count of mask ones, int32; 0 without a
/// mask) and the sum.
fn embed_layernorm(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let ids = cx.input(0)?;
    let ids = i64s(cx, ids, "input_ids")?;
    let it = cx.ty(ids);
    if it.shape.rank() != 2 {
        return Err(format!("input_ids must be [batch, sequence], got {it}"));
    }
    let (word, pos) = (cx.input(2)?, cx.input(3)?);
    let mut sum = cx.add1("word", Gather { axis: 0 }, &[word, ids])?;
    let p = match cx.opt_input(8)? {
        Some(p) => i64s(cx, p, "position_ids")?,
        None => positions(cx, &it.shape.0[1])?,
    };
    let pe = cx.add1("position", Gather { axis: 0 }, &[pos, p])?;
    sum = cx.add1("add_position", Add {}, &[sum, pe])?;
    if let (Some(seg), Some(table)) = (cx.opt_input(1)?, cx.opt_input(4)?) {
        let seg = i64s(cx, seg, "segment_ids")?;
        let se = cx.add1("segment", Gather { axis: 0 }, &[table, seg])?;
        sum = cx.add1("add_segment", Add {}, &[sum, se])?;
    }
    let (gamma, beta) = (cx.input(5)?, cx.input(6)?);
    let epsilon = cx.float("epsilon", 1e-12);
    let ln = LayerNormalization { axis: -1, epsilon, rms: false, stats: false, skip: false };
    let y = cx.add1("", ln, &[sum, gamma, beta])?;
    let mask_index = match cx.opt_input(7)? {
        Some(m) => {
            let m = i64s(cx, m, "mask")?;
            let n = cx.add1("mask_count", ReduceSum { axes: vec![1], keepdims: false }, &[m])?;
            cx.add1("mask_index", Cast { to: DType::I32, saturate: true }, &[n])?
        }
        None => {
            let z = cx.add_const(dlc_ir::TensorData::from_i64(&[1, 1], &[0]).ok_or("zero")?);
            let zi = cx.add1("zero", Cast { to: DType::I32, saturate: true }, &[z])?;
            let b = it.shape.0[0].to_string();
            let e = cx.add1("no_mask", Expand { shape: vec![], dims: format!("{b};1") }, &[zi])?;
            cx.add1("mask_index", View { dims: b }, &[e])?
        }
    };
    Ok(vec![y, mask_index, sum])
}

/// Attention(input, weights, bias?, mask_index?): the packed projection
/// `input @ weights + bias` split into q, k, v, then multi-head attention with scale
/// 1/sqrt(head size) (or `scale`); `mask_index` as each row's key count (`[batch]`) or
/// a raw 0/1 mask (`[batch, keys]`), masked keys getting `mask_filter_value`.
fn attention(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if cx.int("unidirectional", 0) != 0 {
        return Err("unidirectional (causal) Attention is not supported yet".into());
    }
    if (4..8).any(|i| cx.node.input.get(i).is_some_and(|n| !n.is_empty())) || cx.node.output.len() > 1 {
        return Err("past/present states and attention biases are not supported yet".into());
    }
    let heads = cx.int("num_heads", 0);
    let (x, w) = (cx.input(0)?, cx.input(1)?);
    let wd = cx.ty(w).shape.as_fixed().filter(|d| d.len() == 2).ok_or("weights must be a known [in, 3*hidden]")?;
    let sizes = cx.ints("qkv_hidden_sizes");
    let (hq, hk, hv) = match sizes.as_slice() {
        [] if wd[1] % 3 == 0 => (wd[1] as i64 / 3, wd[1] as i64 / 3, wd[1] as i64 / 3),
        [q, k, v] if (q + k + v) as u64 == wd[1] => (*q, *k, *v),
        _ => return Err(format!("qkv_hidden_sizes {sizes:?} do not fit weights [{}, {}]", wd[0], wd[1])),
    };
    if heads <= 0 || hq % heads != 0 || hk != hq || hv % heads != 0 {
        return Err(format!("num_heads {heads} does not divide the hidden sizes {hq}, {hk}, {hv}"));
    }
    let mut qkv = cx.add1("qkv", MatMul { act: Activation::None }, &[x, w])?;
    if let Some(b) = cx.opt_input(2)? {
        qkv = cx.add1("qkv_bias", Add {}, &[qkv, b])?;
    }
    let part = |cx: &mut NodeCx, what: &str, a: i64, b: i64| {
        cx.add1(what, Slice { starts: vec![a], ends: vec![b], axes: vec![-1], steps: vec![] }, &[qkv])
    };
    let q = part(cx, "q", 0, hq)?;
    let k = part(cx, "k", hq, hq + hk)?;
    let v = part(cx, "v", hq + hk, hq + hk + hv)?;
    let scale = match cx.float("scale", 0.0) {
        s if s != 0.0 => s,
        _ => 1.0 / ((hq / heads) as f32).sqrt(),
    };
    let fill = cx.float("mask_filter_value", -10000.0);
    let mut operands = vec![q, k, v];
    if let Some(m) = cx.opt_input(3)? {
        let mt = cx.ty(m);
        let keys = cx.ty(x).shape.0[1].clone();
        let mask = match mt.shape.rank() {
            // Key counts: key j of row b is kept when j < mask_index[b].
            1 => {
                let n = i64s(cx, m, "mask_index")?;
                let n = cx.add1("key_count", View { dims: format!("{};1", mt.shape.0[0]) }, &[n])?;
                let j = positions(cx, &keys)?;
                let keep = cx.add1("keep", Less {}, &[j, n])?;
                cx.add1("key_mask", Cast { to: DType::F32, saturate: true }, &[keep])?
            }
            2 => m,
            r => return Err(format!("a rank-{r} mask_index is not supported yet")),
        };
        operands.push(mask);
    }
    let op = dlc_ir::ops::Attention { heads, scale, key_padding: operands.len() == 4, padding_fill: fill };
    cx.add("", op, &operands)
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
