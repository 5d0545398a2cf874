//! RNN, GRU and LSTM, unrolled over the (static) sequence length into MatMul, Add,
//! activations and data movement, following the ONNX definitions (default activations,
//! forward/reverse/bidirectional, initial states, LSTM peepholes, GRU
//! `linear_before_reset`).
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("RNN", |cx| recurrent(cx, Kind::Rnn));
    reg.insert("GRU", |cx| recurrent(cx, Kind::Gru));
    reg.insert("LSTM", |cx| recurrent(cx, Kind::Lstm));
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rnn,
    Gru,
    Lstm,
}

fn slice(cx: &mut NodeCx, v: Value, axis: i64, start: i64, end: i64) -> Result<Value, String> {
    cx.add1("slice", Slice { starts: vec![start], ends: vec![end], axes: vec![axis], steps: vec![] }, &[v])
}

fn reshape(cx: &mut NodeCx, v: Value, shape: Vec<i64>) -> Result<Value, String> {
    cx.add1("reshape", Reshape { shape, allowzero: true }, &[v])
}

/// Row `i` of dim 0 of `v`, reshaped to `shape`.
fn row(cx: &mut NodeCx, v: Value, i: i64, shape: Vec<i64>) -> Result<Value, String> {
    let s = slice(cx, v, 0, i, i + 1)?;
    reshape(cx, s, shape)
}

fn zeros(cx: &mut NodeCx, dims: &[u64]) -> Value {
    let n: u64 = dims.iter().product();
    cx.add_const(TensorData::from_f32(dims, &vec![0.0; n as usize]).expect("zeros"))
}

/// A quantized weight matrix `[K, N]` of one direction (DynamicQuantizeLSTM's): int8 or
/// uint8 codes, their zero point and scale (scalars, or `[N]`, one per column), all
/// constants.
#[derive(Clone, Copy)]
pub(crate) struct QMat {
    pub q: Value,
    pub zp: Value,
    pub scale: Value,
}

/// DynamicQuantizeLSTM's weights: the dequantized `W` and `R` in LSTM's layout (`[D, 4H,
/// K]`, f32; the biases, peepholes and shapes come from them), and per direction the
/// quantized `W` (`[input, 4H]`) and `R` (`[H, 4H]`) that the two products use.
pub(crate) struct Quantized {
    pub w_f32: Value,
    pub r_f32: Value,
    pub w: Vec<QMat>,
    pub r: Vec<QMat>,
}

/// An LSTM whose input and recurrent products are quantized as ONNX Runtime's
/// DynamicQuantizeLSTM computes them ([`quantized_product`]).
pub(crate) fn quantized_lstm(cx: &mut NodeCx, q: &Quantized) -> Result<Vec<Value>, String> {
    recurrent_with(cx, Kind::Lstm, Some(q))
}

/// `a @ m` as ONNX Runtime's quantized recurrent products compute it: `a` quantized to
/// uint8 over all its elements (scale `(max(a, 0) - min(a, 0)) / 255`, 1 where that is 0;
/// zero point `round(-min(a, 0) / scale)`; codes `round(a / scale) + zero point`, rounding
/// half to even, saturated), the integer product `(a_q - a_zp) @ (m_q - m_zp)` exact,
/// then scaled by `a_scale * m_scale` in f32.
fn quantized_product(cx: &mut NodeCx, a: Value, m: &QMat) -> Result<Value, String> {
    let (codes, scale, zp) = super::quant::quantize_u8_over_range(cx, a, true)?;
    let acc = match super::quant::int8_product(cx, codes, Some(zp), m.q, Some(m.zp))? {
        Some(acc) => acc,
        None => super::quant::integer_matmul(cx, codes, Some(zp), m.q, Some(m.zp))?,
    };
    let acc = cx.add1("q_product", Cast::new(DType::F32), &[acc])?;
    let s = cx.add1("q_scales", Mul {}, &[scale, m.scale])?;
    cx.add1("q_dequantized", Mul {}, &[acc, s])
}

fn recurrent(cx: &mut NodeCx, kind: Kind) -> Result<Vec<Value>, String> {
    recurrent_with(cx, kind, None)
}

