//! `dlc bench`: latency of a compiled artifact, and the energy estimate of DESIGN.md §6.
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Time a compiled model: median, min and max latency over repeated runs.
///
/// Inputs are random (seeded) unless given with --input; a model with run-time dims is
/// timed at the shapes --input and --input-shape give (dims they leave open are 1). Each
/// timed run calls the
/// generated code on pre-allocated buffers (no allocation or copy inside the timing).
/// Energy per inference: RAPL's package counter when the machine exposes it, else an
/// estimate, the process's CPU time per inference x watts per core. The result is also
/// stored as the `bench` section of the artifact's report.json (see `dlc compare`).
#[derive(Args)]
pub struct BenchArgs {
    /// Artifact directory written by `dlc compile`.
    pub artifact: PathBuf,
    /// Timed runs (after a warm-up of at least 3 runs and 250 ms).
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Threads the kernels may use [default: DLC_NUM_THREADS, else 1].
    #[arg(long)]
    pub threads: Option<usize>,
    /// An input as NAME=FILE.npy (others get seeded random values).
    #[arg(short, long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// The shape to time a symbolic input at, as NAME=DIMS (e.g. x=8x3x224x224).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Watts drawn per busy core, for the energy estimate.
    #[arg(long, default_value_t = 10.0)]
    pub watts_per_core: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Seeded pseudo-random bytes that are valid values of `dtype` (floats in [-1, 1),
/// integers in [0, 8)) so index inputs stay in range for small tables.
fn random_tensor(dtype: &str, shape: &[u64], seed: u64) -> dlc_runtime::Tensor {
    let n = shape.iter().product::<u64>() as usize;
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let size = dlc_artifact::dtype_size(dtype).unwrap_or(1);
    let mut data = Vec::with_capacity(n * size);
    for _ in 0..n {
        let r = next();
        match dtype {
            "f32" => data.extend(((r >> 40) as f32 / (1u64 << 23) as f32 - 1.0).to_le_bytes()),
            "f64" => data.extend(((r >> 11) as f64 / (1u64 << 52) as f64 - 1.0).to_le_bytes()),
            _ => {
                let mut b = vec![0u8; size];
                b[0] = (r % 8) as u8;
                data.extend(b);
            }
        }
    }
    dlc_runtime::Tensor { dtype: dtype.into(), shape: shape.to_vec(), data }
}

pub fn main(a: BenchArgs) -> Result<()> {
    let threads = match a.threads {
        Some(t) => t,
        None => match std::env::var("DLC_NUM_THREADS") {
            Ok(v) => v.parse().with_context(|| format!("DLC_NUM_THREADS='{v}' is not a number"))?,
            Err(_) => 1,
        },
    };
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let manifest = dlc_artifact::Manifest::read_dir(&a.artifact)
        .with_context(|| format!("cannot load artifact '{}'", a.artifact.display()))?;
    let mut given = Vec::new();
    for spec in &a.inputs {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--input '{spec}' must be NAME=FILE.npy");
        };
        given.push((name.to_string(), crate::npy::read(std::path::Path::new(file))?));
    }
    let shapes = crate::compile::parse_input_shapes(&a.input_shapes)?;
    let names = || manifest.inputs.iter().map(|s| format!("'{}'", s.name)).collect::<Vec<_>>().join(", ");
    for (flag, name) in given.iter().map(|(n, _)| ("--input", n)).chain(shapes.keys().map(|n| ("--input-shape", n))) {
        if !manifest.inputs.iter().any(|s| s.name == *name) {
            bail!("{flag}: the model has no input named '{name}'; inputs are {}", names());
        }
    }
    // Run-time dims: from the shapes given (files and --input-shape), else 1.
    let mut dims: Vec<i64> = manifest.symbols.iter().map(|s| s.min.max(1) as i64).collect();
    for spec in &manifest.inputs {
        let known = given.iter().find(|(n, _)| *n == spec.name).map(|(_, t)| t.shape.clone());
        let Some(shape) = known.or_else(|| shapes.get(&spec.name).cloned()) else { continue };
        for (d, &n) in spec.shape.iter().zip(&shape) {
            if let Some(k) = manifest.symbols.iter().position(|s| d.symbol.as_deref() == Some(&s.name)) {
                dims[k] = n as i64;
            }
        }
    }
    let mut tensors = Vec::new();
    for (i, spec) in manifest.inputs.iter().enumerate() {
        let t = match given.iter().find(|(n, _)| *n == spec.name) {
            Some((_, t)) => crate::npy::adapt(t.clone(), &spec.dtype, &spec.name)?,
            None => {
                let shape = match shapes.get(&spec.name) {
                    Some(s) => s.clone(),
                    None => manifest.shape_at(spec, &dims)?,
                };
                random_tensor(&spec.dtype, &shape, i as u64 + 1)
            }
        };
        tensors.push((spec.name.clone(), t));
    }
    let named: Vec<(&str, &dlc_runtime::Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if manifest.is_cuda() {
        return bench_cuda(&a, &named);
    }
    let model = dlc_runtime::Model::load(&a.artifact)
        .with_context(|| format!("cannot load artifact '{}'", a.artifact.display()))?;
    let mut session = model.session();
    session.set_threads(threads);
    let threads = session.threads();
    session.set_inputs(&named)?;
    // Warm-up: at least 3 runs and 250 ms, so that timing starts in the steady state: in
    // a fresh process the OS first runs the new pool threads on the caller's core and
    // spreads them out only after about 100 ms (a small model at 2 threads runs 3x slower
    // until then), and caches and page mappings are cold.
    let warm = Instant::now();
    let mut runs = 0;
    while runs < 3 || warm.elapsed().as_millis() < 250 {
        session.run()?;
        runs += 1;
    }
    let mut ms = Vec::with_capacity(a.iters);
    let (cpu0, rapl0) = (process_cpu_seconds(), rapl_joules());
    for _ in 0..a.iters {
        let t0 = Instant::now();
        session.run()?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let cpu_ms = (process_cpu_seconds() - cpu0) * 1e3 / a.iters as f64;
    let rapl = match (rapl0, rapl_joules()) {
        (Some(e0), Some(e1)) if e1 >= e0 => Some((e1 - e0) / a.iters as f64),
        _ => None,
    };
    let times = ms.clone();
    let (median, min, max) = summary(ms);
    // Energy per inference: measured by RAPL when the machine exposes it (the whole
    // package, so other load counts too), else CPU time x watts per core.
    let estimate = cpu_ms / 1e3 * a.watts_per_core;
    let (joules, source) = match rapl {
        Some(j) => (j, "rapl".to_string()),
        None => (estimate, format!("estimate: CPU time x {} W per core", a.watts_per_core)),
    };
    let v = serde_json::json!({
        "median_ms": median, "min_ms": min, "max_ms": max, "iters": a.iters, "threads": threads,
        "cpu_ms_per_inference": cpu_ms, "energy_j_per_inference": joules, "energy_source": source,
        "watts_per_core": a.watts_per_core, "times_ms": times,
        "input_shapes": tensors.iter().map(|(n, t)| (n.clone(), serde_json::json!(t.shape))).collect::<serde_json::Map<_, _>>(),
    });
    let lines = [
        format!(
            "{}: {} runs, {threads} thread(s){}",
            a.artifact.display(),
            a.iters,
            if manifest.symbols.is_empty() {
                String::new()
            } else {
                format!(
                    ", at {}",
                    manifest
                        .symbols
                        .iter()
                        .zip(session.dims())
                        .map(|(s, v)| format!("{}={v}", s.name))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        ),
        format!("latency  median {median:.3} ms, min {min:.3} ms, max {max:.3} ms"),
        format!("cpu      {cpu_ms:.3} ms per inference"),
        format!("energy   {:.3} mJ per inference ({source})", joules * 1e3),
    ];
    publish(&a, &v, &lines);
    Ok(())
}

/// Stores the measurement in the artifact's report.json and prints it: `v` with --json,
/// else `lines`.
fn publish(a: &BenchArgs, v: &serde_json::Value, lines: &[String]) {
    record_in_report(&a.artifact, v);
    if a.json {
        println!("{v}");
    } else {
        for l in lines {
            println!("{l}");
        }
    }
}

/// Median, min and max of `ms` (not empty).
fn summary(mut ms: Vec<f64>) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let median = if ms.len() % 2 == 1 { ms[ms.len() / 2] } else { (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0 };
    (median, ms[0], ms[ms.len() - 1])
}

/// `dlc bench` of a CUDA artifact on GPU 0, in one session: weights and inputs uploaded
/// once, each timed run is every launch of the table and the wait for them (after 4
/// untimed runs).
fn bench_cuda(a: &BenchArgs, named: &[(&str, &dlc_runtime::Tensor)]) -> Result<()> {
    let model = dlc_runtime::GpuModel::load(&a.artifact)
        .with_context(|| format!("cannot load artifact '{}'", a.artifact.display()))?;
    const WARM_UP: usize = 3;
    let (_, secs) = model.run_cuda_timed(named, WARM_UP + a.iters).context("running on the GPU")?;
    let ms: Vec<f64> = secs[WARM_UP..].iter().map(|s| s * 1e3).collect();
    let (median, min, max) = summary(ms.clone());
    let v = serde_json::json!({
        "median_ms": median, "min_ms": min, "max_ms": max, "iters": a.iters, "device": "cuda:0",
        "kernels": model.launch_table().launches.len(), "times_ms": ms,
    });
    let lines = [
        format!("{}: {} runs on cuda:0", a.artifact.display(), a.iters),
        format!("latency  median {median:.3} ms, min {min:.3} ms, max {max:.3} ms"),
    ];
    publish(a, &v, &lines);
    Ok(())
}

/// CPU time of this process so far (all threads), in seconds.
fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The package energy counter of RAPL (Linux powercap), in joules, when readable.
fn rapl_joules() -> Option<f64> {
    let uj: f64 = std::fs::read_to_string("/sys/class/powercap/intel-rapl:0/energy_uj").ok()?.trim().parse().ok()?;
    Some(uj * 1e-6)
}

/// Stores the measurement as the `bench` section of the artifact's report.json (so
/// `dlc compare` can show it); an artifact without a report is left alone.
fn record_in_report(artifact: &std::path::Path, bench: &serde_json::Value) {
    let path = artifact.join("report.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return };
    let Ok(mut report) = serde_json::from_str::<serde_json::Value>(&text) else { return };
    let mut b = bench.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("times_ms");
    }
    report["bench"] = b;
    if let Ok(s) = serde_json::to_string_pretty(&report) {
        if let Err(e) = std::fs::write(&path, s) {
            tracing::warn!("cannot update {}: {e}", path.display());
        }
    }
}
