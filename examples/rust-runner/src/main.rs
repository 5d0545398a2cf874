//! Example: load a compiled dlc artifact with dlc-runtime and run it.
//!
//! ```text
//! dlc-run-example ARTIFACT_DIR OUT_DIR NAME=INPUT.f32[@DIMS] ...
//! ```
//! Inputs are raw little-endian f32 files shaped as the manifest says, or as `@DIMS`
//! (e.g. `@3x784`) says for a model with run-time dims; each output is written to
//! OUT_DIR/NAME.f32. dlc-runtime checks the shapes against the model.
use dlc_runtime::{Model, Tensor};
use std::process::ExitCode;

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [artifact, out_dir, inputs @ ..] = args.as_slice() else {
        return Err("usage: dlc-run-example ARTIFACT_DIR OUT_DIR NAME=INPUT.f32 ...".into());
    };
    let model = Model::load(artifact)?;
    let mut tensors = Vec::new();
    for spec in inputs {
        let (name, file) = spec.split_once('=').ok_or("inputs are NAME=FILE.f32[@DIMS]")?;
        let (path, shape) = match file.rsplit_once('@') {
            Some((path, dims)) => {
                let shape: Result<Vec<u64>, _> = dims.split('x').map(str::parse).collect();
                (path, shape.map_err(|_| format!("'{dims}': dims are numbers joined by 'x'"))?)
            }
            None => {
                let shape = model
                    .manifest()
                    .inputs
                    .iter()
                    .find(|i| i.name == name)
                    .and_then(|i| i.fixed_shape())
                    .ok_or_else(|| format!("the model has no input '{name}' of fixed shape; give one as @DIMS"))?;
                (file, shape)
            }
        };
        let bytes = std::fs::read(path)?;
        let values: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensors.push((name.to_string(), Tensor::from_f32(&shape, &values)));
    }
    let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outputs = model.run(&named)?;
    std::fs::create_dir_all(out_dir)?;
    for (spec, t) in model.manifest().outputs.iter().zip(outputs) {
        std::fs::write(std::path::Path::new(out_dir).join(format!("{}.f32", spec.name)), &t.data)?;
        println!("{}: {}{:?}", spec.name, t.dtype, t.shape);
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
