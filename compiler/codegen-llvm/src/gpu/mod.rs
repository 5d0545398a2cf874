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
use crate::lower::NodeInfo;
use crate::{target_module, write, CodegenError, TargetSpec};
use dlc_artifact::{BufferRef, Launch, LaunchTable, OutputCopy, LAUNCH_VERSION};
use dlc_ir::{Graph, Op, Value};
use dlc_passes::{Location, MemoryPlan};
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
/// `sm_XX`); kernel symbols start with `prefix`.
pub fn compile_cuda(
    g: &Graph,
    plan: &MemoryPlan,
    target: &TargetSpec,
    prefix: &str,
    llvm_ir: bool,
) -> Result<CudaCompiled, CodegenError> {
    if !target.cpu.starts_with("sm_") {
        return Err(CodegenError::Target {
            triple: target.triple.clone(),
            reason: format!("'{}' is not a GPU architecture; use --cpu sm_80 or sm_90", target.cpu),
        });
    }
    if !plan.regions.is_empty() || !dlc_lower::program::symbols(g).is_empty() {
        return Err(CodegenError::Target {
            triple: target.triple.clone(),
            reason: "models with run-time dims are compiled for CPU targets only so far; pin the input shapes with \
                     --input-shape NAME=DIMS"
                .into(),
        });
    }
    let mut weights = Vec::new();
    let mut weight_at = HashMap::new();
    for &id in &plan.order {
        if let Op::Const(c) = &g.node(id).op {
            weights.resize(weights.len().next_multiple_of(WEIGHT_ALIGN), 0);
            weight_at.insert(id, weights.len() as u64);
            weights.extend_from_slice(c.value.bytes());
        }
    }
    let buffer = |v: Value| match plan.loc(v) {
        Location::Input(i) => BufferRef::Input(i),
        Location::Output(i) => BufferRef::Output(i),
        Location::Const(id) => BufferRef::Weight(weight_at[&id]),
        Location::Arena(off) => BufferRef::Arena(off),
        Location::Scaled { .. } => unreachable!("refused above: the plan has no regions"),
    };

    // The device code.
    let tm = target.machine()?;
    let cx = Context::create();
    let module = target_module(&cx, &g.name, &tm);
    let kernels = emit_kernels(&cx, &module, g, plan, Mode::Ptx, prefix, target)?;
    let ptx_ir = optimise(&module, &tm, llvm_ir)?;
    let ptx = String::from_utf8_lossy(&write(&module, &tm, FileType::Assembly)?).into_owned();

    // The same kernels for the host.
    let host = TargetSpec::host();
    let htm = host.machine()?;
    let hcx = Context::create();
    let hmod = target_module(&hcx, &g.name, &htm);
    let sim = emit_kernels(&hcx, &hmod, g, plan, Mode::Sim, prefix, target)?;
    if sim.iter().map(|k| k.1).ne(kernels.iter().map(|k| k.1)) {
        return Err(CodegenError::Llvm("internal: the simulated kernels were launched differently".into()));
    }
    optimise(&hmod, &htm, false)?;
    let sim_object = write(&hmod, &htm, FileType::Object)?;

    let launches = kernels
        .into_iter()
        .map(|(name, geo, id)| {
            let node = g.node(id);
            let mut args: Vec<BufferRef> = g.operands(id).iter().map(|v| buffer(*v)).collect();
            args.extend((0..node.outputs.len() as u32).map(|port| buffer(Value { node: id, port })));
            Launch {
                kernel: name,
                node: node.name.clone(),
                op: node.op.mnemonic().to_string(),
                grid: geo.grid,
                block: [geo.threads, 1, 1],
                shared_bytes: geo.shared_bytes,
                args,
                serial: geo.serial,
            }
        })
        .collect();
    let copies = g
        .outputs()
        .iter()
        .enumerate()
        .filter(|(i, (_, v))| plan.loc(*v) != Location::Output(*i))
        .map(|(i, (_, v))| OutputCopy {
            output: i,
            from: buffer(*v),
            bytes: g.value_type(*v).size_bytes().unwrap_or(0),
        })
        .collect();
    let table = LaunchTable {
        version: LAUNCH_VERSION,
        arena_bytes: plan.arena_bytes,
        weight_bytes: weights.len() as u64,
        launches,
        copies,
    };
    Ok(CudaCompiled { ptx, sim_object, table, weights, llvm_ir: ptx_ir })
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

/// One kernel per compute node, in plan order: name, geometry, node.
fn emit_kernels<'ctx>(
    cx: &'ctx Context,
    m: &Module<'ctx>,
    g: &Graph,
    plan: &MemoryPlan,
    mode: Mode,
    prefix: &str,
    target: &TargetSpec,
) -> Result<Vec<(String, Geometry, dlc_ir::NodeId)>, CodegenError> {
    let mut out = Vec::new();
    for &id in &plan.order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_) | Op::Const(_)) || plan.views.contains(&id) {
            continue;
        }
        let info = NodeInfo::of(g, id, target)?;
        let name = format!("{prefix}k{}_{}", out.len(), node.op.mnemonic());
        let f = Factory { cx, m, mode, name: &name, nparams: info.inputs.len() + info.outputs.len() };
        let k = dlc_lower::cuda::lower(&name, &info.lower_node(), &target.lowering())
            .ok_or_else(|| info.unsupported("internal: no CUDA kernel for a compute node"))?
            .map_err(|e| info.unsupported(e.reason))?;
        let geo = translate(&f, &k).map_err(|e| match e {
            CodegenError::NoMath { function } => {
                info.unsupported(format!("needs '{function}', which dlc's CUDA kernels do not provide yet"))
            }
            e => e,
        })?;
        if geo.serial && mode == Mode::Ptx {
            tracing::warn!(
                node = info.name,
                op = info.op.mnemonic(),
                "no parallel CUDA kernel: runs on one GPU thread"
            );
        }
        out.push((name, geo, id));
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
