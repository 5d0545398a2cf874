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
