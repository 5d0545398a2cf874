//! LinearAttention (opset 27) as ONNX's reference computes it: a recurrent state
//! `S [B, Hkv, dk, dv]` (zeros, or `past_state`) updated token by token,
//!
//! - `linear`: `S = S + k v^T`;
//! - `gated`: `S = exp(g) S + k v^T` (`decay` `g` per key channel or per head);
//! - `delta`: `S = S + k (beta (v - S^T k))^T`;
//! - `gated_delta` (the default): the decay first, then the delta rule;
//!
//! and each token's output `scale * q^T S` (1/sqrt(dk) unless `scale` is given), query
//! heads reading their key/value head's state in groups of `Hq / Hkv`. In float32
//! whatever the inputs' type; `present_state` is the last state (in `past_state`'s type,
//! else the query's). The sequence is unrolled, as dlc unrolls Scan (the op's function
//! body), so its length must be known; the batch may be a run-time dim.
use super::attention::view;
use super::NodeCx;
use dlc_ir::ops::*;
use dlc_ir::{DType, Dim, Value};

/// Steps beyond which the unrolled graph is refused (as Scan's).
const MAX_STEPS: u64 = 4096;

pub(crate) fn linear_attention(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let rule = cx.string("update_rule", "gated_delta")?;
    let (gating, delta) = match rule.as_str() {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        r => return Err(format!("unknown update_rule '{r}' (linear, gated, delta or gated_delta)")),
    };
    let (hq, hk) = (cx.int("q_num_heads", 0), cx.int("kv_num_heads", 0));
    if hq <= 0 || hk <= 0 || hq % hk != 0 {
        return Err(format!("q_num_heads {hq} must be a positive multiple of kv_num_heads {hk}"));
    }
    let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (past, decay, beta) = (cx.opt_input(3)?, cx.opt_input(4)?, cx.opt_input(5)?);
    if gating != decay.is_some() {
        return Err(format!("update_rule '{rule}' {} the decay input", if gating { "requires" } else { "forbids" }));
    }
    if delta != beta.is_some() {
        return Err(format!("update_rule '{rule}' {} the beta input", if delta { "requires" } else { "forbids" }));
    }
    let qt = cx.ty(q);
    let out_dt = qt.dtype;
    if !out_dt.is_float() || qt.shape.rank() != 3 {
        return Err(format!("query must be a float [B, T, Hq*dk], got {qt}"));
    }
    let (b, t) = (qt.shape.0[0].clone(), qt.shape.0[1].clone());
    let steps = t.fixed().ok_or("the sequence length must be known (the recurrence is unrolled)")?;
    if steps == 0 || steps > MAX_STEPS {
        return Err(format!("a sequence of {steps} tokens is not supported (1 to {MAX_STEPS})"));
    }
    let last = |x: Value, what: &str, cx: &NodeCx| -> Result<i64, String> {
        let ty = cx.ty(x);
        if ty.shape.rank() != 3 || ty.shape.0[0] != b || ty.shape.0[1] != t {
            return Err(format!("{what} must be [{b}, {t}, *], got {ty}"));
        }
        Ok(ty.shape.0[2].fixed().ok_or_else(|| format!("{what}'s last dim must be known"))? as i64)
    };
    let (qw, kw, vw) = (last(q, "query", cx)?, last(k, "key", cx)?, last(v, "value", cx)?);
    let (dk, dv) = (qw / hq, vw / hk);
    if dk * hq != qw || kw != hk * dk || dv * hk != vw || dk == 0 || dv == 0 {
        return Err(format!(
            "query width {qw}, key width {kw} and value width {vw} do not split into {hq} and {hk} heads"
        ));
    }
    let g = hq / hk;
    let f = |n: i64| Dim::Fixed(n as u64);
    let as_f32 = |cx: &mut NodeCx, x: Value, name: &str| -> Result<Value, String> {
        if cx.ty(x).dtype == DType::F32 {
            Ok(x)
        } else {
            cx.add1(name, Cast::new(DType::F32), &[x])
        }
    };
    let q = as_f32(cx, q, "query_f32")?;
    let k = as_f32(cx, k, "key_f32")?;
    let v = as_f32(cx, v, "value_f32")?;
    // Per token: q [B, Hkv, G, dk] (head h reads kv head h / G), k as a column
    // [B, Hkv, dk, 1] and a row [B, Hkv, 1, dk], v as a row [B, Hkv, 1, dv].
    let q5 = view(cx, "q_groups", q, &[b.clone(), t.clone(), f(hk), f(g), f(dk)])?;
    let k4 = view(cx, "k_heads", k, &[b.clone(), t.clone(), f(hk), f(dk)])?;
    let v4 = view(cx, "v_heads", v, &[b.clone(), t.clone(), f(hk), f(dv)])?;
    // exp(decay) per key channel [.., Hkv, dk] or per head [.., Hkv, 1].
    let decay = match decay {
        Some(d) => {
            let w = last(d, "decay", cx)?;
            let per = match w {
                w if w == hk * dk => dk,
                w if w == hk => 1,
                w => return Err(format!("decay's last dim {w} must be {hk} (per head) or {} (per key)", hk * dk)),
            };
            let d = as_f32(cx, d, "decay_f32")?;
            let e = cx.add1("decay_exp", Exp {}, &[d])?;
            Some((view(cx, "decay_heads", e, &[b.clone(), t.clone(), f(hk), f(per)])?, per))
        }
        None => None,
    };
    let beta = match beta {
        Some(x) => {
            let w = last(x, "beta", cx)?;
            if w != hk && w != 1 {
                return Err(format!("beta's last dim {w} must be {hk} (per head) or 1"));
            }
            Some((as_f32(cx, x, "beta_f32")?, w))
        }
        None => None,
    };
    let state_dt = match past {
        Some(p) => {
            let pt = cx.ty(p);
            if pt.shape.0 != [b.clone(), f(hk), f(dk), f(dv)] || !pt.dtype.is_float() {
                return Err(format!("past_state must be a float [{b}, {hk}, {dk}, {dv}], got {pt}"));
            }
            pt.dtype
        }
        None => out_dt,
    };
    let mut state = match past {
        Some(p) => as_f32(cx, p, "past_f32")?,
        None => {
            let dims = [b.clone(), f(hk), f(dk), f(dv)].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(";");
            let zero = cx.add_const(dlc_ir::TensorData::from_f32(&[], &[0.0]).ok_or("bad constant")?);
            cx.add1("state0", Expand { shape: vec![], dims }, &[zero])?
        }
    };
    let scale = match cx.float("scale", 0.0) {
        s if s != 0.0 => s,
        _ => 1.0 / (dk as f32).sqrt(),
    };
    let scale = cx.add_const(dlc_ir::TensorData::from_f32(&[], &[scale]).ok_or("bad constant")?);
    let token = |cx: &mut NodeCx, x: Value, i: u64, name: &str, dims: &[Dim]| -> Result<Value, String> {
        let s = Slice { starts: vec![i as i64], ends: vec![i as i64 + 1], axes: vec![1], steps: vec![] };
        let x = cx.add1(&format!("{name}{i}"), s, &[x])?;
        view(cx, &format!("{name}{i}_view"), x, dims)
    };
    let mut outs = Vec::with_capacity(steps as usize);
    for i in 0..steps {
        let kc = token(cx, k4, i, "k_col", &[b.clone(), f(hk), f(dk), f(1)])?;
        let mut vr = token(cx, v4, i, "v_row", &[b.clone(), f(hk), f(1), f(dv)])?;
        if let Some((e, per)) = decay {
            let e = token(cx, e, i, "decay", &[b.clone(), f(hk), f(per), f(1)])?;
            state = cx.add1(&format!("decayed{i}"), Mul {}, &[state, e])?;
        }
        if let Some((bt, w)) = beta {
            // v <- beta (v - S^T k): the retrieved row is k^T S.
            let kr = token(cx, k4, i, "k_row", &[b.clone(), f(hk), f(1), f(dk)])?;
            let got = cx.add1(&format!("retrieved{i}"), MatMul { act: Activation::None }, &[kr, state])?;
            let diff = cx.add1(&format!("residual{i}"), Sub {}, &[vr, got])?;
            let bv = token(cx, bt, i, "beta", &[b.clone(), f(w), f(1), f(1)])?;
            vr = cx.add1(&format!("write{i}"), Mul {}, &[bv, diff])?;
        }
        let outer = cx.add1(&format!("outer{i}"), Mul {}, &[kc, vr])?;
        state = cx.add1(&format!("state{i}"), Add {}, &[state, outer])?;
        let qg = token(cx, q5, i, "q", &[b.clone(), f(hk), f(g), f(dk)])?;
        let read = cx.add1(&format!("read{i}"), MatMul { act: Activation::None }, &[qg, state])?;
        let read = cx.add1(&format!("scaled{i}"), Mul {}, &[read, scale])?;
        outs.push(view(cx, &format!("out{i}"), read, &[b.clone(), f(1), f(hq * dv)])?);
    }
    let mut y = if outs.len() == 1 { outs[0] } else { cx.add1("outputs", Concat { axis: 1 }, &outs)? };
    if out_dt != DType::F32 {
        y = cx.add1("output_cast", Cast::new(out_dt), &[y])?;
    }
    if state_dt != DType::F32 {
        state = cx.add1("state_cast", Cast::new(state_dt), &[state])?;
    }
    Ok(vec![y, state])
}

