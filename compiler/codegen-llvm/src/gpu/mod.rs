//! CUDA: the graph's kernels for NVIDIA GPUs, as PTX through LLVM's NVPTX backend, and
//! the same kernels compiled for the host so they can be checked without a GPU.
//!
//! Each compute node's kernel is kir from `dlc_lower::cuda::lower`, translated twice by
//! [`translate`] (see `kir.rs::emit_block` for the constructs of a block kernel):
//!
//! - [`Mode::Ptx`]: a PTX `.entry`; the block index and `tid` are the PTX special
//!   registers, a `threads` region ends in `bar.sync`, shared arrays are `.shared`
//!   (address space 3), scratch is a per-thread stack array (registers after LLVM's
//!   SROA), `blockreduce` uses `shfl.sync.bfly`;
//! - [`Mode::Sim`]: a host function called once per block (the runtime loops over the
//!   grid); a region is a loop over the block's threads, so everything a barrier orders
//!   is ordered; shared arrays are stack arrays of the block call; scratch has one slot
//!   per thread; shuffles are modelled lane by lane in the same butterfly order, so a
//!   reduction gives the same bits as on the GPU.
//!
//! Both come from the same kir kernel, so `dlc run --simulate` runs what the GPU would
//! run, with grid and block indices as loops.
use crate::kernel::{Kb, R};
use crate::{target_module, write, CodegenError, TargetSpec};
use dlc_artifact::{BufferRef, Launch, LaunchTable, OutputCopy, LAUNCH_VERSION};
use dlc_ir::Graph;
use dlc_kir::{BufKind, Step};
use dlc_passes::MemoryPlan;
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::targets::FileType;
use inkwell::values::{IntValue, PointerValue};
use inkwell::{AddressSpace, IntPredicate};
use std::collections::HashMap;

/// The GPU architecture used when `--cpu` names none.
pub const DEFAULT_SM: &str = "sm_80";

pub use dlc_artifact::is_cuda_triple as is_cuda;

/// A CUDA artifact's contents.
#[derive(Debug, Clone)]
pub struct CudaCompiled {
    /// The kernels as PTX text (`model.ptx`).
    pub ptx: String,
    /// The same kernels for the host, one exported function per kernel taking
    /// `(void **args, int64 block_x, int64 block_y, int64 block_z)`: a PIC object to
    /// link into `model.sim.so`.
    pub sim_object: Vec<u8>,
    /// How to run them.
    pub table: LaunchTable,
    /// Every weight, at the offsets the table names (`model.weights`).
    pub weights: Vec<u8>,
    /// The optimised NVPTX LLVM IR, when asked for.
    pub llvm_ir: Option<String>,
}

/// Alignment of each weight in `model.weights` (and so on the device).
const WEIGHT_ALIGN: usize = 256;

/// How a kernel is launched: grid in blocks, threads per block, static shared bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub grid: [u32; 3],
    pub threads: u32,
    pub shared_bytes: u32,
    /// One thread runs the op's CPU loop nest.
    pub serial: bool,
}

/// Lowers `g` (planned by `plan`) for the CUDA `target` (`nvptx64-nvidia-cuda`, CPU
/// `sm_XX`); kernel symbols start with `prefix`. The graph goes through its kir
/// program (`dlc_lower::program` with the CUDA kernels), compiled by
/// [`compile_cuda_program`] as a `.kir` file is.
pub fn compile_cuda(
    g: &Graph,
    plan: &MemoryPlan,
    target: &TargetSpec,
    prefix: &str,
    llvm_ir: bool,
) -> Result<CudaCompiled, CodegenError> {
    check_sm(target)?;
    if !plan.regions.is_empty() || !dlc_lower::program::symbols(g).is_empty() {
        return Err(CodegenError::Target {
            triple: target.triple.clone(),
            reason: "models with run-time dims are compiled for CPU targets only so far; pin the input shapes with \
                     --input-shape NAME=DIMS"
                .into(),
        });
    }
    let p = dlc_lower::program::program(g, plan, &target.lowering(), dlc_lower::program::Family::Cuda)
        .map_err(|e| crate::unsupported(e, target))?;
    compile_cuda_program(&p, target, prefix, llvm_ir)
}

