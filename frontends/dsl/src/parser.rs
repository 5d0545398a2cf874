//! Recursive-descent parser with error recovery: a syntax error is recorded and the
//! parser skips to the next statement (`let`, `param`, `return`, `}`) or item (`model`,
//! `fn`, `weights`), so one run reports every syntax error in the file.
//!
//! Grammar (docs/dsl.md has it with examples):
//! ```text
//! file     := item*
//! item     := 'weights' STRING | 'fn' IDENT '(' idents ')' block
//!           | 'model' IDENT '(' typed ')' '->' '(' typed ')' block
//! typed    := (IDENT ':' type) (',' IDENT ':' type)*
//! type     := IDENT '[' (dim (',' dim)*)? ']'        dim := INT | IDENT
//! block    := '{' stmt* '}'
//! stmt     := 'let' IDENT '=' expr | 'return' expr (',' expr)*
//!           | 'param' IDENT ':' type ('from' STRING | '=' IDENT '(' kwargs ')')
//! expr     := term (('+' | '-') term)*
//! term     := unary (('*' | '/' | '@') unary)*
//! unary    := '-' unary | atom
//! atom     := INT | FLOAT | STRING | 'true' | 'false' | '[' exprs ']' | '(' expr ')'
//!           | IDENT | IDENT '(' args ')'
//! args     := (expr | IDENT '=' expr) (',' ...)*      keyword args after positional ones
//! ```
use crate::ast::*;
use crate::lexer::{Span, Tok};

/// A syntax error.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub message: String,
    pub span: Span,
    pub help: String,
}

struct Parser<'t> {
    toks: &'t [(Tok, Span)],
    pos: usize,
    errors: Vec<ParseError>,
    /// How deep the expression being parsed is: nested parentheses, calls, lists and
    /// negations, and the operators of a chain (`x + x + ...` builds a tree one level
    /// deeper per term). Bounded by [`MAX_DEPTH`], so neither the parser nor the passes
    /// over the tree (lowering, drop) can overflow the stack.
    depth: usize,
}

/// The deepest expression a `.dlc` file may hold.
pub(crate) const MAX_DEPTH: usize = 256;

type P<T> = Result<T, ()>;

const STMT_START: &[&str] = &["let", "param", "return"];
const ITEM_START: &[&str] = &["model", "fn", "weights"];