/// FlexAttention (ai.onnx.preview) as ONNX's reference computes it: `Q [B, Hq, L, E]`,
/// `K [B, Hkv, S, E]`, `V [B, Hkv, S, Ev]`; scores `(Q sqrt(s)) (K sqrt(s))^T` in the
/// inputs' type (`s` = `scale`, 1/sqrt(E) by default), then in the softmax type
/// (`softmax_precision`, else float32 for 16-bit inputs, else the inputs' type): the
/// `score_mod` graph applied to the scores, softmax over keys, the `prob_mod` graph to the
/// probabilities, times V, in V's type. Query heads share key/value heads in groups
/// (a 5-D product, nothing repeated); the mod graphs see `[B, Hq, L, S]`.
pub(crate) fn flex_attention(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (q, k, v) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
    let (qt, kt, vt) = (cx.ty(q), cx.ty(k), cx.ty(v));
    let dt = qt.dtype;
    if qt.shape.rank() != 4 || kt.shape.rank() != 4 || vt.shape.rank() != 4 || !dt.is_float() {
        return Err(format!("Q, K and V must be float rank-4 tensors, got {qt}, {kt} and {vt}"));
    }
    if kt.dtype != dt || vt.dtype != dt {
        return Err(format!("Q, K and V must have one type, got {dt}, {} and {}", kt.dtype, vt.dtype));
    }
    let [b, hq, l, e] = <[Dim; 4]>::try_from(qt.shape.0.clone()).expect("rank 4");
    let [_, hk, s, ek] = <[Dim; 4]>::try_from(kt.shape.0.clone()).expect("rank 4");
    let ev = vt.shape.0[3].clone();
    if ek != e || vt.shape.0[1] != hk || vt.shape.0[2] != s {
        return Err(format!("K {} and V {} do not fit Q {}", kt.shape, vt.shape, qt.shape));
    }
    let (hqn, hkn) = (hq.fixed().ok_or("head counts must be known")?, hk.fixed().ok_or("head counts must be known")?);
    if hkn == 0 || hqn % hkn != 0 {
        return Err(format!("{hqn} query heads do not group over {hkn} key/value heads"));
    }
    let en = e.fixed().ok_or("the head size must be known")?;
    let g = Dim::Fixed(hqn / hkn);
    let compute = match cx.int("softmax_precision", 0) {
        0 if matches!(dt, DType::F16 | DType::BF16) => DType::F32,
        0 => dt,
        1 => DType::F32,
        10 => DType::F16,
        11 => DType::F64,
        16 => DType::BF16,
        p => return Err(format!("softmax_precision {p} is not a float type")),
    };
    let scale = if cx.has("scale") { cx.float("scale", 0.0) } else { 1.0 / (en as f32).sqrt() };
    let ss = super::attention::scalar(cx, scale.sqrt(), dt)?;
    let qs = cx.add1("q_scaled", Mul {}, &[q, ss])?;
    let ks = cx.add1("k_scaled", Mul {}, &[k, ss])?;
    let q5 = view(cx, "q_groups", qs, &[b.clone(), hk.clone(), g.clone(), l.clone(), e.clone()])?;
    let k5 = view(cx, "k_group", ks, &[b.clone(), hk.clone(), Dim::Fixed(1), s.clone(), e.clone()])?;
    let kt5 = cx.add1("k_t", Transpose { perm: vec![0, 1, 2, 4, 3] }, &[k5])?;
    let scores = cx.add1("qk", MatMul { act: Activation::None }, &[q5, kt5])?;
    let mut scores = view(cx, "scores", scores, &[b.clone(), hq.clone(), l.clone(), s.clone()])?;
    let cast = |cx: &mut NodeCx, x: Value, to: DType, name: &str| -> Result<Value, String> {
        if cx.ty(x).dtype == to {
            Ok(x)
        } else {
            cx.add1(name, Cast::new(to), &[x])
        }
    };
    scores = cast(cx, scores, compute, "scores_cast")?;
    // A mod graph: one input bound to `x`, one output (cast to the softmax type).
    let apply = |cx: &mut NodeCx, attr: &str, x: Value| -> Result<Value, String> {
        let Some(graph) = cx.node.attribute.iter().find(|a| a.name == attr).and_then(|a| a.g.as_ref()) else {
            return Ok(x);
        };
        if graph.input.len() != 1 || graph.output.len() != 1 {
            return Err(format!("{attr} must take one input and give one output"));
        }
        cx.imp.values.insert(graph.input[0].name.clone(), x);
        let out = super::control::import_branch(cx, graph, attr)?;
        cast(cx, out[0], compute, &format!("{attr}_cast"))
    };
    scores = apply(cx, "score_mod", scores)?;
    let probs = cx.add1("softmax", Softmax { axis: -1, mode: SoftmaxMode::Softmax }, &[scores])?;
    let probs = apply(cx, "prob_mod", probs)?;
    let p5 = view(cx, "probs_groups", probs, &[b.clone(), hk.clone(), g.clone(), l.clone(), s.clone()])?;
    let v = cast(cx, v, compute, "v_cast")?;
    let v5 = view(cx, "v_group", v, &[b.clone(), hk.clone(), Dim::Fixed(1), s, ev.clone()])?;
    let y = cx.add1("context", MatMul { act: Activation::None }, &[p5, v5])?;
    let y = view(cx, "context_heads", y, &[b, hq, l, ev])?;
    Ok(vec![cast(cx, y, dt, "output_cast")?])
}
