//! dlc-codegen-llvm: translates kir programs to native code through LLVM (inkwell).
//!
//! CPU: a planned graph is lowered into its kir program (`dlc_lower::program`), or a
//! `.kir` file is parsed; `program.rs` translates each kernel (`kir.rs`) into an
//! internal function, constants into read-only globals, and generates the C entry
//! points described in `dlc_artifact` from the schedule. LLVM's `default<O3>` pipeline
//! then optimises for the target CPU. CUDA ([`gpu`]): the same program with the CUDA
//! kernels, translated to PTX and to the host simulation, with a launch table derived
//! from the schedule.
//!
//! Invariant: never panics on a graph the verifier accepts or a program kir's verifier
//! accepts; what a target cannot run is a [`CodegenError`] naming the node (or
//! program), op and target.
#![warn(missing_docs)]

pub mod cpus;
pub mod gpu;
mod kernel;
mod kir;
mod lower;
mod program;
mod target;

pub use gpu::{compile_cuda, compile_cuda_program, is_cuda, CudaCompiled};
pub use target::{host_triple, TargetSpec};

use dlc_artifact::abi;
use dlc_ir::Graph;
use dlc_passes::MemoryPlan;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::targets::FileType;
use inkwell::AddressSpace;

/// Errors of the LLVM backend.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// The node cannot be lowered for this target (dtype, attribute or shape).
    #[error("node '{node}' ({op}): {reason} (llvm backend, target {target})")]
    Unsupported {
        /// Node name.
        node: String,
        /// Op mnemonic.
        op: String,
        /// Why.
        reason: String,
        /// Target triple.
        target: String,
    },
    /// The target triple or CPU is not known to this LLVM build.
    #[error("target '{triple}': {reason}")]
    Target {
        /// Triple.
        triple: String,
        /// Why.
        reason: String,
    },
    /// A math function the target has no implementation of (CUDA has no C library).
    #[error("the math function '{function}' is not available for this target yet")]
    NoMath {
        /// The C library name (`logf`, `sinf`...).
        function: String,
    },
    /// LLVM reported an error (a dlc bug when it happens).
    #[error("llvm: {0}")]
    Llvm(String),
}

impl From<inkwell::builder::BuilderError> for CodegenError {
    fn from(e: inkwell::builder::BuilderError) -> Self {
        CodegenError::Llvm(e.to_string())
    }
}

/// A lowering's refusal as this backend's error, for `target`.
pub(crate) fn unsupported(e: dlc_lower::LowerError, target: &TargetSpec) -> CodegenError {
    CodegenError::Unsupported { node: e.node, op: e.op.to_string(), reason: e.reason, target: target.triple.clone() }
}

/// What to produce besides the object file.
#[derive(Debug, Clone, Default)]
pub struct EmitOptions {
    /// Also return the optimised LLVM IR text.
    pub llvm_ir: bool,
    /// Also return target assembly.
    pub asm: bool,
    /// Skip LLVM's optimisation pipeline (debugging aid).
    pub no_llvm_opt: bool,
    /// Threads to compile on (0: the machine's cores). The result does not depend on it.
    pub jobs: usize,
    /// The text the library's `signature()` returns (`Manifest::signature` of the
    /// artifact being built).
    pub signature: String,
}

/// The result of code generation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Relocatable object files (position independent), to be linked together: the
    /// first defines the entry points, the others the kernels it calls (hidden symbols).
    pub objects: Vec<Vec<u8>>,
    /// Optimised LLVM IR, when asked for.
    pub llvm_ir: Option<String>,
    /// Assembly, when asked for.
    pub asm: Option<String>,
    /// Number of compute kernels emitted (not counting the kernels of `bind` steps,
    /// which compute shapes from values or check indices).
    pub kernels: usize,
}