fn recurrent_with(cx: &mut NodeCx, kind: Kind, quant: Option<&Quantized>) -> Result<Vec<Value>, String> {
    let gates: i64 = match kind {
        Kind::Rnn => 1,
        Kind::Gru => 3,
        Kind::Lstm => 4,
    };
    if cx.has("activations") || cx.has("clip") {
        return Err("custom activations and clip are not supported yet".into());
    }
    // layout=1: X [batch, seq, input], states [batch, dirs, hidden], Y [batch, seq, dirs,
    // hidden]; computed in layout 0 between transposes.
    let batch_first = cx.int("layout", 0) != 0;
    if kind == Kind::Lstm && cx.int("input_forget", 0) != 0 {
        return Err("input_forget=1 is not supported yet".into());
    }
    let (mut x, w, r) = match quant {
        Some(q) => (cx.input(0)?, q.w_f32, q.r_f32),
        None => (cx.input(0)?, cx.input(1)?, cx.input(2)?),
    };
    if batch_first {
        x = cx.add1("x_seq_first", Transpose { perm: vec![1, 0, 2] }, &[x])?;
    }
    if cx.ty(x).dtype != DType::F32 {
        return Err(format!("dtype {} is not supported yet (f32 only)", cx.ty(x).dtype));
    }
    // The sequence length and input size must be known (the recurrence is unrolled);
    // the batch may be a run-time dim (its rows are independent: matrix products with
    // run-time rows, zero initial states broadcast from one row).
    let xt = cx.ty(x);
    let xd: Vec<Option<u64>> = xt.shape.0.iter().map(|d| d.fixed()).collect();
    let (seq, input) = match xd.as_slice() {
        [s, _, Some(i)] => (s.map(|s| s as i64), *i as i64),
        _ => return Err(format!("X must be 3-D with a known input size, got {xt}")),
    };
    for (v, what) in [(w, "W"), (r, "R")] {
        if cx.ty(v).shape.rank() != 3 {
            return Err(format!("{what} must be 3-D, got {}", cx.ty(v).shape));
        }
    }
    // -1: the run-time batch, inferred by each reshape.
    let batch = xd[1].map_or(-1, |b| b as i64);
    let state_rows = xd[1].unwrap_or(1);
    let h = cx.int("hidden_size", 0);
    if h <= 0 {
        return Err("hidden_size is required".into());
    }
    // Rows shorter than the sequence (sequence_lens, unless every entry is the full length):
    // past its length a row's state stays and its outputs are zeros (a reverse direction
    // starts at its last valid step), as ONNX defines it.
    let lens = match (cx.opt_input(4)?, cx.const_input(4)?) {
        (Some(_), Some(c)) if c.to_i64().is_some_and(|v| v.iter().all(|&l| Some(l) == seq)) => None,
        (Some(l), _) => {
            if seq.is_none() {
                return Err("sequence_lens with a run-time sequence length is not supported yet".into());
            }
            let lt = cx.ty(l);
            if !lt.dtype.is_signed_int() || lt.shape.rank() != 1 || lt.shape.0[0] != xt.shape.0[1] {
                return Err(format!("sequence_lens must be int32[{}], got {lt}", xt.shape.0[1]));
            }
            let l = cx.add1("lens_i64", Cast::new(DType::I64), &[l])?;
            Some(cx.add1("lens_rows", Reshape { shape: vec![-1, 1], allowzero: false }, &[l])?)
        }
        (None, _) => None,
    };
    let dirs: Vec<bool> = match cx.string("direction", "forward")?.as_str() {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        d => return Err(format!("unknown direction '{d}'")),
    };
    let b = cx.opt_input(3)?;
    let mut init_h = cx.opt_input(5)?;
    let mut init_c = if kind == Kind::Lstm { cx.opt_input(6)? } else { None };
    if batch_first {
        for s in [&mut init_h, &mut init_c].into_iter().flatten() {
            *s = cx.add1("state_dir_first", Transpose { perm: vec![1, 0, 2] }, &[*s])?;
        }
    }
    let peep = if kind == Kind::Lstm { cx.opt_input(7)? } else { None };
    let lbr = kind == Kind::Gru && cx.int("linear_before_reset", 0) != 0;
    let (mut ys, mut yhs, mut ycs) = (Vec::new(), Vec::new(), Vec::new());
    for (d, &rev) in dirs.iter().enumerate() {
        let d = d as i64;
        // Per gate: R_g^T [H, H] and its bias (GRU's h gate without linear_before_reset
        // applies them on their own).
        let wd = row(cx, w, d, vec![gates * h, input])?;
        let rd = row(cx, r, d, vec![gates * h, h])?;
        let mut rt = Vec::new();
        let mut rb = Vec::new();
        for g in 0..gates {
            let rg = slice(cx, rd, 0, g * h, (g + 1) * h)?;
            rt.push(cx.add1("r_t", Transpose { perm: vec![1, 0] }, &[rg])?);
            rb.push(match b {
                Some(b) => {
                    let bd = row(cx, b, d, vec![2 * gates * h])?;
                    Some(slice(cx, bd, 0, (gates + g) * h, (gates + g + 1) * h)?)
                }
                None => None,
            });
        }
        let p: Vec<Value> = match peep {
            Some(p) => {
                let pd = row(cx, p, d, vec![3 * h])?;
                (0..3).map(|k| slice(cx, pd, 0, k * h, (k + 1) * h)).collect::<Result<_, _>>()?
            }
            None => vec![],
        };
        // The recurrent gates' products in one GEMM ([H, G*H]; GRU without
        // linear_before_reset applies R_h to r * h separately, so only z and r join).
        let joined = if kind == Kind::Gru && !lbr { 2 } else { gates };
        let r_all = slice(cx, rd, 0, 0, joined * h)?;
        let r_all = cx.add1("r_t_gates", Transpose { perm: vec![1, 0] }, &[r_all])?;
        let rb_all = match b {
            Some(b) => {
                let bd = row(cx, b, d, vec![2 * gates * h])?;
                Some(slice(cx, bd, 0, gates * h, (gates + joined) * h)?)
            }
            None => None,
        };
        // The input's products for every step at once: X [S, B, I] @ W^T [I, G*H] (+ Wb).
        let mut xw_all = match quant {
            Some(q) => quantized_product(cx, x, &q.w[d as usize])?,
            None => {
                let w_all = cx.add1("w_t_gates", Transpose { perm: vec![1, 0] }, &[wd])?;
                cx.add1("x_w_all", MatMul { act: Activation::None }, &[x, w_all])?
            }
        };
        if let Some(b) = b {
            let bd = row(cx, b, d, vec![2 * gates * h])?;
            let wb_all = slice(cx, bd, 0, 0, gates * h)?;
            xw_all = cx.add1("x_w_all_b", Add {}, &[xw_all, wb_all])?;
        }
        let rq = quant.map(|q| q.r[d as usize]);
        let weights = DirWeights { h, r_all, rb_all, rt, rb, p, rq };
        let hs = match init_h {
            Some(v) => row(cx, v, d, vec![batch, h])?,
            None => zeros(cx, &[state_rows, h as u64]),
        };
        let cs = match init_c {
            Some(v) => row(cx, v, d, vec![batch, h])?,
            None => zeros(cx, &[state_rows, h as u64]),
        };
        let Some(seq) = seq else {
            // A run-time sequence length: the step is the body of a loop.
            let (y, hs, cs) = step_loop(cx, kind, lbr, h, xw_all, hs, cs, &weights, rev)?;
            ys.push(cx.add1("y_dir", Reshape { shape: vec![0, 1, batch, h], allowzero: false }, &[y])?);
            yhs.push(reshape(cx, hs, vec![1, batch, h])?);
            ycs.push(reshape(cx, cs, vec![1, batch, h])?);
            continue;
        };
        let (mut hs, mut cs) = (hs, cs);
        let mut outs = vec![hs; seq as usize];
        let steps: Vec<i64> = if rev { (0..seq).rev().collect() } else { (0..seq).collect() };
        for t in steps {
            let xw_t = row(cx, xw_all, t, vec![batch, gates * h])?;
            let (h_next, c_next) = step(cx, kind, lbr, xw_t, hs, cs, &weights)?;
            match lens {
                Some(l) => {
                    // Rows with t < len step; the others keep their state and give zeros.
                    let tv = cx.i64_const(&[], &[t])?;
                    let live = cx.add1("row_live", Less {}, &[tv, l])?;
                    hs = cx.add1("h_kept", Where {}, &[live, h_next, hs])?;
                    cs = cx.add1("c_kept", Where {}, &[live, c_next, cs])?;
                    let zero = zeros(cx, &[1, h as u64]);
                    outs[t as usize] = cx.add1("y_step", Where {}, &[live, h_next, zero])?;
                }
                None => {
                    (hs, cs) = (h_next, c_next);
                    outs[t as usize] = hs;
                }
            }
        }
        let steps: Vec<Value> = outs.iter().map(|&o| reshape(cx, o, vec![1, 1, batch, h])).collect::<Result<_, _>>()?;
        ys.push(cx.add1("y_dir", Concat { axis: 0 }, &steps)?);
        yhs.push(reshape(cx, hs, vec![1, batch, h])?);
        ycs.push(reshape(cx, cs, vec![1, batch, h])?);
    }
    let mut y = cx.add1("y", Concat { axis: 1 }, &ys)?;
    let mut yh = cx.add1("y_h", Concat { axis: 0 }, &yhs)?;
    let mut yc = cx.add1("y_c", Concat { axis: 0 }, &ycs)?;
    if batch_first {
        y = cx.add1("y_batch_first", Transpose { perm: vec![2, 0, 1, 3] }, &[y])?;
        yh = cx.add1("y_h_batch_first", Transpose { perm: vec![1, 0, 2] }, &[yh])?;
        yc = cx.add1("y_c_batch_first", Transpose { perm: vec![1, 0, 2] }, &[yc])?;
    }
    let mut outs = vec![y, yh];
    if kind == Kind::Lstm {
        outs.push(yc);
    }
    Ok(outs)
}

