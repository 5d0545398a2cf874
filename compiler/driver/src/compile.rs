//! `dlc compile`: model in, artifact directory out.
//!
//! [`compile`] is the whole pipeline as a library function (import, passes,
//! quantization, memory plan, code generation, linking, manifest and report); the CLI's
//! [`main`] turns flags into [`Options`], calls it with an [`Observer`] that drives the
//! progress spinner, and prints the summary. Python and build.rs integrations call
//! [`compile`] the same way.
use crate::link;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use dlc_artifact::{files, ConstraintSpec, DimSpec, Manifest, SymbolSpec, TensorSpec, ABI_VERSION, FORMAT_VERSION};
use dlc_codegen_llvm::{EmitOptions, TargetSpec};
use dlc_ir::{Dim, Graph, Op, TensorType};
use dlc_passes::PassCx;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `--emit` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// Shared library `model.so` (what `dlc run` and dlc-runtime load).
    So,
    /// Static library `model.a`.
    A,
    /// C header `model.h`.
    H,
    /// dlc IR after the pass pipeline, `model.dlcir`.
    Ir,
    /// The kernel IR program, `model.kir`, and its constants, `model.kir.weights`
    /// (docs/kir.md).
    Kir,
    /// Optimised LLVM IR, `model.ll`.
    Ll,
    /// Target assembly, `model.s`.
    Asm,
    /// CUDA: the kernels as PTX, `model.ptx` (with launch.json, model.weights and the
    /// simulation library model.sim.so: the default and only artifact for CUDA).
    Ptx,
}

/// Backends `--backend` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// LLVM (inkwell): the production CPU path.
    Llvm,
    /// Cranelift: fast debug builds (not implemented yet).
    Cranelift,
    /// MLIR (melior): second lowering for differential tests (not implemented yet).
    Mlir,
}

/// Compile a model into a native artifact directory.
///
/// Writes OUTDIR/model.so, model.a and model.h (by default), model.manifest with its JSON
/// mirror manifest.json, and report.json (parameters, weight bytes, FLOPs, arena bytes).
/// Example: dlc compile mlp.onnx -o out/mlp
#[derive(Args)]
pub struct CompileArgs {
    /// The model: an .onnx file, a .dlc file (docs/dsl.md), or a kernel IR program
    /// .kir (docs/kir.md; what --emit kir writes) compiled as it is.
    pub model: PathBuf,
    /// Output directory (created if missing).
    #[arg(short, long, value_name = "OUTDIR")]
    pub output: PathBuf,
    /// LLVM target triple [default: the host's]; nvptx64-nvidia-cuda for NVIDIA GPUs
    /// (docs/cuda.md).
    #[arg(long, value_name = "TRIPLE")]
    pub target: Option<String>,
    /// Target CPU (e.g. znver4, x86-64-v3, native) [default: the host CPU for the host
    /// triple, generic otherwise]; for CUDA the GPU architecture, sm_80 (default) or sm_90.
    #[arg(long, value_name = "NAME")]
    pub cpu: Option<String>,
    /// Code generator.
    #[arg(long, value_enum, default_value = "llvm")]
    pub backend: Backend,
    /// Comma-separated outputs to write [default: so,a,h; a,h for a non-host target].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub emit: Vec<Emit>,
    /// Pins an input's shape, e.g. input=1x3x224x224 (every symbolic dim of it).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Pins one run-time dim wherever the inputs use it, e.g. x_2=48 (the names are
    /// those `dlc inspect` lists); the other run-time dims stay run-time.
    #[arg(long = "dim", value_name = "SYMBOL=N")]
    pub dims: Vec<String>,
    /// The length of a sequence input, e.g. frames=3: dlc compiles a sequence of a fixed
    /// length, whose elements are inputs of their own, frames[0], frames[1], ...
    /// (docs/sequences.md); required for each sequence input.
    #[arg(long = "sequence-length", value_name = "NAME=N")]
    pub sequence_lengths: Vec<String>,
    /// Compiles an input of optional type as absent (an empty optional), e.g. --absent
    /// past: the artifact does not take it, and the graph's OptionalHasElement on it is
    /// false. Without it, an optional input is a tensor every run gives. Repeatable.
    #[arg(long = "absent", value_name = "NAME")]
    pub absent: Vec<String>,
    /// Prefix of the exported C symbols is dlc_<NAME>_ [default: from the model file name].
    #[arg(long)]
    pub name: Option<String>,
    /// Skip dlc's graph optimisations (LLVM still optimises the kernels).
    #[arg(long)]
    pub no_opt: bool,
    /// The optimiser's cost model as GFLOPS,GBPS,LAUNCH_US (peak FLOP rate, memory
    /// bandwidth, per-kernel cost) [default: the target's numbers, docs/optimizer.md].
    #[arg(long, value_name = "GFLOPS,GBPS,LAUNCH_US")]
    pub roofline: Option<String>,
    /// Print the IR after this pass (`import` for the imported graph); repeatable.
    #[arg(long, value_name = "PASS")]
    pub dump_after: Vec<String>,
    /// Print a summary of report.json.
    #[arg(long)]
    pub report: bool,
    /// Threads LLVM compiles the kernels on [default: the machine's cores]; the
    /// artifact is the same whatever the number.
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    #[command(flatten)]
    pub quant: crate::quantize::QuantizeArgs,
}

/// The library form of `dlc compile`'s flags ([`CompileArgs`] documents each).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Target triple (`None`: the host).
    pub target: Option<String>,
    /// Target CPU or GPU architecture (`None`: the host CPU, or sm_80 for CUDA).
    pub cpu: Option<String>,
    /// What to write (empty: so,a,h for the host, a,h for another CPU, ptx for CUDA).
    pub emit: Vec<Emit>,
    /// Input shapes pinned by name.
    pub input_shapes: HashMap<String, Vec<u64>>,
    /// Run-time dims pinned by symbol name.
    pub dims: HashMap<String, u64>,
    /// The length of each sequence input, by name.
    pub sequence_lengths: HashMap<String, usize>,
    /// Inputs of optional type compiled as absent.
    pub absent: std::collections::BTreeSet<String>,
    /// The symbol prefix's model name (`None`: the model file's stem).
    pub name: Option<String>,
    /// Skip the graph optimisations.
    pub no_opt: bool,
    /// The optimiser's cost model as `GFLOPS,GBPS,LAUNCH_US`.
    pub roofline: Option<String>,
    /// Passes after which the IR goes to [`Observer::dump`].
    pub dump_after: Vec<String>,
    /// Quantization (none by default).
    pub quant: crate::quantize::QuantizeArgs,
    /// Threads to compile on (0: the machine's cores).
    pub jobs: usize,
}

