//! Integer index expressions: extents, strides, offsets and buffer sizes over named
//! symbols (run-time dims such as a batch `N`), loop variables and integer values of a
//! kernel.
//!
//! An [`Expr`] is kept in one canonical form, a sum of monomials (`coefficient *
//! atoms...`) in a fixed order, where an atom is a symbol, a loop variable, a value, or
//! a floor division, modulo, min or max that does not simplify further. Constructors
//! simplify as they build, so two expressions that are equal as polynomials are equal
//! as values (`==`), the printer is canonical, and constant extents stay constants.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// An atom of a monomial (ordered: symbols, loop variables, values, then the rest).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// A named symbol of the program (a run-time dim).
    Sym(String),
    /// A loop variable of the kernel (`%iN`).
    Var(u32),
    /// An integer SSA value of the kernel (`%vN`), such as an index read from memory.
    Val(u32),
    /// `floor(a / b)`, `b` nonzero.
    Div(Box<Expr>, Box<Expr>),
    /// `a - b * floor(a / b)` (the sign of `b`), `b` nonzero.
    Mod(Box<Expr>, Box<Expr>),
    /// `min(a, b)`.
    Min(Box<Expr>, Box<Expr>),
    /// `max(a, b)`.
    Max(Box<Expr>, Box<Expr>),
}

/// A canonical integer expression (see the module doc). `Expr::default()` is 0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Expr {
    /// Monomials: the sorted atoms of a product and its nonzero coefficient. The empty
    /// product is the constant term. Shared: shapes clone their dims often (every type
    /// inference of a fused kernel's steps), and a clone is then a reference count.
    terms: Arc<BTreeMap<Vec<Atom>, i64>>,
}

/// Errors of evaluation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A symbol, variable or value has no binding.
    #[error("unbound {0}")]
    Unbound(String),
    /// Division or modulo by zero.
    #[error("division by zero in {0}")]
    DivZero(String),
    /// The value does not fit in 64 bits.
    #[error("overflow evaluating {0}")]
    Overflow(String),
}

/// Bindings an expression is evaluated under.
pub trait Env {
    /// The value of symbol `name`.
    fn sym(&self, name: &str) -> Option<i64>;
    /// The value of loop variable `%i{n}`.
    fn var(&self, n: u32) -> Option<i64>;
    /// The value of integer value `%v{n}`.
    fn val(&self, n: u32) -> Option<i64>;
}

/// Bindings of symbols only.
impl Env for BTreeMap<String, i64> {
    fn sym(&self, name: &str) -> Option<i64> {
        self.get(name).copied()
    }
    fn var(&self, _: u32) -> Option<i64> {
        None
    }
    fn val(&self, _: u32) -> Option<i64> {
        None
    }
}

impl Expr {
    /// The constant `c`.
    pub fn c(c: i64) -> Expr {
        let mut terms = BTreeMap::new();
        if c != 0 {
            terms.insert(Vec::new(), c);
        }
        Expr { terms: Arc::new(terms) }
    }

    /// The expression that is atom `a`.
    pub fn atom(a: Atom) -> Expr {
        Expr { terms: Arc::new(BTreeMap::from([(vec![a], 1)])) }
    }

    /// Symbol `name`.
    pub fn sym(name: impl Into<String>) -> Expr {
        Expr::atom(Atom::Sym(name.into()))
    }

    /// Loop variable `%i{n}`.
    pub fn var(n: u32) -> Expr {
        Expr::atom(Atom::Var(n))
    }

    /// Integer value `%v{n}`.
    pub fn val(n: u32) -> Expr {
        Expr::atom(Atom::Val(n))
    }

    /// The value when it is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// Whether the expression mentions no symbol, variable or value.
    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// The symbol this expression is, when it is exactly one symbol (`N`, not `2*N` or
    /// `N+1`).
    pub fn as_symbol(&self) -> Option<&str> {
        let mut t = self.terms();
        let (atoms, c) = t.next()?;
        if t.next().is_some() || c != 1 || atoms.len() != 1 {
            return None;
        }
        match &atoms[0] {
            Atom::Sym(s) => Some(s),
            _ => None,
        }
    }

