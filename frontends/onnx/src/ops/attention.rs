//! Attention (opset 23+), expanded into MatMul, Softmax and elementwise ops following
//! the ONNX reference implementation: optional 3-D inputs split into heads, past
//! key/value concatenation, grouped-query head repetition, scale applied as
//! `sqrt(scale)` to both Q and K, softcap, boolean or additive masks, causal masking
//! aligned bottom-right, and rows whose bias is entirely -inf producing zeros.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, Dim, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("Attention", attention);
    reg.insert("RotaryEmbedding", rotary_embedding);
    reg.insert("LinearAttention", super::linear_attention::linear_attention);
    reg.insert("ai.onnx.preview::FlexAttention", super::linear_attention::flex_attention);
}

/// An f32 constant converted to `dt` (a Cast node when `dt` is not f32).
fn constant(cx: &mut NodeCx, dims: &[u64], vals: &[f32], dt: DType) -> Result<Value, String> {
    let c = cx.add_const(TensorData::from_f32(dims, vals).ok_or("bad constant")?);
    if dt == DType::F32 {
        return Ok(c);
    }
    cx.add1("const_cast", Cast::new(dt), &[c])
}

pub(crate) fn scalar(cx: &mut NodeCx, v: f32, dt: DType) -> Result<Value, String> {
    constant(cx, &[], &[v], dt)
}

fn dims(cx: &NodeCx, v: Value) -> Result<Vec<i64>, String> {
    let t = cx.ty(v);
    t.shape
        .as_fixed()
        .map(|d| d.iter().map(|&x| x as i64).collect())
        .ok_or_else(|| format!("needs known dims, got {t}"))
}

fn reshape(cx: &mut NodeCx, name: &str, v: Value, shape: Vec<i64>) -> Result<Value, String> {
    cx.add1(name, Reshape { shape, allowzero: true }, &[v])
}

/// `v` viewed as `dims` (dims may be run-time: `View` keeps the elements in order).
pub(crate) fn view(cx: &mut NodeCx, name: &str, v: Value, dims: &[Dim]) -> Result<Value, String> {
    let dims = dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(";");
    cx.add1(name, View { dims }, &[v])
}

/// `v` `[B, S, H, D]` with its first `rd` channels rotated by `cos` and `sin`
/// (`[B, S, rd / 2]`, the cache rows of each position) as RotaryEmbedding defines it:
/// halves, or interleaved pairs; the other channels pass through. B and S may be
/// run-time dims.
pub(crate) fn rotate(
    cx: &mut NodeCx,
    v: Value,
    cos: Value,
    sin: Value,
    rd: i64,
    interleaved: bool,
) -> Result<Value, String> {
    let vd = cx.ty(v).shape.0.clone();
    let d = vd.get(3).and_then(|d| d.fixed()).ok_or("the head size must be known")? as i64;
    let half = rd / 2;
    let ct = cx.ty(cos);
    if ct.shape.rank() != 3 || ct.shape.0[2] != Dim::Fixed(half as u64) || cx.ty(sin).shape != ct.shape {
        return Err(format!(
            "the cos and sin rows must both be [B, S, {half}] (rotary_embedding_dim / 2), got {} and {}",
            ct.shape,
            cx.ty(sin).shape
        ));
    }
    let cd = ct.shape.0.clone();
    let with_one = [cd[0].clone(), cd[1].clone(), Dim::Fixed(1), cd[2].clone()];
    let cos = view(cx, "cos_b_s_1", cos, &with_one)?;
    let sin = view(cx, "sin_b_s_1", sin, &with_one)?;
    let slice = |cx: &mut NodeCx, name: &str, v: Value, start: i64, end: i64, step: i64| {
        cx.add1(name, Slice { starts: vec![start], ends: vec![end], axes: vec![-1], steps: vec![step] }, &[v])
    };
    let rest = (rd < d).then(|| slice(cx, "pass", v, rd, d, 1)).transpose()?;
    let rot = if rd < d { slice(cx, "rotated_part", v, 0, rd, 1)? } else { v };
    let (x1, x2) = if interleaved {
        (slice(cx, "x_even", rot, 0, rd, 2)?, slice(cx, "x_odd", rot, 1, rd, 2)?)
    } else {
        (slice(cx, "x_first", rot, 0, half, 1)?, slice(cx, "x_second", rot, half, rd, 1)?)
    };
    let (c1, s2) = (cx.add1("cos_x1", Mul {}, &[cos, x1])?, cx.add1("sin_x2", Mul {}, &[sin, x2])?);
    let real = cx.add1("real", Sub {}, &[c1, s2])?;
    let (s1, c2) = (cx.add1("sin_x1", Mul {}, &[sin, x1])?, cx.add1("cos_x2", Mul {}, &[cos, x2])?);
    let imag = cx.add1("imag", Add {}, &[s1, c2])?;
    let lead = &vd[..3];
    let mut out = if interleaved {
        let pairs_dims = [lead, &[Dim::Fixed(half as u64), Dim::Fixed(1)]].concat();
        let r5 = view(cx, "real_pairs", real, &pairs_dims)?;
        let i5 = view(cx, "imag_pairs", imag, &pairs_dims)?;
        let pairs = cx.add1("pairs", Concat { axis: -1 }, &[r5, i5])?;
        view(cx, "rotated", pairs, &[lead, &[Dim::Fixed(rd as u64)]].concat())?
    } else {
        cx.add1("rotated", Concat { axis: -1 }, &[real, imag])?
    };
    if let Some(r) = rest {
        out = cx.add1("joined", Concat { axis: -1 }, &[out, r])?;
    }
    Ok(out)
}