/// What [`compile`] wrote and measured.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The artifact directory.
    pub dir: PathBuf,
    /// Its manifest (as written to `model.manifest`).
    pub manifest: Manifest,
    /// The contents of `report.json`.
    pub report: serde_json::Value,
    /// Kernels (CPU) or launches (CUDA).
    pub kernels: usize,
    /// Parameters, weight bytes and FLOPs of the compiled graph.
    pub stats: dlc_passes::GraphStats,
    /// The optimiser's report (`None` with `no_opt`).
    pub optimizer: Option<dlc_passes::OptReport>,
    /// The quantization section of the report, when quantized.
    pub quantization: Option<serde_json::Value>,
    /// Seconds for the whole compile and for code generation.
    pub seconds: (f64, f64),
}

/// Hears what a compile is doing; every method does nothing by default.
pub trait Observer {
    /// The pipeline entered a stage ("optimising", "calibrating: sample 2 of 8").
    fn stage(&self, _what: &str) {}
    /// The IR after a pass named in [`Options::dump_after`].
    fn dump(&self, _pass: &str, _ir: &str) {}
    /// Something the user should know that is not an error.
    fn note(&self, _what: &str) {}
}

/// An [`Observer`] that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// `dlc compile`'s observer: the spinner, dumps on stdout, notes on stderr.
struct Cli(indicatif::ProgressBar);
impl Observer for Cli {
    fn stage(&self, what: &str) {
        self.0.set_message(what.to_string());
    }
    fn dump(&self, pass: &str, ir: &str) {
        self.0.suspend(|| println!("// IR after {pass}\n{ir}"));
    }
    fn note(&self, what: &str) {
        self.0.suspend(|| eprintln!("{what}"));
    }
}

/// The largest extent `--input-shape` and `--dim` accept: sizes and offsets are computed
/// in 64-bit integers, and the code of larger dims could make them wrap.
pub const MAX_PINNED_DIM: u64 = i32::MAX as u64;

/// `--dim SYMBOL=N` flags.
pub(crate) fn parse_dims(specs: &[String]) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for s in specs {
        let Some((name, n)) = s.rsplit_once('=') else { bail!("--dim '{s}' must be SYMBOL=N, e.g. x_2=48") };
        let n: u64 = n
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow::anyhow!("--dim '{s}': the value must be a positive integer"))?;
        if n > MAX_PINNED_DIM {
            bail!("--dim '{s}': {n} is larger than dlc allows ({MAX_PINNED_DIM})");
        }
        if out.insert(name.trim().to_string(), n).is_some() {
            bail!("--dim given twice for '{name}'");
        }
    }
    Ok(out)
}

/// `--absent NAME` flags (each name once).
pub(crate) fn parse_absent(names: &[String]) -> Result<std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeSet::new();
    for n in names {
        if n.is_empty() {
            bail!("--absent needs an input name");
        }
        if !out.insert(n.clone()) {
            bail!("--absent given twice for '{n}'");
        }
    }
    Ok(out)
}

/// `--sequence-length NAME=N` flags.
pub(crate) fn parse_sequence_lengths(specs: &[String]) -> Result<HashMap<String, usize>> {
    let mut out = HashMap::new();
    for s in specs {
        let Some((name, n)) = s.rsplit_once('=') else {
            bail!("--sequence-length '{s}' must be NAME=N, e.g. frames=3")
        };
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--sequence-length '{s}': the length must be an integer, 0 or more"))?;
        if out.insert(name.trim().to_string(), n).is_some() {
            bail!("--sequence-length given twice for '{name}'");
        }
    }
    Ok(out)
}

pub(crate) fn parse_input_shapes(specs: &[String]) -> Result<HashMap<String, Vec<u64>>> {
    let mut out = HashMap::new();
    for s in specs {
        let Some((name, dims)) = s.rsplit_once('=') else {
            bail!("--input-shape '{s}' must be NAME=DIMS, e.g. input=1x3x224x224");
        };
        let dims: Vec<u64> = dims
            .split('x')
            .map(|d| d.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("--input-shape '{s}': dims must be positive integers joined by 'x'"))?;
        if let Some(d) = dims.iter().find(|&&d| d > MAX_PINNED_DIM) {
            bail!("--input-shape '{s}': dim {d} is larger than dlc allows ({MAX_PINNED_DIM})");
        }
        if out.insert(name.to_string(), dims).is_some() {
            bail!("--input-shape given twice for input '{name}'");
        }
    }
    Ok(out)
}

/// `dlc_<name>_` with the name made a C identifier.
fn symbol_prefix(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if s.is_empty() {
        s = "model".into();
    }
    format!("dlc_{s}_")
}

fn spec(name: &str, t: &TensorType) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        dtype: t.dtype.name().to_string(),
        shape: t
            .shape
            .0
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => DimSpec { fixed: Some(*n), symbol: None },
                Dim::Sym(s) => DimSpec { fixed: None, symbol: Some(s.to_string()) },
            })
            .collect(),
        max_bytes: String::new(),
        encoding: String::new(),
    }
}

/// Marks the string tensors' tables and bytes among `list` (docs/strings.md).
fn mark_strings(g: &Graph, list: &mut [TensorSpec]) {
    for i in 0..list.len() {
        if g.strings.contains(&list[i].name)
            && list.get(i + 1).is_some_and(|b| b.name == dlc_ir::string_bytes_name(&list[i].name))
        {
            list[i].encoding = dlc_artifact::STRING_TABLE.into();
            list[i + 1].encoding = dlc_artifact::STRING_BYTES.into();
        }
    }
}

/// The manifest of an artifact compiled from `g`.
pub(crate) fn manifest(
    g: &Graph,
    target: &TargetSpec,
    prefix: &str,
    weights: Sha256,
    stats: &dlc_passes::GraphStats,
    plan: &dlc_passes::MemoryPlan,
    files: Vec<String>,
) -> Manifest {
    let mut inputs: Vec<TensorSpec> =
        g.inputs().iter().map(|&id| spec(&g.node(id).name, &g.node(id).outputs[0])).collect();
    let mut outputs: Vec<TensorSpec> = g.outputs().iter().map(|(n, v)| spec(n, g.value_type(*v))).collect();
    mark_strings(g, &mut inputs);
    mark_strings(g, &mut outputs);
    let io = (inputs, outputs);
    let arena = (plan.arena_bytes, plan.arena_expr());
    let mins = dlc_ir::implied::symbol_minimums(g).into_iter().map(|(s, (m, _))| (s, m)).collect();
    let mut m = manifest_of(&g.name, io, target, prefix, weights, stats.weight_bytes, arena, &mins, files);
    m.sequences = g
        .sequences
        .iter()
        .map(|s| dlc_artifact::SequenceSpec {
            name: s.name.clone(),
            output: s.output,
            elements: match s.padded {
                true => Vec::new(),
                false => (0..s.len).map(|i| dlc_ir::sequence_element_name(&s.name, i)).collect(),
            },
            data: if s.padded { s.name.clone() } else { String::new() },
            shapes: if s.padded { dlc_ir::sequence_shapes_name(&s.name) } else { String::new() },
        })
        .collect();
    m.absent_inputs = g.absent_inputs.clone();
    m.optional_outputs = g.optional_outputs.clone();
    m.constraints = dlc_ir::implied::constraints(g)
        .unwrap_or_default()
        .into_iter()
        .map(|c| ConstraintSpec { lhs: c.lhs.to_string(), rhs: c.rhs.to_string(), node: c.node })
        .collect();
    let data = dlc_ir::bind::data_symbols(g);
    let family = match dlc_codegen_llvm::is_cuda(&target.triple) {
        true => dlc_lower::program::Family::Cuda,
        false => dlc_lower::program::Family::Cpu,
    };
    let binds = dlc_lower::program::bind_sites(g, plan, family);
    if !binds.is_empty() {
        m.binds = binds.clone();
        m.bind_reasons = dlc_ir::bind::REASONS.iter().map(|r| r.describe()).collect();
    }
    if !data.is_empty() {
        let bounds = dlc_ir::bind::value_bounds(g).unwrap_or_default();
        let max_bytes = g
            .outputs()
            .iter()
            .map(|(_, v)| bounds.get(v).map(|n| &dlc_ir::Expr::c(g.value_type(*v).dtype.size() as i64) * n))
            .collect();
        let computed = dlc_ir::bind::computed_symbols(g);
        add_data_symbols(&mut m, data, &computed, binds, &plan.arena_expr(), max_bytes);
    }
    m
}