    /// The address of this expression's shared storage. Clones share it (and while one
    /// of them lives no other expression has it), so two expressions with the same
    /// address are equal; equal expressions built apart have different ones.
    pub fn storage_id(&self) -> usize {
        Arc::as_ptr(&self.terms) as usize
    }

    /// The monomials, constant term first (atoms sorted, coefficients nonzero).
    pub fn terms(&self) -> impl Iterator<Item = (&[Atom], i64)> {
        self.terms.iter().map(|(k, &c)| (k.as_slice(), c))
    }

    fn add_term(terms: &mut BTreeMap<Vec<Atom>, i64>, k: Vec<Atom>, c: i64) {
        let e = terms.entry(k).or_insert(0);
        *e = e.wrapping_add(c);
        if *e == 0 {
            terms.retain(|_, v| *v != 0);
        }
    }

    /// `self * c`.
    pub fn scale(&self, c: i64) -> Expr {
        if c == 0 {
            return Expr::default();
        }
        Expr { terms: Arc::new(self.terms.iter().map(|(k, &v)| (k.clone(), v.wrapping_mul(c))).collect()) }
    }

    /// The largest constant dividing every coefficient (0 for the zero expression).
    fn content(&self) -> i64 {
        fn gcd(a: i64, b: i64) -> i64 {
            if b == 0 {
                a.abs()
            } else {
                gcd(b, a % b)
            }
        }
        self.terms.values().fold(0, |g, &c| gcd(g, c))
    }

    /// `floor(self / d)`.
    pub fn floor_div(&self, d: &Expr) -> Expr {
        if let (Some(a), Some(b)) = (self.as_const(), d.as_const()) {
            if let Some(q) = floor_div(a, b) {
                return Expr::c(q);
            }
        }
        if let Some(b) = d.as_const() {
            if b == 1 {
                return self.clone();
            }
            // Every coefficient divisible: exact.
            if b > 0 && self.content() % b == 0 {
                return Expr { terms: Arc::new(self.terms.iter().map(|(k, &v)| (k.clone(), v / b)).collect()) };
            }
            // The terms that b divides leave the floor (every term is an integer):
            // floor((32*X - 1) / 2) is 16*X + floor(-1 / 2), 16*X - 1.
            if let Some((whole, rest)) = self.split_multiples(b) {
                return &whole + &rest.floor_div(d);
            }
        }
        if let Some(q) = self.exact_quotient(d) {
            return q;
        }
        Expr::atom(Atom::Div(Box::new(self.clone()), Box::new(d.clone())))
    }

    /// For a positive constant `b`: `self` as `b * whole + rest`, the terms whose
    /// coefficients `b` divides (divided) and the others, when both are nonzero.
    fn split_multiples(&self, b: i64) -> Option<(Expr, Expr)> {
        if b <= 1 {
            return None;
        }
        let (mut whole, mut rest) = (BTreeMap::new(), BTreeMap::new());
        for (k, &c) in self.terms.iter() {
            if c % b == 0 {
                whole.insert(k.clone(), c / b);
            } else {
                rest.insert(k.clone(), c);
            }
        }
        (!whole.is_empty() && !rest.is_empty())
            .then(|| (Expr { terms: Arc::new(whole) }, Expr { terms: Arc::new(rest) }))
    }

