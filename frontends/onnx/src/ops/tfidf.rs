//! TfIdfVectorizer (opset 9) over integer tokens, built from IR ops: for each n-gram of the
//! pool (a constant) and each skip distance the reference walks, the tokens `k * d`
//! apart are compared with the n-gram's (a slice per position of the n-gram against the
//! pool's column, `And` over the positions), the matches counted along the row, and the
//! counts of each size added into their output columns by a product with a 0/1 matrix
//! (`ngram_indexes`); then TF, IDF or TFIDF weighting. As ONNX's reference counts:
//! unigrams at distance 1 only, longer n-grams at every distance `1..=max_skip_count + 1`,
//! only the sizes `min_gram_length..=max_gram_length`. String tokens (`pool_strings`) are
//! numbered first (each input string by its pool string's number, -1 when none) and
//! counted the same way.
use super::{BuildFn, NodeCx};
use dlc_ir::ops::*;
use dlc_ir::{DType, Dim, TensorData, Value};
use std::collections::HashMap;

pub(crate) fn register(reg: &mut HashMap<&'static str, BuildFn>) {
    reg.insert("TfIdfVectorizer", tfidf);
}

/// The pool's n-grams of one size: their tokens (row-major, `n` each) and output columns.
struct Grams {
    n: usize,
    tokens: Vec<i64>,
    columns: Vec<usize>,
}

fn tfidf(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    build(cx)
}

