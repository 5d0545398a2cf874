//! The ONNX op table: op type -> builder, split into per-family `register` functions.
//! A builder reads the node through [`NodeCx`] and adds IR nodes; it returns the values
//! of the node's outputs in order.
use crate::import::Importer;
use dlc_ir::{Op, TensorData, Value};
use onnx_protobuf::NodeProto;
use std::collections::HashMap;
use std::sync::OnceLock;

mod attention;
mod bind;
mod contrib;
mod contrib_more;
pub(crate) mod control;
pub(crate) mod elementwise;
pub(crate) mod gqa;
mod gradient;
mod linalg;
mod linear_attention;
mod ml;
mod movement;
mod nn;
pub(crate) mod optional;
pub(crate) mod quant;
mod random;
mod reduce;
pub(crate) mod resize;
mod rnn;
mod seqops;
pub(crate) mod sequence;
pub(crate) mod shapes;
mod signal;
pub(crate) mod strings;
pub(crate) mod tfidf;
mod training;
pub(crate) mod trees;
mod window3d;

/// Builds the IR for one ONNX node; errors are messages the caller wraps with the node.
pub(crate) type BuildFn = fn(&mut NodeCx) -> Result<Vec<Value>, String>;

/// The registry: one entry per supported ONNX op type (default domain), and
/// `com.microsoft::OpType` for the contrib ops (see [`registry_key`]).
pub(crate) fn registry() -> &'static HashMap<&'static str, BuildFn> {
    static REG: OnceLock<HashMap<&'static str, BuildFn>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut reg = HashMap::new();
        attention::register(&mut reg);
        contrib::register(&mut reg);
        contrib_more::register(&mut reg);
        control::register(&mut reg);
        elementwise::register(&mut reg);
        linalg::register(&mut reg);
        movement::register(&mut reg);
        nn::register(&mut reg);
        quant::register(&mut reg);
        reduce::register(&mut reg);
        resize::register(&mut reg);
        rnn::register(&mut reg);
        seqops::register(&mut reg);
        signal::register(&mut reg);
        sequence::register(&mut reg);
        strings::register(&mut reg);
        optional::register(&mut reg);
        random::register(&mut reg);
        training::register(&mut reg);
        gradient::register(&mut reg);
        tfidf::register(&mut reg);
        ml::register(&mut reg);
        trees::register(&mut reg);
        reg
    })
}

/// The registry key of `node`: its op type in the default domain, `DOMAIN::OpType` in
/// another.
pub(crate) fn registry_key(node: &NodeProto) -> String {
    match node.domain.as_str() {
        "" | "ai.onnx" => node.op_type.clone(),
        d => format!("{d}::{}", node.op_type),
    }
}

/// What a builder sees of the node being imported.
pub(crate) struct NodeCx<'a, 'm> {
    pub imp: &'a mut Importer<'m>,
    pub node: &'a NodeProto,
    pub name: String,
    pub opset: i64,
}

impl NodeCx<'_, '_> {
    /// Operand `i`; fails when absent or empty.
    pub fn input(&mut self, i: usize) -> Result<Value, String> {
        self.opt_input(i)?.ok_or_else(|| format!("missing required input {i}"))
    }

    /// Operand `i`, or `None` when absent or given as the empty name.
    pub fn opt_input(&mut self, i: usize) -> Result<Option<Value>, String> {
        match self.node.input.get(i) {
            Some(n) if !n.is_empty() => self.imp.lookup(n).map(Some),
            _ => Ok(None),
        }
    }

    /// Number of operands given (trailing empty names excluded).
    pub fn num_inputs(&self) -> usize {
        self.node.input.iter().rposition(|n| !n.is_empty()).map_or(0, |p| p + 1)
    }

    /// The contents of operand `i` when it is a compile-time constant.
    pub fn const_input(&mut self, i: usize) -> Result<Option<TensorData>, String> {
        Ok(self.opt_input(i)?.and_then(|v| self.imp.known.get(&v).cloned()))
    }

