//! A fused elementwise kernel: a small program of elementwise ops over the node's
//! operands, computed per element of the broadcast result without materialising the
//! intermediate values. The optimiser builds these from chains and trees of elementwise
//! ops (elementwise ops commute with broadcasting, so evaluating every step at each
//! element of the final shape is exact).
use super::{ensure, Attr, Infer, Op, OpKind, OpMeta};
use crate::{op, IrError, TensorType};
use std::fmt;

/// One step: `op` applied to `args`, where `Arg::Operand(i)` is the node's operand `i`
/// and `Arg::Step(j)` the result of an earlier step.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedStep {
    /// An elementwise op.
    pub op: Op,
    /// Its operands.
    pub args: Vec<Arg>,
}

/// An operand of a fused step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arg {
    /// The fused node's operand.
    Operand(u32),
    /// An earlier step's result.
    Step(u32),
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Operand(i) => write!(f, "%{i}"),
            Arg::Step(j) => write!(f, "${j}"),
        }
    }
}

/// The program as text: `sigmoid(%0); mul(%0,$0)`.
impl From<Vec<FusedStep>> for Attr {
    fn from(steps: Vec<FusedStep>) -> Self {
        let text: Vec<String> = steps
            .iter()
            .map(|s| {
                let attrs = s.op.attrs();
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    let a: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{{{}}}", a.join(","))
                };
                let args: Vec<String> = s.args.iter().map(|a| a.to_string()).collect();
                format!("{}{attrs}({})", s.op.mnemonic(), args.join(","))
            })
            .collect();
        Attr::Str(text.join("; "))
    }
}

op! {
    /// Elementwise ops fused into one kernel: `steps` run in order on the operands and
    /// earlier results; the last step's result is the node's.
    Fused = "fused", operands 1..=64 { steps: Vec<FusedStep> }
}

impl Fused {
    /// The type of every step's result, for operands of types `inputs`.
    pub fn step_types(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        ensure(!self.steps.is_empty(), node, op, || "no steps".into())?;
        let mut types: Vec<TensorType> = Vec::with_capacity(self.steps.len());
        for (j, s) in self.steps.iter().enumerate() {
            let elementwise = s.op.kind() == OpKind::Elementwise && !matches!(s.op, Op::Fused(_));
            ensure(elementwise, node, op, || format!("step {j} ({}) is not a plain elementwise op", s.op.mnemonic()))?;
            let mut arg_types = Vec::with_capacity(s.args.len());
            for a in &s.args {
                let t = match *a {
                    Arg::Operand(i) => inputs.get(i as usize),
                    Arg::Step(k) if (k as usize) < j => types.get(k as usize),
                    Arg::Step(_) => None,
                };
                arg_types.push(t.cloned().ok_or_else(|| {
                    IrError::shape(node, op, format!("step {j} refers to {a}, which is not defined"))
                })?);
            }
            let mut out = s.op.infer(node, &arg_types)?;
            ensure(out.len() == 1, node, op, || format!("step {j} has {} results", out.len()))?;
            types.push(out.remove(0));
        }
        Ok(types)
    }
}

impl Infer for Fused {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let mut types = self.step_types(node, inputs)?;
        Ok(vec![types.pop().expect("at least one step")])
    }
}