/// Lowers `g` (planned by `plan`) for `target`, exporting symbols that start with `prefix`.
pub fn compile(
    g: &Graph,
    plan: &MemoryPlan,
    target: &TargetSpec,
    prefix: &str,
    emit: &EmitOptions,
) -> Result<Compiled, CodegenError> {
    if is_cuda(&target.triple) {
        return Err(CodegenError::Target {
            triple: target.triple.clone(),
            reason: "internal: CUDA targets compile through compile_cuda".into(),
        });
    }
    compile_program_parts(&lower(g, plan, target)?, target, prefix, emit)
}

/// The kir program of `g` for a CPU `target` (what [`compile`] translates), or the
/// error that names what the target does not support.
pub fn lower(g: &Graph, plan: &MemoryPlan, target: &TargetSpec) -> Result<dlc_kir::Program, CodegenError> {
    dlc_lower::program::program(g, plan, &target.lowering(), dlc_lower::program::Family::Cpu)
        .map_err(|e| unsupported(e, target))
}

/// The kernels a CPU artifact of `p` runs ([`Compiled::kernels`]): its kernels but the
/// checks that `bind` steps call.
pub fn kernels_run(p: &dlc_kir::Program) -> usize {
    program::kernels_run(p)
}

/// Compiles a kir program (a `.kir` file, or what `dlc compile --emit kir` wrote) for
/// a CPU `target`: its kernels translated from kir and `run` generated from its
/// schedule, exporting symbols that start with `prefix`. CUDA targets compile through
/// [`compile_cuda_program`].
pub fn compile_program(
    p: &dlc_kir::Program,
    target: &TargetSpec,
    prefix: &str,
    emit: &EmitOptions,
) -> Result<Compiled, CodegenError> {
    if is_cuda(&target.triple) {
        return Err(CodegenError::Target {
            triple: target.triple.clone(),
            reason: "internal: CUDA targets compile through compile_cuda_program".into(),
        });
    }
    compile_program_parts(p, target, prefix, emit)
}

/// How many modules a program's kernels are split into (at most): each is optimised
/// and compiled on its own thread, beside the module of `run` and the constants. Fixed,
/// so that the artifact is the same on every machine whatever its number of cores.
const KERNEL_MODULES: usize = 8;

/// The kernels of `p` that are their own representatives `rep` (the others share their
/// code, [`program::representatives`]), in at most [`KERNEL_MODULES`] groups of about equal
/// size (their statement counts; largest first into the lightest group), each group's
/// indices in order. None for a program of one such kernel or none.
fn partition(p: &dlc_kir::Program, rep: &[usize]) -> Vec<Vec<usize>> {
    let unique = rep.iter().enumerate().filter(|&(i, &r)| r == i).count();
    let parts = KERNEL_MODULES.min(unique);
    if parts <= 1 {
        return Vec::new();
    }
    let mut by_size: Vec<(usize, usize)> = p
        .kernels
        .iter()
        .enumerate()
        .filter(|&(i, _)| rep[i] == i)
        .map(|(i, k)| {
            let mut n = 0usize;
            k.walk(&mut |_| n += 1);
            (n, i)
        })
        .collect();
    by_size.sort_by(|a, b| b.cmp(a));
    let mut groups: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); parts];
    for (n, i) in by_size {
        if let Some(g) = groups.iter_mut().min_by_key(|g| g.0) {
            g.0 += n + 1;
            g.1.push(i);
        }
    }
    groups
        .into_iter()
        .map(|(_, mut v)| {
            v.sort_unstable();
            v
        })
        .filter(|v| !v.is_empty())
        .collect()
}

