//! Shape computations over run-time dims, folded at import into dim expressions.
//!
//! Exporters with dynamic axes compute Reshape targets from `Shape` (`x.view(x.size(0),
//! -1)` becomes Shape -> Gather -> Unsqueeze -> Concat -> Reshape). When the tensor
//! whose shape is taken has symbolic dims, its `Shape` is not a constant, but it is a
//! list of dim expressions: the importer keeps such values aside (a [`ShapeVal`] per
//! ONNX name, never an IR value) and evaluates the integer ops on them here, so the
//! Reshape at the end gets a target of dims. A node that consumes a shape value and is
//! not handled here is an error naming it (nothing computes with a shape value at run
//! time). A result whose elements are all constants becomes an ordinary constant.
use super::NodeCx;
use dlc_ir::ops::{normalize_axis, Reshape};
use dlc_ir::{Dim, Expr, TensorData, Value};

/// A 0-D or 1-D integer tensor whose elements are dim expressions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShapeVal {
    /// The elements (a 0-D tensor has one).
    pub elems: Vec<Expr>,
    /// Whether the tensor is 0-D.
    pub scalar: bool,
}

/// What a node here produces: an IR value or a shape value.
pub(crate) enum Out {
    Value(Value),
    Shape(ShapeVal),
    /// A sequence's elements (`ops::sequence`).
    Seq(Vec<Value>),
    /// A sequence whose length only the run knows (`ops::sequence::RunSeq`).
    RunSeq(super::sequence::RunSeq),
    /// A string tensor (`ops::strings`).
    Str(super::strings::StrVal),
    /// An empty optional (`ops::optional`).
    Absent,
    /// An optional whose presence only the run knows: its element (as it would be were it
    /// present) and a bool scalar saying whether it is (`ops::optional`).
    Maybe(Box<Out>, dlc_ir::Value),
}

/// The ops this module evaluates on shape values.
pub(crate) const OPS: &[&str] = &[
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Identity",
    "Slice",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Reshape",
    "Expand",
    "ConstantOfShape",
    "Range",
    "Equal",
    "ReduceMin",
    "ReduceMax",
    "ReduceProd",
    "ReduceSum",
    "Min",
    "Max",
    "TopK",
    "Neg",
    "Where",
    "Mod",
    "Pad",
    "Ceil",
    "Floor",
];

/// Elementwise ops that compute on shape values as data, while the model runs (the shape
/// values become tensors, [`shape_tensor`]): their results are tensors, not dims (T5's
/// relative-position buckets take the Log and Abs of positions).
const DATA_OPS: &[&str] = &[
    "Abs",
    "Sign",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Floor",
    "Ceil",
    "Round",
    "Pow",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "BitShift",
];

/// Whether `e` is at least 0 for every binding of its symbols (run-time dims, each at
/// least 0), by [`lower_bound`]. Conservative: `false` may be non-negative too.
pub(crate) fn nonneg(e: &Expr) -> bool {
    lower_bound(e).is_some_and(|b| b >= 0) || lower_bound(&floors_as_moduli(e)).is_some_and(|b| b >= 0)
}

/// `e` with each term `k * floor(a / d)` (`d` a positive constant dividing `k`) written
/// `(k / d) * (a - a mod d)`, which cancels against other terms of `a`: a padding to
/// whole strides, `32 * floor((h + 31) / 32) - h`, becomes `31 - (h + 31) mod 32`.
fn floors_as_moduli(e: &Expr) -> Expr {
    use dlc_sym::Atom;
    let mut out = Expr::c(0);
    for (atoms, k) in e.terms() {
        let term = match atoms {
            [Atom::Div(a, d)] if d.as_const().is_some_and(|d| d > 0 && k % d == 0) => {
                let q = k / d.as_const().expect("checked");
                (&**a - &a.modulo(d)).scale(q)
            }
            _ => atoms.iter().fold(Expr::c(k), |p, a| &p * &Expr::atom(a.clone())),
        };
        out = &out + &term;
    }
    out
}

/// A lower bound of `e` over every binding of its symbols (each at least 0, with no
/// upper bound), or `None` where none is found: a term with a positive coefficient and
/// atoms bounded below by 0 or more contributes its atoms' bounds, a negative one only
/// when constant; floor divisions by positive constants, minima, maxima and moduli by
/// positive constants are bounded from their operands.
fn lower_bound(e: &Expr) -> Option<i64> {
    use dlc_sym::Atom;
    let atom = |a: &Atom| -> Option<i64> {
        match a {
            Atom::Sym(_) => Some(0),
            Atom::Div(x, y) => {
                let d = y.as_const().filter(|&d| d > 0)?;
                Some(lower_bound(x)?.div_euclid(d))
            }
            Atom::Min(x, y) => Some(lower_bound(x)?.min(lower_bound(y)?)),
            Atom::Max(x, y) => match (lower_bound(x), lower_bound(y)) {
                (Some(p), Some(q)) => Some(p.max(q)),
                (p, q) => p.or(q),
            },
            Atom::Mod(_, y) => y.as_const().filter(|&d| d > 0).map(|_| 0),
            _ => None,
        }
    };
    let mut sum: i64 = 0;
    for (atoms, c) in e.terms() {
        let term = if atoms.is_empty() {
            c
        } else if let ([Atom::Mod(_, d)], true) = (atoms, c < 0) {
            // A modulus by a positive constant d is at most d - 1.
            let d = d.as_const().filter(|&d| d > 0)?;
            c.checked_mul(d - 1)?
        } else {
            if c < 0 {
                return None;
            }
            let mut prod: i64 = c;
            for a in atoms {
                let b = atom(a)?;
                if b < 0 {
                    // A product with a factor that may be negative: unbounded below
                    // unless it stands alone.
                    if atoms.len() > 1 {
                        return None;
                    }
                }
                prod = prod.checked_mul(b)?;
            }
            prod
        };
        sum = sum.checked_add(term)?;
    }
    Some(sum)
}

