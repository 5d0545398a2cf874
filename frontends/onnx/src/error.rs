use std::fmt;
use std::path::PathBuf;

/// A node dlc cannot import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedNode {
    /// Node name (or `<op_type>_<index>` when the model leaves it empty).
    pub name: String,
    /// ONNX op type.
    pub op_type: String,
    /// Op domain (`ai.onnx` for the default domain).
    pub domain: String,
    /// Opset version of that domain in the model.
    pub opset: i64,
}

impl fmt::Display for UnsupportedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node '{}': {} (domain {}, opset {})", self.name, self.op_type, self.domain, self.opset)
    }
}

/// Errors of the ONNX frontend. Each names the file, and the node where there is one.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read.
    #[error("cannot read '{path}'")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX protobuf (truncated or not ONNX at all).
    #[error("'{path}' is not a valid ONNX model (truncated or corrupt?): {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },
    /// One or more nodes use ops dlc does not support; all of them are listed.
    #[error("'{path}': {} unsupported node(s):\n{}", nodes.len(), list(nodes))]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Every unsupported node.
        nodes: Vec<UnsupportedNode>,
    },
    /// A node is supported in general but this instance is not valid or not handled.
    #[error("'{path}': node '{node}' ({op_type}): {message}")]
    Node {
        /// The file.
        path: PathBuf,
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What is wrong.
        message: String,
    },
    /// A problem with the model as a whole (inputs, outputs, initializers).
    #[error("'{path}': {message}")]
    Model {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn list(nodes: &[UnsupportedNode]) -> String {
    nodes.iter().map(|n| format!("  {n}")).collect::<Vec<_>>().join("\n")
}
