//! The syntax tree, every node with the span it came from.
use crate::lexer::Span;

/// A name and where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A source file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `weights "file.safetensors"`: where `param ... from "name"` reads.
    Weights {
        path: String,
        span: Span,
    },
    Func(Func),
    Model(Model),
}

/// `fn name(a, b) { ... return e }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Func {
    pub name: Ident,
    pub params: Vec<Ident>,
    pub body: Vec<Stmt>,
}

/// `model name(x: f32[N, 4]) -> (y: f32[N, 2]) { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub inputs: Vec<TypedName>,
    pub outputs: Vec<TypedName>,
    pub body: Vec<Stmt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TypedName {
    pub name: Ident,
    pub ty: TypeExpr,
}

/// `f32[N, 3, 224, 224]`; `f32[]` is a scalar.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    pub dtype: Ident,
    pub dims: Vec<DimExpr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DimExpr {
    Fixed(u64, Span),
    /// A symbolic dim, or (inside a function) a name bound to an integer argument.
    Name(Ident),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Let { name: Ident, value: Expr },
    Param { name: Ident, ty: TypeExpr, init: ParamInit },
    Return { values: Vec<Expr>, span: Span },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ParamInit {
    /// `from "tensor name"` in the weights file.
    From { key: String, span: Span },
    /// `= normal(seed=1, std=0.02)` and the other initialisers.
    Init { name: Ident, kwargs: Vec<Kwarg> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Name(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Expr>),
    Neg(Box<Expr>),
    /// `+ - * / @`.
    Binary {
        op: &'static str,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Call {
        callee: Ident,
        args: Vec<Expr>,
        kwargs: Vec<Kwarg>,
    },
}

/// `name=value` in a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Kwarg {
    pub name: Ident,
    pub value: Expr,
}