/// For an arithmetic node (Add, Sub, Mul, Div, Mod, Min, Max, Concat, Equal) whose
/// operands mix shape values and tensors known only at run time: makes each shape value
/// operand an IR tensor (constants as they are, a run-time dim `e` as the sum of an
/// Iota of `e` ones) so that the node computes at run time; returns whether it did.
pub(crate) fn materialize_for_data(cx: &mut NodeCx) -> Result<bool, String> {
    let arith =
        matches!(cx.node.op_type.as_str(), "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Min" | "Max" | "Concat" | "Equal");
    let names: Vec<String> = cx.node.input.clone();
    if !cx.node.domain.is_empty() {
        return Ok(false);
    }
    // A quotient (`h / 32.0`) is dims again through Ceil, Floor or a cast to integers;
    // anything else computes on its value as data.
    if names.iter().any(|n| cx.imp.float_quotients.contains_key(n)) && !takes_quotient(cx)? {
        materialize(cx, &names)?;
        return Ok(true);
    }
    let float_in = names.iter().any(|n| float_shape(cx, n));
    if float_in && matches!(cx.node.op_type.as_str(), "Ceil" | "Floor") {
        return Ok(false);
    }
    if float_in && cx.node.op_type == "Div" && exact_divisor(cx)?.is_some() {
        return Ok(false);
    }
    // Elementwise ops that have no meaning on dims compute at run time; so does a Where
    // whose condition only the run knows.
    let as_data = DATA_OPS.contains(&cx.node.op_type.as_str())
        || (cx.node.op_type == "Where" && !cx.imp.shape_values.contains_key(&names[0]) && cx.const_input(0)?.is_none());
    if as_data {
        materialize(cx, &names)?;
        return Ok(true);
    }
    if !arith {
        return Ok(false);
    }
    // A quotient of float shape values (`float(h) / float(h_resized)`) is not a dim.
    let mut data = matches!(cx.node.op_type.as_str(), "Div" | "Mod") && names.iter().any(|n| float_shape(cx, n));
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || cx.imp.shape_values.contains_key(n) {
            continue;
        }
        // A float constant that is not a whole number (`h * 0.5`) makes no dim, nor
        // does a constant of more than one axis (a shape value has at most one).
        data |= cx.const_input(i)?.is_none_or(|t| t.ty().shape.rank() > 1 || integral(&t).is_none());
    }
    if data {
        materialize(cx, &names)?;
    }
    Ok(data)
}

/// Each shape value among `names` bound as an IR tensor ([`shape_tensor`]; a float shape
/// value cast to its float type), for the node to compute on at run time.
fn materialize(cx: &mut NodeCx, names: &[String]) -> Result<(), String> {
    for n in names {
        let Some(s) = cx.imp.shape_values.get(n).cloned() else { continue };
        let v = shape_tensor(cx, &s, n)?;
        let q = cx.imp.float_quotients.get(n).copied();
        let v = typed(cx, v, n, q, n)?;
        cx.imp.values.insert(n.clone(), v);
    }
    Ok(())
}

/// Whether ONNX value `n` is a shape value that a Cast made floats.
fn float_shape(cx: &NodeCx, n: &str) -> bool {
    cx.imp.shape_values.contains_key(n) && cx.imp.shape_dtypes.get(n).is_some_and(|d| d.is_float())
}

/// The values of constant `t` as integers: integer types, or floats that are all whole
/// numbers within 2^53 (`32.0` multiplying a float shape value); `None` otherwise.
fn integral(t: &TensorData) -> Option<Vec<i64>> {
    if let Some(v) = t.to_i64() {
        return Some(v);
    }
    if !t.ty().dtype.is_float() {
        return None;
    }
    let f = t.to_f64()?;
    f.iter().all(|v| v.fract() == 0.0 && v.abs() <= (1u64 << 53) as f64).then(|| f.iter().map(|&v| v as i64).collect())
}

/// For a Div of a float shape value by a constant: the divisor when it is one whole
/// number of at least 1 (the quotient stays exact, `ops::shapes` keeps it as a float
/// quotient); `None` otherwise (the Div computes as data).
fn exact_divisor(cx: &mut NodeCx) -> Result<Option<i64>, String> {
    let (x, y) = (cx.node.input[0].clone(), cx.node.input.get(1).cloned().unwrap_or_default());
    if !float_shape(cx, &x) || !cx.imp.shape_values.contains_key(&x) {
        return Ok(None);
    }
    if y.is_empty() || cx.imp.shape_values.contains_key(&y) {
        return Ok(None);
    }
    let Some(t) = cx.const_input(1)? else { return Ok(None) };
    Ok(match integral(&t).as_deref() {
        Some(&[d]) if d >= 1 && t.ty().dtype.is_float() => Some(d),
        _ => None,
    })
}

/// Whether node `cx`, reading a float quotient, keeps it symbolic: Ceil and Floor (dims
/// again), Identity and casts to floats (the same quotient), a cast to integers of
/// quotients of non-negative dims (a floor), a further exact division.
fn takes_quotient(cx: &mut NodeCx) -> Result<bool, String> {
    let x = cx.node.input.first().cloned().unwrap_or_default();
    Ok(match cx.node.op_type.as_str() {
        "Ceil" | "Floor" | "Identity" => true,
        "Cast" => match cx.int("to", 7) {
            1 | 10 | 11 => true,
            6 | 7 => cx.imp.shape_values.get(&x).is_some_and(|s| s.elems.iter().all(nonneg)),
            _ => false,
        },
        "Div" => {
            cx.imp.float_quotients.contains_key(&x)
                && !cx.imp.float_quotients.contains_key(cx.node.input.get(1).map_or("", String::as_str))
                && exact_divisor(cx)?.is_some()
        }
        _ => false,
    })
}

/// Shape value `s` as an i64 tensor computed while the model runs: constants as they
/// are, a run-time value `e` as the sum of an Iota of `e` ones, or, where `e` is
/// provably at most 0 (a negated dim), of `-e` minus ones.
pub(crate) fn shape_tensor(cx: &mut NodeCx, s: &ShapeVal, n: &str) -> Result<Value, String> {
    let mut parts = Vec::with_capacity(s.elems.len());
    for (j, e) in s.elems.iter().enumerate() {
        parts.push(match e.as_const() {
            Some(c) => cx.i64_const(&[1], &[c])?,
            None => {
                let neg = &Expr::c(0) - e;
                // Provably at most 0 (a negated dim): minus ones. Otherwise a dim the
                // model uses as one (`S - 1`, at least 0 for any S it runs with).
                let (len, one) = if !nonneg(e) && nonneg(&neg) { (neg, -1) } else { (e.clone(), 1) };
                let ones = dlc_ir::ops::Iota { len: len.to_string(), start: one, delta: 0, dtype: dlc_ir::DType::I64 };
                let ones = cx.add1(&format!("{n}_{j}_ones"), ones, &[])?;
                let sum = dlc_ir::ops::ReduceSum { axes: vec![0], keepdims: true };
                let v = cx.add1(&format!("{n}_{j}_value"), sum, &[ones])?;
                cx.imp.dim_tensors.insert(v, vec![e.clone()]);
                v
            }
        });
    }
    let v = match parts.len() {
        1 => parts[0],
        _ => cx.add1(&format!("{n}_values"), dlc_ir::ops::Concat { axis: 0 }, &parts)?,
    };
    cx.imp.dim_tensors.insert(v, s.elems.clone());
    if s.scalar {
        return cx.add1(&format!("{n}_scalar"), Reshape { shape: vec![], allowzero: false }, &[v]);
    }
    Ok(v)
}

