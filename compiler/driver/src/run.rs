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
    /// CUDA artifacts: run the kernels on the CPU instead of a GPU (the same kernels
    /// compiled for the host, grid and block indices as loops, shared memory and
    /// barriers modelled). Without it a CUDA artifact runs on GPU 0.
    #[arg(long)]
    pub simulate: bool,
}

/// A loaded artifact of either kind.
enum Loaded {
    Cpu(dlc_runtime::Model),
    Gpu(dlc_runtime::GpuModel, bool),
}

pub fn main(a: RunArgs) -> Result<()> {
    let ctx = || format!("cannot load artifact '{}'", a.artifact.display());
    let manifest = dlc_artifact::Manifest::read_dir(&a.artifact).with_context(ctx)?;
    let loaded = if manifest.is_cuda() {
        Loaded::Gpu(dlc_runtime::GpuModel::load(&a.artifact).with_context(ctx)?, a.simulate)
    } else if a.simulate {
        bail!(
            "'{}' was compiled for {}; --simulate runs CUDA artifacts (dlc compile --target nvptx64-nvidia-cuda)",
            a.artifact.display(),
            manifest.target_triple
        );
    } else {
        Loaded::Cpu(dlc_runtime::Model::load(&a.artifact).with_context(ctx)?)
    };
    let mut tensors = Vec::new();
    for spec in &a.inputs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--input '{spec}' must be NAME=FILE.npy");
        };
        let t = npy::read(std::path::Path::new(file))?;
        let t = match manifest.inputs.iter().find(|s| s.name == name) {
            Some(spec) => npy::adapt(t, &spec.dtype, name)?,
            None => t,
        };
        tensors.push((name.to_string(), t));
    }
    let named: Vec<(&str, &dlc_runtime::Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let t0 = std::time::Instant::now();
    let outputs = match &loaded {
        Loaded::Cpu(m) => m.run(&named)?,
        Loaded::Gpu(m, true) => m.run_simulated(&named)?,
        Loaded::Gpu(m, false) => m
            .run_cuda(&named)
            .context("running on the GPU failed; `dlc run --simulate` runs a CUDA artifact's kernels on the CPU")?,
    };
    tracing::info!(ms = t0.elapsed().as_secs_f64() * 1e3, "run");
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating '{}'", a.output_dir.display()))?;
    // A string output is one tensor here (its bytes buffer folded into it).
    let specs = manifest.outputs.iter().filter(|s| s.encoding != dlc_artifact::STRING_BYTES);
    for (spec, t) in specs.zip(&outputs) {
        let path = a.output_dir.join(npy::file_name(&spec.name));
        npy::write(&path, t)?;
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        println!("{}: {}[{}] -> {}", spec.name, t.dtype, shape.join(","), path.display());
    }
    Ok(())
}
