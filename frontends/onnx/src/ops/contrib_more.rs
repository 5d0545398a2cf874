//! More `com.microsoft` contrib ops, each imported as the standard ONNX ops that ONNX
//! Runtime's documentation defines it by (onnxruntime/docs/ContribOperators.md), through
//! [`super::control::expand`]: FusedMatMul, MatMulIntegerToFloat, DynamicQuantizeMatMul,
//! the QLinear elementwise ops, pools and Concat (dequantize, compute in f32, quantize),
//! MatMulNBits (its blockwise 4- or 8-bit weights dequantized at compile time),
//! MultiHeadAttention (ONNX Attention with 3-D inputs) and RotaryEmbedding.
use super::control::{body, expand, expand_at, BodyNode};
use super::rnn::{QMat, Quantized};
use super::{BuildFn, NodeCx};
use crate::export::{attr, A};
use dlc_ir::{DType, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("com.microsoft::FusedMatMul", fused_matmul);
    reg.insert("com.microsoft::MatMulIntegerToFloat", matmul_integer_to_float);
    reg.insert("com.microsoft::DynamicQuantizeMatMul", dynamic_quantize_matmul);
    reg.insert("com.microsoft::QLinearAdd", |cx| qlinear_binary(cx, "Add"));
    reg.insert("com.microsoft::QLinearMul", |cx| qlinear_binary(cx, "Mul"));
    reg.insert("com.microsoft::QLinearSigmoid", |cx| qlinear_unary(cx, body("Sigmoid", &["xf"], &["yf"])));
    reg.insert("com.microsoft::QLinearLeakyRelu", |cx| {
        let alpha = cx.float("alpha", 0.01);
        qlinear_unary(cx, body("LeakyRelu", &["xf"], &["yf"]).with(attr("alpha", A::F(alpha))))
    });
    reg.insert("com.microsoft::QLinearGlobalAveragePool", |cx| qlinear_pool(cx, "GlobalAveragePool"));
    reg.insert("com.microsoft::QLinearAveragePool", |cx| qlinear_pool(cx, "AveragePool"));
    reg.insert("com.microsoft::QLinearConcat", qlinear_concat);
    reg.insert("com.microsoft::MatMulNBits", matmul_nbits);
    reg.insert("com.microsoft::MultiHeadAttention", multi_head_attention);
    reg.insert("com.microsoft::RotaryEmbedding", rotary_embedding);
    reg.insert("com.microsoft::GroupQueryAttention", super::gqa::group_query_attention);
    reg.insert("com.microsoft::DynamicQuantizeLSTM", dynamic_quantize_lstm);
}

/// Whether operand `i` is given.
fn has(cx: &NodeCx, i: usize) -> bool {
    cx.node.input.get(i).is_some_and(|n| !n.is_empty())
}

/// `$i` when operand `i` is given, else the empty name (an absent optional input).
fn opt(cx: &NodeCx, i: usize) -> String {
    if has(cx, i) {
        format!("${i}")
    } else {
        String::new()
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A float constant named `name`.
fn constant(name: &str, v: f32) -> BodyNode<'static> {
    let mut n = body("Constant", &[], &[name]);
    n.attrs.push(attr("value_float", A::F(v)));
    n
}

/// FusedMatMul: `alpha * op(A) @ op(B)`, `op` a transpose of the last two axes when
/// `transA` / `transB`, after one that moves the first axis to the row position when
/// `transBatchA` / `transBatchB` (`[M, b1.., K]` read as `[b1.., M, K]`; as ONNX
/// Runtime, both operands then have one rank of 3 or more).
fn fused_matmul(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (a0, b0) = (cx.input(0)?, cx.input(1)?);
    let (ra, rb) = (cx.ty(a0).shape.rank(), cx.ty(b0).shape.rank());
    let batch = cx.int("transBatchA", 0) != 0 || cx.int("transBatchB", 0) != 0;
    if batch && (ra != rb || ra < 3) {
        return Err(format!(
            "transBatchA and transBatchB need operands of one rank of 3 or more (as ONNX Runtime), got {ra} and {rb}"
        ));
    }
    let mut nodes = Vec::new();
    let operand = |i: usize, r: usize, nodes: &mut Vec<BodyNode>| -> Result<&'static str, String> {
        let (name, src, flag, batch_flag) =
            if i == 0 { ("a", "$0", "transA", "transBatchA") } else { ("b", "$1", "transB", "transBatchB") };
        let (trans, trans_batch) = (cx.int(flag, 0) != 0, cx.int(batch_flag, 0) != 0);
        if !trans && !trans_batch {
            return Ok(src);
        }
        if r < 2 {
            return Err(format!("{flag} needs an operand of rank 2 or more"));
        }
        let mut perm: Vec<i64> = (0..r as i64).collect();
        if trans_batch {
            // [1, .., r-2, 0, r-1]
            perm = (1..r as i64 - 1).chain([0, r as i64 - 1]).collect();
        }
        if trans {
            perm.swap(r - 2, r - 1);
        }
        let mut t = body("Transpose", &[src], &[name]);
        t.ints.push(("perm", perm));
        nodes.push(t);
        Ok(name)
    };
    let a = operand(0, ra, &mut nodes)?;
    let b = operand(1, rb, &mut nodes)?;
    let alpha = cx.float("alpha", 1.0);
    if alpha == 1.0 {
        nodes.push(body("MatMul", &[a, b], &["y"]));
    } else {
        nodes.extend([
            body("MatMul", &[a, b], &["ab"]),
            constant("alpha", alpha),
            body("Mul", &["ab", "alpha"], &["y"]),
        ]);
    }
    expand(cx, nodes, &["y"])
}