/// Whether `Shape`/`Size` of `x` is not a constant (it has run-time dims).
pub(crate) fn symbolic_shape(cx: &mut NodeCx) -> Result<bool, String> {
    let x = cx.input(0)?;
    Ok(!cx.ty(x).shape.is_fixed())
}

/// Operand `i` as a shape value: one the importer keeps, or a known integer constant.
fn operand(cx: &mut NodeCx, i: usize) -> Result<ShapeVal, String> {
    let name = cx.node.input.get(i).cloned().unwrap_or_default();
    if let Some(s) = cx.imp.shape_values.get(&name) {
        return Ok(s.clone());
    }
    let v = cx.input(i)?;
    let rank = cx.ty(v).shape.rank();
    let t = cx.const_input(i)?.filter(|_| rank <= 1).ok_or_else(|| {
        format!("operand {i} ('{name}') must be a constant or a shape when another operand is a run-time shape")
    })?;
    let ints = integral(&t).ok_or_else(|| format!("operand {i} ('{name}') must be integers"))?;
    Ok(ShapeVal { elems: ints.into_iter().map(Expr::c).collect(), scalar: rank == 0 })
}

fn ints_of(s: &ShapeVal, what: &str) -> Result<Vec<i64>, String> {
    s.elems.iter().map(|e| e.as_const().ok_or_else(|| format!("{what} must be constants, got {e}"))).collect()
}

