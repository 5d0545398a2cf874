//! The checker: names, calls, types and shapes, lowered into a `dlc_ir::Graph` as it
//! goes (the graph's shape rules are the type checker). Errors are collected, not
//! returned early: a statement that fails binds nothing and later uses of its name are
//! not reported again.
use crate::ast::*;
use crate::lexer::Span;
use crate::Diag;
use dlc_ir::ops::{self, Attr, Op, OP_TABLE};
use dlc_ir::{DType, Graph, TensorData, TensorType, Value};
use dlc_ir::{Dim, Shape};
use std::collections::HashMap;
use std::path::Path;

/// A value in scope: a tensor, or a compile-time literal (numbers, strings, lists) that
/// attributes, dims and numeric operands can use.
#[derive(Debug, Clone)]
enum Val {
    T(Value),
    Lit(Lit),
    /// Bound by a statement that failed: uses fail quietly (reported once already).
    Poison,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Lit>),
}

impl Lit {
    fn to_attr(&self) -> Option<Attr> {
        Some(match self {
            Lit::Int(v) => Attr::Int(*v),
            Lit::Float(v) => Attr::Float(*v as f32),
            Lit::Bool(v) => Attr::Bool(*v),
            Lit::Str(v) => Attr::Str(v.clone()),
            Lit::List(items) => Attr::Ints(
                items.iter().map(|i| if let Lit::Int(v) = i { Some(*v) } else { None }).collect::<Option<_>>()?,
            ),
        })
    }
    fn as_f64(&self) -> Option<f64> {
        match self {
            Lit::Int(v) => Some(*v as f64),
            Lit::Float(v) => Some(*v),
            _ => None,
        }
    }
}

/// Names bound in one body: a function call's or the model's.
#[derive(Default)]
struct Scope {
    vars: HashMap<String, (Val, Span)>,
    /// Prefix of parameter and node names made in this body (`block1.` inside the call
    /// `let block1 = block(...)`).
    prefix: String,
}

/// A call site: what is called, with what, and where.
#[derive(Clone, Copy)]
struct Call<'e> {
    callee: &'e Ident,
    args: &'e [Expr],
    kwargs: &'e [Kwarg],
    span: &'e Span,
}

/// Failed; the diagnostic is already recorded.
struct Reported;
type R<T> = Result<T, Reported>;

struct Lower<'a> {
    g: Graph,
    diags: &'a mut Vec<Diag>,
    funcs: HashMap<&'a str, &'a Func>,
    weights: Option<(String, Span, Vec<u8>)>,
    dir: &'a Path,
    counter: HashMap<String, usize>,
    depth: usize,
    /// Function calls inlined so far, bounded by [`MAX_INLINED_CALLS`] (functions calling
    /// each other twice per level would otherwise inline exponentially many copies).
    inlined: usize,
    /// The functions being inlined, outermost first.
    stack: Vec<String>,
    /// Symbolic dims pinned through pinned input shapes.
    pins: HashMap<String, u64>,
}

/// The most function calls one model may inline.
pub(crate) const MAX_INLINED_CALLS: usize = 10_000;