    /// `self / d` when `d` is a monomial with a positive coefficient of symbols and of
    /// floor divisions, moduli, minima or maxima (`2*N`, `N*S`, `floordiv(W + 6, 7)`)
    /// that divides every term of `self` exactly (`512*N*S / (2*N)` is `256*S`; a window
    /// count times the batch over the window count is the batch: exact for any nonzero
    /// value of the divisor); `None` otherwise.
    fn exact_quotient(&self, d: &Expr) -> Option<Expr> {
        let mut t = d.terms.iter();
        let (atoms, &b) = t.next()?;
        let divisible =
            |a: &Atom| matches!(a, Atom::Sym(_) | Atom::Div(..) | Atom::Mod(..) | Atom::Min(..) | Atom::Max(..));
        if t.next().is_some() || b <= 0 || atoms.is_empty() || !atoms.iter().all(divisible) {
            return None;
        }
        let mut out = BTreeMap::new();
        for (k, &c) in self.terms.iter() {
            if c % b != 0 {
                return None;
            }
            // Remove each atom of the divisor once from the (sorted) product.
            let mut rest = k.clone();
            for a in atoms {
                let i = rest.iter().position(|x| x == a)?;
                rest.remove(i);
            }
            Expr::add_term(&mut out, rest, c / b);
        }
        Some(Expr { terms: Arc::new(out) })
    }

    /// `self mod d` (floor modulo, the sign of `d`).
    pub fn modulo(&self, d: &Expr) -> Expr {
        if let (Some(a), Some(b)) = (self.as_const(), d.as_const()) {
            if b != 0 {
                return Expr::c(floor_mod(a, b));
            }
        }
        if let Some(b) = d.as_const() {
            if b == 1 || b == -1 || (b != 0 && self.content() % b == 0) {
                return Expr::default();
            }
            // Multiples of b do not change the modulus.
            if let Some((_, rest)) = self.split_multiples(b) {
                return rest.modulo(d);
            }
        }
        if self.exact_quotient(d).is_some() {
            return Expr::default();
        }
        Expr::atom(Atom::Mod(Box::new(self.clone()), Box::new(d.clone())))
    }

    /// `min(self, o)`.
    pub fn min_with(&self, o: &Expr) -> Expr {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Expr::c(a.min(b)),
            _ if self == o => self.clone(),
            _ => {
                let (a, b) = if self <= o { (self, o) } else { (o, self) };
                Expr::atom(Atom::Min(Box::new(a.clone()), Box::new(b.clone())))
            }
        }
    }

    /// `max(self, o)`.
    pub fn max_with(&self, o: &Expr) -> Expr {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Expr::c(a.max(b)),
            _ if self == o => self.clone(),
            _ => {
                let (a, b) = if self <= o { (self, o) } else { (o, self) };
                Expr::atom(Atom::Max(Box::new(a.clone()), Box::new(b.clone())))
            }
        }
    }

    /// Evaluates under `env`, with checked arithmetic.
    pub fn eval(&self, env: &dyn Env) -> Result<i64, EvalError> {
        let ovf = || EvalError::Overflow(self.to_string());
        let mut sum: i64 = 0;
        for (atoms, &c) in self.terms.iter() {
            let mut p = c;
            for a in atoms {
                let v = a.eval(env)?;
                p = p.checked_mul(v).ok_or_else(ovf)?;
            }
            sum = sum.checked_add(p).ok_or_else(ovf)?;
        }
        Ok(sum)
    }

    /// The expression with each symbol, variable and value `a` replaced by `f(a)` where
    /// that is `Some` (inside divisions, moduli, minima and maxima too), simplified.
    pub fn subst(&self, f: &dyn Fn(&Atom) -> Option<Expr>) -> Expr {
        let mut out = Expr::default();
        for (atoms, &c) in self.terms.iter() {
            let mut t = Expr::c(c);
            for a in atoms {
                let x = match a {
                    Atom::Sym(_) | Atom::Var(_) | Atom::Val(_) => f(a).unwrap_or_else(|| Expr::atom(a.clone())),
                    Atom::Div(x, y) => x.subst(f).floor_div(&y.subst(f)),
                    Atom::Mod(x, y) => x.subst(f).modulo(&y.subst(f)),
                    Atom::Min(x, y) => x.subst(f).min_with(&y.subst(f)),
                    Atom::Max(x, y) => x.subst(f).max_with(&y.subst(f)),
                };
                t = &t * &x;
            }
            out = &out + &t;
        }
        out
    }

    /// Every symbol the expression mentions.
    pub fn symbols(&self, out: &mut Vec<String>) {
        for atoms in self.terms.keys() {
            for a in atoms {
                match a {
                    Atom::Sym(s) => {
                        if !out.contains(s) {
                            out.push(s.clone())
                        }
                    }
                    Atom::Var(_) | Atom::Val(_) => {}
                    Atom::Div(x, y) | Atom::Mod(x, y) | Atom::Min(x, y) | Atom::Max(x, y) => {
                        x.symbols(out);
                        y.symbols(out);
                    }
                }
            }
        }
    }

    /// Visits every loop variable and value the expression mentions.
    pub fn visit_refs(&self, f: &mut dyn FnMut(&Atom)) {
        for atoms in self.terms.keys() {
            for a in atoms {
                match a {
                    Atom::Sym(_) | Atom::Var(_) | Atom::Val(_) => f(a),
                    Atom::Div(x, y) | Atom::Mod(x, y) | Atom::Min(x, y) | Atom::Max(x, y) => {
                        x.visit_refs(f);
                        y.visit_refs(f);
                    }
                }
            }
        }
    }
}