/// Evaluates node `cx` on shape values (see the module doc).
pub(crate) fn build(cx: &mut NodeCx) -> Result<Vec<Out>, String> {
    let op = cx.node.op_type.clone();
    if let Some(out) = matrix(cx)? {
        return Ok(vec![out]);
    }
    let shape = match op.as_str() {
        // Sizes given as a shape of run-time dims.
        "Resize" if cx.node.domain.is_empty() => {
            return Ok(super::resize::resize(cx)?.into_iter().map(Out::Value).collect())
        }
        // The shape of a shape value: its length.
        "Shape" if cx.imp.shape_values.contains_key(&cx.node.input[0]) => {
            let s = operand(cx, 0)?;
            let dims = if s.scalar { vec![] } else { vec![Expr::c(s.elems.len() as i64)] };
            let (start, end) = (cx.int("start", 0), cx.int("end", dims.len() as i64));
            let keep = start <= 0 && end >= dims.len() as i64;
            ShapeVal { elems: if keep { dims } else { vec![] }, scalar: false }
        }
        "Size" if cx.imp.shape_values.contains_key(&cx.node.input[0]) => {
            let s = operand(cx, 0)?;
            ShapeVal { elems: vec![Expr::c(s.elems.len() as i64)], scalar: true }
        }
        // Amounts computed from run-time dims.
        "Pad" if cx.node.domain.is_empty() && !cx.imp.shape_values.contains_key(&cx.node.input[0]) => {
            return Ok(super::movement::pad(cx)?.into_iter().map(Out::Value).collect())
        }
        // k computed from run-time dims (bound and checked at run time).
        "TopK" => return Ok(super::bind::top_k(cx)?.into_iter().map(Out::Value).collect()),
        "Expand" => {
            let x = cx.input(0)?;
            let target = operand(cx, 1)?;
            return Ok(vec![Out::Value(expand_to(cx, x, &target.elems, "")?)]);
        }
        "ConstantOfShape" => {
            let target = operand(cx, 0)?;
            let v = fill_value(cx)?;
            return Ok(vec![Out::Value(expand_to(cx, v, &target.elems, "")?)]);
        }
        "Range" => return Ok(vec![Out::Value(range(cx)?)]),
        // Comparisons of dims decided at compile time: equal expressions are equal; a
        // run-time dim (at least 0) is never a negative constant; otherwise unknown.
        "Equal" => {
            let (x, y) = (operand(cx, 0)?, operand(cx, 1)?);
            let n = x.elems.len().max(y.elems.len());
            let at = |s: &ShapeVal, i: usize| if s.elems.len() == 1 { s.elems[0].clone() } else { s.elems[i].clone() };
            if !(x.elems.len() == n || x.elems.len() == 1) || !(y.elems.len() == n || y.elems.len() == 1) {
                return Err(format!("shapes of {} and {} elements do not broadcast", x.elems.len(), y.elems.len()));
            }
            let mut out = Vec::with_capacity(n);
            let mut undecided = None;
            for i in 0..n {
                let (a, b) = (at(&x, i), at(&y, i));
                let eq = if a == b {
                    Some(true)
                } else {
                    match (a.as_const(), b.as_const()) {
                        (Some(p), Some(q)) => Some(p == q),
                        (Some(c), None) | (None, Some(c)) if c < 0 => Some(false),
                        _ => None,
                    }
                };
                match eq {
                    Some(e) => out.push(e),
                    None => {
                        undecided = Some((a, b));
                        break;
                    }
                }
            }
            if let Some((a, b)) = undecided {
                // Only the run-time values decide: compare while the model runs (an If on
                // the result then computes both branches and selects).
                let name = |cx: &NodeCx, i: usize| cx.node.input.get(i).cloned().unwrap_or_default();
                let (nx, ny) = (name(cx, 0), name(cx, 1));
                let (tx, ty) = match (shape_tensor(cx, &x, &nx), shape_tensor(cx, &y, &ny)) {
                    (Ok(p), Ok(q)) => (p, q),
                    _ => {
                        return Err(format!(
                            "compares dims {a} and {b}, which only the run-time values decide (pin the dims)"
                        ))
                    }
                };
                if n == 1 {
                    if let Some(out) = cx.node.output.first().filter(|o| !o.is_empty()) {
                        cx.imp.dim_conditions.insert(out.clone(), (a, b));
                    }
                }
                return Ok(vec![Out::Value(cx.add1("", dlc_ir::ops::Equal {}, &[tx, ty])?)]);
            }
            let dims: &[u64] = if x.scalar && y.scalar { &[] } else { &[n as u64] };
            let bytes: Vec<u8> = out.iter().map(|&b| b as u8).collect();
            let t = TensorData::new(dlc_ir::TensorType::fixed(dlc_ir::DType::Bool, dims), bytes.into())
                .ok_or("internal: a bool vector")?;
            return Ok(vec![Out::Value(cx.add_const(t))]);
        }
        "Shape" => {
            let x = cx.input(0)?;
            let dims = cx.ty(x).shape.0;
            let r = dims.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (start, end) = (clamp(cx.int("start", 0)), clamp(cx.int("end", r)));
            ShapeVal { elems: dims[start..end.max(start)].iter().map(Dim::expr).collect(), scalar: false }
        }
        "Size" => {
            let x = cx.input(0)?;
            ShapeVal { elems: vec![Dim::product(&cx.ty(x).shape.0).expr()], scalar: true }
        }
        "Gather" => {
            let data = operand(cx, 0)?;
            let idx = operand(cx, 1)?;
            if data.scalar || cx.int("axis", 0) != 0 {
                return Err("gathers from a shape along axis 0 only".into());
            }
            let n = data.elems.len();
            let mut elems = Vec::new();
            for i in ints_of(&idx, "indices into a shape")? {
                let k = normalize_axis(i, n).ok_or_else(|| format!("index {i} out of range for a shape of {n}"))?;
                elems.push(data.elems[k].clone());
            }
            ShapeVal { elems, scalar: idx.scalar }
        }
        "Unsqueeze" | "Squeeze" => {
            let s = operand(cx, 0)?;
            let axes = cx.ints_input_or_attr(1, "axes", 13)?.unwrap_or_default();
            let ok_axes = axes.is_empty() || axes == [0] || axes == [-1];
            match (op.as_str(), s.scalar) {
                ("Unsqueeze", true) if ok_axes && !axes.is_empty() => ShapeVal { scalar: false, ..s },
                ("Squeeze", false) if ok_axes && s.elems.len() == 1 => ShapeVal { scalar: true, ..s },
                _ => return Err(format!("{op} of a shape with axes {axes:?}")),
            }
        }
        "Concat" => {
            let mut elems = Vec::new();
            for i in 0..cx.num_inputs() {
                let s = operand(cx, i)?;
                if s.scalar {
                    return Err("concatenates a 0-D shape value".into());
                }
                elems.extend(s.elems);
            }
            ShapeVal { elems, scalar: false }
        }
        "Cast" | "Identity" => {
            // ONNX element types 7 (int64) and 6 (int32, the type kept for where the
            // value becomes a tensor); 1 (float), 10 (float16) and 11 (double) keep the
            // dims as a float shape value (a Range's limit).
            let to = cx.int("to", 7);
            let float = match to {
                7 => None,
                6 => Some(dlc_ir::DType::I32),
                1 => Some(dlc_ir::DType::F32),
                10 => Some(dlc_ir::DType::F16),
                11 => Some(dlc_ir::DType::F64),
                _ if op == "Identity" => None,
                _ => return Err(format!("casts a shape to element type {to} (only to integers or floats)")),
            };
            let src_float = cx.imp.shape_dtypes.get(&cx.node.input[0]).copied();
            let float = if op == "Cast" { float } else { src_float };
            if let (Some(o), Some(d)) = (cx.node.output.first(), float) {
                cx.imp.shape_dtypes.insert(o.clone(), d);
            }
            let s = operand(cx, 0)?;
            match cx.imp.float_quotients.get(&cx.node.input[0]).copied() {
                // The same quotient in another float type.
                Some(q) if float.is_some_and(|d| d.is_float()) => {
                    if let Some(o) = cx.node.output.first() {
                        cx.imp.float_quotients.insert(o.clone(), q);
                    }
                    s
                }
                // To integers: truncation, a floor of the non-negative quotient
                // (`takes_quotient` checked the elements).
                Some(q) => ShapeVal { elems: s.elems.iter().map(|e| e.floor_div(&Expr::c(q))).collect(), ..s },
                None => s,
            }
        }
        // A whole float shape value stays; a quotient rounds to dims.
        "Ceil" | "Floor" => {
            let s = operand(cx, 0)?;
            let q = cx.imp.float_quotients.get(&cx.node.input[0]).copied().unwrap_or(1);
            let up = if op == "Ceil" { q - 1 } else { 0 };
            ShapeVal { elems: s.elems.iter().map(|e| (e + &Expr::c(up)).floor_div(&Expr::c(q))).collect(), ..s }
        }
        // A float shape value over a whole constant: a quotient (`h / 32.0`).
        "Div" if float_shape(cx, &cx.node.input[0]) => {
            let d = exact_divisor(cx)?.ok_or("internal: a Div of float shape values is computed at run time")?;
            let q = cx.imp.float_quotients.get(&cx.node.input[0]).copied().unwrap_or(1);
            let q = q.checked_mul(d).ok_or("divides a shape by a divisor too large")?;
            if let Some(o) = cx.node.output.first() {
                cx.imp.float_quotients.insert(o.clone(), q);
            }
            operand(cx, 0)?
        }
        // A tensor sliced at bounds computed from run-time dims (`position_ids[:, :S]`).
        "Slice" if !cx.imp.shape_values.contains_key(&cx.node.input[0]) => {
            return Ok(vec![Out::Value(tensor_slice(cx)?)]);
        }
        "Slice" => {
            let s = operand(cx, 0)?;
            let get = |cx: &mut NodeCx, i: usize, what: &str| cx.const_ints(i, what);
            let (starts, ends) = if cx.opset < 10 {
                (cx.ints("starts"), cx.ints("ends"))
            } else {
                (get(cx, 1, "starts")?.unwrap_or_default(), get(cx, 2, "ends")?.unwrap_or_default())
            };
            let axes = if cx.opset < 10 { cx.ints("axes") } else { get(cx, 3, "axes")?.unwrap_or_default() };
            let steps = if cx.opset < 10 { vec![] } else { get(cx, 4, "steps")?.unwrap_or_default() };
            if s.scalar || starts.len() != 1 || ends.len() != 1 || !(axes.is_empty() || axes == [0] || axes == [-1]) {
                return Err("slices a shape along more than its one axis".into());
            }
            let step = steps.first().copied().unwrap_or(1);
            if step != 1 {
                return Err(format!("slices a shape with step {step}"));
            }
            let n = s.elems.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
            let (a, b) = (clamp(starts[0]), clamp(ends[0]));
            ShapeVal { elems: s.elems[a..b.max(a)].to_vec(), scalar: false }
        }
        // min/max of dims (a TopK's k capped by a count of anchors).
        "ReduceMin" | "ReduceMax" | "ReduceProd" | "ReduceSum" => {
            let x = operand(cx, 0)?;
            let r = match op.as_str() {
                "ReduceProd" => x.elems.iter().fold(Expr::c(1), |a, e| &a * e),
                "ReduceSum" => x.elems.iter().fold(Expr::c(0), |a, e| &a + e),
                _ => {
                    let first = x.elems.first().cloned().ok_or("reduces an empty shape")?;
                    x.elems[1..]
                        .iter()
                        .fold(first, |a, e| if op == "ReduceMin" { a.min_with(e) } else { a.max_with(e) })
                }
            };
            ShapeVal { elems: vec![r], scalar: x.scalar || cx.int("keepdims", 1) == 0 }
        }
        "Min" | "Max" => {
            let vals: Vec<ShapeVal> = (0..cx.node.input.len()).map(|i| operand(cx, i)).collect::<Result<_, _>>()?;
            let n = vals.iter().map(|v| v.elems.len()).max().unwrap_or(0);
            let mut elems = Vec::with_capacity(n);
            for i in 0..n {
                let mut acc: Option<Expr> = None;
                for v in &vals {
                    let e = match v.elems.len() {
                        1 => v.elems[0].clone(),
                        m if m == n => v.elems[i].clone(),
                        m => return Err(format!("shapes of {m} and {n} elements do not broadcast")),
                    };
                    acc = Some(match acc {
                        None => e,
                        Some(a) if op == "Min" => a.min_with(&e),
                        Some(a) => a.max_with(&e),
                    });
                }
                elems.push(acc.ok_or("Min/Max of no operands")?);
            }
            ShapeVal { elems, scalar: vals.iter().all(|v| v.scalar) }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Mod" => {
            let float = cx.node.input.iter().take(2).find_map(|n| cx.imp.shape_dtypes.get(n).copied());
            if float.is_some_and(|d| d.is_float()) && matches!(op.as_str(), "Div" | "Mod") {
                return Err(format!("internal: a {op} of float shape values is computed at run time"));
            }
            if op == "Mod" && cx.int("fmod", 0) != 0 {
                return Err("Mod with fmod=1 of shape values (integers take fmod=0)".into());
            }
            if let (Some(o), Some(d)) = (cx.node.output.first(), float) {
                cx.imp.shape_dtypes.insert(o.clone(), d);
            }
            let (x, y) = (operand(cx, 0)?, operand(cx, 1)?);
            let n = x.elems.len().max(y.elems.len());
            let at = |s: &ShapeVal, i: usize| -> Result<Expr, String> {
                match s.elems.len() {
                    1 => Ok(s.elems[0].clone()),
                    m if m == n => Ok(s.elems[i].clone()),
                    m => Err(format!("shapes of {m} and {n} elements do not broadcast")),
                }
            };
            let mut elems = Vec::with_capacity(n);
            for i in 0..n {
                let (a, b) = (at(&x, i)?, at(&y, i)?);
                elems.push(match op.as_str() {
                    "Add" => &a + &b,
                    "Sub" => &a - &b,
                    "Mul" => &a * &b,
                    // Swin's padding to whole windows, `(7 - W % 7) % 7`: the divisor's sign.
                    "Mod" => {
                        if b.as_const() == Some(0) {
                            return Err("takes a shape modulo zero".into());
                        }
                        a.modulo(&b)
                    }
                    _ => {
                        // Integer division of dims: exact where the model's dims divide
                        // (what exporters compute); floor division otherwise.
                        if b.as_const() == Some(0) {
                            return Err("divides a shape by zero".into());
                        }
                        a.floor_div(&b)
                    }
                });
            }
            ShapeVal { elems, scalar: x.scalar && y.scalar }
        }
        "Neg" => {
            let x = operand(cx, 0)?;
            ShapeVal { elems: x.elems.iter().map(|e| &Expr::c(0) - e).collect(), scalar: x.scalar }
        }
        // A condition known when compiling (an Equal of dims decided above: `expand(B,
        // -1, -1)`'s "which entries are -1"); one only the run knows computes as data
        // (`materialize_for_data`).
        "Where" => {
            let cond = cx.const_input(0)?.ok_or("internal: a Where of shapes with a run-time condition")?;
            let flags: Vec<bool> = cond.bytes().iter().map(|&b| b != 0).collect();
            if cond.ty().shape.rank() > 1 {
                return Err("selects between shapes by a condition of more than one axis".into());
            }
            let (x, y) = (operand(cx, 1)?, operand(cx, 2)?);
            let n = flags.len().max(x.elems.len()).max(y.elems.len());
            let pick = |v: &[Expr], i: usize| -> Result<Expr, String> {
                match v.len() {
                    1 => Ok(v[0].clone()),
                    m if m == n => Ok(v[i].clone()),
                    m => Err(format!("shapes of {m} and {n} elements do not broadcast")),
                }
            };
            let mut elems = Vec::with_capacity(n);
            for i in 0..n {
                let c = match flags.len() {
                    1 => flags[0],
                    m if m == n => flags[i],
                    m => return Err(format!("a condition of {m} elements does not broadcast to {n}")),
                };
                elems.push(if c { pick(&x.elems, i)? } else { pick(&y.elems, i)? });
            }
            let scalar = cond.ty().shape.rank() == 0 && x.scalar && y.scalar;
            ShapeVal { elems, scalar }
        }
        "Reshape" => {
            if let Some(s) = cx.imp.shape_values.get(&cx.node.input[0]).cloned() {
                // A shape value to a vector or (one element) a scalar: the same elements.
                let target = cx.const_ints(1, "the target shape")?.ok_or("the target shape is required")?;
                let n = s.elems.len() as i64;
                return match target.as_slice() {
                    [] if n == 1 => Ok(vec![Out::Shape(ShapeVal { scalar: true, ..s })]),
                    [k] if *k == -1 || *k == n || (*k == 0 && !s.scalar && cx.int("allowzero", 0) == 0) => {
                        Ok(vec![Out::Shape(ShapeVal { scalar: false, ..s })])
                    }
                    _ => Err(format!("reshapes a shape value of {n} elements to {target:?}")),
                };
            }
            let x = cx.input(0)?;
            let target = operand(cx, 1)?;
            let allowzero = cx.int("allowzero", 0) != 0;
            let from = cx.ty(x).shape.0;
            let mut to: Vec<Option<Dim>> = Vec::new();
            for (i, e) in target.elems.iter().enumerate() {
                to.push(match e.as_const() {
                    Some(0) if !allowzero => Some(
                        from.get(i).cloned().ok_or_else(|| format!("target {target:?} copies dim {i} of {from:?}"))?,
                    ),
                    Some(-1) => None,
                    _ => Some(Dim::from_expr(e.clone()).ok_or_else(|| format!("invalid extent {e} in the target"))?),
                });
            }
            if to.iter().filter(|d| d.is_none()).count() > 1 {
                return Err("the target has more than one -1".into());
            }
            if let Some(at) = to.iter().position(Option::is_none) {
                let known: Vec<Dim> = to.iter().flatten().cloned().collect();
                let q = Dim::quotient(&from, &known).ok_or_else(|| {
                    format!(
                        "cannot infer -1 of the target [{}] from {}",
                        to.iter()
                            .map(|d| d.as_ref().map_or("-1".to_string(), |d| d.to_string()))
                            .collect::<Vec<_>>()
                            .join(", "),
                        dlc_ir::Shape(from.clone())
                    )
                })?;
                to[at] = Some(q);
            }
            let to: Vec<Dim> = to.into_iter().map(|d| d.expect("resolved")).collect();
            // ONNX's 0/-1 form where its -1 can be inferred, else a view to the dims
            // (element counts equal only as numbers, `[N, floor(L / 4), 4]` of `[N, L]`,
            // are checked when the model runs).
            let form = super::movement::reshape_target(&from, &to).filter(|(shape, _)| {
                shape.iter().position(|&v| v == -1).is_none_or(|i| {
                    let known: Vec<Dim> =
                        to.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, d)| d.clone()).collect();
                    Dim::quotient(&from, &known).is_some()
                })
            });
            let Some((shape, allowzero)) = form else {
                // More run-time dims than ONNX's 0/-1 form can say: a view to the dims.
                let dims = to.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(";");
                return Ok(vec![Out::Value(cx.add1("", dlc_ir::ops::View { dims }, &[x]).map_err(|e| {
                    format!(
                        "the target {} does not hold the elements of {} ({e})",
                        dlc_ir::Shape(to.clone()),
                        dlc_ir::Shape(from.clone())
                    )
                })?)]);
            };
            return Ok(vec![Out::Value(cx.add1("", Reshape { shape, allowzero }, &[x])?)]);
        }
        _ => {
            return Err(format!(
                "uses a shape computed from run-time dims; dlc evaluates {} on such shapes, not {op} yet \
                 (pin the dims with --input-shape NAME=DIMS)",
                OPS.join(", ")
            ))
        }
    };
    // Float shape values stay floats through the ops that move or combine them.
    let float = cx.node.input.iter().find_map(|n| cx.imp.shape_dtypes.get(n).copied());
    if let (Some(d), Some(o), false) =
        (float, cx.node.output.first(), matches!(op.as_str(), "Cast" | "Shape" | "Size" | "Equal"))
    {
        cx.imp.shape_dtypes.insert(o.clone(), d);
    }
    finish(cx, shape).map(|o| vec![o])
}