/// `(A - a_zp) @ (B - b_zp)` in integers, scaled by `a_scale * b_scale` (B's may be one
/// per column), plus the bias: MatMulIntegerToFloat's nodes reading the names given.
fn integer_to_float(
    a: &str,
    b: &str,
    a_s: &str,
    b_s: &str,
    a_zp: &str,
    b_zp: &str,
    bias: &str,
) -> Vec<BodyNode<'static>> {
    let mut cast = body("Cast", &["prod"], &["prod_f"]);
    cast.int.push(("to", 1));
    let mut nodes =
        vec![body("MatMulInteger", &[a, b, a_zp, b_zp], &["prod"]), cast, body("Mul", &[a_s, b_s], &["scale"])];
    if bias.is_empty() {
        nodes.push(body("Mul", &["prod_f", "scale"], &["y"]));
    } else {
        nodes.push(body("Mul", &["prod_f", "scale"], &["scaled"]));
        nodes.push(body("Add", &["scaled", bias], &["y"]));
    }
    nodes
}

/// MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zero_point?, b_zero_point?, bias?).
fn matmul_integer_to_float(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (a_zp, b_zp, bias) = (opt(cx, 4), opt(cx, 5), opt(cx, 6));
    expand(cx, integer_to_float("$0", "$1", "$2", "$3", &a_zp, &b_zp, &bias), &["y"])
}

/// DynamicQuantizeMatMul(A, B, b_scale, b_zero_point?, bias?): A quantized to u8 as
/// DynamicQuantizeLinear does, then MatMulIntegerToFloat.
fn dynamic_quantize_matmul(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (b_zp, bias) = (opt(cx, 3), opt(cx, 4));
    let mut nodes = vec![body("DynamicQuantizeLinear", &["$0"], &["aq", "as", "azp"])];
    nodes.extend(integer_to_float("aq", "$1", "as", "$2", "azp", &b_zp, &bias));
    expand(cx, nodes, &["y"])
}

/// `x` (operands `x, s, zp`) dequantized into `name`.
fn dequantize(x: &str, s: &str, zp: &str, name: &str) -> BodyNode<'static> {
    body("DequantizeLinear", &[x, s, zp], &[name])
}

/// QLinearAdd / QLinearMul(A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp?).
fn qlinear_binary(cx: &mut NodeCx, op: &'static str) -> Result<Vec<Value>, String> {
    let (a_zp, b_zp, c_zp) = (opt(cx, 2), opt(cx, 5), opt(cx, 7));
    let nodes = vec![
        dequantize("$0", "$1", &a_zp, "af"),
        dequantize("$3", "$4", &b_zp, "bf"),
        body(op, &["af", "bf"], &["cf"]),
        body("QuantizeLinear", &strs(&["cf".into(), "$6".into(), c_zp]), &["y"]),
    ];
    expand(cx, nodes, &["y"])
}

/// QLinearSigmoid / QLinearLeakyRelu(X, X_scale, X_zp, Y_scale, Y_zp?): `f` reads `xf`
/// and writes `yf`.
fn qlinear_unary(cx: &mut NodeCx, f: BodyNode<'static>) -> Result<Vec<Value>, String> {
    let (x_zp, y_zp) = (opt(cx, 2), opt(cx, 4));
    let nodes = vec![
        dequantize("$0", "$1", &x_zp, "xf"),
        f,
        body("QuantizeLinear", &strs(&["yf".into(), "$3".into(), y_zp]), &["y"]),
    ];
    expand(cx, nodes, &["y"])
}

/// QLinearGlobalAveragePool / QLinearAveragePool(X, x_scale, x_zp, y_scale, y_zp?),
/// NCHW or (`channels_last`) NHWC; AveragePool's attributes pass through.
fn qlinear_pool(cx: &mut NodeCx, op: &'static str) -> Result<Vec<Value>, String> {
    let (x_zp, y_zp) = (opt(cx, 2), opt(cx, 4));
    let x = cx.input(0)?;
    let r = cx.ty(x).shape.rank();
    if r < 3 {
        return Err(format!("X must have rank 3 or more, got {r}"));
    }
    let last = cx.int("channels_last", 0) != 0;
    let mut nodes = vec![dequantize("$0", "$1", &x_zp, "xf")];
    let mut src = "xf";
    if last {
        let mut perm: Vec<i64> = vec![0, r as i64 - 1];
        perm.extend(1..r as i64 - 1);
        let mut t = body("Transpose", &["xf"], &["xc"]);
        t.ints.push(("perm", perm));
        nodes.push(t);
        src = "xc";
    }
    let mut pool = body(op, &[src], &["pf"]);
    for a in &cx.node.attribute {
        if op == "AveragePool" && a.name != "channels_last" {
            pool.attrs.push(a.clone());
        }
    }
    nodes.push(pool);
    let mut out = "pf";
    if last {
        let mut perm: Vec<i64> = vec![0];
        perm.extend(2..r as i64);
        perm.push(1);
        let mut t = body("Transpose", &["pf"], &["pl"]);
        t.ints.push(("perm", perm));
        nodes.push(t);
        out = "pl";
    }
    nodes.push(body("QuantizeLinear", &strs(&[out.into(), "$3".into(), y_zp]), &["y"]));
    expand(cx, nodes, &["y"])
}

