//! GroupQueryAttention (com.microsoft), as ONNX Runtime's CPU kernel computes it, built
//! from IR ops that take run-time batch, sequence and cache lengths.
//!
//! Inputs: query `[B, S, Hq*D]` (or Q, K and V packed along the last axis when key and
//! value are absent), key and value `[B, S, Hk*D]`, the cache `past_key` / `past_value`
//! `[B, Hk, P, D]`, `seqlens_k` (`[B]` int32: each row's total length minus one),
//! `total_sequence_length` (a scalar), the rotary caches `cos_cache` / `sin_cache`
//! `[max positions, R/2]`, `position_ids` `[B, S]` and `attention_bias` (broadcast to
//! `[B, Hq, S, T]`). Row `b` holds `len_b = seqlens_k[b] + 1` keys; its new tokens start
//! at `past_b = len_b - S`, or 0 on the first prompt (`S == total_sequence_length`).
//!
//! - Rotary (`do_rotary`): Q and K rotated at positions `past_b + i` (or `position_ids`).
//! - The present cache `[B, Hk, T, D]`, `T = max(total_sequence_length, P)`: position `j`
//!   holds the cache's row `j` for `j < past_b`, the new token `j - past_b` up to
//!   `past_b + S`, then the cache's row again (zeros past its end), as ONNX Runtime's
//!   shared-buffer cache leaves it.
//! - Query `i` of row `b` attends key `j` when `j <= past_b + i`, `j < len_b` and, with a
//!   `local_window_size` `W > 0`, `j > past_b + i - W` (W keys); scores are `scale * q.k`
//!   (1/sqrt(D) by default), capped by `softcap * tanh(x / softcap)`, plus the bias.
//! - Query heads share key/value heads in groups of `Hq / Hk`: the product runs over
//!   `[B, Hk, Hq/Hk, S, D]` against `[B, Hk, 1, T, D]`, so nothing is repeated.
//!
//! - `head_sink` (a logit per query head) or `smooth_softmax` (a logit of 0) joins each
//!   row's softmax as one more key that contributes no value.
//!
//! `output_qk` (`qk_output` 1 or 2): the scores (scaled, soft-capped, plus the
//! attention bias; masked positions 0) or the probabilities, `[B, H, S, T]`.
use super::attention::{rotate, scalar, view};
use super::NodeCx;
use dlc_ir::ops::*;
use dlc_ir::{DType, Dim, Expr, Value};

/// Whether `node` is one this module builds (it takes a shape value as its total length).
pub(crate) fn reads_shape_values(node: &onnx_protobuf::NodeProto) -> bool {
    node.op_type == "GroupQueryAttention" && node.domain == "com.microsoft"
}

/// An input given as a run-time scalar integer (a graph input, a computed value) or a
/// dim expression (a folded `Shape`), as an i64 scalar tensor and, when known at import,
/// its dim expression.
fn scalar_operand(cx: &mut NodeCx, i: usize, what: &str) -> Result<(Value, Option<Expr>), String> {
    let name = cx.node.input.get(i).cloned().unwrap_or_default();
    if let Some(s) = cx.imp.shape_values.get(&name).cloned() {
        let e = s.elems.first().cloned().ok_or_else(|| format!("{what} is empty"))?;
        let v = super::shapes::shape_tensor(cx, &s, &name)?;
        let v = cx.add1(&format!("{what}_scalar"), Reshape { shape: vec![], allowzero: false }, &[v])?;
        return Ok((v, Some(e)));
    }
    let v = cx.input(i)?;
    let t = cx.ty(v);
    if t.shape.numel() != Some(1) || !t.dtype.is_signed_int() {
        return Err(format!("{what} must be one int32 or int64, got {t}"));
    }
    let known = cx.const_input(i)?.and_then(|t| t.to_i64()).map(|v| Expr::c(v[0]));
    let v = cx.add1(&format!("{what}_i64"), Cast::new(DType::I64), &[v])?;
    let v = cx.add1(&format!("{what}_scalar"), Reshape { shape: vec![], allowzero: false }, &[v])?;
    Ok((v, known))
}

