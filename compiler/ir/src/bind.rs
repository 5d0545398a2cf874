//! Dims computed at run time from tensor values ("data symbols").
//!
//! An operand that decides a shape (Reshape's target, the axes of a reduction,
//! Squeeze or Unsqueeze) may be known only when the model runs. The graph then gets a
//! [`crate::ops::Bind`] node: it reads that operand (an `i64` vector), computes the
//! result's dims by one of the [`BindRule`]s below, checks them, and binds them to
//! fresh symbols; its result is its first operand's elements (unchanged, row-major)
//! with those symbols as dims. Downstream nodes compute with the symbols like with any
//! run-time dim. [`eval`] is the one definition of every rule: the interpreter runs it,
//! and the kir kernel that dlc-lower emits for a Bind is tested against it.
use crate::{Dim, Expr, Graph, IrError, Op, Value};
use dlc_sym::Atom;
use std::collections::HashMap;

/// How a [`crate::ops::Bind`] computes its dims from the input's dims `d` (rank `n`)
/// and the values `t` (length `m`) of its shape operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindRule {
    /// ONNX Reshape: `m` dims; `0` copies the input's dim (unless `allowzero`), one
    /// `-1` is inferred, the element count must not change.
    Reshape {
        /// Whether `0` means an extent of 0.
        allowzero: bool,
    },
    /// A reduction over the axes `t`: `2n` dims `e0, k0, e1, k1, ...` where a reduced
    /// axis `i` has `e_i = 1, k_i = d_i` and a kept one `e_i = d_i, k_i = 1` (the
    /// input viewed so that the `k` dims are the ones to reduce).
    ReduceAxes,
    /// The kept dims of a reduction's `keepdims` result (dims `1` at the axes `t`
    /// dropped): `n - m` dims.
    ReduceSqueeze,
    /// ONNX Squeeze with axes `t`: those dims must be 1 and are dropped (`n - m` dims).
    Squeeze,
    /// A check for ONNX Squeeze without axes over run-time dims: `t` holds the axes
    /// of the dims that are 1 when compiling (the Squeeze drops them, by a Reshape after
    /// this check); every other dim must not be 1 when the model runs, since the
    /// result's rank is fixed when compiling and ONNX would drop such a dim too. Binds
    /// nothing; the result keeps the input's dims.
    SqueezeAll,
    /// ONNX Unsqueeze with axes `t` (of the result): `n + m` dims.
    Unsqueeze,
    /// ONNX Slice with `t` = starts, ends, axes, steps (`m / 4` each): for every axis
    /// `i` of the input, `3n` values `start_i, step_i, count_i` (0, 1, `d_i` on axes it
    /// does not slice). The result keeps the input's dims (a [`crate::ops::Strided`]
    /// reads the slice).
    Slice,
    /// ONNX Split along `axis` with sizes `t`: `offset_j, count_j` for each part (the
    /// sizes must add up to the dim). The result keeps the input's dims.
    Split {
        /// The axis, normalised.
        axis: usize,
    },
    /// A count of the input's elements (`t` = `[c]`, `0 <= c <=` the element count),
    /// such as NonZero's: one dim. The result keeps the input's dims.
    Count,
    /// A count of positions along `axis` (`t` = `[k]`, `0 <= k <=` the axis's extent),
    /// such as TopK's `k`: one dim. The result keeps the input's dims.
    Extent {
        /// The axis, normalised.
        axis: usize,
    },
    /// Extents given as values (`t` = the dims, each `0 <= t_j <=` [`MAX_COMPUTED`]):
    /// `m` dims with no bound from the input's dims (ConstantOfShape's shape, Range's
    /// length, Resize's sizes computed at run time). The result keeps the input's dims.
    /// Its symbols are *computed dims*: the program's prologue (`shape_values`) computes
    /// them before the run, so that the caller can size buffers by them.
    Values,
    /// The dims the input must have (`t`, one per axis: `m = n`), checked when the model
    /// runs: `n` dims, `t` itself. Gives a value whose dims the graph computes from
    /// values of an iteration (a Loop body's piece of a carried value grown by Concat,
    /// `max(0, min(y0 + k + (H - y1), H))`) the dims ONNX requires it to have (`H`),
    /// its entries then `=EXPR` (see [`crate::ops::Bind`]). Fails with
    /// [`Reason::Count`].
    Dims,
}