/// The labels of program `p`'s `bind` steps in the order the code numbers their sites
/// (the schedule's, nested steps included: `if` then-steps before else-steps).
fn bind_labels(p: &dlc_kir::Program) -> Vec<String> {
    let mut out = Vec::new();
    p.visit_steps(&mut |s| {
        if let dlc_kir::Step::Bind { label, kernel, .. } = s {
            out.push(label.clone().unwrap_or_else(|| p.kernels[*kernel as usize].name.clone()));
        }
    });
    out
}

/// Adds the data symbols (dims a model computes from tensor values while it runs) to
/// manifest `m`: after the input dims in the `dims` array, with the bind sites' names
/// in schedule order, the messages of their failure codes, and each output's
/// allocation bound (`max_bytes`, for outputs whose shapes mention them).
fn add_data_symbols(
    m: &mut Manifest,
    data: Vec<String>,
    computed: &[String],
    binds: Vec<String>,
    arena: &dlc_ir::Expr,
    max_bytes: Vec<Option<dlc_ir::Expr>>,
) {
    if m.arena_expr.is_empty() {
        m.arena_expr = arena.to_string();
    }
    m.symbols.extend(data.into_iter().map(|name| {
        let computed = computed.contains(&name);
        SymbolSpec { name, min: 0, data: true, computed }
    }));
    m.binds = binds;
    m.bind_reasons = dlc_ir::bind::REASONS.iter().map(|r| r.describe()).collect();
    for (spec, max) in m.outputs.iter_mut().zip(max_bytes) {
        if let Some(n) = max {
            spec.max_bytes = n.to_string();
        }
    }
}

/// The manifest of an artifact of model `name` with the caller's tensors `io`.
#[allow(clippy::too_many_arguments)]
fn manifest_of(
    name: &str,
    (inputs, outputs): (Vec<TensorSpec>, Vec<TensorSpec>),
    target: &TargetSpec,
    prefix: &str,
    weights: Sha256,
    weight_bytes: u64,
    (arena_bytes, arena): (u64, dlc_ir::Expr),
    mins: &std::collections::BTreeMap<String, u64>,
    files: Vec<String>,
) -> Manifest {
    // The run-time dims, in order of first appearance in the inputs (as dlc-lower orders
    // the `dims` array).
    let mut symbols = Vec::new();
    for s in &inputs {
        for d in &s.shape {
            if let Some(e) = d.symbol.as_deref().and_then(|t| dlc_sym::parse(t).ok()) {
                e.symbols(&mut symbols);
            }
        }
    }
    let symbols: Vec<SymbolSpec> = symbols
        .into_iter()
        .map(|name| {
            let min = mins.get(&name).copied().unwrap_or(0);
            SymbolSpec { name, min, data: false, computed: false }
        })
        .collect();
    let arena_expr = if symbols.is_empty() { String::new() } else { arena.to_string() };
    Manifest {
        format_version: FORMAT_VERSION,
        abi_version: ABI_VERSION,
        compiler_version: format!("dlc {}", env!("CARGO_PKG_VERSION")),
        model_name: name.to_string(),
        symbol_prefix: prefix.to_string(),
        target_triple: target.triple.clone(),
        cpu: target.cpu.clone(),
        cpu_features: target.features.clone(),
        inputs,
        outputs,
        weights_sha256: weights.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        weight_bytes,
        arena_bytes,
        files,
        symbols,
        arena_expr,
        binds: Vec::new(),
        bind_reasons: Vec::new(),
        constraints: Vec::new(),
        library_sha256: String::new(),
        sequences: Vec::new(),
        absent_inputs: Vec::new(),
        optional_outputs: Vec::new(),
    }
}

/// Loads a model through the frontend its extension names. Run-time dims that the
/// graph ties to fixed extents (`dlc_ir::implied`) become those extents.
pub fn load_model(path: &Path, input_shapes: HashMap<String, Vec<u64>>) -> Result<Graph> {
    load_model_pinned(path, dlc_onnx::ImportOptions { input_shapes, ..Default::default() })
}

/// [`load_model`] with input shapes (`--input-shape`) and run-time dims pinned by
/// symbol name (`--dim`), the lengths of sequence inputs (`--sequence-length`) and the
/// optional inputs compiled absent (`--absent`).
pub fn load_model_pinned(path: &Path, pins: dlc_onnx::ImportOptions) -> Result<Graph> {
    let mut g = match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => dlc_onnx::import(path, &pins)?,
        Some("dlc") => {
            let dlc_onnx::ImportOptions { input_shapes, dims, sequence_lengths, absent, .. } = pins;
            if let Some(name) = sequence_lengths.keys().next() {
                bail!("'{}': --sequence-length {name}: the DSL has no sequence inputs", path.display());
            }
            if let Some(name) = absent.first() {
                bail!("'{}': --absent {name}: the DSL has no optional inputs", path.display());
            }
            let mut g = dlc_dsl::import_with(path, &input_shapes)?;
            let known = dlc_lower::program::symbols(&g);
            if let Some(unknown) = dims.keys().find(|k| !known.contains(k)) {
                bail!(
                    "'{}': --dim {unknown}: the inputs have no run-time dim of that name; theirs are {known:?}",
                    path.display()
                );
            }
            dlc_ir::implied::fix_symbols(&mut g, &dims.into_iter().collect());
            g
        }
        _ => bail!("'{}': unknown model format; dlc reads .onnx and .dlc files", path.display()),
    };
    // Each round fixes at least one symbol, so this ends.
    loop {
        let tied = dlc_ir::implied::implied_extents(&g).with_context(|| format!("'{}'", path.display()))?;
        if tied.is_empty() {
            break;
        }
        for (sym, (n, node)) in &tied {
            tracing::warn!(
                "'{}': run-time dim {sym} is {n}: node '{node}' combines it with a fixed extent {n}",
                path.display()
            );
        }
        let values = tied.into_iter().map(|(s, (n, _))| (s, n)).collect();
        dlc_ir::implied::fix_symbols(&mut g, &values);
    }
    dlc_ir::verify(&g).with_context(|| format!("'{}' after fixing the run-time dims it ties", path.display()))?;
    Ok(g)
}

