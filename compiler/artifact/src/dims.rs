//! Run-time dims: binding a model's symbols from the shapes of its inputs, and the
//! shapes of its outputs at those values.
//!
//! A manifest with [`Manifest::symbols`] describes shapes whose symbolic dims are
//! expressions over those symbols (dlc-sym's text form). A caller gives input shapes;
//! [`Manifest::bind_dims`] reads each symbol off the first input dim that is exactly that
//! symbol, then checks every input dim (fixed dims, shared symbols, expressions,
//! minimum values) and names the input, the dim and the rule that failed. The result
//! is the `dims` array of the C ABI's `run_dims`, in manifest order.

use crate::{Manifest, TensorSpec};
use dlc_sym::Expr;
use std::collections::BTreeMap;

/// Why input shapes do not fit a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    /// An input of another rank.
    #[error("input '{input}': expected shape {expected} (rank {rank}), got {got}")]
    Rank {
        /// Input name.
        input: String,
        /// The manifest's shape.
        expected: String,
        /// Its rank.
        rank: usize,
        /// The shape given.
        got: String,
    },
    /// A fixed dim with another extent.
    #[error("input '{input}': dim {dim} must be {expected}, got {got} (shape {shape} given for {spec})")]
    Fixed {
        /// Input name.
        input: String,
        /// Dim index.
        dim: usize,
        /// The fixed extent.
        expected: u64,
        /// The extent given.
        got: u64,
        /// The shape given.
        shape: String,
        /// The manifest's shape.
        spec: String,
    },
    /// Input dims for which an equality the model relies on fails.
    #[error("the inputs' dims ({bound}) give {lhs} = {l} and {rhs} = {r}, but node '{node}' needs them equal")]
    Constraint {
        /// One side.
        lhs: String,
        /// Its value.
        l: i64,
        /// The other side.
        rhs: String,
        /// Its value.
        r: i64,
        /// The node that needs it.
        node: String,
        /// The symbols' values.
        bound: String,
    },
    /// A symbol below its minimum.
    #[error("input '{input}': dim {dim} is {symbol} = {got}, but {symbol} must be at least {min}")]
    Min {
        /// Input name.
        input: String,
        /// Dim index.
        dim: usize,
        /// The symbol.
        symbol: String,
        /// Its minimum.
        min: u64,
        /// The value given.
        got: u64,
    },
    /// A dim that disagrees with the value its expression has at the bound symbols
    /// (two inputs sharing a dim, or a dim the model derives from another).
    #[error("input '{input}': dim {dim} must equal {expr} = {expected} ({bound}), got {got}")]
    Mismatch {
        /// Input name.
        input: String,
        /// Dim index.
        dim: usize,
        /// The manifest's expression for the dim.
        expr: String,
        /// Its value.
        expected: i64,
        /// Where the symbols' values came from.
        bound: String,
        /// The extent given.
        got: u64,
    },
    /// A symbol no input dim determines.
    #[error("symbol '{0}' is not the extent of any input dim; the artifact cannot be run")]
    Unbound(String),
    /// A size that does not fit in 64 bits, or a manifest expression that is not valid.
    #[error("{0}")]
    Invalid(String),
}