/// The largest extent a [`BindRule::Values`] bind accepts (2^40, the IR's bound on a
/// tensor's bytes): larger ones fail the run before anything is allocated.
pub const MAX_COMPUTED: i64 = 1 << 40;

impl BindRule {
    /// Its name in the IR's text form.
    pub fn name(self) -> &'static str {
        match self {
            BindRule::Reshape { allowzero: false } => "reshape",
            BindRule::Reshape { allowzero: true } => "reshape_allowzero",
            BindRule::ReduceAxes => "reduce_axes",
            BindRule::ReduceSqueeze => "reduce_squeeze",
            BindRule::Squeeze => "squeeze",
            BindRule::SqueezeAll => "squeeze_all",
            BindRule::Unsqueeze => "unsqueeze",
            BindRule::Slice => "slice",
            BindRule::Split { .. } => "split",
            BindRule::Count => "count",
            BindRule::Extent { .. } => "extent",
            BindRule::Values => "values",
            BindRule::Dims => "dims",
        }
    }

    /// Its text form: the name, then `_axis` for a split (`split_1`).
    pub fn text(self) -> String {
        match self {
            BindRule::Split { axis } => format!("split_{axis}"),
            BindRule::Extent { axis } => format!("extent_{axis}"),
            r => r.name().to_string(),
        }
    }

    /// Whether its result has the bound symbols as dims (else the input's dims).
    pub fn reshapes(self) -> bool {
        !matches!(
            self,
            BindRule::Slice
                | BindRule::Split { .. }
                | BindRule::Count
                | BindRule::Extent { .. }
                | BindRule::Values
                | BindRule::SqueezeAll
        )
    }

    /// The rule named `s`.
    pub fn parse(s: &str) -> Option<BindRule> {
        Some(match s {
            "reshape" => BindRule::Reshape { allowzero: false },
            "reshape_allowzero" => BindRule::Reshape { allowzero: true },
            "reduce_axes" => BindRule::ReduceAxes,
            "reduce_squeeze" => BindRule::ReduceSqueeze,
            "squeeze" => BindRule::Squeeze,
            "squeeze_all" => BindRule::SqueezeAll,
            "unsqueeze" => BindRule::Unsqueeze,
            "slice" => BindRule::Slice,
            "count" => BindRule::Count,
            "values" => BindRule::Values,
            "dims" => BindRule::Dims,
            s if s.starts_with("extent_") => BindRule::Extent { axis: s.strip_prefix("extent_")?.parse().ok()? },
            s => BindRule::Split { axis: s.strip_prefix("split_")?.parse().ok()? },
        })
    }

    /// How many dims it binds for an input of rank `n` and `m` values (`None`: the
    /// rule cannot apply).
    pub fn count(self, n: usize, m: usize) -> Option<usize> {
        match self {
            BindRule::Reshape { .. } => Some(m),
            BindRule::ReduceAxes => Some(2 * n),
            BindRule::ReduceSqueeze | BindRule::Squeeze => n.checked_sub(m),
            BindRule::SqueezeAll => (m <= n).then_some(0),
            BindRule::Unsqueeze => Some(n + m),
            BindRule::Slice => (m.is_multiple_of(4) && m / 4 <= n).then_some(3 * n),
            BindRule::Split { axis } => (axis < n).then_some(2 * m),
            BindRule::Count => (m == 1).then_some(1),
            BindRule::Extent { axis } => (m == 1 && axis < n).then_some(1),
            BindRule::Values => Some(m),
            BindRule::Dims => (m == n).then_some(n),
        }
    }
}

