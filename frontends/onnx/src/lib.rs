//! dlc-onnx: imports ONNX models (read with onnx-protobuf) into a [`dlc_ir::Graph`].
//!
//! Every ONNX op type maps to a builder in one table ([`ops::registry`]), split by family.
//! Before anything is built the whole graph is scanned, and a model with unsupported
//! nodes fails with one error that lists every one of them.
//!
//! Invariant: output types come from the IR's op rules; builders compute only the
//! attributes of the IR ops a node expands into.
#![warn(missing_docs)]

mod error;
mod export;
mod import;
mod ops;
#[rustfmt::skip]
mod schema;
mod tensor;
mod validate;
mod wire;

pub use error::{OnnxError, UnsupportedNode};
pub use export::{export, export_bytes, ExportError, EXPORT_OPSET};
pub use import::{decode_model, import, import_bytes, read_model, summarize, ImportOptions, ModelSummary};
pub use onnx_protobuf::ModelProto;
