//! `dlc compile --quantize int8 --calibrate DIR`: calibration and the int8 rewrite.
//!
//! The optimised f32 graph is compiled once more with every candidate convolution's
//! input, residual and output as extra outputs, run natively on each calibration sample,
//! and what it saw goes to `dlc_passes::quantize`, which picks the quantization, checks
//! each layer's own error and rewrites the layers that pass.
use crate::{compile, link, npy};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use dlc_codegen_llvm::{EmitOptions, TargetSpec};
use dlc_ir::{Graph, NodeId, Value};
use dlc_passes::quantize::{self, ActQuant, RangeMethod, RangeStats};
use dlc_passes::Pass;
use std::path::{Path, PathBuf};

/// What `--quantize` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    /// Static int8: u8 activations per tensor from calibration, i8 weights per channel.
    Int8,
    /// Matrix products only, no calibration: i8 weights per channel, activations
    /// quantized at run time from each run's own range.
    #[value(name = "int8-dynamic")]
    Int8Dynamic,
}

/// How activation ranges are taken from the calibration samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Calibration {
    /// Smallest and largest value seen.
    Minmax,
    /// Mean of each sample's --percentile (and its mirror) value; ignores outliers.
    Percentile,
}

/// Quantization options of `dlc compile` (`Default`: none, with the flags' defaults).
#[derive(Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// Quantize to int8: `int8` (convolutions and matrix products, needs --calibrate) or
    /// `int8-dynamic` (matrix products, activation ranges taken at run time).
    #[arg(long, value_enum)]
    pub quantize: Option<Scheme>,
    /// Calibration samples: one sub-folder per sample holding one NAME.npy per model
    /// input (NAME as for `dlc run`).
    #[arg(long, value_name = "DIR")]
    pub calibrate: Option<PathBuf>,
    /// How activation ranges are computed from the samples.
    #[arg(long, value_enum, default_value = "minmax")]
    pub calibration: Calibration,
    /// The upper percentile for --calibration percentile.
    #[arg(long, default_value_t = 99.99, value_name = "P")]
    pub percentile: f64,
    /// A layer whose own relative error (int8 against f32 on the first calibration
    /// samples, the median over them) is above this stays f32.
    #[arg(long, default_value_t = 0.05, value_name = "ERR")]
    pub quantize_threshold: f64,
    /// Quantize the model's last layer too (by default it stays f32).
    #[arg(long)]
    pub quantize_last: bool,
}

impl Default for QuantizeArgs {
    fn default() -> Self {
        QuantizeArgs {
            quantize: None,
            calibrate: None,
            calibration: Calibration::Minmax,
            percentile: 99.99,
            quantize_threshold: 0.05,
            quantize_last: false,
        }
    }
}

/// Samples whose layer inputs and outputs are kept for the per-layer error check.
const CHECK_SAMPLES: usize = 4;

/// The sample folders of `dir`, sorted, each with one file per input name.
fn samples(dir: &Path, inputs: &[String]) -> Result<Vec<Vec<PathBuf>>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("--calibrate '{}': cannot read the folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!(
            "--calibrate '{}': no sample folders; put each sample in its own sub-folder with one NAME.npy per input ({})",
            dir.display(),
            inputs.join(", ")
        );
    }
    dirs.iter()
        .map(|d| {
            inputs
                .iter()
                .map(|name| {
                    let f = d.join(npy::file_name(name));
                    if !f.is_file() {
                        bail!("calibration sample '{}' has no '{}' for input '{name}'", d.display(), f.display());
                    }
                    Ok(f)
                })
                .collect()
        })
        .collect()
}

/// Compiles `g` into a loadable artifact in `dir` (shared library and manifest only).
fn build(g: &Graph, target: &TargetSpec, dir: &Path) -> Result<()> {
    let plan = dlc_passes::plan_memory(g)?;
    let prefix = "dlc_calibration_";
    let stats = dlc_passes::graph_stats(g);
    let files = vec![dlc_artifact::files::SHARED_LIB.to_string()];
    let m = compile::manifest(g, target, prefix, Default::default(), &stats, &plan, files);
    let opts = EmitOptions { signature: m.signature(), ..EmitOptions::default() };
    let compiled =
        dlc_codegen_llvm::compile(g, &plan, target, prefix, &opts).context("compiling the calibration model")?;
    link::shared_library_from(&compiled.objects, &dir.join(dlc_artifact::files::SHARED_LIB))?;
    m.write_dir(dir)?;
    Ok(())
}

/// One candidate layer: where its input, residual and output are among the
/// calibration model's outputs.
struct Layer {
    id: NodeId,
    name: String,
    x: usize,
    r: Option<usize>,
    y: usize,
    xdims: Vec<u64>,
    stats: RangeStats,
    kept: Vec<Seen>,
}

/// One sample's input, residual and output of a layer.
type Seen = (Vec<f32>, Option<Vec<f32>>, Vec<f32>);