/// Why a Bind's values are invalid: the code a kernel reports (its last result
/// element) and the message dlc-runtime shows (through the manifest's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// A Reshape extent below -1.
    Negative = 1,
    /// Two or more -1 in a Reshape target.
    TwoInferred = 2,
    /// A 0 (copy) at a position the input lacks.
    CopiesMissing = 3,
    /// The -1 cannot be inferred (the other extents' product is 0 or does not divide).
    CannotInfer = 4,
    /// The element count would change.
    Count = 5,
    /// An axis out of range.
    AxisRange = 6,
    /// An axis given twice.
    AxisRepeat = 7,
    /// Squeeze of a dim that is not 1, or a dim that Squeeze without axes keeps
    /// ([`BindRule::SqueezeAll`]) is 1.
    NotOne = 8,
    /// `allowzero` with both a 0 and a -1.
    ZeroAndInferred = 9,
    /// A slice step of 0.
    ZeroStep = 10,
    /// Split sizes that are negative or do not add up to the dim.
    SplitSizes = 11,
    /// A count below 0 or above the element count.
    CountRange = 12,
    /// An index of Gather, GatherElements, ScatterElements or ScatterND outside
    /// `[-d, d)` for the axis of extent `d` it indexes (a run-time index check:
    /// [`crate::ops::index_operand`]).
    IndexRange = 13,
    /// A count along an axis below 0 or above the axis's extent (TopK's `k`).
    ExtentRange = 14,
    /// A computed extent ([`BindRule::Values`]) below 0 or above [`MAX_COMPUTED`].
    ValueRange = 15,
    // No more: a bind status carries a reason in 4 bits (dlc_artifact::abi::bind_status).
}

/// Every reason, in code order (the manifest carries their messages).
pub const REASONS: [Reason; 15] = [
    Reason::Negative,
    Reason::TwoInferred,
    Reason::CopiesMissing,
    Reason::CannotInfer,
    Reason::Count,
    Reason::AxisRange,
    Reason::AxisRepeat,
    Reason::NotOne,
    Reason::ZeroAndInferred,
    Reason::ZeroStep,
    Reason::SplitSizes,
    Reason::CountRange,
    Reason::IndexRange,
    Reason::ExtentRange,
    Reason::ValueRange,
];

impl Reason {
    /// The code a kernel writes (nonzero).
    pub fn code(self) -> i64 {
        self as u8 as i64
    }

    /// What went wrong, for people.
    pub fn message(self) -> &'static str {
        match self {
            Reason::Negative => "an extent is below -1",
            Reason::TwoInferred => "more than one extent is -1",
            Reason::CopiesMissing => "an extent 0 copies a dim the input does not have",
            Reason::CannotInfer => {
                "the -1 cannot be inferred (the other extents' product is 0 or does not divide the element count)"
            }
            Reason::Count => "the element count would change (or a dim differs from the one it must have)",
            Reason::AxisRange => "an axis is out of range",
            Reason::AxisRepeat => "an axis is given twice",
            Reason::NotOne => {
                "a squeezed dim is not 1, or (Squeeze without axes) a run-time dim is 1: dlc fixed the result's rank \
                 when compiling, dropping the dims that were 1 then; give the Squeeze its axes"
            }
            Reason::ZeroAndInferred => "with allowzero, an extent is 0 and another -1",
            Reason::ZeroStep => "a step is 0",
            Reason::SplitSizes => "the split sizes are negative or do not add up to the dim",
            Reason::CountRange => "a count is outside 0 to the element count",
            Reason::IndexRange => "an index is out of range (an axis of extent d takes -d <= index < d)",
            Reason::ExtentRange => {
                "a count is outside 0 to the axis's extent (a TopK's k; -1: an erase from an empty sequence)"
            }
            Reason::ValueRange => "a computed extent is negative or above 2^40",
        }
    }

    /// The whole failure, for the manifest's `bind_reasons` (dlc-runtime prints it after
    /// the node's name): a shape rule's reason says that the shape is what failed.
    pub fn describe(self) -> String {
        match self {
            Reason::IndexRange => self.message().to_string(),
            r => format!("the shape computed from its operand's values is invalid: {}", r.message()),
        }
    }
}

/// The normalised axes `t` against rank `r` (each in `0..r`, none twice).
fn axes(t: &[i64], r: usize) -> Result<Vec<usize>, Reason> {
    let mut out = Vec::with_capacity(t.len());
    for &a in t {
        let a = if a < 0 { a.checked_add(r as i64) } else { Some(a) };
        let a = a.filter(|a| (0..r as i64).contains(a)).ok_or(Reason::AxisRange)? as usize;
        if out.contains(&a) {
            return Err(Reason::AxisRepeat);
        }
        out.push(a);
    }
    Ok(out)
}