/// QLinearConcat(Y_scale, Y_zp, X1, X1_scale, X1_zp, ...) along `axis`.
fn qlinear_concat(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let n = cx.node.input.len();
    if n < 5 || !(n - 2).is_multiple_of(3) {
        return Err(format!("{n} inputs: expected Y_scale, Y_zero_point and triples of X, scale, zero point"));
    }
    let mut nodes = Vec::new();
    let mut parts = Vec::new();
    for j in 0..(n - 2) / 3 {
        let at = 2 + 3 * j;
        let name = format!("xf{j}");
        nodes.push(dequantize(&format!("${at}"), &format!("${}", at + 1), &opt(cx, at + 2), &name));
        parts.push(name);
    }
    let mut cat = body("Concat", &strs(&parts), &["cf"]);
    cat.int.push(("axis", cx.int("axis", 0)));
    nodes.push(cat);
    nodes.push(body("QuantizeLinear", &strs(&["cf".into(), "$0".into(), opt(cx, 1)]), &["y"]));
    expand(cx, nodes, &["y"])
}

/// The values of a float tensor (f32 or f16).
fn floats(t: &TensorData) -> Option<Vec<f64>> {
    match t.ty().dtype {
        DType::F32 => t.to_f32().map(|v| v.into_iter().map(f64::from).collect()),
        DType::F16 | DType::BF16 => {
            let to = dlc_ir::TensorType { dtype: DType::F32, shape: t.ty().shape.clone() };
            let cast = dlc_ir::Op::Cast(dlc_ir::ops::Cast::new(DType::F32));
            let f = dlc_interp::eval(&cast, std::slice::from_ref(t), &[to]).ok()?;
            floats(f.first()?)
        }
        _ => None,
    }
}

/// MatMulNBits(A, B, scales, zero_points?, g_idx?, bias?): `B` holds `N` rows of `K`
/// `bits`-bit unsigned codes in blocks of `block_size` (low bits first in each byte),
/// each block with a scale and a zero point (packed codes like B's, or floats; `2^(bits
/// - 1)` when absent). B, its scales and zero points must be constants: the f32 weights
/// `(code - zero point) * scale` are made at compile time, then a MatMul.
fn matmul_nbits(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (k, n, bits, block) = (cx.int("K", 0), cx.int("N", 0), cx.int("bits", 4), cx.int("block_size", 0));
    if k <= 0 || n <= 0 || block < 16 || !(block as u64).is_power_of_two() {
        return Err(format!("K {k}, N {n} and block_size {block} (a power of two, at least 16) are required"));
    }
    if bits != 4 && bits != 8 {
        return Err(format!("bits={bits} is not supported (4 or 8)"));
    }
    if has(cx, 4) {
        return Err("g_idx is not supported yet".into());
    }
    let (k, n, bits, block) = (k as usize, n as usize, bits as usize, block as usize);
    let blocks = k.div_ceil(block);
    let per_byte = 8 / bits;
    let blob = block / per_byte;
    let b = cx.const_input(1)?.ok_or("B must be a constant (an initializer)")?;
    let codes = b.bytes();
    if b.ty().dtype != DType::U8 || codes.len() != n * blocks * blob {
        return Err(format!("B must be uint8 [{n}, {blocks}, {blob}], got {}", b.ty()));
    }
    let scales = cx.const_input(2)?.ok_or("scales must be a constant")?;
    let scales = floats(&scales).ok_or("scales must be floats")?;
    if scales.len() != n * blocks {
        return Err(format!("scales must hold {} values, got {}", n * blocks, scales.len()));
    }
    let code = |bytes: &[u8], i: usize| -> u8 {
        let byte = bytes[i / per_byte];
        let shift = (i % per_byte) * bits;
        (byte >> shift) & ((1u16 << bits) - 1) as u8
    };
    let default_zp = (1u32 << (bits - 1)) as f64;
    let zps: Vec<f64> = match cx.const_input(3)? {
        None if has(cx, 3) => return Err("zero_points must be a constant".into()),
        None => vec![default_zp; n * blocks],
        Some(z) if z.ty().dtype == DType::U8 => {
            // Packed like B: each row's block zero points, rows padded to whole bytes.
            let row = (blocks * bits).div_ceil(8);
            if z.bytes().len() != n * row {
                return Err(format!("zero_points must be uint8 [{n} * {row}], got {}", z.ty()));
            }
            (0..n)
                .flat_map(|r| (0..blocks).map(move |j| (r, j)))
                .map(|(r, j)| code(&z.bytes()[r * row..(r + 1) * row], j) as f64)
                .collect()
        }
        Some(z) => {
            let v = floats(&z).ok_or("zero_points must be uint8 or floats")?;
            if v.len() != n * blocks {
                return Err(format!("zero_points must hold {} values", n * blocks));
            }
            v
        }
    };
    // W[k][n] = (code - zp) * scale, stored [K, N] for A @ W.
    let mut w = vec![0f32; k * n];
    for r in 0..n {
        let row = &codes[r * blocks * blob..(r + 1) * blocks * blob];
        for kk in 0..k {
            let j = kk / block;
            let q = code(row, kk) as f64;
            w[kk * n + r] = ((q - zps[r * blocks + j]) * scales[r * blocks + j]) as f32;
        }
    }
    let a = cx.input(0)?;
    let dt = cx.ty(a).dtype;
    let mut wv = cx.add_const(TensorData::from_f32(&[k as u64, n as u64], &w).ok_or("internal: weights")?);
    if dt != DType::F32 {
        wv = cx.add1("weights", dlc_ir::ops::Cast::new(dt), &[wv])?;
    }
    let mut y = cx.add1("matmul", dlc_ir::ops::MatMul { act: dlc_ir::ops::Activation::None }, &[a, wv])?;
    if let Some(bias) = cx.opt_input(5)? {
        y = cx.add1("bias", dlc_ir::ops::Add {}, &[y, bias])?;
    }
    Ok(vec![y])
}

