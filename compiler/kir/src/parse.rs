//! Reads the text form that [`crate::print`] writes. Errors name the line and column.
//! Nesting is bounded ([`MAX_DEPTH`]) so hostile input cannot overflow the stack.
use crate::expr::Expr;
use crate::ir::*;
use std::collections::HashMap;
use std::sync::Arc;

/// How deeply bodies and expressions may nest.
pub const MAX_DEPTH: usize = 200;

/// A syntax error at a position of the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What was wrong.
    pub msg: String,
}

type R<T> = Result<T, ParseError>;

/// Reads a program's weights file by the name the program gives ([`program_with_weights`]).
pub type WeightsLoader<'a> = dyn FnMut(&str) -> Result<Vec<u8>, String> + 'a;

struct P<'s> {
    src: &'s str,
    pos: usize,
    depth: usize,
    /// Parameters of the kernel being parsed (scratch arrays are numbered after them).
    np: u32,
    /// Constant arrays of the kernel being parsed (scratch arrays come after them).
    nd: u32,
    /// Scratch arrays of the kernel being parsed (shared arrays come after them).
    ns: u32,
    /// The program's sidecar file of constants (`weights "FILE"`), once read.
    weights: Option<Vec<u8>>,
    /// Reads a sidecar file by the name the program gives.
    load: Option<&'s mut WeightsLoader<'s>>,
}

