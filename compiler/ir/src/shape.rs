use crate::DType;
use std::fmt;

/// One dimension of a shape: a known extent or a named symbol resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known extent.
    Fixed(u64),
    /// A symbolic extent such as a batch size `N`.
    Sym(String),
}

impl Dim {
    /// The extent when it is known.
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
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
        self.as_fixed().map(|d| d.iter().product())
    }

    /// Whether every dim is known.
    pub fn is_fixed(&self) -> bool {
        self.0.iter().all(|d| d.fixed().is_some())
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

    /// Parses the text [`fmt::Display`] writes (`f32[2,3]`, `i64[batch,4]`, `f32[]`;
    /// spaces allowed); `None` when it is not one.
    pub fn parse(s: &str) -> Option<TensorType> {
        let (dt, rest) = s.trim().split_once('[')?;
        let dims = rest.trim_end().strip_suffix(']')?;
        let dtype = DType::from_name(dt.trim())?;
        let mut shape = Vec::new();
        if !dims.trim().is_empty() {
            for d in dims.split(',') {
                let d = d.trim();
                shape.push(match d.parse::<u64>() {
                    Ok(n) => Dim::Fixed(n),
                    Err(_) if !d.is_empty() && d.chars().all(|c| c.is_alphanumeric() || c == '_') => Dim::Sym(d.into()),
                    Err(_) => return None,
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