/// The target `opts` names (the host by default; sm_80 for CUDA without `--cpu`), and
/// whether it is CUDA.
/// What the code generator writes for `--emit` `emit`, the library embedding the
/// signature of `manifest`.
fn emit_options(emit: &[Emit], manifest: &Manifest, jobs: usize) -> EmitOptions {
    EmitOptions {
        llvm_ir: emit.contains(&Emit::Ll),
        asm: emit.contains(&Emit::Asm),
        no_llvm_opt: false,
        jobs,
        signature: manifest.signature(),
    }
}

/// Records `model.so`'s hash in the manifest, when the compile wrote one.
fn library_hash(m: &mut Manifest, out: &Path, written: &[String]) -> Result<()> {
    if written.iter().any(|f| f == files::SHARED_LIB) {
        let p = out.join(files::SHARED_LIB);
        let bytes = std::fs::read(&p).with_context(|| format!("reading '{}'", p.display()))?;
        m.library_sha256 = dlc_artifact::sha256_hex(&bytes);
    }
    Ok(())
}

/// Every file name a compile may write into its output directory.
const ARTIFACT_FILES: &[&str] = &[
    files::MANIFEST,
    files::MANIFEST_JSON,
    files::SHARED_LIB,
    files::STATIC_LIB,
    files::HEADER,
    files::REPORT,
    files::PTX,
    files::LAUNCH,
    files::WEIGHTS,
    files::SIM_LIB,
    "model.kir",
    KIR_WEIGHTS,
    "model.dlcir",
    "model.ll",
    "model.s",
];

/// Creates the output directory, or empties it of a previous artifact's files: a compile
/// replaces an artifact whole (a stale `model.so` beside a new manifest would fail to
/// load, or worse). Other files in the directory are left alone, and so are the model's
/// own files when it is compiled from there (`dlc compile out/model.kir -o out`).
fn fresh_out_dir(out: &Path, model: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating '{}'", out.display()))?;
    let canon = |p: &Path| p.canonicalize().ok();
    let model_dir = model.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
    let in_place = model_dir.and_then(canon).is_some_and(|d| Some(d) == canon(out));
    for f in ARTIFACT_FILES {
        let p = out.join(f);
        let own = in_place
            && (*f == "model.kir" || *f == KIR_WEIGHTS || Some(*f) == model.file_name().and_then(|n| n.to_str()));
        if !own && p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p).with_context(|| format!("removing the old '{}'", p.display()))?;
        }
    }
    Ok(())
}

/// A `--cpu` LLVM does not know is an error here (LLVM would only warn, then abort).
fn target_of(opts: &Options) -> Result<(TargetSpec, bool)> {
    let mut target = TargetSpec::new(opts.target.as_deref(), opts.cpu.as_deref());
    let cuda = dlc_codegen_llvm::is_cuda(&target.triple);
    if cuda && opts.cpu.is_none() {
        target.cpu = dlc_codegen_llvm::gpu::DEFAULT_SM.into();
    }
    if let Some(cpu) = &opts.cpu {
        dlc_codegen_llvm::cpus::check(&target.triple, cpu).map_err(anyhow::Error::msg)?;
    }
    Ok((target, cuda))
}

/// What a compile writes when `--emit` names nothing: the PTX artifact for CUDA, the
/// libraries and header for the host, the static library and header for another CPU.
fn default_emit(target: &TargetSpec, cuda: bool) -> Vec<Emit> {
    if cuda {
        vec![Emit::Ptx]
    } else if target.is_host() {
        vec![Emit::So, Emit::A, Emit::H]
    } else {
        vec![Emit::A, Emit::H]
    }
}