/// `scores` capped as `c * tanh(scores / c)` when the node's `softcap` attribute `c` is
/// positive (ONNX Attention's and GroupQueryAttention's rule), else as they are.
pub(crate) fn softcap(cx: &mut NodeCx, scores: Value, dt: DType) -> Result<Value, String> {
    let cap = cx.float("softcap", 0.0);
    if cap <= 0.0 {
        return Ok(scores);
    }
    let c = scalar(cx, cap, dt)?;
    let t = cx.add1("softcap_div", Div {}, &[scores, c])?;
    let t = cx.add1("softcap_tanh", Tanh {}, &[t])?;
    cx.add1("softcap", Mul {}, &[t, c])
}

/// `[B, S, H*D]` to `[B, H, S, D]`.
fn split_heads(cx: &mut NodeCx, name: &str, v: Value, heads: i64) -> Result<Value, String> {
    let d = dims(cx, v)?;
    if heads <= 0 || d[2] % heads != 0 {
        return Err(format!("{name}: hidden size {} does not divide into {heads} heads", d[2]));
    }
    let r = reshape(cx, &format!("{name}_heads"), v, vec![d[0], d[1], heads, d[2] / heads])?;
    cx.add1(&format!("{name}_bhsd"), Transpose { perm: vec![0, 2, 1, 3] }, &[r])
}