pub(crate) fn lower(
    file: &File,
    dir: &Path,
    input_pins: &HashMap<String, Vec<u64>>,
    diags: &mut Vec<Diag>,
) -> Option<Graph> {
    let mut models = Vec::new();
    let mut funcs: HashMap<&str, &Func> = HashMap::new();
    let mut weights_decl = None;
    for item in &file.items {
        match item {
            Item::Model(m) => models.push(m),
            Item::Func(f) => {
                if funcs.insert(&f.name.name, f).is_some() {
                    diags.push(err(
                        &f.name.span,
                        format!("function '{}' is defined twice", f.name.name),
                        "rename one of them",
                    ));
                }
            }
            Item::Weights { path, span } => {
                if weights_decl.replace((path.clone(), span.clone())).is_some() {
                    diags.push(err(span, "a second weights file".into(), "a model reads one weights file"));
                }
            }
        }
    }
    let model = match models.as_slice() {
        [m] => *m,
        [] => {
            diags.push(err(
                &(0..0),
                "the file has no model".into(),
                "declare one: model name(x: f32[1, 4]) -> (y: f32[1, 2]) { ... }",
            ));
            return None;
        }
        [_, second, ..] => {
            diags.push(err(
                &second.name.span,
                "a second model".into(),
                "a file holds one model; move the other to its own file",
            ));
            return None;
        }
    };
    let weights = match weights_decl {
        Some((path, span)) => {
            match dlc_ir::paths::confined(dir, &path).and_then(|p| std::fs::read(&p).map_err(|e| e.to_string())) {
                Ok(bytes) => Some((path, span, bytes)),
                Err(e) => {
                    diags.push(err(
                        &span,
                        format!("cannot read weights file '{path}': {e}"),
                        "the path is relative to the .dlc file",
                    ));
                    return None;
                }
            }
        }
        None => None,
    };
    // Pinned input shapes name sizes for the symbolic dims of those inputs.
    let mut pins = HashMap::new();
    for (name, dims) in input_pins {
        let Some(input) = model.inputs.iter().find(|i| &i.name.name == name) else {
            let names: Vec<&str> = model.inputs.iter().map(|i| i.name.name.as_str()).collect();
            diags.push(err(
                &model.name.span,
                format!("--input-shape {name}: the model has no input '{name}'"),
                &format!("its inputs: {}", names.join(", ")),
            ));
            continue;
        };
        if dims.len() != input.ty.dims.len() {
            diags.push(err(
                &input.ty.span,
                format!("--input-shape {name}: gives {} dims, the input has {}", dims.len(), input.ty.dims.len()),
                "give one size per dim",
            ));
            continue;
        }
        for (d, &n) in input.ty.dims.iter().zip(dims) {
            match d {
                DimExpr::Fixed(m, span) if *m != n => diags.push(err(
                    span,
                    format!("--input-shape {name}: this dim is {m}, cannot pin it to {n}"),
                    "pin only symbolic dims",
                )),
                DimExpr::Name(id) => {
                    if let Some(prev) = pins.insert(id.name.clone(), n) {
                        if prev != n {
                            diags.push(err(
                                &id.span,
                                format!("--input-shape: '{}' pinned to both {prev} and {n}", id.name),
                                "give a symbolic dim one size",
                            ));
                        }
                    }
                }
                DimExpr::Fixed(..) => {}
            }
        }
    }
    if !diags.is_empty() {
        return None;
    }
    let mut l = Lower {
        g: Graph::new(&model.name.name),
        diags,
        funcs,
        weights,
        dir,
        counter: HashMap::new(),
        depth: 0,
        inlined: 0,
        stack: Vec::new(),
        pins,
    };
    let _ = l.dir;
    let mut scope = Scope::default();
    for input in &model.inputs {
        let Ok(ty) = l.tensor_type(&input.ty, &scope) else { continue };
        if scope.vars.contains_key(&input.name.name) {
            l.error(&input.name.span, format!("input '{}' is declared twice", input.name.name), "rename one of them");
            continue;
        }
        let v = l.g.add_input(&input.name.name, ty);
        scope.vars.insert(input.name.name.clone(), (Val::T(v), input.name.span.clone()));
    }
    let results = l.body(&model.body, &mut scope, &model.name);
    let ok_before = l.diags.is_empty();
    if let Ok(values) = results {
        if values.len() != model.outputs.len() {
            let span = model.body.iter().rev().find_map(|s| {
                if let Stmt::Return { span, .. } = s {
                    Some(span.clone())
                } else {
                    None
                }
            });
            l.error(
                &span.unwrap_or(model.name.span.clone()),
                format!("the model returns {} value(s) but declares {} output(s)", values.len(), model.outputs.len()),
                "return one value per declared output, in order",
            );
        } else {
            for ((v, vspan), out) in values.into_iter().zip(&model.outputs) {
                let Ok(want) = l.tensor_type(&out.ty, &scope) else { continue };
                let got = l.g.value_type(v).clone();
                if got.dtype != want.dtype || !same_shape(&got.shape, &want.shape) {
                    l.error(
                        &vspan,
                        format!("output '{}' is declared {want} but this value is {got}", out.name.name),
                        "change the declared type or the computation",
                    );
                }
                l.g.add_output(&out.name.name, v);
            }
        }
    }
    (ok_before && l.diags.is_empty()).then_some(l.g)
}