/// One direction's recurrent weights: `R^T` of the gates joined in one product
/// (`[H, joined * H]`) and their biases, per gate `R_g^T` and its bias (GRU's h gate
/// without linear_before_reset uses them), the LSTM peepholes; with `rq`, the joined
/// product is [`quantized_product`] by these quantized weights instead.
struct DirWeights {
    h: i64,
    r_all: Value,
    rb_all: Option<Value>,
    rt: Vec<Value>,
    rb: Vec<Option<Value>>,
    p: Vec<Value>,
    rq: Option<QMat>,
}

/// Columns `[g * h, (g + 1) * h)` of `v` (a gate's share of a joined product).
fn gate(cx: &mut NodeCx, v: Value, g: usize, h: i64) -> Result<Value, String> {
    slice(cx, v, -1, g as i64 * h, (g as i64 + 1) * h)
}

/// One time step: the input's products with every gate's `W` (and its bias), `[B, G*H]`,
/// and the states `hs` (and LSTM's `cs`) in, the next states out.
#[allow(clippy::too_many_arguments)]
fn step(
    cx: &mut NodeCx,
    kind: Kind,
    lbr: bool,
    xw_t: Value,
    mut hs: Value,
    mut cs: Value,
    w: &DirWeights,
) -> Result<(Value, Value), String> {
    let DirWeights { h, r_all, rb_all, rt, rb, p, rq } = w;
    let (h, gates) = (*h, rt.len());
    let xw: Vec<Value> = (0..gates).map(|g| gate(cx, xw_t, g, h)).collect::<Result<_, _>>()?;
    let mut joined = match rq {
        Some(q) => quantized_product(cx, hs, q)?,
        None => cx.add1("h_r_all", MatMul { act: Activation::None }, &[hs, *r_all])?,
    };
    if let Some(bias) = rb_all {
        joined = cx.add1("h_r_all_b", Add {}, &[joined, *bias])?;
    }
    let n = cx.ty(joined).shape.0.last().and_then(|d| d.fixed()).unwrap_or(0) as i64 / h.max(1);
    let hr: Vec<Value> = (0..n as usize).map(|g| gate(cx, joined, g, h)).collect::<Result<_, _>>()?;
    match kind {
        Kind::Rnn => {
            let s = cx.add1("pre", Add {}, &[xw[0], hr[0]])?;
            hs = cx.add1("h", Tanh {}, &[s])?;
        }
        Kind::Gru => {
            let z = cx.add1("z_pre", Add {}, &[xw[0], hr[0]])?;
            let z = cx.add1("z", Sigmoid {}, &[z])?;
            let rr = cx.add1("r_pre", Add {}, &[xw[1], hr[1]])?;
            let rr = cx.add1("r", Sigmoid {}, &[rr])?;
            let cand = if lbr {
                let m = cx.add1("r_h", Mul {}, &[rr, hr[2]])?;
                cx.add1("h_pre", Add {}, &[xw[2], m])?
            } else {
                let rh = cx.add1("r_h", Mul {}, &[rr, hs])?;
                let mut m = cx.add1("r_h_r", MatMul { act: Activation::None }, &[rh, rt[2]])?;
                if let Some(bias) = rb[2] {
                    m = cx.add1("r_h_r_b", Add {}, &[m, bias])?;
                }
                cx.add1("h_pre", Add {}, &[xw[2], m])?
            };
            let cand = cx.add1("h_cand", Tanh {}, &[cand])?;
            // H = (1 - z) * cand + z * H_prev = cand + z * (H_prev - cand)
            let diff = cx.add1("h_diff", Sub {}, &[hs, cand])?;
            let zd = cx.add1("h_gate", Mul {}, &[z, diff])?;
            hs = cx.add1("h", Add {}, &[cand, zd])?;
        }
        Kind::Lstm => {
            let pre = |cx: &mut NodeCx, g: usize, peep: Option<(Value, Value)>| -> Result<Value, String> {
                let mut s = cx.add1("gate_pre", Add {}, &[xw[g], hr[g]])?;
                if let Some((pv, c)) = peep {
                    let pc = cx.add1("peephole", Mul {}, &[pv, c])?;
                    s = cx.add1("gate_peep", Add {}, &[s, pc])?;
                }
                Ok(s)
            };
            let pi = p.first().map(|&v| (v, cs));
            let pf = p.get(2).map(|&v| (v, cs));
            let i = pre(cx, 0, pi)?;
            let i = cx.add1("i", Sigmoid {}, &[i])?;
            let f = pre(cx, 2, pf)?;
            let f = cx.add1("f", Sigmoid {}, &[f])?;
            let c = pre(cx, 3, None)?;
            let c = cx.add1("c_cand", Tanh {}, &[c])?;
            let fc = cx.add1("f_c", Mul {}, &[f, cs])?;
            let ic = cx.add1("i_c", Mul {}, &[i, c])?;
            cs = cx.add1("c", Add {}, &[fc, ic])?;
            let po = p.get(1).map(|&v| (v, cs));
            let o = pre(cx, 1, po)?;
            let o = cx.add1("o", Sigmoid {}, &[o])?;
            let tc = cx.add1("tanh_c", Tanh {}, &[cs])?;
            hs = cx.add1("h", Mul {}, &[o, tc])?;
        }
    }
    Ok((hs, cs))
}

