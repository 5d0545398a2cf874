//! `dlc run`: runs a compiled artifact on `.npy` inputs.
use crate::npy;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Run a compiled model on .npy inputs and write one NAME.npy per output.
///
/// Inputs are checked against the artifact's manifest (names, dtypes, shapes) before any
/// generated code runs. Output file names are the output names with characters outside
/// [A-Za-z0-9._-] replaced by '_'.
#[derive(Args)]
pub struct RunArgs {
    /// Artifact directory written by `dlc compile`.
    pub artifact: PathBuf,
    /// An input as NAME=FILE.npy; repeat for each model input.
    #[arg(short, long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// Directory for the outputs (created if missing).
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: PathBuf,
}

pub fn main(a: RunArgs) -> Result<()> {
    let model = dlc_runtime::Model::load(&a.artifact)
        .with_context(|| format!("cannot load artifact '{}'", a.artifact.display()))?;
    let mut tensors = Vec::new();
    for spec in &a.inputs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--input '{spec}' must be NAME=FILE.npy");
        };
        let t = npy::read(std::path::Path::new(file))?;
        let t = match model.manifest().inputs.iter().find(|s| s.name == name) {
            Some(spec) => npy::adapt(t, &spec.dtype, name)?,
            None => t,
        };
        tensors.push((name.to_string(), t));
    }
    let named: Vec<(&str, &dlc_runtime::Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let t0 = std::time::Instant::now();
    let outputs = model.run(&named)?;
    tracing::info!(ms = t0.elapsed().as_secs_f64() * 1e3, "run");
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating '{}'", a.output_dir.display()))?;
    for (spec, t) in model.manifest().outputs.iter().zip(&outputs) {
        let path = a.output_dir.join(npy::file_name(&spec.name));
        npy::write(&path, t)?;
        println!("{}: {}{} -> {}", spec.name, t.dtype, spec.shape_string(), path.display());
    }
    Ok(())
}
