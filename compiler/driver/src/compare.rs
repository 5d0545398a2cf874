//! `dlc compare`: two compiled artifacts side by side (e.g. fp32 and int8, or with and
//! without the optimiser), from their report.json files.
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Compare two artifacts: size, work, memory, and (after `dlc bench` on each) latency
/// and energy per inference, with the ratio B/A.
///
/// Example: dlc compare out/fp32 out/int8
#[derive(Args)]
pub struct CompareArgs {
    /// First artifact directory (A).
    pub a: PathBuf,
    /// Second artifact directory (B).
    pub b: PathBuf,
}

fn report(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read '{}'", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("'{}' is not valid JSON", path.display()))
}

pub fn main(a: CompareArgs) -> Result<()> {
    let (ra, rb) = (report(&a.a)?, report(&a.b)?);
    let rows: [(&str, &[&str], f64, &str); 8] = [
        ("parameters", &["parameters"], 1.0, ""),
        ("weight bytes", &["weight_bytes"], 1.0 / 1024.0, " KiB"),
        ("FLOPs per inference", &["flops"], 1e-6, " M"),
        ("arena bytes", &["arena_bytes"], 1.0 / 1024.0, " KiB"),
        ("kernels", &["kernels"], 1.0, ""),
        ("latency (median)", &["bench", "median_ms"], 1.0, " ms"),
        ("CPU time per inference", &["bench", "cpu_ms_per_inference"], 1.0, " ms"),
        ("energy per inference", &["bench", "energy_j_per_inference"], 1e3, " mJ"),
    ];
    let get = |r: &serde_json::Value, path: &[&str]| path.iter().try_fold(r, |v, k| v.get(k)).and_then(|v| v.as_f64());
    let fmt = |v: Option<f64>, scale: f64, unit: &str| match v {
        Some(x) if scale == 1.0 && unit.is_empty() => format!("{x:.0}"),
        Some(x) => format!("{:.3}{unit}", x * scale),
        None => "-".to_string(),
    };
    println!("{:<24} {:>18} {:>18} {:>8}", "", short(&a.a), short(&a.b), "B/A");
    for (label, path, scale, unit) in rows {
        let (va, vb) = (get(&ra, path), get(&rb, path));
        let ratio = match (va, vb) {
            (Some(x), Some(y)) if x != 0.0 => format!("{:.2}", y / x),
            _ => "-".to_string(),
        };
        println!("{label:<24} {:>18} {:>18} {ratio:>8}", fmt(va, scale, unit), fmt(vb, scale, unit));
    }
    for (dir, r) in [(&a.a, &ra), (&a.b, &rb)] {
        if let Some(t) = get(r, &["bench", "threads"]) {
            println!("{}: benchmarked with {t} thread(s)", dir.display());
        } else {
            println!("{}: no latency yet (run `dlc bench {}`)", dir.display(), dir.display());
        }
    }
    Ok(())
}

fn short(p: &Path) -> String {
    let s: Vec<char> = p.display().to_string().chars().collect();
    if s.len() <= 18 {
        s.into_iter().collect()
    } else {
        std::iter::once('…').chain(s[s.len() - 17..].iter().copied()).collect()
    }
}