/// The recurrence of one direction over a run-time sequence length: a Loop (`dlc_ir`'s
/// region) whose body is [`step`] on row `t` of the input's gate products `xw` (`[seq,
/// batch, G*H]`, one GEMM before the loop; `seq - 1 - t` in reverse), carrying
/// the states and scanning `h`; returns `Y` of that direction (`[seq, batch, hidden]`,
/// in position order) and the last states. Weights must be constants (they are copied
/// into the body).
#[allow(clippy::too_many_arguments)]
fn step_loop(
    cx: &mut NodeCx,
    kind: Kind,
    lbr: bool,
    h: i64,
    x: Value,
    hs: Value,
    cs: Value,
    w: &DirWeights,
    rev: bool,
) -> Result<(Value, Value, Value), String> {
    let xt = cx.ty(x);
    let (seq, batch) = (xt.shape.0[0].clone(), xt.shape.0[1].clone());
    // Initial states of the full batch (a zero state is one broadcast row).
    let state = dlc_ir::TensorType {
        dtype: DType::F32,
        shape: dlc_ir::Shape(vec![batch.clone(), dlc_ir::Dim::Fixed(h as u64)]),
    };
    let full = |cx: &mut NodeCx, v: Value| -> Result<Value, String> {
        if cx.ty(v) == state {
            return Ok(v);
        }
        let dims = format!("{};{h}", batch.expr());
        cx.add1("state_rows", Expand { shape: vec![], dims }, &[v])
    };
    let (hs, cs) = (full(cx, hs)?, full(cx, cs)?);
    let mut sub = super::control::sub_importer(cx, "step");
    let scalar = |dtype| dlc_ir::TensorType { dtype, shape: dlc_ir::Shape(vec![]) };
    let it = sub.graph.add_input("t", scalar(DType::I64));
    let cond_ty = scalar(DType::Bool);
    sub.graph.add_input("cond", cond_ty.clone());
    let h_in = sub.graph.add_input("h", state.clone());
    let c_in = sub.graph.add_input("c", state.clone());
    let x_in = sub.graph.add_input("x", xt.clone());
    // The weights, copied into the body as constants.
    let mut copy = |sub: &mut crate::import::Importer, v: Value| -> Result<Value, String> {
        let t = cx
            .imp
            .known
            .get(&v)
            .cloned()
            .ok_or("the weights must be constants when the sequence length is a run-time dim")?;
        let c = sub.graph.add_const("weight", t.clone());
        sub.known.insert(c, t);
        Ok(c)
    };
    let copy_all = |sub: &mut crate::import::Importer,
                    vs: &[Value],
                    copy: &mut dyn FnMut(&mut crate::import::Importer, Value) -> Result<Value, String>|
     -> Result<Vec<Value>, String> { vs.iter().map(|&v| copy(sub, v)).collect() };
    let copy_opt = |sub: &mut crate::import::Importer,
                    vs: &[Option<Value>],
                    copy: &mut dyn FnMut(&mut crate::import::Importer, Value) -> Result<Value, String>|
     -> Result<Vec<Option<Value>>, String> {
        vs.iter().map(|v| v.map(|v| copy(sub, v)).transpose()).collect()
    };
    let r_all = copy(&mut sub, w.r_all)?;
    let rb_all = w.rb_all.map(|v| copy(&mut sub, v)).transpose()?;
    let bw = DirWeights {
        h: w.h,
        r_all,
        rb_all,
        rt: copy_all(&mut sub, &w.rt, &mut copy)?,
        rb: copy_opt(&mut sub, &w.rb, &mut copy)?,
        p: copy_all(&mut sub, &w.p, &mut copy)?,
        rq: match w.rq {
            Some(q) => {
                Some(QMat { q: copy(&mut sub, q.q)?, zp: copy(&mut sub, q.zp)?, scale: copy(&mut sub, q.scale)? })
            }
            None => None,
        },
    };
    let name = format!("{}/step", cx.name);
    let mut b = NodeCx { imp: &mut sub, node: cx.node, name, opset: cx.opset };
    let at = if rev {
        // seq - 1 - t, seq counted at run time (the sum of an iota of ones).
        let last = super::shapes::ShapeVal { elems: vec![&seq.expr() - &dlc_ir::Expr::c(1)], scalar: true };
        let last = super::shapes::shape_tensor(&mut b, &last, "last")?;
        b.add1("t_rev", Sub {}, &[last, it])?
    } else {
        it
    };
    let row_t = b.add1("x_t", Gather { axis: 0 }, &[x_in, at])?;
    let (h_out, c_out) = step(&mut b, kind, lbr, row_t, h_in, c_in, &bw)?;
    sub.graph.add_output("h_out", h_out);
    sub.graph.add_output("c_out", c_out);
    sub.graph.add_output("y_t", h_out);
    dlc_ir::verify(&sub.graph).map_err(|e| format!("its step: {e}"))?;
    let op =
        Loop { body: Body(std::sync::Arc::new(sub.graph)), count: seq.expr().to_string(), carried: 2, check: false };
    let zero = cx.i64_const(&[1], &[0])?;
    let yes = cx.add_const(TensorData::new(cond_ty, std::sync::Arc::from(vec![1u8])).ok_or("internal: condition")?);
    let out = cx.add("recurrence", op, &[zero, yes, hs, cs, x])?;
    let mut y = out[2];
    if rev {
        // The scan is in iteration order: position p is iteration seq - 1 - p.
        let len = seq.expr().to_string();
        let pos = cx.add1("positions", Iota { len: len.clone(), start: 0, delta: 1, dtype: DType::I64 }, &[])?;
        let last = super::shapes::ShapeVal { elems: vec![&seq.expr() - &dlc_ir::Expr::c(1)], scalar: true };
        let last = super::shapes::shape_tensor(cx, &last, "last")?;
        let idx = cx.add1("reversed", Sub {}, &[last, pos])?;
        y = cx.add1("y_in_order", Gather { axis: 0 }, &[y, idx])?;
    }
    Ok((y, out[0], out[1]))
}