    /// Constant integer list from operand `i` (`None` when the operand is absent).
    pub fn const_ints(&mut self, i: usize, what: &str) -> Result<Option<Vec<i64>>, String> {
        if self.opt_input(i)?.is_none() {
            return Ok(None);
        }
        let t = self.const_input(i)?.ok_or_else(|| format!("{what} (input {i}) must be a constant"))?;
        t.to_i64().map(Some).ok_or_else(|| format!("{what} must be integers"))
    }

    /// An integer list that moved from attribute `name` to operand `i` in opset `since`.
    pub fn ints_input_or_attr(&mut self, i: usize, name: &str, since: i64) -> Result<Option<Vec<i64>>, String> {
        if self.opset >= since {
            self.const_ints(i, name)
        } else {
            Ok(self.has(name).then(|| self.ints(name)))
        }
    }

    fn attr(&self, name: &str) -> Option<&onnx_protobuf::AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    /// Integer attribute or default.
    pub fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }

    /// Float attribute or default.
    pub fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }

    /// Float-list attribute or empty.
    pub fn floats(&self, name: &str) -> Vec<f32> {
        self.attr(name).map_or_else(Vec::new, |a| a.floats.clone())
    }

    /// Integer-list attribute or empty.
    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.attr(name).map_or_else(Vec::new, |a| a.ints.clone())
    }

    /// String-list attribute or empty.
    pub fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        self.attr(name).map_or(Ok(Vec::new()), |a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8(s.clone()).map_err(|_| format!("attribute '{name}' is not UTF-8")))
                .collect()
        })
    }

    /// Whether the attribute is present.
    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    /// String attribute or default.
    pub fn string(&self, name: &str, default: &str) -> Result<String, String> {
        match self.attr(name) {
            Some(a) => String::from_utf8(a.s.clone()).map_err(|_| format!("attribute '{name}' is not UTF-8")),
            None => Ok(default.to_string()),
        }
    }

    /// Tensor attribute.
    pub fn tensor_attr(&self, name: &str) -> Result<Option<TensorData>, String> {
        match self.attr(name).and_then(|a| a.t.as_ref()) {
            Some(t) => crate::tensor::tensor_from_proto(t, &self.imp.base).map(Some),
            None => Ok(None),
        }
    }

    /// Fails unless attribute `name` is absent or equal to `ok`.
    pub fn require_int(&self, name: &str, ok: i64) -> Result<(), String> {
        match self.attr(name) {
            Some(a) if a.i != ok => Err(format!("attribute {name}={} is not supported (only {ok})", a.i)),
            _ => Ok(()),
        }
    }

    /// Adds an IR node named after this node (with `suffix` when a node expands to several).
    /// When every operand is a known constant and the reference interpreter can evaluate
    /// the op, the results are constants instead (the unused node is removed by DCE), so
    /// shape computations fold at compile time.
    pub fn add(&mut self, suffix: &str, op: impl Into<Op>, operands: &[Value]) -> Result<Vec<Value>, String> {
        let name = if suffix.is_empty() { self.name.clone() } else { format!("{}/{suffix}", self.name) };
        let op = op.into();
        let guarded;
        let operands = match self.guard_indices(&name, &op, operands)? {
            Some(v) => {
                guarded = v;
                &guarded[..]
            }
            None => operands,
        };
        let outs = self.imp.graph.add_node(name.clone(), op.clone(), operands).map_err(|e| match e {
            dlc_ir::IrError::Shape { message, .. } => message,
            e => e.to_string(),
        })?;
        let known: Option<Vec<TensorData>> = operands.iter().map(|v| self.imp.known.get(v).cloned()).collect();
        if let (Some(inputs), false) = (known, operands.is_empty()) {
            let types: Vec<_> = outs.iter().map(|v| self.imp.graph.value_type(*v).clone()).collect();
            match dlc_interp::eval(&op, &inputs, &types) {
                Ok(results) => {
                    return Ok(results
                        .into_iter()
                        .map(|t| {
                            let v = self.imp.graph.add_const(name.clone(), t.clone());
                            self.imp.known.insert(v, t);
                            v
                        })
                        .collect());
                }
                Err(dlc_interp::EvalError::Invalid(m)) => return Err(m),
                Err(dlc_interp::EvalError::Unsupported(_)) => {}
            }
        }
        Ok(outs)
    }

    /// In a speculatively computed `If` branch (`Importer::guards`), the run-time indices
    /// of an index op (Gather, GatherElements, ScatterElements, ScatterND) become
    /// `Where(taken, indices, 0)`: dlc checks indices at run time and fails the run on
    /// one out of range, as ONNX Runtime does, but only the branch taken may fail it.
    /// The operands with the guarded indices, or `None` when nothing changes.
    fn guard_indices(&mut self, name: &str, op: &Op, operands: &[Value]) -> Result<Option<Vec<Value>>, String> {
        if self.imp.guards.is_empty() {
            return Ok(None);
        }
        let types: Vec<_> = operands.iter().map(|v| self.imp.graph.value_type(*v).clone()).collect();
        let Some((i, ..)) = dlc_ir::ops::index_operand(op, &types) else { return Ok(None) };
        let Some(&idx) = operands.get(i) else { return Ok(None) };
        if self.imp.known.contains_key(&idx) {
            return Ok(None);
        }
        let err = |e: dlc_ir::IrError| e.to_string();
        let g = &mut self.imp.graph;
        let mut taken: Option<Value> = None;
        for (j, &(cond, polarity)) in self.imp.guards.clone().iter().enumerate() {
            let c = if polarity {
                cond
            } else {
                g.add_node(format!("{name}/guard{j}_not"), dlc_ir::ops::Not {}, &[cond]).map_err(err)?[0]
            };
            taken = Some(match taken {
                None => c,
                Some(t) => g.add_node(format!("{name}/guard{j}_and"), dlc_ir::ops::And {}, &[t, c]).map_err(err)?[0],
            });
        }
        let Some(mut taken) = taken else { return Ok(None) };
        if g.value_type(taken).shape.rank() != 0 {
            // A one-element condition of rank 1: a scalar, so that Where keeps the
            // indices' shape.
            let scalar = dlc_ir::ops::Reshape { shape: Vec::new(), allowzero: false };
            taken = g.add_node(format!("{name}/guard_scalar"), scalar, &[taken]).map_err(err)?[0];
        }
        let dt = g.value_type(idx).dtype;
        let zero = TensorData::new(dlc_ir::TensorType::fixed(dt, &[]), vec![0u8; dt.size()].into())
            .ok_or("a zero index constant")?;
        let zero = g.add_const(format!("{name}/guard_zero"), zero);
        let safe =
            g.add_node(format!("{name}/guarded_indices"), dlc_ir::ops::Where {}, &[taken, idx, zero]).map_err(err)?[0];
        let mut out = operands.to_vec();
        out[i] = safe;
        Ok(Some(out))
    }

    /// Adds a single-output IR node.
    pub fn add1(&mut self, suffix: &str, op: impl Into<Op>, operands: &[Value]) -> Result<Value, String> {
        Ok(self.add(suffix, op, operands)?[0])
    }

    /// An i64 constant of shape `dims` (a lowering's index tables, masks' positions).
    pub fn i64_const(&mut self, dims: &[u64], v: &[i64]) -> Result<Value, String> {
        Ok(self.add_const(TensorData::from_i64(dims, v).ok_or("an i64 constant of the wrong size")?))
    }

    /// Adds a constant that later nodes may read at compile time.
    pub fn add_const(&mut self, t: TensorData) -> Value {
        let v = self.imp.graph.add_const(self.name.clone(), t.clone());
        self.imp.known.insert(v, t);
        v
    }

    /// The type of a value.
    pub fn ty(&self, v: Value) -> dlc_ir::TensorType {
        self.imp.graph.value_type(v).clone()
    }
}