fn err(span: &Span, message: String, help: &str) -> Diag {
    Diag { message, span: span.clone(), label: "here".into(), help: help.into() }
}

/// Shapes agree: same rank, equal fixed dims, equal names for symbolic ones.
fn same_shape(a: &Shape, b: &Shape) -> bool {
    a.0.len() == b.0.len() && a.0.iter().zip(&b.0).all(|(x, y)| x == y)
}

/// The closest of `names` to `name` (edit distance at most a third of its length).
fn suggest<'n>(name: &str, names: impl Iterator<Item = &'n str>) -> Option<&'n str> {
    let dist = |a: &str, b: &str| {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut prev = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let cur = row[j];
                row[j] = (row[j] + 1).min(row[j - 1] + 1).min(prev + usize::from(a[i - 1] != b[j - 1]));
                prev = cur;
            }
        }
        row[b.len()]
    };
    names.map(|n| (dist(name, n), n)).filter(|(d, _)| *d <= name.len().max(3) / 3).min().map(|(_, n)| n)
}

impl<'a> Lower<'a> {
    fn error(&mut self, span: &Span, message: String, help: &str) -> Reported {
        self.diags.push(err(span, message, help));
        Reported
    }

    /// A unique node name: `prefix` + `base`, numbered after the first.
    fn name(&mut self, scope: &Scope, base: &str) -> String {
        let full = format!("{}{base}", scope.prefix);
        let n = self.counter.entry(full.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            full
        } else {
            format!("{full}_{}", *n - 1)
        }
    }

    fn tensor_type(&mut self, t: &TypeExpr, scope: &Scope) -> R<TensorType> {
        let Some(dtype) = DType::from_name(&t.dtype.name) else {
            let names = ["f32", "f64", "f16", "bf16", "i8", "i16", "i32", "i64", "u8", "bool"];
            let help = match suggest(&t.dtype.name, names.into_iter()) {
                Some(s) => format!("did you mean '{s}'?"),
                None => "dtypes: f32, f64, f16, bf16, i8 ... i64, u8 ... u64, bool".into(),
            };
            return Err(self.error(&t.dtype.span, format!("unknown dtype '{}'", t.dtype.name), &help));
        };
        let mut dims = Vec::new();
        for d in &t.dims {
            dims.push(match d {
                DimExpr::Fixed(v, _) => Dim::Fixed(*v),
                DimExpr::Name(id) => match scope.vars.get(&id.name) {
                    Some((Val::Lit(Lit::Int(v)), _)) if *v >= 0 => Dim::Fixed(*v as u64),
                    Some(_) => {
                        return Err(self.error(
                            &id.span,
                            format!("'{}' is not a size", id.name),
                            "a dim is a size, a symbolic name, or an integer argument",
                        ))
                    }
                    None => match self.pins.get(&id.name) {
                        Some(&n) => Dim::Fixed(n),
                        None => Dim::sym(id.name.clone()),
                    },
                },
            });
        }
        Ok(TensorType { dtype, shape: Shape(dims) })
    }