/// The threads to compile on: `emit.jobs`, or the machine's cores when it is 0.
fn jobs(emit: &EmitOptions) -> usize {
    match emit.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Compiles `p` for a CPU target: `run`, the constants and the metadata in one module,
/// the kernels (unless the optimised IR or assembly is asked for, which come as one
/// module) in [`partition`]'s groups, one module each, on up to [`jobs`] threads.
/// LLVM's passes are per module, so the parts optimise independently; kernels are
/// `noinline` and called once each from `run`, so nothing is lost across modules.
/// The objects come in a fixed order: `run`'s first, then the groups'.
fn compile_program_parts(
    p: &dlc_kir::Program,
    target: &TargetSpec,
    prefix: &str,
    emit: &EmitOptions,
) -> Result<Compiled, CodegenError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let rep = program::representatives(p);
    let parts = if emit.llvm_ir || emit.asm { Vec::new() } else { partition(p, &rep) };
    let next = AtomicUsize::new(0);
    // Each group's object, or why it failed, as its thread leaves it.
    type Slot = Mutex<Option<Result<Vec<u8>, CodegenError>>>;
    let done: Vec<Slot> = parts.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let j = next.fetch_add(1, Ordering::Relaxed);
        let Some(which) = parts.get(j) else { break };
        let t0 = std::time::Instant::now();
        let object = (|| {
            let tm = target.machine()?;
            let cx = Context::create();
            let module = target_module(&cx, &format!("{}.k{j}", p.name), &tm);
            program::emit_kernels(&cx, &module, p, prefix, which)?;
            Ok(optimise_and_write(&module, &tm, emit, 0)?.objects.remove(0))
        })();
        let names: Vec<&str> = which.iter().map(|&i| p.kernels[i].name.as_str()).collect();
        tracing::debug!(module = j + 1, seconds = t0.elapsed().as_secs_f64(), kernels = ?names, "kernel module compiled");
        if let Ok(mut slot) = done[j].lock() {
            *slot = Some(object);
        }
    };
    let threads = jobs(emit).min(parts.len() + 1);
    let main = std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(work);
        }
        let t0 = std::time::Instant::now();
        let main = (|| {
            let tm = target.machine()?;
            let cx = Context::create();
            let module = target_module(&cx, &p.name, &tm);
            let kernels = program::emit(&cx, &module, p, prefix, &emit.signature, &rep, !parts.is_empty())?;
            optimise_and_write(&module, &tm, emit, kernels)
        })();
        tracing::debug!(seconds = t0.elapsed().as_secs_f64(), threads, "entry points' module compiled");
        work();
        main
    });
    let mut compiled = main?;
    for slot in done {
        let object = slot
            .into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| CodegenError::Llvm("a kernel module was not compiled".into()))?;
        compiled.objects.push(object?);
    }
    Ok(compiled)
}

/// Verifies `module`, runs LLVM's `default<O3>` (unless `emit.no_llvm_opt`) and writes
/// the object (and the IR or assembly asked for).
fn optimise_and_write(
    module: &Module<'_>,
    tm: &inkwell::targets::TargetMachine,
    emit: &EmitOptions,
    kernels: usize,
) -> Result<Compiled, CodegenError> {
    module.verify().map_err(|e| CodegenError::Llvm(format!("invalid module: {}", e.to_string())))?;
    if !emit.no_llvm_opt {
        let opts = inkwell::passes::PassBuilderOptions::create();
        opts.set_loop_vectorization(true);
        opts.set_loop_slp_vectorization(true);
        opts.set_loop_unrolling(true);
        module.run_passes("default<O3>", tm, opts).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    }
    let llvm_ir = emit.llvm_ir.then(|| module.print_to_string().to_string());
    let asm = if emit.asm {
        Some(String::from_utf8_lossy(&write(module, tm, FileType::Assembly)?).into_owned())
    } else {
        None
    };
    let object = write(module, tm, FileType::Object)?;
    Ok(Compiled { objects: vec![object], llvm_ir, asm, kernels })
}