/// `floor(a / b)`; `None` for a zero divisor or `i64::MIN / -1`.
pub fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    Some(if (a % b != 0) && ((a < 0) != (b < 0)) { q - 1 } else { q })
}

/// `a mod b` with the sign of `b` (`b` nonzero).
pub fn floor_mod(a: i64, b: i64) -> i64 {
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    }
}

impl Atom {
    fn eval(&self, env: &dyn Env) -> Result<i64, EvalError> {
        let two = |x: &Expr, y: &Expr| -> Result<(i64, i64), EvalError> { Ok((x.eval(env)?, y.eval(env)?)) };
        match self {
            Atom::Sym(s) => env.sym(s).ok_or_else(|| EvalError::Unbound(format!("symbol {s}"))),
            Atom::Var(n) => env.var(*n).ok_or_else(|| EvalError::Unbound(format!("%i{n}"))),
            Atom::Val(n) => env.val(*n).ok_or_else(|| EvalError::Unbound(format!("%v{n}"))),
            Atom::Div(x, y) => {
                let (a, b) = two(x, y)?;
                if b == 0 {
                    return Err(EvalError::DivZero(self.to_string()));
                }
                floor_div(a, b).ok_or_else(|| EvalError::Overflow(self.to_string()))
            }
            Atom::Mod(x, y) => {
                let (a, b) = two(x, y)?;
                if b == 0 {
                    return Err(EvalError::DivZero(self.to_string()));
                }
                Ok(floor_mod(a, b))
            }
            Atom::Min(x, y) => two(x, y).map(|(a, b)| a.min(b)),
            Atom::Max(x, y) => two(x, y).map(|(a, b)| a.max(b)),
        }
    }
}

impl From<i64> for Expr {
    fn from(c: i64) -> Expr {
        Expr::c(c)
    }
}

impl std::ops::Add for &Expr {
    type Output = Expr;
    fn add(self, o: &Expr) -> Expr {
        let mut terms = (*self.terms).clone();
        for (k, &v) in o.terms.iter() {
            Expr::add_term(&mut terms, k.clone(), v);
        }
        Expr { terms: Arc::new(terms) }
    }
}

impl std::ops::Sub for &Expr {
    type Output = Expr;
    fn sub(self, o: &Expr) -> Expr {
        self + &o.scale(-1)
    }
}

impl std::ops::Mul for &Expr {
    type Output = Expr;
    fn mul(self, o: &Expr) -> Expr {
        let mut terms = BTreeMap::new();
        for (ka, &va) in self.terms.iter() {
            for (kb, &vb) in o.terms.iter() {
                let mut k: Vec<Atom> = ka.iter().chain(kb).cloned().collect();
                k.sort();
                Expr::add_term(&mut terms, k, va.wrapping_mul(vb));
            }
        }
        Expr { terms: Arc::new(terms) }
    }
}