fn shape_text(s: &[u64]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

impl Manifest {
    /// The values of [`Manifest::symbols`] that `shapes` (one per input, in manifest
    /// order) imply, after checking every input dim against them. Empty for a model
    /// without symbols.
    pub fn bind_dims(&self, shapes: &[&[u64]]) -> Result<Vec<i64>, DimError> {
        let mut env: BTreeMap<String, i64> = BTreeMap::new();
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        let exprs = |s: &TensorSpec| -> Result<Vec<Option<Expr>>, DimError> {
            s.shape
                .iter()
                .map(|d| match (&d.fixed, &d.symbol) {
                    (Some(_), _) => Ok(None),
                    (None, Some(t)) => dlc_sym::parse(t).map(Some).map_err(|e| {
                        DimError::Invalid(format!("input '{}': manifest dim '{t}' is not an expression: {e}", s.name))
                    }),
                    (None, None) => Err(DimError::Invalid(format!("input '{}': manifest dim has no extent", s.name))),
                })
                .collect()
        };
        // Pass 1: ranks, fixed dims, and symbols that are a whole dim.
        for (spec, shape) in self.inputs.iter().zip(shapes) {
            if spec.shape.len() != shape.len() {
                return Err(DimError::Rank {
                    input: spec.name.clone(),
                    expected: spec.shape_string(),
                    rank: spec.shape.len(),
                    got: shape_text(shape),
                });
            }
            for (i, (d, &got)) in spec.shape.iter().zip(shape.iter()).enumerate() {
                if let Some(n) = d.fixed {
                    if n != got {
                        return Err(DimError::Fixed {
                            input: spec.name.clone(),
                            dim: i,
                            expected: n,
                            got,
                            shape: shape_text(shape),
                            spec: spec.shape_string(),
                        });
                    }
                }
            }
            for (i, e) in exprs(spec)?.into_iter().enumerate() {
                let Some(name) = e.as_ref().and_then(|e| e.as_symbol().map(str::to_string)) else { continue };
                if env.contains_key(&name) {
                    continue;
                }
                let got = shape[i];
                let min = self.symbols.iter().find(|s| s.name == name).map_or(0, |s| s.min);
                if got < min {
                    return Err(DimError::Min { input: spec.name.clone(), dim: i, symbol: name, min, got });
                }
                let v = i64::try_from(got)
                    .map_err(|_| DimError::Invalid(format!("input '{}': dim {i} = {got} is too large", spec.name)))?;
                env.insert(name.clone(), v);
                origin.insert(name.clone(), format!("{name} = {v} from input '{}' dim {i}", spec.name));
            }
        }
        // Pass 2: every symbolic dim equals its expression at the bound values.
        for (spec, shape) in self.inputs.iter().zip(shapes) {
            for (i, e) in exprs(spec)?.into_iter().enumerate() {
                let Some(e) = e else { continue };
                let mut syms = Vec::new();
                e.symbols(&mut syms);
                let expected = e.eval(&env).map_err(|err| match err {
                    dlc_sym::EvalError::Unbound(s) => DimError::Unbound(s),
                    other => DimError::Invalid(format!("input '{}' dim {i}: {other}", spec.name)),
                })?;
                if expected < 0 || expected as u64 != shape[i] {
                    syms.sort();
                    syms.dedup();
                    let bound = syms.iter().filter_map(|s| origin.get(s).cloned()).collect::<Vec<_>>().join(", ");
                    return Err(DimError::Mismatch {
                        input: spec.name.clone(),
                        dim: i,
                        expr: e.to_string(),
                        expected,
                        bound,
                        got: shape[i],
                    });
                }
            }
        }
        // Constraints over computed dims wait for them ([`Manifest::check_computed`]).
        self.check_constraints(&env, &origin, false)?;
        // Data symbols are 0 until a run writes them.
        self.symbols
            .iter()
            .map(|s| {
                if s.data {
                    Ok(0)
                } else {
                    env.get(&s.name).copied().ok_or_else(|| DimError::Unbound(s.name.clone()))
                }
            })
            .collect()
    }

    /// Checks the constraints that mention computed dims (dims computed from tensor
    /// values by the artifact's `shape_values` prologue), at `dims` as the prologue
    /// filled them in; the others were checked by [`Manifest::bind_dims`].
    pub fn check_computed(&self, dims: &[i64]) -> Result<(), DimError> {
        let env: BTreeMap<String, i64> =
            self.symbols.iter().map(|s| s.name.clone()).zip(dims.iter().copied()).collect();
        let origin = self
            .symbols
            .iter()
            .zip(dims)
            .map(|(s, v)| {
                let from = if s.computed { "computed from tensor values" } else { "from the inputs' dims" };
                (s.name.clone(), format!("{} = {v} {from}", s.name))
            })
            .collect();
        self.check_constraints(&env, &origin, true)
    }

    /// Checks the constraints that mention a computed symbol (`computed`) or those that
    /// do not, at the symbol values `env`; `origin` says where each value came from.
    fn check_constraints(
        &self,
        env: &BTreeMap<String, i64>,
        origin: &BTreeMap<String, String>,
        computed: bool,
    ) -> Result<(), DimError> {
        for c in &self.constraints {
            let parse = |t: &str| {
                dlc_sym::parse(t)
                    .map_err(|e| DimError::Invalid(format!("manifest constraint '{t}' is not an expression: {e}")))
            };
            let (lhs, rhs) = (parse(&c.lhs)?, parse(&c.rhs)?);
            let mut syms = Vec::new();
            lhs.symbols(&mut syms);
            rhs.symbols(&mut syms);
            syms.sort();
            syms.dedup();
            let mentions = syms.iter().any(|n| self.symbols.iter().any(|s| s.computed && &s.name == n));
            if mentions != computed {
                continue;
            }
            let eval = |e: &dlc_sym::Expr| e.eval(env).map_err(|e| DimError::Invalid(format!("constraint: {e}")));
            let (l, r) = (eval(&lhs)?, eval(&rhs)?);
            if l != r {
                let bound = syms.iter().filter_map(|s| origin.get(s).cloned()).collect::<Vec<_>>().join(", ");
                return Err(DimError::Constraint {
                    lhs: c.lhs.clone(),
                    l,
                    rhs: c.rhs.clone(),
                    r,
                    node: c.node.clone(),
                    bound,
                });
            }
        }
        Ok(())
    }

    /// The bytes to allocate for `spec` (an output) before a run at the input dims
    /// `dims`: its size when its shape depends on those only, its `max_bytes` bound when
    /// it mentions data symbols.
    pub fn capacity_at(&self, spec: &TensorSpec, dims: &[i64]) -> Result<usize, DimError> {
        if spec.max_bytes.is_empty() {
            return Ok(self.bytes_at(spec, dims)?.1);
        }
        let env: BTreeMap<String, i64> =
            self.symbols.iter().map(|s| s.name.clone()).zip(dims.iter().copied()).collect();
        let e = dlc_sym::parse(&spec.max_bytes).map_err(|e| {
            DimError::Invalid(format!(
                "'{}': manifest max_bytes '{}' is not an expression: {e}",
                spec.name, spec.max_bytes
            ))
        })?;
        let n = e.eval(&env).map_err(|e| DimError::Invalid(format!("'{}': {e}", spec.name)))?;
        usize::try_from(n).map_err(|_| DimError::Invalid(format!("'{}': max_bytes {n} is not a size", spec.name)))
    }

    /// The message for a status of `run_dims` that a failing bind site returns.
    pub fn bind_failure(&self, status: i32) -> Option<String> {
        let (site, reason) = crate::abi::decode_bind_status(status)?;
        let node = self.binds.get(site).map_or_else(|| format!("bind site {site}"), |n| format!("node '{n}'"));
        let why = self.bind_reasons.get(reason.wrapping_sub(1)).map_or("an invalid value", String::as_str);
        Some(format!("{node}: {why}"))
    }

    /// The shape of `spec` (an input or output of this manifest) at `dims` (as
    /// [`Manifest::bind_dims`] returns them).
    pub fn shape_at(&self, spec: &TensorSpec, dims: &[i64]) -> Result<Vec<u64>, DimError> {
        let env: BTreeMap<String, i64> =
            self.symbols.iter().map(|s| s.name.clone()).zip(dims.iter().copied()).collect();
        spec.shape
            .iter()
            .map(|d| match (&d.fixed, &d.symbol) {
                (Some(n), _) => Ok(*n),
                (None, Some(t)) => {
                    let e = dlc_sym::parse(t).map_err(|e| {
                        DimError::Invalid(format!("'{}': manifest dim '{t}' is not an expression: {e}", spec.name))
                    })?;
                    let v = e.eval(&env).map_err(|e| DimError::Invalid(format!("'{}': {e}", spec.name)))?;
                    u64::try_from(v)
                        .map_err(|_| DimError::Invalid(format!("'{}': dim {t} = {v} is negative", spec.name)))
                }
                (None, None) => Err(DimError::Invalid(format!("'{}': manifest dim has no extent", spec.name))),
            })
            .collect()
    }

    /// The byte size of `spec` at `dims`, with checked arithmetic.
    pub fn bytes_at(&self, spec: &TensorSpec, dims: &[i64]) -> Result<(Vec<u64>, usize), DimError> {
        let shape = self.shape_at(spec, dims)?;
        let elem = crate::dtype_size(&spec.dtype).unwrap_or(0) as u64;
        let bytes =
            shape.iter().try_fold(elem, |a, &d| a.checked_mul(d)).and_then(|b| usize::try_from(b).ok()).ok_or_else(
                || {
                    DimError::Invalid(format!(
                        "'{}': {} bytes at shape {} do not fit in memory",
                        spec.name,
                        "more than 2^64",
                        shape_text(&shape)
                    ))
                },
            )?;
        Ok((shape, bytes))
    }
}

#[cfg(test)]
mod tests {
    use crate::{DimSpec, Manifest, SymbolSpec, TensorSpec};

    fn spec(name: &str, dims: &[&str]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype: "f32".into(),
            shape: dims
                .iter()
                .map(|d| match d.parse::<u64>() {
                    Ok(n) => DimSpec { fixed: Some(n), symbol: None },
                    Err(_) => DimSpec { fixed: None, symbol: Some(d.to_string()) },
                })
                .collect(),
            max_bytes: String::new(),
            encoding: String::new(),
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            inputs: vec![spec("x", &["N", "3", "S"]), spec("mask", &["N", "S"]), spec("pos", &["2*S + 1"])],
            outputs: vec![spec("y", &["N", "S*4"])],
            symbols: vec![
                SymbolSpec { name: "N".into(), min: 1, data: false, computed: false },
                SymbolSpec { name: "S".into(), min: 2, data: false, computed: false },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn binds_symbols_and_sizes_outputs() {
        let m = manifest();
        let dims = m.bind_dims(&[&[5, 3, 7], &[5, 7], &[15]]).unwrap();
        assert_eq!(dims, vec![5, 7]);
        assert_eq!(m.shape_at(&m.outputs[0], &dims).unwrap(), vec![5, 28]);
        assert_eq!(m.bytes_at(&m.outputs[0], &dims).unwrap().1, 5 * 28 * 4);
    }

    #[test]
    fn names_the_input_dim_and_rule_that_fail() {
        let m = manifest();
        let e = m.bind_dims(&[&[5, 4, 7], &[5, 7], &[15]]).unwrap_err().to_string();
        assert!(e.contains("input 'x': dim 1 must be 3, got 4"), "{e}");
        let e = m.bind_dims(&[&[5, 3, 7], &[6, 7], &[15]]).unwrap_err().to_string();
        assert!(e.contains("input 'mask': dim 0 must equal N = 5 (N = 5 from input 'x' dim 0), got 6"), "{e}");
        let e = m.bind_dims(&[&[5, 3, 7], &[5, 7], &[14]]).unwrap_err().to_string();
        assert!(e.contains("input 'pos': dim 0 must equal 2*S + 1 = 15"), "{e}");
        let e = m.bind_dims(&[&[5, 3, 1], &[5, 1], &[3]]).unwrap_err().to_string();
        assert!(e.contains("S must be at least 2"), "{e}");
        let e = m.bind_dims(&[&[5, 3], &[5, 7], &[15]]).unwrap_err().to_string();
        assert!(e.contains("rank 3"), "{e}");
        let e = m.bind_dims(&[&[u64::MAX, 3, 7], &[5, 7], &[15]]).unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn huge_outputs_are_an_error_not_a_wrap() {
        let m = manifest();
        let dims = m.bind_dims(&[&[1 << 40, 3, 1 << 21], &[1 << 40, 1 << 21], &[(1 << 22) + 1]]).unwrap();
        assert!(m.bytes_at(&m.outputs[0], &dims).is_err());
    }
}
