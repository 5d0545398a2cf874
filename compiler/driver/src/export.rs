//! `dlc export`: a model (a `.dlc` file, or an ONNX model after import) written as ONNX.
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Write a model as an ONNX file (opset 20), e.g. to run a .dlc model in ONNX Runtime.
///
/// The graph is exported as imported, before dlc's optimisations (and in ONNX's own ops
/// where dlc would import into kernels ONNX lacks, as the int8 products). Example: dlc export
/// examples/dsl/mlp.dlc -o mlp.onnx
#[derive(Args)]
pub struct ExportArgs {
    /// The model: a .dlc file (or an .onnx file, re-written from dlc's IR).
    pub model: PathBuf,
    /// The ONNX file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

pub fn main(a: ExportArgs) -> Result<()> {
    // ONNX's own ops where dlc would import into kernels ONNX lacks (int8 products).
    let pins = dlc_onnx::ImportOptions { onnx_ops_only: true, ..Default::default() };
    let g = crate::compile::load_model_pinned(&a.model, pins)?;
    let bytes = dlc_onnx::export_bytes(&g).with_context(|| format!("cannot export '{}' to ONNX", a.model.display()))?;
    std::fs::write(&a.output, &bytes).with_context(|| format!("cannot write '{}'", a.output.display()))?;
    eprintln!(
        "exported {} -> {} ({} nodes, ONNX opset {})",
        a.model.display(),
        a.output.display(),
        g.node_count(),
        dlc_onnx::EXPORT_OPSET
    );
    Ok(())
}