/// MultiHeadAttention(query, key, value, bias?, key_padding_mask?, attention_bias?,
/// past_key?, past_value?): 3-D query, key and value (`[B, S, D]`, `[B, L, D]`,
/// `[B, L, Dv]`) split into `num_heads`, as ONNX Attention computes them (`scale` when
/// given, causal when `unidirectional`, aligned to the end of the keys); `bias` adds to
/// Q, K and V first; the cache `[B, N, P, H]` goes before the new keys and values
/// (`present_key` / `present_value` are the joined `[B, N, P + L, H]`). As ONNX
/// Runtime: `key_padding_mask` as each row's key count (`[B]`) or a 0/1 mask over the
/// keys (`[B, P + L]`), a masked key's score set to `mask_filter_value`, and the
/// `attention_bias` (`[B or 1, N or 1, S, P + L]`) added. Also packed QKV `[B, S, N, 3,
/// H]`, packed KV `[B, L, N, 2, H]` and a cross attention's projected keys and values
/// `[B, N, L, H]` (no bias or cache with those). With `past_sequence_length` (`P`, given
/// at run time) the cache is a shared buffer ([`shared_cache`]), and `cache_indirection`
/// picks each beam's past keys. The other mask forms and the qk output are errors.
fn multi_head_attention(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if has(cx, 6) != has(cx, 7) {
        return Err("past_key and past_value must be given together".into());
    }
    if (10..cx.node.input.len()).any(|i| has(cx, i)) || cx.node.output.get(3).is_some_and(|n| !n.is_empty()) {
        return Err("the qk output is not supported yet".into());
    }
    if has(cx, 9) && !has(cx, 8) {
        return Err("cache_indirection needs past_sequence_length (a shared key/value buffer)".into());
    }
    if has(cx, 8) && !has(cx, 6) {
        return Err("past_sequence_length needs past_key and past_value (the shared buffer)".into());
    }
    let heads = cx.int("num_heads", 0);
    if heads <= 0 {
        return Err("num_heads is required".into());
    }
    let fixed = |cx: &NodeCx, v: Value, what: &str| -> Result<Vec<i64>, String> {
        let t = cx.ty(v);
        t.shape
            .as_fixed()
            .map(|d| d.iter().map(|&x| x as i64).collect())
            .ok_or_else(|| format!("{what} needs known dims, got {t}"))
    };
    let ints = |name: &str, v: Vec<i64>| body("Constant", &[], &[name]).with(attr("value_ints", A::Is(v)));
    let mut nodes = vec![ints("bs_flat", vec![0, 0, -1])];
    // Query, key and value as [B, S, D], [B, L, D], [B, L, Dv] (names in the body), the
    // hidden sizes and the key length: separate 3-D inputs, packed QKV [B, S, N, 3, H],
    // packed KV [B, L, N, 2, H], or a cross attention's projected keys and values
    // [B, N, L, H] (transposed to [B, L, N*H]).
    let q = cx.input(0)?;
    let qd = fixed(cx, q, "query")?;
    let unpack = |nodes: &mut Vec<BodyNode<'static>>, from: &str, parts: &[&str]| {
        let n = parts.len() as i64;
        let mut split = body(
            "Split",
            &[from, &format!("{from}_sizes")],
            &parts.iter().map(|p| format!("{p}_5")).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>(),
        );
        split.int.push(("axis", 3));
        nodes.push(ints(&format!("{from}_sizes"), vec![1; n as usize]));
        nodes.push(split);
        for p in parts {
            nodes.push(body("Reshape", &[&format!("{p}_5"), "bs_flat"], &[p]));
        }
    };
    let (qn, kn, vn, d, dv, l): (&str, &str, &str, i64, i64, u64) = match (has(cx, 1), has(cx, 2), qd.len()) {
        (false, false, 5) if qd[3] == 3 && qd[2] == heads => {
            unpack(&mut nodes, "$0", &["q_in", "k_in", "v_in"]);
            ("q_in", "k_in", "v_in", qd[2] * qd[4], qd[2] * qd[4], qd[1] as u64)
        }
        (true, false, 3) => {
            let k = cx.input(1)?;
            let kd = fixed(cx, k, "key")?;
            if kd.len() != 5 || kd[3] != 2 || kd[2] != heads {
                return Err(format!("a key without a value must be packed [B, L, {heads}, 2, H], got {kd:?}"));
            }
            unpack(&mut nodes, "$1", &["k_in", "v_in"]);
            ("$0", "k_in", "v_in", qd[2], kd[2] * kd[4], kd[1] as u64)
        }
        (true, true, 3) => {
            let (k, v) = (cx.input(1)?, cx.input(2)?);
            let (kd, vd) = (fixed(cx, k, "key")?, fixed(cx, v, "value")?);
            match (kd.len(), vd.len()) {
                (3, 3) => ("$0", "$1", "$2", qd[2], vd[2], kd[1] as u64),
                (4, 4) if kd[1] == heads && vd[1] == heads => {
                    if has(cx, 3) || has(cx, 6) {
                        return Err("a bias or a cache with [B, N, L, H] keys and values is not supported yet".into());
                    }
                    let mut tk = body("Transpose", &["$1"], &["k_bsnh"]);
                    tk.ints.push(("perm", vec![0, 2, 1, 3]));
                    let mut tv = body("Transpose", &["$2"], &["v_bsnh"]);
                    tv.ints.push(("perm", vec![0, 2, 1, 3]));
                    nodes.extend([
                        tk,
                        tv,
                        body("Reshape", &["k_bsnh", "bs_flat"], &["k_in"]),
                        body("Reshape", &["v_bsnh", "bs_flat"], &["v_in"]),
                    ]);
                    ("$0", "k_in", "v_in", qd[2], vd[1] * vd[3], kd[2] as u64)
                }
                _ => return Err(format!("key {kd:?} and value {vd:?} must be [B, L, D] or [B, {heads}, L, H]")),
            }
        }
        _ => {
            return Err(format!(
                "query {qd:?} with key {} and value {}: expected separate 3-D inputs, packed QKV [B, S, {heads}, 3, H] or packed KV",
                if has(cx, 1) { "given" } else { "absent" },
                if has(cx, 2) { "given" } else { "absent" }
            ))
        }
    };
    let (mut qn, mut kn, mut vn) = (qn, kn, vn);
    if has(cx, 3) {
        let mut split = body("Split", &["$3", "sizes"], &["qb", "kb", "vb"]);
        split.int.push(("axis", 0));
        let mut sizes = body("Constant", &[], &["sizes"]);
        sizes.ints.push(("value_ints", vec![d, d, dv]));
        nodes.extend([
            sizes,
            split,
            body("Add", &[qn, "qb"], &["qa"]),
            body("Add", &[kn, "kb"], &["ka"]),
            body("Add", &[vn, "vb"], &["va"]),
        ]);
        (qn, kn, vn) = ("qa", "ka", "va");
    }
    // The additive mask over [S, P + L] (broadcast), from the padding mask and the bias.
    let keys = {
        let p = match cx.opt_input(6)? {
            Some(pk) => cx.ty(pk).shape.0.get(2).and_then(|d| d.fixed()).ok_or("past_key must be [B, N, P, H]")?,
            None => 0,
        };
        (l + p) as i64
    };
    let mut mask = None;
    if let Some(m) = cx.opt_input(4)? {
        let mt = cx.ty(m);
        let fill = cx.float("mask_filter_value", -10000.0);
        let ints = |name: &str, v: Vec<i64>| body("Constant", &[], &[name]).with(attr("value_ints", A::Is(v)));
        match mt.shape.rank() {
            // Key counts: key j of row b is kept when j < mask[b].
            1 => nodes.extend([
                ints("key_index", (0..keys).collect()),
                ints("rows", vec![-1, 1]),
                body("Cast", &["$4"], &["counts"]).with(attr("to", A::I(7))),
                body("Reshape", &["counts", "rows"], &["counts_b1"]),
                body("Less", &["key_index", "counts_b1"], &["kept"]),
                body("Cast", &["kept"], &["kept_f"]).with(attr("to", A::I(1))),
            ]),
            2 if mt.shape.0[1] == dlc_ir::Dim::Fixed(keys as u64) => {
                nodes.push(body("Cast", &["$4"], &["kept_f"]).with(attr("to", A::I(1))));
            }
            _ => {
                return Err(format!("key_padding_mask must be [B] or [B, {keys}] (past and new keys), got {mt}"));
            }
        }
        // (1 - kept) * fill, as [B, 1, 1, P + L].
        nodes.extend([
            constant("one", 1.0),
            constant("fill", fill),
            ints("axes12", vec![1, 2]),
            body("Sub", &["one", "kept_f"], &["dropped"]),
            body("Mul", &["dropped", "fill"], &["pad_bias"]),
            body("Unsqueeze", &["pad_bias", "axes12"], &["pad_bias4"]),
        ]);
        mask = Some("pad_bias4");
    }
    if has(cx, 5) {
        mask = Some(match mask {
            Some(m) => {
                nodes.push(body("Add", &[m, "$5"], &["all_bias"]));
                "all_bias"
            }
            None => "$5",
        });
    }
    if has(cx, 8) {
        if mask.is_some() {
            return Err(
                "key_padding_mask and attention_bias with a shared key/value buffer are not supported yet".into()
            );
        }
        let batch = qd[0];
        let past = cx.input(6)?;
        let pd = fixed(cx, past, "past_key")?;
        let max_len = *pd.get(2).ok_or("past_key must be [B, N, max_sequence_length, H]")?;
        let beams = match cx.opt_input(9)? {
            Some(ci) => {
                let cd = fixed(cx, ci, "cache_indirection")?;
                if cd.len() != 3 || cd[2] != max_len || cd[0] * cd[1] != batch {
                    return Err(format!("cache_indirection must be [batch / beams, beams, {max_len}], got {cd:?}"));
                }
                Some(cd[1])
            }
            None => None,
        };
        let shared = SharedCache {
            batch,
            heads,
            qk: d / heads,
            vd: dv / heads,
            max_len,
            new_len: l as i64,
            beams,
            causal: cx.int("unidirectional", 0) != 0,
        };
        nodes.extend(shared_cache(&shared, qn, kn, vn, cx.has("scale").then(|| cx.float("scale", 1.0))));
        return expand_at(cx, nodes, &["y", "pk", "pv"], Some(23));
    }
    let past_k = opt(cx, 6);
    let past_v = opt(cx, 7);
    let mut att = body("Attention", &[qn, kn, vn, mask.unwrap_or(""), &past_k, &past_v], &["y", "pk", "pv"]);
    att.int.extend([("q_num_heads", heads), ("kv_num_heads", heads), ("is_causal", cx.int("unidirectional", 0))]);
    if cx.has("scale") {
        att.attrs.push(attr("scale", A::F(cx.float("scale", 1.0))));
    }
    nodes.push(att);
    // With no cache, the present state is this step's keys and values, split into heads.
    expand_at(cx, nodes, &["y", "pk", "pv"], Some(23))
}