fn check_sm(target: &TargetSpec) -> Result<(), CodegenError> {
    if target.cpu.starts_with("sm_") {
        return Ok(());
    }
    Err(CodegenError::Target {
        triple: target.triple.clone(),
        reason: format!("'{}' is not a GPU architecture; use --cpu sm_80 or sm_90", target.cpu),
    })
}

/// Compiles kir program `p` for the CUDA `target`: each kernel translated twice (PTX
/// and the host simulation, [`translate`]), its launch read off the kernel's form, and
/// the launch table derived from the schedule: a call is a launch on the buffers it
/// binds (inputs, outputs, constants as offsets into `model.weights`, arena slices), a
/// copy into an output is an output copy. Kernel symbols are `prefix` and the kernel's
/// name. A program with run-time dims, control flow or other copies is refused (the
/// CUDA runtime runs a flat list of launches).
pub fn compile_cuda_program(
    p: &dlc_kir::Program,
    target: &TargetSpec,
    prefix: &str,
    llvm_ir: bool,
) -> Result<CudaCompiled, CodegenError> {
    check_sm(target)?;
    let refuse = |reason: String| CodegenError::Target { triple: target.triple.clone(), reason };
    dlc_kir::verify::program(p).map_err(|e| refuse(format!("program '{}' does not verify: {e}", p.name)))?;
    if !p.symbols.is_empty() {
        let names: Vec<&str> = p.symbols.iter().map(|s| s.name.as_str()).collect();
        return Err(refuse(format!(
            "program '{}' has run-time dims ({}), which CUDA artifacts do not support yet; compile the model with \
             --input-shape to pin them",
            p.name,
            names.join(", ")
        )));
    }
    if p.schedule.iter().any(|s| matches!(s, Step::If { .. } | Step::Loop { .. })) {
        return Err(refuse(format!(
            "program '{}' has control flow (if, loop), which CUDA artifacts do not support yet",
            p.name
        )));
    }
    if p.schedule.iter().any(|s| matches!(s, Step::Bind { .. })) {
        return Err(refuse(format!(
            "program '{}' computes shapes from tensor values (bind), which CUDA artifacts do not support yet",
            p.name
        )));
    }
    let arena_bytes =
        p.arena_bytes.as_const().filter(|&n| n >= 0).ok_or_else(|| {
            refuse(format!("program '{}': the arena size {} is not a constant", p.name, p.arena_bytes))
        })? as u64;

    // Constants in buffer order, each 256-byte aligned in `model.weights`.
    let mut weights = Vec::new();
    let mut refs = Vec::with_capacity(p.buffers.len());
    for b in &p.buffers {
        refs.push(match &b.kind {
            BufKind::Input(i) => BufferRef::Input(*i as usize),
            BufKind::Output(i) => BufferRef::Output(*i as usize),
            BufKind::Const(data) => {
                weights.resize(weights.len().next_multiple_of(WEIGHT_ALIGN), 0);
                let at = weights.len() as u64;
                weights.extend_from_slice(data);
                BufferRef::Weight(at)
            }
            BufKind::Arena(off) => match off.as_const() {
                Some(o) if o >= 0 => BufferRef::Arena(o as u64),
                _ => return Err(refuse(format!("buffer '{}': arena offset {off} is not a constant", b.name))),
            },
        });
    }
    let names = kernel_symbols(p, prefix).map_err(refuse)?;

    // The device code.
    let tm = target.machine()?;
    let cx = Context::create();
    let module = target_module(&cx, &p.name, &tm);
    let geos = emit_kernels(&cx, &module, p, &names, Mode::Ptx).map_err(|e| name_node(p, e, target))?;
    let ptx_ir = optimise(&module, &tm, llvm_ir)?;
    let ptx = String::from_utf8_lossy(&write(&module, &tm, FileType::Assembly)?).into_owned();

    // The same kernels for the host.
    let host = TargetSpec::host();
    let htm = host.machine()?;
    let hcx = Context::create();
    let hmod = target_module(&hcx, &p.name, &htm);
    if emit_kernels(&hcx, &hmod, p, &names, Mode::Sim).map_err(|e| name_node(p, e, target))? != geos {
        return Err(CodegenError::Llvm("internal: the simulated kernels were launched differently".into()));
    }
    optimise(&hmod, &htm, false)?;
    let sim_object = write(&hmod, &htm, FileType::Object)?;

    let mut launches = Vec::new();
    let mut copies = Vec::new();
    for step in &p.schedule {
        match step {
            Step::Call { kernel, args, label } => {
                let (k, geo) = (&p.kernels[*kernel as usize], geos[*kernel as usize]);
                if geo.serial {
                    tracing::warn!(kernel = k.name, "no parallel CUDA kernel: runs on one GPU thread");
                }
                launches.push(Launch {
                    kernel: names[*kernel as usize].clone(),
                    node: label.clone().unwrap_or_else(|| k.name.clone()),
                    op: op_of(&k.name).to_string(),
                    grid: geo.grid,
                    block: [geo.threads, 1, 1],
                    shared_bytes: geo.shared_bytes,
                    args: args.iter().map(|&b| refs[b as usize]).collect(),
                    serial: geo.serial,
                });
            }
            Step::Copy { dst, src } => {
                let d = &p.buffers[*dst as usize];
                let BufKind::Output(i) = d.kind else {
                    return Err(refuse(format!(
                        "program '{}': a copy into buffer '{}', which is not an output (CUDA artifacts copy into \
                         outputs only)",
                        p.name, d.name
                    )));
                };
                let bytes = d.bytes.as_const().filter(|&n| n >= 0).unwrap_or(0) as u64;
                copies.push(OutputCopy { output: i as usize, from: refs[*src as usize], bytes });
            }
            Step::If { .. } | Step::Loop { .. } | Step::Bind { .. } => unreachable!("refused above"),
        }
    }
    let table =
        LaunchTable { version: LAUNCH_VERSION, arena_bytes, weight_bytes: weights.len() as u64, launches, copies };
    Ok(CudaCompiled { ptx, sim_object, table, weights, llvm_ir: ptx_ir })
}