/// The indices ONNX Slice takes from a dim of `n` for one (start, end, step).
fn slice_indices(n: i64, start: i64, end: i64, step: i64) -> Vec<i64> {
    let norm = |v: i64, lo: i64, hi: i64| (if v < 0 { v + n } else { v }).clamp(lo, hi);
    let mut out = Vec::new();
    if step > 0 {
        let (mut i, e) = (norm(start, 0, n), norm(end, 0, n));
        while i < e {
            out.push(i);
            i += step;
        }
    } else if step < 0 {
        let (mut i, e) = (norm(start, 0, n - 1), norm(end, -1, n - 1));
        while i > e {
            out.push(i);
            i += step;
        }
    }
    out
}

/// Nodes on 2-D shape values (`Importer::shape_cols`), `None` for others: a 1-D shape
/// value reshaped to `[rows, cols]`, sliced, transposed and flattened again, cast, which
/// is how `torch.onnx` turns `F.pad`'s pairs (last dim first) into ONNX Pad's order
/// (`Reshape [-1, 2]`, `Slice` backwards along axis 0, `Transpose`, `Reshape [-1]`). Any
/// other node reading a 2-D shape value is an error (not taken as 1-D).
fn matrix(cx: &mut NodeCx) -> Result<Option<Out>, String> {
    let op = cx.node.op_type.clone();
    let input = cx.node.input.first().cloned().unwrap_or_default();
    let cols_in = cx.imp.shape_cols.get(&input).copied();
    let out_name = cx.node.output.first().cloned().unwrap_or_default();
    let bind_cols = |cx: &mut NodeCx, c: Option<usize>| {
        if let Some(c) = c {
            cx.imp.shape_cols.insert(out_name.clone(), c);
        }
    };
    let two_d_elsewhere = cx.node.input.iter().skip(1).any(|n| cx.imp.shape_cols.contains_key(n));
    match (op.as_str(), cols_in) {
        ("Reshape", None) if cx.imp.shape_values.contains_key(&input) => {
            // To `[rows, cols]`: the same elements, marked 2-D.
            let Some(target) = cx.const_ints(1, "the target shape")? else { return Ok(None) };
            let s = operand(cx, 0)?;
            let n = s.elems.len() as i64;
            let cols = match target.as_slice() {
                [-1, c] if *c > 0 && n % c == 0 => *c,
                [r, c] if *r > 0 && *c > 0 && r * c == n => *c,
                [r, -1] if *r > 0 && n % r == 0 => n / r,
                _ => return Ok(None),
            };
            bind_cols(cx, Some(cols as usize));
            Ok(Some(Out::Shape(ShapeVal { scalar: false, ..s })))
        }
        (_, None) if two_d_elsewhere => Err(format!("{op} of a 2-D shape value is not supported")),
        (_, None) => Ok(None),
        ("Reshape", Some(_)) => {
            let s = operand(cx, 0)?;
            let target = cx.const_ints(1, "the target shape")?.ok_or("the target shape is required")?;
            let n = s.elems.len() as i64;
            match target.as_slice() {
                [k] if *k == -1 || *k == n => Ok(Some(Out::Shape(ShapeVal { scalar: false, ..s }))),
                _ => Err(format!("reshapes a 2-D shape value of {n} elements to {target:?}")),
            }
        }
        ("Cast" | "Identity", Some(c)) if matches!(cx.int("to", 7), 6 | 7) || op == "Identity" => {
            bind_cols(cx, Some(c));
            Ok(Some(Out::Shape(operand(cx, 0)?)))
        }
        ("Transpose", Some(c)) => {
            let perm = cx.ints("perm");
            let s = operand(cx, 0)?;
            let r = s.elems.len() / c;
            if !(perm.is_empty() || perm == [1, 0]) {
                return Err(format!("transposes a 2-D shape value with perm {perm:?}"));
            }
            let elems = (0..c).flat_map(|j| (0..r).map(move |i| (i, j))).map(|(i, j)| s.elems[i * c + j].clone());
            bind_cols(cx, Some(r));
            Ok(Some(Out::Shape(ShapeVal { elems: elems.collect(), scalar: false })))
        }
        ("Slice", Some(c)) if cx.opset >= 10 => {
            let s = operand(cx, 0)?;
            let r = s.elems.len() / c;
            let starts = cx.const_ints(1, "starts")?.ok_or("starts must be constants")?;
            let ends = cx.const_ints(2, "ends")?.ok_or("ends must be constants")?;
            let axes = cx.const_ints(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = cx.const_ints(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            let (mut rows, mut colsel): (Vec<i64>, Vec<i64>) = ((0..r as i64).collect(), (0..c as i64).collect());
            for j in 0..starts.len() {
                match normalize_axis(axes[j], 2) {
                    Some(0) => rows = slice_indices(r as i64, starts[j], ends[j], steps[j]),
                    Some(_) => colsel = slice_indices(c as i64, starts[j], ends[j], steps[j]),
                    None => return Err(format!("axis {} out of range for a 2-D shape value", axes[j])),
                }
            }
            if colsel.is_empty() {
                return Err("slices a 2-D shape value to no columns".into());
            }
            let elems = rows.iter().flat_map(|&i| colsel.iter().map(move |&j| (i, j)));
            let elems: Vec<Expr> = elems.map(|(i, j)| s.elems[i as usize * c + j as usize].clone()).collect();
            bind_cols(cx, Some(colsel.len()));
            Ok(Some(Out::Shape(ShapeVal { elems, scalar: false })))
        }
        _ => Err(format!("{op} of a 2-D shape value is not supported")),
    }
}

/// Slice of a tensor (not a shape) whose starts or ends are run-time dim expressions: a
/// Strided read of the window. Steps must be positive constants; an expression bound is
/// taken as a non-negative index (what `x[:, :S]` exports), clamped to the dim.
pub(crate) fn tensor_slice(cx: &mut NodeCx) -> Result<Value, String> {
    if cx.opset < 10 {
        return Err("Slice-1 takes constant starts and ends".into());
    }
    let x = cx.input(0)?;
    let dims = cx.ty(x).shape.0;
    let r = dims.len();
    let starts = operand(cx, 1)?.elems;
    let ends = operand(cx, 2)?.elems;
    let axes = match cx.node.input.get(3).filter(|n| !n.is_empty()) {
        Some(_) => ints_of(&operand(cx, 3)?, "slice axes")?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match cx.node.input.get(4).filter(|n| !n.is_empty()) {
        Some(_) => ints_of(&operand(cx, 4)?, "slice steps")?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let mut counts: Vec<Expr> = dims.iter().map(Dim::expr).collect();
    let mut first = vec![Expr::c(0); r];
    let mut step_of = vec![Expr::c(1); r];
    let zero = Expr::c(0);
    for j in 0..starts.len() {
        let a = normalize_axis(axes[j], r).ok_or_else(|| format!("axis {} out of range", axes[j]))?;
        let step = steps[j];
        if step <= 0 {
            return Err(format!("a step of {step} with run-time bounds is not supported yet"));
        }
        let d = dims[a].expr();
        // Dims are at least 0 and below 2^40 (a tensor's byte limit): 0 and "to the end"
        // (an exporter's INT64_MAX) clamp to themselves and to `d`.
        let huge = dlc_ir::MAX_TENSOR_BYTES as i64;
        let bound = |e: &Expr| match e.as_const() {
            Some(v) if v < 0 => (&d + &Expr::c(v)).max_with(&zero),
            Some(0) => zero.clone(),
            Some(v) if v >= huge => d.clone(),
            Some(v) => Expr::c(v).min_with(&d),
            // At least 0 (`x[:, :S]`): clamped to the dim.
            None if nonneg(e) => e.min_with(&d),
            // Either sign (`x[:, -S:]`): ONNX's rule as an expression, with `neg` 1 where
            // `e < 0` (counted from the end, then clamped at 0), else 0 (clamped to the
            // dim).
            None => {
                let one = Expr::c(1);
                let neg = (&zero - e).max_with(&zero).min_with(&one);
                let from_end = (&d + e).max_with(&zero);
                let from_start = e.max_with(&zero).min_with(&d);
                &(&neg * &from_end) + &(&(&one - &neg) * &from_start)
            }
        };
        let (s0, e0) = (bound(&starts[j]), bound(&ends[j]));
        let span = &e0 - &s0;
        // The whole dim (`x[:, 0:]`) needs no clamp at 0.
        let span = if s0 == zero && e0 == d { span } else { span.max_with(&zero) };
        counts[a] = (&span + &Expr::c(step - 1)).floor_div(&Expr::c(step));
        first[a] = s0;
        step_of[a] = Expr::c(step);
    }
    let join = |v: &[Expr]| v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(";");
    let op = dlc_ir::ops::Strided { counts: join(&counts), starts: join(&first), steps: join(&step_of) };
    cx.add1("", op, &[x])
}

/// `x` broadcast to the dims `target` (ONNX Expand: numpy rules both ways).
/// ConstantOfShape's `value` (default f32 0) as a one-element constant, which an
/// Expand to the shape broadcasts.
pub(crate) fn fill_value(cx: &mut NodeCx) -> Result<Value, String> {
    let value = cx.tensor_attr("value")?.unwrap_or_else(|| TensorData::from_f32(&[1], &[0.0]).expect("scalar"));
    if value.numel() != 1 {
        return Err("value must hold one element".into());
    }
    let one = TensorData::new(dlc_ir::TensorType::fixed(value.ty().dtype, &[1]), value.bytes().to_vec().into())
        .ok_or("bad value")?;
    Ok(cx.add_const(one))
}

pub(crate) fn expand_to(cx: &mut NodeCx, x: Value, target: &[Expr], suffix: &str) -> Result<Value, String> {
    let dims = target.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(";");
    if target.iter().any(|e| e.as_const().is_some_and(|v| v < 0)) {
        return Err(format!("invalid target shape [{dims}]"));
    }
    let op = dlc_ir::ops::Expand { shape: vec![], dims };
    cx.add1(suffix, op, &[x])
}

/// Operand `i` of a Range as one integral expression: a shape value's element, or a
/// constant (integer, or float with an integral value).
fn range_bound(cx: &mut NodeCx, i: usize, what: &str) -> Result<Expr, String> {
    let name = cx.node.input.get(i).cloned().unwrap_or_default();
    if let Some(s) = cx.imp.shape_values.get(&name) {
        return match s.elems.as_slice() {
            [e] => Ok(e.clone()),
            _ => Err(format!("{what} must hold one value")),
        };
    }
    let t = cx.const_input(i)?.ok_or_else(|| format!("{what} must be a constant or a run-time dim"))?;
    match integral(&t).as_deref() {
        Some(&[v]) => Ok(Expr::c(v)),
        _ => Err(format!("{what} must be one integral value with a run-time limit")),
    }
}

/// Range whose limit or start is a run-time dim: an Iota of `ceil((limit - start) /
/// delta)` elements (delta a positive constant), in f32 when the operands are floats; a
/// run-time start (GPT-2's positions after a cache of run-time length) is added to an
/// Iota from 0 while the model runs.
fn range(cx: &mut NodeCx) -> Result<Value, String> {
    let start = range_bound(cx, 0, "start")?;
    let limit = range_bound(cx, 1, "limit")?;
    let delta = range_bound(cx, 2, "delta")?;
    let Some(d) = delta.as_const() else {
        return Err("a Range over run-time dims needs a constant delta".into());
    };
    if d <= 0 {
        return Err(format!("a Range over run-time dims needs a positive delta, got {d}"));
    }
    // The operands' type (ONNX gives all three the same): a tensor's, else the shape
    // value's (i64 unless a Cast made it another).
    let mut dtype = None;
    for i in 0..3 {
        let n = cx.node.input[i].clone();
        if cx.imp.shape_values.contains_key(&n) {
            dtype = dtype.or(Some(cx.imp.shape_dtypes.get(&n).copied().unwrap_or(dlc_ir::DType::I64)));
        } else if let Some(v) = cx.opt_input(i)? {
            dtype = Some(cx.ty(v).dtype);
            break;
        }
    }
    let dtype = dtype.unwrap_or(dlc_ir::DType::I64);
    let float = dtype != dlc_ir::DType::I64;
    let len = (&(&limit - &start) + &Expr::c(d - 1)).floor_div(&Expr::c(d));
    // Empty when the limit is below the start; no max where the length is provably
    // not negative (the length then compares equal to dims computed otherwise).
    let len = if nonneg(&len) { len } else { len.max_with(&Expr::c(0)) };
    // A constant start is the iota's own; a run-time one is added to an iota from 0.
    let Some(s) = start.as_const() else {
        let iota = cx.add1("from_zero", dlc_ir::ops::Iota { len: len.to_string(), start: 0, delta: d, dtype }, &[])?;
        let name = cx.node.input[0].clone();
        let mut st = shape_tensor(cx, &ShapeVal { elems: vec![start], scalar: true }, &name)?;
        if float {
            st = cx.add1("start_cast", dlc_ir::ops::Cast::new(dtype), &[st])?;
        }
        return cx.add1("", dlc_ir::ops::Add {}, &[iota, st]);
    };
    cx.add1("", dlc_ir::ops::Iota { len: len.to_string(), start: s, delta: d, dtype }, &[])
}

/// A shape value whose elements are all constants becomes an ordinary constant.
fn finish(cx: &mut NodeCx, s: ShapeVal) -> Result<Out, String> {
    let ints: Option<Vec<i64>> = s.elems.iter().map(Expr::as_const).collect();
    let Some(v) = ints else { return Ok(Out::Shape(s)) };
    let dims: &[u64] = if s.scalar { &[] } else { &[v.len() as u64] };
    let t = cx.add_const(TensorData::from_i64(dims, &v).expect("shape matches"));
    // A shape value of another type that folded: that type (and a quotient's division).
    let out = cx.node.output.first().cloned().unwrap_or_default();
    let q = cx.imp.float_quotients.remove(&out);
    Ok(Out::Value(typed(cx, t, &out, q, "")?))
}

/// I64 tensor `v` of shape value `name` in the type the value has (`shape_dtypes`),
/// divided by its quotient's divisor `q` when it has one; node names get `prefix`.
fn typed(cx: &mut NodeCx, v: Value, name: &str, q: Option<i64>, prefix: &str) -> Result<Value, String> {
    let Some(d) = cx.imp.shape_dtypes.get(name).copied() else { return Ok(v) };
    let suffix = |s: &str| if prefix.is_empty() { s.to_string() } else { format!("{prefix}_{s}") };
    let v = cx.add1(&suffix("typed"), dlc_ir::ops::Cast::new(d), &[v])?;
    let Some(q) = q else { return Ok(v) };
    let q = cx.i64_const(&[], &[q])?;
    let q = cx.add1(&suffix("divisor"), dlc_ir::ops::Cast::new(d), &[q])?;
    cx.add1(&suffix("quotient"), dlc_ir::ops::Div {}, &[v, q])
}