/// MultiHeadAttention over a shared key/value buffer (ONNX Runtime's
/// `past_present_share_buffer`): `past_key` / `past_value` are `[B, N, max_len, H]` of
/// which the first `P` positions hold the past (`P` = `past_sequence_length`, `$8`, a
/// run-time value); the new keys and values are written at positions `P .. P + L`, and
/// the buffers so updated are `present_key` / `present_value`. The query attends to
/// positions below `P + L` (causal: below `P + s + 1` for its row `s`). With beams
/// (`cache_indirection`, `$9`, `[B / beams, beams, max_len]`), row `b`'s past position
/// `t` is read from row `(b / beams) * beams + ci[b / beams, b % beams, t]` of the buffer.
struct SharedCache {
    batch: i64,
    heads: i64,
    /// The query's and keys' head size, the values'.
    qk: i64,
    vd: i64,
    max_len: i64,
    new_len: i64,
    beams: Option<i64>,
    causal: bool,
}

/// [`SharedCache`]'s nodes: `y` `[B, S, N * Hv]`, `pk`, `pv`.
fn shared_cache(c: &SharedCache, q: &str, k: &str, v: &str, scale: Option<f32>) -> Vec<BodyNode<'static>> {
    let ints = |name: &str, v: Vec<i64>| body("Constant", &[], &[name]).with(attr("value_ints", A::Is(v)));
    let int = |name: &str, v: i64| body("Constant", &[], &[name]).with(attr("value_int", A::I(v)));
    let heads = |from: &str, h: i64, to: &str| -> Vec<BodyNode<'static>> {
        let shape = format!("{to}_shape");
        let split = format!("{to}_bsnh");
        let mut t = body("Transpose", &[&split], &[to]);
        t.ints.push(("perm", vec![0, 2, 1, 3]));
        vec![ints(&shape, vec![0, 0, c.heads, h]), body("Reshape", &[from, &shape], &[&split]), t]
    };
    let mut n = Vec::new();
    n.extend(heads(q, c.qk, "q4"));
    n.extend(heads(k, c.qk, "k4"));
    n.extend(heads(v, c.vd, "v4"));
    n.extend([
        // P as an i64 scalar; positions 0 .. max_len; each one's offset from P.
        ints("scalar", vec![]),
        body("Cast", &["$8"], &["p_i64"]).with(attr("to", A::I(7))),
        body("Reshape", &["p_i64", "scalar"], &["p"]),
        ints("t", (0..c.max_len).collect()),
        body("Sub", &["t", "p"], &["rel"]),
        int("zero", 0),
        int("new_len", c.new_len),
        int("last_new", c.new_len - 1),
        body("GreaterOrEqual", &["rel", "zero"], &["from_p"]),
        body("Less", &["rel", "new_len"], &["before_end"]),
        body("And", &["from_p", "before_end"], &["is_new"]),
        body("Max", &["rel", "zero"], &["rel_lo"]),
        body("Min", &["rel_lo", "last_new"], &["new_at"]),
        ints("col", vec![1, 1, c.max_len, 1]),
        body("Reshape", &["is_new", "col"], &["is_new4"]),
        body("Gather", &["k4", "new_at"], &["k_new"]).with(attr("axis", A::I(2))),
        body("Gather", &["v4", "new_at"], &["v_new"]).with(attr("axis", A::I(2))),
        body("Where", &["is_new4", "k_new", "$6"], &["pk"]),
        body("Where", &["is_new4", "v_new", "$7"], &["pv"]),
    ]);
    let (keys, values) = match c.beams {
        Some(beams) => {
            n.extend([
                // Row b's source row for each position: its beam's pick in the past.
                ints("rows_cols", vec![c.batch, c.max_len]),
                body("Cast", &["$9"], &["ci_i64"]).with(attr("to", A::I(7))),
                body("Reshape", &["ci_i64", "rows_cols"], &["ci2"]),
                ints("b", (0..c.batch).collect()),
                int("beams", beams),
                body("Div", &["b", "beams"], &["group"]),
                body("Mul", &["group", "beams"], &["group_base"]),
                ints("as_col", vec![-1, 1]),
                body("Reshape", &["group_base", "as_col"], &["group_base2"]),
                body("Add", &["group_base2", "ci2"], &["picked"]),
                body("Reshape", &["b", "as_col"], &["own"]),
                body("Less", &["t", "p"], &["is_past"]),
                body("Where", &["is_past", "picked", "own"], &["src"]),
                ints("src4_shape", vec![-1, 1, c.max_len, 1]),
                body("Reshape", &["src", "src4_shape"], &["src4"]),
                body("Shape", &["pk"], &["pk_shape"]),
                body("Shape", &["pv"], &["pv_shape"]),
                body("Expand", &["src4", "pk_shape"], &["src_k"]),
                body("Expand", &["src4", "pv_shape"], &["src_v"]),
                body("GatherElements", &["pk", "src_k"], &["k_eff"]).with(attr("axis", A::I(0))),
                body("GatherElements", &["pv", "src_v"], &["v_eff"]).with(attr("axis", A::I(0))),
            ]);
            ("k_eff", "v_eff")
        }
        None => ("pk", "pv"),
    };
    // Positions below P + L (and, causal, at most P + s for query row s).
    n.extend([
        body("Add", &["p", "new_len"], &["total"]),
        body("Less", &["t", "total"], &["filled_t"]),
        ints("as_row", vec![1, c.max_len]),
        body("Reshape", &["filled_t", "as_row"], &["filled"]),
    ]);
    let mask = if c.causal {
        n.extend([
            ints("s", (0..c.new_len).collect()),
            body("Add", &["s", "p"], &["s_at"]),
            ints("as_col2", vec![-1, 1]),
            body("Reshape", &["s_at", "as_col2"], &["s_at2"]),
            body("LessOrEqual", &["t", "s_at2"], &["seen"]),
            body("And", &["seen", "filled"], &["allowed"]),
        ]);
        "allowed"
    } else {
        "filled"
    };
    let mut att = body("Attention", &["q4", keys, values, mask], &["y4"]);
    if let Some(s) = scale {
        att.attrs.push(attr("scale", A::F(s)));
    }
    let mut back = body("Transpose", &["y4"], &["y_bsnh"]);
    back.ints.push(("perm", vec![0, 2, 1, 3]));
    n.extend([att, back, ints("bs_flat2", vec![0, 0, -1]), body("Reshape", &["y_bsnh", "bs_flat2"], &["y"])]);
    n
}

