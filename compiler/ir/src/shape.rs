use crate::DType;
pub use dlc_sym::Expr;
use std::fmt;

/// One dimension of a shape: a known extent, or an integer expression over named
/// symbols resolved at run time (a batch `N`, `2*seq`, `floordiv(W - 3, 2) + 1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known extent.
    Fixed(u64),
    /// A symbolic extent: a canonical [`Expr`] over symbols that is not a constant
    /// (constructors make constants [`Dim::Fixed`]).
    Sym(Expr),
}

impl Dim {
    /// The extent when it is known.
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    /// The symbol `name` as a dim.
    pub fn sym(name: impl Into<String>) -> Dim {
        Dim::Sym(Expr::sym(name))
    }

    /// The dim of expression `e`: [`Dim::Fixed`] when it is a non-negative constant.
    /// `None` for a negative constant.
    pub fn from_expr(e: Expr) -> Option<Dim> {
        match e.as_const() {
            Some(c) => u64::try_from(c).ok().map(Dim::Fixed),
            None => Some(Dim::Sym(e)),
        }
    }

    /// The dim as an expression.
    pub fn expr(&self) -> Expr {
        match self {
            Dim::Fixed(n) => Expr::c(*n as i64),
            Dim::Sym(e) => e.clone(),
        }
    }

    /// The dim `q` with `product(from) = q * product(known)` exactly (a Reshape's `-1`):
    /// run-time dims that appear on both sides cancel first (`[S,1,2,512]` over
    /// `[S,1]` is 1024 whatever expression `S` is); `None` when the quotient is not an
    /// exact dim or `known`'s product is 0.
    pub fn quotient(from: &[Dim], known: &[Dim]) -> Option<Dim> {
        let mut rest: Vec<Dim> = from.to_vec();
        let mut kept = Vec::new();
        for d in known {
            match rest.iter().position(|r| r == d && d.fixed().is_none()) {
                Some(p) => {
                    rest.remove(p);
                }
                None => kept.push(d.clone()),
            }
        }
        let (total, k) = (Dim::product(&rest).expr(), Dim::product(&kept).expr());
        if k.as_const() == Some(0) {
            return None;
        }
        let q = total.floor_div(&k);
        if &q * &k != total {
            return None;
        }
        Dim::from_expr(q)
    }

    /// The product of `dims`. Known extents multiply in checked arithmetic; a product
    /// past `i64::MAX` is `u64::MAX`, a size no node is allowed to have (`check_size`
    /// refuses it with the node's name), never a wrapped value.
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
        Dim::combine(dims, 1, u64::checked_mul, |a, b| a * b)
    }

    /// The sum of `dims`, saturating as [`Dim::product`] does.
    pub fn sum<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> Dim {
        Dim::combine(dims, 0, u64::checked_add, |a, b| a + b)
    }

    fn combine<'a>(
        dims: impl IntoIterator<Item = &'a Dim>,
        unit: u64,
        known: fn(u64, u64) -> Option<u64>,
        sym: fn(&Expr, &Expr) -> Expr,
    ) -> Dim {
        const HUGE: Dim = Dim::Fixed(u64::MAX);
        let (mut k, mut rest) = (Some(unit), Vec::new());
        for d in dims {
            match d {
                Dim::Fixed(n) => k = k.and_then(|k| known(k, *n)).filter(|&v| v <= i64::MAX as u64),
                Dim::Sym(e) => rest.push(e.clone()),
            }
        }
        let Some(k) = k else { return HUGE };
        if rest.is_empty() {
            return Dim::Fixed(k);
        }
        let e = rest.iter().fold(Expr::c(k as i64), |a, b| sym(&a, b));
        Dim::from_expr(e).unwrap_or(HUGE)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(e) => write!(f, "{e}"),
        }
    }
}

/// A tensor shape: a list of dims (empty for a scalar).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape of known extents.
    pub fn fixed(dims: &[u64]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// All extents, when every dim is known.
    pub fn as_fixed(&self) -> Option<Vec<u64>> {
        self.0.iter().map(Dim::fixed).collect()
    }

    /// Number of elements, when every dim is known.
    pub fn numel(&self) -> Option<u64> {
        // Saturating: a graph never holds a tensor this large (`check_size`), but a shape
        // rule may ask before its node is refused.
        self.as_fixed().map(|d| d.iter().fold(1u64, |a, &b| a.saturating_mul(b)))
    }

    /// Whether every dim is known.
    pub fn is_fixed(&self) -> bool {
        self.0.iter().all(|d| d.fixed().is_some())
    }

    /// The extents with every symbol at 1 (a batch of one): what cost models and
    /// reports count symbolic shapes at; 0 where that gives no valid extent.
    pub fn at_ones(&self) -> Vec<u64> {
        struct Ones;
        impl dlc_sym::Env for Ones {
            fn sym(&self, _: &str) -> Option<i64> {
                Some(1)
            }
            fn var(&self, _: u32) -> Option<i64> {
                None
            }
            fn val(&self, _: u32) -> Option<i64> {
                None
            }
        }
        self.0
            .iter()
            .map(|d| {
                d.fixed().unwrap_or_else(|| d.expr().eval(&Ones).ok().and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
            })
            .collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a value: element type and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
}

impl TensorType {
    /// A type of known extents.
    pub fn fixed(dtype: DType, dims: &[u64]) -> TensorType {
        TensorType { dtype, shape: Shape::fixed(dims) }
    }

    /// Parses the text [`fmt::Display`] writes (`f32[2,3]`, `i64[batch,4]`,
    /// `f32[N,2*N + 1]`, `f32[]`; spaces allowed); `None` when it is not one.
    pub fn parse(s: &str) -> Option<TensorType> {
        let (dt, rest) = s.trim().split_once('[')?;
        let dims = rest.trim_end().strip_suffix(']')?;
        let dtype = DType::from_name(dt.trim())?;
        let mut shape = Vec::new();
        if !dims.trim().is_empty() {
            // Dims are split at commas outside parentheses (`floordiv(N, 2)` is one dim).
            let (mut depth, mut start) = (0i32, 0);
            let mut parts = Vec::new();
            for (i, c) in dims.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        parts.push(&dims[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            parts.push(&dims[start..]);
            for d in parts {
                let d = d.trim();
                shape.push(match d.parse::<u64>() {
                    Ok(n) => Dim::Fixed(n),
                    Err(_) => Dim::from_expr(dlc_sym::parse(d).ok()?)?,
                });
            }
        }
        Some(TensorType { dtype, shape: Shape(shape) })
    }

    /// Bytes of a tensor of this type, when its shape is known.
    pub fn size_bytes(&self) -> Option<u64> {
        self.shape.numel().map(|n| n * self.dtype.size() as u64)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}