/// The op of a kernel named as `dlc_lower::program` names them (`k3_matmul`: the part
/// after the kernel's number), or its whole name.
fn op_of(kernel: &str) -> &str {
    match kernel.split_once('_') {
        Some((k, op)) if k.len() > 1 && k.starts_with('k') && k[1..].bytes().all(|c| c.is_ascii_digit()) => op,
        _ => kernel,
    }
}

/// `e` from translating kernel `k`, naming the node its first call computes when the
/// kernel needs a math function CUDA lacks.
fn name_node(p: &dlc_kir::Program, e: (usize, CodegenError), target: &TargetSpec) -> CodegenError {
    let (k, e) = e;
    let CodegenError::NoMath { function } = e else { return e };
    let kernel = &p.kernels[k].name;
    let label = p.schedule.iter().find_map(|s| match s {
        Step::Call { kernel: j, label, .. } if *j as usize == k => label.clone(),
        _ => None,
    });
    CodegenError::Unsupported {
        node: label.unwrap_or_else(|| kernel.clone()),
        op: op_of(kernel).to_string(),
        reason: format!("needs '{function}', which dlc's CUDA kernels do not provide yet"),
        target: target.triple.clone(),
    }
}

/// The exported symbol of each kernel of `p`: `prefix` and its name, with characters a
/// PTX identifier cannot hold as `_` (two kernels that would share one are an error).
fn kernel_symbols(p: &dlc_kir::Program, prefix: &str) -> Result<Vec<String>, String> {
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(p.kernels.len());
    for k in &p.kernels {
        let name: String =
            k.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        let sym = format!("{prefix}{name}");
        if let Some(other) = seen.insert(sym.clone(), &k.name) {
            return Err(format!("kernels '{other}' and '{}' would both be the CUDA symbol '{sym}'", k.name));
        }
        out.push(sym);
    }
    Ok(out)
}

fn optimise(
    module: &Module<'_>,
    tm: &inkwell::targets::TargetMachine,
    print: bool,
) -> Result<Option<String>, CodegenError> {
    module.verify().map_err(|e| CodegenError::Llvm(format!("invalid module: {}", e.to_string())))?;
    let opts = inkwell::passes::PassBuilderOptions::create();
    opts.set_loop_unrolling(true);
    module.run_passes("default<O3>", tm, opts).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    Ok(print.then(|| module.print_to_string().to_string()))
}