macro_rules! owned_ops {
    ($($tr:ident $f:ident),*) => {$(
        impl std::ops::$tr for Expr {
            type Output = Expr;
            fn $f(self, o: Expr) -> Expr {
                std::ops::$tr::$f(&self, &o)
            }
        }
        impl std::ops::$tr<i64> for Expr {
            type Output = Expr;
            fn $f(self, o: i64) -> Expr {
                std::ops::$tr::$f(&self, &Expr::c(o))
            }
        }
    )*};
}
owned_ops!(Add add, Sub sub, Mul mul);

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Sym(s) => f.write_str(s),
            Atom::Var(n) => write!(f, "%i{n}"),
            Atom::Val(n) => write!(f, "%v{n}"),
            Atom::Div(a, b) => write!(f, "floordiv({a}, {b})"),
            Atom::Mod(a, b) => write!(f, "mod({a}, {b})"),
            Atom::Min(a, b) => write!(f, "min({a}, {b})"),
            Atom::Max(a, b) => write!(f, "max({a}, {b})"),
        }
    }
}

/// Canonical text: monomials with the constant term last, `c*a*b` with the
/// coefficient first (omitted when 1), `+`/`-` between them; `0` for zero.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        let mut ordered: Vec<(&Vec<Atom>, i64)> =
            self.terms.iter().filter(|(k, _)| !k.is_empty()).map(|(k, &c)| (k, c)).collect();
        if let Some(&c) = self.terms.get(&Vec::new()) {
            ordered.push((&EMPTY, c));
        }
        for (n, (atoms, c)) in ordered.into_iter().enumerate() {
            let mag = c.unsigned_abs();
            match (n, c < 0) {
                (0, true) => f.write_str("-")?,
                (0, false) => {}
                (_, true) => f.write_str(" - ")?,
                (_, false) => f.write_str(" + ")?,
            }
            if atoms.is_empty() {
                write!(f, "{mag}")?;
                continue;
            }
            if mag != 1 {
                write!(f, "{mag}*")?;
            }
            for (k, a) in atoms.iter().enumerate() {
                if k > 0 {
                    f.write_str("*")?;
                }
                write!(f, "{a}")?;
            }
        }
        Ok(())
    }
}

static EMPTY: Vec<Atom> = Vec::new();

/// A text form [`parse`] cannot read, with the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad dim expression '{text}' at byte {at}: {msg}")]
pub struct ParseError {
    /// The text.
    pub text: String,
    /// Where it went wrong.
    pub at: usize,
    /// What was expected.
    pub msg: String,
}

