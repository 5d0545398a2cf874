//! dlc-ir: the graph every frontend produces and every pass and backend consumes.
//!
//! A [`Graph`] is a `petgraph::stable_graph::StableDiGraph` of [`Node`]s. Each node
//! holds one [`Op`] (declared once in [`ops`]) and the types of its outputs; each edge
//! connects an output port of its source to an operand port of its target. Weights are
//! [`TensorData`]: shared immutable buffers behind an `Arc`.
//!
//! Invariant: this crate knows nothing of ONNX, LLVM or CUDA.
#![warn(missing_docs)]

pub mod bind;
mod dtype;
mod error;
mod graph;
pub mod implied;
pub mod minifloat;
pub mod ops;
pub mod paths;
mod print;
mod shape;
mod tensor;
mod verify;

pub use dtype::DType;
pub use error::IrError;
pub use graph::{
    check_size, optional_present_name, sequence_element_name, sequence_shapes_name, string_bytes_name, Edge, Graph,
    Node, NodeId, SequenceIo, Value, MAX_TENSOR_BYTES,
};
pub use ops::{Attr, Op, OpInfo, OpKind, OP_TABLE};
pub use print::print_graph;
pub use shape::{Dim, Expr, Shape, TensorType};
pub use tensor::TensorData;
pub use verify::verify;