/// The dims `rule` binds for input dims `d` and values `t`, or why they are invalid.
/// This is the rule's definition.
pub fn eval(rule: BindRule, d: &[i64], t: &[i64]) -> Result<Vec<i64>, Reason> {
    let n = d.len();
    match rule {
        BindRule::Reshape { allowzero } => {
            let total = d.iter().try_fold(1i64, |a, &x| a.checked_mul(x)).ok_or(Reason::Count)?;
            if allowzero && t.contains(&0) && t.contains(&-1) {
                return Err(Reason::ZeroAndInferred);
            }
            let mut out = Vec::with_capacity(t.len());
            for (i, &v) in t.iter().enumerate() {
                out.push(match v {
                    0 if !allowzero => *d.get(i).ok_or(Reason::CopiesMissing)?,
                    v if v < -1 => return Err(Reason::Negative),
                    v => v,
                });
            }
            let inferred: Vec<usize> = (0..out.len()).filter(|&i| out[i] == -1).collect();
            if inferred.len() > 1 {
                return Err(Reason::TwoInferred);
            }
            let known = out.iter().filter(|&&v| v != -1).try_fold(1i64, |a, &x| a.checked_mul(x));
            match (inferred.first(), known) {
                (Some(&i), Some(k)) => {
                    if k == 0 || total % k != 0 {
                        return Err(Reason::CannotInfer);
                    }
                    out[i] = total / k;
                }
                (Some(_), None) => return Err(Reason::CannotInfer),
                (None, k) => {
                    if k != Some(total) {
                        return Err(Reason::Count);
                    }
                }
            }
            Ok(out)
        }
        BindRule::ReduceAxes => {
            let a = axes(t, n)?;
            Ok((0..n).flat_map(|i| if a.contains(&i) { [1, d[i]] } else { [d[i], 1] }).collect())
        }
        BindRule::SqueezeAll => {
            let a = axes(t, n)?;
            if a.iter().any(|&i| d[i] != 1) {
                return Err(Reason::NotOne);
            }
            if (0..n).any(|i| !a.contains(&i) && d[i] == 1) {
                return Err(Reason::NotOne);
            }
            Ok(Vec::new())
        }
        BindRule::ReduceSqueeze | BindRule::Squeeze => {
            let a = axes(t, n)?;
            if rule == BindRule::Squeeze && a.iter().any(|&i| d[i] != 1) {
                return Err(Reason::NotOne);
            }
            Ok((0..n).filter(|i| !a.contains(i)).map(|i| d[i]).collect())
        }
        BindRule::Unsqueeze => {
            let r = n + t.len();
            let a = axes(t, r)?;
            let mut src = d.iter();
            Ok((0..r).map(|o| if a.contains(&o) { 1 } else { src.next().copied().unwrap_or(0) }).collect())
        }
        BindRule::Slice => {
            let k = t.len() / 4;
            let (starts, ends, steps) = (&t[..k], &t[k..2 * k], &t[3 * k..]);
            let a = axes(&t[2 * k..3 * k], n)?;
            let mut out: Vec<i64> = d.iter().flat_map(|&x| [0, 1, x]).collect();
            for (j, &i) in a.iter().enumerate() {
                let (s, e) = slice_range(d[i], starts[j], ends[j], steps[j])?;
                out[3 * i] = s;
                out[3 * i + 1] = steps[j];
                out[3 * i + 2] = e;
            }
            Ok(out)
        }
        BindRule::Count => {
            let total = d.iter().try_fold(1i64, |a, &x| a.checked_mul(x)).ok_or(Reason::CountRange)?;
            match t {
                [c] if (0..=total).contains(c) => Ok(vec![*c]),
                _ => Err(Reason::CountRange),
            }
        }
        BindRule::Extent { axis } => match (t, d.get(axis)) {
            ([k], Some(&e)) if (0..=e).contains(k) => Ok(vec![*k]),
            _ => Err(Reason::ExtentRange),
        },
        BindRule::Values => match t.iter().all(|v| (0..=MAX_COMPUTED).contains(v)) {
            true => Ok(t.to_vec()),
            false => Err(Reason::ValueRange),
        },
        BindRule::Dims => match t == d {
            true => Ok(t.to_vec()),
            false => Err(Reason::Count),
        },
        BindRule::Split { axis } => {
            let mut out = Vec::with_capacity(2 * t.len());
            let mut at = 0i64;
            for &s in t {
                if s < 0 {
                    return Err(Reason::SplitSizes);
                }
                out.extend([at, s]);
                at = at.checked_add(s).ok_or(Reason::SplitSizes)?;
            }
            if at != d[axis] {
                return Err(Reason::SplitSizes);
            }
            Ok(out)
        }
    }
}