/// Calibrates and rewrites `g` in place; returns the report's `quantization` section.
pub fn run(g: &mut Graph, a: &QuantizeArgs, obs: &dyn compile::Observer) -> Result<serde_json::Value> {
    if a.quantize == Some(Scheme::Int8Dynamic) {
        return dynamic(g, a);
    }
    let Some(dir) = &a.calibrate else {
        bail!("--quantize int8 needs --calibrate DIR: sample inputs to measure activation ranges on");
    };
    if !(50.0..=100.0).contains(&a.percentile) {
        bail!("--percentile must be between 50 and 100, got {}", a.percentile);
    }
    let input_names: Vec<String> = g.inputs().iter().map(|&id| g.node(id).name.clone()).collect();
    let files = samples(dir, &input_names)?;
    let cands = quantize::candidates(g, !a.quantize_last)?;
    let method = match a.calibration {
        Calibration::Minmax => RangeMethod::MinMax,
        Calibration::Percentile => RangeMethod::Percentile(a.percentile),
    };

    // The calibration model: the graph with each candidate's tensors as outputs.
    let mut cg = g.clone();
    let mut layers = Vec::new();
    for (i, &id) in cands.iter().enumerate() {
        let ops = g.operands(id);
        let mut next = |v: Value, what: &str| {
            cg.add_output(format!("__calibration_{i}_{what}"), v);
            cg.outputs().len() - 1
        };
        let x = next(ops[0], "x");
        let r = ops.get(3).map(|&v| next(v, "r"));
        let y = next(Value { node: id, port: 0 }, "y");
        let xdims = g.value_type(ops[0]).shape.as_fixed().unwrap_or_default();
        let name = g.node(id).name.clone();
        layers.push(Layer { id, name, x, r, y, xdims, stats: RangeStats::default(), kept: Vec::new() });
    }
    obs.stage(&format!("compiling the calibration model ({} layers to quantize)", layers.len()));
    let tmp = tempfile::tempdir().context("creating a temporary folder for the calibration model")?;
    // The calibration model runs here, so it is built for this machine whatever the
    // target (a target CPU with instructions this one lacks, or another architecture).
    build(&cg, &TargetSpec::host(), tmp.path())?;
    let model = dlc_runtime::Model::load(tmp.path()).context("loading the calibration model")?;
    let specs = model.manifest().inputs.clone();
    for (k, sample) in files.iter().enumerate() {
        obs.stage(&format!("calibrating: sample {} of {}", k + 1, files.len()));
        let mut tensors = Vec::new();
        for (spec, f) in specs.iter().zip(sample) {
            tensors.push(npy::adapt(npy::read(f)?, &spec.dtype, &spec.name)?);
        }
        let named: Vec<(&str, &dlc_runtime::Tensor)> =
            specs.iter().zip(&tensors).map(|(s, t)| (s.name.as_str(), t)).collect();
        let outs = model.run(&named).with_context(|| format!("running calibration sample {}", sample[0].display()))?;
        let f32s = |i: usize| outs[i].to_f32().context("calibration outputs must be f32");
        for l in &mut layers {
            let x = f32s(l.x)?;
            l.stats.observe(&x, a.percentile);
            if k < CHECK_SAMPLES {
                let r = l.r.map(f32s).transpose()?;
                l.kept.push((x, r, f32s(l.y)?));
            }
        }
    }

    obs.stage("quantizing");
    let mut report = Vec::new();
    let (mut int8, mut kept_f32) = (0, Vec::new());
    for l in &layers {
        let (lo, hi) = l.stats.range(method);
        let act = ActQuant::from_range(lo, hi, quantize::ACT_MAX);
        let q = quantize::prepare(g, l.id, Some(act))?;
        // The median over the checked samples: a typical sample's error (one sample with
        // an outlier that the range clips does not decide alone).
        let mut errors: Vec<f64> =
            l.kept.iter().map(|(x, r, y)| quantize::layer_error(&q, &l.xdims, x, r.as_deref(), y)).collect();
        errors.sort_by(f64::total_cmp);
        let error = errors.get(errors.len() / 2).copied().unwrap_or(0.0);
        let ok = error <= a.quantize_threshold;
        tracing::info!(
            layer = l.name,
            lo,
            hi,
            scale = act.scale,
            zero_point = act.zero_point,
            error,
            int8 = ok,
            "quantization"
        );
        if ok {
            quantize::apply(g, l.id, &q)?;
            int8 += 1;
        } else {
            kept_f32.push(l.name.clone());
        }
        report.push(serde_json::json!({
            "layer": l.name, "range": [lo, hi], "scale": act.scale, "zero_point": act.zero_point,
            "error": error, "int8": ok,
        }));
    }
    dlc_passes::Dce.run(g, &mut Default::default())?;
    dlc_ir::verify(g)?;
    Ok(serde_json::json!({
        "scheme": "int8",
        "calibration": format!("{:?}", a.calibration).to_lowercase(),
        "percentile": (a.calibration == Calibration::Percentile).then_some(a.percentile),
        "samples": files.len(),
        "threshold": a.quantize_threshold,
        "weight_max": quantize::WEIGHT_MAX,
        "activation_max": quantize::ACT_MAX,
        "int8_layers": int8,
        "f32_layers": kept_f32,
        "layers": report,
    }))
}

/// `--quantize int8-dynamic`: every candidate matrix product, no calibration and no
/// per-layer check (there is no data to check on).
fn dynamic(g: &mut Graph, a: &QuantizeArgs) -> Result<serde_json::Value> {
    if a.calibrate.is_some() {
        bail!("--quantize int8-dynamic takes its ranges at run time; --calibrate is for --quantize int8");
    }
    let mut layers = Vec::new();
    for id in quantize::candidates(g, !a.quantize_last)? {
        if matches!(g.node(id).op, dlc_ir::Op::MatMul(_)) {
            layers.push(g.node(id).name.clone());
            let q = quantize::prepare(g, id, None)?;
            quantize::apply(g, id, &q)?;
        }
    }
    dlc_passes::Dce.run(g, &mut Default::default())?;
    dlc_ir::verify(g)?;
    Ok(serde_json::json!({
        "scheme": "int8-dynamic",
        "weight_max": quantize::WEIGHT_MAX,
        "activation_max": quantize::ACT_MAX,
        "int8_layers": layers.len(),
        "f32_layers": Vec::<String>::new(),
        "layers": layers.iter().map(|l| serde_json::json!({"layer": l, "int8": true, "dynamic": true})).collect::<Vec<_>>(),
    }))
}