    /// Runs a body's statements; returns its `return` values (with their spans).
    fn body(&mut self, stmts: &[Stmt], scope: &mut Scope, owner: &Ident) -> R<Vec<(Value, Span)>> {
        let mut result = None;
        for st in stmts {
            if result.is_some() {
                let span = match st {
                    Stmt::Let { name, .. } | Stmt::Param { name, .. } => name.span.clone(),
                    Stmt::Return { span, .. } => span.clone(),
                };
                self.error(&span, "statement after 'return'".into(), "'return' ends a body; move it last");
                continue;
            }
            match st {
                Stmt::Let { name, value } => {
                    if let Some((_, prev)) = scope.vars.get(&name.name) {
                        let (line, _) = (prev.start, 0);
                        let _ = line;
                        self.error(
                            &name.span,
                            format!("'{}' is already defined", name.name),
                            "each name is bound once; pick a new name",
                        );
                        continue;
                    }
                    let v = self.expr(value, scope, Some(&name.name)).unwrap_or(Val::Poison);
                    scope.vars.insert(name.name.clone(), (v, name.span.clone()));
                }
                Stmt::Param { name, ty, init } => {
                    if scope.vars.contains_key(&name.name) {
                        self.error(
                            &name.span,
                            format!("'{}' is already defined", name.name),
                            "each name is bound once; pick a new name",
                        );
                        continue;
                    }
                    let v = self.param(name, ty, init, scope).map_or(Val::Poison, Val::T);
                    scope.vars.insert(name.name.clone(), (v, name.span.clone()));
                }
                Stmt::Return { values, span } => {
                    let mut out = Vec::new();
                    let mut failed = false;
                    for e in values {
                        match self.expr(e, scope, None) {
                            Ok(Val::T(v)) => out.push((v, e.span.clone())),
                            Ok(Val::Lit(_)) => {
                                self.error(
                                    &e.span,
                                    "a return value must be a tensor, not a literal".into(),
                                    "return a computed tensor",
                                );
                                failed = true;
                            }
                            Ok(Val::Poison) => failed = true,
                            Err(Reported) => failed = true,
                        }
                    }
                    let _ = span;
                    result = Some(if failed { Err(Reported) } else { Ok(out) });
                }
            }
        }
        match result {
            Some(r) => r,
            None => Err(self.error(
                &owner.span,
                format!("'{}' has no 'return'", owner.name),
                "end the body with: return value",
            )),
        }
    }

    fn param(&mut self, name: &Ident, ty: &TypeExpr, init: &ParamInit, scope: &Scope) -> R<Value> {
        let t = self.tensor_type(ty, scope)?;
        let Some(dims) = t.shape.as_fixed() else {
            return Err(self.error(
                &ty.span,
                format!("parameter '{}' needs fixed dims, got {t}", name.name),
                "parameters have known sizes",
            ));
        };
        let full = format!("{}{}", scope.prefix, name.name);
        let data = match init {
            ParamInit::From { key, span } => self.load_weight(key, span, &t, &dims)?,
            ParamInit::Init { name: init, kwargs } => self.initialise(init, kwargs, scope, &t, &dims, &full)?,
        };
        Ok(self.g.add_const(full, data))
    }