/// Compiles the model at `model` (.onnx or .dlc, or a kir program `.kir`) into the
/// artifact directory `out`.
pub fn compile(model: &Path, out: &Path, opts: &Options, obs: &dyn Observer) -> Result<Artifact> {
    if model.extension().and_then(|e| e.to_str()) == Some("kir") {
        return compile_kir(model, out, opts, obs);
    }
    let t_start = Instant::now();
    let (target, cuda) = target_of(opts)?;
    obs.stage(&format!("importing {}", model.display()));
    let pins = dlc_onnx::ImportOptions {
        input_shapes: opts.input_shapes.clone(),
        dims: opts.dims.clone(),
        sequence_lengths: opts.sequence_lengths.clone(),
        absent: opts.absent.clone(),
        onnx_ops_only: false,
    };
    let mut g = load_model_pinned(model, pins)?;
    if cuda {
        // CUDA schedules have no control flow yet: an if runs both branches there.
        let n = dlc_passes::speculate_ifs(&mut g).with_context(|| format!("'{}'", model.display()))?;
        if n > 0 {
            tracing::info!("'{}': {n} if(s) on run-time conditions compute both branches on CUDA", model.display());
        }
    }

    let roof = match &opts.roofline {
        Some(s) => dlc_passes::Roofline::parse(s).map_err(anyhow::Error::msg)?,
        None => dlc_passes::Roofline::for_target(&target.triple),
    };
    let mut cx = PassCx { dump_after: opts.dump_after.clone(), ..Default::default() };
    let passes = if opts.no_opt {
        dlc_passes::legalize_pipeline()
    } else {
        dlc_passes::optimizing_pipeline(dlc_passes::EGraphOpt { roof, ..Default::default() })
    };
    obs.stage("optimising");
    dlc_passes::run_pipeline(&mut g, &passes, &mut cx)?;
    for (pass, text) in &cx.dumps {
        obs.dump(pass, text);
    }
    // String tensors: CPU targets only so far (their byte counts are run-time dims).
    if let Some(name) = g.strings.iter().next().filter(|_| cuda || opts.quant.quantize.is_some()) {
        bail!(
            "'{}': '{name}' is a string tensor, which {} does not support yet (string tensors compile for CPU \
             targets; docs/strings.md)",
            model.display(),
            if cuda { "a CUDA target" } else { "int8 quantization" },
        );
    }
    // Run-time dims are compiled for CPU targets without int8 quantization so far.
    for &id in g.inputs() {
        let n = g.node(id);
        if !n.outputs[0].shape.is_fixed() && (cuda || opts.quant.quantize.is_some()) {
            let example: Vec<String> =
                n.outputs[0].shape.0.iter().map(|d| d.fixed().unwrap_or(1).to_string()).collect();
            bail!(
                "'{}': input '{}' has symbolic shape {}, which {} does not support yet; pin it with --input-shape \
                 {}={}",
                model.display(),
                n.name,
                n.outputs[0],
                if cuda { "a CUDA target" } else { "int8 quantization" },
                n.name,
                example.join("x")
            );
        }
    }

    if opts.quant.quantize.is_none() && opts.quant.calibrate.is_some() {
        bail!("--calibrate is only used with --quantize int8");
    }
    let quantization = match opts.quant.quantize {
        Some(_) => Some(crate::quantize::run(&mut g, &opts.quant, obs)?),
        None => None,
    };

    let mut emit = opts.emit.clone();
    if emit.is_empty() {
        emit = default_emit(&target, cuda);
    }
    if cuda {
        if let Some(e) = emit.iter().find(|e| matches!(e, Emit::So | Emit::A | Emit::H | Emit::Asm)) {
            bail!(
                "--emit {} is for CPU targets; a CUDA artifact is model.ptx, launch.json, model.weights and \
                 model.sim.so (--emit ptx, with ir and ll if wanted)",
                format!("{e:?}").to_lowercase()
            );
        }
        if !emit.contains(&Emit::Ptx) {
            emit.push(Emit::Ptx);
        }
    } else if emit.contains(&Emit::Ptx) {
        bail!("--emit ptx needs --target nvptx64-nvidia-cuda");
    }
    if emit.contains(&Emit::So) && !target.is_host() {
        bail!("--emit so for target {} needs a cross linker; use --emit a,h and link on the target", target.triple);
    }
    let name = opts.name.clone().unwrap_or_else(|| {
        model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    });
    let prefix = symbol_prefix(&name);

    obs.stage("planning memory");
    let plan = dlc_passes::plan_memory(&g)?;
    // The manifest first: the library embeds its signature.
    let stats = dlc_passes::graph_stats(&g);
    let mut hasher = Sha256::new();
    for &id in &plan.order {
        if let Op::Const(c) = &g.node(id).op {
            hasher.update(c.value.ty().to_string().as_bytes());
            hasher.update(c.value.bytes());
        }
    }
    let manifest = manifest(&g, &target, &prefix, hasher, &stats, &plan, Vec::new());
    obs.stage(&format!("generating code for {} ({})", target.triple, target.cpu));
    let t_cg = Instant::now();

    fresh_out_dir(out, model)?;
    let write = |file: &str, bytes: &[u8]| -> Result<()> {
        let p = out.join(file);
        std::fs::write(&p, bytes).with_context(|| format!("writing '{}'", p.display()))
    };
    let mut written = Vec::new();
    // A CPU target's kir program, lowered once for --emit kir and the code generator.
    let cpu_program = match cuda {
        false => Some(
            dlc_codegen_llvm::lower(&g, &plan, &target).with_context(|| format!("compiling '{}'", model.display()))?,
        ),
        true => None,
    };
    if emit.contains(&Emit::Kir) {
        let cuda_program;
        let p = match &cpu_program {
            Some(p) => p,
            None => {
                cuda_program =
                    dlc_lower::program::program(&g, &plan, &target.lowering(), dlc_lower::program::Family::Cuda)
                        .map_err(|e| anyhow::anyhow!("--emit kir: {e}"))?;
                &cuda_program
            }
        };
        // Constants of a kilobyte and more go to the sidecar file the text names.
        let (text, weights) = dlc_kir::print::program_split(p, KIR_WEIGHTS, 1024);
        write("model.kir", text.as_bytes())?;
        written.push("model.kir".into());
        if !weights.is_empty() {
            write(KIR_WEIGHTS, &weights)?;
            written.push(KIR_WEIGHTS.into());
        }
    }
    // The dlc IR and LLVM IR, when asked for.
    let write_ir = |written: &mut Vec<String>, ll: Option<&str>| -> Result<()> {
        if emit.contains(&Emit::Ir) {
            write("model.dlcir", dlc_ir::print_graph(&g)?.as_bytes())?;
            written.push("model.dlcir".into());
        }
        if let Some(ll) = ll {
            write("model.ll", ll.as_bytes())?;
            written.push("model.ll".into());
        }
        Ok(())
    };
    let kernels;
    let codegen_secs;
    if cuda {
        let compiled = dlc_codegen_llvm::compile_cuda(&g, &plan, &target, &prefix, emit.contains(&Emit::Ll))
            .with_context(|| format!("compiling '{}'", model.display()))?;
        codegen_secs = t_cg.elapsed().as_secs_f64();
        obs.stage("writing artifact");
        kernels = compiled.table.launches.len();
        write_cuda(&compiled, out, obs, &mut written)?;
        write_ir(&mut written, compiled.llvm_ir.as_deref())?;
    } else if let Some(p) = cpu_program.as_ref().filter(|_| !needs_code(&emit)) {
        // Only the kir program, IR or header: no machine code to generate.
        codegen_secs = t_cg.elapsed().as_secs_f64();
        kernels = dlc_codegen_llvm::kernels_run(p);
        write_ir(&mut written, None)?;
    } else {
        let p = cpu_program.as_ref().ok_or_else(|| anyhow::anyhow!("internal: no program for a CPU target"))?;
        let compiled =
            dlc_codegen_llvm::compile_program(p, &target, &prefix, &emit_options(&emit, &manifest, opts.jobs))
                .with_context(|| format!("compiling '{}'", model.display()))?;
        codegen_secs = t_cg.elapsed().as_secs_f64();
        kernels = compiled.kernels;
        obs.stage("writing artifact");
        write_libraries(&compiled, &emit, out, &prefix, &mut written)?;
        write_ir(&mut written, compiled.llvm_ir.as_deref())?;
        if let Some(s) = &compiled.asm {
            write("model.s", s.as_bytes())?;
            written.push("model.s".into());
        }
    }
    let mut manifest = Manifest { files: written.clone(), ..manifest };
    library_hash(&mut manifest, out, &written)?;
    if emit.contains(&Emit::H) {
        write(files::HEADER, header(&manifest, model).as_bytes())?;
        written.push(files::HEADER.into());
    }
    let manifest = Manifest { files: written, ..manifest };
    manifest.write_dir(out)?;

    let report = serde_json::json!({
        "model": model.display().to_string(),
        "target": target.triple,
        "cpu": target.cpu,
        "kernels": kernels,
        "flops": stats.flops,
        "parameters": stats.parameters,
        "weight_bytes": stats.weight_bytes,
        "arena_bytes": plan.arena_bytes,
        "arena_bytes_without_reuse": plan.unshared_bytes,
        "compile_seconds": t_start.elapsed().as_secs_f64(),
        "codegen_seconds": codegen_secs,
        "optimizer": cx.optimizer.as_ref().map(|o| serde_json::json!({
            "egraph_nodes": o.egraph_nodes,
            "egraph_classes": o.egraph_classes,
            "iterations": o.iterations,
            "stop_reason": o.stop_reason,
            "seconds": o.seconds,
            "rules_fired": o.rules_fired,
            "cost_before": o.cost_before,
            "cost_after": o.cost_after,
        })),
        "quantization": quantization,
        "passes": cx.timings.iter().map(|(p, s, c)| serde_json::json!({
            "name": p, "seconds": s, "changed": *c == dlc_passes::Changed::Yes
        })).collect::<Vec<_>>(),
    });
    write(files::REPORT, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    let compile_seconds = t_start.elapsed().as_secs_f64();
    Ok(Artifact {
        dir: out.to_path_buf(),
        manifest,
        report,
        kernels,
        stats,
        optimizer: cx.optimizer,
        quantization,
        seconds: (compile_seconds, codegen_secs),
    })
}

/// Whether `emit` asks for machine code (a library, LLVM IR or assembly) of a CPU target.
fn needs_code(emit: &[Emit]) -> bool {
    emit.iter().any(|e| matches!(e, Emit::So | Emit::A | Emit::Ll | Emit::Asm))
}

/// Writes a CUDA artifact's files (`model.ptx`, `model.weights`, `launch.json`,
/// `model.sim.so`), noting the launches that run on one GPU thread.
fn write_cuda(
    compiled: &dlc_codegen_llvm::CudaCompiled,
    out: &Path,
    obs: &dyn Observer,
    written: &mut Vec<String>,
) -> Result<()> {
    let serial: Vec<String> =
        compiled.table.launches.iter().filter(|l| l.serial).map(|l| format!("{} ({})", l.node, l.op)).collect();
    if !serial.is_empty() {
        obs.note(&format!(
            "note: {} node(s) have no parallel CUDA kernel yet and run on one GPU thread: {}",
            serial.len(),
            serial.join(", ")
        ));
    }
    let write = |file: &str, bytes: &[u8]| -> Result<()> {
        let p = out.join(file);
        std::fs::write(&p, bytes).with_context(|| format!("writing '{}'", p.display()))
    };
    write(files::PTX, compiled.ptx.as_bytes())?;
    write(files::WEIGHTS, &compiled.weights)?;
    write(files::LAUNCH, (serde_json::to_string_pretty(&compiled.table)? + "\n").as_bytes())?;
    link::shared_library_from(std::slice::from_ref(&compiled.sim_object), &out.join(files::SIM_LIB))?;
    written.extend([files::PTX, files::LAUNCH, files::WEIGHTS, files::SIM_LIB].map(String::from));
    Ok(())
}

/// Links the CPU object into `model.so` and `model.a` where `emit` asks for them.
fn write_libraries(
    compiled: &dlc_codegen_llvm::Compiled,
    emit: &[Emit],
    out: &Path,
    prefix: &str,
    written: &mut Vec<String>,
) -> Result<()> {
    if emit.contains(&Emit::So) {
        link::shared_library_from(&compiled.objects, &out.join(files::SHARED_LIB))?;
        written.push(files::SHARED_LIB.to_string());
    }
    if emit.contains(&Emit::A) {
        let member = format!("{}.o", prefix.trim_end_matches('_'));
        link::static_library(&compiled.objects, &member, &out.join(files::STATIC_LIB))?;
        written.push(files::STATIC_LIB.to_string());
    }
    Ok(())
}

/// The caller's tensor of buffer `b` of a kir program, from its `type`.
fn kir_spec(path: &Path, b: &dlc_kir::Buffer, what: &str) -> Result<(TensorSpec, TensorType)> {
    let Some(text) = &b.ty else {
        bail!(
            "'{}': buffer '{}' ({what}) has no `type \"DTYPE[DIMS]\"`; an artifact's manifest needs the tensor type \
             of every input and output",
            path.display(),
            b.name
        );
    };
    let t = TensorType::parse(text).ok_or_else(|| {
        anyhow::anyhow!("'{}': buffer '{}' has type \"{text}\", not a tensor type", path.display(), b.name)
    })?;
    let want = t.size_bytes().map(|n| n as i64);
    if want.is_some() && b.bytes.as_const() != want {
        bail!(
            "'{}': buffer '{}' is {} bytes, but its type {t} is {} bytes",
            path.display(),
            b.name,
            b.bytes,
            want.unwrap_or(0)
        );
    }
    Ok((spec(&b.name, &t), t))
}

/// `dlc compile model.kir`: a kir program (docs/kir.md) to an artifact, as
/// `clif-util compile` does for Cranelift's text IR: parsed, verified, each kernel
/// translated and `run` generated from the schedule. Graph options (input shapes,
/// quantization, the optimiser) do not apply.
/// The sidecar file of constants `--emit kir` writes next to `model.kir`.
const KIR_WEIGHTS: &str = "model.kir.weights";

/// The file `name` in folder `dir`, where `name` must be a plain file name and the file,
/// symlinks resolved, must lie in `dir` (a kir program names its weights file; it may
/// not point elsewhere).
fn read_beside(dir: &Path, name: &str) -> std::result::Result<Vec<u8>, String> {
    let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
    if !plain {
        return Err("must be a file name in the program's folder".into());
    }
    let path = dir.join(name);
    let real = path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))?;
    let home = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    if real.parent() != Some(home.as_path()) {
        return Err(format!("resolves to '{}', outside the program's folder", real.display()));
    }
    std::fs::read(&real).map_err(|e| format!("{}: {e}", real.display()))
}

