//! dlc-driver: the compile pipeline as a library ([`compile()`], called by the `dlc`
//! CLI and by integrations such as the Python package), and the CLI's commands
//! (`compile`, `run`, `bench`, `inspect`, `export`, `compare`), one module each.
//!
//! The library depends on dlc-runtime for one thing: `--quantize int8` compiles a
//! calibration model for the host and runs it on the calibration samples
//! ([`quantize`]); nothing else in the pipeline loads generated code.

pub mod bench;
pub mod compare;
pub mod compile;
pub mod export;
pub mod inspect;
mod link;
/// `.npy` files (the dlc-npy crate, which the fuzz target uses without the compiler).
pub use dlc_npy as npy;
pub mod quantize;
pub mod run;

pub use compile::{compile, Artifact, Emit, Observer, Options, Silent};

/// FLOPs with a readable unit (`1.82 GFLOP`, `48.0 kFLOP`).
pub fn human_flops(f: u64) -> String {
    let f = f as f64;
    match f {
        f if f >= 1e9 => format!("{:.2} GFLOP", f / 1e9),
        f if f >= 1e6 => format!("{:.2} MFLOP", f / 1e6),
        f if f >= 1e3 => format!("{:.1} kFLOP", f / 1e3),
        f => format!("{f} FLOP"),
    }
}