/// ONNX Slice on a dim of extent `d`: the first index and the element count of
/// `start:end:step` (negative bounds count from the end, then clamp: to `[0, d]` for a
/// positive step, to `[0, d - 1]` and `[-1, d - 1]` for a negative one).
pub fn slice_range(d: i64, start: i64, end: i64, step: i64) -> Result<(i64, i64), Reason> {
    if step == 0 {
        return Err(Reason::ZeroStep);
    }
    let wrap = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (wrap(start), wrap(end));
    if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        let n = if e > s { (e - s - 1) / step + 1 } else { 0 };
        Ok((s, n))
    } else {
        let (s, e) = (s.clamp(0, (d - 1).max(0)), e.clamp(-1, d - 1));
        let n = if s > e && d > 0 { (s - e - 1) / step.saturating_neg().max(1) + 1 } else { 0 };
        Ok((s, n))
    }
}

/// An upper bound of each dim `rule` binds, from the input's dims `d` (for the memory
/// plan, which sizes a value by its bound when its dims are bound at run time).
pub fn maxima(rule: BindRule, d: &[Dim], m: usize) -> Vec<Expr> {
    let one = Expr::c(1);
    let each_max = d.iter().fold(one.clone(), |a, x| a.max_with(&x.expr()));
    match rule {
        BindRule::Reshape { .. } => {
            let total = Dim::product(d).expr().max_with(&one);
            vec![total; m]
        }
        BindRule::ReduceAxes => d.iter().flat_map(|x| [x.expr().max_with(&one), x.expr().max_with(&one)]).collect(),
        BindRule::ReduceSqueeze | BindRule::Squeeze | BindRule::Unsqueeze => {
            vec![each_max; rule.count(d.len(), m).unwrap_or(0)]
        }
        // Starts and counts within each dim; steps as large as a dim.
        BindRule::Slice => d.iter().flat_map(|x| vec![x.expr().max_with(&one); 3]).collect(),
        BindRule::Split { axis } => {
            let e = d.get(axis).map_or(one.clone(), |x| x.expr().max_with(&one));
            vec![e; 2 * m]
        }
        BindRule::Count => vec![Dim::product(d).expr().max_with(&one)],
        BindRule::Extent { axis } => vec![d.get(axis).map_or(one.clone(), |x| x.expr().max_with(&one))],
        // Unbounded: computed dims are sized as they are (see `computed_symbols`).
        BindRule::Values => Vec::new(),
        BindRule::SqueezeAll => Vec::new(),
        BindRule::Dims => d.iter().map(|x| x.expr().max_with(&one)).collect(),
    }
}

/// The symbols that Bind nodes of `g` define, in the graph's topological order.
/// Those of loop bodies follow their loop's (a body's steps bind them each iteration),
/// and an if's branches' (then, else) its own.
pub fn data_symbols(g: &Graph) -> Vec<String> {
    let Ok(order) = g.topo_order() else { return Vec::new() };
    let mut out = Vec::new();
    for id in order {
        match &g.node(id).op {
            Op::Bind(b) => out.extend(b.symbols().map(str::to_string)),
            op => out.extend(op.bodies().into_iter().flat_map(|b| data_symbols(&b.0))),
        }
    }
    out
}

