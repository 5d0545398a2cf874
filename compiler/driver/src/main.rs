//! dlc: the command-line driver. `dlc compile` turns a model into a native artifact,
//! `dlc run` runs one on `.npy` inputs, `dlc bench` times one, `dlc inspect` describes
//! a model, `dlc export` writes one as ONNX, `dlc compare` puts two artifacts side by side.
//!
//! Logs go to stderr behind `RUST_LOG` (e.g. `RUST_LOG=dlc=debug`).

use dlc_driver::{bench, compare, compile, export, inspect, run};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc for every allocation of the process: Rust's here, and LLVM's (its C++
/// `new` calls `malloc`, which the `override` feature replaces), where glibc's malloc
/// took a fifth of `dlc compile`'s time on models of thousands of kernels.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// dlc: an ahead-of-time compiler for deep-learning models.
///
/// Compiles ONNX models and models written in dlc's own language (.dlc) into native libraries (a shared library, a static library with a
/// C header) that dlc-runtime or any C program can run, with no ML framework at run time.
#[derive(Parser)]
#[command(name = "dlc", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    Compile(Box<compile::CompileArgs>),
    Run(run::RunArgs),
    Bench(bench::BenchArgs),
    Inspect(inspect::InspectArgs),
    Export(export::ExportArgs),
    Compare(compare::CompareArgs),
}

fn main() -> ExitCode {
    // A closed stdout (`dlc inspect --ir | head`) ends the process quietly, as it does
    // other command-line tools, instead of a panic in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // A panic is a bug in dlc: say so in one line and exit 2 (not 101 with a backtrace
    // hint), so scripts see a failure of dlc rather than of their input.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error in dlc (a bug; please report it with the input): {info}");
    }));
    let result = std::panic::catch_unwind(|| match cli.cmd {
        Command::Compile(a) => compile::main(*a),
        Command::Run(a) => run::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Inspect(a) => inspect::main(a),
        Command::Export(a) => export::main(a),
        Command::Compare(a) => compare::main(a),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(2),
    }
}