/// Whether `s` can name a symbol: an ASCII letter or `_`, then letters, digits or `_`.
pub fn is_symbol_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses an expression over symbols as [`Expr`]'s `Display` writes it (`N`,
/// `2*N + 1`, `floordiv(N - 1, 2) + 1`, `min(H, 7)`): integers, symbol names, `+ - *`,
/// parentheses and the calls `floordiv`, `mod`, `min`, `max`. Loop variables and values
/// (`%i0`) are kir's and are not read here.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    struct P<'a> {
        s: &'a [u8],
        at: usize,
        depth: u32,
    }
    impl P<'_> {
        fn ws(&mut self) {
            while self.s.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
                self.at += 1;
            }
        }
        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            if self.s.get(self.at) == Some(&c) {
                self.at += 1;
                true
            } else {
                false
            }
        }
        fn fail<T>(&self, msg: &str) -> Result<T, (usize, String)> {
            Err((self.at, msg.to_string()))
        }
        fn sum(&mut self) -> Result<Expr, (usize, String)> {
            self.depth += 1;
            if self.depth > 64 {
                return self.fail("nested too deeply");
            }
            let mut e = if self.eat(b'-') { self.product()?.scale(-1) } else { self.product()? };
            loop {
                if self.eat(b'+') {
                    e = &e + &self.product()?;
                } else if self.eat(b'-') {
                    e = &e - &self.product()?;
                } else {
                    break;
                }
            }
            self.depth -= 1;
            Ok(e)
        }
        fn product(&mut self) -> Result<Expr, (usize, String)> {
            let mut e = self.factor()?;
            while self.eat(b'*') {
                e = &e * &self.factor()?;
            }
            Ok(e)
        }
        fn factor(&mut self) -> Result<Expr, (usize, String)> {
            self.ws();
            if self.eat(b'(') {
                let e = self.sum()?;
                return if self.eat(b')') { Ok(e) } else { self.fail("expected ')'") };
            }
            let start = self.at;
            while self.s.get(self.at).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                self.at += 1;
            }
            let w = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
            if w.is_empty() {
                return self.fail("expected a number, a symbol or '('");
            }
            if w.as_bytes()[0].is_ascii_digit() {
                return match w.parse::<i64>() {
                    Ok(n) => Ok(Expr::c(n)),
                    Err(_) => {
                        self.at = start;
                        self.fail("not an integer that fits in 64 bits")
                    }
                };
            }
            if matches!(w, "floordiv" | "mod" | "min" | "max") && self.eat(b'(') {
                let a = self.sum()?;
                if !self.eat(b',') {
                    return self.fail("expected ','");
                }
                let b = self.sum()?;
                if !self.eat(b')') {
                    return self.fail("expected ')'");
                }
                if matches!(w, "floordiv" | "mod") && b.as_const() == Some(0) {
                    return self.fail("division by zero");
                }
                return Ok(match w {
                    "floordiv" => a.floor_div(&b),
                    "mod" => a.modulo(&b),
                    "min" => a.min_with(&b),
                    _ => a.max_with(&b),
                });
            }
            Ok(Expr::sym(w))
        }
    }
    let mut p = P { s: text.as_bytes(), at: 0, depth: 0 };
    let r = p.sum().and_then(|e| {
        p.ws();
        if p.at == p.s.len() {
            Ok(e)
        } else {
            p.fail("unexpected text")
        }
    });
    r.map_err(|(at, msg)| ParseError { text: text.to_string(), at, msg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_what_display_writes() {
        let n = Expr::sym("N");
        let h = Expr::sym("H");
        for e in [
            n.clone(),
            &n.scale(2) + &Expr::c(1),
            &(&n - &Expr::c(1)).floor_div(&Expr::c(2)) + &Expr::c(1),
            h.min_with(&Expr::c(7)),
            &(&n * &h).modulo(&Expr::c(3)) - &h.max_with(&n),
            Expr::c(-5),
        ] {
            assert_eq!(parse(&e.to_string()), Ok(e.clone()), "{e}");
        }
        assert_eq!(parse("2*(N+1)").unwrap(), &n.scale(2) + &Expr::c(2));
        for bad in ["", "N +", "2**N", "floordiv(N, 0)", "N)", "%i0", "99999999999999999999"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(is_symbol_name("batch_size") && !is_symbol_name("2x") && !is_symbol_name("a-b"));
    }

    fn n() -> Expr {
        Expr::sym("N")
    }

    #[test]
    fn sums_and_products_are_canonical() {
        let a = &(&n() * &Expr::c(4)) + &Expr::var(0);
        let b = &Expr::var(0) + &(&Expr::c(2) * &(&n() * &Expr::c(2)));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "4*N + %i0");
        assert_eq!((&a - &a), Expr::c(0));
        let sq = &(&n() + &Expr::c(1)) * &(&n() - &Expr::c(1));
        assert_eq!(sq.to_string(), "N*N - 1");
        assert_eq!(Expr::c(3).scale(5).as_const(), Some(15));
    }

    #[test]
    fn division_by_a_monomial_of_symbols_is_exact_or_kept() {
        let s = Expr::sym("S");
        let e = &(&n() * &s).scale(512) + &n().scale(6);
        assert_eq!(e.floor_div(&n().scale(2)), &s.scale(256) + &Expr::c(3));
        assert_eq!(e.modulo(&n().scale(2)), Expr::c(0));
        assert_eq!(n().scale(256).floor_div(&n()), Expr::c(256));
        // Not exact: a term without the divisor, or an odd coefficient.
        assert!(matches!(&e.floor_div(&s).terms().next().unwrap().0[0], Atom::Div(..)));
        assert!(matches!(&n().scale(3).floor_div(&n().scale(2)).terms().next().unwrap().0[0], Atom::Div(..)));
        let env = std::collections::BTreeMap::from([("N".to_string(), 5), ("S".to_string(), 7)]);
        assert_eq!(e.floor_div(&n().scale(2)).eval(&env), Ok((512 * 35 + 30) / 10));
    }

    #[test]
    fn division_simplifies_when_exact() {
        let e = &(&n() * &Expr::c(8)) + &Expr::c(4);
        assert_eq!(e.floor_div(&Expr::c(4)).to_string(), "2*N + 1");
        assert_eq!(e.modulo(&Expr::c(4)), Expr::c(0));
        assert_eq!(e.floor_div(&Expr::c(3)).to_string(), "floordiv(8*N + 4, 3)");
        assert_eq!(Expr::c(-7).floor_div(&Expr::c(2)).as_const(), Some(-4));
        assert_eq!(Expr::c(-7).modulo(&Expr::c(2)).as_const(), Some(1));
        assert_eq!(Expr::c(7).modulo(&Expr::c(-2)).as_const(), Some(-1));
        assert_eq!(Expr::c(7).min_with(&Expr::c(3)).as_const(), Some(3));
        assert_eq!(n().min_with(&Expr::c(3)), Expr::c(3).min_with(&n()));
    }

    #[test]
    fn multiples_of_the_divisor_leave_the_floor() {
        // A padding to whole strides of 32, halved five times (a backbone's strides).
        let x = (&n() + &Expr::c(31)).floor_div(&Expr::c(32));
        let mut e = &x.scale(32) - &Expr::c(1);
        for _ in 0..5 {
            e = e.floor_div(&Expr::c(2));
        }
        assert_eq!(e, &x - &Expr::c(1));
        let m = &(&n().scale(6) + &Expr::var(0)) + &Expr::c(7);
        assert_eq!(m.modulo(&Expr::c(3)), (&Expr::var(0) + &Expr::c(7)).modulo(&Expr::c(3)));
        assert_eq!(m.floor_div(&Expr::c(3)).to_string(), "2*N + floordiv(%i0 + 7, 3)");
        // Checked against integer arithmetic over a range of values.
        for (v, i, d) in (-40..40).flat_map(|v| (-5..5).flat_map(move |i| [2, 3, 4].map(|d| (v, i, d)))) {
            let env = BTreeMap::from([("N".to_string(), v), ("M".to_string(), i)]);
            let m = &(&n().scale(6) + &Expr::sym("M")) + &Expr::c(7);
            let (q, r) = (m.floor_div(&Expr::c(d)).eval(&env), m.modulo(&Expr::c(d)).eval(&env));
            assert_eq!((q, r), (Ok((6 * v + i + 7).div_euclid(d)), Ok((6 * v + i + 7).rem_euclid(d))));
        }
    }

    #[test]
    fn evaluates_with_bindings_and_checks_overflow() {
        let e = (&(&n() * &Expr::c(3)) + &Expr::c(1)).floor_div(&Expr::c(2));
        let env = BTreeMap::from([("N".to_string(), 5)]);
        assert_eq!(e.eval(&env), Ok(8));
        let m = BTreeMap::from([("N".to_string(), -5)]);
        assert_eq!(e.eval(&m), Ok(-7));
        assert!(matches!(n().eval(&BTreeMap::new()), Err(EvalError::Unbound(_))));
        let big = BTreeMap::from([("N".to_string(), i64::MAX)]);
        assert!(matches!((n() * 2).eval(&big), Err(EvalError::Overflow(_))));
        let z = n().modulo(&Expr::sym("M"));
        let zero = BTreeMap::from([("N".to_string(), 1), ("M".to_string(), 0)]);
        assert!(matches!(z.eval(&zero), Err(EvalError::DivZero(_))));
    }
}