impl<'s> P<'s> {
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        let before = &self.src[..self.pos];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        Err(ParseError { line, col, msg: msg.into() })
    }

    fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    /// Skips whitespace and `//` comments.
    fn ws(&mut self) {
        loop {
            let r = self.rest();
            let t = r.trim_start();
            self.pos += r.len() - t.len();
            if t.starts_with("//") {
                self.pos += t.find('\n').unwrap_or(t.len());
            } else {
                return;
            }
        }
    }

    fn peek(&mut self, s: &str) -> bool {
        self.ws();
        self.rest().starts_with(s)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.peek(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> R<()> {
        if self.eat(s) {
            Ok(())
        } else {
            let got: String = self.rest().chars().take(12).collect();
            self.err(format!("expected '{s}', found '{got}'"))
        }
    }

    /// An identifier: letters, digits, `_` and `.`, not starting with a digit.
    fn ident(&mut self) -> R<&'s str> {
        self.ws();
        let r = self.rest();
        let n = r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(r.len());
        if n == 0 || r.starts_with(|c: char| c.is_ascii_digit()) {
            return self.err("expected a name");
        }
        self.pos += n;
        Ok(&r[..n])
    }

    fn keyword(&mut self, k: &str) -> R<()> {
        self.ws();
        let at = self.pos;
        match self.ident() {
            Ok(w) if w == k => Ok(()),
            _ => {
                self.pos = at;
                self.err(format!("expected '{k}'"))
            }
        }
    }

    /// Whether the next word is `k` (consumed if so). Builds no error when it is not:
    /// an error's line and column cost a scan of the text before it.
    fn is_keyword(&mut self, k: &str) -> bool {
        self.ws();
        let r = self.rest();
        let n = r.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(r.len());
        if &r[..n] == k {
            self.pos += n;
            true
        } else {
            false
        }
    }

    /// `(%bA <- %bB, ...)`: a loop's buffer pairs.
    fn buffer_pairs(&mut self) -> R<Vec<(u32, u32)>> {
        self.expect("(")?;
        let mut pairs = Vec::new();
        if !self.eat(")") {
            loop {
                let to = self.reg('b')?;
                self.expect("<-")?;
                pairs.push((to, self.reg('b')?));
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(pairs)
    }

    fn int(&mut self) -> R<i64> {
        self.ws();
        let neg = self.eat("-");
        let r = self.rest();
        let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        if n == 0 {
            return self.err("expected an integer");
        }
        let text = format!("{}{}", if neg { "-" } else { "" }, &r[..n]);
        let v = text.parse::<i64>().or_else(|_| self.err(format!("integer {text} out of range")))?;
        self.pos += n;
        Ok(v)
    }

    fn uint(&mut self) -> R<u32> {
        let v = self.int()?;
        u32::try_from(v).or_else(|_| self.err(format!("{v} is not a small unsigned integer")))
    }

    fn float(&mut self) -> R<f64> {
        self.ws();
        let r = self.rest();
        let n = r
            .char_indices()
            .find(|&(i, c)| {
                !(c.is_ascii_alphanumeric()
                    || c == '.' && !r[i..].starts_with("..")
                    || (c == '-' || c == '+') && (i == 0 || r[..i].ends_with('e')))
            })
            .map(|(i, _)| i)
            .unwrap_or(r.len());
        let text = &r[..n];
        let v = text.parse::<f64>().or_else(|_| self.err(format!("'{text}' is not a number")))?;
        self.pos += n;
        Ok(v)
    }

    fn string(&mut self) -> R<String> {
        self.ws();
        if !self.rest().starts_with('"') {
            return self.err("expected a string");
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.rest().chars().next() else { return self.err("unterminated string") };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let Some(e) = self.rest().chars().next() else { return self.err("unterminated string") };
                    self.pos += 1;
                    match e {
                        '"' | '\\' => out.push(e),
                        'u' => {
                            self.expect("{")?;
                            let r = self.rest();
                            let n = r.find('}').unwrap_or(0);
                            let ch = u32::from_str_radix(&r[..n], 16).ok().and_then(char::from_u32);
                            let Some(ch) = ch else { return self.err("bad \\u escape") };
                            self.pos += n;
                            self.expect("}")?;
                            out.push(ch);
                        }
                        _ => return self.err("unknown escape"),
                    }
                }
                c => out.push(c),
            }
        }
    }

    /// `%` + a letter + a number (`%v3`, `%i0`, `%p1`, `%l2`, `%b4`).
    /// A memory reference: `%pK`, `%dJ` (constant array `J`, memory index `np + J`) or
    /// `%sJ` (scratch `J`, memory index `np + nd + J`).
    fn mem(&mut self) -> R<u32> {
        self.ws();
        if self.rest().starts_with("%d") {
            return Ok(self.np + self.reg('d')?);
        }
        if self.rest().starts_with("%s") {
            return Ok(self.np + self.nd + self.reg('s')?);
        }
        if self.rest().starts_with("%h") {
            return Ok(self.np + self.nd + self.ns + self.reg('h')?);
        }
        self.reg('p')
    }

    /// A constant's `len` bytes: ` at OFFSET` into the sidecar file, or inline hex
    /// (after `inline`, a keyword the inline form starts with, when given).
    fn blob(&mut self, len: Option<u64>, inline: Option<&str>) -> R<Vec<u8>> {
        if self.is_keyword("at") {
            self.ws();
            let r = self.rest();
            let n = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            let Ok(off) = r[..n].parse::<u64>() else {
                return self.err("expected a byte offset after 'at'");
            };
            let Some(len) = len else {
                return self.err("a constant in the weights file needs a constant size");
            };
            let Some(w) = &self.weights else {
                return self.err("'at' needs a weights file (declare `weights \"FILE\"` after the program's name)");
            };
            let end = off.checked_add(len).filter(|&e| e <= w.len() as u64);
            let Some(end) = end else {
                return self.err(format!(
                    "bytes {off}..{} are past the weights file's {} bytes",
                    off.saturating_add(len),
                    w.len()
                ));
            };
            let bytes = w[off as usize..end as usize].to_vec();
            self.pos += n;
            return Ok(bytes);
        }
        if let Some(k) = inline {
            self.keyword(k)?;
        }
        self.hex()
    }

    /// Hex digits (two per byte) on this line, up to the next non-hex character.
    fn hex(&mut self) -> R<Vec<u8>> {
        while self.rest().starts_with(' ') {
            self.pos += 1;
        }
        let r = self.rest();
        let n = r.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(r.len());
        if n % 2 != 0 {
            return self.err("odd number of hex digits");
        }
        let data: Vec<u8> = (0..n / 2).map(|i| u8::from_str_radix(&r[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
        self.pos += n;
        Ok(data)
    }

    fn reg(&mut self, letter: char) -> R<u32> {
        self.ws();
        let r = self.rest();
        if !r.starts_with('%') || !r[1..].starts_with(letter) {
            return self.err(format!("expected %{letter}N"));
        }
        self.pos += 2;
        let n = self.rest().find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest().len());
        if n == 0 {
            return self.err(format!("expected %{letter}N"));
        }
        let v = self.rest()[..n].parse::<u32>().or_else(|_| self.err("register number out of range"))?;
        self.pos += n;
        Ok(v)
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn ty(&mut self) -> R<Ty> {
        self.ws();
        let at = self.pos;
        let w = self.ident()?;
        let (e, lanes) = match w.split_once('x') {
            Some((e, l)) => (e, l.parse::<u32>().ok().filter(|&l| l > 0)),
            None => (w, Some(1)),
        };
        let elem = Elem::ALL.into_iter().find(|x| x.name() == e);
        match (elem, lanes) {
            (Some(elem), Some(lanes)) => Ok(Ty { elem, lanes }),
            _ => {
                self.pos = at;
                self.err(format!("unknown type '{w}'"))
            }
        }
    }

    fn named<T: Copy>(&mut self, all: &[T], name: impl Fn(T) -> &'static str, what: &str) -> R<T> {
        self.ws();
        let at = self.pos;
        let w = self.ident()?;
        match all.iter().copied().find(|&x| name(x) == w) {
            Some(x) => Ok(x),
            None => {
                self.pos = at;
                self.err(format!("unknown {what} '{w}'"))
            }
        }
    }

    // Expressions: sums of products of atoms, with unary minus and parentheses.
    fn expr(&mut self) -> R<Expr> {
        self.enter()?;
        let mut e = if self.eat("-") { self.product()?.scale(-1) } else { self.product()? };
        loop {
            if self.peek("..") {
                break;
            }
            if self.eat("+") {
                e = &e + &self.product()?;
            } else if self.peek("-") && !self.peek("->") {
                self.pos += 1;
                e = &e - &self.product()?;
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(e)
    }

    fn product(&mut self) -> R<Expr> {
        let mut e = self.factor()?;
        while self.eat("*") {
            e = &e * &self.factor()?;
        }
        Ok(e)
    }

    fn factor(&mut self) -> R<Expr> {
        self.ws();
        if self.eat("(") {
            let e = self.expr()?;
            self.expect(")")?;
            return Ok(e);
        }
        if self.peek("%i") {
            return Ok(Expr::var(self.reg('i')?));
        }
        if self.peek("%v") {
            return Ok(Expr::val(self.reg('v')?));
        }
        if self.rest().starts_with(|c: char| c.is_ascii_digit()) {
            return Ok(Expr::c(self.int()?));
        }
        let name = self.ident()?;
        let two = |p: &mut Self| -> R<(Expr, Expr)> {
            p.expect("(")?;
            let a = p.expr()?;
            p.expect(",")?;
            let b = p.expr()?;
            p.expect(")")?;
            Ok((a, b))
        };
        Ok(match name {
            "floordiv" => {
                let (a, b) = two(self)?;
                a.floor_div(&b)
            }
            "mod" => {
                let (a, b) = two(self)?;
                a.modulo(&b)
            }
            "min" => {
                let (a, b) = two(self)?;
                a.min_with(&b)
            }
            "max" => {
                let (a, b) = two(self)?;
                a.max_with(&b)
            }
            s => Expr::sym(s),
        })
    }

    fn val_list(&mut self) -> R<Vec<ValId>> {
        self.expect("(")?;
        let mut v = Vec::new();
        if !self.eat(")") {
            loop {
                v.push(self.reg('v')?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(v)
    }

    fn mask(&mut self) -> R<Option<ValId>> {
        Ok(if self.is_keyword("mask") { Some(self.reg('v')?) } else { None })
    }

    fn inst(&mut self) -> R<Inst> {
        self.ws();
        let at = self.pos;
        let w = self.ident()?;
        if let Some(op) = BinOp::ALL.iter().find(|o| o.name() == w) {
            let a = self.reg('v')?;
            self.expect(",")?;
            return Ok(Inst::Bin(*op, a, self.reg('v')?));
        }
        if let Some(op) = UnOp::ALL.iter().find(|o| o.name() == w) {
            return Ok(Inst::Un(*op, self.reg('v')?));
        }
        Ok(match w {
            "const" => {
                let ty = self.ty()?;
                let lit = if ty.elem.is_float() { Lit::Float(self.float()?) } else { Lit::Int(self.int()?) };
                Inst::Const { ty, lit }
            }
            "index" => Inst::Index(self.expr()?),
            "load" => {
                let ty = self.ty()?;
                self.expect(",")?;
                let param = self.mem()?;
                self.expect("[")?;
                let index = self.expr()?;
                self.expect("]")?;
                self.keyword("align")?;
                let align = self.uint()?;
                Inst::Load { ty, param, index, align, mask: self.mask()? }
            }
            "get" => Inst::Get(self.reg('l')?),
            "fma" => {
                let a = self.reg('v')?;
                self.expect(",")?;
                let b = self.reg('v')?;
                self.expect(",")?;
                Inst::Fma(a, b, self.reg('v')?)
            }
            "cmp" => {
                let op = self.named(CmpOp::ALL, CmpOp::name, "comparison")?;
                let a = self.reg('v')?;
                self.expect(",")?;
                Inst::Cmp(op, a, self.reg('v')?)
            }
            "select" => {
                let c = self.reg('v')?;
                self.expect(",")?;
                let a = self.reg('v')?;
                self.expect(",")?;
                Inst::Select(c, a, self.reg('v')?)
            }
            "cast" => {
                let op = self.named(CastOp::ALL, CastOp::name, "cast")?;
                let a = self.reg('v')?;
                self.keyword("to")?;
                Inst::Cast(op, a, self.ty()?)
            }
            "splat" => {
                let a = self.reg('v')?;
                self.keyword("x")?;
                Inst::Splat(a, self.uint()?)
            }
            "extract" => {
                let a = self.reg('v')?;
                self.expect(",")?;
                Inst::Extract(a, self.uint()?)
            }
            "insert" => {
                let v = self.reg('v')?;
                self.expect(",")?;
                let a = self.reg('v')?;
                self.expect(",")?;
                Inst::Insert(v, a, self.uint()?)
            }
            "shuffle" => {
                let a = self.reg('v')?;
                self.expect(",")?;
                let b = self.reg('v')?;
                self.expect("[")?;
                let mut m = Vec::new();
                if !self.eat("]") {
                    loop {
                        m.push(self.uint()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Inst::Shuffle(a, b, m)
            }
            "reduce" => {
                let op = self.named(ReduceOp::ALL, ReduceOp::name, "reduction")?;
                Inst::Reduce(op, self.reg('v')?)
            }
            "call" | "intrinsic" => {
                let name = self.string()?;
                let args = self.val_list()?;
                self.expect(":")?;
                let ty = self.ty()?;
                if w == "call" {
                    Inst::Call { func: name, args, ty }
                } else {
                    Inst::Intrinsic { name, args, ty }
                }
            }
            "opaque" => Inst::Opaque(self.reg('v')?),
            "blockreduce" => {
                let op = self.named(ReduceOp::ALL, ReduceOp::name, "reduction")?;
                Inst::BlockReduce { op, mem: self.mem()? }
            }
            "lookup" => {
                let table = self.reg('t')?;
                self.expect("[")?;
                let index = self.reg('v')?;
                self.expect("]")?;
                Inst::Lookup { table, index }
            }
            _ => {
                self.pos = at;
                return self.err(format!("unknown instruction '{w}'"));
            }
        })
    }

    fn body(&mut self) -> R<Vec<Stmt>> {
        self.enter()?;
        self.expect("{")?;
        let mut out = Vec::new();
        while !self.eat("}") {
            if self.rest().is_empty() {
                return self.err("unterminated body");
            }
            out.push(self.stmt()?);
        }
        self.depth -= 1;
        Ok(out)
    }

    fn stmt(&mut self) -> R<Stmt> {
        if self.peek("%v") {
            let v = self.reg('v')?;
            self.expect("=")?;
            return Ok(Stmt::Let(v, self.inst()?));
        }
        self.ws();
        let at = self.pos;
        let w = self.ident()?;
        Ok(match w {
            "store" => {
                let param = self.mem()?;
                self.expect("[")?;
                let index = self.expr()?;
                self.expect("]")?;
                self.expect(",")?;
                let value = self.reg('v')?;
                self.keyword("align")?;
                let align = self.uint()?;
                Stmt::Store { param, index, value, align, mask: self.mask()? }
            }
            "for" => {
                let var = self.reg('i')?;
                self.keyword("in")?;
                let lo = self.expr()?;
                self.expect("..")?;
                let hi = self.expr()?;
                let kind = self.named(LoopKind::ALL, LoopKind::name, "loop kind")?;
                Stmt::For { var, lo, hi, kind, body: self.body()? }
            }
            "if" => {
                let cond = self.reg('v')?;
                let then = self.body()?;
                let els = if self.is_keyword("else") { self.body()? } else { Vec::new() };
                Stmt::If { cond, then, els }
            }
            "local" => {
                let l = self.reg('l')?;
                self.expect(":")?;
                let ty = self.ty()?;
                self.expect("=")?;
                Stmt::Local(l, ty, self.reg('v')?)
            }
            "set" => {
                let l = self.reg('l')?;
                self.expect(",")?;
                Stmt::Set(l, self.reg('v')?)
            }
            "memcpy" => {
                let dst = self.mem()?;
                self.expect("[")?;
                let dst_off = self.expr()?;
                self.expect("]")?;
                self.expect(",")?;
                let src = self.mem()?;
                self.expect("[")?;
                let src_off = self.expr()?;
                self.expect("]")?;
                self.expect(",")?;
                Stmt::Memcpy { dst, dst_off, src, src_off, bytes: self.expr()? }
            }
            _ => {
                self.pos = at;
                return self.err(format!("unknown statement '{w}'"));
            }
        })
    }

    fn kernel(&mut self) -> R<Kernel> {
        self.expect("@")?;
        let name = self.string()?;
        self.expect("(")?;
        let mut params = Vec::new();
        if !self.eat(")") {
            loop {
                let p = self.reg('p')?;
                if p as usize != params.len() {
                    return self.err(format!("parameters must be numbered in order: expected %p{}", params.len()));
                }
                self.expect(":")?;
                params.push(if self.is_keyword("read") {
                    Access::Read
                } else {
                    self.keyword("write")?;
                    Access::Write
                });
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        let mut tables = Vec::new();
        while self.is_keyword("table") {
            let t = self.reg('t')?;
            if t as usize != tables.len() {
                return self.err(format!("tables must be numbered in order: expected %t{}", tables.len()));
            }
            let name = self.string()?;
            self.expect(":")?;
            let ty = self.ty()?;
            if ty.lanes != 1 {
                return self.err("a table's element type is a scalar");
            }
            let elem = ty.elem;
            self.expect("[")?;
            let mut values = Vec::new();
            if !self.eat("]") {
                loop {
                    values.push(if elem.is_float() { Lit::Float(self.float()?) } else { Lit::Int(self.int()?) });
                    if self.eat("]") {
                        break;
                    }
                    self.expect(",")?;
                }
            }
            tables.push(Table { name, elem, values: values.into() });
        }
        let mut data = Vec::new();
        while self.is_keyword("data") {
            let j = self.reg('d')?;
            if j as usize != data.len() {
                return self.err(format!("constant arrays must be numbered in order: expected %d{}", data.len()));
            }
            let name = self.string()?;
            self.expect(":")?;
            let ty = self.ty()?;
            if ty.lanes != 1 {
                return self.err("a constant array's element type is a scalar");
            }
            self.expect("[")?;
            let len = self.uint()? as u64;
            self.expect("]")?;
            let bytes = self.blob(Some(len * ty.elem.bytes() as u64), None)?;
            if bytes.len() as u64 != len * ty.elem.bytes() as u64 {
                return self.err(format!(
                    "constant array %d{j} holds {} bytes, not {len} {}",
                    bytes.len(),
                    ty.elem.name()
                ));
            }
            data.push(Data { name, elem: ty.elem, bytes: bytes.into() });
        }
        let mut scratch = Vec::new();
        while self.is_keyword("scratch") {
            let j = self.reg('s')?;
            if j as usize != scratch.len() {
                return self.err(format!("scratch arrays must be numbered in order: expected %s{}", scratch.len()));
            }
            self.expect(":")?;
            let ty = self.ty()?;
            if ty.lanes != 1 {
                return self.err("a scratch array's element type is a scalar");
            }
            self.expect("[")?;
            let len = self.uint()? as u64;
            self.expect("]")?;
            scratch.push(Scratch { elem: ty.elem, len });
        }
        let mut block = None;
        if self.is_keyword("block") {
            let mut vars = [0; 3];
            for (k, v) in vars.iter_mut().enumerate() {
                if k > 0 {
                    self.expect(",")?;
                }
                *v = self.reg('i')?;
            }
            self.keyword("in")?;
            self.expect("[")?;
            let x = self.expr()?;
            self.expect(",")?;
            let y = self.expr()?;
            self.expect(",")?;
            let z = self.expr()?;
            self.expect("]")?;
            self.keyword("threads")?;
            let threads = self.uint()?;
            block = Some(Block { vars, grid: [x, y, z], threads });
        }
        let mut shared = Vec::new();
        while self.is_keyword("shared") {
            let j = self.reg('h')?;
            if j as usize != shared.len() {
                return self.err(format!("shared arrays must be numbered in order: expected %h{}", shared.len()));
            }
            self.expect(":")?;
            let ty = self.ty()?;
            if ty.lanes != 1 {
                return self.err("a shared array's element type is a scalar");
            }
            self.expect("[")?;
            let len = self.uint()? as u64;
            self.expect("]")?;
            shared.push(Scratch { elem: ty.elem, len });
        }
        self.np = params.len() as u32;
        self.nd = data.len() as u32;
        self.ns = scratch.len() as u32;
        Ok(Kernel { name, params, tables, scratch, data, block, shared, body: self.body()? })
    }

    fn steps(&mut self, kernels: &HashMap<String, u32>) -> R<Vec<Step>> {
        self.enter()?;
        self.expect("{")?;
        let mut out = Vec::new();
        while !self.eat("}") {
            self.ws();
            let at = self.pos;
            let w = self.ident()?;
            out.push(match w {
                "call" => {
                    let (kernel, args) = self.kernel_call(kernels, at)?;
                    let label = if self.is_keyword("label") { Some(self.string()?) } else { None };
                    Step::Call { kernel, args, label }
                }
                "bind" => {
                    let (kernel, args) = self.kernel_call(kernels, at)?;
                    self.expect("->")?;
                    self.expect("(")?;
                    let mut syms = Vec::new();
                    if !self.eat(")") {
                        loop {
                            syms.push(self.ident()?.to_string());
                            if self.eat(")") {
                                break;
                            }
                            self.expect(",")?;
                        }
                    }
                    let label = if self.is_keyword("label") { Some(self.string()?) } else { None };
                    Step::Bind { kernel, args, syms, label }
                }
                "copy" => {
                    let dst = self.reg('b')?;
                    self.expect(",")?;
                    Step::Copy { dst, src: self.reg('b')? }
                }
                "if" => {
                    let cond = self.reg('b')?;
                    let then = self.steps(kernels)?;
                    self.keyword("else")?;
                    Step::If { cond, then, els: self.steps(kernels)? }
                }
                "loop" => {
                    let count = self.expr()?;
                    let index = if self.is_keyword("index") { Some(self.reg('b')?) } else { None };
                    let cond = if self.is_keyword("while") { Some(self.reg('b')?) } else { None };
                    self.keyword("carry")?;
                    let carried = self.buffer_pairs()?;
                    let scans = if self.is_keyword("scan") { self.buffer_pairs()? } else { Vec::new() };
                    Step::Loop { count, index, cond, carried, scans, body: self.steps(kernels)? }
                }
                _ => {
                    self.pos = at;
                    return self.err(format!("unknown step '{w}'"));
                }
            });
        }
        self.depth -= 1;
        Ok(out)
    }

    /// `@"NAME"(%bA, %bB, ...)`: a kernel of the program and the buffers it is given
    /// (`at`: where the step starts, for the error).
    fn kernel_call(&mut self, kernels: &HashMap<String, u32>, at: usize) -> R<(u32, Vec<u32>)> {
        self.expect("@")?;
        let name = self.string()?;
        let Some(&kernel) = kernels.get(&name) else {
            self.pos = at;
            return self.err(format!("no kernel named {name:?}"));
        };
        self.expect("(")?;
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.reg('b')?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok((kernel, args))
    }

    fn bracketed(&mut self) -> R<Expr> {
        self.expect("[")?;
        let e = self.expr()?;
        self.expect("]")?;
        Ok(e)
    }

    fn program(&mut self) -> R<Program> {
        self.keyword("program")?;
        let mut p = Program { name: self.string()?, ..Program::default() };
        if self.is_keyword("weights") {
            let file = self.string()?;
            let Some(load) = self.load.as_mut() else {
                return self
                    .err(format!("the program's constants are in '{file}': read it with parse::program_with_weights"));
            };
            match load(&file) {
                Ok(w) => self.weights = Some(w),
                Err(e) => return self.err(format!("weights file '{file}': {e}")),
            }
        }
        loop {
            self.ws();
            let at = self.pos;
            let w = self.ident()?;
            match w {
                "symbol" => {
                    let name = self.ident()?.to_string();
                    if self.is_keyword("data") {
                        self.keyword("max")?;
                        let max = self.bracketed()?;
                        p.symbols.push(Symbol { name, min: 0, data: Some(max), computed: false });
                    } else if self.is_keyword("computed") {
                        p.symbols.push(Symbol { name, min: 0, data: None, computed: true });
                    } else {
                        self.keyword("min")?;
                        p.symbols.push(Symbol { name, min: self.int()?, data: None, computed: false });
                    }
                }
                "arena" => p.arena_bytes = self.expr()?,
                "prologue" => {
                    while {
                        self.ws();
                        self.rest().starts_with(|c: char| c.is_ascii_digit())
                    } {
                        p.prologue.push(self.uint()?);
                    }
                }
                "require" => {
                    let a = self.bracketed()?;
                    self.expect("==")?;
                    p.constraints.push((a, self.bracketed()?));
                }
                "buffer" => {
                    let b = self.reg('b')?;
                    if b as usize != p.buffers.len() {
                        return self.err(format!("buffers must be numbered in order: expected %b{}", p.buffers.len()));
                    }
                    let name = self.string()?;
                    let kw = self.ident()?;
                    let mut kind = match kw {
                        "input" => BufKind::Input(self.uint()?),
                        "output" => BufKind::Output(self.uint()?),
                        "arena" => BufKind::Arena(self.bracketed()?),
                        "const" => BufKind::Const(Arc::from(Vec::new())),
                        _ => return self.err(format!("unknown buffer kind '{kw}'")),
                    };
                    let ty = if self.is_keyword("type") { Some(self.string()?) } else { None };
                    self.keyword("bytes")?;
                    let bytes = self.bracketed()?;
                    if matches!(kind, BufKind::Const(_)) {
                        let size = bytes.as_const().and_then(|b| u64::try_from(b).ok());
                        kind = BufKind::Const(Arc::from(self.blob(size, Some("data"))?));
                    }
                    p.buffers.push(Buffer { name, kind, bytes, ty });
                }
                "kernel" => p.kernels.push(self.kernel()?),
                "schedule" => {
                    let names: HashMap<String, u32> =
                        p.kernels.iter().enumerate().map(|(i, k)| (k.name.clone(), i as u32)).collect();
                    if names.len() != p.kernels.len() {
                        return self.err("two kernels share a name");
                    }
                    p.schedule = self.steps(&names)?;
                    self.ws();
                    if !self.rest().is_empty() {
                        return self.err("text after the schedule");
                    }
                    return Ok(p);
                }
                _ => {
                    self.pos = at;
                    return self.err(format!("unknown declaration '{w}'"));
                }
            }
        }
    }
}

/// Parses a whole program whose constants are inline (see [`program_with_weights`]).
pub fn program(src: &str) -> Result<Program, ParseError> {
    P { src, pos: 0, depth: 0, np: 0, nd: 0, ns: 0, weights: None, load: None }.program()
}

/// Parses a whole program that may keep its constants in a sidecar file
/// (`weights "FILE"`, [`crate::print::program_split`]): `load` reads that file by the
/// name the program gives (the caller decides where names may point).
pub fn program_with_weights<'a>(src: &'a str, load: &'a mut WeightsLoader<'a>) -> Result<Program, ParseError> {
    P { src, pos: 0, depth: 0, np: 0, nd: 0, ns: 0, weights: None, load: Some(load) }.program()
}

/// Parses one kernel (`kernel @"name"(...) { ... }`).
pub fn kernel(src: &str) -> Result<Kernel, ParseError> {
    let mut p = P { src, pos: 0, depth: 0, np: 0, nd: 0, ns: 0, weights: None, load: None };
    p.keyword("kernel")?;
    let k = p.kernel()?;
    p.ws();
    if !p.rest().is_empty() {
        return p.err("text after the kernel");
    }
    Ok(k)
}

/// Parses an index expression.
pub fn expr(src: &str) -> Result<Expr, ParseError> {
    let mut p = P { src, pos: 0, depth: 0, np: 0, nd: 0, ns: 0, weights: None, load: None };
    let e = p.expr()?;
    p.ws();
    if !p.rest().is_empty() {
        return p.err("text after the expression");
    }
    Ok(e)
}