/// TfIdfVectorizer over integer tokens, or over string tokens (`pool_strings`, a string
/// tensor input): each distinct pool string numbered, each input token mapped to its
/// number (-1 when the pool has no such string), and the integer algorithm run on the
/// numbers.
pub(crate) fn build(cx: &mut NodeCx) -> Result<Vec<Value>, String> {
    let (x, pool) = if cx.has("pool_strings") {
        let strs: Vec<Vec<u8>> =
            cx.node.attribute.iter().find(|a| a.name == "pool_strings").map_or_else(Vec::new, |a| a.strings.clone());
        let name = cx.node.input.first().cloned().unwrap_or_default();
        let s = cx.imp.strings.get(&name).copied().ok_or("pool_strings takes a string tensor input")?;
        let mut ids: HashMap<&[u8], i64> = HashMap::new();
        let mut vocab: Vec<Vec<u8>> = Vec::new();
        let pool: Vec<i64> = strs
            .iter()
            .map(|w| {
                *ids.entry(w.as_slice()).or_insert_with(|| {
                    vocab.push(w.clone());
                    vocab.len() as i64 - 1
                })
            })
            .collect();
        if vocab.is_empty() {
            return Err("pool_strings is empty".into());
        }
        let (at, found) = super::strings::match_strings(cx, s, &vocab)?;
        let none = cx.i64_const(&[], &[-1])?;
        (cx.add1("token_ids", Where {}, &[found, at, none])?, pool)
    } else {
        (cx.input(0)?, cx.ints("pool_int64s"))
    };
    let t = cx.ty(x);
    if !matches!(t.dtype, DType::I32 | DType::I64) {
        return Err(format!("the tokens must be int32 or int64, got {t}"));
    }
    let rank = t.shape.rank();
    if rank == 0 || rank > 2 {
        return Err(format!("the tokens must be [C] or [B, C], got {t}"));
    }
    let (min_n, max_n) = (cx.int("min_gram_length", 0), cx.int("max_gram_length", 0));
    let max_skip = cx.int("max_skip_count", 0);
    if min_n < 1 || max_n < min_n || !(0..=64).contains(&max_skip) {
        return Err(format!(
            "min_gram_length {min_n}, max_gram_length {max_n} and max_skip_count {max_skip} must satisfy 1 <= min \
             <= max and 0 <= skip <= 64"
        ));
    }
    let mode = cx.string("mode", "")?;
    if !matches!(mode.as_str(), "TF" | "IDF" | "TFIDF") {
        return Err(format!("mode '{mode}' is not TF, IDF or TFIDF"));
    }
    let counts = cx.ints("ngram_counts");
    let indexes = cx.ints("ngram_indexes");
    let weights = cx.floats("weights");
    let out_size = indexes.iter().copied().max().map_or(0, |m| m + 1);
    if indexes.iter().any(|&i| i < 0) || out_size == 0 || out_size > 1 << 24 {
        return Err(format!("ngram_indexes must be non-negative and name at most 2^24 columns, got {out_size}"));
    }
    let out_size = out_size as usize;
    if !weights.is_empty() && weights.len() != out_size {
        return Err(format!("weights has {} values, the output {out_size} columns", weights.len()));
    }
    // The pool's n-grams by size, numbered in pool order (sizes outside the range keep
    // their numbers but are not counted); a repeated n-gram takes its last number, as the
    // reference's map does.
    let mut by_size: Vec<Grams> = Vec::new();
    let mut id = 0usize;
    for (i, &start) in counts.iter().enumerate() {
        let n = i + 1;
        let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
        if start < 0 || end < start || end as usize > pool.len() {
            return Err(format!("ngram_counts {counts:?} do not split the pool of {}", pool.len()));
        }
        let items = &pool[start as usize..end as usize];
        let grams = items.len() / n;
        let counted = (min_n as usize..=max_n as usize).contains(&n);
        let mut g = Grams { n, tokens: Vec::new(), columns: Vec::new() };
        for k in 0..grams {
            let col = *indexes.get(id).ok_or_else(|| format!("ngram_indexes has no entry for n-gram {id}"))?;
            id += 1;
            if !counted {
                continue;
            }
            let toks = &items[k * n..(k + 1) * n];
            match (0..g.columns.len()).find(|&j| &g.tokens[j * n..(j + 1) * n] == toks) {
                Some(j) => g.columns[j] = col as usize,
                None => {
                    g.tokens.extend_from_slice(toks);
                    g.columns.push(col as usize);
                }
            }
        }
        if !g.columns.is_empty() {
            by_size.push(g);
        }
    }
    // Tokens as [B, C] i64.
    let x = if t.dtype == DType::I64 { x } else { cx.add1("tokens_i64", Cast::new(DType::I64), &[x])? };
    let x = if rank == 1 { cx.add1("tokens_row", Reshape { shape: vec![1, -1], allowzero: false }, &[x])? } else { x };
    // A run-time row length: the rows padded with a token no n-gram holds by the longest
    // span read, so every start position exists (a short row counts what fits, as the
    // reference does) and no extent depends on the row being long enough.
    let longest = by_size.iter().map(|g| (g.n as i64 - 1) * if g.n == 1 { 1 } else { max_skip + 1 }).max();
    let (x, c) = match (cx.ty(x).shape.0[1].clone(), longest) {
        (c @ Dim::Sym(_), Some(span)) if span > 0 => {
            // A small negative token no n-gram holds (exact as the pad's f64 value).
            let none = (1..).map(|k: i64| -k).find(|v| !pool.contains(v)).ok_or("internal: no free token")?;
            let padded =
                cx.add1("tokens_padded", Pad::new(vec![0, 0, 0, span], PadMode::Constant, none as f64), &[x])?;
            let c = Dim::from_expr(&c.expr() + &dlc_ir::Expr::c(span)).ok_or("internal: the padded length")?;
            (padded, c)
        }
        (c, _) => (x, c),
    };
    let mut total: Option<Value> = None;
    for g in &by_size {
        let m = g.columns.len();
        let distances: Vec<i64> = if g.n == 1 { vec![1] } else { (1..=max_skip + 1).collect() };
        let mut per_gram: Option<Value> = None;
        for d in distances {
            let span = (g.n as i64 - 1) * d;
            // Starts whose n-gram fits: C - span of them (none when the row is too short).
            if c.fixed().is_some_and(|c| (c as i64) <= span) {
                continue;
            }
            let mut hit: Option<Value> = None;
            for k in 0..g.n {
                let from = k as i64 * d;
                let tok = match c.fixed() {
                    Some(_) => {
                        let to = span - from;
                        let end = if to == 0 { i64::MAX } else { -to };
                        let sl = Slice { starts: vec![from], ends: vec![end], axes: vec![1], steps: vec![] };
                        cx.add1(&format!("n{}_d{d}_tok{k}", g.n), sl, &[x])?
                    }
                    None => {
                        // A run-time row length: positions `from..from + C - span` of the
                        // padded rows gathered.
                        let len = &c.expr() - &dlc_ir::Expr::c(span);
                        let at = Iota { len: len.to_string(), start: from, delta: 1, dtype: DType::I64 };
                        let at = cx.add1(&format!("n{}_d{d}_at{k}", g.n), at, &[])?;
                        cx.add1(&format!("n{}_d{d}_tok{k}", g.n), Gather { axis: 1 }, &[x, at])?
                    }
                };
                let tok = cx.add1(
                    &format!("n{}_d{d}_tok{k}_col", g.n),
                    Reshape { shape: vec![0, -1, 1], allowzero: false },
                    &[tok],
                )?;
                let col: Vec<i64> = (0..m).map(|j| g.tokens[j * g.n + k]).collect();
                let col = cx.i64_const(&[1, 1, m as u64], &col)?;
                let eq = cx.add1(&format!("n{}_d{d}_eq{k}", g.n), Equal {}, &[tok, col])?;
                hit = Some(match hit {
                    None => eq,
                    Some(h) => cx.add1(&format!("n{}_d{d}_and{k}", g.n), And {}, &[h, eq])?,
                });
            }
            let hit = hit.ok_or("internal: an empty n-gram")?;
            let hit = cx.add1(&format!("n{}_d{d}_hits", g.n), Cast::new(DType::F32), &[hit])?;
            let count =
                cx.add1(&format!("n{}_d{d}_count", g.n), ReduceSum { axes: vec![1], keepdims: false }, &[hit])?;
            per_gram = Some(match per_gram {
                None => count,
                Some(p) => cx.add1(&format!("n{}_d{d}_sum", g.n), Add {}, &[p, count])?,
            });
        }
        let Some(per_gram) = per_gram else { continue };
        // [B, m] x [m, out]: each n-gram's count into its column.
        let mut onehot = vec![0f32; m * out_size];
        for (j, &col) in g.columns.iter().enumerate() {
            onehot[j * out_size + col] = 1.0;
        }
        let onehot = TensorData::from_f32(&[m as u64, out_size as u64], &onehot).ok_or("internal: columns")?;
        let onehot = cx.add_const(onehot);
        let cols = cx.add1(&format!("n{}_columns", g.n), MatMul { act: Activation::None }, &[per_gram, onehot])?;
        total = Some(match total {
            None => cols,
            Some(tv) => cx.add1(&format!("n{}_total", g.n), Add {}, &[tv, cols])?,
        });
    }
    let b = cx.ty(x).shape.0[0].clone();
    let counts = match total {
        Some(tv) => tv,
        None => {
            // Nothing can match (no n-gram of a counted size, or rows too short): zeros.
            let z = TensorData::from_f32(&[1, out_size as u64], &vec![0f32; out_size]).ok_or("internal: zeros")?;
            let z = cx.add_const(z);
            match b {
                Dim::Fixed(1) => z,
                _ => {
                    let zb = cx.add1(
                        "zero_col",
                        Slice { starts: vec![0], ends: vec![1], axes: vec![1], steps: vec![] },
                        &[x],
                    )?;
                    let zb = cx.add1("zero_colf", Cast::new(DType::F32), &[zb])?;
                    let zero = cx.add_const(TensorData::from_f32(&[1, 1], &[0.0]).ok_or("internal")?);
                    let zb = cx.add1("zero_rows", Mul {}, &[zb, zero])?;
                    cx.add1("zeros", Add {}, &[zb, z])?
                }
            }
        }
    };
    let w = (!weights.is_empty())
        .then(|| TensorData::from_f32(&[1, out_size as u64], &weights).map(|t| cx.add_const(t)))
        .flatten();
    let y = match (mode.as_str(), w) {
        ("TF", _) | ("TFIDF", None) => counts,
        ("TFIDF", Some(w)) => cx.add1("tfidf", Mul {}, &[counts, w])?,
        (_, w) => {
            // IDF: the weight (or 1) where the n-gram occurs.
            let zero = cx.add_const(TensorData::from_f32(&[1], &[0.0]).ok_or("internal")?);
            let seen = cx.add1("seen", Greater {}, &[counts, zero])?;
            let on = match w {
                Some(w) => w,
                None => cx.add_const(TensorData::from_f32(&[1], &[1.0]).ok_or("internal")?),
            };
            cx.add1("idf", Where {}, &[seen, on, zero])?
        }
    };
    if rank == 1 {
        return cx.add("", Reshape { shape: vec![out_size as i64], allowzero: false }, &[y]);
    }
    Ok(vec![y])
}