/// Every kernel of `p` translated for `mode` under its symbol in `names`; how each is
/// launched. An error comes with the index of its kernel.
fn emit_kernels<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    p: &dlc_kir::Program,
    names: &[String],
    mode: Mode,
) -> Result<Vec<Geometry>, (usize, CodegenError)> {
    let mut out = Vec::with_capacity(p.kernels.len());
    for (i, (k, name)) in p.kernels.iter().zip(names).enumerate() {
        let f = Factory { cx, m, mode, name, nparams: k.params.len() };
        out.push(translate(&f, k).map_err(|e| (i, e))?);
    }
    Ok(out)
}

/// Threads per block of the per-element kernels.
const FLAT: u32 = 256;

/// Translates kir kernel `k` into a CUDA kernel and says how to launch it, from the
/// kernel's form alone: a block kernel as it states; an `each` nest one element per
/// thread; any other kernel on one thread of one block.
fn translate(f: &Factory<'_, '_>, k: &dlc_kir::Kernel) -> R<Geometry> {
    let blocks = |items: u64, per: u64| items.div_ceil(per).max(1);
    if let Some(b) = &k.block {
        let grid = b.grid.clone().map(|e| e.as_const().filter(|&g| g > 0).map(|g| g as u64));
        let [Some(x), Some(y), Some(z)] = grid else {
            return Err(CodegenError::Llvm(format!("kernel {}: the grid must be positive constants", f.name)));
        };
        let (kb, gpu) = f.function(b.threads)?;
        crate::kir::emit_block(&kb, k, gpu)?;
        return finish(f, kb, [x, y, z], b.threads, crate::kir::shared_bytes(k), false);
    }
    if let Some(dims) = crate::kir::each_dims(k) {
        // One element per thread: thread `t` of block `b` runs element `b * FLAT + t`.
        let items: u64 = dims.iter().product();
        let (kb, gpu) = f.function(FLAT)?;
        let bx = gpu.bid[0];
        crate::kir::emit_with(
            &kb,
            k,
            &|kb, dims, body| {
                gpu.region(kb, |kb, t| {
                    let i = kb.add(kb.mul(bx, kb.c(FLAT as u64))?, t)?;
                    kb.if_then(kb.in_bounds(i, items)?, |kb| body(kb, &unravel(kb, i, dims)?))
                })
            },
            &[],
        )?;
        return finish(f, kb, [blocks(items, FLAT as u64), 1, 1], FLAT, 0, false);
    }
    // The CPU's loop nest on thread 0.
    let (kb, gpu) = f.function(32)?;
    gpu.region(&kb, |kb, t| kb.if_then(kb.icmp(IntPredicate::EQ, t, kb.c(0))?, |kb| crate::kir::emit(kb, k)))?;
    finish(f, kb, [1, 1, 1], 32, 0, true)
}

/// Index `i` of a row-major `dims` as one index per dim.
fn unravel<'ctx>(kb: &Kb<'_, 'ctx>, i: IntValue<'ctx>, dims: &[u64]) -> R<Vec<IntValue<'ctx>>> {
    let mut idx = vec![kb.c(0); dims.len()];
    let mut rest = i;
    for (k, &d) in dims.iter().enumerate().rev() {
        if k == 0 {
            idx[k] = rest;
        } else {
            idx[k] = kb.b.build_int_unsigned_rem(rest, kb.c(d), "")?;
            rest = kb.b.build_int_unsigned_div(rest, kb.c(d), "")?;
        }
    }
    Ok(idx)
}

/// Finishes a kernel launched on `grid` blocks of `threads` threads.
fn finish(f: &Factory<'_, '_>, kb: Kb<'_, '_>, grid: [u64; 3], threads: u32, shared: u64, serial: bool) -> R<Geometry> {
    kb.finish()?;
    let limits = [(1u64 << 31) - 1, 65535, 65535];
    if grid.iter().zip(limits).any(|(&g, l)| g == 0 || g > l) {
        return Err(CodegenError::Llvm(format!("kernel {}: grid {grid:?} is outside CUDA's limits", f.name)));
    }
    if shared > 48 * 1024 {
        return Err(CodegenError::Llvm(format!("kernel {}: {shared} bytes of shared memory (48 KiB at most)", f.name)));
    }
    Ok(Geometry { grid: grid.map(|g| g as u32), threads, shared_bytes: shared as u32, serial })
}