/// RotaryEmbedding (com.microsoft)(input, position_ids, cos_cache, sin_cache): ONNX's
/// RotaryEmbedding (opset 23) with its inputs reordered; a position_ids of one element
/// is the first position, the sequence counting up from it.
fn rotary_embedding(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    if cx.int("is_packed_batching", 0) != 0 {
        return Err("is_packed_batching is not supported yet".into());
    }
    if cx.float("scale", 1.0) != 1.0 {
        return Err("a scale other than 1 is not supported yet".into());
    }
    let x = cx.input(0)?;
    let xt = cx.ty(x);
    let p = cx.input(1)?;
    let mut nodes = Vec::new();
    let mut pos = "$1";
    if cx.ty(p).shape.numel() == Some(1) {
        // [B, S] positions from the offset: offset + 0..S.
        let seq_axis = if xt.shape.rank() == 4 { 2 } else { 1 };
        let int = |name: &str, v: i64| body("Constant", &[], &[name]).with(attr("value_int", A::I(v)));
        let ints = |name: &str, v: Vec<i64>| body("Constant", &[], &[name]).with(attr("value_ints", A::Is(v)));
        let mut seq = body("Shape", &["$0"], &["s"]);
        seq.int.extend([("start", seq_axis), ("end", seq_axis + 1)]);
        let mut batch = body("Shape", &["$0"], &["b"]);
        batch.int.extend([("start", 0), ("end", 1)]);
        let mut cat = body("Concat", &["b", "s"], &["bs"]);
        cat.int.push(("axis", 0));
        nodes.extend([
            seq,
            batch,
            int("zero", 0),
            int("one", 1),
            ints("axis0", vec![0]),
            ints("flat", vec![-1]),
            body("Squeeze", &["s", "axis0"], &["n"]),
            body("Range", &["zero", "n", "one"], &["steps"]),
            body("Reshape", &["$1", "flat"], &["offset"]),
            body("Add", &["steps", "offset"], &["row"]),
            body("Unsqueeze", &["row", "axis0"], &["row2"]),
            cat,
            body("Expand", &["row2", "bs"], &["positions"]),
        ]);
        pos = "positions";
    }
    let mut rot = body("RotaryEmbedding", &["$0", "$2", "$3", pos], &["y"]);
    rot.int.extend([
        ("interleaved", cx.int("interleaved", 0)),
        ("rotary_embedding_dim", cx.int("rotary_embedding_dim", 0)),
    ]);
    if xt.shape.rank() == 3 {
        rot.int.push(("num_heads", cx.int("num_heads", 0)));
    }
    nodes.push(rot);
    expand_at(cx, nodes, &["y"], Some(23))
}

