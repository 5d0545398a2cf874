use crate::TensorType;

/// Errors raised while building, typing or verifying a graph.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum IrError {
    /// An op's shape or type rule rejected its operands.
    #[error("node '{node}' ({op}): {message}")]
    Shape {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The node has the wrong number of operands.
    #[error("node '{node}' ({op}): expects {min}..={max} operands, got {got}")]
    Arity {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: &'static str,
        /// Fewest operands.
        min: usize,
        /// Most operands.
        max: usize,
        /// Operands given.
        got: usize,
    },
    /// A node's recorded output types disagree with its op's type rule.
    #[error("node '{node}' ({op}): output {port} has type {recorded}, its type rule gives {inferred}")]
    TypeMismatch {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: &'static str,
        /// Output port.
        port: usize,
        /// Type stored on the node.
        recorded: TensorType,
        /// Type the rule computes.
        inferred: TensorType,
    },
    /// Any other structural problem found by the verifier.
    #[error("invalid graph: {0}")]
    Invalid(String),
}

impl IrError {
    /// Shorthand for a [`IrError::Shape`] error.
    pub fn shape(node: &str, op: &'static str, message: impl Into<String>) -> Self {
        IrError::Shape { node: node.to_string(), op, message: message.into() }
    }
}