    fn load_weight(&mut self, key: &str, span: &Span, t: &TensorType, dims: &[u64]) -> R<TensorData> {
        let Some((file, wspan, bytes)) = &self.weights else {
            return Err(self.error(
                span,
                format!("'from \"{key}\"' but the file names no weights file"),
                "add a line: weights \"model.safetensors\"",
            ));
        };
        let (file, wspan) = (file.clone(), wspan.clone());
        let st = match safetensors::SafeTensors::deserialize(bytes) {
            Ok(st) => st,
            Err(e) => {
                return Err(self.error(
                    &wspan,
                    format!("'{file}' is not a safetensors file: {e}"),
                    "write it with safetensors (e.g. safetensors.numpy.save_file)",
                ))
            }
        };
        let view = match st.tensor(key) {
            Ok(v) => v,
            Err(_) => {
                let names = st.names();
                let help = match suggest(key, names.iter().map(|s| &**s)) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => format!("'{file}' holds {} tensors", names.len()),
                };
                return Err(self.error(span, format!("no tensor \"{key}\" in '{file}'"), &help));
            }
        };
        let want = match t.dtype {
            DType::F32 => safetensors::Dtype::F32,
            DType::F64 => safetensors::Dtype::F64,
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            DType::I64 => safetensors::Dtype::I64,
            DType::I32 => safetensors::Dtype::I32,
            DType::I8 => safetensors::Dtype::I8,
            DType::U8 => safetensors::Dtype::U8,
            other => {
                return Err(self.error(
                    span,
                    format!("parameters of dtype {other} cannot be loaded"),
                    "use f32, f64, f16, bf16, i64, i32, i8 or u8",
                ))
            }
        };
        if view.dtype() != want {
            return Err(self.error(
                span,
                format!("tensor \"{key}\" is {:?} in '{file}', the parameter is {}", view.dtype(), t.dtype),
                "declare the parameter with the file's dtype",
            ));
        }
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        if shape != dims {
            return Err(self.error(
                span,
                format!("tensor \"{key}\" has shape {shape:?} in '{file}', the parameter is declared {dims:?}"),
                "declare the parameter with the file's shape",
            ));
        }
        Ok(TensorData::new(t.clone(), view.data().to_vec().into()).expect("size checked by safetensors"))
    }

    fn initialise(
        &mut self,
        init: &Ident,
        kwargs: &[Kwarg],
        scope: &Scope,
        t: &TensorType,
        dims: &[u64],
        full: &str,
    ) -> R<TensorData> {
        let mut args = HashMap::new();
        for k in kwargs {
            let v = self.literal(&k.value, scope)?;
            let Some(x) = v.as_f64() else {
                return Err(self.error(
                    &k.value.span,
                    format!("'{}' must be a number", k.name.name),
                    "initialiser arguments are numbers",
                ));
            };
            args.insert(k.name.name.as_str(), (x, k.name.span.clone()));
        }
        let allowed: &[&str] = match init.name.as_str() {
            "zeros" | "ones" => &[],
            "constant" => &["value"],
            "normal" => &["seed", "mean", "std"],
            "uniform" => &["seed", "low", "high"],
            other => {
                let names = ["zeros", "ones", "constant", "normal", "uniform"];
                let help = match suggest(other, names.into_iter()) {
                    Some(s) => format!("did you mean '{s}'?"),
                    None => "initialisers: zeros, ones, constant(value=), normal(seed=, mean=, std=), uniform(seed=, low=, high=)".into(),
                };
                return Err(self.error(&init.span, format!("unknown initialiser '{other}'"), &help));
            }
        };
        for (k, (_, span)) in &args {
            if !allowed.contains(k) {
                return Err(self.error(
                    span,
                    format!("{} takes no argument '{k}'", init.name),
                    &format!("its arguments: {}", if allowed.is_empty() { "none".into() } else { allowed.join(", ") }),
                ));
            }
        }
        if !matches!(t.dtype, DType::F32 | DType::F64) {
            return Err(self.error(
                &init.span,
                format!("initialisers make f32 or f64 parameters, not {}", t.dtype),
                "load other dtypes from the weights file",
            ));
        }
        let get = |k: &str, d: f64| args.get(k).map_or(d, |v| v.0);
        let n = match dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) {
            // 2^24 elements (64 MB of f32): a seeded initialiser of 100M elements took
            // over 10 s (found by the dsl fuzz target on a Zen 1 machine); larger
            // parameters belong in the weights file.
            Some(n) if n <= MAX_INIT_ELEMENTS => n,
            _ => {
                return Err(self.error(
                    &init.span,
                    format!(
                        "{} elements are too many to initialise",
                        dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ")
                    ),
                    "initialisers make parameters of at most 2^24 elements (64 MB of f32); load larger ones from the weights file",
                ))
            }
        };
        let mut rng = Rng::new(get("seed", 0.0) as u64, full);
        let values: Vec<f64> = match init.name.as_str() {
            "zeros" => vec![0.0; n as usize],
            "ones" => vec![1.0; n as usize],
            "constant" => vec![get("value", 0.0); n as usize],
            "normal" => (0..n).map(|_| get("mean", 0.0) + get("std", 1.0) * rng.normal()).collect(),
            _ => {
                let (lo, hi) = (get("low", -1.0), get("high", 1.0));
                (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect()
            }
        };
        let bytes: Vec<u8> = if t.dtype == DType::F32 {
            values.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect()
        } else {
            values.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        Ok(TensorData::new(t.clone(), bytes.into()).expect("sized from dims"))
    }

    /// A compile-time literal: numbers, strings, bools, lists, and names bound to them.
    fn literal(&mut self, e: &Expr, scope: &Scope) -> R<Lit> {
        Ok(match &e.kind {
            ExprKind::Int(v) => Lit::Int(*v),
            ExprKind::Float(v) => Lit::Float(*v),
            ExprKind::Bool(v) => Lit::Bool(*v),
            ExprKind::Str(v) => Lit::Str(v.clone()),
            ExprKind::List(items) => Lit::List(items.iter().map(|i| self.literal(i, scope)).collect::<R<_>>()?),
            ExprKind::Name(n) => match scope.vars.get(n) {
                Some((Val::Lit(l), _)) => l.clone(),
                Some((Val::Poison, _)) => return Err(Reported),
                Some((Val::T(_), _)) => {
                    return Err(self.error(
                        &e.span,
                        format!("'{n}' is a tensor; attributes are literals"),
                        "pass a number, list or string",
                    ))
                }
                None => return Err(self.unknown_name(n, &e.span, scope)),
            },
            ExprKind::Neg(inner) => match self.literal(inner, scope)? {
                Lit::Int(v) => Lit::Int(-v),
                Lit::Float(v) => Lit::Float(-v),
                _ => return Err(self.error(&e.span, "only numbers can be negated".into(), "")),
            },
            _ => {
                return Err(self.error(
                    &e.span,
                    "expected a literal (number, string, list)".into(),
                    "attributes and initialiser arguments are literals",
                ))
            }
        })
    }

    fn unknown_name(&mut self, n: &str, span: &Span, scope: &Scope) -> Reported {
        let names: Vec<&str> = scope.vars.keys().map(|s| s.as_str()).collect();
        let help = match suggest(n, names.into_iter()) {
            Some(s) => format!("did you mean '{s}'?"),
            None => "define it first with let, param or as an input".into(),
        };
        self.error(span, format!("unknown name '{n}'"), &help)
    }

    fn expr(&mut self, e: &Expr, scope: &mut Scope, bind: Option<&str>) -> R<Val> {
        match &e.kind {
            ExprKind::Name(n) => match scope.vars.get(n) {
                Some((Val::Poison, _)) => Err(Reported),
                Some((v, _)) => Ok(v.clone()),
                None => Err(self.unknown_name(n, &e.span, scope)),
            },
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Bool(_) | ExprKind::Str(_) | ExprKind::List(_) => {
                Ok(Val::Lit(self.literal(e, scope)?))
            }
            ExprKind::Neg(inner) => match self.expr(inner, scope, None)? {
                Val::T(v) => self.node(scope, bind.unwrap_or("neg"), ops::Neg {}.into(), &[v], &e.span),
                Val::Lit(_) => Ok(Val::Lit(self.literal(e, scope)?)),
                Val::Poison => Err(Reported),
            },
            ExprKind::Binary { op, lhs, rhs } => {
                let op: Op = match *op {
                    "+" => ops::Add {}.into(),
                    "-" => ops::Sub {}.into(),
                    "*" => ops::Mul {}.into(),
                    "/" => ops::Div {}.into(),
                    _ => ops::MatMul { act: ops::Activation::None }.into(),
                };
                let (a, b) = (self.expr(lhs, scope, None), self.expr(rhs, scope, None));
                let (a, b) = (a?, b?);
                let operands = self.operands(&[(a, lhs.span.clone()), (b, rhs.span.clone())], &e.span)?;
                self.node(scope, bind.unwrap_or(op.mnemonic()), op, &operands, &e.span)
            }
            ExprKind::Call { callee, args, kwargs } => {
                self.call(&Call { callee, args, kwargs, span: &e.span }, scope, bind)
            }
        }
    }

    /// Operands from values: literal numbers become scalar constants of the first
    /// tensor operand's dtype (`x * 2`, `pow(x, 3)`).
    fn operands(&mut self, vals: &[(Val, Span)], span: &Span) -> R<Vec<Value>> {
        let dtype =
            vals.iter().find_map(|(v, _)| if let Val::T(t) = v { Some(self.g.value_type(*t).dtype) } else { None });
        let Some(dtype) = dtype else {
            return Err(self.error(
                span,
                "arithmetic on literals only".into(),
                "at least one operand must be a tensor",
            ));
        };
        let mut out = Vec::new();
        for (v, s) in vals {
            out.push(match v {
                Val::T(t) => *t,
                Val::Poison => return Err(Reported),
                Val::Lit(l) => {
                    let Some(x) = l.as_f64() else {
                        return Err(self.error(
                            s,
                            "this operand must be a tensor or a number".into(),
                            "strings and lists are attributes: name=value",
                        ));
                    };
                    let data = match dtype {
                        DType::F32 => TensorData::from_f32(&[], &[x as f32]),
                        DType::I64 => TensorData::from_i64(&[], &[x as i64]),
                        DType::F64 => {
                            TensorData::new(TensorType::fixed(DType::F64, &[]), x.to_le_bytes().to_vec().into())
                        }
                        _ => None,
                    };
                    let Some(data) = data else {
                        return Err(self.error(
                            s,
                            format!("a number next to a {dtype} tensor"),
                            "numbers mix with f32, f64 and i64 tensors",
                        ));
                    };
                    self.g.add_const(format!("const_{}", self.g.node_count()), data)
                }
            });
        }
        Ok(out)
    }

    fn node(&mut self, scope: &Scope, base: &str, op: Op, operands: &[Value], span: &Span) -> R<Val> {
        let mn = op.mnemonic();
        let name = self.name(scope, base);
        match self.g.add_node(name, op, operands) {
            Ok(vals) => Ok(Val::T(vals[0])),
            Err(e) => {
                let msg = e.to_string();
                // Drop the node prefix the IR puts on its messages: the span says where.
                let msg = msg.split_once("): ").map_or(msg.as_str(), |(_, m)| m).to_string();
                let types: Vec<String> = operands.iter().map(|v| self.g.value_type(*v).to_string()).collect();
                Err(self.error(span, format!("{mn}: {msg}"), &format!("operand types: {}", types.join(", "))))
            }
        }
    }

    fn call(&mut self, c: &Call<'_>, scope: &mut Scope, bind: Option<&str>) -> R<Val> {
        let Call { callee, args, kwargs, span } = *c;
        let name = callee.name.as_str();
        if let Some(f) = self.funcs.get(name).copied() {
            return self.call_fn(f, c, scope, bind);
        }
        let Some(info) = OP_TABLE.iter().find(|i| i.mnemonic == name) else {
            let candidates = OP_TABLE.iter().map(|i| i.mnemonic).chain(self.funcs.keys().copied());
            let help = match suggest(name, candidates) {
                Some(s) => format!("did you mean '{s}'?"),
                None => "calls name an op of dlc's op table (docs/dsl.md lists them) or a function of this file".into(),
            };
            return Err(self.error(&callee.span, format!("unknown op or function '{name}'"), &help));
        };
        if matches!(name, "input" | "const" | "fused") {
            return Err(self.error(
                &callee.span,
                format!("'{name}' cannot be called"),
                "inputs and parameters are declared; fused kernels are the optimiser's",
            ));
        }
        let mut vals = Vec::new();
        let mut failed = false;
        for a in args {
            match self.expr(a, scope, None) {
                Ok(v) => vals.push((v, a.span.clone())),
                Err(Reported) => failed = true,
            }
        }
        let mut attrs = Vec::new();
        for k in kwargs {
            match self.literal(&k.value, scope) {
                Ok(l) => match l.to_attr() {
                    Some(a) => attrs.push((k.name.name.clone(), a)),
                    None => {
                        self.error(
                            &k.value.span,
                            format!("attribute '{}' must be a number, string, bool or list of integers", k.name.name),
                            "",
                        );
                        failed = true;
                    }
                },
                Err(Reported) => failed = true,
            }
        }
        // The op from its attributes (checked even when an operand failed, so both are
        // reported), built once.
        let op = if !failed || attrs.len() == kwargs.len() {
            match Op::from_call(name, attrs) {
                Ok(op) => op,
                Err(msg) => {
                    let at = kwargs.first().map_or(span.clone(), |k| {
                        k.name.span.start..kwargs.last().map_or(span.end, |k| k.value.span.end)
                    });
                    return Err(self.error(&at, msg, "attributes are name=value after the operands"));
                }
            }
        } else {
            None
        };
        let (false, Some(op)) = (failed, op) else {
            return Err(Reported);
        };
        if vals.len() < info.min_operands || vals.len() > info.max_operands {
            let want = if info.min_operands == info.max_operands {
                format!("{}", info.min_operands)
            } else {
                format!("{} to {}", info.min_operands, info.max_operands)
            };
            return Err(self.error(
                span,
                format!("{name} takes {want} operand(s), got {}", vals.len()),
                info.doc.lines().next().unwrap_or(""),
            ));
        }
        let operands = self.operands(&vals, span)?;
        self.node(scope, bind.unwrap_or(name), op, &operands, span)
    }

    fn call_fn(&mut self, f: &'a Func, c: &Call<'_>, scope: &mut Scope, bind: Option<&str>) -> R<Val> {
        let Call { callee, args, kwargs, span } = *c;
        if let Some(k) = kwargs.first() {
            return Err(self.error(
                &k.name.span,
                format!("function '{}' takes positional arguments only", f.name.name),
                &format!("call it as {}({})", f.name.name, names(&f.params)),
            ));
        }
        if args.len() != f.params.len() {
            return Err(self.error(
                span,
                format!("'{}' takes {} argument(s), got {}", f.name.name, f.params.len(), args.len()),
                &format!("its parameters: {}", names(&f.params)),
            ));
        }
        self.inlined += 1;
        if self.inlined == MAX_INLINED_CALLS + 1 {
            return Err(self.error(
                &callee.span,
                format!(
                    "the model inlines more than {MAX_INLINED_CALLS} function calls (this call of '{}' is one too many)",
                    f.name.name
                ),
                "every call copies its function's body; functions that call others several times multiply",
            ));
        }
        if self.inlined > MAX_INLINED_CALLS {
            return Err(Reported);
        }
        if self.depth >= 32 {
            return Err(self.error(
                &callee.span,
                if self.stack.contains(&f.name.name) {
                    format!("'{}' calls itself too deeply", f.name.name)
                } else {
                    format!("function calls nest more than 32 deep here ('{}')", f.name.name)
                },
                "functions are inlined; recursion is not supported",
            ));
        }
        // Arguments first (in the caller's scope), then the call's own name, so nested
        // unnamed calls are numbered in evaluation order.
        let mut bound = Vec::new();
        let mut failed = false;
        for a in args {
            match self.expr(a, scope, None) {
                Ok(v) => bound.push(v),
                Err(Reported) => failed = true,
            }
        }
        if failed {
            return Err(Reported);
        }
        let mut inner = Scope::default();
        let label = match bind {
            Some(b) => b.to_string(),
            None => {
                let n = self.counter.entry(format!("{}fn:{}", scope.prefix, f.name.name)).or_insert(0);
                *n += 1;
                format!("{}{}", f.name.name, n)
            }
        };
        inner.prefix = format!("{}{label}.", scope.prefix);
        for (p, v) in f.params.iter().zip(bound) {
            inner.vars.insert(p.name.clone(), (v, p.span.clone()));
        }
        self.depth += 1;
        self.stack.push(f.name.name.clone());
        let r = self.body(&f.body, &mut inner, &f.name);
        self.stack.pop();
        self.depth -= 1;
        match r?.as_slice() {
            [(v, _)] => Ok(Val::T(*v)),
            _ => Err(self.error(
                span,
                format!("'{}' returns more than one value", f.name.name),
                "a function returns one tensor",
            )),
        }
    }
}

fn names(ids: &[Ident]) -> String {
    ids.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The most elements an initialiser makes (2^24: 64 MB of f32).
const MAX_INIT_ELEMENTS: u64 = 1 << 24;

/// The initialisers' generator: splitmix64 seeded with the `seed` argument and an FNV-1a
/// hash of the parameter's full name (so blocks inlined from one function get different
/// values from one seed); normals by Box-Muller. Documented in docs/dsl.md so the values
/// are reproducible outside dlc.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(seed ^ h)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 bits.
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
