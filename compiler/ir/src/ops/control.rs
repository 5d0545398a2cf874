//! Control flow: `loop`, ONNX's `Loop` with its body as a graph of its own.
use super::{ensure, Attr, Infer, OpInfo, OpMeta};
use crate::{DType, Dim, Expr, Graph, IrError, Shape, TensorType};
use std::sync::Arc;

/// A loop's body: a graph of its own, shared (cheap to clone) until a pass changes it.
#[derive(Clone)]
pub struct Body(pub Arc<Graph>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({:?}, {} nodes)", self.0.name, self.0.node_count())
    }
}

impl PartialEq for Body {
    /// Two bodies are equal when they are the same graph (no structural comparison).
    fn eq(&self, other: &Body) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// `loop`: runs `body` up to `count` times (ONNX `Loop`). Operands: the bound trip
/// count (an i64 tensor whose value `count` names; no kernel reads it), the initial
/// condition (one bool), the `carried` initial values, then the outer values the body
/// reads. The body's inputs are the iteration number (i64 scalar), the condition, the
/// carried values and the outer values, in that order; its outputs the condition (when
/// `check`: the loop ends when it is false), the carried values' next values (each of
/// its input's type), then the scan outputs. Results: the carried values' final values,
/// then each scan output stacked over the iterations (`[count, ...]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Loop {
    /// The body.
    pub body: Body,
    /// The trip count, an expression of the symbols (a computed dim at run time).
    pub count: String,
    /// How many carried values.
    pub carried: i64,
    /// Whether the body's first output is a condition checked before each iteration
    /// (otherwise the loop runs exactly `count` times).
    pub check: bool,
}

impl Loop {
    /// The trip count as an expression.
    pub fn count_expr(&self) -> Option<Expr> {
        dlc_sym::parse(self.count.trim()).ok()
    }

    /// How many scan outputs the body gives.
    pub fn scans(&self) -> usize {
        let n = self.body.0.outputs().len();
        n.saturating_sub(self.carried as usize + usize::from(self.check))
    }

    /// The from-attributes constructor the DSL uses: a loop has a body graph, which the
    /// DSL cannot write.
    pub fn from_attrs(_args: &mut super::AttrArgs) -> Result<Self, String> {
        Err("loop needs attribute 'body', a graph, which the DSL cannot write (import the loop from ONNX)".into())
    }
}

impl OpMeta for Loop {
    const INFO: OpInfo = OpInfo {
        mnemonic: "loop",
        min_operands: 2,
        max_operands: usize::MAX,
        doc: "Runs its body graph up to `count` times: carried values, scan outputs (ONNX Loop).\n",
    };
    fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![
            ("count", Attr::Str(self.count.clone())),
            ("carried", Attr::Int(self.carried)),
            ("check", Attr::Bool(self.check)),
            ("body", Attr::Str(self.body.0.name.clone())),
        ]
    }
}

impl Infer for Loop {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        let g = &self.body.0;
        let count =
            self.count_expr().ok_or_else(|| IrError::shape(node, op, format!("'{}' is no count", self.count)))?;
        let n = usize::try_from(self.carried).map_err(|_| IrError::shape(node, op, "negative carried count"))?;
        ensure(inputs.len() >= 2 + n, node, op, || format!("{} operands for {n} carried values", inputs.len()))?;
        ensure(inputs[1].dtype == DType::Bool && inputs[1].shape.numel() == Some(1), node, op, || {
            format!("the condition must hold one bool, got {}", inputs[1])
        })?;
        let body_in: Vec<&TensorType> = g.inputs().iter().map(|&id| &g.node(id).outputs[0]).collect();
        ensure(body_in.len() == inputs.len(), node, op, || {
            format!("the body takes {} inputs, the loop gives {}", body_in.len(), inputs.len())
        })?;
        ensure(body_in[0].dtype == DType::I64 && body_in[0].shape.numel() == Some(1), node, op, || {
            format!("the body's iteration number must be one i64, got {}", body_in[0])
        })?;
        for (i, (b, t)) in body_in.iter().zip(inputs).enumerate().skip(1) {
            ensure(*b == t, node, op, || format!("body input {i} is {b}, the loop gives {t}"))?;
        }
        let outs: Vec<&TensorType> = g.outputs().iter().map(|(_, v)| g.value_type(*v)).collect();
        let first = usize::from(self.check);
        ensure(outs.len() >= first + n, node, op, || format!("the body gives {} outputs", outs.len()))?;
        if self.check {
            ensure(outs[0].dtype == DType::Bool && outs[0].shape.numel() == Some(1), node, op, || {
                format!("the body's condition must be one bool, got {}", outs[0])
            })?;
        }
        let mut res = Vec::new();
        for k in 0..n {
            let (t, b) = (&inputs[2 + k], outs[first + k]);
            ensure(t == b, node, op, || {
                format!("carried value {k} is {t} but the body makes it {b} (its type must not change)")
            })?;
            res.push(t.clone());
        }
        let c = Dim::from_expr(count.clone()).unwrap_or(Dim::Sym(count));
        for t in &outs[first + n..] {
            let mut shape = vec![c.clone()];
            shape.extend(t.shape.0.iter().cloned());
            res.push(TensorType { dtype: t.dtype, shape: Shape(shape) });
        }
        Ok(res)
    }
}