/// What a kernel is compiled as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A PTX `.entry` for the GPU.
    Ptx,
    /// A host function run once per block.
    Sim,
}

/// Makes the kernel function of one node.
pub(crate) struct Factory<'f, 'ctx> {
    cx: &'ctx Context,
    m: &'f Module<'ctx>,
    mode: Mode,
    name: &'f str,
    nparams: usize,
}

impl<'f, 'ctx> Factory<'f, 'ctx> {
    /// Starts the kernel function for blocks of `threads` threads: a PTX `.entry`
    /// taking the buffers, or a host function `(void **args, i64 bx, i64 by, i64 bz)`
    /// run once per block. Returns its builder (at block-uniform code) and how the
    /// translator compiles for it.
    fn function(&self, threads: u32) -> R<(Kb<'f, 'ctx>, crate::kir::Gpu<'ctx>)> {
        let cx = self.cx;
        let ptr = cx.ptr_type(AddressSpace::default());
        let i64t = cx.i64_type();
        let b = cx.create_builder();
        let nounwind = cx.create_enum_attribute(Attribute::get_named_enum_kind_id("nounwind"), 0);
        let noalias = cx.create_enum_attribute(Attribute::get_named_enum_kind_id("noalias"), 0);
        match self.mode {
            Mode::Ptx => {
                let ty = cx.void_type().fn_type(&vec![ptr.into(); self.nparams], false);
                let func = self.m.add_function(self.name, ty, None);
                // The PTX kernel calling convention (`ptx_kernel`): an `.entry`.
                func.set_call_conventions(71);
                func.add_attribute(AttributeLoc::Function, nounwind);
                func.add_attribute(
                    AttributeLoc::Function,
                    cx.create_string_attribute("nvvm.maxntid", &threads.to_string()),
                );
                b.position_at_end(cx.append_basic_block(func, "entry"));
                let params: Vec<PointerValue> = func.get_param_iter().map(|p| p.into_pointer_value()).collect();
                let kb = Kb::portable(cx, self.m, b, func, params);
                let sreg = |name: &str| -> R<IntValue<'ctx>> {
                    let v = kb.call_intrinsic(name, &[], &[])?.into_int_value();
                    Ok(kb.b.build_int_z_extend(v, i64t, "")?)
                };
                let bid = [
                    sreg("llvm.nvvm.read.ptx.sreg.ctaid.x")?,
                    sreg("llvm.nvvm.read.ptx.sreg.ctaid.y")?,
                    sreg("llvm.nvvm.read.ptx.sreg.ctaid.z")?,
                ];
                let tid = Some(sreg("llvm.nvvm.read.ptx.sreg.tid.x")?);
                Ok((kb, crate::kir::Gpu { ptx: true, threads, tid, bid }))
            }
            Mode::Sim => {
                let ty = cx.void_type().fn_type(&[ptr.into(), i64t.into(), i64t.into(), i64t.into()], false);
                let func = self.m.add_function(self.name, ty, None);
                func.add_attribute(AttributeLoc::Function, nounwind);
                func.add_attribute(AttributeLoc::Param(0), noalias);
                b.position_at_end(cx.append_basic_block(func, "entry"));
                let argv = func.get_nth_param(0).expect("argv").into_pointer_value();
                let mut params = Vec::with_capacity(self.nparams);
                for i in 0..self.nparams {
                    let slot = unsafe { b.build_in_bounds_gep(ptr, argv, &[i64t.const_int(i as u64, false)], "")? };
                    params.push(b.build_load(ptr, slot, "")?.into_pointer_value());
                }
                let p = |i: u32| func.get_nth_param(i).expect("block index").into_int_value();
                let bid = [p(1), p(2), p(3)];
                let kb = Kb::portable(cx, self.m, b, func, params);
                Ok((kb, crate::kir::Gpu { ptx: false, threads, tid: None, bid }))
            }
        }
    }
}