/// `W` (`[D, K, 4H]` int8 or uint8 codes) dequantized with `scale` and `zero` (`[D]`, or
/// `[D, 4H]` per channel) into the LSTM layout `[D, 4H, K]` (f32), at compile time.
fn dequantize_lstm_weights(w: &TensorData, scale: &TensorData, zero: &TensorData) -> Result<TensorData, String> {
    let d = &w.ty().shape.0;
    let dims: Vec<u64> = d.iter().map(|x| x.fixed()).collect::<Option<_>>().ok_or("weights must have known dims")?;
    let [nd, k, g] = dims[..] else { return Err(format!("weights must be 3-D, got {}", w.ty())) };
    let (nd, k, g) = (nd as usize, k as usize, g as usize);
    let codes: Vec<i64> = w.to_i64().ok_or("weights must be 8-bit integers")?;
    let s = floats(scale).ok_or("the scales must be floats")?;
    let z: Vec<i64> = zero.to_i64().ok_or("the zero points must be integers")?;
    let per_channel = s.len() == nd * g;
    if !(per_channel || s.len() == nd) || z.len() != s.len() {
        return Err(format!("scales and zero points must hold {nd} or {} values", nd * g));
    }
    let mut out = vec![0f32; nd * g * k];
    for di in 0..nd {
        for ki in 0..k {
            for gi in 0..g {
                let q = if per_channel { di * g + gi } else { di };
                let v = (codes[(di * k + ki) * g + gi] - z[q]) as f64 * s[q];
                out[(di * g + gi) * k + ki] = v as f32;
            }
        }
    }
    TensorData::from_f32(&[nd as u64, g as u64, k as u64], &out).ok_or_else(|| "internal: weights".into())
}