/// Parses a token stream (from [`crate::lexer::lex`]) into a file and its syntax errors.
pub fn parse(toks: &[(Tok, Span)]) -> (File, Vec<ParseError>) {
    let mut p = Parser { toks, pos: 0, errors: Vec::new(), depth: 0 };
    let mut file = File::default();
    while !p.at_eof() {
        match p.item() {
            Ok(item) => file.items.push(item),
            Err(()) => p.recover(ITEM_START, false),
        }
    }
    (file, p.errors)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }
    fn span(&self) -> Span {
        self.toks[self.pos.min(self.toks.len() - 1)].1.clone()
    }
    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].1.end
        }
    }
    fn at_eof(&self) -> bool {
        matches!(self.peek(), Tok::Eof)
    }
    fn bump(&mut self) -> (Tok, Span) {
        let t = self.toks[self.pos.min(self.toks.len() - 1)].clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }
    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }
    fn error<T>(&mut self, message: String, span: Span, help: impl Into<String>) -> P<T> {
        self.errors.push(ParseError { message, span, help: help.into() });
        Err(())
    }
    fn expect_punct(&mut self, p: &'static str, help: &str) -> P<Span> {
        if self.is_punct(p) {
            return Ok(self.bump().1);
        }
        let (t, s) = (self.peek().clone(), self.span());
        self.error(format!("expected '{p}', found {t}"), s, help)
    }
    fn ident(&mut self, what: &str) -> P<Ident> {
        match self.peek().clone() {
            Tok::Ident(name) if !is_keyword(&name) => {
                let span = self.bump().1;
                Ok(Ident { name, span })
            }
            t => {
                let s = self.span();
                self.error(format!("expected {what}, found {t}"), s, "names start with a letter or '_'")
            }
        }
    }
    /// Skips to the next statement or item start (or past a closing brace when `in_block`
    /// is false and one is met at depth 0).
    fn recover(&mut self, stops: &[&str], in_block: bool) {
        let mut depth = 0i32;
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::Ident(s) if depth == 0 && (stops.contains(&s.as_str()) || ITEM_START.contains(&s.as_str())) => {
                    return;
                }
                Tok::Punct("{") | Tok::Punct("(") | Tok::Punct("[") => depth += 1,
                Tok::Punct("}") if depth == 0 && in_block => return,
                Tok::Punct("}") | Tok::Punct(")") | Tok::Punct("]") => depth = (depth - 1).max(0),
                _ => {}
            }
            self.bump();
        }
    }

    fn item(&mut self) -> P<Item> {
        if self.is_kw("weights") {
            let s = self.bump().1;
            return match self.peek().clone() {
                Tok::Str(path) => {
                    let e = self.bump().1;
                    Ok(Item::Weights { path, span: s.start..e.end })
                }
                t => {
                    let sp = self.span();
                    self.error(
                        format!("expected the weights file name as a string, found {t}"),
                        sp,
                        "write: weights \"model.safetensors\"",
                    )
                }
            };
        }
        if self.is_kw("fn") {
            self.bump();
            let name = self.ident("a function name")?;
            self.expect_punct("(", "a function's parameters are in parentheses: fn block(x, w)")?;
            let mut params = Vec::new();
            while !self.is_punct(")") {
                params.push(self.ident("a parameter name")?);
                if !self.is_punct(")") {
                    self.expect_punct(",", "separate parameters with ','")?;
                }
            }
            self.bump();
            let body = self.block()?;
            return Ok(Item::Func(Func { name, params, body }));
        }
        if self.is_kw("model") {
            self.bump();
            let name = self.ident("the model's name")?;
            self.expect_punct("(", "the model's inputs are in parentheses: model m(x: f32[1, 4])")?;
            let inputs = self.typed_list()?;
            self.expect_punct("->", "the outputs follow '->': model m(x: f32[4]) -> (y: f32[4])")?;
            self.expect_punct("(", "the outputs are in parentheses: -> (y: f32[4])")?;
            let outputs = self.typed_list()?;
            let body = self.block()?;
            return Ok(Item::Model(Model { name, inputs, outputs, body }));
        }
        let (t, s) = (self.peek().clone(), self.span());
        self.bump();
        self.error(
            format!("expected 'model', 'fn' or 'weights', found {t}"),
            s,
            "a file holds a model, functions and a weights line",
        )
    }

    /// `a: type, b: type )` (consumes the closing parenthesis).
    fn typed_list(&mut self) -> P<Vec<TypedName>> {
        let mut out = Vec::new();
        while !self.is_punct(")") {
            let name = self.ident("a tensor name")?;
            self.expect_punct(":", "give its type: x: f32[1, 3, 224, 224]")?;
            let ty = self.ty()?;
            out.push(TypedName { name, ty });
            if !self.is_punct(")") {
                self.expect_punct(",", "separate tensors with ','")?;
            }
        }
        self.bump();
        Ok(out)
    }

    fn ty(&mut self) -> P<TypeExpr> {
        let dtype = self.ident("a dtype like f32")?;
        self.expect_punct("[", "a type is a dtype and its dims: f32[N, 10] (f32[] for a scalar)")?;
        let mut dims = Vec::new();
        while !self.is_punct("]") {
            match self.peek().clone() {
                Tok::Int(v) if v >= 0 => dims.push(DimExpr::Fixed(v as u64, self.bump().1)),
                Tok::Ident(_) => dims.push(DimExpr::Name(self.ident("a dim")?)),
                t => {
                    let s = self.span();
                    return self.error(format!("expected a dim, found {t}"), s, "dims are sizes (3) or names (N)");
                }
            }
            if !self.is_punct("]") {
                self.expect_punct(",", "separate dims with ','")?;
            }
        }
        let end = self.bump().1.end;
        let span = dtype.span.start..end;
        Ok(TypeExpr { dtype, dims, span })
    }

    fn block(&mut self) -> P<Vec<Stmt>> {
        self.expect_punct("{", "a body is in braces")?;
        let mut body = Vec::new();
        while !self.is_punct("}") {
            if self.at_eof() {
                let s = self.span();
                return self.error("expected '}' before the end of the file".into(), s, "close the body with '}'");
            }
            if ITEM_START.iter().any(|k| self.is_kw(k)) {
                let s = self.span();
                return self.error(
                    format!("expected '}}', found {}", self.peek().clone()),
                    s,
                    "the previous body is not closed",
                );
            }
            match self.stmt() {
                Ok(st) => body.push(st),
                Err(()) => self.recover(STMT_START, true),
            }
        }
        self.bump();
        Ok(body)
    }

    fn stmt(&mut self) -> P<Stmt> {
        if self.is_kw("let") {
            self.bump();
            let name = self.ident("a name to bind")?;
            self.expect_punct("=", "write: let name = expression")?;
            let value = self.expr()?;
            return Ok(Stmt::Let { name, value });
        }
        if self.is_kw("param") {
            self.bump();
            let name = self.ident("the parameter's name")?;
            self.expect_punct(":", "give its type: param w: f32[10, 4] = normal(seed=1)")?;
            let ty = self.ty()?;
            if self.is_kw("from") {
                self.bump();
                return match self.peek().clone() {
                    Tok::Str(key) => {
                        let span = self.bump().1;
                        Ok(Stmt::Param { name, ty, init: ParamInit::From { key, span } })
                    }
                    t => {
                        let s = self.span();
                        self.error(
                            format!("expected the tensor's name in the weights file, found {t}"),
                            s,
                            "write: from \"fc1.weight\"",
                        )
                    }
                };
            }
            self.expect_punct("=", "initialise it (= normal(seed=1)) or load it (from \"name\")")?;
            let init = self.ident("an initialiser (zeros, ones, constant, normal, uniform)")?;
            self.expect_punct("(", "initialisers take keyword arguments: normal(seed=1, std=0.02)")?;
            let (args, kwargs) = self.args()?;
            if let Some(a) = args.first() {
                return self.error(
                    "initialisers take keyword arguments only".into(),
                    a.span.clone(),
                    "write them as name=value: normal(seed=1, std=0.02)",
                );
            }
            return Ok(Stmt::Param { name, ty, init: ParamInit::Init { name: init, kwargs } });
        }
        if self.is_kw("return") {
            let s = self.bump().1;
            let mut values = vec![self.expr()?];
            while self.is_punct(",") {
                self.bump();
                values.push(self.expr()?);
            }
            let span = s.start..self.prev_end();
            return Ok(Stmt::Return { values, span });
        }
        let (t, s) = (self.peek().clone(), self.span());
        self.bump();
        self.error(
            format!("expected 'let', 'param' or 'return', found {t}"),
            s,
            "a body is a list of let, param and return statements",
        )
    }

    /// One level deeper (see [`Parser::depth`]); an error past [`MAX_DEPTH`].
    fn deeper(&mut self) -> P<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let s = self.span();
            // Unwind to the statement: every level returns the error.
            return self.error(
                format!("expression nested too deeply (more than {MAX_DEPTH} levels of parentheses, calls, lists or operators)"),
                s,
                "split it into several `let` statements",
            );
        }
        Ok(())
    }

    fn expr(&mut self) -> P<Expr> {
        let start = self.depth;
        let r = self.expr_chain();
        self.depth = start;
        r
    }

    fn expr_chain(&mut self) -> P<Expr> {
        self.deeper()?;
        let mut lhs = self.term()?;
        while self.is_punct("+") || self.is_punct("-") {
            let op = if self.is_punct("+") { "+" } else { "-" };
            self.bump();
            self.deeper()?;
            let rhs = self.term()?;
            let span = lhs.span.start..rhs.span.end;
            lhs = Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span };
        }
        Ok(lhs)
    }

    fn term(&mut self) -> P<Expr> {
        let start = self.depth;
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Punct("*") => "*",
                Tok::Punct("/") => "/",
                Tok::Punct("@") => "@",
                _ => {
                    self.depth = start;
                    return Ok(lhs);
                }
            };
            self.bump();
            self.deeper()?;
            let rhs = self.unary()?;
            let span = lhs.span.start..rhs.span.end;
            lhs = Expr { kind: ExprKind::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) }, span };
        }
    }

    fn unary(&mut self) -> P<Expr> {
        if self.is_punct("-") {
            let s = self.bump().1;
            self.deeper()?;
            let e = self.unary();
            self.depth -= 1;
            let e = e?;
            let span = s.start..e.span.end;
            return Ok(match e.kind {
                ExprKind::Int(v) => Expr { kind: ExprKind::Int(-v), span },
                ExprKind::Float(v) => Expr { kind: ExprKind::Float(-v), span },
                _ => Expr { kind: ExprKind::Neg(Box::new(e)), span },
            });
        }
        self.atom()
    }

    fn atom(&mut self) -> P<Expr> {
        let (t, s) = (self.peek().clone(), self.span());
        let kind = match t {
            Tok::Int(v) => ExprKind::Int(v),
            Tok::Float(v) => ExprKind::Float(v),
            Tok::Str(v) => ExprKind::Str(v),
            Tok::Ident(ref k) if k == "true" || k == "false" => ExprKind::Bool(k == "true"),
            Tok::Punct("(") => {
                self.bump();
                let e = self.expr()?;
                let end = self.expect_punct(")", "close the parenthesis")?.end;
                return Ok(Expr { kind: e.kind, span: s.start..end });
            }
            Tok::Punct("[") => {
                self.bump();
                let mut items = Vec::new();
                while !self.is_punct("]") {
                    items.push(self.expr()?);
                    if !self.is_punct("]") {
                        self.expect_punct(",", "separate list items with ','")?;
                    }
                }
                let end = self.bump().1.end;
                return Ok(Expr { kind: ExprKind::List(items), span: s.start..end });
            }
            Tok::Ident(ref name) if !is_keyword(name) => {
                let callee = self.ident("a name")?;
                if self.is_punct("(") {
                    self.bump();
                    let (args, kwargs) = self.args()?;
                    let span = callee.span.start..self.prev_end();
                    return Ok(Expr { kind: ExprKind::Call { callee, args, kwargs }, span });
                }
                return Ok(Expr { kind: ExprKind::Name(callee.name), span: callee.span });
            }
            t => {
                return self.error(
                    format!("expected an expression, found {t}"),
                    s,
                    "an expression is a name, a number, a call like relu(x), or a combination with + - * / @",
                )
            }
        };
        self.bump();
        Ok(Expr { kind, span: s })
    }

    /// Call arguments after '(' up to and including ')'.
    fn args(&mut self) -> P<(Vec<Expr>, Vec<Kwarg>)> {
        let (mut args, mut kwargs) = (Vec::new(), Vec::<Kwarg>::new());
        while !self.is_punct(")") {
            let keyword = matches!(self.peek(), Tok::Ident(_))
                && matches!(self.toks.get(self.pos + 1), Some((Tok::Punct("="), _)));
            if keyword {
                let name = self.ident("an attribute name")?;
                self.bump();
                let value = self.expr()?;
                if let Some(prev) = kwargs.iter().find(|k| k.name.name == name.name) {
                    let _ = prev;
                    self.errors.push(ParseError {
                        message: format!("attribute '{}' is given twice", name.name),
                        span: name.span.clone(),
                        help: "give each attribute once".into(),
                    });
                }
                kwargs.push(Kwarg { name, value });
            } else {
                let e = self.expr()?;
                if !kwargs.is_empty() {
                    self.errors.push(ParseError {
                        message: "a positional argument follows keyword arguments".into(),
                        span: e.span.clone(),
                        help: "put operands first, then attributes: conv(x, w, strides=[2, 2])".into(),
                    });
                }
                args.push(e);
            }
            if !self.is_punct(")") {
                self.expect_punct(",", "separate arguments with ','")?;
            }
        }
        self.bump();
        Ok((args, kwargs))
    }
}

/// Words that cannot name a tensor.
pub fn is_keyword(s: &str) -> bool {
    matches!(s, "model" | "fn" | "let" | "param" | "return" | "weights" | "from" | "true" | "false")
}