/// The LLVM type of a function of the C ABI (dlc-artifact's one definition of it).
pub(crate) fn abi_fn_type<'ctx>(cx: &'ctx Context, f: &abi::Function) -> inkwell::types::FunctionType<'ctx> {
    use inkwell::types::BasicMetadataTypeEnum;
    let ty = |t: abi::CType| -> Option<inkwell::types::BasicTypeEnum<'ctx>> {
        match t {
            abi::CType::Void => None,
            t if t.is_pointer() => Some(cx.ptr_type(AddressSpace::default()).into()),
            t if t.int_bits() == Some(32) => Some(cx.i32_type().into()),
            _ => Some(cx.i64_type().into()),
        }
    };
    let params: Vec<BasicMetadataTypeEnum> = f.params.iter().filter_map(|p| ty(p.ty)).map(Into::into).collect();
    match ty(f.ret) {
        Some(inkwell::types::BasicTypeEnum::IntType(r)) => r.fn_type(&params, false),
        Some(r) => r.into_pointer_type().fn_type(&params, false),
        None => cx.void_type().fn_type(&params, false),
    }
}

/// An empty module for the target machine `tm` (its triple and data layout).
fn target_module<'ctx>(cx: &'ctx Context, name: &str, tm: &inkwell::targets::TargetMachine) -> Module<'ctx> {
    let module = cx.create_module(name);
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
}

/// `module` as assembly or an object file for `tm`.
fn write(module: &Module<'_>, tm: &inkwell::targets::TargetMachine, kind: FileType) -> Result<Vec<u8>, CodegenError> {
    let buf = tm.write_to_memory_buffer(module, kind).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    Ok(buf.as_slice().to_vec())
}

/// The exported metadata functions: the ABI version, the workspace size and the
/// signature (`signature`, a constant string).
pub(crate) fn emit_metadata<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    prefix: &str,
    arena_bytes: u64,
    signature: &str,
) -> Result<(), CodegenError> {
    let b = cx.create_builder();
    let text = cx.const_string(signature.as_bytes(), true);
    let g = module.add_global(text.get_type(), None, &format!("{prefix}signature_text"));
    g.set_initializer(&text);
    g.set_constant(true);
    g.set_linkage(inkwell::module::Linkage::Private);
    let f = module.add_function(&abi::symbol(prefix, &abi::SIGNATURE), abi_fn_type(cx, &abi::SIGNATURE), None);
    b.position_at_end(cx.append_basic_block(f, "entry"));
    b.build_return(Some(&g.as_pointer_value()))?;
    let f =
        module.add_function(&abi::symbol(prefix, &abi::ABI_VERSION_FN), abi_fn_type(cx, &abi::ABI_VERSION_FN), None);
    b.position_at_end(cx.append_basic_block(f, "entry"));
    b.build_return(Some(&cx.i32_type().const_int(dlc_artifact::ABI_VERSION as u64, false)))?;
    let f =
        module.add_function(&abi::symbol(prefix, &abi::WORKSPACE_SIZE), abi_fn_type(cx, &abi::WORKSPACE_SIZE), None);
    b.position_at_end(cx.append_basic_block(f, "entry"));
    b.build_return(Some(&cx.i64_type().const_int(arena_bytes, false)))?;
    Ok(())
}

/// `<prefix>run(inputs, outputs, workspace)`: `run_threaded` without a pool.
pub(crate) fn emit_run<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    prefix: &str,
    run_threaded: inkwell::values::FunctionValue<'ctx>,
) -> Result<(), CodegenError> {
    let b = cx.create_builder();
    let ptr = cx.ptr_type(AddressSpace::default());
    let seq = module.add_function(&abi::symbol(prefix, &abi::RUN), abi_fn_type(cx, &abi::RUN), None);
    b.position_at_end(cx.append_basic_block(seq, "entry"));
    let mut args: Vec<inkwell::values::BasicMetadataValueEnum> = Vec::new();
    for i in 0..3 {
        args.push(seq.get_nth_param(i).ok_or_else(|| CodegenError::Llvm("run parameter".into()))?.into());
    }
    args.push(ptr.const_null().into());
    args.push(ptr.const_null().into());
    let status = b
        .build_call(run_threaded, &args, "")?
        .try_as_basic_value()
        .basic()
        .ok_or_else(|| CodegenError::Llvm("run_threaded returns a status".into()))?;
    b.build_return(Some(&status))?;
    Ok(())
}