/// The symbols that Bind nodes of rule [`BindRule::Values`] define (computed dims, no
/// bound) and that some value's type in `g` mentions, in the graph's topological order:
/// a subset of [`data_symbols`]. (One that no type mentions, such as a loop's trip
/// count with no scan outputs, is only needed where its bind step runs: a plain data
/// symbol.)
pub fn computed_symbols(g: &Graph) -> Vec<String> {
    let Ok(order) = g.topo_order() else { return Vec::new() };
    let mut mentioned = Vec::new();
    for &id in &order {
        for t in &g.node(id).outputs {
            for d in &t.shape.0 {
                d.expr().symbols(&mut mentioned);
            }
        }
        // A fused node's `expand` steps name extents its result does not show, which
        // may have to equal others (`implied::constraints` checks them before the run).
        if let Op::Fused(f) = &g.node(id).op {
            for s in &f.steps {
                if let Op::Expand(e) = &s.op {
                    for d in e.target().map(|t| t.0).unwrap_or_default() {
                        d.expr().symbols(&mut mentioned);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for id in order {
        if let Op::Bind(b) = &g.node(id).op {
            if b.bind_rule() == Some(BindRule::Values) {
                out.extend(b.symbols().filter(|s| mentioned.iter().any(|m| m == s)).map(str::to_string));
            }
        }
    }
    out
}

/// `e` with every data symbol replaced by its maximum, when that is an upper bound
/// (each term that mentions one has a positive coefficient, and none sits inside a
/// division, modulo or minimum); `None` otherwise.
pub fn bounded(e: &Expr, maxima: &HashMap<String, Expr>) -> Option<Expr> {
    let mentions = |x: &Expr| {
        let mut v = Vec::new();
        x.symbols(&mut v);
        v.iter().any(|s| maxima.contains_key(s))
    };
    for (atoms, c) in e.terms() {
        let data = atoms.iter().any(|a| mentions(&Expr::atom(a.clone())));
        if data && c < 0 {
            return None;
        }
        for a in atoms {
            if let Atom::Div(..) | Atom::Mod(..) | Atom::Min(..) = a {
                if mentions(&Expr::atom(a.clone())) {
                    return None;
                }
            }
        }
    }
    Some(e.subst(&|a| match a {
        Atom::Sym(s) => maxima.get(s).cloned(),
        _ => None,
    }))
}

/// For every value of `g` whose dims mention data symbols, an upper bound of its
/// element count over the input dims' symbols alone (what the memory plan and the
/// caller allocate). A Bind's result has its operand's count, and so has any result
/// whose shape is one of its operands' (elementwise ops) or that only reorders its
/// operand (Transpose, Reshape, Flatten, Identity); others take each data symbol's
/// maximum from its rule ([`maxima`]). An error names a node whose count cannot be
/// bounded that way.
pub fn value_bounds(g: &Graph) -> Result<HashMap<Value, Expr>, IrError> {
    Ok(bounds(g)?.0)
}

/// An upper bound of every data symbol of `g`, over the input dims' symbols alone.
pub fn symbol_maxima(g: &Graph) -> Result<HashMap<String, Expr>, IrError> {
    Ok(bounds(g)?.1)
}

type Bounds = (HashMap<Value, Expr>, HashMap<String, Expr>);

fn bounds(g: &Graph) -> Result<Bounds, IrError> {
    let mut out: HashMap<Value, Expr> = HashMap::new();
    let mut maxima: HashMap<String, Expr> = HashMap::new();
    let order = g.topo_order()?;
    let numel = |t: &crate::TensorType| Dim::product(&t.shape.0).expr();
    for id in order {
        let node = g.node(id);
        let operands = g.operands(id);
        let bound_of =
            |v: &Value, out: &HashMap<Value, Expr>| out.get(v).cloned().unwrap_or_else(|| numel(g.value_type(*v)));
        if let Op::Bind(b) = &node.op {
            let x = g.value_type(operands[0]);
            let m = g.value_type(operands[1]).shape.0.first().and_then(Dim::fixed).unwrap_or(0) as usize;
            if let Some(rule) = b.bind_rule() {
                let dims: Vec<Dim> = x
                    .shape
                    .0
                    .iter()
                    .map(|d| {
                        Dim::from_expr(bounded(&d.expr(), &maxima).unwrap_or_else(|| d.expr())).unwrap_or(Dim::Fixed(0))
                    })
                    .collect();
                for (s, mx) in b.entries().zip(self::maxima(rule, &dims, m)) {
                    if crate::ops::Bind::fixed_entry(s).is_none() {
                        maxima.insert(s.to_string(), mx);
                    }
                }
            }
            out.insert(Value { node: id, port: 0 }, bound_of(&operands[0], &out));
            continue;
        }
        for (port, t) in node.outputs.iter().enumerate() {
            let mut syms = Vec::new();
            for d in &t.shape.0 {
                d.expr().symbols(&mut syms);
            }
            if !syms.iter().any(|s| maxima.contains_key(s)) {
                continue;
            }
            let v = Value { node: id, port: port as u32 };
            let same = operands.iter().find(|o| g.value_type(**o).shape == t.shape);
            let reorders =
                matches!(node.op, Op::Transpose(_) | Op::Reshape(_) | Op::Flatten(_) | Op::Identity(_) | Op::View(_));
            let b = match (same, reorders) {
                (Some(o), _) => bound_of(o, &out),
                (None, true) => bound_of(&operands[0], &out),
                (None, false) => bounded(&numel(t), &maxima).ok_or_else(|| {
                    IrError::shape(
                        &node.name,
                        node.op.mnemonic(),
                        format!("cannot bound the size of {t}, whose dims are computed from tensor values at run time"),
                    )
                })?,
            };
            out.insert(v, b);
        }
    }
    Ok((out, maxima))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_rule_follows_onnx() {
        let r = BindRule::Reshape { allowzero: false };
        assert_eq!(eval(r, &[2, 3, 4], &[0, -1]), Ok(vec![2, 12]));
        assert_eq!(eval(r, &[2, 3, 4], &[4, 3, 2]), Ok(vec![4, 3, 2]));
        assert_eq!(eval(r, &[2, 3, 4], &[-1, -1]), Err(Reason::TwoInferred));
        assert_eq!(eval(r, &[2, 3, 4], &[5, -1]), Err(Reason::CannotInfer));
        assert_eq!(eval(r, &[2, 3, 4], &[5, 5]), Err(Reason::Count));
        assert_eq!(eval(r, &[2, 3, 4], &[0, 0, 0, 0]), Err(Reason::CopiesMissing));
        assert_eq!(eval(r, &[2, 3, 4], &[-2, -12]), Err(Reason::Negative));
        let z = BindRule::Reshape { allowzero: true };
        assert_eq!(eval(z, &[0, 3], &[3, 0]), Ok(vec![3, 0]));
        assert_eq!(eval(z, &[0, 3], &[0, -1]), Err(Reason::ZeroAndInferred));
    }

    #[test]
    fn axis_rules_follow_onnx() {
        assert_eq!(eval(BindRule::ReduceAxes, &[2, 3, 4], &[-1, 0]), Ok(vec![1, 2, 3, 1, 1, 4]));
        assert_eq!(eval(BindRule::ReduceAxes, &[2, 3, 4], &[3]), Err(Reason::AxisRange));
        assert_eq!(eval(BindRule::ReduceAxes, &[2, 3, 4], &[1, -2]), Err(Reason::AxisRepeat));
        assert_eq!(eval(BindRule::ReduceSqueeze, &[1, 3, 1], &[0, 2]), Ok(vec![3]));
        assert_eq!(eval(BindRule::Squeeze, &[1, 3, 1], &[1]), Err(Reason::NotOne));
        assert_eq!(eval(BindRule::Squeeze, &[1, 3, 1], &[-1]), Ok(vec![1, 3]));
        assert_eq!(eval(BindRule::SqueezeAll, &[1, 3, 2], &[0]), Ok(vec![]));
        assert_eq!(eval(BindRule::SqueezeAll, &[1, 1, 2], &[0]), Err(Reason::NotOne));
        assert_eq!(eval(BindRule::SqueezeAll, &[2, 3], &[]), Ok(vec![]));
        assert_eq!(eval(BindRule::SqueezeAll, &[2, 3], &[1]), Err(Reason::NotOne));
        assert_eq!(eval(BindRule::SqueezeAll, &[3, 1], &[]), Err(Reason::NotOne));
        assert_eq!(eval(BindRule::Unsqueeze, &[3, 4], &[0, -1]), Ok(vec![1, 3, 4, 1]));
        assert_eq!(eval(BindRule::Unsqueeze, &[3, 4], &[4]), Err(Reason::AxisRange));
        assert_eq!(eval(BindRule::Dims, &[1, 5, 7], &[1, 5, 7]), Ok(vec![1, 5, 7]));
        assert_eq!(eval(BindRule::Dims, &[1, 5, 7], &[1, 7, 5]), Err(Reason::Count));
        assert_eq!(BindRule::Dims.count(3, 3), Some(3));
        assert_eq!(BindRule::Dims.count(3, 2), None);
        for r in REASONS {
            assert_eq!(REASONS[r.code() as usize - 1], r);
        }
    }
}