/// DynamicQuantizeLSTM: an LSTM whose constant int8 or uint8 weights (`[D, input, 4H]`
/// and `[D, H, 4H]`, per-direction or per-channel scales and zero points) multiply
/// quantized inputs and states, as ONNX Runtime computes it: the input sequence and, each
/// step, the previous hidden state are quantized to uint8 over all their elements and
/// the products taken in integers (`rnn::quantized_product`; ONNX Runtime with several
/// threads quantizes a batch's rows in chunks, so batches above one match it at one
/// thread); gates and states are f32. The dequantized weights give the LSTM its shapes.
fn dynamic_quantize_lstm(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let konst = |cx: &mut NodeCx, i: usize, what: &str| -> Result<TensorData, String> {
        cx.const_input(i)?.ok_or_else(|| format!("{what} must be a constant"))
    };
    let (w, r) = (konst(cx, 1, "W")?, konst(cx, 2, "R")?);
    let (ws, wz, rs, rz) = (
        konst(cx, 8, "W_scale")?,
        konst(cx, 9, "W_zero_point")?,
        konst(cx, 10, "R_scale")?,
        konst(cx, 11, "R_zero_point")?,
    );
    let wf = dequantize_lstm_weights(&w, &ws, &wz)?;
    let rf = dequantize_lstm_weights(&r, &rs, &rz)?;
    let dirs = w.ty().shape.0.first().and_then(|d| d.fixed()).unwrap_or(0) as usize;
    let mut per_dir = |codes: &TensorData, scale: &TensorData, zero: &TensorData| -> Result<Vec<QMat>, String> {
        (0..dirs)
            .map(|d| {
                let mut c = |t: &TensorData| -> Result<Value, String> { Ok(cx.add_const(row_of(t, d)?)) };
                Ok(QMat { q: c(codes)?, zp: c(zero)?, scale: c(scale)? })
            })
            .collect()
    };
    let q = Quantized {
        w: per_dir(&w, &ws, &wz)?,
        r: per_dir(&r, &rs, &rz)?,
        w_f32: cx.add_const(wf),
        r_f32: cx.add_const(rf),
    };
    super::rnn::quantized_lstm(cx, &q)
}

/// Row `d` of dim 0 of `t` (a scalar for a 1-D `t`), as a tensor of its own.
fn row_of(t: &TensorData, d: usize) -> Result<TensorData, String> {
    let dims = t.ty().shape.as_fixed().ok_or("a constant with run-time dims")?;
    let (&n, rest) = dims.split_first().ok_or("a scalar where a tensor per direction was expected")?;
    let size = t.bytes().len() / (n.max(1) as usize);
    if d as u64 >= n {
        return Err(format!("has {n} rows, direction {d} needs more"));
    }
    let ty = dlc_ir::TensorType::fixed(t.ty().dtype, rest);
    TensorData::new(ty, t.bytes()[d * size..(d + 1) * size].to_vec().into()).ok_or_else(|| "internal: a row".into())
}