fn attention(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let nonpad = cx.opt_input(6)?;
    let (left, right) = (cx.int("left_window_size", -1), cx.int("right_window_size", -1));
    let (mut q, mut k, mut v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let ranks = [cx.ty(q).shape.rank(), cx.ty(k).shape.rank(), cx.ty(v).shape.rank()];
    if !(ranks == [3, 3, 3] || ranks == [4, 4, 4]) {
        return Err(format!("Q, K and V must all be 3-D or all 4-D, got ranks {ranks:?}"));
    }
    let dt = cx.ty(q).dtype;
    if !matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
        return Err(format!("dtype {dt} is not supported"));
    }
    let three_d = cx.ty(q).shape.rank() == 3;
    if three_d {
        let (hq, hk) = (cx.int("q_num_heads", 0), cx.int("kv_num_heads", 0));
        q = split_heads(cx, "q", q, hq)?;
        k = split_heads(cx, "k", k, hk)?;
        v = split_heads(cx, "v", v, hk)?;
    }
    let (past_k, past_v) = (cx.opt_input(4)?, cx.opt_input(5)?);
    if past_k.is_some() != past_v.is_some() {
        return Err("past_key and past_value must be given together".into());
    }
    if nonpad.is_some() && past_k.is_some() {
        return Err("nonpad_kv_seqlen cannot be combined with past_key and past_value".into());
    }
    let past_len = match past_k {
        Some(p) => *dims(cx, p)?.get(2).ok_or("past_key must be 4-D")?,
        None => 0,
    };
    if let (Some(pk), Some(pv)) = (past_k, past_v) {
        k = cx.add1("present_key", Concat { axis: 2 }, &[pk, k])?;
        v = cx.add1("present_value", Concat { axis: 2 }, &[pv, v])?;
    }
    let (present_k, present_v) = (k, v);
    let qd = dims(cx, q)?;
    let kd = dims(cx, k)?;
    let (sq, skv) = (qd[2], kd[2]);

    // The additive bias over [Sq, Skv] (broadcast), if any.
    let mut bias = None;
    if let Some(mut mask) = cx.opt_input(3)? {
        let mt = cx.ty(mask);
        let last = mt.shape.0.last().and_then(|d| d.fixed()).ok_or("attn_mask's last dim must be known")? as i64;
        if last > skv {
            return Err(format!("attn_mask {} is longer than the key length {skv}", mt.shape));
        }
        if last < skv {
            // A mask shorter than the keys (an external cache) masks the keys past it.
            let mut pads = vec![0; 2 * mt.shape.rank()];
            pads[2 * mt.shape.rank() - 1] = skv - last;
            let value = if mt.dtype == DType::Bool { 0.0 } else { f64::NEG_INFINITY };
            mask = cx.add1("mask_padded", Pad::new(pads, PadMode::Constant, value), &[mask])?;
        }
        bias = Some(if mt.dtype == DType::Bool {
            let (zero, neg) = (scalar(cx, 0.0, dt)?, scalar(cx, f32::NEG_INFINITY, dt)?);
            cx.add1("mask_bias", Where {}, &[mask, zero, neg])?
        } else {
            mask
        });
    }
    // Causal and sliding-window masks are constants over [Sq, Skv]; a query at row i sits
    // at absolute position i + past_len.
    let causal = cx.int("is_causal", 0) != 0;
    if let Some(len) = nonpad {
        // An external cache: batch b holds len[b] valid keys, and its queries sit at
        // the last Sq of them (offset len[b] - Sq), so the causal and window masks and
        // the padding mask depend on the run-time lengths.
        let b = nonpad_bias(cx, len, [sq, skv], causal, [left, right], dt)?;
        bias = Some(match bias {
            Some(m) => cx.add1("nonpad_bias_sum", Add {}, &[m, b])?,
            None => b,
        });
    } else if causal || left >= 0 || right >= 0 {
        let vals: Vec<f32> = (0..sq)
            .flat_map(|i| {
                (0..skv).map(move |j| {
                    let diff = i + past_len - j;
                    let ok = (!causal || diff >= 0) && (left < 0 || diff <= left) && (right < 0 || -diff <= right);
                    if ok {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let m = constant(cx, &[sq as u64, skv as u64], &vals, dt)?;
        bias = Some(match bias {
            Some(b) => cx.add1("causal_bias", Add {}, &[b, m])?,
            None => m,
        });
    }

    // Grouped-query attention: repeat each key/value head for its group of query heads.
    let (hq, hk) = (qd[1], kd[1]);
    if hq != hk {
        if hk == 0 || hq % hk != 0 {
            return Err(format!("{hq} query heads do not group over {hk} key/value heads"));
        }
        let g = hq / hk;
        for (name, t) in [("k", &mut k), ("v", &mut v)] {
            let d = dims(cx, *t)?;
            let r = reshape(cx, &format!("{name}_group"), *t, vec![d[0], hk, 1, d[2], d[3]])?;
            let e = cx.add1(&format!("{name}_repeat"), Expand::to(vec![d[0], hk, g, d[2], d[3]]), &[r])?;
            *t = reshape(cx, &format!("{name}_heads_q"), e, vec![d[0], hq, d[2], d[3]])?;
        }
    }

    let scale = if cx.has("scale") { cx.float("scale", 1.0) as f64 } else { 1.0 / (qd[3] as f64).sqrt() };
    let s = scalar(cx, scale.sqrt() as f32, dt)?;
    let qs = cx.add1("q_scaled", Mul {}, &[q, s])?;
    let kt = cx.add1("k_t", Transpose { perm: vec![0, 1, 3, 2] }, &[k])?;
    let ks = cx.add1("k_scaled", Mul {}, &[kt, s])?;
    let mut scores = cx.add1("qk", MatMul { act: Activation::None }, &[qs, ks])?;
    scores = softcap(cx, scores, dt)?;
    let with_bias = match bias {
        Some(b) => cx.add1("qk_bias", Add {}, &[scores, b])?,
        None => scores,
    };
    let mut probs = cx.add1("softmax", Softmax { axis: -1, mode: SoftmaxMode::Softmax }, &[with_bias])?;
    if let Some(b) = bias {
        // Rows where every key is masked give zeros, not NaN.
        let mx = cx.add1("bias_max", ReduceMax { axes: vec![-1], keepdims: true }, &[b])?;
        let masked = cx.add1("row_masked", IsInf { detect_negative: true, detect_positive: false }, &[mx])?;
        let zero = scalar(cx, 0.0, dt)?;
        probs = cx.add1("probs", Where {}, &[masked, zero, probs])?;
    }
    let mut y = cx.add1("context", MatMul { act: Activation::None }, &[probs, v])?;
    if three_d {
        let t = cx.add1("context_bshd", Transpose { perm: vec![0, 2, 1, 3] }, &[y])?;
        let d = dims(cx, t)?;
        y = reshape(cx, "", t, vec![d[0], d[1], d[2] * d[3]])?;
    }
    let qk_out = match cx.int("qk_matmul_output_mode", 0) {
        0 | 1 => scores,
        2 => with_bias,
        3 => probs,
        m => return Err(format!("qk_matmul_output_mode {m} is not supported")),
    };
    Ok(vec![y, present_k, present_v, qk_out])
}

/// The additive bias `[B, 1, Sq, Skv]` of Attention's `nonpad_kv_seqlen` (ONNX's
/// reference): key `j` of batch `b` is attended by query `i` iff `j < len[b]` and, with
/// `diff = i + len[b] - Sq - j`, `diff >= 0` (causal), `diff <= left` and
/// `-diff <= right` (windows, when given).
fn nonpad_bias(
    cx: &mut NodeCx,
    len: Value,
    [sq, skv]: [i64; 2],
    causal: bool,
    [left, right]: [i64; 2],
    dt: DType,
) -> Result<Value, String> {
    let lt = cx.ty(len);
    let len = if lt.dtype == DType::I64 { len } else { cx.add1("nonpad_i64", Cast::new(DType::I64), &[len])? };
    let lb = reshape(cx, "nonpad_b111", len, vec![-1, 1, 1, 1])?;
    let js: Vec<i64> = (0..skv).collect();
    let j = cx.i64_const(&[1, skv as u64], &js)?;
    let mut ok = cx.add1("nonpad_valid", Less {}, &[j, lb])?;
    if causal || left >= 0 || right >= 0 {
        let d: Vec<i64> = (0..sq).flat_map(|i| (0..skv).map(move |j| i - j - sq)).collect();
        let d = cx.i64_const(&[sq as u64, skv as u64], &d)?;
        let diff = cx.add1("nonpad_diff", Add {}, &[d, lb])?;
        let mut conds = Vec::new();
        if causal {
            let zero = cx.i64_const(&[], &[0])?;
            let before = cx.add1("nonpad_future", Less {}, &[diff, zero])?;
            conds.push(cx.add1("nonpad_causal", Not {}, &[before])?);
        }
        if left >= 0 {
            let l = cx.i64_const(&[], &[left])?;
            let far = cx.add1("nonpad_left_far", Greater {}, &[diff, l])?;
            conds.push(cx.add1("nonpad_left", Not {}, &[far])?);
        }
        if right >= 0 {
            let r = cx.i64_const(&[], &[-right])?;
            let far = cx.add1("nonpad_right_far", Less {}, &[diff, r])?;
            conds.push(cx.add1("nonpad_right", Not {}, &[far])?);
        }
        for (n, c) in conds.into_iter().enumerate() {
            ok = cx.add1(&format!("nonpad_ok{n}"), And {}, &[ok, c])?;
        }
    }
    let (zero, neg) = (scalar(cx, 0.0, dt)?, scalar(cx, f32::NEG_INFINITY, dt)?);
    cx.add1("nonpad_bias", Where {}, &[ok, zero, neg])
}

/// RotaryEmbedding (opset 23) as ONNX's reference computes it: the input as
/// `[B, S, heads, D]` (a 4-D `[B, heads, S, D]` transposed, a 3-D `[B, S, hidden]`
/// split into `num_heads`), its first `rotary_embedding_dim` channels rotated by the
/// cos and sin caches (rows picked by `position_ids` when given), halves or interleaved
/// pairs, the rest passed through. Dims must be known.
fn rotary_embedding(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, cos, sin) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let pos = cx.opt_input(3)?;
    let xd = dims(cx, x)?;
    let four = match xd.len() {
        4 => true,
        3 => false,
        r => return Err(format!("input must be 3-D or 4-D, got rank {r}")),
    };
    let mut v = if four {
        cx.add1("bshd", Transpose { perm: vec![0, 2, 1, 3] }, &[x])?
    } else {
        let heads = cx.int("num_heads", 0);
        if heads <= 0 || xd[2] % heads != 0 {
            return Err(format!("num_heads {heads} must divide the hidden size {}", xd[2]));
        }
        reshape(cx, "bshd", x, vec![xd[0], xd[1], heads, xd[2] / heads])?
    };
    let vd = dims(cx, v)?;
    let d = vd[3];
    let rd = match cx.int("rotary_embedding_dim", 0) {
        0 => d,
        r if r > 0 && r <= d && r % 2 == 0 => r,
        r => return Err(format!("rotary_embedding_dim {r} must be even and at most the head size {d}")),
    };
    let (mut cos, mut sin) = (cos, sin);
    if let Some(p) = pos {
        cos = cx.add1("cos_rows", Gather { axis: 0 }, &[cos, p])?;
        sin = cx.add1("sin_rows", Gather { axis: 0 }, &[sin, p])?;
    }
    v = rotate(cx, v, cos, sin, rd, cx.int("interleaved", 0) != 0)?;
    if four {
        cx.add("", Transpose { perm: vec![0, 2, 1, 3] }, &[v])
    } else {
        Ok(vec![reshape(cx, "", v, xd.clone())?])
    }
}