/// The value of dim `d` as an i64 scalar tensor.
fn dim_value(cx: &mut NodeCx, what: &str, d: &Dim) -> Result<Value, String> {
    match d.fixed() {
        Some(n) => cx.i64_const(&[], &[n as i64]),
        None => {
            let s = super::shapes::ShapeVal { elems: vec![d.expr()], scalar: true };
            super::shapes::shape_tensor(cx, &s, what)
        }
    }
}

pub(crate) fn group_query_attention(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    // output_qk: the scores (1: scaled, soft-capped, plus the bias; masked positions 0)
    // or the probabilities (2), [B, num_heads, S, T], as ONNX Runtime's CPU kernel gives them.
    let qk_mode = cx.int("qk_output", 0);
    let want_qk = cx.node.output.get(3).is_some_and(|n| !n.is_empty());
    if want_qk && !(1..=2).contains(&qk_mode) {
        return Err(format!("output_qk needs qk_output 1 (scores) or 2 (probabilities), got {qk_mode}"));
    }
    let (hq, hk) = (cx.int("num_heads", 0), cx.int("kv_num_heads", 0));
    if hq <= 0 || hk <= 0 || hq % hk != 0 {
        return Err(format!("num_heads {hq} must be a positive multiple of kv_num_heads {hk}"));
    }
    let q = cx.input(0)?;
    let qt = cx.ty(q);
    let dt = qt.dtype;
    if !matches!(dt, DType::F32 | DType::F16) {
        return Err(format!("query must be float32 or float16, got {dt}"));
    }
    if qt.shape.rank() != 3 {
        return Err(format!("query must be [batch, sequence, hidden], got {qt}"));
    }
    let (b, s) = (qt.shape.0[0].clone(), qt.shape.0[1].clone());
    let hidden = qt.shape.0[2].fixed().ok_or("the hidden size must be known")? as i64;
    let (q, k, v, d) = match (cx.opt_input(1)?, cx.opt_input(2)?) {
        (Some(k), Some(v)) => (q, k, v, hidden / hq),
        (None, None) => {
            // Packed: [Q | K | V] along the last axis.
            let d = hidden / (hq + 2 * hk);
            if d * (hq + 2 * hk) != hidden {
                return Err(format!("packed query width {hidden} is not (num_heads + 2 kv_num_heads) x head size"));
            }
            let part = |cx: &mut NodeCx, name: &str, a: i64, e: i64| {
                cx.add1(name, Slice { starts: vec![a], ends: vec![e], axes: vec![-1], steps: vec![] }, &[q])
            };
            let (a, c) = (hq * d, (hq + hk) * d);
            (part(cx, "q", 0, a)?, part(cx, "k", a, c)?, part(cx, "v", c, hidden)?, d)
        }
        _ => return Err("key and value must be given together (or neither, for packed QKV)".into()),
    };
    if d <= 0 || d * hq != cx.ty(q).shape.0[2].fixed().unwrap_or(0) as i64 {
        return Err(format!("the query width does not divide into {hq} heads"));
    }
    for (x, what) in [(k, "key"), (v, "value")] {
        let t = cx.ty(x);
        let want = [b.clone(), s.clone(), Dim::Fixed((hk * d) as u64)];
        if t.dtype != dt || t.shape.0 != want {
            return Err(format!("{what} must be {dt}[{}, {}, {}], got {t}", want[0], want[1], want[2]));
        }
    }
    let du = Dim::Fixed(d as u64);
    let heads = |n: i64| [b.clone(), s.clone(), Dim::Fixed(n as u64), du.clone()];
    let mut qh = view(cx, "q_heads", q, &heads(hq))?;
    let mut kh = view(cx, "k_heads", k, &heads(hk))?;
    let vh = view(cx, "v_heads", v, &heads(hk))?;

    // Each row's total length and the start of its new tokens.
    let seqlens = cx.input(5)?;
    let st = cx.ty(seqlens);
    // [B], or [B, 1] as the converter's ReduceSum keeps the axis (ONNX Runtime reads both).
    let rows_only = st.shape.0.first() == Some(&b) && st.shape.0[1..].iter().all(|d| *d == Dim::Fixed(1));
    if !st.dtype.is_signed_int() || !rows_only {
        return Err(format!("seqlens_k must be int32[{b}], got {st}"));
    }
    let seqlens =
        if st.shape.rank() == 1 { seqlens } else { view(cx, "seqlens_rows", seqlens, std::slice::from_ref(&b))? };
    let (total, total_expr) = scalar_operand(cx, 6, "total_sequence_length")?;
    let seqlens = cx.add1("seqlens_i64", Cast::new(DType::I64), &[seqlens])?;
    let one = cx.i64_const(&[], &[1])?;
    let len = cx.add1("row_len", Add {}, &[seqlens, one])?;
    let s_val = dim_value(cx, "seq_len", &s)?;
    let first = cx.add1("first_prompt", Equal {}, &[s_val, total])?;
    let later = cx.add1("row_past", Sub {}, &[len, s_val])?;
    let zero = cx.i64_const(&[], &[0])?;
    let past_b = cx.add1("past_len", Where {}, &[first, zero, later])?;
    // The present cache: T = max(total_sequence_length, P) positions.
    let past = match (cx.opt_input(3)?, cx.opt_input(4)?) {
        (Some(pk), Some(pv)) => Some((pk, pv)),
        (None, None) => None,
        _ => return Err("past_key and past_value must be given together".into()),
    };
    let p = match past {
        Some((pk, pv)) => {
            let t = cx.ty(pk);
            let ok = |t: &dlc_ir::TensorType| {
                t.dtype == dt && t.shape.rank() == 4 && t.shape.0[1] == Dim::Fixed(hk as u64) && t.shape.0[3] == du
            };
            if !ok(&t) || cx.ty(pv).shape != t.shape || !ok(&cx.ty(pv)) {
                return Err(format!("past_key and past_value must be {dt}[B, {hk}, P, {d}], got {t}"));
            }
            t.shape.0[2].clone()
        }
        None => Dim::Fixed(0),
    };
    // The present length must be known when compiling: a constant, or a dim expression
    // (`Shape(attention_mask)[1]`, as exporters compute it).
    let total_expr = total_expr.ok_or(
        "total_sequence_length must be known when compiling (a constant, or computed from an input's shape); \
         a value given only at run time would make the cache's length data-dependent",
    )?;
    let t_dim = Dim::from_expr(total_expr.max_with(&p.expr())).ok_or("total_sequence_length is not a valid length")?;
    let j = cx.add1("key_pos", Iota { len: t_dim.to_string(), start: 0, delta: 1, dtype: DType::I64 }, &[])?;
    let j1 = view(cx, "key_pos_1t", j, &[Dim::Fixed(1), t_dim.clone()])?;
    let past_b1 = view(cx, "past_len_b1", past_b, &[b.clone(), Dim::Fixed(1)])?;
    let i = cx.add1("query_pos", Iota { len: s.to_string(), start: 0, delta: 1, dtype: DType::I64 }, &[])?;
    let i1 = view(cx, "query_pos_1s", i, &[Dim::Fixed(1), s.clone()])?;

    if cx.int("do_rotary", 0) != 0 {
        let (cos, sin) = (cx.input(7)?, cx.input(8)?);
        let pos = match cx.opt_input(9)? {
            Some(p) => cx.add1("positions_i64", Cast::new(DType::I64), &[p])?,
            None => cx.add1("positions", Add {}, &[past_b1, i1])?,
        };
        let half = cx.ty(cos).shape.0.get(1).and_then(|d| d.fixed()).ok_or("cos_cache must be [positions, R/2]")?;
        let rd = 2 * half as i64;
        if rd == 0 || rd > d {
            return Err(format!("the rotary width {rd} (twice cos_cache's columns) exceeds the head size {d}"));
        }
        let cos_rows = cx.add1("cos_rows", Gather { axis: 0 }, &[cos, pos])?;
        let sin_rows = cx.add1("sin_rows", Gather { axis: 0 }, &[sin, pos])?;
        let interleaved = cx.int("rotary_interleaved", 0) != 0;
        qh = rotate(cx, qh, cos_rows, sin_rows, rd, interleaved)?;
        kh = rotate(cx, kh, cos_rows, sin_rows, rd, interleaved)?;
    }
    let bhsd = |cx: &mut NodeCx, name: &str, x: Value| cx.add1(name, Transpose { perm: vec![0, 2, 1, 3] }, &[x]);
    let (qh, kh, vh) = (bhsd(cx, "q_bhsd", qh)?, bhsd(cx, "k_bhsd", kh)?, bhsd(cx, "v_bhsd", vh)?);

    // Source row of present position j in [past | new | a zero row].
    let p_val = dim_value(cx, "past_rows", &p)?;
    let from_past = cx.add1("from_past", Less {}, &[j1, past_b1])?;
    let end_new = cx.add1("new_end", Add {}, &[past_b1, s_val])?;
    let in_new = cx.add1("in_new", Less {}, &[j1, end_new])?;
    let rel = cx.add1("new_rel", Sub {}, &[j1, past_b1])?;
    let new_row = cx.add1("new_row", Add {}, &[rel, p_val])?;
    let in_cache = cx.add1("in_cache", Less {}, &[j1, p_val])?;
    let zero_row = cx.add1("zero_row", Add {}, &[p_val, s_val])?;
    let after = cx.add1("after_new", Where {}, &[in_cache, j1, zero_row])?;
    let tail = cx.add1("after_past", Where {}, &[in_new, new_row, after])?;
    let src = cx.add1("present_rows", Where {}, &[from_past, j1, tail])?;
    // [past | new | a zero row]: the zero row padded onto the few new rows only.
    let rows_of = |cx: &mut NodeCx, name: &str, new: Value, old: Option<Value>| -> Result<Value, String> {
        let pad = Pad::new(vec![0, 0, 0, 0, 0, 0, 1, 0], PadMode::Constant, 0.0);
        let new = cx.add1(&format!("{name}_new_padded"), pad, &[new])?;
        match old {
            Some(o) => cx.add1(&format!("{name}_rows"), Concat { axis: 2 }, &[o, new]),
            None => Ok(new),
        }
    };
    let l = &(&p.expr() + &s.expr()) + &Expr::c(1);
    let mut present = Vec::new();
    if let Some(bn) = b.fixed() {
        // A known batch: whole rows of D values gathered from the flattened cache by
        // `(b * Hk + h) * L + src[b, j]` (an index of [B, Hk, T], not of every value).
        let (hku, lu) = (hk as u64, Dim::from_expr(l.clone()).ok_or("cache rows")?);
        let base =
            cx.add1("row_base", Iota { len: format!("{}", bn * hku), start: 0, delta: 1, dtype: DType::I64 }, &[])?;
        let base = view(cx, "row_base_bh1", base, &[b.clone(), Dim::Fixed(hku), Dim::Fixed(1)])?;
        let lv = dim_value(cx, "cache_rows", &lu)?;
        let base = cx.add1("row_offset", Mul {}, &[base, lv])?;
        let src = view(cx, "present_rows_b1t", src, &[b.clone(), Dim::Fixed(1), t_dim.clone()])?;
        let idx = cx.add1("present_index", Add {}, &[base, src])?;
        let flat = Dim::from_expr(&Expr::c((bn * hku) as i64) * &l).ok_or("cache rows")?;
        for (name, new, old) in [("present_key", kh, past.map(|p| p.0)), ("present_value", vh, past.map(|p| p.1))] {
            let rows = rows_of(cx, name, new, old)?;
            let rows = view(cx, &format!("{name}_flat"), rows, &[flat.clone(), du.clone()])?;
            present.push(cx.add1(name, Gather { axis: 0 }, &[rows, idx])?);
        }
    } else {
        // A run-time batch: a per-sample gather of elements (its index spans D too).
        let src = view(cx, "present_rows_b1t1", src, &[b.clone(), Dim::Fixed(1), t_dim.clone(), Dim::Fixed(1)])?;
        // Broadcast over heads and channels by adding zeros (a per-sample op, unlike Expand).
        let zeros = cx.i64_const(&[1, hk as u64, 1, d as u64], &vec![0; (hk * d) as usize])?;
        let src = cx.add1("present_index", Add {}, &[src, zeros])?;
        for (name, new, old) in [("present_key", kh, past.map(|p| p.0)), ("present_value", vh, past.map(|p| p.1))] {
            let rows = rows_of(cx, name, new, old)?;
            present.push(cx.add1(name, GatherElements { axis: 2 }, &[rows, src])?);
        }
    }

    // The mask over [B, 1, S, T]: causal from each row's offset, the row's length, the window.
    let b11 = [b.clone(), Dim::Fixed(1), Dim::Fixed(1)];
    let past_b3 = view(cx, "past_len_b11", past_b, &b11)?;
    let len3 = view(cx, "row_len_b11", len, &b11)?;
    let i3 = view(cx, "query_pos_s1", i, &[s.clone(), Dim::Fixed(1)])?;
    let at = cx.add1("query_abs", Add {}, &[past_b3, i3])?;
    let future = cx.add1("future", Greater {}, &[j1, at])?;
    let mut keep = cx.add1("causal", Not {}, &[future])?;
    let inside = cx.add1("within_len", Less {}, &[j1, len3])?;
    keep = cx.add1("keep", And {}, &[keep, inside])?;
    let w = cx.int("local_window_size", -1);
    if w > 0 {
        // The last W keys up to the query's own position.
        let wv = cx.i64_const(&[], &[w - 1])?;
        let first_key = cx.add1("window_start", Sub {}, &[at, wv])?;
        let before = cx.add1("before_window", Less {}, &[j1, first_key])?;
        let not_before = cx.add1("in_window", Not {}, &[before])?;
        keep = cx.add1("keep_window", And {}, &[keep, not_before])?;
    }
    let (fz, neg) = (scalar(cx, 0.0, dt)?, scalar(cx, f32::NEG_INFINITY, dt)?);
    let mask = cx.add1("mask_bias", Where {}, &[keep, fz, neg])?;
    let mut bias = view(cx, "mask_b1st", mask, &[b.clone(), Dim::Fixed(1), s.clone(), t_dim.clone()])?;
    if let Some(ab) = cx.opt_input(10)? {
        bias = cx.add1("with_attention_bias", Add {}, &[bias, ab])?;
    }
    let bt = cx.ty(bias);
    if bt.shape.rank() != 4 {
        return Err(format!("attention_bias must broadcast to [B, {hq}, S, T], got {bt}"));
    }

    // Grouped product: [B, Hk, G, S, D] x [B, Hk, 1, D, T].
    let g = Dim::Fixed((hq / hk) as u64);
    let hkd = Dim::Fixed(hk as u64);
    let q5 = view(cx, "q_groups", qh, &[b.clone(), hkd.clone(), g.clone(), s.clone(), du.clone()])?;
    let scale = match cx.float("scale", 0.0) {
        x if x != 0.0 => x,
        _ => 1.0 / (d as f32).sqrt(),
    };
    let sc = scalar(cx, scale, dt)?;
    let q5 = cx.add1("q_scaled", Mul {}, &[q5, sc])?;
    // A group's queries are one matrix of G*S rows per key/value head, so each head's
    // keys and values are read once for the whole group (a product batched over G would
    // read them G times, each against a single column in a decode step).
    let gs = Dim::from_expr(&g.expr() * &s.expr()).ok_or("query rows")?;
    let k4 = view(cx, "k_heads4", present[0], &[b.clone(), hkd.clone(), t_dim.clone(), du.clone()])?;
    let v4 = view(cx, "v_heads4", present[1], &[b.clone(), hkd.clone(), t_dim.clone(), du.clone()])?;
    let q4 = view(cx, "q_rows", q5, &[b.clone(), hkd.clone(), gs.clone(), du.clone()])?;
    // Scores as K q^T, then the small [.., T, G*S] result transposed (not the cache).
    let qt = cx.add1("q_t", Transpose { perm: vec![0, 1, 3, 2] }, &[q4])?;
    let kq = cx.add1("kq", MatMul { act: Activation::None }, &[k4, qt])?;
    let scores = cx.add1("qk", Transpose { perm: vec![0, 1, 3, 2] }, &[kq])?;
    let scores = view(cx, "qk_groups", scores, &[b.clone(), hkd.clone(), g.clone(), s.clone(), t_dim.clone()])?;
    let scores = super::attention::softcap(cx, scores, dt)?;
    // The bias's head dim splits into [Hk, G] (or stays 1).
    let bd = bt.shape.0.clone();
    let heads5 = if bd[1] == Dim::Fixed(1) { vec![Dim::Fixed(1), Dim::Fixed(1)] } else { vec![hkd.clone(), g.clone()] };
    let bias5 =
        view(cx, "bias_groups", bias, &[vec![bd[0].clone()], heads5, vec![bd[2].clone(), bd[3].clone()]].concat())?;
    let with_bias = cx.add1("qk_bias", Add {}, &[scores, bias5])?;
    // A sink logit per query head (`head_sink`, or 0 with `smooth_softmax`) joins each
    // row's softmax as one more key with no value: its share is dropped after.
    let sink = match cx.opt_input(11)? {
        Some(hs) => {
            let t = cx.ty(hs);
            if t.dtype != dt || t.shape.numel() != Some(hq as u64) {
                return Err(format!("head_sink must be {dt}[{hq}], got {t}"));
            }
            Some(view(cx, "sink_groups", hs, &[Dim::Fixed(1), hkd.clone(), g.clone(), Dim::Fixed(1), Dim::Fixed(1)])?)
        }
        None if cx.int("smooth_softmax", 0) != 0 => Some(scalar(cx, 0.0, dt)?),
        None => None,
    };
    let probs = match sink {
        Some(sk) => {
            // The sink's column: a per-row column of scores (finite) times 0, plus the sink.
            let col = Slice { starts: vec![0], ends: vec![1], axes: vec![-1], steps: vec![] };
            let col = cx.add1("sink_col0", col, &[scores])?;
            let col = cx.add1("sink_zero", Mul {}, &[col, fz])?;
            let col = cx.add1("sink_col", Add {}, &[col, sk])?;
            let all = cx.add1("with_sink", Concat { axis: -1 }, &[with_bias, col])?;
            let p = cx.add1("softmax", Softmax { axis: -1, mode: SoftmaxMode::Softmax }, &[all])?;
            let keys = Slice { starts: vec![0], ends: vec![-1], axes: vec![-1], steps: vec![] };
            cx.add1("probs_keys", keys, &[p])?
        }
        None => cx.add1("softmax", Softmax { axis: -1, mode: SoftmaxMode::Softmax }, &[with_bias])?,
    };
    // Rows whose every key is masked (an attention bias of -inf) give zeros, not NaN.
    let mx = cx.add1("bias_max", ReduceMax { axes: vec![-1], keepdims: true }, &[bias5])?;
    let masked = cx.add1("row_masked", IsInf { detect_negative: true, detect_positive: false }, &[mx])?;
    let probs = cx.add1("probs", Where {}, &[masked, fz, probs])?;
    let qk = match (want_qk, qk_mode) {
        (true, 1) => {
            let keep5 =
                view(cx, "keep_b11st", keep, &[b.clone(), Dim::Fixed(1), Dim::Fixed(1), s.clone(), t_dim.clone()])?;
            Some(cx.add1("scores_kept", Where {}, &[keep5, with_bias, fz])?)
        }
        (true, _) => Some(probs),
        _ => None,
    };
    let probs = view(cx, "probs_rows", probs, &[b.clone(), hkd.clone(), gs, t_dim.clone()])?;
    let ctx = cx.add1("context", MatMul { act: Activation::None }, &[probs, v4])?;
    let ctx = view(cx, "context_heads", ctx, &[b.clone(), Dim::Fixed(hq as u64), s.clone(), du.clone()])?;
    let ctx = cx.add1("context_bshd", Transpose { perm: vec![0, 2, 1, 3] }, &[ctx])?;
    let mut outs =
        vec![view(cx, "", ctx, &[b.clone(), s.clone(), Dim::Fixed((hq * d) as u64)])?, present[0], present[1]];
    if let Some(qk) = qk {
        outs.push(view(cx, "output_qk", qk, &[b, Dim::Fixed(hq as u64), s, t_dim])?);
    }
    Ok(outs)
}