fn compile_kir(model: &Path, out: &Path, opts: &Options, obs: &dyn Observer) -> Result<Artifact> {
    let t_start = Instant::now();
    if !opts.input_shapes.is_empty()
        || !opts.dims.is_empty()
        || opts.quant.quantize.is_some()
        || !opts.dump_after.is_empty()
    {
        bail!(
            "'{}': --input-shape, --dim, --quantize and --dump-after apply to models, not to kir programs",
            model.display()
        );
    }
    obs.stage(&format!("reading {}", model.display()));
    let text = std::fs::read_to_string(model).with_context(|| format!("reading '{}'", model.display()))?;
    let dir = model.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let p = dlc_kir::parse::program_with_weights(&text, &mut |name: &str| read_beside(dir, name))
        .map_err(|e| anyhow::anyhow!("{}:{e}", model.display()))?;
    dlc_kir::verify::program(&p).map_err(|e| anyhow::anyhow!("'{}': {e}", model.display()))?;
    let (target, cuda) = target_of(opts)?;
    let mut emit = opts.emit.clone();
    if emit.is_empty() {
        emit = default_emit(&target, cuda);
    }
    let fits = |e: &Emit| match e {
        Emit::Ir | Emit::Kir => false,
        Emit::Ptx => cuda,
        Emit::So | Emit::A | Emit::H | Emit::Asm => !cuda,
        Emit::Ll => true,
    };
    if let Some(e) = emit.iter().find(|e| !fits(e)) {
        let what = if cuda { " compiled for CUDA (ptx and ll do)" } else { " (so, a, h, ll and asm do)" };
        bail!("--emit {} does not apply to a kir program{what}", format!("{e:?}").to_lowercase());
    }
    if emit.contains(&Emit::So) && !target.is_host() {
        bail!("--emit so for target {} needs a cross linker; use --emit a,h and link on the target", target.triple);
    }
    // Inputs and outputs in the caller's order, each once.
    let mut inputs: Vec<Option<(TensorSpec, TensorType)>> = Vec::new();
    let mut outputs: Vec<Option<(TensorSpec, TensorType)>> = Vec::new();
    let mut weight_bytes = 0u64;
    let mut hasher = Sha256::new();
    for b in &p.buffers {
        let (list, i, what) = match &b.kind {
            dlc_kir::BufKind::Input(i) => (&mut inputs, *i as usize, format!("input {i}")),
            dlc_kir::BufKind::Output(i) => (&mut outputs, *i as usize, format!("output {i}")),
            dlc_kir::BufKind::Const(data) => {
                weight_bytes += data.len() as u64;
                hasher.update(data);
                continue;
            }
            dlc_kir::BufKind::Arena(_) => continue,
        };
        if list.len() <= i {
            list.resize(i + 1, None);
        }
        if list[i].is_some() {
            bail!("'{}': two buffers are {what}", model.display());
        }
        list[i] = Some(kir_spec(model, b, &what)?);
    }
    let gather = |list: Vec<Option<(TensorSpec, TensorType)>>, what: &str| -> Result<Vec<TensorSpec>> {
        list.into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.map(|s| s.0).ok_or_else(|| anyhow::anyhow!("'{}': no buffer is {what} {i}", model.display()))
            })
            .collect()
    };
    let (inputs, outputs) = (gather(inputs, "input")?, gather(outputs, "output")?);
    // A symbolic program's arena: its part that does not depend on the dims (at least
    // the constant term), with the whole expression in the manifest.
    let arena_bytes = p.arena_bytes.terms().find(|(a, _)| a.is_empty()).map_or(0, |(_, c)| c.max(0) as u64);
    let name = opts.name.clone().unwrap_or_else(|| p.name.clone());
    let prefix = symbol_prefix(&name);

    obs.stage(&format!("generating code for {} ({})", target.triple, target.cpu));
    let t_cg = Instant::now();
    let write = |file: &str, bytes: &[u8]| -> Result<()> {
        let path = out.join(file);
        std::fs::write(&path, bytes).with_context(|| format!("writing '{}'", path.display()))
    };
    let mut written = Vec::new();
    // The manifest first: the library embeds its signature.
    let manifest = manifest_of(
        &p.name,
        (inputs, outputs),
        &target,
        &prefix,
        hasher,
        weight_bytes,
        (arena_bytes, p.arena_bytes.clone()),
        &p.symbols.iter().map(|s| (s.name.clone(), s.min.max(1) as u64)).collect(),
        Vec::new(),
    );
    let mut manifest = manifest;
    manifest.constraints = p
        .constraints
        .iter()
        .map(|(a, b)| ConstraintSpec { lhs: a.to_string(), rhs: b.to_string(), node: format!("program {}", p.name) })
        .collect();
    let maxima: HashMap<String, dlc_ir::Expr> =
        p.symbols.iter().filter_map(|s| Some((s.name.clone(), s.data.clone()?))).collect();
    if !maxima.is_empty() || p.symbols.iter().any(|s| s.computed) {
        // Outputs sized by data symbols are allocated at the symbols' maxima.
        let mut max_bytes = Vec::new();
        for i in 0..manifest.outputs.len() {
            let b = p.buffers.iter().find(|b| b.kind == dlc_kir::BufKind::Output(i as u32));
            let bytes = b.map_or_else(|| dlc_ir::Expr::c(0), |b| b.bytes.clone());
            let mut syms = Vec::new();
            bytes.symbols(&mut syms);
            if !syms.iter().any(|s| maxima.contains_key(s)) {
                max_bytes.push(None);
                continue;
            }
            let max = dlc_ir::bind::bounded(&bytes, &maxima).ok_or_else(|| {
                anyhow::anyhow!(
                    "'{}': output {i}'s size {bytes} cannot be bounded by its symbols' maxima",
                    model.display()
                )
            })?;
            max_bytes.push(Some(max));
        }
        let data = p.symbols.iter().filter(|s| s.data.is_some() || s.computed).map(|s| s.name.clone()).collect();
        let computed: Vec<String> = p.symbols.iter().filter(|s| s.computed).map(|s| s.name.clone()).collect();
        add_data_symbols(&mut manifest, data, &computed, bind_labels(&p), &p.arena_bytes, max_bytes);
    } else if p.schedule_has_bind() {
        manifest.binds = bind_labels(&p);
        manifest.bind_reasons = dlc_ir::bind::REASONS.iter().map(|r| r.describe()).collect();
    }
    let (kernels, codegen_secs, llvm_ir);
    if cuda {
        let compiled = dlc_codegen_llvm::compile_cuda_program(&p, &target, &prefix, emit.contains(&Emit::Ll))
            .with_context(|| format!("compiling '{}'", model.display()))?;
        codegen_secs = t_cg.elapsed().as_secs_f64();
        kernels = compiled.table.launches.len();
        obs.stage("writing artifact");
        fresh_out_dir(out, model)?;
        write_cuda(&compiled, out, obs, &mut written)?;
        llvm_ir = compiled.llvm_ir;
    } else {
        let compiled =
            dlc_codegen_llvm::compile_program(&p, &target, &prefix, &emit_options(&emit, &manifest, opts.jobs))
                .with_context(|| format!("compiling '{}'", model.display()))?;
        codegen_secs = t_cg.elapsed().as_secs_f64();
        kernels = compiled.kernels;
        obs.stage("writing artifact");
        fresh_out_dir(out, model)?;
        write_libraries(&compiled, &emit, out, &prefix, &mut written)?;
        if let Some(s) = &compiled.asm {
            write("model.s", s.as_bytes())?;
            written.push("model.s".into());
        }
        llvm_ir = compiled.llvm_ir;
    }
    if let Some(ll) = &llvm_ir {
        write("model.ll", ll.as_bytes())?;
        written.push("model.ll".into());
    }
    library_hash(&mut manifest, out, &written)?;
    if emit.contains(&Emit::H) {
        write(files::HEADER, header(&manifest, model).as_bytes())?;
        written.push(files::HEADER.into());
    }
    let manifest = Manifest { files: written, ..manifest };
    manifest.write_dir(out)?;
    let stats = dlc_passes::GraphStats { weight_bytes, ..Default::default() };
    let report = serde_json::json!({
        "model": model.display().to_string(),
        "source": "kir",
        "target": target.triple,
        "cpu": target.cpu,
        "kernels": kernels,
        "weight_bytes": weight_bytes,
        "arena_bytes": arena_bytes,
        "compile_seconds": t_start.elapsed().as_secs_f64(),
        "codegen_seconds": codegen_secs,
    });
    write(files::REPORT, (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    Ok(Artifact {
        dir: out.to_path_buf(),
        manifest,
        report,
        kernels,
        stats,
        optimizer: None,
        quantization: None,
        seconds: (t_start.elapsed().as_secs_f64(), codegen_secs),
    })
}

/// `dlc compile`: flags to [`Options`], [`compile`], then the summary.
pub fn main(a: CompileArgs) -> Result<()> {
    if a.backend != Backend::Llvm {
        bail!("--backend {:?} is not implemented yet; use --backend llvm", a.backend);
    }
    let opts = Options {
        target: a.target.clone(),
        cpu: a.cpu.clone(),
        emit: a.emit.clone(),
        input_shapes: parse_input_shapes(&a.input_shapes)?,
        dims: parse_dims(&a.dims)?,
        sequence_lengths: parse_sequence_lengths(&a.sequence_lengths)?,
        absent: parse_absent(&a.absent)?,
        name: a.name.clone(),
        no_opt: a.no_opt,
        roofline: a.roofline.clone(),
        dump_after: a.dump_after.clone(),
        quant: a.quant.clone(),
        jobs: a.jobs.map_or(0, usize::from),
    };
    let progress = indicatif::ProgressBar::new_spinner();
    progress.enable_steady_tick(std::time::Duration::from_millis(120));
    let art = compile(&a.model, &a.output, &opts, &Cli(progress.clone()))?;
    progress.finish_and_clear();

    eprintln!(
        "compiled {} -> {} ({} kernels, {:.2} s)",
        a.model.display(),
        a.output.display(),
        art.kernels,
        art.seconds.0
    );
    if a.report {
        let (m, stats) = (&art.manifest, &art.stats);
        let unshared = art.report["arena_bytes_without_reuse"].as_u64().unwrap_or(0);
        println!("model        {}", m.model_name);
        println!("target       {} ({})", m.target_triple, m.cpu);
        println!("kernels      {}", art.kernels);
        println!("parameters   {}", stats.parameters);
        println!("weights      {:.2} MiB", stats.weight_bytes as f64 / (1 << 20) as f64);
        println!("flops        {} per inference", crate::human_flops(stats.flops));
        println!(
            "arena        {:.2} MiB (without reuse {:.2} MiB)",
            m.arena_bytes as f64 / (1 << 20) as f64,
            unshared as f64 / (1 << 20) as f64
        );
        if let Some(o) = &art.optimizer {
            let fired: Vec<String> = o.rules_fired.iter().map(|(r, n)| format!("{r} x{n}")).collect();
            println!(
                "optimizer    {} e-nodes, {} iterations, stopped: {}, {:.2} s; roofline cost {:.3} ms -> {:.3} ms",
                o.egraph_nodes,
                o.iterations,
                o.stop_reason,
                o.seconds,
                o.cost_before * 1e3,
                o.cost_after * 1e3
            );
            println!("rules fired  {}", if fired.is_empty() { "none".to_string() } else { fired.join(", ") });
        } else {
            println!("optimizer    off (--no-opt)");
        }
        if let Some(q) = art.quantization.as_ref().filter(|q| q["scheme"] == "int8-dynamic") {
            println!(
                "quantized    int8-dynamic: {} matrix products (activation ranges taken at run time)",
                q["int8_layers"]
            );
        } else if let Some(q) = &art.quantization {
            let f32_layers: Vec<&str> =
                q["f32_layers"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            println!(
                "quantized    int8: {} layers ({} calibration samples, {}); kept f32 (error > {}): {}",
                q["int8_layers"],
                q["samples"],
                q["calibration"].as_str().unwrap_or("?"),
                q["threshold"],
                if f32_layers.is_empty() { "none".to_string() } else { f32_layers.join(", ") }
            );
        }
        println!("compile time {:.2} s (codegen {:.2} s)", art.seconds.0, art.seconds.1);
    }
    Ok(())
}

/// The C header declaring the entry points and describing inputs and outputs.
fn header(m: &Manifest, model: &Path) -> String {
    let up = m.symbol_prefix.to_uppercase();
    let p = &m.symbol_prefix;
    let clean = |s: &str| s.replace("*/", "* /");
    let mut h = String::new();
    h.push_str(&format!(
        "/* Generated by {} from {}. Do not edit.\n * Target: {} ({}).\n * Link with model.a and -lm, or load model.so. */\n",
        m.compiler_version,
        clean(&model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()),
        m.target_triple,
        m.cpu
    ));
    h.push_str(&format!(
        "#ifndef {up}H\n#define {up}H\n\n#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {{\n#endif\n\n"
    ));
    h.push_str(&format!("#define {up}ABI_VERSION {}u\n", m.abi_version));
    if m.symbols.is_empty() {
        h.push_str(&format!("#define {up}WORKSPACE_SIZE {}u\n", m.arena_bytes));
    } else {
        // Run-time dims: sizes are expressions of them; workspace_size_dims() computes the
        // workspace.
        let names: Vec<&str> = m.symbols.iter().map(|s| s.name.as_str()).collect();
        h.push_str(&format!(
            "/* Run-time dims, in the order of the dims array: {} (each at least its\n",
            names.join(", ")
        ));
        h.push_str(&format!(
            " * minimum: {}). Workspace bytes: {}. */\n",
            m.symbols
                .iter()
                .map(|s| if s.computed {
                    format!("{} computed by shape_values before the run", s.name)
                } else if s.data {
                    format!("{} computed by run_dims", s.name)
                } else {
                    format!("{} >= {}", s.name, s.min)
                })
                .collect::<Vec<_>>()
                .join(", "),
            clean(&m.arena_expr)
        ));
        if !m.binds.is_empty() {
            h.push_str(&format!(
                "/* Shapes computed from tensor values (bind sites, for run_dims' status 16 + 16 * site +\n * reason): {}. Reasons: {}. */\n",
                m.binds.iter().map(|b| clean(b)).collect::<Vec<_>>().join(", "),
                m.bind_reasons.iter().enumerate().map(|(i, r)| format!("{} {}", i + 1, clean(r))).collect::<Vec<_>>().join("; ")
            ));
        }
        h.push_str(&format!("#define {up}NUM_SYMBOLS {}\n#define {up}SYMBOLS \"{}\"\n", names.len(), names.join(",")));
    }
    h.push_str(&format!("#define {up}NUM_INPUTS {}\n#define {up}NUM_OUTPUTS {}\n\n", m.inputs.len(), m.outputs.len()));
    for (kind, specs) in [("INPUT", &m.inputs), ("OUTPUT", &m.outputs)] {
        for (i, s) in specs.iter().enumerate() {
            let numel: u64 = s.fixed_shape().unwrap_or_default().iter().product();
            let max = if s.max_bytes.is_empty() {
                String::new()
            } else {
                format!(", allocate {} bytes", clean(&s.max_bytes))
            };
            // A string tensor's two buffers (docs/strings.md).
            let role = match s.encoding.as_str() {
                dlc_artifact::STRING_TABLE => {
                    "; a string tensor: start and end byte of each element in the next buffer"
                }
                dlc_artifact::STRING_BYTES => "; the UTF-8 bytes of the string tensor before",
                _ => "",
            };
            h.push_str(&format!(
                "/* {} {i} \"{}\": {}{}{max}{role} */\n",
                kind.to_lowercase(),
                clean(&s.name),
                s.dtype,
                s.shape_string()
            ));
            if s.fixed_shape().is_some() {
                h.push_str(&format!("#define {up}{kind}{i}_NUMEL {numel}u\n"));
            }
        }
    }
    // The entry points and callback types, from the one definition of the C ABI.
    h.push('\n');
    h.push_str(
        &dlc_artifact::abi::header_declarations(p).replace("equals ABI_VERSION", &format!("equals {up}ABI_VERSION")),
    );
    h.push('\n');
    h.push_str(&format!("#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {up}H */\n"));
    h
}