/// `if`: runs `then` when its condition holds, else `els` (ONNX `If` on a condition only
/// the run knows; one known when compiling imports only the branch taken). Operands: the
/// condition (one bool), then the outer values the branches read. Each branch's inputs
/// are those outer values, in that order; its outputs are the results, of the same types
/// in both branches. Only the branch taken runs.
#[derive(Debug, Clone, PartialEq)]
pub struct If {
    /// The branch run when the condition holds.
    pub then: Body,
    /// The branch run otherwise.
    pub els: Body,
}

impl If {
    /// The from-attributes constructor the DSL uses: an if has branch graphs, which the
    /// DSL cannot write.
    pub fn from_attrs(_args: &mut super::AttrArgs) -> Result<Self, String> {
        Err("if needs attributes 'then' and 'els', graphs, which the DSL cannot write (import the If from ONNX)".into())
    }
}

impl OpMeta for If {
    const INFO: OpInfo = OpInfo {
        mnemonic: "if",
        min_operands: 1,
        max_operands: usize::MAX,
        doc: "Runs its then-graph when the condition holds, else its else-graph (ONNX If).\n",
    };
    fn attrs(&self) -> Vec<(&'static str, Attr)> {
        vec![("then", Attr::Str(self.then.0.name.clone())), ("els", Attr::Str(self.els.0.name.clone()))]
    }
}

impl Infer for If {
    fn infer(&self, node: &str, inputs: &[TensorType]) -> Result<Vec<TensorType>, IrError> {
        let op = Self::INFO.mnemonic;
        ensure(inputs[0].dtype == DType::Bool && inputs[0].shape.numel() == Some(1), node, op, || {
            format!("the condition must hold one bool, got {}", inputs[0])
        })?;
        let mut results: Option<Vec<TensorType>> = None;
        for (what, b) in [("then", &self.then), ("else", &self.els)] {
            let g = &b.0;
            let ins: Vec<&TensorType> = g.inputs().iter().map(|&id| &g.node(id).outputs[0]).collect();
            ensure(ins.len() + 1 == inputs.len(), node, op, || {
                format!("the {what}-branch takes {} inputs, the if gives {}", ins.len(), inputs.len() - 1)
            })?;
            for (i, (b, t)) in ins.iter().zip(&inputs[1..]).enumerate() {
                ensure(*b == t, node, op, || format!("{what}-branch input {i} is {b}, the if gives {t}"))?;
            }
            let outs: Vec<TensorType> = g.outputs().iter().map(|(_, v)| g.value_type(*v).clone()).collect();
            match &results {
                None => results = Some(outs),
                Some(r) => {
                    ensure(r.len() == outs.len(), node, op, || {
                        format!("the then-branch gives {} outputs, the else-branch {}", r.len(), outs.len())
                    })?;
                    for (i, (a, b)) in r.iter().zip(&outs).enumerate() {
                        ensure(a == b, node, op, || {
                            format!("output {i} is {a} in the then-branch and {b} in the else-branch")
                        })?;
                    }
                }
            }
        }
        Ok(results.unwrap_or_default())
    }
}
